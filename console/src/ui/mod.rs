//! Rendering: the whole screen as a pure function of [`App`].
//!
//! Layout: a tab bar with the cluster summary on the first line, the current view in the middle,
//! and a key-hint / prompt / status line at the bottom. Overlays (help, confirmation, schedule
//! editor) are drawn last. Nothing here reads the clock or the network: relative times are
//! computed against `model.refreshed_at_s`, so a frame is reproducible from its state.

mod defrag;
mod events;
mod format;
mod node;
mod overview;
mod recovery;
mod ring;
mod traces;

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use crate::app::{App, Prompt, Tab, SCHEDULE_MODES};

pub use format::{bytes, duration_us};

/// Draws the whole screen.
pub fn render(frame: &mut Frame, app: &App) {
    let [top, main, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_tabs(frame, top, app);
    match app.tab {
        Tab::Overview => overview::render(frame, main, app),
        Tab::Ring => ring::render(frame, main, app),
        Tab::Node => node::render(frame, main, app),
        Tab::DataSort => defrag::render(frame, main, app),
        Tab::Recovery => recovery::render(frame, main, app),
        Tab::Traces => traces::render(frame, main, app),
        Tab::Events => events::render(frame, main, app),
    }
    render_bottom(frame, bottom, app);
    if app.show_help {
        render_help(frame, app);
    }
    if let Some(form) = &app.form {
        let area = popup(frame.area(), 50, 8);
        frame.render_widget(Clear, area);
        let field = |i: usize, label: &str, value: String| {
            let style = if form.field == i {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            Line::from(vec![
                Span::raw(format!("{label:>8}: ")),
                Span::styled(format!("< {value} >"), style),
            ])
        };
        let lines = vec![
            Line::from(format!("backend {} on {}", form.backend, form.node)),
            field(
                0,
                "mode",
                SCHEDULE_MODES
                    .get(form.mode)
                    .copied()
                    .unwrap_or("auto")
                    .to_owned(),
            ),
            field(1, "hour", format!("{:02}:00 UTC", form.time_hour)),
            field(2, "splay", format!("±{}h", form.splay_hours)),
            Line::from("↑↓ field  ←→ change  Enter apply  Esc cancel")
                .style(Style::default().fg(Color::DarkGray)),
        ];
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" Data-sort schedule ")),
            area,
        );
    }
    if let Some(confirm) = &app.confirm {
        // Sized to the description and details, so the "y confirm" line is never pushed out
        // of the box: one line each when the terminal is wide enough, wrapped (with room for
        // word breaks) when not.
        let description = confirm.request.describe();
        let longest = std::iter::once(&description)
            .chain(&confirm.details)
            .map(|l| l.chars().count() as u16)
            .max()
            .unwrap_or(0);
        let width = (longest + 4).clamp(40, frame.area().width.saturating_sub(4).max(40));
        let inner = width.saturating_sub(2).max(1);
        let rows = |text: &str| match (text.chars().count() as u16).div_ceil(inner) {
            0 | 1 => 1,
            n => n + 1,
        };
        let mut lines = rows(&description);
        if !confirm.details.is_empty() {
            lines += 1 + confirm.details.iter().map(|d| rows(d)).sum::<u16>();
        }
        let area = popup(frame.area(), width, lines + 4);
        frame.render_widget(Clear, area);
        let mut text = vec![Line::from(description)];
        if !confirm.details.is_empty() {
            text.push(Line::from(""));
            text.extend(
                confirm
                    .details
                    .iter()
                    .map(|d| Line::from(d.clone()).style(Style::default().fg(Color::Cyan))),
            );
        }
        text.extend([
            Line::from(""),
            Line::from(vec![
                Span::styled(
                    "y",
                    Style::default()
                        .fg(Color::Green)
                        .add_modifier(Modifier::BOLD),
                ),
                Span::raw(" confirm   any other key cancels"),
            ]),
        ]);
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(
                Block::bordered()
                    .title(" Confirm ")
                    .border_style(Style::default().fg(Color::Yellow)),
            ),
            area,
        );
    }
}

fn render_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let summary = format!(
        " {}/{} up{} ",
        app.model.nodes_up(),
        app.model.nodes.len(),
        if app.paused { " · PAUSED" } else { "" }
    );
    let [tabs_area, summary_area] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(summary.chars().count() as u16),
    ])
    .areas(area);
    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {}", i + 1, t.title()));
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::default().fg(Color::Black).bg(Color::Cyan))
            .divider("│")
            .padding("", ""),
        tabs_area,
    );
    let down = app.model.nodes.len() - app.model.nodes_up();
    let style = if down > 0 {
        Style::default().fg(Color::Red)
    } else {
        Style::default().fg(Color::Green)
    };
    frame.render_widget(Paragraph::new(summary).style(style), summary_area);
}

fn render_bottom(frame: &mut Frame, area: Rect, app: &App) {
    let line = match &app.prompt {
        Prompt::Filter => Line::from(format!("/{}", app.filter)),
        Prompt::Command(text) => Line::from(format!(":{text}")),
        Prompt::None => match &app.status {
            Some(status) => Line::from(status.clone()).style(Style::default().fg(Color::Yellow)),
            None => {
                let filter = if app.filter.is_empty() {
                    String::new()
                } else {
                    format!(" filter:{} ", app.filter)
                };
                Line::from(format!(
                    "?help q quit ←→ views ↑↓ select / filter s sort p pause +- refresh {}ms{filter}",
                    app.refresh_ms
                ))
                .style(Style::default().fg(Color::DarkGray))
            }
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn render_help(frame: &mut Frame, app: &App) {
    let mut lines = vec![
        "1-7, Tab/←→   switch view        :name  open view (:ring, :node ADDR)",
        "↑↓ / j k      select row          Enter  open node (overview)",
        "/             filter tables       Esc    clear filter / status",
        "s             sort the table by   p      pause / resume polling",
        "+ / -         faster / slower     r      refresh now",
        "n             next node (node)    m      min duration (traces)",
    ];
    if !app.read_only {
        lines.extend([
            "Data-sort:    S start  C compact  X stop  e edit schedule",
            "Recovery:     d/m dry-run dc/merge   D/M dry run, then start   c cancel",
        ]);
    } else {
        lines.push("read-only console: admin actions are hidden");
    }
    lines.push("q / Ctrl-C    quit                any key closes this help");
    let area = popup(frame.area(), 72, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
            .block(Block::bordered().title(" Help ")),
        area,
    );
}

/// A centred rectangle of at most `width` × `height` inside `area`.
fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    h
}

/// Style of the selected table row.
fn selected_style() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

/// Renders the app into a plain-text frame of the given size (for `ell top --once` and tests).
pub fn render_to_text(app: &App, width: u16, height: u16) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    let mut terminal = match ratatui::Terminal::new(backend) {
        Ok(t) => t,
        Err(e) => return format!("cannot render: {e}"),
    };
    if let Err(e) = terminal.draw(|f| render(f, app)) {
        return format!("cannot render: {e}");
    }
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
