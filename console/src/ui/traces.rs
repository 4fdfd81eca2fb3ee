//! View 6: recent call trees: a filtered list, the selected tree with timing bars, and
//! per-action statistics over the listed trees.

use std::collections::BTreeMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::format::duration_us;
use super::selected_style;
use crate::app::{App, Tab};
use crate::model::ActionNode;

/// Deepest nesting drawn; deeper actions are summarised.
const MAX_DEPTH: usize = 12;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let traces = app.visible_traces();
    let [top, stats_area] =
        Layout::vertical([Constraint::Fill(2), Constraint::Fill(1)]).areas(area);
    let [list_area, tree_area] =
        Layout::horizontal([Constraint::Length(42), Constraint::Fill(1)]).areas(top);

    let rows = traces.iter().enumerate().map(|(i, t)| {
        let row = Row::new(vec![
            t.command.clone(),
            duration_us(t.duration_us),
            t.node.clone(),
        ]);
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let title = format!(
        " Traces ≥{} (m) sort: {} ",
        duration_us(app.trace_min_us),
        app.sort_label(Tab::Traces)
    );
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(Row::new(["command", "time", "node"]).style(Style::default().fg(Color::Yellow)))
        .block(Block::bordered().title(title)),
        list_area,
    );

    let mut lines = Vec::new();
    if let Some(t) = traces.get(app.selected) {
        let total = t.root.stop_us.saturating_sub(t.root.start_us).max(1);
        let bar_width = tree_area.width.saturating_sub(36).max(10) as u64;
        tree_lines(&t.root, 0, total, bar_width, &mut lines);
    } else {
        lines.push(Line::from("no trace selected"));
    }
    let tree_title = traces
        .get(app.selected)
        .map_or(" Tree ".to_owned(), |t| format!(" Tree {} ", t.id));
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(tree_title)),
        tree_area,
    );

    // Per-action statistics over the listed trees.
    let mut stats: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for t in &traces {
        collect(&t.root, &mut stats);
    }
    let mut rows: Vec<(String, (u64, u64, u64))> = stats.into_iter().collect();
    rows.sort_by_key(|(_, (_, total, _))| std::cmp::Reverse(*total));
    let rows = rows.into_iter().map(|(name, (count, total, max))| {
        Row::new(vec![
            name,
            count.to_string(),
            duration_us(total),
            duration_us(total / count.max(1)),
            duration_us(max),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(["action", "count", "total", "avg", "max"])
                .style(Style::default().fg(Color::Yellow)),
        )
        .block(Block::bordered().title(" Actions ")),
        stats_area,
    );
}

fn tree_lines(
    node: &ActionNode,
    depth: usize,
    total_us: u64,
    width: u64,
    out: &mut Vec<Line<'static>>,
) {
    let took = node.stop_us.saturating_sub(node.start_us);
    let from = node.start_us * width / total_us;
    let len = (took * width / total_us)
        .max(1)
        .min(width.saturating_sub(from));
    let bar: String = format!(
        "{}{}{}",
        " ".repeat(from as usize),
        "█".repeat(len as usize),
        " ".repeat(width.saturating_sub(from + len) as usize)
    );
    let name = format!("{}{}", "  ".repeat(depth), node.name);
    let name: String = name.chars().take(24).collect();
    out.push(Line::from(vec![
        Span::raw(format!("{name:<24} ")),
        Span::styled(bar, Style::default().fg(Color::Cyan)),
        Span::raw(format!(" {}", duration_us(took))),
    ]));
    if depth + 1 >= MAX_DEPTH {
        if !node.children.is_empty() {
            out.push(Line::from(format!(
                "{}… {} deeper actions",
                "  ".repeat(depth + 1),
                node.children.len()
            )));
        }
        return;
    }
    for child in &node.children {
        tree_lines(child, depth + 1, total_us, width, out);
    }
}

fn collect(node: &ActionNode, stats: &mut BTreeMap<String, (u64, u64, u64)>) {
    let took = node.stop_us.saturating_sub(node.start_us);
    let e = stats.entry(node.name.clone()).or_insert((0, 0, 0));
    e.0 += 1;
    e.1 += took;
    e.2 = e.2.max(took);
    for c in &node.children {
        collect(c, stats);
    }
}
