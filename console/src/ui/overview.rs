//! View 1: cluster health at a glance: summary, sparklines, alerts, nodes.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::format::{bytes, duration_us, rate};
use super::selected_style;
use crate::app::{App, Tab};

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let m = &app.model;
    let alerts = m.alerts();
    let alert_height = (alerts.len().clamp(1, 6) + 2) as u16;

    let (used, free) = m.capacity();
    let running_jobs = m.jobs.iter().filter(|j| j.is_active()).count();
    let errors: u64 = m.nodes.iter().map(|n| n.errors_total).sum();
    let parts = [
        format!("nodes {}/{} up", m.nodes_up(), m.nodes.len()),
        format!("groups {}", m.groups().len()),
        format!("used {}", bytes(used)),
        format!("free {}", bytes(free)),
        format!("{} ops/s", rate(m.ops_per_s())),
        format!("p99 {}", duration_us(m.p99_us())),
        format!("jobs {running_jobs}"),
        format!("errors {errors}"),
    ];
    // One line when it fits, else two (capacity first, then load, jobs and errors), so
    // nothing is cut off on an 80-column terminal.
    let one = parts.join(" · ");
    let text = if one.chars().count() + 2 <= usize::from(area.width) {
        one
    } else {
        let (a, b) = parts.split_at(4);
        format!("{}\n{}", a.join(" · "), b.join(" · "))
    };
    let summary_height = text.lines().count() as u16 + 2;
    let [summary, sparks, alerts_area, nodes_area] = Layout::vertical([
        Constraint::Length(summary_height),
        Constraint::Length(4),
        Constraint::Length(alert_height),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" Cluster ")),
        summary,
    );

    let [ops_area, p99_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(sparks);
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" ops/s {} ", rate(m.ops_per_s()))))
            .data(tail(&m.ops_history, ops_area.width))
            .style(Style::default().fg(Color::Cyan)),
        ops_area,
    );
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" p99 {} ", duration_us(m.p99_us()))))
            .data(tail(&m.p99_history_us, p99_area.width))
            .style(Style::default().fg(Color::Magenta)),
        p99_area,
    );

    let alert_lines: Vec<Line> = if alerts.is_empty() {
        vec![Line::from("all clear").style(Style::default().fg(Color::Green))]
    } else {
        alerts
            .iter()
            .map(|a| {
                Line::from(a.text.clone()).style(Style::default().fg(if a.severe {
                    Color::Red
                } else {
                    Color::Yellow
                }))
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(alert_lines).block(Block::bordered().title(" Alerts ")),
        alerts_area,
    );

    let header = Row::new([
        "node", "state", "groups", "ops/s", "p99", "errors", "queue", "rss", "cpu",
    ])
    .style(Style::default().fg(Color::Yellow));
    let rows = app
        .visible_nodes()
        .into_iter()
        .filter_map(|i| m.nodes.get(i))
        .enumerate()
        .map(|(row, n)| {
            let state = if n.up {
                Cell::from("up").style(Style::default().fg(Color::Green))
            } else {
                Cell::from("DOWN").style(Style::default().fg(Color::Red))
            };
            let groups = n
                .groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let r = Row::new(vec![
                Cell::from(n.addr.clone()),
                state,
                Cell::from(groups),
                Cell::from(rate(n.ops_per_s)),
                Cell::from(duration_us(n.p99_us)),
                Cell::from(n.errors_total.to_string()),
                Cell::from(format!(
                    "{}/{}",
                    n.queue.engine_waiting, n.queue.engine_waiting_limit
                )),
                Cell::from(n.rss_bytes.map_or("-".into(), bytes)),
                Cell::from(n.cpu_percent.map_or("-".into(), |c| format!("{c:.0}%"))),
            ]);
            if row == app.selected {
                r.style(selected_style())
            } else {
                r
            }
        });
    let sort = app.sort_label(Tab::Overview);
    let widths = [
        Constraint::Min(16),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(5),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" Nodes (sort: {sort}, Enter: details) "))),
        nodes_area,
    );
}

/// The last `width - 2` points (inside the border) of a history.
fn tail(history: &[u64], width: u16) -> &[u64] {
    let keep = usize::from(width.saturating_sub(2));
    history
        .get(history.len().saturating_sub(keep)..)
        .unwrap_or(&[])
}
