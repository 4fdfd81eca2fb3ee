//! View 5: recovery and other background jobs: progress bars, rate, ETA, errors; start and cancel.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::format::{bytes, duration_s};
use super::selected_style;
use crate::app::App;

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

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [help_area, jobs_area] =
        Layout::vertical([Constraint::Length(3), Constraint::Fill(1)]).areas(area);
    let help = if app.read_only {
        "read-only console: recovery cannot be started here".to_owned()
    } else {
        "d dry-run dc · D start dc · m dry-run merge · M start merge · c cancel selected job"
            .to_owned()
    };
    frame.render_widget(
        Paragraph::new(help).block(Block::bordered().title(" Recovery ")),
        help_area,
    );

    let header = Row::new([
        "node",
        "job",
        "kind",
        "state",
        "progress",
        "rate",
        "eta",
        "moved",
        "errors",
        "last error",
    ])
    .style(Style::default().fg(Color::Yellow));
    let rows = app.model.jobs.iter().enumerate().map(|(i, j)| {
        let color = match j.state.as_str() {
            "failed" => Color::Red,
            "done" => Color::Green,
            "cancelled" => Color::DarkGray,
            _ => Color::Reset,
        };
        let row = Row::new(vec![
            j.node.clone(),
            j.id.to_string(),
            j.kind.clone(),
            j.state.clone(),
            bar(j.progress(), 10),
            format!("{}/s", bytes(j.rate_bytes_per_s as u64)),
            j.eta_s()
                .filter(|_| j.is_active())
                .map_or("-".into(), duration_s),
            bytes(j.done_bytes),
            j.errors.to_string(),
            j.last_error.clone().unwrap_or_default(),
        ])
        .style(Style::default().fg(color));
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let widths = [
        Constraint::Min(15),
        Constraint::Length(4),
        Constraint::Length(13),
        Constraint::Length(9),
        Constraint::Length(17),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" Jobs ({}) ", app.model.jobs.len()))),
        jobs_area,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_bar_fills_proportionally() {
        assert_eq!(super::bar(Some(0.5), 10), "[#####.....]  50%");
        assert_eq!(super::bar(Some(1.5), 4), "[####] 150%");
        assert_eq!(super::bar(None, 3), "[???]");
    }
}
