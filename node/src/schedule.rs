//! Data-sort scheduling: when a backend's data-sort should start by itself.
//!
//! Pure logic over an explicit clock value (`now`, seconds since the Unix epoch, UTC), so every
//! rule is tested by moving a number, never by sleeping. The node's maintenance loop asks
//! [`Scheduler::due`] on every tick, with the time from the node's [`Clock`] (injectable: a
//! cluster test moves a [`ManualClock`] into a window), and starts the job when it says so.
//!
//! Modes (as in Elliptics):
//! - `Auto`: whenever a base is closed (rotation): the maintenance loop sees the engine's
//!   rotation count grow and data-sorts the closed bases (`closed_only`); nothing timed.
//! - `Timed`: every `timeout_s` after the previous start (the first one `timeout_s` after the
//!   scheduler starts).
//! - `Scheduled`: once a day inside the window `time_hour ± splay_hours` (UTC). Each node picks
//!   its own random start inside the window so a fleet does not sort all at once; the pick is
//!   redrawn each day.
//! - `None`: only on command.
//!
//! Invariant: `Scheduled` starts at most once per window, and never outside it.

use serde::{Deserialize, Serialize};

use crate::config::{DefragConfig, DefragMode};

const DAY_S: u64 = 86_400;
const HOUR_S: u64 = 3_600;
/// The scheduler task must tick at least this often for `Scheduled` starts to land in windows.
pub const TICK_MARGIN_S: u64 = 600;

/// A data-sort schedule, as configured or as changed through the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Scheduling mode.
    pub mode: DefragMode,
    /// Period for `Timed`.
    pub timeout_s: u64,
    /// Window centre for `Scheduled`, hour of day in UTC.
    pub time_hour: u8,
    /// Window half-width in hours.
    pub splay_hours: u8,
    /// Only bases that want defrag.
    pub compact: bool,
}

impl From<&DefragConfig> for Schedule {
    fn from(c: &DefragConfig) -> Self {
        Schedule {
            mode: c.mode,
            timeout_s: c.timeout_s,
            time_hour: c.time_hour,
            splay_hours: c.splay_hours,
            compact: c.compact,
        }
    }
}

impl Schedule {
    /// The window `[start, end)` (epoch seconds) of the `Scheduled` mode on the UTC day that
    /// contains `day_any_s`. A window may begin the day before (03:00 ± 4 h starts at 23:00).
    pub fn window_on_day(&self, day_any_s: u64) -> (u64, u64) {
        let day_start = day_any_s - day_any_s % DAY_S;
        let centre = day_start + u64::from(self.time_hour) * HOUR_S;
        let splay = u64::from(self.splay_hours) * HOUR_S;
        // A zero splay still needs a window to land in: one hour from the centre.
        let (start, end) = if splay == 0 {
            (centre, centre + HOUR_S)
        } else {
            (centre.saturating_sub(splay), centre + splay)
        };
        (start, end)
    }
}

/// Per-backend scheduler state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduler {
    schedule: Schedule,
    /// When the last data-sort started (by schedule or command).
    last_start_s: Option<u64>,
    /// When this scheduler began (the reference for the first `Timed` run).
    created_s: u64,
    /// The chosen start of the next `Scheduled` run, inside its window.
    planned_s: Option<u64>,
    /// Random source for the per-node start in the window; splitmix64 so the pick is
    /// reproducible from the seed in tests and well spread even for small seeds.
    rng_state: u64,
}

impl Scheduler {
    /// A scheduler starting at `now_s`, with `seed` choosing this node's start in windows.
    pub fn new(schedule: Schedule, now_s: u64, seed: u64) -> Scheduler {
        let mut s = Scheduler {
            schedule,
            last_start_s: None,
            created_s: now_s,
            planned_s: None,
            rng_state: seed,
        };
        s.plan(now_s);
        s
    }

    /// [`Scheduler::new`] for a backend whose last data-sort started at `last_start_s` (read
    /// back after a restart): TIMED counts its period from that start, not from the restart,
    /// and SCHEDULED does not run again in a window it already ran in.
    pub fn resume(
        schedule: Schedule,
        now_s: u64,
        seed: u64,
        last_start_s: Option<u64>,
    ) -> Scheduler {
        let mut s = Scheduler::new(schedule, now_s, seed);
        if last_start_s.is_some() {
            s.last_start_s = last_start_s;
            s.planned_s = None;
            s.plan(now_s);
        }
        s
    }

    /// The current schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Replaces the schedule (admin API); the next start is planned again from `now_s`.
    pub fn set_schedule(&mut self, schedule: Schedule, now_s: u64) {
        self.schedule = schedule;
        self.created_s = now_s;
        self.planned_s = None;
        self.plan(now_s);
    }

    /// When the last data-sort started.
    pub fn last_start_s(&self) -> Option<u64> {
        self.last_start_s
    }

    /// Records a start (scheduled or commanded) and plans the next one.
    pub fn started(&mut self, now_s: u64) {
        self.last_start_s = Some(now_s);
        self.planned_s = None;
        self.plan(now_s + 1);
    }

    /// The next planned start, if the mode has timed starts.
    pub fn next_start_s(&self) -> Option<u64> {
        match self.schedule.mode {
            DefragMode::Timed => {
                Some(self.last_start_s.unwrap_or(self.created_s) + self.schedule.timeout_s)
            }
            DefragMode::Scheduled => self.planned_s,
            DefragMode::Auto | DefragMode::None => None,
        }
    }

    /// True when a timed start is due at `now_s`. The caller then starts the job and calls
    /// [`Scheduler::started`].
    pub fn due(&mut self, now_s: u64) -> bool {
        if self.schedule.mode == DefragMode::Scheduled {
            // Missed the whole window (node was down, clock jumped): plan the next one.
            if let Some(planned) = self.planned_s {
                let (_, end) = self.window_containing(planned);
                if now_s >= end {
                    self.planned_s = None;
                    self.plan(now_s);
                    return false;
                }
            }
        }
        self.next_start_s().is_some_and(|at| now_s >= at)
    }

    /// The window that `at_s` was planned in (the day of its centre).
    fn window_containing(&self, at_s: u64) -> (u64, u64) {
        // A planned start can precede its centre's day by up to the splay, so look at the day of
        // `at + splay`.
        let splay = u64::from(self.schedule.splay_hours) * HOUR_S;
        self.schedule.window_on_day(at_s + splay)
    }

    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// For `Scheduled`: picks a random start in the first window that ends after `from_s` and in
    /// which no run has started yet, not earlier than `from_s`.
    fn plan(&mut self, from_s: u64) {
        if self.schedule.mode != DefragMode::Scheduled || self.planned_s.is_some() {
            return;
        }
        // Today's window, tomorrow's, and the day after cover every case (a window can start
        // the previous day).
        for day in 0..3 {
            let (start, end) = self.schedule.window_on_day(from_s + day * DAY_S);
            let already_ran = self.last_start_s.is_some_and(|s| s >= start && s < end);
            if end <= from_s || already_ran {
                continue;
            }
            // Keep the last tenth of the window (at most TICK_MARGIN_S) free, so a scheduler
            // ticking that often cannot step over the planned start and out of the window.
            let latest = end - ((end - start) / 10).min(TICK_MARGIN_S);
            if latest <= from_s {
                continue;
            }
            let earliest = start.max(from_s);
            let pick = earliest + self.next_random() % (latest - earliest);
            self.planned_s = Some(pick);
            return;
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a node reads the time of day its schedules run by. Injected at start
/// ([`crate::server::StartOptions`]) so tests move a clock instead of sleeping to a window.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch (UTC).
    fn now_unix_s(&self) -> u64;
}

/// The system clock (what a node uses unless told otherwise).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> u64 {
        now_unix_s()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now_s: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_s`.
    pub fn new(now_s: u64) -> ManualClock {
        ManualClock {
            now_s: std::sync::atomic::AtomicU64::new(now_s),
        }
    }

    /// Jump to `now_s` (backwards too: a clock step).
    pub fn set(&self, now_s: u64) {
        self.now_s.store(now_s, std::sync::atomic::Ordering::SeqCst);
    }

    /// Move forward by `by_s`.
    pub fn advance(&self, by_s: u64) {
        self.now_s
            .fetch_add(by_s, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_s(&self) -> u64 {
        self.now_s.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(mode: DefragMode) -> Schedule {
        Schedule {
            mode,
            timeout_s: 600,
            time_hour: 3,
            splay_hours: 1,
            compact: false,
        }
    }

    /// 2026-11-25 00:00:00 UTC.
    const DAY0: u64 = 1_795_564_800;

    #[test]
    fn auto_and_none_have_no_timed_start() {
        for mode in [DefragMode::Auto, DefragMode::None] {
            let mut s = Scheduler::new(schedule(mode), DAY0, 7);
            assert_eq!(s.next_start_s(), None);
            assert!(!s.due(DAY0 + 10 * DAY_S));
        }
    }

    #[test]
    fn timed_fires_every_timeout_after_the_last_start() {
        let mut s = Scheduler::new(schedule(DefragMode::Timed), DAY0, 7);
        assert!(!s.due(DAY0 + 599));
        assert!(s.due(DAY0 + 600));
        s.started(DAY0 + 650);
        assert_eq!(s.next_start_s(), Some(DAY0 + 1_250));
        assert!(!s.due(DAY0 + 1_249));
        assert!(s.due(DAY0 + 1_250));
    }

    #[test]
    fn scheduled_fires_inside_its_window_once_per_day() {
        for seed in 1..200u64 {
            let mut s = Scheduler::new(schedule(DefragMode::Scheduled), DAY0, seed);
            let (start, end) = (DAY0 + 2 * HOUR_S, DAY0 + 4 * HOUR_S);
            let planned = s.next_start_s().expect("planned");
            assert!((start..end).contains(&planned), "seed {seed}: {planned}");
            // Walk the clock minute by minute through the day: it fires exactly once, in the
            // window, at the planned time.
            let mut fired = Vec::new();
            let mut now = DAY0;
            while now < DAY0 + DAY_S {
                if s.due(now) {
                    fired.push(now);
                    s.started(now);
                }
                now += 60;
            }
            assert_eq!(fired.len(), 1, "seed {seed}: {fired:?}");
            assert!((start..end).contains(&fired[0]));
            // The next one is planned in tomorrow's window.
            let next = s.next_start_s().expect("planned");
            assert!((start + DAY_S..end + DAY_S).contains(&next), "seed {seed}");
        }
    }

    #[test]
    fn nodes_pick_different_starts_in_the_window() {
        let starts: std::collections::HashSet<u64> = (1..50u64)
            .filter_map(|seed| {
                Scheduler::new(schedule(DefragMode::Scheduled), DAY0, seed).next_start_s()
            })
            .collect();
        assert!(
            starts.len() > 40,
            "starts should be spread: {}",
            starts.len()
        );
    }

    #[test]
    fn starting_inside_the_window_plans_for_the_rest_of_it() {
        let now = DAY0 + 3 * HOUR_S + 30 * 60; // 03:30, window 02:00-04:00
        let s = Scheduler::new(schedule(DefragMode::Scheduled), now, 3);
        let planned = s.next_start_s().expect("planned");
        assert!((now..DAY0 + 4 * HOUR_S).contains(&planned), "{planned}");
    }

    #[test]
    fn a_commanded_run_in_the_window_counts_as_todays_run() {
        let mut s = Scheduler::new(schedule(DefragMode::Scheduled), DAY0, 5);
        s.started(DAY0 + 2 * HOUR_S + 1); // an admin started it by hand in the window
        let next = s.next_start_s().expect("planned");
        assert!(next >= DAY0 + DAY_S + 2 * HOUR_S, "not again today: {next}");
    }

    #[test]
    fn a_missed_window_is_skipped_not_run_late() {
        let mut s = Scheduler::new(schedule(DefragMode::Scheduled), DAY0, 9);
        // The node was paused through the whole window and ticks again at noon.
        assert!(!s.due(DAY0 + 12 * HOUR_S));
        let next = s.next_start_s().expect("planned");
        assert!((DAY0 + DAY_S + 2 * HOUR_S..DAY0 + DAY_S + 4 * HOUR_S).contains(&next));
    }

    #[test]
    fn window_around_midnight_starts_the_day_before() {
        let sched = Schedule {
            time_hour: 1,
            splay_hours: 3,
            ..schedule(DefragMode::Scheduled)
        };
        let (start, end) = sched.window_on_day(DAY0 + 5);
        assert_eq!((start, end), (DAY0 - 2 * HOUR_S, DAY0 + 4 * HOUR_S));
        let mut s = Scheduler::new(sched, DAY0 + 5 * HOUR_S, 11);
        let next = s.next_start_s().expect("planned");
        assert!(
            (DAY0 + DAY_S - 2 * HOUR_S..DAY0 + DAY_S + 4 * HOUR_S).contains(&next),
            "{next}"
        );
        assert!(!s.due(DAY0 + 6 * HOUR_S));
    }

    #[test]
    fn changing_the_schedule_replans_immediately() {
        let mut s = Scheduler::new(schedule(DefragMode::None), DAY0, 1);
        assert_eq!(s.next_start_s(), None);
        s.set_schedule(schedule(DefragMode::Timed), DAY0 + 100);
        assert_eq!(s.next_start_s(), Some(DAY0 + 700));
        s.set_schedule(schedule(DefragMode::Scheduled), DAY0 + 100);
        assert!(s.next_start_s().is_some());
    }

    #[test]
    fn a_resumed_scheduler_keeps_its_last_start() {
        // TIMED: the period runs from the last start, not from the restart.
        let timed = Scheduler::resume(schedule(DefragMode::Timed), DAY0 + 500, 1, Some(DAY0));
        assert_eq!(
            timed.next_start_s(),
            Some(DAY0 + schedule(DefragMode::Timed).timeout_s)
        );
        // SCHEDULED: a window it already ran in is not planned again.
        let fresh = Scheduler::new(schedule(DefragMode::Scheduled), DAY0, 7);
        let planned = fresh.next_start_s().unwrap();
        let resumed = Scheduler::resume(
            schedule(DefragMode::Scheduled),
            planned + 1,
            7,
            Some(planned),
        );
        let next = resumed.next_start_s().unwrap();
        let tomorrow = DAY0 + DAY_S + 2 * HOUR_S..DAY0 + DAY_S + 4 * HOUR_S;
        assert!(tomorrow.contains(&next), "{planned} then {next}");
        // Without the last start, the restart would plan today's window again.
        let forgot = Scheduler::new(schedule(DefragMode::Scheduled), planned + 1, 7);
        assert!(forgot.next_start_s().unwrap() < DAY0 + DAY_S);
    }
}
