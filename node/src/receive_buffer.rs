//! The node-wide memory for large frames' payloads (node config `receive_buffer_bytes`).
//!
//! A protocol connection receives a frame of more than [`LARGE_FRAME_BYTES`] of payload into
//! one buffer of exactly its announced size (one copy from the socket, no regrowth), and takes
//! room for it here first; the room is given back when the frame's request has finished. What
//! this bounds: the bytes of large payloads being received or handled, over all connections.
//! What it is not: the bound of small frames (each connection buffers at most one
//! [`LARGE_FRAME_BYTES`] frame at a time) or of replies (the per-connection reply queue).
//!
//! Invariants: room is counted in whole KiB; one frame never asks for more than the limit (the
//! config requires `receive_buffer_bytes >= max_frame_bytes`), so a waiting frame always gets
//! its room once the frames ahead of it finish (the semaphore is fair: first come, first
//! served).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Payloads above this many bytes are received into a buffer of their own size.
pub const LARGE_FRAME_BYTES: u64 = 64 << 10;

/// Room for large payloads; see the module docs.
#[derive(Debug)]
pub struct ReceiveBuffer {
    room_kib: Arc<Semaphore>,
    limit_kib: u64,
    waits: AtomicU64,
}

/// Room held for one payload; given back on drop.
#[derive(Debug)]
pub struct Room {
    _permit: OwnedSemaphorePermit,
}

impl ReceiveBuffer {
    /// Room for `limit_bytes` (rounded up to a KiB).
    pub fn new(limit_bytes: u64) -> ReceiveBuffer {
        let limit_kib = limit_bytes.div_ceil(1024).max(1);
        ReceiveBuffer {
            room_kib: Arc::new(Semaphore::new(limit_kib as usize)),
            limit_kib,
            waits: AtomicU64::new(0),
        }
    }

    /// The bound, in bytes.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_kib * 1024
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> u64 {
        (self.limit_kib - self.room_kib.available_permits() as u64) * 1024
    }

    /// Payloads that had to wait for room, since start.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Room for a payload of `bytes` (at most the limit): at once if it is free, else after
    /// the payloads ahead of it are done. Returns the room and whether it waited.
    pub async fn reserve(&self, bytes: u64) -> (Room, bool) {
        let kib = bytes.div_ceil(1024).clamp(1, self.limit_kib) as u32;
        if let Ok(p) = self.room_kib.clone().try_acquire_many_owned(kib) {
            return (Room { _permit: p }, false);
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        // The semaphore is never closed, so the acquire cannot fail.
        let permit = self
            .room_kib
            .clone()
            .acquire_many_owned(kib)
            .await
            .unwrap_or_else(|_| unreachable!("the receive buffer semaphore is never closed"));
        (Room { _permit: permit }, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_is_counted_waited_for_in_order_and_given_back_on_drop() {
        let b = ReceiveBuffer::new(3 << 20);
        assert_eq!(b.limit_bytes(), 3 << 20);
        let (first, waited) = b.reserve(2 << 20).await;
        assert!(!waited);
        assert_eq!(b.used_bytes(), 2 << 20);
        // 1.5 MiB does not fit beside 2 MiB: it waits until the first is dropped.
        let second = b.reserve(3 << 19);
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending());
        drop(first);
        let (second, waited) = second.await;
        assert!(waited);
        assert_eq!(b.waits(), 1);
        assert_eq!(b.used_bytes(), 3 << 19);
        drop(second);
        assert_eq!(b.used_bytes(), 0);
        // A request above the limit is clamped to it rather than never served.
        let (all, _) = b.reserve(10 << 20).await;
        assert_eq!(b.used_bytes(), 3 << 20);
        drop(all);
    }
}
