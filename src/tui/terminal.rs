//! Owning the terminal: raw mode, the alternate screen, bracketed paste, mouse wheel reports and
//! unambiguous key codes (so Shift+Enter can be told from Enter where the terminal allows) on
//! the way in; all of it undone on the way out, on every exit path — a normal return, an error,
//! and a panic (the hook restores the terminal before the panic message is printed, as
//! `ratatui::init()` does). Also runs `$EDITOR` with the screen suspended.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, KeyboardEnhancementFlags,
    PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};

/// Whether our modes are on (so restoring twice is harmless).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Mouse reports for buttons and the wheel only (1000) in SGR form (1006): no motion events,
/// unlike crossterm's `EnableMouseCapture`.
const MOUSE_ON: &str = "\x1b[?1000h\x1b[?1006h";
const MOUSE_OFF: &str = "\x1b[?1006l\x1b[?1000l";

/// Turns the mouse reports on (the wheel scrolls the chat) or off (the terminal selects
/// text, as it does without a full-screen program).
pub fn set_mouse(on: bool) -> io::Result<()> {
    let mut out = io::stdout();
    out.write_all(if on { MOUSE_ON } else { MOUSE_OFF }.as_bytes())?;
    out.flush()
}

/// Turns on everything the chat needs.
pub fn enter() -> io::Result<()> {
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut out = io::stdout();
    execute!(
        out,
        EnterAlternateScreen,
        EnableBracketedPaste,
        PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES),
    )?;
    out.write_all(MOUSE_ON.as_bytes())?;
    out.flush()
}

/// Undoes [`enter`], ignoring errors (there is nothing better to do with them).
pub fn leave() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = io::stdout();
    let _ = out.write_all(MOUSE_OFF.as_bytes());
    let _ = execute!(
        out,
        PopKeyboardEnhancementFlags,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show,
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Restores the terminal before the previous panic hook prints a panic of the UI thread. A
/// panic of another thread while the chat owns the screen is not printed over it: the engine
/// worker catches its panics and reports them as failed requests, shown in the transcript.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    let ui_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        // A DICOM decoder's panic is caught and reported as an unreadable file: the screen
        // stays as it is.
        if crate::dicom::guard::active() {
            return;
        }
        if std::thread::current().id() == ui_thread {
            leave();
            previous(info);
        } else if !ACTIVE.load(Ordering::SeqCst) {
            previous(info);
        }
    }));
}

/// Restores the terminal when dropped: `let _guard = Guard;` after [`enter`].
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        leave();
    }
}

/// Runs `$VISUAL` (else `$EDITOR`, else `vi`) on `text` with the screen handed over to it,
/// and returns the edited text. The caller must keep other threads from reading the terminal
/// meanwhile.
pub fn edit_externally(text: &str) -> Result<String, String> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".to_string());
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi").to_string();
    let args: Vec<String> = words.map(str::to_string).collect();
    let file = temp_file();
    write_private(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    leave();
    let status = std::process::Command::new(&program)
        .args(&args)
        .arg(&file)
        .status();
    let restored = enter();
    let result = match status {
        Ok(s) if s.success() => {
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
        }
        Ok(s) => Err(format!(
            "{program} exited with {s}; the prompt is unchanged"
        )),
        Err(e) => Err(format!("cannot run {program}: {e} (set $EDITOR)")),
    };
    let _ = std::fs::remove_file(&file);
    restored.map_err(|e| format!("cannot restore the terminal: {e}"))?;
    result
}

/// Writes a new file only the user can read: prompts are medical data.
fn write_private(path: &std::path::Path, text: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

/// A fresh file name in the temporary directory for the prompt being edited.
fn temp_file() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("huatuo-prompt-{}-{nanos}.md", std::process::id()))
}
