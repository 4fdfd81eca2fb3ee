//! Background jobs: one registry and one status shape for data-sort, recovery, server-send and
//! cache sync.
//!
//! A job's code holds a [`JobHandle`]: it reports progress, checks for cancellation between
//! units of work, and finishes with a result. Anyone can read [`Workers::list`] at any time
//! while jobs run (progress is atomics; only state changes take a short lock).
//!
//! What it is not: a scheduler or thread pool. Jobs run on whatever thread the caller gives
//! them; this module tracks them and throttles them.
//!
//! Invariants:
//! - A job's state only moves forward: queued -> running <-> paused -> done | failed | cancelled.
//! - The registry keeps at most `history_limit` finished jobs of each kind (oldest dropped
//!   first), so it is bounded however many jobs run, and a frequent kind does not crowd out
//!   the others' results.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use ellipsis_core::stats::{JobKind, JobState, JobStatus, RemoteJob};
use parking_lot::{Condvar, Mutex};

struct Lifecycle {
    state: JobState,
    started: Option<(Instant, u64)>,
    finished_at_s: Option<u64>,
    /// Running time accumulated before the current run segment (pauses excluded).
    active_before: Duration,
    resumed_at: Option<Instant>,
    last_error: Option<String>,
    result: Option<String>,
}

struct Job {
    id: u64,
    kind: JobKind,
    target: String,
    done_keys: AtomicU64,
    total_keys: AtomicU64,
    done_bytes: AtomicU64,
    total_bytes: AtomicU64,
    errors: AtomicU64,
    /// Throttle and rate-limit rests taken, and their total length: the proof, from outside,
    /// that a job gave way to foreground work.
    rests: AtomicU64,
    rested_ms: AtomicU64,
    cancel: AtomicBool,
    /// Run when cancellation is requested, so a job blocked inside a long call (a data-sort
    /// inside the engine) hears of it at once instead of at its next checkpoint.
    cancel_hook: Mutex<Option<CancelHook>>,
    life: Mutex<Lifecycle>,
    resumed: Condvar,
    /// Jobs other nodes run for this one (a fanned-out recovery): cancel reaches them too.
    remote: Mutex<Vec<RemoteJob>>,
}

type CancelHook = Box<dyn Fn() + Send + Sync>;

/// Marker for "total not known" in the atomics.
const UNKNOWN: u64 = u64::MAX;

fn epoch_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Job {
    /// Flags the job cancelled, wakes it if paused and runs its cancel hook.
    fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        {
            // Notified under `life`: a job that checked the flag and is about to wait (a
            // rest, a pause) holds `life` until it waits, so it cannot miss this wake-up.
            let _life = self.life.lock();
            self.resumed.notify_all();
        }
        if let Some(hook) = &*self.cancel_hook.lock() {
            hook();
        }
    }

    fn status(&self) -> JobStatus {
        let life = self.life.lock();
        let active = life.active_before + life.resumed_at.map_or(Duration::ZERO, |r| r.elapsed());
        let secs = active.as_secs_f64();
        let done_keys = self.done_keys.load(Ordering::Relaxed);
        let done_bytes = self.done_bytes.load(Ordering::Relaxed);
        let known = |v: u64| (v != UNKNOWN).then_some(v);
        JobStatus {
            id: self.id,
            kind: self.kind,
            target: self.target.clone(),
            state: life.state,
            done_keys,
            total_keys: known(self.total_keys.load(Ordering::Relaxed)),
            done_bytes,
            total_bytes: known(self.total_bytes.load(Ordering::Relaxed)),
            rate_keys_per_s: if secs > 0.0 {
                done_keys as f64 / secs
            } else {
                0.0
            },
            rate_bytes_per_s: if secs > 0.0 {
                done_bytes as f64 / secs
            } else {
                0.0
            },
            errors: self.errors.load(Ordering::Relaxed),
            rests: self.rests.load(Ordering::Relaxed),
            rested_ms: self.rested_ms.load(Ordering::Relaxed),
            last_error: life.last_error.clone(),
            started_at_s: life.started.map(|(_, s)| s),
            finished_at_s: life.finished_at_s,
            result: life.result.clone(),
        }
    }
}

/// The node's job registry.
pub struct Workers {
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
    history_limit: usize,
}

/// Returned by [`JobHandle::checkpoint`] when the job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job cancelled")]
pub struct Cancelled;

/// Why a control request on a job was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No job with that id (never existed, or dropped from history).
    #[error("no job {0}")]
    NotFound(u64),
    /// The job has already finished.
    #[error("job {id} already {state:?}")]
    Finished {
        /// The job.
        id: u64,
        /// Its final state.
        state: JobState,
    },
}

impl Workers {
    /// A registry keeping up to `history_limit` finished jobs.
    pub fn new(history_limit: usize) -> Workers {
        Workers {
            jobs: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            history_limit,
        }
    }

    /// Registers a queued job and returns the handle its code reports through.
    pub fn register(&self, kind: JobKind, target: impl Into<String>) -> JobHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            id,
            kind,
            target: target.into(),
            done_keys: AtomicU64::new(0),
            total_keys: AtomicU64::new(UNKNOWN),
            done_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(UNKNOWN),
            errors: AtomicU64::new(0),
            rests: AtomicU64::new(0),
            rested_ms: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            cancel_hook: Mutex::new(None),
            life: Mutex::new(Lifecycle {
                state: JobState::Queued,
                started: None,
                finished_at_s: None,
                active_before: Duration::ZERO,
                resumed_at: None,
                last_error: None,
                result: None,
            }),
            resumed: Condvar::new(),
            remote: Mutex::new(Vec::new()),
        });
        let mut jobs = self.jobs.lock();
        jobs.insert(id, job.clone());
        self.trim(&mut jobs);
        JobHandle { job }
    }

    /// Drops the oldest finished jobs beyond the history limit, per kind: a kind that runs
    /// often (cache sync, short server-sends) cannot push a recovery's result out.
    fn trim(&self, jobs: &mut BTreeMap<u64, Arc<Job>>) {
        let mut finished: HashMap<JobKind, Vec<u64>> = HashMap::new();
        for (&id, j) in jobs.iter() {
            if j.life.lock().state.is_finished() {
                finished.entry(j.kind).or_default().push(id);
            }
        }
        for ids in finished.into_values() {
            let excess = ids.len().saturating_sub(self.history_limit);
            for id in ids.into_iter().take(excess) {
                jobs.remove(&id);
            }
        }
    }

    /// All known jobs, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        let jobs: Vec<Arc<Job>> = {
            let mut jobs = self.jobs.lock();
            self.trim(&mut jobs);
            jobs.values().cloned().collect()
        };
        jobs.iter().map(|j| j.status()).collect()
    }

    /// Block until job `id` finishes or `timeout` passes; its status either way (`None` if
    /// unknown).
    pub fn wait(&self, id: u64, timeout: Duration) -> Option<JobStatus> {
        let job = self.jobs.lock().get(&id).cloned()?;
        let deadline = Instant::now() + timeout;
        {
            let mut life = job.life.lock();
            while !life.state.is_finished() {
                if job.resumed.wait_until(&mut life, deadline).timed_out() {
                    break;
                }
            }
        }
        Some(job.status())
    }

    /// One job's status.
    pub fn get(&self, id: u64) -> Option<JobStatus> {
        let job = self.jobs.lock().get(&id).cloned();
        job.map(|j| j.status())
    }

    fn job(&self, id: u64) -> Result<Arc<Job>, ControlError> {
        self.jobs
            .lock()
            .get(&id)
            .cloned()
            .ok_or(ControlError::NotFound(id))
    }

    /// The jobs other nodes run on behalf of job `id` (empty if none or unknown).
    pub fn remote_jobs(&self, id: u64) -> Vec<RemoteJob> {
        self.jobs
            .lock()
            .get(&id)
            .map(|j| j.remote.lock().clone())
            .unwrap_or_default()
    }

    /// Asks a job to stop at its next checkpoint.
    pub fn cancel(&self, id: u64) -> Result<(), ControlError> {
        let job = self.job(id)?;
        let state = job.life.lock().state;
        if state.is_finished() {
            return Err(ControlError::Finished { id, state });
        }
        job.request_cancel();
        Ok(())
    }

    /// Pauses a running job at its next checkpoint.
    pub fn pause(&self, id: u64) -> Result<(), ControlError> {
        let job = self.job(id)?;
        let mut life = job.life.lock();
        if life.state.is_finished() {
            return Err(ControlError::Finished {
                id,
                state: life.state,
            });
        }
        if life.state == JobState::Running {
            if let Some(r) = life.resumed_at.take() {
                life.active_before += r.elapsed();
            }
            life.state = JobState::Paused;
        }
        Ok(())
    }

    /// Resumes a paused job.
    pub fn resume(&self, id: u64) -> Result<(), ControlError> {
        let job = self.job(id)?;
        let mut life = job.life.lock();
        if life.state.is_finished() {
            return Err(ControlError::Finished {
                id,
                state: life.state,
            });
        }
        if life.state == JobState::Paused {
            life.state = JobState::Running;
            life.resumed_at = Some(Instant::now());
            job.resumed.notify_all();
        }
        Ok(())
    }

    /// Asks every unfinished job to stop (node shutdown: a paused iterator or recovery must
    /// not hold the node open). Returns how many were asked.
    pub fn cancel_all(&self) -> usize {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().values().cloned().collect();
        let mut n = 0;
        for job in jobs {
            if !job.life.lock().state.is_finished() {
                job.request_cancel();
                n += 1;
            }
        }
        n
    }

    /// Unfinished jobs of one kind.
    pub fn running_of(&self, kind: JobKind) -> usize {
        self.list()
            .iter()
            .filter(|j| j.kind == kind && !j.state.is_finished())
            .count()
    }

    /// Jobs not finished yet.
    pub fn running(&self) -> usize {
        self.list()
            .iter()
            .filter(|j| !j.state.is_finished())
            .count()
    }
}

/// What a job's code holds. Dropping it without finishing marks the job failed, so a panic or an
/// early return can never leave a job "running" forever.
pub struct JobHandle {
    job: Arc<Job>,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> u64 {
        self.job.id
    }

    /// Marks the job running.
    pub fn start(&self) {
        let mut life = self.job.life.lock();
        if life.state == JobState::Queued {
            life.state = JobState::Running;
            life.started = Some((Instant::now(), epoch_s()));
            life.resumed_at = Some(Instant::now());
        }
    }

    /// Sets the totals when they become known.
    pub fn set_totals(&self, keys: Option<u64>, bytes: Option<u64>) {
        self.job
            .total_keys
            .store(keys.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.job
            .total_bytes
            .store(bytes.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// A handle for reporting progress from code that cannot own the job (an observer
    /// called from inside a long engine call).
    pub fn reporter(&self) -> JobReporter {
        JobReporter {
            job: self.job.clone(),
        }
    }

    /// Run `hook` when cancellation is requested (at once if it already was). The hook is
    /// dropped when the job finishes, so it may hold what the job works on without keeping
    /// it alive in the job history.
    pub fn on_cancel(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.job.cancel_hook.lock() = Some(Box::new(hook));
        if self.is_cancelled() {
            self.job.request_cancel();
        }
    }

    /// Records a job another node runs on behalf of this one.
    pub fn add_remote(&self, remote: RemoteJob) {
        self.job.remote.lock().push(remote);
    }

    /// Rests `pause` (a rate limit or throttle), waking early on cancellation, which it then
    /// returns: a job resting for a rate limit stops as soon as it is cancelled.
    pub fn rest(&self, pause: Duration) -> Result<(), Cancelled> {
        rest_of(&self.job, pause)
    }

    /// Adds processed keys and bytes.
    pub fn progress(&self, keys: u64, bytes: u64) {
        self.job.done_keys.fetch_add(keys, Ordering::Relaxed);
        self.job.done_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts an error the job survives.
    pub fn error(&self, message: impl Into<String>) {
        self.job.errors.fetch_add(1, Ordering::Relaxed);
        self.job.life.lock().last_error = Some(message.into());
    }

    /// True once cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed)
    }

    /// Called between units of work: blocks while paused, and returns `Err(Cancelled)` once
    /// cancellation was requested.
    pub fn checkpoint(&self) -> Result<(), Cancelled> {
        JobHandle::checkpoint_of(&self.job)
    }

    fn checkpoint_of(job: &Job) -> Result<(), Cancelled> {
        let cancelled = || job.cancel.load(Ordering::Relaxed);
        let mut life = job.life.lock();
        while life.state == JobState::Paused && !cancelled() {
            job.resumed.wait(&mut life);
        }
        if cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Like [`JobHandle::checkpoint`], and counts one unit of progress (`keys`, `bytes`) in
    /// the same critical section as the pause check. So once anyone has seen the job
    /// `Paused` (pause takes the same lock), its done counters stay frozen until it is
    /// resumed: a streaming job admits each item before sending it, which makes "nothing was
    /// sent while paused" observable from outside. A pause longer than `max_pause` cancels
    /// the job (its consumer is presumed gone), so a forgotten pause cannot hold a thread
    /// forever.
    pub fn admit(&self, keys: u64, bytes: u64, max_pause: Duration) -> Result<(), Cancelled> {
        let mut life = self.job.life.lock();
        let deadline = Instant::now() + max_pause;
        while life.state == JobState::Paused && !self.is_cancelled() {
            if self.job.resumed.wait_until(&mut life, deadline).timed_out()
                && life.state == JobState::Paused
            {
                self.job.cancel.store(true, Ordering::Relaxed);
                self.job.errors.fetch_add(1, Ordering::Relaxed);
                life.last_error = Some(format!(
                    "paused longer than {} s: cancelled",
                    max_pause.as_secs()
                ));
            }
        }
        if self.is_cancelled() {
            return Err(Cancelled);
        }
        self.job.done_keys.fetch_add(keys, Ordering::Relaxed);
        self.job.done_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Finishes the job: `Ok(message)` -> done, `Err(message)` -> failed; a cancelled job ends
    /// as cancelled whatever the outcome.
    pub fn finish(self, outcome: Result<String, String>) {
        let state = match (&outcome, self.is_cancelled()) {
            (_, true) => JobState::Cancelled,
            (Ok(_), false) => JobState::Done,
            (Err(_), false) => JobState::Failed,
        };
        self.close(state, outcome.unwrap_or_else(|e| e));
    }

    fn close(&self, state: JobState, message: String) {
        drop(self.job.cancel_hook.lock().take());
        let mut life = self.job.life.lock();
        if life.state.is_finished() {
            return;
        }
        if let Some(r) = life.resumed_at.take() {
            life.active_before += r.elapsed();
        }
        life.state = state;
        life.finished_at_s = Some(epoch_s());
        life.result = Some(message);
        // Wakes `Workers::wait` callers (and paused checkpoints, which re-check their state).
        self.job.resumed.notify_all();
    }
}

/// Progress reporting for a job, cloneable (see [`JobHandle::reporter`]); it cannot finish
/// the job.
#[derive(Clone)]
pub struct JobReporter {
    job: Arc<Job>,
}

impl JobReporter {
    /// Sets the totals when they become known.
    pub fn set_totals(&self, keys: Option<u64>, bytes: Option<u64>) {
        let j = &self.job;
        j.total_keys
            .store(keys.unwrap_or(UNKNOWN), Ordering::Relaxed);
        j.total_bytes
            .store(bytes.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// Sets the processed keys and bytes (absolute figures).
    pub fn set_done(&self, keys: u64, bytes: u64) {
        self.job.done_keys.store(keys, Ordering::Relaxed);
        self.job.done_bytes.store(bytes, Ordering::Relaxed);
    }

    /// As [`JobHandle::checkpoint`]: blocks while paused, `Err` once cancelled.
    pub fn checkpoint(&self) -> Result<(), Cancelled> {
        JobHandle::checkpoint_of(&self.job)
    }

    /// As [`JobHandle::rest`].
    pub fn rest(&self, pause: Duration) -> Result<(), Cancelled> {
        rest_of(&self.job, pause)
    }
}

/// Something a job can rest through: its handle, or a reporter inside an engine call.
pub trait Rest {
    /// Rests `pause`, waking early (with `Err`) on cancellation.
    fn rest(&self, pause: Duration) -> Result<(), Cancelled>;
}

impl Rest for JobHandle {
    fn rest(&self, pause: Duration) -> Result<(), Cancelled> {
        JobHandle::rest(self, pause)
    }
}

impl Rest for JobReporter {
    fn rest(&self, pause: Duration) -> Result<(), Cancelled> {
        JobReporter::rest(self, pause)
    }
}

/// [`JobHandle::rest`] for any holder of the job: counted in the job's `rests` / `rested_ms`.
fn rest_of(job: &Job, pause: Duration) -> Result<(), Cancelled> {
    let cancelled = || job.cancel.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + pause;
    {
        let mut life = job.life.lock();
        while !cancelled() {
            if job.resumed.wait_until(&mut life, deadline).timed_out() {
                break;
            }
        }
    }
    job.rests.fetch_add(1, Ordering::Relaxed);
    job.rested_ms
        .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    if cancelled() {
        Err(Cancelled)
    } else {
        Ok(())
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.close(
            JobState::Failed,
            "job ended without reporting a result".to_owned(),
        );
    }
}

/// Keeps background work to a share of wall time, so foreground latency holds: after each unit
/// of work that took `t`, the job sleeps `t * (1 - share) / share`. A share of 1.0 never sleeps.
/// Sleeping here is the throttle itself, not synchronisation.
#[derive(Clone, Debug)]
pub struct Throttle {
    share: f64,
    max_pause: Duration,
}

impl Throttle {
    /// A throttle letting the job use `share` (0.01 to 1.0) of wall time.
    pub fn new(share: f64) -> Throttle {
        Throttle {
            share: share.clamp(0.01, 1.0),
            max_pause: Duration::from_secs(1),
        }
    }

    /// The pause owed after a unit of work that took `worked`.
    pub fn pause_after(&self, worked: Duration) -> Duration {
        if self.share >= 1.0 {
            return Duration::ZERO;
        }
        worked
            .mul_f64((1.0 - self.share) / self.share)
            .min(self.max_pause)
    }
}

/// Shortest rest a [`Pacer`] takes: below this, owed pauses are carried to the next unit, so a
/// job of many tiny units (one record each) rests in few, measurable pieces instead of
/// waking a condvar per record.
const MIN_REST: Duration = Duration::from_millis(5);

/// A [`Throttle`] applied to a stream of work units: it measures the work since the last rest
/// and rests what the share owes once that reaches [`MIN_REST`]. Wall time spent resting
/// (or blocked elsewhere, e.g. on a full reply queue) does not count as work.
#[derive(Debug)]
pub struct Pacer {
    throttle: Throttle,
    working_since: Instant,
    owed: Duration,
}

impl Pacer {
    /// A pacer for `share` of wall time (see [`Throttle::new`]), counting work from now.
    pub fn new(share: f64) -> Pacer {
        Pacer {
            throttle: Throttle::new(share),
            working_since: Instant::now(),
            owed: Duration::ZERO,
        }
    }

    /// Call after each unit of work: rests if enough is owed. `Err` once the job is
    /// cancelled (a rest ends at once then).
    pub fn after_unit(&mut self, job: &impl Rest) -> Result<(), Cancelled> {
        let now = Instant::now();
        self.owed += self
            .throttle
            .pause_after(now.saturating_duration_since(self.working_since));
        self.working_since = now;
        if self.owed < MIN_REST {
            return Ok(());
        }
        let pause = std::mem::take(&mut self.owed).min(self.throttle.max_pause);
        let r = job.rest(pause);
        self.working_since = Instant::now();
        r
    }

    /// Do not count the time since the last unit as work (the job waited for something
    /// other than the disk, e.g. a pause).
    pub fn idle(&mut self) {
        self.working_since = Instant::now();
    }
}

/// Limits a job's throughput to `bytes_per_s` (0 = unlimited): `pause_for` says how long to wait
/// so the bytes moved since the start do not run ahead of the limit.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_s: u64,
    started: Instant,
    moved_bytes: u64,
}

impl RateLimit {
    /// A limiter starting now.
    pub fn new(bytes_per_s: u64) -> RateLimit {
        RateLimit {
            bytes_per_s,
            started: Instant::now(),
            moved_bytes: 0,
        }
    }

    /// Accounts `bytes` moved at `now` and returns how long to wait before moving more.
    pub fn pause_for(&mut self, bytes: u64, now: Instant) -> Duration {
        self.moved_bytes += bytes;
        if self.bytes_per_s == 0 {
            return Duration::ZERO;
        }
        let allowed_at = self.started
            + Duration::from_secs_f64(self.moved_bytes as f64 / self.bytes_per_s as f64);
        allowed_at.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn job_reports_progress_and_result() {
        let workers = Workers::new(10);
        let job = workers.register(JobKind::RecoveryDc, "groups 1,2");
        let id = job.id();
        assert_eq!(workers.get(id).expect("listed").state, JobState::Queued);
        job.start();
        job.set_totals(Some(10), None);
        job.progress(4, 4096);
        job.error("key abc: timeout");
        let s = workers.get(id).expect("listed");
        assert_eq!(
            (s.state, s.done_keys, s.total_keys, s.done_bytes),
            (JobState::Running, 4, Some(10), 4096)
        );
        assert_eq!((s.errors, s.total_bytes), (1, None));
        assert_eq!(s.last_error.as_deref(), Some("key abc: timeout"));
        assert!(s.started_at_s.is_some());
        job.finish(Ok("copied 4".into()));
        let s = workers.get(id).expect("listed");
        assert_eq!(s.state, JobState::Done);
        assert_eq!(s.result.as_deref(), Some("copied 4"));
        assert!(s.finished_at_s.is_some());
    }

    #[test]
    fn cancel_is_seen_at_the_next_checkpoint_and_ends_cancelled() {
        let workers = Workers::new(10);
        let job = workers.register(JobKind::DataSort, "backend 1");
        let id = job.id();
        job.start();
        assert_eq!(job.checkpoint(), Ok(()));
        workers.cancel(id).expect("cancel");
        assert_eq!(job.checkpoint(), Err(Cancelled));
        job.finish(Ok("stopped".into()));
        assert_eq!(workers.get(id).expect("listed").state, JobState::Cancelled);
        assert!(matches!(
            workers.cancel(id),
            Err(ControlError::Finished { .. })
        ));
        assert_eq!(workers.cancel(999), Err(ControlError::NotFound(999)));
    }

    #[test]
    fn paused_job_blocks_at_checkpoint_until_resumed() {
        let workers = Arc::new(Workers::new(10));
        let job = workers.register(JobKind::ServerSend, "backend 2");
        let id = job.id();
        job.start();
        workers.pause(id).expect("pause");
        assert_eq!(workers.get(id).expect("listed").state, JobState::Paused);
        let (at_checkpoint, reached) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            at_checkpoint.send(()).expect("send");
            let r = job.checkpoint();
            done_tx.send(r).expect("send");
            job.finish(Ok("ok".into()));
        });
        reached.recv().expect("worker reached the checkpoint");
        // Still paused: the worker cannot have passed the checkpoint.
        assert!(done_rx.try_recv().is_err());
        workers.resume(id).expect("resume");
        assert_eq!(done_rx.recv().expect("worker resumed"), Ok(()));
        worker.join().expect("join");
        assert_eq!(workers.get(id).expect("listed").state, JobState::Done);
    }

    #[test]
    fn admit_counts_only_while_not_paused_and_a_long_pause_cancels() {
        let workers = Workers::new(10);
        let job = workers.register(JobKind::Iterator, "backend 1");
        job.start();
        assert_eq!(job.admit(1, 10, Duration::from_secs(5)), Ok(()));
        workers.pause(job.id()).expect("pause");
        let frozen = workers.get(job.id()).expect("listed");
        assert_eq!((frozen.state, frozen.done_keys), (JobState::Paused, 1));
        // Nobody resumes: the pause limit cancels the job instead of parking forever.
        assert_eq!(job.admit(1, 10, Duration::from_millis(1)), Err(Cancelled));
        let s = workers.get(job.id()).expect("listed");
        assert_eq!((s.done_keys, s.done_bytes, s.errors), (1, 10, 1));
        assert!(s.last_error.expect("reason").contains("paused longer"));
    }

    #[test]
    fn cancel_all_stops_every_unfinished_job() {
        let workers = Workers::new(10);
        let a = workers.register(JobKind::Iterator, "backend 1");
        let b = workers.register(JobKind::RecoveryDc, "groups 1,2");
        a.start();
        b.start();
        workers.pause(a.id()).expect("pause");
        workers
            .register(JobKind::DataSort, "done")
            .finish(Ok("ok".into()));
        assert_eq!(workers.running_of(JobKind::Iterator), 1);
        assert_eq!(workers.cancel_all(), 2);
        assert_eq!(a.admit(1, 0, Duration::from_secs(60)), Err(Cancelled));
        assert_eq!(b.checkpoint(), Err(Cancelled));
    }

    #[test]
    fn cancel_runs_the_hook_once_asked_and_the_hook_is_dropped_at_finish() {
        let workers = Workers::new(10);
        let job = workers.register(JobKind::DataSort, "backend 1");
        job.start();
        let calls = Arc::new(AtomicU64::new(0));
        let held = Arc::new(());
        let (c, h) = (calls.clone(), held.clone());
        job.on_cancel(move || {
            let _ = &h;
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let reporter = job.reporter();
        reporter.set_totals(Some(4), Some(4000));
        reporter.set_done(1, 1000);
        let s = workers.get(job.id()).expect("listed");
        assert_eq!(
            (s.done_keys, s.total_keys, s.done_bytes),
            (1, Some(4), 1000)
        );
        workers.cancel(job.id()).expect("cancel");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(reporter.checkpoint(), Err(Cancelled));
        job.finish(Ok("stopped".into()));
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the hook went with the job's end"
        );
        assert_eq!(workers.get(1).expect("listed").state, JobState::Cancelled);
        // A hook installed after the request runs at once.
        let late = workers.register(JobKind::DataSort, "backend 2");
        workers.cancel(late.id()).expect("cancel");
        let c = calls.clone();
        late.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        late.finish(Ok("stopped".into()));
    }

    #[test]
    fn cancel_wakes_a_paused_job() {
        let workers = Workers::new(10);
        let job = workers.register(JobKind::RecoveryMerge, "group 1");
        job.start();
        workers.pause(job.id()).expect("pause");
        workers.cancel(job.id()).expect("cancel");
        assert_eq!(job.checkpoint(), Err(Cancelled));
    }

    #[test]
    fn dropped_handle_marks_the_job_failed() {
        let workers = Workers::new(10);
        let id = {
            let job = workers.register(JobKind::CacheSync, "backend 1");
            job.start();
            job.id()
        };
        let s = workers.get(id).expect("listed");
        assert_eq!(s.state, JobState::Failed);
        assert!(s.result.expect("message").contains("without reporting"));
    }

    #[test]
    fn history_of_finished_jobs_is_bounded() {
        let workers = Workers::new(3);
        let running = workers.register(JobKind::RecoveryDc, "long");
        running.start();
        for _ in 0..10 {
            workers
                .register(JobKind::DataSort, "b")
                .finish(Ok("done".into()));
        }
        for _ in 0..5 {
            workers
                .register(JobKind::CacheSync, "b")
                .finish(Ok("done".into()));
        }
        let list = workers.list();
        let finished_sorts = list.iter().filter(|j| j.kind == JobKind::DataSort).count();
        assert_eq!(finished_sorts, 3, "the history limit holds per kind");
        assert_eq!(list.len(), 3 + 3 + 1, "3 sorts + 3 cache syncs + 1 running");
        assert!(
            list.iter().any(|j| j.id == running.id()),
            "running jobs are never dropped"
        );
        assert_eq!(workers.running(), 1);
    }

    #[test]
    fn throttle_pause_keeps_the_configured_share() {
        let t = Throttle::new(0.25);
        assert_eq!(
            t.pause_after(Duration::from_millis(10)),
            Duration::from_millis(30)
        );
        assert_eq!(
            Throttle::new(1.0).pause_after(Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(
            t.pause_after(Duration::from_secs(10)),
            Duration::from_secs(1),
            "capped"
        );
    }

    #[test]
    fn pacer_rests_what_its_share_owes_and_counts_it_in_the_job() {
        let workers = Workers::new(10);
        let job = workers.register(JobKind::ServerSend, "backend 1");
        job.start();
        // Unthrottled: never rests.
        let mut free = Pacer::new(1.0);
        for _ in 0..100 {
            assert_eq!(free.after_unit(&job), Ok(()));
        }
        assert_eq!(workers.get(job.id()).expect("listed").rests, 0);
        // A tenth of the time: 2 ms of work owes 18 ms of rest (above the 5 ms minimum).
        let mut paced = Pacer::new(0.1);
        paced.working_since = Instant::now() - Duration::from_millis(2);
        assert_eq!(paced.after_unit(&job), Ok(()));
        let s = workers.get(job.id()).expect("listed");
        assert_eq!(s.rests, 1, "{s:?}");
        assert!(s.rested_ms >= 17, "{s:?}");
        // Idle time (waiting for a client) is not work: nothing owed.
        paced.working_since = Instant::now() - Duration::from_secs(5);
        paced.idle();
        assert_eq!(paced.after_unit(&job), Ok(()));
        assert_eq!(workers.get(job.id()).expect("listed").rests, 1);
        // A rest of a cancelled job ends at once, and says so.
        workers.cancel(job.id()).expect("cancel");
        paced.working_since = Instant::now() - Duration::from_secs(1);
        assert_eq!(paced.after_unit(&job), Err(Cancelled));
        job.finish(Ok("stopped".into()));
    }

    #[test]
    fn rate_limit_pauses_when_ahead_of_the_limit() {
        let mut r = RateLimit::new(1_000);
        let start = r.started;
        assert_eq!(r.pause_for(500, start), Duration::from_millis(500));
        assert_eq!(
            r.pause_for(500, start + Duration::from_secs(2)),
            Duration::ZERO
        );
        let mut unlimited = RateLimit::new(0);
        assert_eq!(
            unlimited.pause_for(u64::MAX / 2, Instant::now()),
            Duration::ZERO
        );
    }
}
