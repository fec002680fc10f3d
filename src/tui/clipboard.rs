//! `/copy`: putting text on the clipboard, by the first route that can work here, and saying
//! which. A route whose success cannot be known (OSC 52 to a terminal) is described as
//! such. A route that cannot work (OSC 52 through a tmux whose `set-clipboard` is off) is
//! not taken. When nothing works, the user is told that nothing was copied.
//!
//! Routes, in order:
//! 1. a local clipboard tool for the session's display (wl-copy on Wayland, xclip or xsel on
//!    X11, pbcopy on macOS): its exit status says whether it worked;
//! 2. OSC 52 to the terminal (what works over ssh), unless tmux is between us and it with
//!    `set-clipboard` other than `on` (tmux then ignores an application's sequence);
//! 3. inside tmux, `tmux load-buffer -w`: tmux's own paste buffer (prefix + ] pastes it),
//!    which tmux also hands to the terminal's clipboard when `set-clipboard` allows.

use std::io::Write;
use std::process::{Command, Stdio};

/// What the environment offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// Inside tmux (`$TMUX`).
    pub tmux: bool,
    /// tmux's `set-clipboard` option (`on`, `external`, `off`), when it could be read.
    pub tmux_set_clipboard: Option<String>,
    /// Clipboard tools on the PATH that can reach this session's display, in preference
    /// order (program and its arguments).
    pub tools: Vec<(&'static str, &'static [&'static str])>,
}

/// How the text is to be copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Tool(&'static str, &'static [&'static str]),
    Osc52,
    TmuxBuffer,
}

/// The routes to try, in order, in `env`.
pub fn routes(env: &Env) -> Vec<Route> {
    let mut out: Vec<Route> = env.tools.iter().map(|(p, a)| Route::Tool(p, a)).collect();
    let osc52_reaches = !env.tmux || env.tmux_set_clipboard.as_deref() == Some("on");
    if osc52_reaches {
        out.push(Route::Osc52);
    }
    if env.tmux {
        out.push(Route::TmuxBuffer);
    }
    out
}

/// Reads the environment.
pub fn detect() -> Env {
    let tmux = std::env::var_os("TMUX").is_some();
    let tmux_set_clipboard = if tmux {
        Command::new("tmux")
            .args(["show-options", "-gv", "set-clipboard"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        None
    };
    let mut tools: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    if std::env::var_os("WAYLAND_DISPLAY").is_some() && on_path("wl-copy") {
        tools.push(("wl-copy", &[]));
    }
    if std::env::var_os("DISPLAY").is_some() {
        if on_path("xclip") {
            tools.push(("xclip", &["-selection", "clipboard"]));
        }
        if on_path("xsel") {
            tools.push(("xsel", &["--clipboard", "--input"]));
        }
    }
    if cfg!(target_os = "macos") && on_path("pbcopy") {
        tools.push(("pbcopy", &[]));
    }
    Env {
        tmux,
        tmux_set_clipboard,
        tools,
    }
}

/// Copies `text` by the first route that works; `Ok` says how, `Err` why nothing was copied.
pub fn copy(text: &str) -> Result<String, String> {
    let env = detect();
    let mut tried = Vec::new();
    for route in routes(&env) {
        match route {
            Route::Tool(program, args) => match pipe_to(program, args, text) {
                Ok(()) => return Ok(format!("with {program}")),
                Err(e) => tried.push(format!("{program}: {e}")),
            },
            Route::Osc52 => match osc52(text) {
                Ok(()) => {
                    return Ok(if env.tmux {
                        "through tmux with OSC 52 (tmux keeps it in its paste buffer and passes it on to a terminal that allows clipboard writes)".into()
                    } else {
                        "with OSC 52 (if your terminal allows clipboard writes)".into()
                    })
                }
                Err(e) => tried.push(format!("OSC 52: {e}")),
            },
            Route::TmuxBuffer => {
                // `-w` (tmux 3.2+) also sends it on to the terminal's clipboard.
                let loaded = pipe_to("tmux", &["load-buffer", "-w", "-"], text)
                    .or_else(|_| pipe_to("tmux", &["load-buffer", "-"], text));
                match loaded {
                    Ok(()) => {
                        let on = env.tmux_set_clipboard.as_deref().unwrap_or("off");
                        return Ok(if on == "off" {
                            "into tmux's paste buffer (prefix + ] pastes it); tmux's set-clipboard is off, so the system clipboard was not reached".into()
                        } else {
                            "into tmux's paste buffer (prefix + ] pastes it), which tmux hands on to the terminal's clipboard".into()
                        });
                    }
                    Err(e) => tried.push(format!("tmux load-buffer: {e}")),
                }
            }
        }
    }
    Err(if tried.is_empty() {
        "no way to reach a clipboard here (no wl-copy, xclip, xsel or pbcopy): nothing was copied"
            .into()
    } else {
        format!("nothing was copied ({})", tried.join("; "))
    })
}

fn pipe_to(program: &str, args: &[&str], text: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}"))
    }
}

/// OSC 52 on stdout (tmux with `set-clipboard on` takes it as it is).
fn osc52(text: &str) -> std::io::Result<()> {
    let mut seq = String::new();
    crossterm::Command::write_ansi(
        &crossterm::clipboard::CopyToClipboard::to_clipboard_from(text),
        &mut seq,
    )
    .map_err(|_| std::io::Error::other("cannot encode the clipboard sequence"))?;
    let mut out = std::io::stdout();
    out.write_all(seq.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_never_count_on_a_sequence_tmux_swallows() {
        let plain = Env::default();
        assert_eq!(routes(&plain), [Route::Osc52]);
        let tmux_on = Env {
            tmux: true,
            tmux_set_clipboard: Some("on".into()),
            ..Env::default()
        };
        assert_eq!(routes(&tmux_on), [Route::Osc52, Route::TmuxBuffer]);
        // `external` (tmux's default) ignores an application's OSC 52.
        let tmux_external = Env {
            tmux: true,
            tmux_set_clipboard: Some("external".into()),
            ..Env::default()
        };
        assert_eq!(routes(&tmux_external), [Route::TmuxBuffer]);
        let tmux_off = Env {
            tmux: true,
            tmux_set_clipboard: Some("off".into()),
            ..Env::default()
        };
        assert_eq!(routes(&tmux_off), [Route::TmuxBuffer]);
        let with_tool = Env {
            tools: vec![("wl-copy", &[])],
            ..tmux_off
        };
        assert_eq!(
            routes(&with_tool),
            [Route::Tool("wl-copy", &[]), Route::TmuxBuffer]
        );
    }
}
