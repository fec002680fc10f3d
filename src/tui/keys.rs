//! The key map: what each key, paste and mouse wheel event does to the [`App`]. Enter sends,
//! Alt+Enter / Shift+Enter / Ctrl+J insert a new line, Esc or Ctrl+C stops an answer, Ctrl+C
//! twice or Ctrl+D on an empty prompt quits, Up/Down walk the history, PgUp/PgDn, Ctrl+↑/↓,
//! Ctrl+Home/End (and Home/End on an empty prompt) scroll, Tab completes, Ctrl+G opens
//! `$EDITOR`. The help overlay lists the same keys from [`KEYS`].

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

use std::time::Instant;

use super::app::{App, QUIT_WINDOW};
use super::complete;
use super::msg::{Effect, Exit};
use super::paste;

/// Keys for the help overlay: (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the message"),
    ("Alt+Enter, Shift+Enter, Ctrl+J", "new line"),
    ("Esc, Ctrl+C", "stop the answer (keeps what was written)"),
    ("Ctrl+C twice, Ctrl+D", "quit (Ctrl+D on an empty prompt)"),
    ("Up, Down", "previous and next prompts"),
    ("PgUp, PgDn, wheel", "scroll the conversation"),
    ("Ctrl+Up, Ctrl+Down", "scroll one line"),
    (
        "Ctrl+Home, Ctrl+End",
        "top, bottom (Home/End on an empty prompt)",
    ),
    ("Tab", "complete a command, file or name"),
    ("Ctrl+G", "edit the prompt in $EDITOR"),
    (
        "Ctrl+U, Ctrl+K, Ctrl+W",
        "delete to the prompt's start, to its end, a word",
    ),
    ("Ctrl+X", "clear the prompt"),
    ("F2", "mouse: scroll the chat or select text"),
    ("F3", "view the last image on the whole screen"),
    ("Ctrl+L", "redraw the screen"),
    ("paste or drop a file", "attach an image"),
    ("F1", "this help"),
];

/// Rows one wheel notch scrolls.
const WHEEL_ROWS: isize = 3;

impl App {
    /// Handles a key press.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        if ctrl && key.code == KeyCode::Char('c') {
            return self.on_ctrl_c();
        }
        self.quit_armed = None;
        if key.code != KeyCode::Tab {
            self.tab = None;
        }
        if let Some(offset) = self.help {
            let page = self.view.viewport_rows.get().max(2) - 1;
            let max = self.view.help_max.get();
            let scrolled = |d: isize| Some(offset.saturating_add_signed(d).min(max));
            self.help = match key.code {
                KeyCode::Up => scrolled(-1),
                KeyCode::Down => scrolled(1),
                KeyCode::PageUp => scrolled(-(page as isize)),
                KeyCode::PageDown => scrolled(page as isize),
                KeyCode::Home => Some(0),
                KeyCode::End => Some(max),
                _ => None,
            };
            // Any other key closes the overlay; Esc, Enter and q do nothing else.
            if self.help.is_some()
                || matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::F(1))
                || (key.code == KeyCode::Char('q') && self.editor.is_empty())
            {
                return Vec::new();
            }
        }
        if self.viewer.is_some() {
            return match key.code {
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::F(3) => self.close_viewer(),
                KeyCode::Tab | KeyCode::Char('m') => self.toggle_viewer(),
                code => self.window_key(code).unwrap_or_default(),
            };
        }
        let page = self.view.viewport_rows.get().max(2) as isize - 1;
        // Moving the cursor keeps a selected (refused) command and edits it from there.
        if matches!(
            key.code,
            KeyCode::Left
                | KeyCode::Right
                | KeyCode::Home
                | KeyCode::End
                | KeyCode::Up
                | KeyCode::Down
        ) || (ctrl && matches!(key.code, KeyCode::Char('a' | 'e')))
        {
            self.editor.unselect();
        }
        match key.code {
            KeyCode::Esc => return self.stop_by_user(),
            KeyCode::Enter if alt || shift => self.editor.insert_char('\n'),
            KeyCode::Char('j') if ctrl => self.editor.insert_char('\n'),
            KeyCode::Enter => return self.submit(),
            KeyCode::Char('d') if ctrl => {
                if self.editor.is_empty() {
                    self.set_exit(Exit::Quit);
                } else {
                    self.editor.delete();
                }
            }
            KeyCode::Char('g') if ctrl => return vec![Effect::Edit(self.editor.text().into())],
            KeyCode::Char('l') if ctrl => return vec![Effect::Redraw],
            KeyCode::Char('x') if ctrl => self.editor.clear(),
            KeyCode::Char('a') if ctrl => self.editor.home(),
            KeyCode::Char('e') if ctrl => self.editor.end(),
            KeyCode::Char('u') if ctrl => self.editor.kill_to_start(),
            KeyCode::Char('k') if ctrl => self.editor.kill_to_end(),
            KeyCode::Char('w') if ctrl => self.editor.delete_word_back(),
            KeyCode::Char('b') if alt => self.editor.word_left(),
            KeyCode::Char('f') if alt => self.editor.word_right(),
            KeyCode::Char(c) if !ctrl && !alt => self.editor.insert_char(c),
            KeyCode::Tab => self.complete(),
            KeyCode::F(1) => self.help = Some(0),
            KeyCode::F(3) => return self.open_viewer(None),
            KeyCode::F(2) => {
                self.mouse = !self.mouse;
                self.notice(if self.mouse {
                    "Mouse: the wheel scrolls the chat (F2: select text instead)"
                } else {
                    "Mouse: select text with it, as in any terminal (F2: scroll with the wheel again)"
                });
                return vec![Effect::Mouse(self.mouse)];
            }
            KeyCode::Backspace if ctrl || alt => self.editor.delete_word_back(),
            KeyCode::Backspace => self.editor.backspace(),
            KeyCode::Delete => self.editor.delete(),
            KeyCode::Left if ctrl || alt => self.editor.word_left(),
            KeyCode::Right if ctrl || alt => self.editor.word_right(),
            KeyCode::Left => self.editor.left(),
            KeyCode::Right => self.editor.right(),
            KeyCode::Up if ctrl => self.scroll_by(-1),
            KeyCode::Down if ctrl => self.scroll_by(1),
            KeyCode::Up => self.line_up_or_history(),
            KeyCode::Down => self.line_down_or_history(),
            KeyCode::PageUp => self.scroll_by(-page),
            KeyCode::PageDown => self.scroll_by(page),
            KeyCode::Home if ctrl || self.editor.is_empty() => self.scroll = Some(0),
            KeyCode::End if ctrl || self.editor.is_empty() => self.scroll = None,
            KeyCode::Home => self.editor.home(),
            KeyCode::End => self.editor.end(),
            _ => {}
        }
        Vec::new()
    }

    /// Esc or Ctrl+C while answering: stops at once, keeping what was written. Stopped before
    /// its first word, the question comes back to the editor instead, to change and resend.
    fn stop_by_user(&mut self) -> Vec<Effect> {
        if self.compare.as_ref().is_some_and(|c| c.running()) {
            return self.stop_compare();
        }
        let Some(g) = self.generation else {
            return self.cancel_load();
        };
        let effects = self.stop_generation();
        let untouched = g.tokens == 0 && g.turn + 1 == self.session.turns.len();
        if untouched && self.editor.is_empty() {
            if let Some(turn) = self.session.turns.pop() {
                // Its late `Finished` must not land on the next question's turn.
                self.cancelled = Some((g.id, usize::MAX));
                let mut images = turn.images;
                images.append(&mut self.pending);
                self.pending = images;
                self.editor.set(&turn.text);
            }
        }
        effects
    }

    /// Up: the line above, or on the first line the previous prompt.
    fn line_up_or_history(&mut self) {
        if !self.editor.up() {
            self.editor.history_prev();
        }
    }

    /// Down: the line below, or on the last line the next prompt.
    fn line_down_or_history(&mut self) {
        if !self.editor.down() {
            self.editor.history_next();
        }
    }

    /// Ctrl+C: stops an answer (and only that); otherwise arms quitting, and a second press
    /// within [`QUIT_WINDOW`] quits.
    fn on_ctrl_c(&mut self) -> Vec<Effect> {
        self.help = None;
        self.tab = None;
        if self.generation.is_some() {
            self.quit_armed = None;
            return self.stop_by_user();
        }
        if self.quit_armed.is_some_and(|t| t.elapsed() <= QUIT_WINDOW) {
            self.set_exit(Exit::Interrupted);
        } else {
            self.quit_armed = Some(Instant::now());
        }
        Vec::new()
    }

    /// A bracketed paste: paths of existing images become attachments; other text is typed.
    pub(crate) fn on_paste(&mut self, text: &str) -> Vec<Effect> {
        self.quit_armed = None;
        self.tab = None;
        match paste::image_paths(text) {
            Some(paths) => self.attach(paths),
            None => {
                self.editor.insert_str(text);
                Vec::new()
            }
        }
    }

    pub(crate) fn on_mouse(&mut self, mouse: MouseEvent) {
        let delta = match mouse.kind {
            MouseEventKind::ScrollUp => -WHEEL_ROWS,
            MouseEventKind::ScrollDown => WHEEL_ROWS,
            _ => return,
        };
        match self.help {
            Some(offset) => {
                let max = self.view.help_max.get();
                self.help = Some(offset.saturating_add_signed(delta).min(max));
            }
            None => self.scroll_by(delta),
        }
    }

    /// Tab: completes the word before the cursor, or cycles through the candidates.
    fn complete(&mut self) {
        let text = self.editor.text().to_string();
        if let Some(cycle) = &mut self.tab {
            if cycle.candidates.is_empty() {
                return;
            }
            let pick = cycle.candidates[cycle.next % cycle.candidates.len()].clone();
            cycle.next += 1;
            let from = cycle.from.min(text.len());
            self.editor.set(&format!("{}{pick}", &text[..from]));
            return;
        }
        if self.editor.cursor() != text.len() {
            return;
        }
        let Some(found) = complete::complete(&text, &self.sessions) else {
            return;
        };
        let current = &text[found.from..];
        let common = complete::common_prefix(&found.candidates);
        if found.candidates.len() == 1 || common.len() > current.len() {
            self.editor.set(&format!("{}{common}", &text[..found.from]));
        }
        if found.candidates.len() > 1 {
            self.tab = Some(super::app::TabCycle {
                from: found.from,
                candidates: found.candidates,
                next: 0,
            });
        }
    }
}
