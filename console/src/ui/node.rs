//! View 3: one node: queues, per-command timings, cache, eblob backends.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::format::{bytes, duration_s, duration_us, rate};
use super::selected_style;
use crate::app::{App, Tab};

/// Below this width the backends table shows only its essential columns.
const WIDE: u16 = 110;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let Some(n) = app.model.nodes.get(app.node_index) else {
        frame.render_widget(
            Paragraph::new("no nodes known yet").block(Block::bordered().title(" Node ")),
            area,
        );
        return;
    };
    let state = if n.up {
        "up".to_owned()
    } else {
        format!("DOWN: {}", n.error.as_deref().unwrap_or("no answer"))
    };
    let head_text: Vec<String> = if !n.up {
        // A node that did not answer has no figures: say so rather than show zeros.
        vec![
            state,
            format!(
                "groups {:?} · no stats from it (last poll failed); the tables below stay empty until it answers",
                n.groups
            ),
        ]
    } else {
        let q = &n.queue;
        vec![
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
            // What `/stats/io` reports: the blocking pool engine calls run on, the backends'
            // write queues (summed) and the network side (requests being handled), each with
            // what it refused.
            format!(
                "engine {}/{} running, {}/{} waiting, {} refused · writes {}/{} queued, {} refused · network {}/{}, {} refused · {} clients",
                q.engine_running,
                q.engine_threads,
                q.engine_waiting,
                q.engine_waiting_limit,
                q.engine_refused,
                q.writes_queued,
                q.writes_limit,
                q.writes_refused,
                q.network,
                q.network_limit,
                q.network_refused,
                q.client_connections,
            ),
            format!(
                "peers (send queue): {}",
                if n.peers.is_empty() {
                    "none".to_owned()
                } else {
                    n.peers
                        .iter()
                        .map(|p| {
                            format!("{} {} {}/{}", p.addr, p.state, p.send_queue, p.send_queue_limit)
                        })
                        .collect::<Vec<_>>()
                        .join(" · ")
                }
            ),
        ]
    };
    // Wrapped rather than cut: the head grows (up to a third of the view) so the peers'
    // send queues stay visible on a narrow terminal.
    let inner = usize::from(area.width.saturating_sub(2).max(1));
    let wrapped: usize = head_text
        .iter()
        .map(|l| l.chars().count().div_ceil(inner).max(1))
        .sum();
    let head_height = (wrapped as u16 + 2).min((area.height / 3).max(4));
    let [head, middle, backends_area] = Layout::vertical([
        Constraint::Length(head_height),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(area);
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
            .wrap(Wrap { trim: true })
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
    let sort = app.sort_label(Tab::Node);
    let rows = app.node_commands(n).into_iter().map(|c| {
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
            .block(Block::bordered().title(if sort.starts_with("backend") {
                " Commands ".to_owned()
            } else {
                format!(" Commands (sort: {sort}) ")
            })),
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

    // Narrow terminals keep what an operator acts on (state, size, free space, data-sort
    // state) and drop the removed share, RAM per key and the defrag-want count first.
    let wide = area.width >= WIDE;
    let mut header = vec!["id", "grp", "state", "bases", "records"];
    if wide {
        header.push("removed");
    }
    header.extend(["used", "free"]);
    if wide {
        header.extend(["ram/key", "defrag"]);
    }
    header.push("data-sort");
    let header = Row::new(header).style(Style::default().fg(Color::Yellow));
    let rows = app.node_backends(n).into_iter().enumerate().map(|(i, b)| {
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
        let mut cells = vec![
            b.id.to_string(),
            b.group.to_string(),
            state,
            format!("{}/{}s", b.bases, b.sorted_bases),
            b.records.to_string(),
        ];
        if wide {
            cells.push(format!("{removed_pct:.1}%"));
        }
        cells.extend([bytes(b.used_bytes), b.free_bytes.map_or("-".into(), bytes)]);
        if wide {
            cells.extend([ram_per_key, format!("{} want", b.want_defrag_bases)]);
        }
        cells.push(defrag_state);
        let row = Row::new(cells).style(Style::default().fg(color));
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let mut widths = vec![
        Constraint::Length(3),
        Constraint::Length(3),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    if wide {
        widths.push(Constraint::Length(8));
    }
    widths.extend([Constraint::Length(6), Constraint::Length(6)]);
    if wide {
        widths.extend([Constraint::Length(8), Constraint::Length(7)]);
    }
    widths.push(Constraint::Fill(1));
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(
                Block::bordered().title(match sort.strip_prefix("backend ") {
                    Some(by) => format!(" Eblob backends (sort: {by}) "),
                    None => " Eblob backends ".to_owned(),
                }),
            ),
        backends_area,
    );
}
