//! WRITE: store the payload's data under the key with the IO attributes' semantics (plain,
//! append, prepare / plain write / commit, CAS on timestamp or checksum, cache, cache-only),
//! then notify watchers.

use std::sync::Arc;
use std::time::Duration;

use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::lookup::LookupInfo;
use ellipsis_core::protocol::cmd::notify::NotifyKind;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, io_flags, Command, Frame, Header, IoAttr, IO_ATTR_SIZE};

use super::{artificial_delay, key, lookup_info, mutation, Reply};
use crate::backend::{Backend, CacheUse, WriteOutcome};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

/// A large WRITE's chunk hashes, taken by the connection's reader while the payload arrives
/// (every frame it receives into a buffer of its own, above `LARGE_FRAME_BYTES`): each piece
/// is hashed right after the socket copied it in, while it is still in the CPU's cache
/// (hashed later, the same bytes come from memory again), so the backend's write queue, one
/// thread for all of a backend's writes, only writes, and the write can queue as soon as its
/// last byte is in.
///
/// Invariant: the handler gives the hashes to the engine only for a whole, checksummed write
/// and only if they cover exactly the data it decoded; otherwise the engine hashes the data
/// itself. The engine checks their count again, and a record's hashes are checked on every
/// read, so a wrong hash can refuse a write or fail a read, never pass other bytes as data.
pub struct ArrivalHash {
    state: ArrivalState,
    /// Payload bytes looked at so far.
    seen: usize,
}

enum ArrivalState {
    /// The IO attributes have not all arrived.
    Attrs,
    /// Boxed: the hasher's state (hundreds of bytes) dwarfs the other states.
    Hashing(Box<eblob::record::ChunkHasher>),
    /// Not a whole, checksummed write (or not a valid one): the engine decides what to hash.
    Off,
}

/// What [`ArrivalHash`] found, for the write handler.
pub struct ArrivalHashes {
    data_bytes: usize,
    hashes: Arc<[u64]>,
}

impl ArrivalHashes {
    /// The hashes, if they cover exactly `data`, the data [`IoPayload`] decoded from
    /// `payload` (the whole payload after the attributes was fed).
    fn of(self, payload: &[u8], data: &[u8]) -> Option<Arc<[u64]>> {
        (self.data_bytes == data.len() && payload.len() == IO_ATTR_SIZE + data.len())
            .then_some(self.hashes)
    }
}

impl ArrivalHash {
    /// For a frame with header `h` that is still arriving: `Some` if it is a write request.
    pub fn for_frame(h: &Header) -> Option<ArrivalHash> {
        (h.cmd == Command::Write && !h.has(flags::REPLY)).then_some(ArrivalHash {
            state: ArrivalState::Attrs,
            seen: 0,
        })
    }

    /// Look at the payload so far: `payload` is what has arrived, growing between calls;
    /// bytes seen in an earlier call are not hashed again.
    pub fn feed(&mut self, payload: &[u8]) {
        if matches!(self.state, ArrivalState::Attrs) {
            if payload.len() < IO_ATTR_SIZE {
                return;
            }
            // A payload the handler will refuse is not hashed; the handler says why.
            let wanted = IoPayload::decode(&payload[..IO_ATTR_SIZE])
                .ok()
                .and_then(|p| write_options(&p.attr).ok())
                .is_some_and(|o| o.is_whole_checksummed());
            self.state = if wanted {
                ArrivalState::Hashing(Box::default())
            } else {
                ArrivalState::Off
            };
            self.seen = IO_ATTR_SIZE;
        }
        if let ArrivalState::Hashing(h) = &mut self.state {
            if let Some(new) = payload.get(self.seen..) {
                h.update(new);
                self.seen = payload.len();
            }
        }
    }

    /// The chunk hashes of everything fed after the attributes, if they were taken.
    pub fn finish(self) -> Option<ArrivalHashes> {
        match self.state {
            ArrivalState::Hashing(h) => Some(ArrivalHashes {
                data_bytes: self.seen - IO_ATTR_SIZE,
                hashes: h.finish().into(),
            }),
            ArrivalState::Attrs | ArrivalState::Off => None,
        }
    }
}

/// Engine options for a wire write.
pub(crate) fn write_options(a: &IoAttr) -> Result<eblob::WriteOptions, NodeError> {
    let modes = [
        io_flags::APPEND,
        io_flags::PREPARE,
        io_flags::PLAIN_WRITE,
        io_flags::COMMIT,
    ]
    .iter()
    .filter(|&&m| a.has(m))
    .count();
    // PREPARE may carry the first part and COMMIT the last, but one request has one mode.
    if modes > 1 {
        return Err(NodeError::Invalid("conflicting write modes".into()));
    }
    if a.has(io_flags::DATA_CHECKSUM) && a.has(io_flags::CAS_CHECKSUM) {
        return Err(NodeError::Invalid(
            "DATA_CHECKSUM and CAS_CHECKSUM both name the checksum field".into(),
        ));
    }
    Ok(eblob::WriteOptions {
        offset: a.offset,
        timestamp: (a.ts_sec != 0 || a.ts_nsec != 0).then_some(eblob::Timestamp {
            sec: a.ts_sec,
            nsec: a.ts_nsec,
        }),
        user_flags: a.user_flags,
        append: a.has(io_flags::APPEND),
        prepare_size_bytes: a.has(io_flags::PREPARE).then_some(a.total_size),
        plain_write: a.has(io_flags::PLAIN_WRITE),
        commit: a.has(io_flags::COMMIT),
        commit_size_bytes: (a.has(io_flags::COMMIT) && a.total_size > 0).then_some(a.total_size),
        nocsum: a.has(io_flags::NOCSUM),
        cas_timestamp: a.has(io_flags::CAS_TIMESTAMP),
        cas_version: a.has(io_flags::CAS_VERSION),
        commit_checksum: (a.has(io_flags::COMMIT) && a.has(io_flags::CAS_CHECKSUM))
            .then_some(a.checksum),
        data_checksum: a.has(io_flags::DATA_CHECKSUM).then_some(a.checksum),
        chunk_hashes: None,
    })
}

pub(super) async fn handle(
    node: &Arc<Node>,
    b: Arc<Backend>,
    f: &Frame,
    arrived: Option<ArrivalHashes>,
) -> Result<Reply, NodeError> {
    let p = IoPayload::decode_shared(&f.payload)?;
    let mut opts = write_options(&p.attr)?;
    if opts.is_whole_checksummed() {
        opts.chunk_hashes = arrived.and_then(|a| a.of(&f.payload, &p.data));
    }
    let cache_use = CacheUse {
        cache: p.attr.has(io_flags::CACHE),
        cache_only: p.attr.has(io_flags::CACHE_ONLY),
        lifetime: (p.attr.num > 0).then(|| Duration::from_secs(p.attr.num)),
    };
    let id = f.header.id;
    let _g = node.keylocks.lock((b.id(), id)).await;
    artificial_delay(&b).await;
    let backend = b.clone();
    // With COMMIT the checksum is the sealed record's (checked by the engine), not the
    // stored one's.
    let cas_checksum = (p.attr.has(io_flags::CAS_CHECKSUM) && !p.attr.has(io_flags::COMMIT))
        .then_some(p.attr.checksum);
    let data = p.data.clone();
    let outcome = mutation(node, &b, move || {
        let k = key(&id);
        if let Some(expected) = cas_checksum {
            let _a = react_trace::action!("cas.lookup").entered();
            // Serialised by the key lock: nothing changes the record between check and write.
            let current = backend.current_checksum(&k)?;
            if current != expected {
                return Err(NodeError::Backend(crate::backend::BackendError::Engine(
                    eblob::Error::NewerExists {
                        stored: eblob::Timestamp { sec: 0, nsec: 0 },
                    },
                )));
            }
        }
        let _a = react_trace::action!("eblob.write", size = data.len() as u64).entered();
        Ok(backend.write(&k, &data, &opts, cache_use)?)
    })
    .await?;
    let (info, source) = match outcome {
        WriteOutcome::Stored(l) => (lookup_info(b.id(), &l), Source::Disk),
        WriteOutcome::Cached {
            size_bytes,
            timestamp,
        } => (
            LookupInfo {
                attr: IoAttr {
                    size: size_bytes,
                    total_size: size_bytes,
                    ts_sec: timestamp.sec,
                    ts_nsec: timestamp.nsec,
                    ..IoAttr::default()
                },
                backend: b.id(),
                ..LookupInfo::default()
            },
            Source::Cache,
        ),
    };
    node.notify.publish(&id, NotifyKind::Write, info.attr);
    Ok(Reply::payload(info.encode(), source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ellipsis_core::protocol::cmd::Payload;

    fn payload(io_flags: u64, data_bytes: usize) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..data_bytes).map(|i| (i * 7 % 253) as u8).collect();
        let p = IoPayload {
            attr: IoAttr {
                io_flags,
                ..IoAttr::default()
            },
            data: data.clone().into(),
        };
        (p.encode(), data)
    }

    fn header(cmd: Command, size: usize) -> Header {
        Header {
            cmd,
            size: size as u64,
            ..Header::default()
        }
    }

    /// Feeds `payload` as a reader would: growing prefixes, `step` bytes more each time.
    fn fed(payload: &[u8], step: usize) -> Option<ArrivalHashes> {
        let mut h = ArrivalHash::for_frame(&header(Command::Write, payload.len()))?;
        let mut have = 0;
        while have < payload.len() {
            have = (have + step).min(payload.len());
            h.feed(&payload[..have]);
        }
        h.finish()
    }

    #[test]
    fn a_whole_write_is_hashed_as_it_arrives_in_pieces_of_any_size() {
        let (p, data) = payload(0, 2 * eblob::record::CHUNK_SIZE as usize + 999);
        let want = eblob::record::chunk_hashes(&[&data]);
        // Pieces smaller than the attributes, straddling them and chunk ends, and all at once.
        for step in [13, IO_ATTR_SIZE + 1, 65_536, 1 << 20, p.len()] {
            let got = fed(&p, step).expect("hashed");
            assert_eq!(&*got.of(&p, &data).expect("covers the data"), &want[..]);
        }
        // The data checksum too (DATA_CHECKSUM names it; the write is still whole).
        let (p, data) = payload(io_flags::DATA_CHECKSUM, 300_000);
        let got = fed(&p, 4096).expect("hashed");
        assert_eq!(
            &*got.of(&p, &data).expect("covers the data"),
            &eblob::record::chunk_hashes(&[&data])[..]
        );
    }

    #[test]
    fn only_whole_checksummed_writes_are_hashed() {
        let big = 300_000;
        for flag in [
            io_flags::APPEND,
            io_flags::NOCSUM,
            io_flags::PLAIN_WRITE,
            io_flags::PREPARE,
            io_flags::COMMIT,
            // Conflicting modes: the handler refuses the write, so nothing is hashed.
            io_flags::APPEND | io_flags::COMMIT,
        ] {
            let (p, _) = payload(flag, big);
            assert!(fed(&p, 65_536).is_none(), "flags {flag:#x}");
        }
        let (p, _) = payload(0, big);
        assert!(ArrivalHash::for_frame(&header(Command::Read, p.len())).is_none());
        let reply = Header {
            flags: flags::REPLY,
            ..header(Command::Write, p.len())
        };
        assert!(ArrivalHash::for_frame(&reply).is_none());
    }

    #[test]
    fn hashes_of_a_payload_not_fed_whole_are_not_used() {
        let (p, data) = payload(0, 600_000);
        let mut h = ArrivalHash::for_frame(&header(Command::Write, p.len())).expect("a write");
        h.feed(&p[..p.len() - 1]);
        assert!(h.finish().expect("hashed").of(&p, &data).is_none());
        // Attributes never complete: nothing to use.
        let mut h = ArrivalHash::for_frame(&header(Command::Write, p.len())).expect("a write");
        h.feed(&p[..IO_ATTR_SIZE - 1]);
        assert!(h.finish().is_none());
    }
}
