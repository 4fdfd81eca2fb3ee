//! Console state and its pure update function.
//!
//! `App::on_key` turns a key into state changes and, for admin actions, into [`AdminRequest`]s
//! that the runtime executes over HTTP; `App::on_model` takes a new poll result and derives the
//! events log from what changed. Neither does I/O, so both are tested directly.
//!
//! Invariants: dangerous actions (start/stop data-sort, change a schedule, start or cancel
//! recovery) always pass through a confirmation; in read-only mode they are not offered at all.
//! The events log is bounded.

use std::collections::{HashMap, HashSet, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Serialize;

use crate::model::{
    BackendRow, ClusterModel, CommandRow, JobRow, NodeModel, ShareRow, TraceSummary,
};

/// Most events kept.
pub const EVENTS_LIMIT: usize = 1_000;
/// Requests slower than this are logged as slow in the events view.
pub const SLOW_REQUEST_US: u64 = 100_000;

/// The views, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Tab {
    /// Cluster health at a glance.
    Overview,
    /// Key ring per group.
    Ring,
    /// One node in detail.
    Node,
    /// Data-sort schedules and plan.
    DataSort,
    /// Recovery jobs.
    Recovery,
    /// Call trees.
    Traces,
    /// What happened.
    Events,
}

impl Tab {
    /// All tabs in order.
    pub const ALL: [Tab; 7] = [
        Tab::Overview,
        Tab::Ring,
        Tab::Node,
        Tab::DataSort,
        Tab::Recovery,
        Tab::Traces,
        Tab::Events,
    ];

    /// Title in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Ring => "Ring",
            Tab::Node => "Node",
            Tab::DataSort => "Data-sort",
            Tab::Recovery => "Recovery",
            Tab::Traces => "Traces",
            Tab::Events => "Events",
        }
    }

    /// The `:` command that opens it.
    pub fn command(self) -> &'static str {
        match self {
            Tab::Overview => "overview",
            Tab::Ring => "ring",
            Tab::Node => "node",
            Tab::DataSort => "defrag",
            Tab::Recovery => "recovery",
            Tab::Traces => "traces",
            Tab::Events => "events",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }

    /// The orders `s` cycles through in this view's table, the first being the default.
    /// In the node view the first four order the commands table, the last two the backends.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Tab::Overview => &["address", "ops/s", "p99", "errors"],
            Tab::Ring => &["group", "share", "node"],
            Tab::Node => &[
                "command",
                "rate",
                "p99",
                "failures",
                "backend used",
                "backend records",
            ],
            Tab::DataSort => &["node", "next start", "want", "frees"],
            Tab::Recovery => &["node", "state", "progress", "eta", "errors"],
            Tab::Traces => &["newest", "duration", "command", "node"],
            Tab::Events => &["newest", "oldest", "severe first"],
        }
    }
}

/// Recovery kinds the console can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryKind {
    /// Within a group, after a ring change.
    Merge,
    /// Across groups.
    Dc,
}

/// An admin operation for the runtime to perform on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Start data-sort now.
    DefragStart {
        /// Node address.
        node: String,
        /// Backend id.
        backend: u32,
        /// Only bases that want it.
        compact: bool,
    },
    /// Stop data-sort after the current base.
    DefragStop {
        /// Node address.
        node: String,
        /// Backend id.
        backend: u32,
    },
    /// Change the schedule.
    DefragSchedule {
        /// Node address.
        node: String,
        /// Backend id.
        backend: u32,
        /// `auto`, `timed`, `scheduled`, `none`.
        mode: String,
        /// Window centre hour (UTC).
        time_hour: u8,
        /// Window half-width in hours.
        splay_hours: u8,
    },
    /// Start a recovery job.
    RecoveryStart {
        /// Node to run it on.
        node: String,
        /// Merge or dc.
        kind: RecoveryKind,
        /// Only report what would move.
        dry_run: bool,
    },
    /// Cancel a job.
    JobCancel {
        /// Node running it.
        node: String,
        /// Job id.
        job: u64,
    },
}

impl AdminRequest {
    /// One line describing the request, for confirmations and the events log.
    pub fn describe(&self) -> String {
        match self {
            AdminRequest::DefragStart {
                node,
                backend,
                compact,
            } => {
                let what = if *compact {
                    "compact data-sort"
                } else {
                    "data-sort"
                };
                format!("start {what} of backend {backend} on {node}")
            }
            AdminRequest::DefragStop { node, backend } => {
                format!("stop data-sort of backend {backend} on {node}")
            }
            AdminRequest::DefragSchedule {
                node,
                backend,
                mode,
                time_hour,
                splay_hours,
            } => {
                format!("set data-sort of backend {backend} on {node} to {mode} at {time_hour:02}:00 ±{splay_hours}h UTC")
            }
            AdminRequest::RecoveryStart {
                node,
                kind,
                dry_run,
            } => {
                let run = if *dry_run { "dry run of" } else { "start" };
                format!("{run} {kind:?} recovery from {node}")
                    .replace("Merge", "merge")
                    .replace("Dc", "dc")
            }
            AdminRequest::JobCancel { node, job } => format!("cancel job {job} on {node}"),
        }
    }
}

/// A pending confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// What will be done on "y".
    pub request: AdminRequest,
    /// What the operator should know first (a recovery's dry-run result), one line each.
    pub details: Vec<String>,
}

/// What a node answered to an admin request that succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminReply {
    /// A short result for the status line (may be empty).
    pub text: String,
    /// The job the request started, if it started one.
    pub job: Option<u64>,
}

/// A real recovery run asked for (`D` / `M`), waiting for its dry run to finish before it
/// is offered for confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecovery {
    /// Node the run starts from.
    pub node: String,
    /// Merge or dc.
    pub kind: RecoveryKind,
    /// Jobs listed when the dry run was asked: the dry run's jobs (one per node, the node
    /// fans it out) are the new ones.
    pub before: HashSet<(String, u64)>,
    /// The dry run's job on `node`, once the node answered.
    pub job: Option<u64>,
}

/// Most per-node lines of a dry-run summary in the confirmation.
pub const DRY_RUN_LINES: usize = 8;

/// The schedule editor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleForm {
    /// Node of the backend.
    pub node: String,
    /// Backend id.
    pub backend: u32,
    /// Mode index into [`SCHEDULE_MODES`].
    pub mode: usize,
    /// Window centre hour.
    pub time_hour: u8,
    /// Window half-width.
    pub splay_hours: u8,
    /// Field under edit: 0 mode, 1 hour, 2 splay.
    pub field: usize,
}

/// Modes offered by the schedule editor.
pub const SCHEDULE_MODES: [&str; 4] = ["auto", "timed", "scheduled", "none"];

/// One line of the events log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When, seconds since the Unix epoch.
    pub at_s: u64,
    /// Red when true.
    pub severe: bool,
    /// What happened.
    pub text: String,
}

/// What the runtime must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Leave the console.
    Quit,
    /// Perform an admin request.
    Admin(AdminRequest),
    /// Poll now.
    Refresh,
}

/// Text-entry modes of the bottom line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// No prompt.
    None,
    /// `/` filter being typed.
    Filter,
    /// `:` command being typed.
    Command(String),
}

/// The console's whole state.
#[derive(Clone, Debug)]
pub struct App {
    /// Current view.
    pub tab: Tab,
    /// Latest cluster model.
    pub model: ClusterModel,
    /// Selected row in the current view's main table.
    pub selected: usize,
    /// Node shown in the node view (index into `model.nodes`).
    pub node_index: usize,
    /// Filter applied to tables (substring, case-insensitive).
    pub filter: String,
    /// Text entry in progress.
    pub prompt: Prompt,
    /// Help overlay shown.
    pub show_help: bool,
    /// Polling paused.
    pub paused: bool,
    /// Poll interval.
    pub refresh_ms: u64,
    /// Admin actions hidden.
    pub read_only: bool,
    /// Confirmation dialog.
    pub confirm: Option<Confirm>,
    /// Schedule editor.
    pub form: Option<ScheduleForm>,
    /// Per view (in [`Tab::ALL`] order), the index into its [`Tab::sort_columns`].
    pub sort: [usize; 7],
    /// A real recovery waiting for its dry run.
    pub pending_recovery: Option<PendingRecovery>,
    /// Traces view: only trees at least this long.
    pub trace_min_us: u64,
    /// Last message for the status line (results of admin actions, errors).
    pub status: Option<String>,
    /// The events log, newest last.
    pub events: VecDeque<Event>,
    /// Whether a node was up at the previous model, to detect transitions.
    seen_up: HashMap<String, bool>,
    /// Job states at the previous model.
    seen_jobs: HashMap<(String, u64), String>,
    /// Trace ids already checked for slowness.
    seen_traces: HashMap<String, ()>,
}

impl App {
    /// A console on an empty model.
    pub fn new(read_only: bool, refresh_ms: u64) -> App {
        App {
            tab: Tab::Overview,
            model: ClusterModel::default(),
            selected: 0,
            node_index: 0,
            filter: String::new(),
            prompt: Prompt::None,
            show_help: false,
            paused: false,
            refresh_ms,
            read_only,
            confirm: None,
            form: None,
            sort: [0; 7],
            pending_recovery: None,
            trace_min_us: 0,
            status: None,
            events: VecDeque::new(),
            seen_up: HashMap::new(),
            seen_jobs: HashMap::new(),
            seen_traces: HashMap::new(),
        }
    }

    fn push_event(&mut self, at_s: u64, severe: bool, text: String) {
        if self.events.len() == EVENTS_LIMIT {
            self.events.pop_front();
        }
        self.events.push_back(Event { at_s, severe, text });
    }

    /// Takes a new poll result; logs node up/down, job transitions and slow requests.
    pub fn on_model(&mut self, model: ClusterModel) {
        let now = model.refreshed_at_s;
        for n in &model.nodes {
            let before = self.seen_up.insert(n.addr.clone(), n.up);
            match (before, n.up) {
                (Some(true), false) | (None, false) => {
                    let why = n.error.clone().unwrap_or_else(|| "no answer".into());
                    self.push_event(now, true, format!("node {} down: {why}", n.addr));
                }
                (Some(false), true) => self.push_event(now, false, format!("node {} up", n.addr)),
                _ => {}
            }
        }
        for j in &model.jobs {
            let key = (j.node.clone(), j.id);
            let before = self.seen_jobs.insert(key, j.state.clone());
            if before.as_deref() != Some(j.state.as_str()) {
                let severe = j.state == "failed";
                let extra = match (&j.last_error, j.state.as_str()) {
                    (Some(e), "failed") => format!(": {e}"),
                    _ => String::new(),
                };
                self.push_event(
                    now,
                    severe,
                    format!("job {} {} on {} {}{extra}", j.id, j.kind, j.node, j.state),
                );
            }
        }
        for t in &model.traces {
            if self.seen_traces.insert(t.id.clone(), ()).is_none()
                && t.duration_us >= SLOW_REQUEST_US
            {
                self.push_event(
                    now,
                    false,
                    format!(
                        "slow {} on {}: {} ms (trace {})",
                        t.command,
                        t.node,
                        t.duration_us / 1_000,
                        t.id
                    ),
                );
            }
        }
        // Forget traces no longer listed so the map stays bounded.
        let live: std::collections::HashSet<&str> =
            model.traces.iter().map(|t| t.id.as_str()).collect();
        self.seen_traces.retain(|id, ()| live.contains(id.as_str()));
        self.node_index = self.node_index.min(model.nodes.len().saturating_sub(1));
        self.model = model;
        self.check_pending_recovery();
    }

    /// Opens the confirmation of a real recovery once its dry run finished on every node,
    /// with what it would move; drops the real run if the dry run did not succeed.
    fn check_pending_recovery(&mut self) {
        let Some(p) = &self.pending_recovery else {
            return;
        };
        let Some(own_id) = p.job else {
            return;
        };
        if self.confirm.is_some() || self.form.is_some() {
            return;
        }
        let kind = match p.kind {
            RecoveryKind::Merge => "recovery_merge",
            RecoveryKind::Dc => "recovery_dc",
        };
        let runs: Vec<&JobRow> = self
            .model
            .jobs
            .iter()
            .filter(|j| {
                j.kind == kind && j.is_dry_run() && !p.before.contains(&(j.node.clone(), j.id))
            })
            .collect();
        let Some(own) = runs.iter().find(|j| j.node == p.node && j.id == own_id) else {
            return;
        };
        if runs.iter().any(|j| j.is_active()) {
            return;
        }
        let request = AdminRequest::RecoveryStart {
            node: p.node.clone(),
            kind: p.kind,
            dry_run: false,
        };
        if own.state != "done" {
            let why = own.last_error.clone().unwrap_or_else(|| own.state.clone());
            let text = format!(
                "dry run {} ({why}): not offering to {}",
                own.state,
                request.describe()
            );
            self.pending_recovery = None;
            self.status = Some(text.clone());
            let now = self.model.refreshed_at_s;
            self.push_event(now, true, text);
            return;
        }
        let mut total = crate::model::RecoveryCounts::default();
        let mut lines = Vec::new();
        for j in &runs {
            let c = j.recovery_counts().unwrap_or_default();
            total.copied += c.copied;
            total.bytes += c.bytes;
            total.skipped += c.skipped;
            total.failed += c.failed;
            total.removed += c.removed;
            if lines.len() < DRY_RUN_LINES {
                let mut line = format!(
                    "{}: {} keys, {}",
                    j.node,
                    c.copied,
                    crate::ui::bytes(c.bytes)
                );
                if c.removed > 0 {
                    line.push_str(&format!(", {} removed", c.removed));
                }
                if c.failed > 0 {
                    line.push_str(&format!(", {} failed", c.failed));
                }
                lines.push(line);
            }
        }
        if runs.len() > DRY_RUN_LINES {
            lines.push(format!("… {} more nodes", runs.len() - DRY_RUN_LINES));
        }
        let mut details = vec![format!(
            "dry run: would move {} keys ({}) from {} nodes; {} already in place, {} failed",
            total.copied,
            crate::ui::bytes(total.bytes),
            runs.len(),
            total.skipped,
            total.failed
        )];
        details.extend(lines);
        self.pending_recovery = None;
        self.status = None;
        self.confirm = Some(Confirm { request, details });
    }

    /// Rows in the current view's main table, after filtering (for selection bounds).
    pub fn row_count(&self) -> usize {
        match self.tab {
            Tab::Overview => self.visible_nodes().len(),
            Tab::Ring => self.visible_shares().len(),
            Tab::Node => self
                .model
                .nodes
                .get(self.node_index)
                .map_or(0, |n| n.backends.len()),
            Tab::DataSort => self.visible_backends().len(),
            Tab::Recovery => self.visible_jobs().len(),
            Tab::Traces => self.visible_traces().len(),
            Tab::Events => self.visible_events().len(),
        }
    }

    /// The order `tab`'s table is in now (one of [`Tab::sort_columns`]).
    pub fn sort_label(&self, tab: Tab) -> &'static str {
        let columns = tab.sort_columns();
        let i = self.sort.get(tab.index()).copied().unwrap_or(0);
        columns.get(i % columns.len()).copied().unwrap_or("")
    }

    fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// Node indices shown in the overview, filtered and sorted.
    pub fn visible_nodes(&self) -> Vec<usize> {
        let nodes = &self.model.nodes;
        let mut idx: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes.get(i).is_some_and(|n| self.matches(&n.addr)))
            .collect();
        let key = |i: &usize| nodes.get(*i);
        match self.sort_label(Tab::Overview) {
            "ops/s" => idx.sort_by(|a, b| {
                let (a, b) = (
                    key(a).map_or(0.0, |n| n.ops_per_s),
                    key(b).map_or(0.0, |n| n.ops_per_s),
                );
                b.total_cmp(&a)
            }),
            "p99" => idx.sort_by_key(|i| std::cmp::Reverse(key(i).map_or(0, |n| n.p99_us))),
            "errors" => {
                idx.sort_by_key(|i| std::cmp::Reverse(key(i).map_or(0, |n| n.errors_total)))
            }
            _ => {}
        }
        idx
    }

    /// Ring shares shown in the ring view, filtered by node and sorted.
    pub fn visible_shares(&self) -> Vec<ShareRow> {
        let mut rows: Vec<ShareRow> = self
            .model
            .shares()
            .into_iter()
            .filter(|r| self.matches(&format!("{} group {}", r.node, r.group)))
            .collect();
        match self.sort_label(Tab::Ring) {
            "share" => rows.sort_by(|a, b| b.share.total_cmp(&a.share)),
            "node" => rows.sort_by(|a, b| (&a.node, a.group).cmp(&(&b.node, b.group))),
            _ => {}
        }
        rows
    }

    /// The commands table of node `n`, in the node view's order.
    pub fn node_commands<'a>(&self, n: &'a NodeModel) -> Vec<&'a CommandRow> {
        let mut rows: Vec<&CommandRow> = n.commands.iter().collect();
        match self.sort_label(Tab::Node) {
            "rate" => rows.sort_by(|a, b| b.rate_per_s.total_cmp(&a.rate_per_s)),
            "p99" => rows.sort_by_key(|c| std::cmp::Reverse(c.p99_us)),
            "failures" => rows.sort_by_key(|c| std::cmp::Reverse(c.failures)),
            _ => {}
        }
        rows
    }

    /// The backends table of node `n`, in the node view's order.
    pub fn node_backends<'a>(&self, n: &'a NodeModel) -> Vec<&'a BackendRow> {
        let mut rows: Vec<&BackendRow> = n.backends.iter().collect();
        match self.sort_label(Tab::Node) {
            "backend used" => rows.sort_by_key(|b| std::cmp::Reverse(b.used_bytes)),
            "backend records" => rows.sort_by_key(|b| std::cmp::Reverse(b.records)),
            _ => {}
        }
        rows
    }

    /// Backends shown in the data-sort view, filtered and sorted.
    pub fn visible_backends(&self) -> Vec<&BackendRow> {
        let mut rows: Vec<&BackendRow> = self
            .model
            .backends()
            .filter(|b| {
                self.matches(&format!(
                    "{} {} group {} {}",
                    b.node, b.id, b.group, b.defrag.mode
                ))
            })
            .collect();
        match self.sort_label(Tab::DataSort) {
            // Soonest first; backends with no planned start last.
            "next start" => rows.sort_by_key(|b| b.defrag.next_start_s.unwrap_or(u64::MAX)),
            "want" => rows.sort_by_key(|b| std::cmp::Reverse(b.want_defrag_bases)),
            "frees" => rows.sort_by_key(|b| std::cmp::Reverse(b.reclaimable_bytes)),
            _ => {}
        }
        rows
    }

    /// Jobs shown in the recovery view, filtered and sorted.
    pub fn visible_jobs(&self) -> Vec<&JobRow> {
        let mut rows: Vec<&JobRow> = self
            .model
            .jobs
            .iter()
            .filter(|j| self.matches(&format!("{} {} {} {}", j.node, j.kind, j.state, j.target)))
            .collect();
        let state_rank = |j: &JobRow| match j.state.as_str() {
            "running" => 0,
            "paused" => 1,
            "queued" => 2,
            "failed" => 3,
            "done" => 4,
            _ => 5,
        };
        match self.sort_label(Tab::Recovery) {
            "state" => rows.sort_by_key(|j| state_rank(j)),
            "progress" => rows.sort_by(|a, b| {
                b.progress()
                    .unwrap_or(0.0)
                    .total_cmp(&a.progress().unwrap_or(0.0))
            }),
            // Longest first; finished or unknown last.
            "eta" => rows.sort_by_key(|j| {
                std::cmp::Reverse(j.eta_s().filter(|_| j.is_active()).map_or(0, |e| e + 1))
            }),
            "errors" => rows.sort_by_key(|j| std::cmp::Reverse(j.errors)),
            _ => {}
        }
        rows
    }

    /// Traces shown, filtered by command/node text and minimum duration, and sorted.
    pub fn visible_traces(&self) -> Vec<&TraceSummary> {
        let mut rows: Vec<&TraceSummary> = self
            .model
            .traces
            .iter()
            .filter(|t| {
                t.duration_us >= self.trace_min_us
                    && self.matches(&format!("{} {}", t.command, t.node))
            })
            .collect();
        match self.sort_label(Tab::Traces) {
            "duration" => rows.sort_by_key(|t| std::cmp::Reverse(t.duration_us)),
            "command" => rows.sort_by(|a, b| a.command.cmp(&b.command)),
            "node" => rows.sort_by(|a, b| a.node.cmp(&b.node)),
            _ => {}
        }
        rows
    }

    /// Events shown, filtered and in the events view's order (newest first by default).
    pub fn visible_events(&self) -> Vec<&Event> {
        let mut rows: Vec<&Event> = self
            .events
            .iter()
            .rev()
            .filter(|e| self.matches(&e.text))
            .collect();
        match self.sort_label(Tab::Events) {
            "oldest" => rows.reverse(),
            "severe first" => rows.sort_by_key(|e| !e.severe),
            _ => {}
        }
        rows
    }

    fn ask(&mut self, request: AdminRequest) -> Effect {
        if self.read_only {
            self.status = Some("read-only console: admin actions are disabled".into());
        } else {
            self.confirm = Some(Confirm {
                request,
                details: Vec::new(),
            });
        }
        Effect::None
    }

    /// Handles one key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        if let Some(confirm) = self.confirm.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Effect::Admin(confirm.request),
                _ => {
                    self.status = Some("cancelled".into());
                    Effect::None
                }
            };
        }
        if self.form.is_some() {
            return self.on_form_key(key);
        }
        match self.prompt.clone() {
            Prompt::Filter => {
                match key.code {
                    KeyCode::Enter => self.prompt = Prompt::None,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.prompt = Prompt::None;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) if self.filter.len() < 64 => self.filter.push(c),
                    _ => {}
                }
                self.selected = 0;
                return Effect::None;
            }
            Prompt::Command(mut text) => {
                match key.code {
                    KeyCode::Enter => {
                        self.prompt = Prompt::None;
                        return self.run_command(text.trim());
                    }
                    KeyCode::Esc => self.prompt = Prompt::None,
                    KeyCode::Backspace => {
                        text.pop();
                        self.prompt = Prompt::Command(text);
                    }
                    KeyCode::Char(c) if text.len() < 64 => {
                        text.push(c);
                        self.prompt = Prompt::Command(text);
                    }
                    _ => {}
                }
                return Effect::None;
            }
            Prompt::None => {}
        }
        if self.show_help {
            self.show_help = false;
            return Effect::None;
        }
        match key.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Char('/') => self.prompt = Prompt::Filter,
            KeyCode::Char(':') => self.prompt = Prompt::Command(String::new()),
            KeyCode::Esc => {
                self.filter.clear();
                self.status = None;
                if let Some(p) = self.pending_recovery.take() {
                    self.status = Some(format!(
                        "{} dropped: its dry run goes on alone",
                        AdminRequest::RecoveryStart {
                            node: p.node,
                            kind: p.kind,
                            dry_run: false,
                        }
                        .describe()
                    ));
                }
            }
            KeyCode::Tab | KeyCode::Right => {
                self.go(Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()])
            }
            KeyCode::BackTab | KeyCode::Left => {
                self.go(Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]);
            }
            KeyCode::Char(c @ '1'..='7') => {
                let i = c as usize - '1' as usize;
                if let Some(&t) = Tab::ALL.get(i) {
                    self.go(t);
                }
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.row_count().saturating_sub(1));
            }
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                self.status = Some(if self.paused {
                    "paused".into()
                } else {
                    "resumed".into()
                });
            }
            KeyCode::Char('+') => self.refresh_ms = (self.refresh_ms / 2).max(250),
            KeyCode::Char('-') => self.refresh_ms = (self.refresh_ms * 2).min(60_000),
            KeyCode::Char('r') => return Effect::Refresh,
            KeyCode::Char('s') => {
                if let Some(i) = self.sort.get_mut(self.tab.index()) {
                    *i = (*i + 1) % self.tab.sort_columns().len();
                }
                self.selected = 0;
            }
            KeyCode::Char('n') if self.tab == Tab::Node => {
                self.node_index = (self.node_index + 1) % self.model.nodes.len().max(1);
            }
            KeyCode::Enter if self.tab == Tab::Overview => {
                if let Some(&i) = self.visible_nodes().get(self.selected) {
                    self.node_index = i;
                    self.go(Tab::Node);
                }
            }
            KeyCode::Char('m') if self.tab == Tab::Traces => {
                // Cycle the minimum duration: 0, 1 ms, 10 ms, 100 ms.
                self.trace_min_us = match self.trace_min_us {
                    0 => 1_000,
                    1_000 => 10_000,
                    10_000 => 100_000,
                    _ => 0,
                };
                self.selected = 0;
            }
            _ => return self.on_action_key(key),
        }
        Effect::None
    }

    fn go(&mut self, tab: Tab) {
        self.tab = tab;
        self.selected = 0;
    }

    fn run_command(&mut self, text: &str) -> Effect {
        if text == "q" || text == "quit" {
            return Effect::Quit;
        }
        if let Some(t) = Tab::ALL.iter().find(|t| t.command() == text) {
            self.go(*t);
        } else if let Some(addr) = text.strip_prefix("node ") {
            match self.model.nodes.iter().position(|n| n.addr == addr.trim()) {
                Some(i) => {
                    self.node_index = i;
                    self.go(Tab::Node);
                }
                None => self.status = Some(format!("no node {addr}")),
            }
        } else {
            self.status = Some(format!("unknown command :{text} (try :help)"));
            if text == "help" {
                self.show_help = true;
                self.status = None;
            }
        }
        Effect::None
    }

    /// Admin keys of the data-sort and recovery views.
    fn on_action_key(&mut self, key: KeyEvent) -> Effect {
        match (self.tab, key.code) {
            (Tab::DataSort, KeyCode::Char(c @ ('S' | 'C' | 'X' | 'e'))) => {
                let Some(b) = self
                    .visible_backends()
                    .get(self.selected)
                    .map(|b| (*b).clone())
                else {
                    return Effect::None;
                };
                if self.read_only {
                    self.status = Some("read-only console: admin actions are disabled".into());
                    return Effect::None;
                }
                match c {
                    'S' | 'C' => self.ask(AdminRequest::DefragStart {
                        node: b.node,
                        backend: b.id,
                        compact: c == 'C',
                    }),
                    'X' => self.ask(AdminRequest::DefragStop {
                        node: b.node,
                        backend: b.id,
                    }),
                    _ => {
                        let (hour, splay) = b.defrag.window.unwrap_or((3, 1));
                        self.form = Some(ScheduleForm {
                            mode: SCHEDULE_MODES
                                .iter()
                                .position(|m| *m == b.defrag.mode)
                                .unwrap_or(0),
                            node: b.node,
                            backend: b.id,
                            time_hour: hour,
                            splay_hours: splay,
                            field: 0,
                        });
                        Effect::None
                    }
                }
            }
            (Tab::Recovery, KeyCode::Char(c @ ('m' | 'd' | 'M' | 'D'))) => {
                let Some(node) = self
                    .model
                    .nodes
                    .iter()
                    .find(|n| n.up)
                    .map(|n| n.addr.clone())
                else {
                    self.status = Some("no node is up to run recovery".into());
                    return Effect::None;
                };
                let kind = if c.eq_ignore_ascii_case(&'m') {
                    RecoveryKind::Merge
                } else {
                    RecoveryKind::Dc
                };
                if self.read_only {
                    self.status = Some("read-only console: admin actions are disabled".into());
                    return Effect::None;
                }
                let dry = AdminRequest::RecoveryStart {
                    node: node.clone(),
                    kind,
                    dry_run: true,
                };
                // Lower case: only the dry run (it changes nothing, so it is not confirmed).
                // Upper case: the dry run first; when it has finished on every node its
                // result (what would move) is shown in the confirmation of the real run.
                if c.is_ascii_uppercase() {
                    self.pending_recovery = Some(PendingRecovery {
                        node,
                        kind,
                        before: self
                            .model
                            .jobs
                            .iter()
                            .map(|j| (j.node.clone(), j.id))
                            .collect(),
                        job: None,
                    });
                    self.status = Some(format!(
                        "{} first; the real run is offered when it ends (Esc drops it)",
                        dry.describe()
                    ));
                }
                Effect::Admin(dry)
            }
            (Tab::Recovery, KeyCode::Char('c')) => {
                let Some(job) = self
                    .visible_jobs()
                    .get(self.selected)
                    .filter(|j| j.is_active())
                    .map(|j| (*j).clone())
                else {
                    self.status = Some("select a running job to cancel".into());
                    return Effect::None;
                };
                self.ask(AdminRequest::JobCancel {
                    node: job.node,
                    job: job.id,
                })
            }
            _ => Effect::None,
        }
    }

    fn on_form_key(&mut self, key: KeyEvent) -> Effect {
        let Some(form) = self.form.as_mut() else {
            return Effect::None;
        };
        match key.code {
            KeyCode::Esc => {
                self.form = None;
                self.status = Some("schedule unchanged".into());
            }
            KeyCode::Up => form.field = (form.field + 2) % 3,
            KeyCode::Down | KeyCode::Tab => form.field = (form.field + 1) % 3,
            KeyCode::Left | KeyCode::Right => {
                let up = key.code == KeyCode::Right;
                match form.field {
                    0 => form.mode = (form.mode + if up { 1 } else { 3 }) % 4,
                    1 => form.time_hour = (form.time_hour + if up { 1 } else { 23 }) % 24,
                    _ => {
                        form.splay_hours = if up {
                            (form.splay_hours + 1).min(12)
                        } else {
                            form.splay_hours.saturating_sub(1)
                        };
                    }
                }
            }
            KeyCode::Enter => {
                let form = self.form.take();
                if let Some(f) = form {
                    let request = AdminRequest::DefragSchedule {
                        node: f.node,
                        backend: f.backend,
                        mode: SCHEDULE_MODES
                            .get(f.mode)
                            .copied()
                            .unwrap_or("auto")
                            .to_owned(),
                        time_hour: f.time_hour,
                        splay_hours: f.splay_hours,
                    };
                    return self.ask(request);
                }
            }
            _ => {}
        }
        Effect::None
    }

    /// Records the outcome of an admin request in the status line and the events log; the
    /// dry run of a real recovery asked for goes on to wait for its result.
    pub fn on_admin_result(
        &mut self,
        request: &AdminRequest,
        result: Result<AdminReply, String>,
        now_s: u64,
    ) {
        let job = result.as_ref().ok().and_then(|r| r.job);
        let failed = result.is_err();
        let (severe, text) = match result {
            Ok(r) if r.text.is_empty() => (false, format!("done: {}", request.describe())),
            Ok(r) => (false, format!("done: {}: {}", request.describe(), r.text)),
            Err(e) => (true, format!("failed: {}: {e}", request.describe())),
        };
        self.status = Some(text.clone());
        self.push_event(now_s, severe, text);
        if let AdminRequest::RecoveryStart {
            node,
            kind,
            dry_run: true,
        } = request
        {
            let waiting = self
                .pending_recovery
                .as_ref()
                .is_some_and(|p| &p.node == node && p.kind == *kind && p.job.is_none());
            if waiting {
                if failed {
                    self.pending_recovery = None;
                } else if let Some(p) = self.pending_recovery.as_mut() {
                    p.job = job;
                    if job.is_none() {
                        self.pending_recovery = None;
                    }
                }
                self.check_pending_recovery();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DefragRow;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn code(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn model() -> ClusterModel {
        let backend = |node: &str, id| BackendRow {
            node: node.into(),
            id,
            group: id,
            state: "enabled".into(),
            defrag: DefragRow {
                mode: "auto".into(),
                ..DefragRow::default()
            },
            ..BackendRow::default()
        };
        ClusterModel {
            nodes: vec![
                NodeModel {
                    addr: "127.0.0.1:1025".into(),
                    up: true,
                    backends: vec![backend("127.0.0.1:1025", 1)],
                    ..NodeModel::default()
                },
                NodeModel {
                    addr: "127.0.0.1:1026".into(),
                    up: true,
                    backends: vec![backend("127.0.0.1:1026", 2)],
                    ..NodeModel::default()
                },
            ],
            refreshed_at_s: 100,
            ..ClusterModel::default()
        }
    }

    #[test]
    fn number_keys_tab_and_commands_switch_views() {
        let mut app = App::new(false, 1_000);
        app.on_key(key('4'));
        assert_eq!(app.tab, Tab::DataSort);
        app.on_key(code(KeyCode::Tab));
        assert_eq!(app.tab, Tab::Recovery);
        app.on_key(code(KeyCode::BackTab));
        app.on_key(code(KeyCode::BackTab));
        assert_eq!(app.tab, Tab::Node);
        for c in ":ring".chars() {
            app.on_key(key(c));
        }
        app.on_key(code(KeyCode::Enter));
        assert_eq!(app.tab, Tab::Ring);
        assert_eq!(app.on_key(key('q')), Effect::Quit);
    }

    #[test]
    fn data_sort_start_needs_confirmation() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('4'));
        app.on_key(code(KeyCode::Down));
        assert_eq!(app.on_key(key('S')), Effect::None);
        let expected = AdminRequest::DefragStart {
            node: "127.0.0.1:1026".into(),
            backend: 2,
            compact: false,
        };
        assert_eq!(
            app.confirm.as_ref().map(|c| c.request.clone()),
            Some(expected.clone())
        );
        assert_eq!(app.on_key(key('y')), Effect::Admin(expected));
        // Anything but y cancels.
        app.on_key(key('X'));
        assert_eq!(app.on_key(key('n')), Effect::None);
        assert_eq!(app.status.as_deref(), Some("cancelled"));
    }

    #[test]
    fn schedule_editor_builds_a_confirmed_request() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('4'));
        app.on_key(key('e'));
        app.on_key(code(KeyCode::Right)); // auto -> timed
        app.on_key(code(KeyCode::Right)); // -> scheduled
        app.on_key(code(KeyCode::Down));
        for _ in 0..2 {
            app.on_key(code(KeyCode::Right)); // 03 -> 05
        }
        app.on_key(code(KeyCode::Down));
        app.on_key(code(KeyCode::Right)); // splay 1 -> 2
        app.on_key(code(KeyCode::Enter));
        let confirm = app.confirm.clone().expect("confirmation asked");
        assert_eq!(
            confirm.request,
            AdminRequest::DefragSchedule {
                node: "127.0.0.1:1025".into(),
                backend: 1,
                mode: "scheduled".into(),
                time_hour: 5,
                splay_hours: 2
            }
        );
        assert!(matches!(
            app.on_key(key('y')),
            Effect::Admin(AdminRequest::DefragSchedule { .. })
        ));
    }

    #[test]
    fn read_only_console_offers_no_admin_actions() {
        let mut app = App::new(true, 1_000);
        app.on_model(model());
        app.on_key(key('4'));
        assert_eq!(app.on_key(key('S')), Effect::None);
        assert!(app.confirm.is_none());
        app.on_key(key('5'));
        assert_eq!(app.on_key(key('D')), Effect::None);
        assert_eq!(app.on_key(key('d')), Effect::None, "not even dry runs");
        assert!(app.confirm.is_none());
    }

    fn dry_job(node: &str, id: u64, state: &str, copied: u64) -> JobRow {
        JobRow {
            node: node.into(),
            id,
            kind: "recovery_dc".into(),
            target: "groups 1,2 (dry run)".into(),
            state: state.into(),
            result: (state == "done").then(|| {
                format!(
                    r#"{{"iterated":50,"copied":{copied},"skipped":3,"failed":0,"removed":0,"bytes":{}}}"#,
                    copied * 1_024
                )
            }),
            ..JobRow::default()
        }
    }

    #[test]
    fn lower_case_recovery_key_runs_only_the_dry_run() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('5'));
        assert!(matches!(
            app.on_key(key('m')),
            Effect::Admin(AdminRequest::RecoveryStart {
                dry_run: true,
                kind: RecoveryKind::Merge,
                ..
            })
        ));
        assert!(app.pending_recovery.is_none() && app.confirm.is_none());
    }

    #[test]
    fn real_recovery_runs_a_dry_run_first_and_confirms_with_what_would_move() {
        let mut app = App::new(false, 1_000);
        let mut m = model();
        // An older dry run already listed is not this one's.
        m.jobs.push(dry_job("127.0.0.1:1025", 1, "done", 999));
        app.on_model(m.clone());
        app.on_key(key('5'));
        let dry = AdminRequest::RecoveryStart {
            node: "127.0.0.1:1025".into(),
            kind: RecoveryKind::Dc,
            dry_run: true,
        };
        assert_eq!(app.on_key(key('D')), Effect::Admin(dry.clone()));
        assert!(
            app.confirm.is_none(),
            "nothing to confirm before the dry run ends"
        );
        app.on_admin_result(
            &dry,
            Ok(AdminReply {
                text: "job 2 queued".into(),
                job: Some(2),
            }),
            100,
        );
        // Running on both nodes (the node fans it out): still no confirmation.
        m.jobs.push(dry_job("127.0.0.1:1025", 2, "running", 0));
        m.jobs.push(dry_job("127.0.0.1:1026", 1, "running", 0));
        app.on_model(m.clone());
        assert!(app.confirm.is_none());
        // Done on one node only: still waiting for the other.
        m.jobs[1] = dry_job("127.0.0.1:1025", 2, "done", 40);
        app.on_model(m.clone());
        assert!(app.confirm.is_none());
        m.jobs[2] = dry_job("127.0.0.1:1026", 1, "done", 2);
        app.on_model(m.clone());
        let confirm = app.confirm.clone().expect("the real run is offered");
        let real = AdminRequest::RecoveryStart {
            node: "127.0.0.1:1025".into(),
            kind: RecoveryKind::Dc,
            dry_run: false,
        };
        assert_eq!(confirm.request, real);
        assert_eq!(
            confirm.details,
            vec![
                "dry run: would move 42 keys (42K) from 2 nodes; 6 already in place, 0 failed",
                "127.0.0.1:1025: 40 keys, 40K",
                "127.0.0.1:1026: 2 keys, 2.0K",
            ]
        );
        assert!(app.pending_recovery.is_none());
        assert_eq!(app.on_key(key('y')), Effect::Admin(real));
    }

    #[test]
    fn a_failed_dry_run_offers_no_real_run() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('5'));
        let Effect::Admin(dry) = app.on_key(key('D')) else {
            panic!("the dry run is asked");
        };
        app.on_admin_result(&dry, Err("HTTP 503: no route".into()), 100);
        assert!(app.pending_recovery.is_none() && app.confirm.is_none());
        // A dry-run job that fails drops the real run too.
        app.on_key(key('D'));
        app.on_admin_result(
            &dry,
            Ok(AdminReply {
                text: String::new(),
                job: Some(5),
            }),
            100,
        );
        let mut m = model();
        let mut failed = dry_job("127.0.0.1:1025", 5, "failed", 0);
        failed.last_error = Some("group 2 unreachable".into());
        m.jobs.push(failed);
        app.on_model(m);
        assert!(app.confirm.is_none());
        assert!(app
            .status
            .as_deref()
            .is_some_and(|s| s.contains("group 2 unreachable") && s.contains("not offering")));
        // Esc drops a real run still waiting for its dry run.
        app.on_key(key('M'));
        assert!(app.pending_recovery.is_some());
        app.on_key(code(KeyCode::Esc));
        assert!(app.pending_recovery.is_none());
    }

    #[test]
    fn cancel_asks_for_the_selected_running_job_only() {
        let mut app = App::new(false, 1_000);
        let mut m = model();
        m.jobs.push(dry_job("127.0.0.1:1025", 1, "done", 1));
        m.jobs.push(JobRow {
            state: "running".into(),
            ..dry_job("127.0.0.1:1026", 4, "running", 0)
        });
        app.on_model(m);
        app.on_key(key('5'));
        assert_eq!(app.on_key(key('c')), Effect::None);
        assert!(app.confirm.is_none(), "a finished job is not cancelled");
        app.on_key(code(KeyCode::Down));
        app.on_key(key('c'));
        let request = AdminRequest::JobCancel {
            node: "127.0.0.1:1026".into(),
            job: 4,
        };
        assert_eq!(app.confirm.as_ref().map(|c| &c.request), Some(&request));
        assert_eq!(app.on_key(key('y')), Effect::Admin(request));
        // Sorted by state, the running job comes first: `c` on row 0 now picks it.
        app.on_key(key('s'));
        assert_eq!(app.sort_label(Tab::Recovery), "state");
        assert_eq!(app.selected, 0);
        app.on_key(key('c'));
        assert!(matches!(
            app.confirm.as_ref().map(|c| &c.request),
            Some(AdminRequest::JobCancel { job: 4, .. })
        ));
    }

    #[test]
    fn data_sort_stop_and_start_go_to_the_selected_backend() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('4'));
        app.on_key(key('X'));
        assert_eq!(
            app.on_key(key('y')),
            Effect::Admin(AdminRequest::DefragStop {
                node: "127.0.0.1:1025".into(),
                backend: 1
            })
        );
        app.on_key(key('j'));
        app.on_key(key('S'));
        assert_eq!(
            app.on_key(key('Y')),
            Effect::Admin(AdminRequest::DefragStart {
                node: "127.0.0.1:1026".into(),
                backend: 2,
                compact: false
            })
        );
    }

    #[test]
    fn pause_and_interval_keys_change_polling() {
        let mut app = App::new(false, 1_000);
        app.on_key(key('p'));
        assert!(app.paused);
        assert_eq!(app.status.as_deref(), Some("paused"));
        app.on_key(key('p'));
        assert!(!app.paused);
        app.on_key(key('+'));
        assert_eq!(app.refresh_ms, 500);
        for _ in 0..5 {
            app.on_key(key('+'));
        }
        assert_eq!(app.refresh_ms, 250, "never faster than 250 ms");
        app.on_key(key('-'));
        assert_eq!(app.refresh_ms, 500);
        for _ in 0..10 {
            app.on_key(key('-'));
        }
        assert_eq!(app.refresh_ms, 60_000, "never slower than a minute");
        assert_eq!(app.on_key(key('r')), Effect::Refresh);
    }

    #[test]
    fn next_node_and_node_command_pick_the_node_view() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('3'));
        assert_eq!(app.node_index, 0);
        app.on_key(key('n'));
        assert_eq!(app.node_index, 1);
        app.on_key(key('n'));
        assert_eq!(app.node_index, 0, "wraps around");
        app.on_key(key('1'));
        for c in ":node 127.0.0.1:1026".chars() {
            app.on_key(key(c));
        }
        app.on_key(code(KeyCode::Enter));
        assert_eq!((app.tab, app.node_index), (Tab::Node, 1));
        for c in ":node 10.0.0.1:1".chars() {
            app.on_key(key(c));
        }
        app.on_key(code(KeyCode::Enter));
        assert_eq!(app.status.as_deref(), Some("no node 10.0.0.1:1"));
        assert_eq!(app.node_index, 1);
    }

    #[test]
    fn minimum_duration_and_filter_narrow_the_traces() {
        let mut app = App::new(false, 1_000);
        let mut m = model();
        for (id, command, us) in [
            ("a", "READ", 500),
            ("b", "WRITE", 5_000),
            ("c", "READ", 50_000),
        ] {
            m.traces.push(TraceSummary {
                id: id.into(),
                command: command.into(),
                node: "127.0.0.1:1025".into(),
                duration_us: us,
                ..TraceSummary::default()
            });
        }
        app.on_model(m);
        app.on_key(key('6'));
        let ids = |app: &App| -> Vec<String> {
            app.visible_traces().iter().map(|t| t.id.clone()).collect()
        };
        assert_eq!(ids(&app), ["a", "b", "c"]);
        app.on_key(key('m'));
        assert_eq!(
            (app.trace_min_us, ids(&app)),
            (1_000, vec!["b".into(), "c".into()])
        );
        app.on_key(key('m'));
        assert_eq!(ids(&app), ["c"]);
        app.on_key(key('m'));
        assert!(ids(&app).is_empty(), "nothing takes 100 ms");
        app.on_key(key('m'));
        assert_eq!(app.trace_min_us, 0);
        for c in "/read".chars() {
            app.on_key(key(c));
        }
        app.on_key(code(KeyCode::Enter));
        assert_eq!(ids(&app), ["a", "c"]);
        app.on_key(key('s'));
        assert_eq!(app.sort_label(Tab::Traces), "duration");
        assert_eq!(ids(&app), ["c", "a"]);
    }

    #[test]
    fn every_table_view_sorts_and_s_cycles_its_columns() {
        let mut app = App::new(false, 1_000);
        let mut m = model();
        m.nodes[0].ops_per_s = 5.0;
        m.nodes[1].ops_per_s = 50.0;
        m.nodes[0].backends[0].used_bytes = 10;
        m.nodes[1].backends[0].used_bytes = 99;
        m.nodes[1].backends[0].want_defrag_bases = 3;
        m.nodes[0].commands = vec![
            CommandRow {
                name: "READ".into(),
                rate_per_s: 1.0,
                p99_us: 900,
                ..CommandRow::default()
            },
            CommandRow {
                name: "WRITE".into(),
                rate_per_s: 9.0,
                p99_us: 100,
                failures: 4,
                ..CommandRow::default()
            },
        ];
        m.rings = vec![crate::model::GroupRing {
            group: 1,
            ranges: vec![
                crate::model::RingRange {
                    start: 0,
                    share: 0.2,
                    node: "127.0.0.1:1025".into(),
                    backend: 1,
                    up: true,
                },
                crate::model::RingRange {
                    start: 1 << 62,
                    share: 0.8,
                    node: "127.0.0.1:1026".into(),
                    backend: 2,
                    up: true,
                },
            ],
        }];
        app.on_model(m);
        // Overview.
        app.on_key(key('s'));
        assert_eq!(app.sort_label(Tab::Overview), "ops/s");
        assert_eq!(app.visible_nodes(), vec![1, 0]);
        // Ring: by share, biggest first.
        app.on_key(key('2'));
        assert_eq!(app.sort_label(Tab::Ring), "group");
        app.on_key(key('s'));
        let nodes: Vec<String> = app.visible_shares().into_iter().map(|r| r.node).collect();
        assert_eq!(nodes, ["127.0.0.1:1026", "127.0.0.1:1025"]);
        // Node: commands by rate, then p99, then failures; then backends.
        app.on_key(key('3'));
        let n = app.model.nodes[0].clone();
        let names = |app: &App| -> Vec<String> {
            app.node_commands(&n)
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(&app), ["READ", "WRITE"]);
        app.on_key(key('s'));
        assert_eq!(names(&app), ["WRITE", "READ"]);
        app.on_key(key('s'));
        assert_eq!(names(&app), ["READ", "WRITE"]);
        app.on_key(key('s'));
        assert_eq!(
            (app.sort_label(Tab::Node), names(&app)[0].as_str()),
            ("failures", "WRITE")
        );
        // Data-sort: by want.
        app.on_key(key('4'));
        app.on_key(key('s'));
        app.on_key(key('s'));
        assert_eq!(app.sort_label(Tab::DataSort), "want");
        assert_eq!(app.visible_backends()[0].node, "127.0.0.1:1026");
        // Events: oldest first, and each view kept its own order.
        app.push_event(1, false, "first".into());
        app.push_event(2, true, "second".into());
        app.on_key(key('7'));
        assert_eq!(app.visible_events()[0].text, "second");
        app.on_key(key('s'));
        assert_eq!(app.visible_events()[0].text, "first");
        app.on_key(key('s'));
        assert_eq!(app.sort_label(Tab::Events), "severe first");
        assert_eq!(app.visible_events()[0].text, "second");
        app.on_key(key('s'));
        assert_eq!(app.sort_label(Tab::Events), "newest", "wraps around");
        assert_eq!(app.sort_label(Tab::Overview), "ops/s");
    }

    #[test]
    fn events_record_node_transitions_jobs_and_slow_requests() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        let mut m = model();
        m.nodes[1].up = false;
        m.nodes[1].error = Some("connection refused".into());
        m.jobs.push(JobRow {
            node: "127.0.0.1:1025".into(),
            id: 7,
            kind: "recovery_dc".into(),
            state: "running".into(),
            ..JobRow::default()
        });
        m.traces.push(TraceSummary {
            id: "t1".into(),
            command: "READ".into(),
            node: "127.0.0.1:1025".into(),
            duration_us: 250_000,
            ..TraceSummary::default()
        });
        app.on_model(m.clone());
        m.jobs[0].state = "failed".into();
        m.jobs[0].last_error = Some("group 2 unreachable".into());
        app.on_model(m);
        let texts: Vec<&str> = app.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "node 127.0.0.1:1026 down: connection refused",
                "job 7 recovery_dc on 127.0.0.1:1025 running",
                "slow READ on 127.0.0.1:1025: 250 ms (trace t1)",
                "job 7 recovery_dc on 127.0.0.1:1025 failed: group 2 unreachable",
            ]
        );
        assert!(app.events[0].severe && app.events[3].severe);
    }

    #[test]
    fn filter_narrows_tables_and_escape_clears_it() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        for c in "/1026".chars() {
            app.on_key(key(c));
        }
        app.on_key(code(KeyCode::Enter));
        assert_eq!(app.visible_nodes(), vec![1]);
        app.on_key(code(KeyCode::Esc));
        assert_eq!(app.visible_nodes(), vec![0, 1]);
    }

    #[test]
    fn events_log_is_bounded() {
        let mut app = App::new(false, 1_000);
        for i in 0..(EVENTS_LIMIT + 10) {
            app.push_event(i as u64, false, format!("e{i}"));
        }
        assert_eq!(app.events.len(), EVENTS_LIMIT);
        assert_eq!(app.events.front().map(|e| e.text.as_str()), Some("e10"));
    }
}
