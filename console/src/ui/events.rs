//! View 7: the events log (node up/down, jobs, slow requests, admin actions), newest first.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Row, Table};
use ratatui::Frame;

use super::format::clock;
use super::selected_style;
use crate::app::{App, Tab};

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let events = app.visible_events();
    let rows = events.iter().enumerate().map(|(i, e)| {
        let color = if e.severe { Color::Red } else { Color::Reset };
        let row = Row::new(vec![clock(e.at_s), e.text.clone()]).style(Style::default().fg(color));
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let title = format!(
        " Events ({}, sort: {}) ",
        app.events.len(),
        app.sort_label(Tab::Events)
    );
    frame.render_widget(
        Table::new(rows, [Constraint::Length(8), Constraint::Fill(1)])
            .header(Row::new(["UTC", "event"]).style(Style::default().fg(Color::Yellow)))
            .block(Block::bordered().title(title)),
        area,
    );
}
