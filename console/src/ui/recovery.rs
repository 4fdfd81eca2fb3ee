//! View 5: recovery and other background jobs: progress bars, rate, ETA, errors, and the
//! selected job's detail with its result (what a dry run would copy); start and cancel.
//!
//! Narrow terminals (< 110 columns) drop the rate, moved and last-error columns and draw a
//! shorter progress bar rather than squeezing every column unreadable; the ETA stays, and
//! the detail panel shows everything.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::format::{bytes, duration_s};
use super::selected_style;
use crate::app::{App, Tab};
use crate::model::JobRow;

/// Below this width the jobs table shows only its essential columns.
const WIDE: u16 = 110;

/// `[#####.....]` of `width` cells.
fn bar(progress: Option<f64>, width: usize) -> String {
    match progress {
        None => format!("[{}]", "?".repeat(width)),
        Some(p) => {
            let filled = ((p.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
            format!(
                "[{}{}] {:>3.0}%",
                "#".repeat(filled),
                ".".repeat(width - filled),
                p * 100.0
            )
        }
    }
}

/// A recovery report (`{"iterated","copied","skipped","failed","removed","bytes",...}`) in
/// words; any other result text as it is.
pub fn result_text(job: &JobRow) -> Option<String> {
    let raw = job.result.as_deref()?;
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(raw) else {
        return Some(raw.to_owned());
    };
    let n = |k: &str| map.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    if !map.contains_key("copied") {
        return Some(raw.to_owned());
    }
    let (verb, skipped) = if job.is_dry_run() {
        ("dry run: would copy", "already in place")
    } else {
        ("copied", "already in place")
    };
    let mut text = format!(
        "{verb} {} records ({}) · {} {skipped} · {} looked at · {} failed",
        n("copied"),
        bytes(n("bytes")),
        n("skipped"),
        n("iterated"),
        n("failed")
    );
    if n("removed") > 0 {
        text.push_str(&format!(" · {} removed", n("removed")));
    }
    Some(text)
}

/// Time left for a running job at its current rate; `-` when finished or unknown.
fn eta(j: &JobRow) -> String {
    j.eta_s()
        .filter(|_| j.is_active())
        .map_or("-".into(), duration_s)
}

fn kind_label(j: &JobRow) -> String {
    if j.is_dry_run() {
        format!("{} dry", j.kind)
    } else {
        j.kind.clone()
    }
}

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [help_area, jobs_area, detail_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Fill(1),
        Constraint::Length(6),
    ])
    .areas(area);
    let help = if app.read_only {
        "read-only console: recovery cannot be started here"
    } else {
        "d/m dry run dc/merge · D/M dry run, then real run (confirmed) · c cancel job"
    };
    frame.render_widget(
        Paragraph::new(help).block(Block::bordered().title(" Recovery ")),
        help_area,
    );

    let wide = area.width >= WIDE;
    let mut header = vec!["node", "job", "kind", "state", "progress"];
    if wide {
        header.push("rate");
    }
    header.push("eta");
    if wide {
        header.push("moved");
    }
    header.push("errors");
    if wide {
        header.push("last error");
    }
    let header = Row::new(header).style(Style::default().fg(Color::Yellow));
    let jobs = app.visible_jobs();
    let rows = jobs.iter().enumerate().map(|(i, j)| {
        let color = match j.state.as_str() {
            "failed" => Color::Red,
            "done" => Color::Green,
            "cancelled" => Color::DarkGray,
            _ => Color::Reset,
        };
        let mut cells = vec![
            j.node.clone(),
            j.id.to_string(),
            kind_label(j),
            j.state.clone(),
            bar(j.progress(), if wide { 10 } else { 6 }),
        ];
        if wide {
            cells.push(format!("{}/s", bytes(j.rate_bytes_per_s as u64)));
        }
        cells.push(eta(j));
        if wide {
            cells.push(bytes(j.done_bytes));
        }
        cells.push(j.errors.to_string());
        if wide {
            cells.push(j.last_error.clone().unwrap_or_default());
        }
        let row = Row::new(cells).style(Style::default().fg(color));
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let mut widths = vec![
        Constraint::Min(15),
        Constraint::Length(4),
        Constraint::Length(18),
        Constraint::Length(9),
        Constraint::Length(if wide { 17 } else { 13 }),
    ];
    if wide {
        widths.push(Constraint::Length(8));
    }
    widths.push(Constraint::Length(6));
    if wide {
        widths.push(Constraint::Length(6));
    }
    widths.push(Constraint::Length(6));
    if wide {
        widths.push(Constraint::Fill(1));
    }
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(
                " Jobs ({}, sort: {}) ",
                jobs.len(),
                app.sort_label(Tab::Recovery)
            ))),
        jobs_area,
    );

    let detail: Vec<Line> = match jobs.get(app.selected) {
        None => vec![Line::from("no job selected")],
        Some(j) => {
            let progress = match (j.total_keys, j.total_bytes) {
                (Some(t), _) => format!("{} of {t} keys", j.done_keys),
                (None, Some(t)) => format!("{} of {}", bytes(j.done_bytes), bytes(t)),
                (None, None) => format!("{} keys", j.done_keys),
            };
            let mut lines = vec![Line::from(format!(
                "job {} {} on {} · {} · {} · {progress} · {}/s · eta {}",
                j.id,
                kind_label(j),
                j.node,
                j.target,
                j.state,
                bytes(j.rate_bytes_per_s as u64),
                eta(j)
            ))];
            match result_text(j) {
                Some(r) => lines.push(
                    Line::from(format!("result: {r}")).style(Style::default().fg(Color::Green)),
                ),
                None if j.is_active() => lines.push(Line::from("result: when it finishes")),
                None => {}
            }
            if let Some(e) = &j.last_error {
                lines.push(
                    Line::from(format!("{} errors, last: {e}", j.errors))
                        .style(Style::default().fg(Color::Red)),
                );
            }
            lines
        }
    };
    frame.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Selected job ")),
        detail_area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_fills_proportionally() {
        assert_eq!(bar(Some(0.5), 10), "[#####.....]  50%");
        assert_eq!(bar(Some(1.5), 4), "[####] 150%");
        assert_eq!(bar(None, 3), "[???]");
    }

    #[test]
    fn dry_run_report_reads_as_would_copy() {
        let mut job = JobRow {
            target: "groups 1,2 (dry run)".into(),
            result: Some(
                r#"{"iterated":10,"filtered":0,"copied":4,"skipped":6,"failed":0,"removed":0,"bytes":4096}"#
                    .into(),
            ),
            ..JobRow::default()
        };
        assert_eq!(
            result_text(&job).as_deref(),
            Some("dry run: would copy 4 records (4.0K) · 6 already in place · 10 looked at · 0 failed")
        );
        job.target = "groups 1,2".into();
        assert!(result_text(&job).is_some_and(|t| t.starts_with("copied 4 records")));
        job.result = Some("merged 3 bases".into());
        assert_eq!(result_text(&job).as_deref(), Some("merged 3 bases"));
        job.result = None;
        assert_eq!(result_text(&job), None);
    }
}
