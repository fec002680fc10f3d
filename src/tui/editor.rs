//! The prompt editor's state: multi-line text with a cursor, the history of sent prompts
//! (Up/Down), and its layout into rows of a box. Key bindings live in `keys.rs`; this file only
//! edits text. Pure.

use unicode_width::UnicodeWidthChar;

/// The text being typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Editor {
    text: String,
    /// A byte offset into `text`, always on a character boundary.
    cursor: usize,
    history: Vec<String>,
    /// While browsing history: the entry shown, and what was typed before browsing.
    browsing: Option<(usize, String)>,
    /// The whole text is selected: the next typed text or deletion replaces all of it
    /// (a refused command waits like this to be retyped); moving the cursor keeps it.
    selected: bool,
}

impl Editor {
    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The cursor as a byte offset.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Replaces the text; the cursor goes to its end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.cursor = self.text.len();
        self.browsing = None;
        self.selected = false;
    }

    /// Replaces the text with `text`, selected: typing replaces it, moving keeps it.
    pub fn set_selected(&mut self, text: &str) {
        self.set(text);
        self.selected = !text.is_empty();
    }

    /// Whether the whole text is selected.
    pub fn selected(&self) -> bool {
        self.selected
    }

    /// Keeps the text, drops the selection (a cursor movement).
    pub fn unselect(&mut self) {
        self.selected = false;
    }

    /// Empties the editor (its text is not remembered).
    pub fn clear(&mut self) {
        self.set("");
    }

    /// A selection is replaced by what is typed next: the text goes.
    fn replace_selection(&mut self) -> bool {
        if std::mem::take(&mut self.selected) {
            self.text.clear();
            self.cursor = 0;
            true
        } else {
            false
        }
    }

    /// Empties the editor and returns its text, remembering it in the history.
    pub fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.selected = false;
        self.browsing = None;
        self.remember(&text);
        text
    }

    /// Adds `text` to the history (not blanks, not a repeat of the last entry).
    pub fn remember(&mut self, text: &str) {
        if !text.trim().is_empty() && self.history.last().map(String::as_str) != Some(text) {
            self.history.push(text.to_string());
        }
    }

    /// Inserts text at the cursor (a paste: `\r\n` and `\r` become `\n`).
    pub fn insert_str(&mut self, s: &str) {
        self.replace_selection();
        let s = s.replace("\r\n", "\n").replace('\r', "\n");
        self.text.insert_str(self.cursor, &s);
        self.cursor += s.len();
    }

    /// Types one character at the cursor.
    pub fn insert_char(&mut self, c: char) {
        self.replace_selection();
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    fn prev_boundary(&self, from: usize) -> usize {
        self.text[..from]
            .char_indices()
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, from: usize) -> usize {
        self.text[from..]
            .chars()
            .next()
            .map_or(from, |c| from + c.len_utf8())
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if self.replace_selection() {
            return;
        }
        if self.cursor > 0 {
            let start = self.prev_boundary(self.cursor);
            self.text.replace_range(start..self.cursor, "");
            self.cursor = start;
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.replace_selection() {
            return;
        }
        if self.cursor < self.text.len() {
            let end = self.next_boundary(self.cursor);
            self.text.replace_range(self.cursor..end, "");
        }
    }

    /// Moves one character left.
    pub fn left(&mut self) {
        self.cursor = self.prev_boundary(self.cursor);
    }

    /// Moves one character right.
    pub fn right(&mut self) {
        self.cursor = self.next_boundary(self.cursor);
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    /// Moves to the start of the line.
    pub fn home(&mut self) {
        self.cursor = self.line_start();
    }

    /// Moves to the end of the line.
    pub fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Deletes from the start of the prompt (all its lines) to the cursor (Ctrl+U).
    pub fn kill_to_start(&mut self) {
        if self.replace_selection() {
            return;
        }
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
    }

    /// Deletes from the cursor to the end of the prompt (all its lines) (Ctrl+K).
    pub fn kill_to_end(&mut self) {
        if self.replace_selection() {
            return;
        }
        self.text.truncate(self.cursor);
    }

    /// Deletes the word before the cursor and the spaces after it (Ctrl+W, Alt+Backspace).
    pub fn delete_word_back(&mut self) {
        let start = self.word_start();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    fn word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(|c: char| c.is_whitespace());
        trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8())
    }

    /// Moves to the start of the word before the cursor (Alt+B, Ctrl+Left).
    pub fn word_left(&mut self) {
        self.cursor = self.word_start();
    }

    /// Moves past the end of the next word (Alt+F, Ctrl+Right).
    pub fn word_right(&mut self) {
        let after = &self.text[self.cursor..];
        let skip_space = after.len() - after.trim_start().len();
        let rest = &after[skip_space..];
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.cursor += skip_space + word;
    }

    /// Moves up one line keeping the column; `false` on the first line.
    pub fn up(&mut self) -> bool {
        let start = self.line_start();
        if start == 0 {
            return false;
        }
        let column = self.text[start..self.cursor].chars().count();
        let prev_start = self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        self.cursor = advance(&self.text, prev_start, start - 1, column);
        true
    }

    /// Moves down one line keeping the column; `false` on the last line.
    pub fn down(&mut self) -> bool {
        let end = self.line_end();
        if end == self.text.len() {
            return false;
        }
        let column = self.text[self.line_start()..self.cursor].chars().count();
        let next_start = end + 1;
        let next_end = self.text[next_start..]
            .find('\n')
            .map_or(self.text.len(), |i| next_start + i);
        self.cursor = advance(&self.text, next_start, next_end, column);
        true
    }

    /// Shows the previous history entry (Up on the first line).
    pub fn history_prev(&mut self) {
        let index = match &self.browsing {
            Some((0, _)) => return,
            Some((i, _)) => i - 1,
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len(), self.text.clone()));
                self.history.len() - 1
            }
        };
        if let Some((i, _)) = &mut self.browsing {
            *i = index;
        }
        self.text = self.history[index].clone();
        self.cursor = self.text.len();
    }

    /// Shows the next history entry, then what was typed before browsing (Down on the last line).
    pub fn history_next(&mut self) {
        let Some((i, draft)) = self.browsing.clone() else {
            return;
        };
        if i + 1 < self.history.len() {
            self.browsing = Some((i + 1, draft));
            self.text = self.history[i + 1].clone();
        } else {
            self.browsing = None;
            self.text = draft;
        }
        self.cursor = self.text.len();
    }

    /// The text cut into rows of at most `width` cells, and the cursor's (row, column).
    pub fn layout(&self, width: usize) -> (Vec<String>, (usize, usize)) {
        let width = width.max(2);
        let mut rows = vec![String::new()];
        let mut col = 0;
        let mut cursor = (0, 0);
        for (i, c) in self.text.char_indices() {
            if i == self.cursor {
                cursor = (rows.len() - 1, col);
            }
            if c == '\n' {
                rows.push(String::new());
                col = 0;
                continue;
            }
            let c = if c.is_control() { ' ' } else { c };
            let w = c.width().unwrap_or(0);
            if col + w > width {
                rows.push(String::new());
                col = 0;
                if i == self.cursor {
                    cursor = (rows.len() - 1, 0);
                }
            }
            if let Some(row) = rows.last_mut() {
                row.push(c);
            }
            col += w;
        }
        if self.cursor >= self.text.len() {
            if col >= width {
                rows.push(String::new());
                col = 0;
            }
            cursor = (rows.len() - 1, col);
        }
        (rows, cursor)
    }
}

/// The byte offset `column` characters after `start`, but not past `end`.
fn advance(text: &str, start: usize, end: usize, column: usize) -> usize {
    text[start..end]
        .char_indices()
        .nth(column)
        .map_or(end, |(i, _)| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Editor {
        let mut e = Editor::default();
        e.insert_str(s);
        e
    }

    #[test]
    fn editing_multibyte_text() {
        let mut e = typed("肺部 ok");
        e.left();
        e.left();
        e.left();
        e.backspace();
        assert_eq!(e.text(), "肺 ok");
        e.home();
        e.delete();
        assert_eq!(e.text(), " ok");
        e.end();
        e.delete_word_back();
        assert_eq!(e.text(), " ");
    }

    #[test]
    fn up_and_down_keep_the_column_and_report_the_edges() {
        let mut e = typed("abcdef\nxy\n12345");
        assert!(e.up());
        assert_eq!(e.cursor(), "abcdef\nxy".len());
        assert!(e.up());
        assert_eq!(e.cursor(), 2);
        assert!(!e.up());
        assert!(e.down());
        assert!(e.down());
        assert!(!e.down());
    }

    #[test]
    fn history_browses_and_restores_the_draft() {
        let mut e = typed("first");
        e.take();
        e.insert_str("second");
        e.take();
        e.insert_str("draft");
        e.history_prev();
        assert_eq!(e.text(), "second");
        e.history_prev();
        e.history_prev();
        assert_eq!(e.text(), "first");
        e.history_next();
        e.history_next();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn layout_wraps_and_places_the_cursor() {
        let e = typed("abcdef\ngh");
        let (rows, cursor) = e.layout(4);
        assert_eq!(rows, ["abcd", "ef", "gh"]);
        assert_eq!(cursor, (2, 2));
        let e = typed("abcd");
        assert_eq!(e.layout(4), (vec!["abcd".into(), String::new()], (1, 0)));
        assert_eq!(Editor::default().layout(4), (vec![String::new()], (0, 0)));
    }

    #[test]
    fn words_and_kills() {
        let mut e = typed("one two three");
        e.word_left();
        e.word_left();
        assert_eq!(e.cursor(), 4);
        e.word_right();
        assert_eq!(e.cursor(), 7);
        e.kill_to_end();
        assert_eq!(e.text(), "one two");
        e.kill_to_start();
        assert_eq!(e.text(), "");
        let mut e = typed("a\r\nb");
        e.insert_char('c');
        assert_eq!(e.text(), "a\nbc");
    }
}
