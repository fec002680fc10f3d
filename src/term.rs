//! Facts about the terminal, detected once at start-up and passed down as values (ripgrep's
//! `State`): whether stdout/stderr are terminals, whether stdin has something to read, and
//! whether to use colour. Nothing else looks at the environment for these.

use std::io::IsTerminal;

/// What the process is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermFacts {
    pub stdout_tty: bool,
    pub stderr_tty: bool,
    pub stdin_tty: bool,
    /// stdin is a pipe, a file or a socket: something a script gave us to read. A terminal or
    /// a closed/dangling stdin is not, so `ask` never blocks waiting for it.
    pub stdin_readable: bool,
    /// Colour on stderr.
    pub color: bool,
}

impl TermFacts {
    /// `color`: forced on or off (`--color always|never`), or `None` to use colour on a
    /// terminal stderr unless `NO_COLOR` or `TERM=dumb` says otherwise.
    pub fn detect(color: Option<bool>) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        let stderr_tty = std::io::stderr().is_terminal();
        let stdin_tty = std::io::stdin().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let color = color.unwrap_or(stderr_tty && !no_color && !dumb);
        Self {
            stdout_tty,
            stderr_tty,
            stdin_tty,
            stdin_readable: !stdin_tty && stdin_is_pipe_or_file(),
            color,
        }
    }
}

#[cfg(unix)]
fn stdin_is_pipe_or_file() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => {
            let t = m.file_type();
            t.is_fifo() || t.is_file() || t.is_socket()
        }
        Err(_) => false,
    }
}

#[cfg(not(unix))]
fn stdin_is_pipe_or_file() -> bool {
    !std::io::stdin().is_terminal()
}

/// Text that did not come from huatuo (file names, user text, model text, tag values, server
/// messages), made safe for one line of a terminal: every control character, and DEL, is shown
/// escaped (`\x1b`, `\n`) instead of being emitted, so no such string can move the cursor,
/// set the title, write the clipboard or ring the bell.
pub fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || c == '\u{7f}';
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`sanitize`] for text of several lines (a conversation shown on a terminal): newlines and
/// tabs stay, every other control character is shown escaped.
pub fn sanitize_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            line.split('\t')
                .map(|part| sanitize(part).into_owned())
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect();
    std::borrow::Cow::Owned(lines.join("\n"))
}

/// Drops control characters other than newline and tab, so that model output can never move
/// the cursor, change colours or ring bells in a terminal, and pipes carry plain text.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}';
    if text.chars().any(bad) {
        std::borrow::Cow::Owned(text.chars().filter(|&c| !bad(c)).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn untrusted_text_is_escaped_not_emitted() {
        assert_eq!(sanitize("scan.png"), "scan.png");
        assert_eq!(
            sanitize("a\x1b]52;c;aGk=\x07b\x1b[2J\nc\u{9b}"),
            "a\\x1b]52;c;aGk=\\x07b\\x1b[2J\\nc\\x9b"
        );
    }

    use super::*;

    #[test]
    fn printable_keeps_text_newlines_and_tabs_only() {
        assert_eq!(printable("a\tb\nc"), "a\tb\nc");
        assert_eq!(printable("x\u{1b}[31mred\r\u{7}\u{9b}y"), "x[31mredy");
        assert_eq!(printable("中文 🩻"), "中文 🩻");
    }
}
