//! Snapshot tests: every view rendered from a fixed state at 80×24 and 160×48, for a cluster
//! with one node down and for an empty cluster, plus the states a view has beyond its default
//! (the node view of a down node, the data-sort planner's overlap warning, a recovery dry-run
//! result next to a job in progress, the read-only console) and every overlay (help,
//! confirmation, schedule editor). A rendering change shows up as a reviewed snapshot diff
//! (`INSTA_UPDATE=always cargo test -p ellipsis-console` to accept, then review the diff).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ellipsis_console::app::{App, Tab};
use ellipsis_console::fixture;
use ellipsis_console::model::ClusterModel;
use ellipsis_console::ui::render_to_text;

/// 2026-11-25 12:00:00 UTC: a fixed "now" so relative times are stable.
const NOW_S: u64 = 1_795_608_000;
const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn app_with(model: ClusterModel, tab: Tab) -> App {
    let mut app = App::new(false, 1_000);
    app.on_model(model);
    app.tab = tab;
    app
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

/// Snapshots `app` at both sizes as `{name}_{w}x{h}` and returns the large frame.
fn snapshot_both(name: &str, app: &App) -> String {
    let mut large = String::new();
    for (w, h) in SIZES {
        let text = render_to_text(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), text);
        large = text;
    }
    large
}

#[test]
fn every_view_with_a_down_node() {
    for tab in Tab::ALL {
        let app = app_with(fixture::cluster(4, 2, NOW_S), tab);
        snapshot_both(tab.command(), &app);
    }
}

#[test]
fn every_view_of_an_empty_cluster() {
    for tab in Tab::ALL {
        let app = app_with(fixture::cluster(0, 0, NOW_S), tab);
        let text = snapshot_both(&format!("empty_{}", tab.command()), &app);
        assert!(text.contains("0/0 up"), "{text}");
    }
}

#[test]
fn node_view_of_a_down_node_shows_why() {
    let mut app = app_with(fixture::cluster(4, 2, NOW_S), Tab::Node);
    app.node_index = 2;
    let text = snapshot_both("node_down", &app);
    assert!(text.contains("127.0.0.1:1027"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

#[test]
fn planner_warns_when_every_replica_sorts_in_the_same_hour() {
    let mut model = fixture::cluster(4, 2, NOW_S);
    // Node 1 is group 2; give it the same window as group 1's node 0.
    let d = &mut model.nodes[1].backends[0].defrag;
    d.mode = "scheduled".into();
    d.window = Some((3, 1));
    d.next_start_s = Some(NOW_S + 7_200);
    let app = app_with(model, Tab::DataSort);
    let text = snapshot_both("defrag_warning", &app);
    assert!(
        text.contains("WARNING: every replica sorting at 02:00"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1:1026 b1 g2"), "{text}");
}

#[test]
fn recovery_shows_a_dry_run_result_and_a_job_in_progress() {
    let mut app = app_with(fixture::cluster(4, 2, NOW_S), Tab::Recovery);
    let running = snapshot_both("recovery_running_selected", &app);
    assert!(running.contains("40%"), "{running}");
    app.on_key(key(KeyCode::Down));
    let text = snapshot_both("recovery_dry_run_selected", &app);
    assert!(
        text.contains("result: dry run: would copy 120 records (120M) · 880 already in place"),
        "{text}"
    );
    assert!(text.contains("recovery_dc dry"), "{text}");
}

#[test]
fn overlays_help_confirm_and_schedule_editor() {
    let mut app = app_with(fixture::cluster(4, 2, NOW_S), Tab::DataSort);
    app.on_key(key(KeyCode::Char('e')));
    let text = snapshot_both("overlay_schedule_editor", &app);
    assert!(text.contains("Data-sort schedule"), "{text}");
    app.on_key(key(KeyCode::Enter));
    let text = snapshot_both("overlay_confirm", &app);
    assert!(text.contains("y confirm"), "{text}");
    app.on_key(key(KeyCode::Char('n')));
    app.on_key(key(KeyCode::Char('?')));
    let text = snapshot_both("overlay_help", &app);
    assert!(text.contains("S start  C compact"), "{text}");
}

#[test]
fn read_only_console_hides_admin_keys() {
    let mut app = App::new(true, 1_000);
    app.on_model(fixture::cluster(4, 2, NOW_S));
    app.tab = Tab::DataSort;
    let defrag = snapshot_both("read_only_defrag", &app);
    assert!(!defrag.contains("S start"), "{defrag}");
    app.tab = Tab::Recovery;
    let recovery = snapshot_both("read_only_recovery", &app);
    assert!(recovery.contains("read-only console"), "{recovery}");
    app.show_help = true;
    let help = snapshot_both("read_only_help", &app);
    assert!(help.contains("admin actions are hidden"), "{help}");
    assert!(!help.contains("D/M start"), "{help}");
}

#[test]
fn down_node_is_visible_in_overview_and_ring() {
    let app = app_with(fixture::cluster(4, 2, NOW_S), Tab::Overview);
    let text = render_to_text(&app, 160, 48);
    assert!(text.contains("DOWN"), "{text}");
    assert!(
        text.contains("node 127.0.0.1:1027 is down: connection refused"),
        "{text}"
    );
    let ring = render_to_text(&app_with(fixture::cluster(4, 2, NOW_S), Tab::Ring), 160, 48);
    assert!(ring.contains("owner down: range unserved"), "{ring}");
}

#[test]
fn an_80_column_terminal_keeps_what_each_view_is_for() {
    let at_80 = |tab| render_to_text(&app_with(fixture::cluster(4, 2, NOW_S), tab), 80, 24);
    let overview = at_80(Tab::Overview);
    assert!(
        overview.contains("jobs 1") && overview.contains("errors 4"),
        "{overview}"
    );
    assert!(overview.contains("free 150G"), "{overview}");
    let node = at_80(Tab::Node);
    // The node's own figures: the blocking pool, the network side, each peer's send queue.
    assert!(
        node.contains("engine 1/16 running, 2/1024 waiting, 0 refused"),
        "{node}"
    );
    assert!(node.contains("network 3/4096, 0 refused"), "{node}");
    assert!(node.contains("127.0.0.1:1026 connected 1/1024"), "{node}");
    assert!(
        node.contains("data-sort") && node.contains("idle"),
        "{node}"
    );
    let recovery = at_80(Tab::Recovery);
    // 600 MiB left at 50 MiB/s.
    assert!(
        recovery.contains("eta") && recovery.contains("12s"),
        "{recovery}"
    );
    let defrag = at_80(Tab::DataSort);
    assert!(
        defrag.contains("last result") && defrag.contains("ok: 3 bases"),
        "{defrag}"
    );
}

#[test]
fn an_empty_cluster_is_really_empty() {
    let app = app_with(fixture::cluster(0, 0, NOW_S), Tab::Overview);
    let text = render_to_text(&app, 160, 48);
    assert!(!text.contains("-0"), "{text}");
    assert!(
        text.contains("0 ops/s") && text.contains("all clear"),
        "{text}"
    );
    let ring = render_to_text(&app_with(fixture::cluster(0, 0, NOW_S), Tab::Ring), 80, 24);
    assert!(
        ring.contains("no route table yet: no node has answered"),
        "{ring}"
    );
}

#[test]
fn real_recovery_is_confirmed_with_its_dry_run_result() {
    use ellipsis_console::app::{AdminReply, AdminRequest, Effect};
    let mut model = fixture::cluster(4, 2, NOW_S);
    let mut app = app_with(model.clone(), Tab::Recovery);
    let Effect::Admin(dry) = app.on_key(key(KeyCode::Char('D'))) else {
        panic!("D starts with a dry run");
    };
    assert!(matches!(
        dry,
        AdminRequest::RecoveryStart { dry_run: true, .. }
    ));
    let waiting = render_to_text(&app, 160, 48);
    assert!(
        waiting.contains("the real run is offered when it ends"),
        "{waiting}"
    );
    app.on_admin_result(
        &dry,
        Ok(AdminReply {
            text: "job 3 queued".into(),
            job: Some(3),
        }),
        NOW_S,
    );
    // The node fans the dry run out: one finished job per node that answered.
    for (node, id, copied) in [("127.0.0.1:1025", 3, 120), ("127.0.0.1:1026", 7, 0)] {
        let mut j = model.jobs[1].clone();
        j.node = node.into();
        j.id = id;
        j.result = Some(format!(
            r#"{{"iterated":1000,"copied":{copied},"skipped":880,"failed":0,"removed":0,"bytes":{}}}"#,
            copied << 20
        ));
        model.jobs.push(j);
    }
    app.on_model(model);
    let text = snapshot_both("overlay_confirm_recovery_after_dry_run", &app);
    assert!(
        text.contains("start dc recovery from 127.0.0.1:1025"),
        "{text}"
    );
    assert!(
        text.contains("dry run: would move 120 keys (120M) from 2 nodes"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1:1026: 0 keys, 0B"), "{text}");
    assert!(text.contains("y confirm"), "{text}");
}

#[test]
fn sorted_tables_name_their_sort_column() {
    let mut app = app_with(fixture::cluster(4, 2, NOW_S), Tab::Recovery);
    app.on_key(key(KeyCode::Char('s')));
    let text = snapshot_both("recovery_sorted_by_state", &app);
    assert!(text.contains("Jobs (2, sort: state)"), "{text}");
    app.tab = Tab::Node;
    app.on_key(key(KeyCode::Char('s')));
    let node = render_to_text(&app, 160, 48);
    assert!(node.contains("Commands (sort: rate)"), "{node}");
    app.tab = Tab::Overview;
    app.on_key(key(KeyCode::Char('s')));
    app.on_key(key(KeyCode::Char('s')));
    let overview = render_to_text(&app, 160, 48);
    assert!(overview.contains("Nodes (sort: p99"), "{overview}");
    // p99 descending: 1028 (2.3 ms) first.
    let first = overview
        .lines()
        .find(|l| l.starts_with("│127.0.0.1:"))
        .unwrap_or("");
    assert!(first.contains("127.0.0.1:1028"), "{overview}");
}

#[test]
fn ring_highlights_overloaded_and_underused_backends() {
    let mut model = fixture::cluster(4, 2, NOW_S);
    // Group 2 is nodes 1 and 3: give node 1 four fifths of the ring.
    let ranges = &mut model.rings[1].ranges;
    ranges[0].share = 0.8;
    ranges[1].start = (u64::MAX / 5) * 4;
    ranges[1].share = 0.2;
    let app = app_with(model, Tab::Ring);
    let text = snapshot_both("ring_imbalance", &app);
    let line = |node: &str| {
        text.lines()
            .find(|l| l.contains(node) && l.contains('%'))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line("127.0.0.1:1026").contains("overloaded"), "{text}");
    assert!(line("127.0.0.1:1028").contains("underused"), "{text}");
}
