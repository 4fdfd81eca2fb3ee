//! View 3: one node: queues, per-command timings, cache, eblob backends.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::format::{bytes, duration_s, duration_us, rate};
use super::selected_style;
use crate::app::App;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let Some(n) = app.model.nodes.get(app.node_index) else {
        frame.render_widget(
            Paragraph::new("no nodes known yet").block(Block::bordered().title(" Node ")),
            area,
        );
        return;
    };
    let [head, middle, backends_area] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(area);
    let state = if n.up {
        "up".to_owned()
    } else {
        format!("DOWN: {}", n.error.as_deref().unwrap_or("no answer"))
    };
    let head_text = if !n.up {
        // A node that did not answer has no figures: say so rather than show zeros.
        [
            state,
            format!(
                "groups {:?} · no stats from it (last poll failed); the tables below stay empty until it answers",
                n.groups
            ),
        ]
    } else {
        [
            format!(
                "{state} · version {} · uptime {} · cpu {} · rss {} · load {}",
                if n.version.is_empty() {
                    "-"
                } else {
                    &n.version
                },
                duration_s(n.uptime_s),
                n.cpu_percent.map_or("-".into(), |c| format!("{c:.0}%")),
                n.rss_bytes.map_or("-".into(), bytes),
                n.load1.map_or("-".into(), |l| format!("{l:.2}")),
            ),
            format!(
            "engine queue: {} running / {} threads, {} waiting / {} limit, {} refused · peers: {}",
            n.queue.active,
            n.queue.threads,
            n.queue.queued,
            n.queue.limit,
            n.queue.refused,
            if n.peers.is_empty() {
                "none".to_owned()
            } else {
                n.peers
                    .iter()
                    .map(|p| format!("{} {} q{}", p.addr, p.state, p.send_queue))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        ]
    };
    let title = format!(
        " Node {} ({}/{}, n: next) ",
        n.addr,
        app.node_index + 1,
        app.model.nodes.len()
    );
    let style = if n.up {
        Style::default()
    } else {
        Style::default().fg(Color::Red)
    };
    frame.render_widget(
        Paragraph::new(head_text.join("\n"))
            .style(style)
            .block(Block::bordered().title(title)),
        head,
    );

    let [commands_area, cache_area] =
        Layout::horizontal([Constraint::Fill(3), Constraint::Fill(1)]).areas(middle);
    let header = Row::new([
        "command", "ok", "fail", "rate", "p50", "p99", "cache", "disk", "fwd",
    ])
    .style(Style::default().fg(Color::Yellow));
    let rows = n.commands.iter().map(|c| {
        let fail_style = if c.failures > 0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        };
        Row::new(vec![
            c.name.clone(),
            c.successes.to_string(),
            c.failures.to_string(),
            rate(c.rate_per_s),
            duration_us(c.p50_us),
            duration_us(c.p99_us),
            c.cache_hits.to_string(),
            c.disk.to_string(),
            c.forwarded.to_string(),
        ])
        .style(fail_style)
    });
    let widths = [
        Constraint::Min(10),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" Commands ")),
        commands_area,
    );

    let cache_text = match &n.cache {
        None => "no cache".to_owned(),
        Some(c) => {
            let lookups = c.hits + c.misses;
            let hit_rate = if lookups == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", c.hits as f64 * 100.0 / lookups as f64)
            };
            let segments = c
                .segment_bytes
                .iter()
                .map(|s| bytes(*s))
                .collect::<Vec<_>>()
                .join(" / ");
            format!(
                "size {} / {}\nobjects {}\nsegments {}\nhits {} misses {}\nhit rate {}",
                bytes(c.size_bytes),
                bytes(c.max_bytes),
                c.objects,
                segments,
                c.hits,
                c.misses,
                hit_rate
            )
        }
    };
    frame.render_widget(
        Paragraph::new(cache_text).block(Block::bordered().title(" Cache ")),
        cache_area,
    );

    let header = Row::new([
        "id",
        "group",
        "state",
        "bases",
        "records",
        "removed",
        "used",
        "ram/key",
        "defrag",
        "data-sort",
    ])
    .style(Style::default().fg(Color::Yellow));
    let rows = n.backends.iter().enumerate().map(|(i, b)| {
        let removed_pct = if b.records == 0 {
            0.0
        } else {
            b.removed_records as f64 * 100.0 / b.records as f64
        };
        let live = b.records.saturating_sub(b.removed_records);
        let ram_per_key = if live == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}B", b.ram_bytes as f64 / live as f64)
        };
        let state = match &b.read_only {
            Some(_) => "read-only".to_owned(),
            None => b.state.clone(),
        };
        let color = if b.read_only.is_some() || b.corrupted > 0 {
            Color::Red
        } else if b.want_defrag_bases > 0 {
            Color::Yellow
        } else {
            Color::Reset
        };
        let defrag_state = match b.defrag.progress {
            Some(p) => format!("{} {:.0}%", b.defrag.state, p * 100.0),
            None => b.defrag.state.clone(),
        };
        let row = Row::new(vec![
            b.id.to_string(),
            b.group.to_string(),
            state,
            format!("{} ({} sorted)", b.bases, b.sorted_bases),
            b.records.to_string(),
            format!("{removed_pct:.1}%"),
            bytes(b.used_bytes),
            ram_per_key,
            format!("{} want", b.want_defrag_bases),
            defrag_state,
        ])
        .style(Style::default().fg(color));
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let widths = [
        Constraint::Length(3),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(14),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" Eblob backends ")),
        backends_area,
    );
}
