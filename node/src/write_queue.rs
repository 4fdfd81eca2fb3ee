//! A backend's write queue: the mutations of one backend (writes and removes) run one after
//! another on one blocking thread, drained in batches.
//!
//! Why: the engine admits one mutation at a time (its write lock). Handing each write to a
//! blocking thread of its own makes those threads queue on that lock (spinning, futex sleeps
//! and wakeups) and pays a thread handoff per write. Here the first mutation that finds the
//! queue idle starts a drainer on a blocking thread; the drainer runs every queued mutation
//! in submission order and goes on until the queue is empty, so under load the handoff is
//! paid once per batch, not once per write, and no two threads contend for the write lock.
//!
//! What it is not: a lock and not an ordering guarantee between keys. Requests for one key are
//! serialised by the key lock their handler holds; this queue only decides which thread runs
//! a mutation and when. Reads do not come here: they run in parallel on the blocking pool.
//!
//! Invariants: at most one drainer per queue at a time; at most `limit` mutations queued or
//! running (one more is refused at once with [`PoolError::Busy`], EAGAIN on the wire); a
//! mutation that panics fails alone (its caller gets [`PoolError::Panicked`]) and the drainer
//! goes on with the next; a mutation submitted is run even if its caller stops waiting (the
//! write may already be acknowledged to nobody, but it is never half-applied by cancellation).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::pool::PoolError;
pub use ellipsis_core::stats::WriteQueueStats;

/// A queued mutation: runs, settles its place in the queue (`Settle::done`), then answers its
/// caller, so a caller that has its answer sees the queue's counters include it.
type Job = Box<dyn FnOnce(&Settle<'_>) + Send>;

/// What a finished mutation gives back to the queue.
struct Settle<'a> {
    state: &'a Mutex<State>,
    counters: &'a Counters,
}

impl Settle<'_> {
    fn done(&self) {
        self.state.lock().queued -= 1;
        self.counters.mutations.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct State {
    /// Submitted, not yet taken by the drainer.
    waiting: VecDeque<Job>,
    /// Waiting plus taken and not yet finished (the bounded quantity).
    queued: usize,
    /// A drainer is running (or about to).
    draining: bool,
}

/// See the module documentation.
pub struct WriteQueue {
    state: Arc<Mutex<State>>,
    limit: usize,
    refused: AtomicU64,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    mutations: AtomicU64,
    batches: AtomicU64,
}

impl std::fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteQueue")
            .field("stats", &self.stats())
            .finish()
    }
}

impl WriteQueue {
    /// A queue holding at most `limit` mutations (at least one).
    pub fn new(limit: usize) -> WriteQueue {
        WriteQueue {
            state: Arc::new(Mutex::new(State::default())),
            limit: limit.max(1),
            refused: AtomicU64::new(0),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Run `f` after every mutation submitted before it, on the queue's blocking thread, or
    /// refuse at once when the queue is full. Must be called inside a tokio runtime.
    pub async fn run<F, R>(&self, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // A panic in `f` drops `tx` during unwinding: the caller sees a closed channel.
        let job: Job = Box::new(move |settle: &Settle<'_>| {
            let r = f();
            settle.done();
            let _ = tx.send(r);
        });
        let start_drainer = {
            let mut s = self.state.lock();
            if s.queued >= self.limit {
                drop(s);
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Busy {
                    queued: self.limit as u64,
                    limit: self.limit as u64,
                });
            }
            s.waiting.push_back(job);
            s.queued += 1;
            !std::mem::replace(&mut s.draining, true)
        };
        if start_drainer {
            let (state, counters) = (self.state.clone(), self.counters.clone());
            tokio::task::spawn_blocking(move || drain(&state, &counters));
        }
        rx.await.map_err(|_| PoolError::Panicked)
    }

    /// Current counters.
    pub fn stats(&self) -> WriteQueueStats {
        WriteQueueStats {
            queued: self.state.lock().queued as u64,
            limit: self.limit as u64,
            refused: self.refused.load(Ordering::Relaxed),
            mutations: self.counters.mutations.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
        }
    }
}

/// The drainer: take everything waiting, run it in order, repeat until nothing waits.
fn drain(state: &Mutex<State>, counters: &Counters) {
    loop {
        let batch = {
            let mut s = state.lock();
            if s.waiting.is_empty() {
                s.draining = false;
                return;
            }
            std::mem::take(&mut s.waiting)
        };
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let settle = Settle { state, counters };
        for job in batch {
            // A mutation that panicked did not settle: do it here. Its caller learns of the
            // panic through its closed channel (the panic hook has logged it); the other
            // mutations of the batch still run.
            if std::panic::catch_unwind(AssertUnwindSafe(|| job(&settle))).is_err() {
                settle.done();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutations_run_in_submission_order_one_at_a_time_in_batches() {
        let q = Arc::new(WriteQueue::new(64));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        // The first mutation holds the drainer until released, so the next ones queue up.
        let first = {
            let q = q.clone();
            tokio::spawn(async move {
                q.run(move || {
                    started_tx.send(()).ok();
                    release_rx.recv().ok();
                    0usize
                })
                .await
            })
        };
        started_rx.await.expect("first mutation started");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut rest = Vec::new();
        for i in 1..=10usize {
            let (queue, log) = (q.clone(), log.clone());
            rest.push(tokio::spawn(async move {
                queue
                    .run(move || {
                        log.lock().push(i);
                        i
                    })
                    .await
            }));
            // Submission order is spawn order only once each is queued: wait for it.
            while q.stats().queued < i as u64 + 1 {
                tokio::task::yield_now().await;
            }
        }
        release_tx.send(()).expect("release");
        assert_eq!(first.await.expect("task"), Ok(0));
        for (i, r) in rest.into_iter().enumerate() {
            assert_eq!(r.await.expect("task"), Ok(i + 1));
        }
        assert_eq!(*log.lock(), (1..=10).collect::<Vec<_>>());
        let s = q.stats();
        assert_eq!((s.queued, s.mutations, s.refused), (0, 11, 0));
        // One batch for the first, one for the ten that queued behind it.
        assert_eq!(s.batches, 2, "{s:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_and_a_panic_fails_only_its_own_mutation() {
        let q = Arc::new(WriteQueue::new(2));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let blocker = {
            let q = q.clone();
            tokio::spawn(async move {
                q.run(move || {
                    started_tx.send(()).ok();
                    release_rx.recv().ok();
                })
                .await
            })
        };
        started_rx.await.expect("started");
        let panicking = {
            let q = q.clone();
            tokio::spawn(async move { q.run(|| -> u32 { panic!("engine bug") }).await })
        };
        while q.stats().queued < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            q.run(|| 3).await,
            Err(PoolError::Busy { limit: 2, .. })
        ));
        release_tx.send(()).expect("release");
        blocker.await.expect("task").expect("ran");
        assert_eq!(panicking.await.expect("task"), Err(PoolError::Panicked));
        assert_eq!(q.run(|| 5).await, Ok(5), "the queue still works");
        let s = q.stats();
        assert_eq!((s.queued, s.refused, s.mutations), (0, 1, 3));
    }
}
