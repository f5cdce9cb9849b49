//! Showing untrusted text in an answer or a log line: cut short and escaped, so that no input
//! can forge a log line, move a terminal's cursor or blow up a log.
//!
//! It lives in the codec because the codec is the first to echo input (its errors name the
//! field) and every crate that reads the wire — `b24`, the host, the emulator — depends on it.
//! `b24::incoming` re-exports it for the host.

use std::fmt;

/// How many characters of the input are shown; the rest is replaced by `…`.
pub const QUOTE_LIMIT: usize = 64;

/// `text` for display: at most [`QUOTE_LIMIT`] characters of it, then `…` when it was longer;
/// backslashes, quotes and backticks, control characters (newlines, ANSI escapes, C1 codes) and
/// the invisible Unicode characters that reorder or split lines are written as escapes
/// (`\n`, `\"`, `\u{1b}`), so the result is one printable line.
pub fn quoted(text: &str) -> Quoted<'_> {
    Quoted { text, limit: QUOTE_LIMIT, quotes: true }
}

/// `text` as one printable line of at most `limit` characters (then `…`), for prose a server
/// sent (an error's description, the start of an answer): control and line-reordering
/// characters are escaped as [`quoted`] does, quotes are left as they are so the prose reads as
/// written.
pub fn one_line(text: &str, limit: usize) -> Quoted<'_> {
    Quoted { text, limit, quotes: false }
}

/// See [`quoted`] and [`one_line`]. Formats without allocating.
#[derive(Clone, Copy)]
pub struct Quoted<'a> {
    text: &'a str,
    limit: usize,
    /// Whether backslashes, quotes and backticks are escaped too.
    quotes: bool,
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.text.chars();
        for c in chars.by_ref().take(self.limit) {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' | '"' | '\'' | '`' if self.quotes => write!(f, "\\{c}")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Control characters (C0, DEL, C1) and the format characters that change how a line reads:
/// zero-width ones, bidirectional overrides and isolates, the line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_quotes_and_terminal_escapes_become_visible_escapes() {
        let shown = quoted("a\nb\r\"c\"\u{1b}[31mred`'\\\u{202e}\u{85}").to_string();
        assert_eq!(shown, "a\\nb\\r\\\"c\\\"\\u{1b}[31mred\\`\\'\\\\\\u{202e}\\u{85}");
        assert!(!shown.chars().any(needs_escape));
    }

    #[test]
    fn long_input_is_cut_to_the_limit_with_an_ellipsis() {
        let key = "k".repeat(100 * 1024);
        let shown = quoted(&key).to_string();
        assert_eq!(shown, format!("{}…", "k".repeat(QUOTE_LIMIT)));
        let exact = "é".repeat(QUOTE_LIMIT);
        assert_eq!(quoted(&exact).to_string(), exact, "counted in characters, not bytes");
        assert_eq!(quoted("").to_string(), "");
    }

    #[test]
    fn one_line_keeps_quotes_and_its_own_limit_but_escapes_line_breaks_and_escapes() {
        let shown = one_line("Argument 'ID' is \"bad\"\n\u{1b}[2Jforged", 200).to_string();
        assert_eq!(shown, "Argument 'ID' is \"bad\"\\n\\u{1b}[2Jforged");
        assert_eq!(one_line(&"x".repeat(300), 200).to_string(), format!("{}…", "x".repeat(200)));
    }

    #[test]
    fn escaping_cannot_grow_without_bound() {
        let worst = "\u{1b}".repeat(10_000);
        assert!(quoted(&worst).to_string().len() <= QUOTE_LIMIT * "\\u{10ffff}".len() + 3);
    }
}
