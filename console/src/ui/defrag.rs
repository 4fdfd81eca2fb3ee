//! View 4: the data-sort planner: per-backend schedule and state, a 24-hour plan, and warnings
//! for hours in which every replica of some keys would be sorting.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::format::{bytes, relative};
use super::selected_style;
use crate::app::App;
use crate::plan::{backend_hours, conflicts};

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let backends = app.visible_backends();
    let plan_height = (backends.len() as u16 + 4).min(area.height / 2).max(5);
    let [table_area, plan_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(plan_height)]).areas(area);
    let now = app.model.refreshed_at_s;

    let header = Row::new([
        "node",
        "be",
        "grp",
        "mode",
        "window",
        "next start",
        "state",
        "want",
        "frees",
        "last result",
    ])
    .style(Style::default().fg(Color::Yellow));
    let rows = backends.iter().enumerate().map(|(i, b)| {
        let window = match (b.defrag.mode.as_str(), b.defrag.window) {
            ("scheduled", Some((h, s))) => format!("{h:02}:00±{s}h"),
            _ => "-".to_owned(),
        };
        let state = match b.defrag.progress {
            Some(p) => format!("{} {:.0}%", b.defrag.state, p * 100.0),
            None => b.defrag.state.clone(),
        };
        let row = Row::new(vec![
            b.node.clone(),
            b.id.to_string(),
            b.group.to_string(),
            b.defrag.mode.clone(),
            window,
            b.defrag
                .next_start_s
                .map_or("-".into(), |t| relative(t, now)),
            state,
            b.want_defrag_bases.to_string(),
            bytes(b.removed_bytes),
            b.defrag.last_result.clone().unwrap_or_else(|| "-".into()),
        ]);
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let widths = [
        Constraint::Min(15),
        Constraint::Length(3),
        Constraint::Length(3),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(11),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let keys = if app.read_only {
        ""
    } else {
        " S start · C compact · X stop · e edit "
    };
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" Data-sort{keys}"))),
        table_area,
    );

    // The plan: one row per scheduled backend, one column per hour; labels such as
    // `127.0.0.1:1025 b1 g1` fit whole.
    const LABEL: usize = 24;
    let conflicts = conflicts(&app.model);
    let mut lines = vec![Line::from(format!(
        "{:<LABEL$}{}",
        "hour (UTC)",
        (0..24).map(|h| format!("{}", h % 10)).collect::<String>()
    ))
    .style(Style::default().fg(Color::DarkGray))];
    for b in &backends {
        let Some(hours) = backend_hours(b) else {
            continue;
        };
        let label = format!("{} b{} g{}", b.node, b.id, b.group);
        let label: String = label.chars().take(LABEL - 1).collect();
        let mut spans = vec![Span::raw(format!("{label:<LABEL$}"))];
        for (h, on) in hours.iter().enumerate() {
            let conflict = conflicts.iter().any(|c| usize::from(c.hour) == h);
            let (sym, color) = match (on, conflict) {
                (true, true) => ("█", Color::Red),
                (true, false) => ("█", Color::Cyan),
                (false, _) => ("·", Color::DarkGray),
            };
            spans.push(Span::styled(sym, Style::default().fg(color)));
        }
        lines.push(Line::from(spans));
    }
    if conflicts.is_empty() {
        lines.push(
            Line::from("no hour has every replica of any key sorting")
                .style(Style::default().fg(Color::Green)),
        );
    } else {
        let text = conflicts
            .iter()
            .map(|c| format!("{:02}:00 ({:.0}% of keys)", c.hour, c.share * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(
            Line::from(format!("WARNING: every replica sorting at {text}"))
                .style(Style::default().fg(Color::Red)),
        );
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Plan ")),
        plan_area,
    );
}
