//! Snapshot tests: every view rendered from a fixed state at 80×24 and 160×48, for a healthy
//! cluster with one node down, and for an empty cluster. A rendering change shows up as a
//! reviewed snapshot diff (`INSTA_UPDATE=always cargo test -p ellipsis-console` to accept).

use ellipsis_console::app::{App, Tab};
use ellipsis_console::fixture;
use ellipsis_console::ui::render_to_text;

/// 2026-11-25 12:00:00 UTC: a fixed "now" so relative times are stable.
const NOW_S: u64 = 1_795_608_000;

fn app_with(model: ellipsis_console::model::ClusterModel, tab: Tab) -> App {
    let mut app = App::new(false, 1_000);
    app.on_model(model);
    app.tab = tab;
    app
}

fn name(tab: Tab) -> &'static str {
    tab.command()
}

#[test]
fn every_view_with_a_down_node() {
    for tab in Tab::ALL {
        let app = app_with(fixture::cluster(4, 2, NOW_S), tab);
        for (w, h) in [(80, 24), (160, 48)] {
            let text = render_to_text(&app, w, h);
            insta::assert_snapshot!(format!("{}_{w}x{h}", name(tab)), text);
        }
    }
}

#[test]
fn every_view_of_an_empty_cluster() {
    for tab in Tab::ALL {
        let app = app_with(fixture::cluster(0, 0, NOW_S), tab);
        for (w, h) in [(80, 24), (160, 48)] {
            let text = render_to_text(&app, w, h);
            insta::assert_snapshot!(format!("empty_{}_{w}x{h}", name(tab)), text);
        }
    }
}

#[test]
fn overlays_help_confirm_and_schedule_editor() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let key = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
    let mut app = app_with(fixture::cluster(4, 2, NOW_S), Tab::DataSort);
    app.on_key(key(KeyCode::Char('e')));
    insta::assert_snapshot!("overlay_schedule_editor", render_to_text(&app, 80, 24));
    app.on_key(key(KeyCode::Enter));
    insta::assert_snapshot!("overlay_confirm", render_to_text(&app, 80, 24));
    app.on_key(key(KeyCode::Char('n')));
    app.on_key(key(KeyCode::Char('?')));
    insta::assert_snapshot!("overlay_help", render_to_text(&app, 80, 24));
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
