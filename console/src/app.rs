//! Console state and its pure update function.
//!
//! `App::on_key` turns a key into state changes and, for admin actions, into [`AdminRequest`]s
//! that the runtime executes over HTTP; `App::on_model` takes a new poll result and derives the
//! events log from what changed. Neither does I/O, so both are tested directly.
//!
//! Invariants: dangerous actions (start/stop data-sort, change a schedule, start or cancel
//! recovery) always pass through a confirmation; in read-only mode they are not offered at all.
//! The events log is bounded.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Serialize;

use crate::model::ClusterModel;

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
}

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
    /// Sort column of the main table (view-specific meaning).
    pub sort_column: usize,
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
            sort_column: 0,
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
    }

    /// Rows in the current view's main table, after filtering (for selection bounds).
    pub fn row_count(&self) -> usize {
        match self.tab {
            Tab::Overview => self.visible_nodes().len(),
            Tab::Ring => self.model.rings.len(),
            Tab::Node => self
                .model
                .nodes
                .get(self.node_index)
                .map_or(0, |n| n.backends.len()),
            Tab::DataSort => self.visible_backends().len(),
            Tab::Recovery => self.model.jobs.len(),
            Tab::Traces => self.visible_traces().len(),
            Tab::Events => self.events.len(),
        }
    }

    fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// Node indices shown in the overview, filtered and sorted.
    pub fn visible_nodes(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.model.nodes.len())
            .filter(|&i| {
                self.model
                    .nodes
                    .get(i)
                    .is_some_and(|n| self.matches(&n.addr))
            })
            .collect();
        let nodes = &self.model.nodes;
        let key = |i: &usize| nodes.get(*i);
        match self.sort_column % 3 {
            1 => idx.sort_by(|a, b| {
                let (a, b) = (
                    key(a).map_or(0.0, |n| n.ops_per_s),
                    key(b).map_or(0.0, |n| n.ops_per_s),
                );
                b.total_cmp(&a)
            }),
            2 => idx.sort_by_key(|i| std::cmp::Reverse(key(i).map_or(0, |n| n.p99_us))),
            _ => {}
        }
        idx
    }

    /// Backends shown in the data-sort view, filtered.
    pub fn visible_backends(&self) -> Vec<&crate::model::BackendRow> {
        self.model
            .backends()
            .filter(|b| {
                self.matches(&format!(
                    "{} {} group {} {}",
                    b.node, b.id, b.group, b.defrag.mode
                ))
            })
            .collect()
    }

    /// Traces shown, filtered by command/node text and minimum duration.
    pub fn visible_traces(&self) -> Vec<&crate::model::TraceSummary> {
        self.model
            .traces
            .iter()
            .filter(|t| {
                t.duration_us >= self.trace_min_us
                    && self.matches(&format!("{} {}", t.command, t.node))
            })
            .collect()
    }

    fn ask(&mut self, request: AdminRequest) -> Effect {
        if self.read_only {
            self.status = Some("read-only console: admin actions are disabled".into());
        } else {
            self.confirm = Some(Confirm { request });
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
            KeyCode::Char('s') => self.sort_column += 1,
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
                // Lower case: dry run first (safe, no confirmation needed beyond read-only);
                // upper case: the real run, always confirmed.
                let dry_run = c.is_ascii_lowercase();
                let request = AdminRequest::RecoveryStart {
                    node,
                    kind,
                    dry_run,
                };
                if dry_run && !self.read_only {
                    return Effect::Admin(request);
                }
                self.ask(request)
            }
            (Tab::Recovery, KeyCode::Char('c')) => {
                let Some(job) = self
                    .model
                    .jobs
                    .get(self.selected)
                    .filter(|j| j.is_active())
                    .cloned()
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

    /// Records the outcome of an admin request in the status line and the events log.
    pub fn on_admin_result(
        &mut self,
        request: &AdminRequest,
        result: Result<String, String>,
        now_s: u64,
    ) {
        let (severe, text) = match result {
            Ok(msg) if msg.is_empty() => (false, format!("done: {}", request.describe())),
            Ok(msg) => (false, format!("done: {}: {msg}", request.describe())),
            Err(e) => (true, format!("failed: {}: {e}", request.describe())),
        };
        self.status = Some(text.clone());
        self.push_event(now_s, severe, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendRow, DefragRow, JobRow, NodeModel, TraceSummary};

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

    #[test]
    fn recovery_dry_run_runs_at_once_and_real_run_is_confirmed() {
        let mut app = App::new(false, 1_000);
        app.on_model(model());
        app.on_key(key('5'));
        assert!(matches!(
            app.on_key(key('d')),
            Effect::Admin(AdminRequest::RecoveryStart {
                dry_run: true,
                kind: RecoveryKind::Dc,
                ..
            })
        ));
        assert_eq!(app.on_key(key('D')), Effect::None);
        assert!(matches!(
            app.on_key(key('y')),
            Effect::Admin(AdminRequest::RecoveryStart { dry_run: false, .. })
        ));
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
