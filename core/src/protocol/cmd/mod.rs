//! Payloads, one file per command (or per request/reply pair).
//!
//! Every payload implements [`Payload`]: encode to bytes, decode with explicit bounds on every
//! count and length (a decoder never allocates more than the bytes it was given allows).

pub mod auth;
pub mod backend_control;
pub mod backend_status;
pub mod bulk_read;
pub mod io;
pub mod iterator;
pub mod key_range;
pub mod lookup;
pub mod monitor_stat;
pub mod notify;
pub mod recovery;
pub mod route_list;
pub mod send;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::id::Id;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// A command payload.
pub trait Payload: Sized {
    /// Encode.
    fn encode(&self) -> Vec<u8>;
    /// Decode, consuming every byte.
    fn decode(b: &[u8]) -> Result<Self, ProtocolError>;
}

/// Most ids in one request (bulk read, server-send key lists, set ids).
pub const MAX_IDS: u32 = 65_536;
/// Most groups in one request.
pub const MAX_GROUPS: u32 = 256;

pub(crate) fn write_id(w: &mut Writer, id: &Id) {
    w.bytes(&id.0);
}

pub(crate) fn read_id(r: &mut Reader<'_>) -> Result<Id, ProtocolError> {
    Ok(Id(r.array()?))
}

pub(crate) fn write_ids(w: &mut Writer, ids: &[Id]) {
    w.count(ids.len());
    for id in ids {
        write_id(w, id);
    }
}

pub(crate) fn read_ids(r: &mut Reader<'_>, max: u32) -> Result<Vec<Id>, ProtocolError> {
    let n = r.count(max, 64)?;
    (0..n).map(|_| read_id(r)).collect()
}

/// `family:u8 (4|6) addr[16] port:u16` — 19 bytes.
pub(crate) fn write_addr(w: &mut Writer, a: &SocketAddr) {
    let mut ip = [0u8; 16];
    match a.ip() {
        IpAddr::V4(v4) => {
            w.u8(4);
            ip[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            w.u8(6);
            ip = v6.octets();
        }
    }
    w.bytes(&ip).bytes(&a.port().to_le_bytes());
}

pub(crate) fn read_addr(r: &mut Reader<'_>) -> Result<SocketAddr, ProtocolError> {
    let family = r.u8()?;
    let ip: [u8; 16] = r.array()?;
    let port = u16::from_le_bytes(r.array()?);
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        6 => IpAddr::V6(Ipv6Addr::from(ip)),
        other => {
            return Err(ProtocolError::Invalid {
                what: "address",
                reason: format!("unknown family {other}"),
            })
        }
    };
    Ok(SocketAddr::new(ip, port))
}

pub(crate) fn read_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, ProtocolError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ProtocolError::Invalid {
            what,
            reason: format!("boolean byte {v}"),
        }),
    }
}
