//! Word wrapping of styled lines to a width in terminal cells, with a first-row prefix and a
//! hanging indent ([`MdLine`]). Words move to the next row whole; a word wider than a row is
//! split between characters; CJK characters break anywhere, as they do in print. Control
//! characters are dropped so model output can never move the cursor. Pure.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::markdown::MdLine;

/// The width of `spans` in cells.
pub fn spans_width(spans: &[Span<'_>]) -> usize {
    spans.iter().map(|s| s.content.width()).sum()
}

/// A run of text that wraps as a unit.
#[derive(Debug, PartialEq)]
enum Piece {
    Word(String, Style),
    Space(String, Style),
}

/// Splits spans into words, runs of spaces and single wide characters.
fn pieces(spans: &[Span<'_>]) -> Vec<Piece> {
    let mut out = Vec::new();
    for span in spans {
        let style = span.style;
        let mut word = String::new();
        let mut space = String::new();
        for c in span.content.chars() {
            let c = if c == '\t' { ' ' } else { c };
            if c.is_control() {
                continue;
            }
            if c == ' ' {
                if !word.is_empty() {
                    out.push(Piece::Word(std::mem::take(&mut word), style));
                }
                space.push(c);
            } else {
                if !space.is_empty() {
                    out.push(Piece::Space(std::mem::take(&mut space), style));
                }
                if c.width().unwrap_or(0) > 1 {
                    if !word.is_empty() {
                        out.push(Piece::Word(std::mem::take(&mut word), style));
                    }
                    out.push(Piece::Word(c.to_string(), style));
                } else {
                    word.push(c);
                }
            }
        }
        if !word.is_empty() {
            out.push(Piece::Word(word, style));
        }
        if !space.is_empty() {
            out.push(Piece::Space(space, style));
        }
    }
    out
}

/// Builds rows of at most `width` cells.
struct Rows {
    width: usize,
    rows: Vec<Line<'static>>,
    current: Vec<Span<'static>>,
    used: usize,
    continuation: Vec<Span<'static>>,
    /// The row was started by wrapping (its leading spaces are dropped).
    wrapped: bool,
    /// Text (not only a prefix) is on the current row.
    content_on_row: bool,
}

impl Rows {
    fn push(&mut self, text: String, style: Style, w: usize) {
        if text.is_empty() {
            return;
        }
        self.used += w;
        self.content_on_row = true;
        match self.current.last_mut() {
            Some(last) if last.style == style => last.content.to_mut().push_str(&text),
            _ => self.current.push(Span::styled(text, style)),
        }
    }

    fn newline(&mut self) {
        let row = std::mem::replace(&mut self.current, self.continuation.clone());
        self.rows.push(Line::from(row));
        self.used = spans_width(&self.continuation);
        self.wrapped = true;
        self.content_on_row = false;
    }

    fn room(&self) -> usize {
        self.width.saturating_sub(self.used)
    }

    fn at_row_start(&self) -> bool {
        !self.content_on_row
    }

    /// Adds a word after the spaces before it (dropped if the word starts a wrapped row),
    /// splitting the word if it is wider than a whole row.
    fn word(&mut self, space: Option<(String, Style)>, word: String, style: Style) {
        let (space_w, space) = match space {
            Some((s, st)) if !(self.wrapped && self.at_row_start()) => (s.width(), Some((s, st))),
            _ => (0, None),
        };
        let w = word.width();
        if space_w + w <= self.room() {
            if let Some((s, st)) = space {
                self.push(s, st, space_w);
            }
            return self.push(word, style, w);
        }
        let full = self.width.saturating_sub(spans_width(&self.continuation));
        if w <= full && !self.at_row_start() {
            self.newline();
            return self.push(word, style, w);
        }
        if let Some((s, st)) = space {
            if space_w < self.room() {
                self.push(s, st, space_w);
            }
        }
        let mut chunk = String::new();
        let mut chunk_w = 0;
        for c in word.chars() {
            let cw = c.width().unwrap_or(0);
            if chunk_w + cw > self.room() {
                if chunk.is_empty() && self.at_row_start() {
                    // Not even one character fits: let it overflow rather than loop.
                    chunk.push(c);
                    chunk_w += cw;
                    continue;
                }
                let text = std::mem::take(&mut chunk);
                self.push(text, style, chunk_w);
                chunk_w = 0;
                self.newline();
            }
            chunk.push(c);
            chunk_w += cw;
        }
        self.push(chunk, style, chunk_w);
    }
}

/// Wraps one logical line into rows of at most `width` cells. An empty line gives one row.
pub fn wrap(line: &MdLine, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    // Prefixes that leave no room for text are dropped rather than overflowing.
    let fits = |p: &[Span<'static>]| spans_width(p) + 1 < width;
    let prefix = if fits(&line.prefix) {
        line.prefix.clone()
    } else {
        Vec::new()
    };
    let continuation = if fits(&line.continuation) {
        line.continuation.clone()
    } else {
        Vec::new()
    };
    let used = spans_width(&prefix);
    let mut rows = Rows {
        width,
        rows: Vec::new(),
        current: prefix,
        used,
        continuation,
        wrapped: false,
        content_on_row: false,
    };
    let mut space = None;
    for piece in pieces(&line.spans) {
        match piece {
            Piece::Word(word, style) => rows.word(space.take(), word, style),
            Piece::Space(s, style) => space = Some((s, style)),
        }
    }
    let last = std::mem::take(&mut rows.current);
    rows.rows.push(Line::from(last));
    rows.rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &MdLine, width: usize) -> Vec<String> {
        wrap(line, width)
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    fn line(s: &str) -> MdLine {
        MdLine::plain(vec![Span::raw(s.to_string())])
    }

    #[test]
    fn words_move_whole_and_long_words_split() {
        assert_eq!(
            texts(&line("the quick brown fox"), 10),
            ["the quick", "brown fox"]
        );
        assert_eq!(texts(&line("abcdefghijkl"), 5), ["abcde", "fghij", "kl"]);
        assert_eq!(
            texts(&line("a abcdefghijkl"), 5),
            ["a abc", "defgh", "ijkl"]
        );
        assert_eq!(texts(&line(""), 5), [""]);
    }

    #[test]
    fn leading_spaces_stay_on_the_first_row_only() {
        assert_eq!(texts(&line("    code here"), 9), ["    code", "here"]);
    }

    #[test]
    fn hanging_indent_and_prefix() {
        let l = MdLine {
            prefix: vec![Span::raw("• ")],
            continuation: vec![Span::raw("  ")],
            spans: vec![Span::raw("one two three four")],
        };
        assert_eq!(texts(&l, 10), ["• one two", "  three", "  four"]);
    }

    #[test]
    fn cjk_breaks_anywhere_and_never_overflows() {
        let rows = texts(&line("肺部CT显示磨玻璃影"), 7);
        for r in &rows {
            assert!(r.width() <= 7, "{r:?}");
        }
        assert_eq!(rows.concat(), "肺部CT显示磨玻璃影");
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(texts(&line("a\u{1b}[31mb"), 20), ["a[31mb"]);
    }

    #[test]
    fn styles_are_kept_per_span() {
        let red = Style::default().fg(ratatui::style::Color::Red);
        let l = MdLine::plain(vec![Span::raw("ab "), Span::styled("cd", red)]);
        let rows = wrap(&l, 20);
        assert_eq!(rows[0].spans[1].style, red);
    }
}
