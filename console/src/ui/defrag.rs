//! View 4: the data-sort planner: per-backend schedule and state, a 24-hour plan, and warnings
//! for hours in which every replica of some keys would be sorting.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::format::{bytes, relative};
use super::selected_style;
use crate::app::{App, Tab};
use crate::plan::{backend_hours, conflicts};

/// Below this width the table shows only its essential columns.
const WIDE: u16 = 110;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let backends = app.visible_backends();
    let plan_height = (backends.len() as u16 + 4).min(area.height / 2).max(5);
    let [table_area, plan_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(plan_height)]).areas(area);
    let now = app.model.refreshed_at_s;

    // Narrow terminals drop the group, the window (the plan below draws it) and the bytes a
    // sort frees, so the state and the last result stay readable.
    let wide = area.width >= WIDE;
    let mut header = vec!["node", "be"];
    if wide {
        header.push("grp");
    }
    header.push("mode");
    if wide {
        header.push("window");
    }
    header.extend(["next start", "state", "want"]);
    if wide {
        header.push("frees");
    }
    header.push("last result");
    let header = Row::new(header).style(Style::default().fg(Color::Yellow));
    let rows = backends.iter().enumerate().map(|(i, b)| {
        let window = match (b.defrag.mode.as_str(), b.defrag.window) {
            ("scheduled", Some((h, s))) => format!("{h:02}:00±{s}h"),
            _ => "-".to_owned(),
        };
        let state = match b.defrag.progress {
            Some(p) => format!("{} {:.0}%", b.defrag.state, p * 100.0),
            None => b.defrag.state.clone(),
        };
        let mut cells = vec![b.node.clone(), b.id.to_string()];
        if wide {
            cells.push(b.group.to_string());
        }
        cells.push(b.defrag.mode.clone());
        if wide {
            cells.push(window);
        }
        cells.extend([
            b.defrag
                .next_start_s
                .map_or("-".into(), |t| relative(t, now)),
            state,
            b.want_defrag_bases.to_string(),
        ]);
        if wide {
            cells.push(bytes(b.reclaimable_bytes));
        }
        cells.push(b.defrag.last_result.clone().unwrap_or_else(|| "-".into()));
        let row = Row::new(cells);
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let mut widths = vec![Constraint::Min(15), Constraint::Length(3)];
    if wide {
        widths.push(Constraint::Length(3));
    }
    widths.push(Constraint::Length(9));
    if wide {
        widths.push(Constraint::Length(9));
    }
    widths.extend([
        Constraint::Length(10),
        Constraint::Length(11),
        Constraint::Length(4),
    ]);
    if wide {
        widths.push(Constraint::Length(6));
    }
    widths.push(Constraint::Fill(1));
    let keys = if app.read_only {
        ""
    } else {
        " S start · C compact · X stop · e edit "
    };
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(
                " Data-sort (sort: {}){keys}",
                app.sort_label(Tab::DataSort)
            ))),
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
