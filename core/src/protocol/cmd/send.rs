//! SEND (server-send): copy records held by the receiving node to other groups, node to node.
//!
//! Two sources: a list of keys (the node sends those it owns in the request's group), or one
//! backend of the node, iterated with optional key ranges and a timestamp range as in
//! ITERATOR ([`SendBackend`]). Replies: one MORE frame per (key, target group) with a
//! [`SendResult`], then the final frame. A backend iteration also sends keep-alive results
//! ([`SendResult::keepalive`]): the first one names the job (for `POST /admin/jobs/{id}/cancel`)
//! before any key, and more follow while filtered records are skipped, so a long skip does not
//! look like a dead node. Not a snapshot: records written meanwhile may or may not be sent.
//!
//! Layout (little-endian): request = `mode:u32 groups:count+u32* ids:count+id* has_backend:u8
//! [backend:u32 ranges:count+(id id)* has_time:u8 [from:u64 to:u64]]`; result =
//! `id[64] group:u32 status:i32 job:u64 keepalive:u8` ([`SEND_RESULT_SIZE`] bytes).

use super::iterator::MAX_RANGES;
use super::{read_bool, read_id, read_ids, write_id, write_ids, Payload, MAX_GROUPS, MAX_IDS};
use crate::id::Id;
use crate::protocol::{ProtocolError, Status};
use crate::wire::{Reader, Writer};

/// How to treat a target that already holds the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendMode {
    /// CAS on the version `(timestamp, size)`: never overwrite a newer or equal copy (skipped,
    /// not failed) unless the equal one fails verification (damaged: replaced).
    #[default]
    Default,
    /// Overwrite whatever is there.
    Overwrite,
    /// Copy as in default mode, then remove locally once every target acknowledged: OK, or
    /// NEWER_EXISTS (it holds this version or a newer one). A failed target keeps the source.
    Move,
}

/// A server-send request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendRequest {
    /// Mode.
    pub mode: SendMode,
    /// Target groups.
    pub groups: Vec<u32>,
    /// Keys (the node sends those it holds; others get NOT_FOUND results, also when the node
    /// is not their owner in the request's group). Empty when `backend` is set.
    pub ids: Vec<Id>,
    /// Send the records of this backend of the node instead of a key list.
    pub backend: Option<SendBackend>,
}

impl SendRequest {
    /// A pass over every committed record of `backend` to `groups` in `mode`, unfiltered.
    pub fn whole_backend(backend: u32, groups: Vec<u32>, mode: SendMode) -> SendRequest {
        SendRequest {
            mode,
            groups,
            ids: Vec::new(),
            backend: Some(SendBackend {
                backend,
                ..SendBackend::default()
            }),
        }
    }
}

/// The backend-iteration source of a server-send: every committed record of one backend that
/// matches the filters (both optional, as in ITERATOR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendBackend {
    /// The backend (its group is the source group; it is left out of the targets).
    pub backend: u32,
    /// Key ranges `[start, end)`; empty = all keys.
    pub ranges: Vec<(Id, Id)>,
    /// Only records with a timestamp in `[from, to]` (seconds); `(since, u64::MAX)` is a
    /// "since" filter. `None` = any.
    pub time_range: Option<(u64, u64)>,
}

impl SendBackend {
    /// True if record `key` with timestamp `ts_sec` passes the filters.
    pub fn matches(&self, key: &Id, ts_sec: u64) -> bool {
        let in_keys =
            self.ranges.is_empty() || self.ranges.iter().any(|(a, b)| a.0 <= key.0 && key.0 < b.0);
        let in_time = self
            .time_range
            .is_none_or(|(from, to)| from <= ts_sec && ts_sec <= to);
        in_keys && in_time
    }
}

fn invalid(reason: &str) -> ProtocolError {
    ProtocolError::Invalid {
        what: "send request",
        reason: reason.into(),
    }
}

impl Payload for SendRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(match self.mode {
            SendMode::Default => 0,
            SendMode::Overwrite => 1,
            SendMode::Move => 2,
        });
        w.count(self.groups.len());
        for g in &self.groups {
            w.u32(*g);
        }
        write_ids(&mut w, &self.ids);
        match &self.backend {
            None => {
                w.u8(0);
            }
            Some(b) => {
                w.u8(1).u32(b.backend);
                w.count(b.ranges.len());
                for (start, end) in &b.ranges {
                    write_id(&mut w, start);
                    write_id(&mut w, end);
                }
                match b.time_range {
                    Some((from, to)) => w.u8(1).u64(from).u64(to),
                    None => w.u8(0),
                };
            }
        }
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "send request");
        let mode = match r.u32()? {
            0 => SendMode::Default,
            1 => SendMode::Overwrite,
            2 => SendMode::Move,
            m => {
                return Err(ProtocolError::Invalid {
                    what: "send request",
                    reason: format!("mode {m}"),
                })
            }
        };
        let n = r.count(MAX_GROUPS, 4)?;
        let groups = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let ids = read_ids(&mut r, MAX_IDS)?;
        let backend = if read_bool(&mut r, "send request")? {
            let backend = r.u32()?;
            let n = r.count(MAX_RANGES, 128)?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, b) = (read_id(&mut r)?, read_id(&mut r)?);
                if a > b {
                    return Err(invalid("key range start is after its end"));
                }
                ranges.push((a, b));
            }
            let time_range = if read_bool(&mut r, "send request")? {
                let (from, to) = (r.u64()?, r.u64()?);
                if from > to {
                    return Err(invalid("time range start is after its end"));
                }
                Some((from, to))
            } else {
                None
            };
            if !ids.is_empty() {
                return Err(invalid("a backend iteration takes no key list"));
            }
            Some(SendBackend {
                backend,
                ranges,
                time_range,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(SendRequest {
            mode,
            groups,
            ids,
            backend,
        })
    }
}

/// Encoded size of a [`SendResult`].
pub const SEND_RESULT_SIZE: usize = 81;
const _: () = assert!(SEND_RESULT_SIZE == crate::id::ID_SIZE + 4 + 4 + 8 + 1);

/// The result for one key and one target group (streamed with MORE), or a keep-alive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendResult {
    /// Key (zero in keep-alives).
    pub id: Id,
    /// Target group (0 in keep-alives).
    pub group: u32,
    /// OK, NEWER_EXISTS (skipped), or the failure.
    pub status: Status,
    /// The node's server-send job (`/stats/workers`, `POST /admin/jobs/{id}/cancel`).
    pub job: u64,
    /// Not a key's result: the job is alive (first frame of a backend iteration, and while
    /// it skips filtered records).
    pub keepalive: bool,
}

impl Payload for SendResult {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        write_id(&mut w, &self.id);
        w.u32(self.group)
            .i32(self.status.0)
            .u64(self.job)
            .u8(u8::from(self.keepalive));
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "send result");
        let v = SendResult {
            id: read_id(&mut r)?,
            group: r.u32()?,
            status: Status(r.i32()?),
            job: r.u64()?,
            keepalive: read_bool(&mut r, "send result")?,
        };
        r.finish()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_its_fixed_size() {
        let r = SendResult {
            job: 7,
            keepalive: true,
            ..SendResult::default()
        };
        assert_eq!(r.encode().len(), SEND_RESULT_SIZE);
        assert_eq!(SendResult::decode(&r.encode()).expect("decodes"), r);
    }

    #[test]
    fn backend_request_round_trips_and_refuses_a_key_list_too() {
        let req = SendRequest {
            mode: SendMode::Move,
            groups: vec![2, 3],
            ids: Vec::new(),
            backend: Some(SendBackend {
                backend: 4,
                ranges: vec![(Id::ZERO, Id([0x80; 64]))],
                time_range: Some((100, u64::MAX)),
            }),
        };
        assert_eq!(SendRequest::decode(&req.encode()).expect("decodes"), req);
        let both = SendRequest {
            ids: vec![Id([1; 64])],
            ..req
        };
        assert!(SendRequest::decode(&both.encode()).is_err());
    }

    #[test]
    fn backend_filters_are_half_open_on_keys_and_closed_on_time() {
        let b = SendBackend {
            backend: 1,
            ranges: vec![(Id([0x10; 64]), Id([0x20; 64]))],
            time_range: Some((100, 200)),
        };
        assert!(b.matches(&Id([0x10; 64]), 100));
        assert!(b.matches(&Id([0x15; 64]), 200));
        assert!(!b.matches(&Id([0x20; 64]), 150), "range end excluded");
        assert!(!b.matches(&Id([0x15; 64]), 201));
        assert!(!b.matches(&Id([0x15; 64]), 99));
        assert!(SendBackend::default().matches(&Id([0xff; 64]), 0));
    }
}
