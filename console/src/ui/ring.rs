//! View 2: the key ring of each group: who owns which share, gaps and imbalance.

use std::collections::BTreeMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::selected_style;
use crate::app::{App, Tab};
use crate::model::GroupRing;

const PALETTE: [Color; 6] = [
    Color::Cyan,
    Color::Green,
    Color::Magenta,
    Color::Blue,
    Color::Yellow,
    Color::LightRed,
];

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App) {
    let rings = &app.model.rings;
    if rings.is_empty() {
        frame.render_widget(
            Paragraph::new("no route table yet: no node has answered")
                .block(Block::bordered().title(" Ring ")),
            area,
        );
        return;
    }
    // Stable letters per node across groups, so the same node reads the same everywhere.
    let mut letters: BTreeMap<&str, char> = BTreeMap::new();
    for r in rings.iter().flat_map(|g| &g.ranges) {
        let next = (b'A' + (letters.len() % 26) as u8) as char;
        letters.entry(r.node.as_str()).or_insert(next);
    }
    let [bars_area, table_area] = Layout::vertical([
        Constraint::Length(rings.len() as u16 * 2 + 2),
        Constraint::Fill(1),
    ])
    .areas(area);

    let width = bars_area.width.saturating_sub(12).max(8) as usize;
    let mut lines = Vec::new();
    for ring in rings {
        lines.push(bar_line(ring, width, &letters));
        let legend: Vec<Span> = letters
            .iter()
            .filter(|(node, _)| ring.ranges.iter().any(|r| r.node == **node))
            .map(|(node, l)| Span::raw(format!("{l}={node} ")))
            .collect();
        lines.push(Line::from(legend).style(Style::default().fg(Color::DarkGray)));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Ring per group (0 → 2^512) ")),
        bars_area,
    );

    let header = Row::new(["group", "node", "backend", "ids", "share", "fair", "note"])
        .style(Style::default().fg(Color::Yellow));
    let rows = app.visible_shares().into_iter().enumerate().map(|(i, s)| {
        let note = s.note();
        let color = match note {
            "" => Color::Reset,
            "owner down: range unserved" => Color::Red,
            _ => Color::Yellow,
        };
        let row = Row::new(vec![
            s.group.to_string(),
            s.node.clone(),
            s.backend.to_string(),
            s.ids.to_string(),
            format!("{:.1}%", s.share * 100.0),
            format!("{:.1}%", s.fair * 100.0),
            note.to_owned(),
        ])
        .style(Style::default().fg(color));
        if i == app.selected {
            row.style(selected_style())
        } else {
            row
        }
    });
    let widths = [
        Constraint::Length(5),
        Constraint::Min(16),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).block(
            Block::bordered().title(format!(" Shares (sort: {}) ", app.sort_label(Tab::Ring))),
        ),
        table_area,
    );
}

/// One line per group: `g1 |AAABBBCC|` with each cell coloured by the owner of its position.
fn bar_line<'a>(ring: &'a GroupRing, width: usize, letters: &BTreeMap<&str, char>) -> Line<'a> {
    let mut spans = vec![Span::raw(format!("g{:<4} ", ring.group))];
    if ring.ranges.is_empty() {
        spans.push(Span::styled(
            "no backends: every key of this group is unserved",
            Style::default().fg(Color::Red),
        ));
        return Line::from(spans);
    }
    for cell in 0..width {
        // The cell's ring position as the top 64 bits of the id space.
        let pos = ((cell as u128 * (1u128 << 64)) / width as u128) as u64;
        // Owner: the largest start <= pos, wrapping to the last range.
        let owner = ring
            .ranges
            .iter()
            .rev()
            .find(|r| r.start <= pos)
            .or_else(|| ring.ranges.last());
        let (symbol, style) = match owner {
            Some(r) if !r.up => ('x', Style::default().fg(Color::Red)),
            Some(r) => {
                let letter = letters.get(r.node.as_str()).copied().unwrap_or('?');
                let color = PALETTE[(letter as usize - 'A' as usize) % PALETTE.len()];
                (letter, Style::default().fg(color))
            }
            None => (' ', Style::default()),
        };
        spans.push(Span::styled(symbol.to_string(), style));
    }
    Line::from(spans)
}
