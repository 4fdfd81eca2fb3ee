//! WRITE: store the payload's data under the key with the IO attributes' semantics (plain,
//! append, prepare / plain write / commit, CAS on timestamp or checksum, cache, cache-only),
//! then notify watchers.

use std::sync::Arc;
use std::time::Duration;

use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::lookup::LookupInfo;
use ellipsis_core::protocol::cmd::notify::NotifyKind;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Frame, IoAttr};

use super::{artificial_delay, blocking, key, lookup_info, mutation, Reply};
use crate::backend::{Backend, CacheUse, WriteOutcome};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

/// Whole writes of at least this many bytes are hashed on the blocking pool before they queue
/// for the backend's writer (below it, the hop costs more than the hashing it moves).
const HASH_AHEAD_BYTES: usize = 256 << 10;

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
) -> Result<Reply, NodeError> {
    let p = IoPayload::decode_shared(&f.payload)?;
    let mut opts = write_options(&p.attr)?;
    // A large whole write is hashed here, on the blocking pool, before it queues: the
    // backend's write queue runs every write on one thread, which then only writes.
    if opts.is_whole_checksummed() && p.data.len() >= HASH_AHEAD_BYTES {
        let data = p.data.clone();
        let hashes = blocking(node, move || Ok(eblob::record::chunk_hashes(&[&data]))).await?;
        opts.chunk_hashes = Some(hashes.into());
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
