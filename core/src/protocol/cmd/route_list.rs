//! ROUTE_LIST: the nodes a node knows, each with its backends, groups and ring ids.

use std::net::SocketAddr;

use super::{read_addr, read_ids, write_addr, write_ids, Payload};
use crate::id::{Id, MAX_IDS_PER_BACKEND};
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// Most nodes in one route list.
pub const MAX_NODES: u32 = 4096;
/// Most backends per node.
pub const MAX_BACKENDS: u32 = 1024;

/// One backend's ring ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendRoutes {
    /// Replica group.
    pub group: u32,
    /// Backend id on its node.
    pub backend: u32,
    /// Ring ids.
    pub ids: Vec<Id>,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRoutes {
    /// Protocol address.
    pub addr: SocketAddr,
    /// Monitoring HTTP address, if it serves one.
    pub http: Option<SocketAddr>,
    /// Its enabled backends.
    pub backends: Vec<BackendRoutes>,
}

/// The route list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteList {
    /// Known nodes (the sender first).
    pub nodes: Vec<NodeRoutes>,
}

impl Payload for RouteList {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.count(self.nodes.len());
        for n in &self.nodes {
            write_addr(&mut w, &n.addr);
            match &n.http {
                Some(h) => {
                    w.u8(1);
                    write_addr(&mut w, h);
                }
                None => {
                    w.u8(0);
                }
            }
            w.count(n.backends.len());
            for b in &n.backends {
                w.u32(b.group).u32(b.backend);
                write_ids(&mut w, &b.ids);
            }
        }
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "route list");
        let n = r.count(MAX_NODES, 19 + 1 + 4)?;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let addr = read_addr(&mut r)?;
            let http = if super::read_bool(&mut r, "route list")? {
                Some(read_addr(&mut r)?)
            } else {
                None
            };
            let nb = r.count(MAX_BACKENDS, 12)?;
            let mut backends = Vec::with_capacity(nb);
            for _ in 0..nb {
                backends.push(BackendRoutes {
                    group: r.u32()?,
                    backend: r.u32()?,
                    ids: read_ids(&mut r, MAX_IDS_PER_BACKEND as u32)?,
                });
            }
            nodes.push(NodeRoutes {
                addr,
                http,
                backends,
            });
        }
        r.finish()?;
        Ok(RouteList { nodes })
    }
}
