//! Where in a config file a parse error is, said without quoting the file.
//!
//! Parsers such as `toml` print the offending source line in their error messages; config
//! files hold admin tokens, and config errors end up in logs, terminals and bug reports. This
//! module turns a byte span into "line L, column C" so the caller can report the parser's
//! bare message and the position, and never the text itself.

use std::ops::Range;

/// `message` located at the start of `span` in `text`: "line 3, column 9: <message>", or the
/// bare message when there is no span. Lines and columns count from 1; columns in characters.
pub fn located(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let message = message.trim_end();
    let Some(span) = span else {
        return message.to_owned();
    };
    let mut at = span.start.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nb = \"é\" x\n";
        let at = text.find('x').unwrap();
        assert_eq!(
            located(text, Some(at..at + 1), "expected newline\n"),
            "line 2, column 9: expected newline"
        );
        assert_eq!(located(text, Some(0..1), "m"), "line 1, column 1: m");
        assert_eq!(located(text, None, "missing field"), "missing field");
        // A span past the end (or inside a character) still names a position.
        assert_eq!(located(text, Some(999..1000), "m"), "line 3, column 1: m");
        assert_eq!(located("é", Some(1..2), "m"), "line 1, column 1: m");
    }
}
