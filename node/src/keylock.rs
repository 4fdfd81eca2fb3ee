//! Per-key request serialisation.
//!
//! Requests for the same key run one at a time, in arrival order (tokio's mutex is fair);
//! requests for different keys never wait for each other. What it is not: a lock on data across
//! nodes; it only orders the requests one node executes.
//!
//! Invariant: the map holds an entry only while some request holds or waits for that key, so
//! its size is bounded by the number of requests in flight, not by the number of keys seen.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

const SHARDS: usize = 64;

type Slot = Arc<AsyncMutex<()>>;

/// The lock table.
pub struct KeyLocks<K: Hash + Eq + Clone> {
    shards: Vec<Mutex<HashMap<K, Slot>>>,
    hasher: RandomState,
}

/// Held while a request runs on its key; dropping it lets the next request in.
pub struct KeyGuard<'a, K: Hash + Eq + Clone> {
    locks: &'a KeyLocks<K>,
    key: K,
    slot: Slot,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> Default for KeyLocks<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> KeyLocks<K> {
    /// An empty table.
    pub fn new() -> Self {
        KeyLocks {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Slot>> {
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[index % self.shards.len()]
    }

    /// Waits until no other request holds `key`, then holds it.
    pub async fn lock(&self, key: K) -> KeyGuard<'_, K> {
        let slot = self
            .shard(&key)
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = slot.clone().lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            slot,
            guard: Some(guard),
        }
    }

    /// Keys currently held or waited for.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        let mut shard = self.locks.shard(&self.key).lock();
        self.guard.take();
        // Two references left (the map's and ours) means nobody waits: forget the key. Waiters
        // clone the slot under this same shard lock, so the count cannot grow behind our back.
        if Arc::strong_count(&self.slot) == 2 {
            shard.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn same_key_requests_run_one_at_a_time_in_order() {
        let locks = Arc::new(KeyLocks::new());
        let first = locks.lock(7u32).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (locks, order) = (locks.clone(), order.clone());
            let (queued_tx, queued_rx) = oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let fut = locks.lock(7u32);
                // Register as a waiter before signalling, so the arrival order is fixed.
                tokio::pin!(fut);
                let guard = tokio::select! {
                    biased;
                    g = &mut fut => g,
                    () = std::future::ready(()) => { queued_tx.send(()).ok(); fut.await }
                };
                order.lock().push(i);
                drop(guard);
            }));
            queued_rx.await.expect("task queued");
        }
        assert!(
            order.lock().is_empty(),
            "nobody passes while the key is held"
        );
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock(), vec![0, 1, 2]);
        assert!(locks.is_empty(), "no entry left behind");
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let locks = KeyLocks::new();
        let _a = locks.lock(1u32).await;
        let b = tokio::time::timeout(Duration::from_secs(5), locks.lock(2u32)).await;
        assert!(b.is_ok(), "key 2 must not wait for key 1");
        assert_eq!(locks.len(), 2);
    }

    #[tokio::test]
    async fn table_is_emptied_when_requests_finish() {
        let locks = Arc::new(KeyLocks::new());
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let locks = locks.clone();
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(i % 10).await;
                tokio::task::yield_now().await;
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert!(locks.is_empty());
    }
}
