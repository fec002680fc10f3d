//! The slash commands: ONE table (name, arguments, help) that drives the help overlay, Tab
//! completion and validation (aichat's `REPL_COMMANDS`), and the parser from a typed line to a
//! [`Slash`]. Pure: no IO, no state.

use std::path::PathBuf;

/// What an argument completes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complete {
    Nothing,
    /// Image files and directories.
    ImagePath,
    /// Any file or directory.
    Path,
    /// `7b`, `34b`, or a directory.
    Model,
    /// A `/set` key.
    SetKey,
    /// A saved session's name.
    Session,
}

/// Whether a command takes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    None,
    Required(Complete),
    Optional(Complete),
}

/// One row of the command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// The argument as `/help` shows it.
    pub args: &'static str,
    pub help: &'static str,
    pub arg: Arg,
}

/// Every slash command, in the order `/help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "image",
        aliases: &["img"],
        args: "PATH [--window W] [--frame N]",
        help: "attach an image to the next message (repeat for several); DICOM: window (C,W or lung, brain, bone…) and frame; again with a new window re-windows it",
        arg: Arg::Required(Complete::ImagePath),
    },
    CommandSpec {
        name: "view",
        aliases: &[],
        args: "[N]",
        help: "show image N (the last by default) on the whole screen; Tab: what the model sees; DICOM: 1-8 presets, arrows re-window it",
        arg: Arg::Optional(Complete::Nothing),
    },
    CommandSpec {
        name: "detach",
        aliases: &[],
        args: "[N]",
        help: "remove attached image N (the last by default)",
        arg: Arg::Optional(Complete::Nothing),
    },
    CommandSpec {
        name: "model",
        aliases: &[],
        args: "7b|34b|REPO|PATH",
        help: "switch model; the conversation stays",
        arg: Arg::Required(Complete::Model),
    },
    CommandSpec {
        name: "compare",
        aliases: &[],
        args: "[A B]",
        help: "answer the last question with two models side by side (default 7b 34b)",
        arg: Arg::Optional(Complete::Model),
    },
    CommandSpec {
        name: "clear",
        aliases: &["new"],
        args: "",
        help: "start a new conversation",
        arg: Arg::None,
    },
    CommandSpec {
        name: "drop",
        aliases: &[],
        args: "N",
        help: "remove the N oldest turns from the conversation (they leave the prompt; saved)",
        arg: Arg::Required(Complete::Nothing),
    },
    CommandSpec {
        name: "regen",
        aliases: &["retry"],
        args: "",
        help: "ask the last question again",
        arg: Arg::None,
    },
    CommandSpec {
        name: "set",
        aliases: &[],
        args: "KEY VALUE",
        help: "temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed; alone: show",
        arg: Arg::Optional(Complete::SetKey),
    },
    CommandSpec {
        name: "save",
        aliases: &[],
        args: "[NAME]",
        help: "name the conversation (it is saved after every turn anyway; the sessions of `ask --session`)",
        arg: Arg::Optional(Complete::Session),
    },
    CommandSpec {
        name: "sessions",
        aliases: &[],
        args: "",
        help: "list the saved conversations, most recent first",
        arg: Arg::None,
    },
    CommandSpec {
        name: "load",
        aliases: &[],
        args: "NAME",
        help: "load a saved conversation",
        arg: Arg::Required(Complete::Session),
    },
    CommandSpec {
        name: "export",
        aliases: &[],
        args: "FILE.md",
        help: "write the conversation as Markdown with images and settings",
        arg: Arg::Required(Complete::Path),
    },
    CommandSpec {
        name: "copy",
        aliases: &[],
        args: "[N|code]",
        help: "copy the last answer (or answer N, or the last code block) to the clipboard",
        arg: Arg::Optional(Complete::Nothing),
    },
    CommandSpec {
        name: "help",
        aliases: &["?"],
        args: "",
        help: "show keys and commands",
        arg: Arg::None,
    },
    CommandSpec {
        name: "quit",
        aliases: &["exit", "q"],
        args: "",
        help: "leave huatuo",
        arg: Arg::None,
    },
];

/// The keys `/set` accepts, as the flags of `ask` name them (with `_`).
pub const SET_KEYS: [&str; 6] = [
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "max_new_tokens",
    "seed",
];

/// A generation setting with its new value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    Temperature(f32),
    TopK(usize),
    TopP(f32),
    RepetitionPenalty(f32),
    MaxNewTokens(usize),
    Seed(u64),
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Slash {
    /// The raw argument; [`super::paste::argument_paths`] turns it into paths.
    Image(String),
    /// Remove attached image N (1-based); `None`: the last.
    Detach(Option<usize>),
    /// Show image N of the conversation (1-based); `None`: the last.
    View(Option<usize>),
    Model(String),
    /// Two model sources.
    Compare(Vec<String>),
    Clear,
    /// Remove this many of the oldest turns.
    Drop(usize),
    Regen,
    /// `None` shows the current settings.
    Set(Option<Setting>),
    Save(Option<String>),
    Sessions,
    Load(String),
    Export(PathBuf),
    Copy(CopyWhat),
    Help,
    Quit,
}

/// What `/copy` copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyWhat {
    LastAnswer,
    /// The answer of turn N (1-based).
    Answer(usize),
    /// The last fenced code block of the answers.
    Code,
}

/// The table row of `name` (or an alias).
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// `/name ARGS` as `/help` and usage errors show it.
pub fn usage(spec: &CommandSpec) -> String {
    if spec.args.is_empty() {
        format!("/{}", spec.name)
    } else {
        format!("/{} {}", spec.name, spec.args)
    }
}

/// Parses a line that starts with `/`. The error is one line saying what to type instead.
pub fn parse(line: &str) -> Result<Slash, String> {
    let line = line.trim();
    let body = line.strip_prefix('/').unwrap_or(line);
    let (name, arg) = match body.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (body, ""),
    };
    let Some(spec) = find(name) else {
        if name.contains(['/', '.']) {
            return Err(format!(
                "/{name} is not a command: attach an image with /image PATH, or start the line with // to send it as text"
            ));
        }
        let first = name.chars().next();
        let close: Vec<String> = COMMANDS
            .iter()
            .filter(|c| first.is_some_and(|f| c.name.starts_with(f)))
            .map(|c| format!("/{}", c.name))
            .collect();
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", close.join(", "))
        };
        return Err(format!("unknown command /{name}{hint}; /help lists them"));
    };
    let usage_error = || format!("usage: {} — {}", usage(spec), spec.help);
    match (spec.arg, arg.is_empty()) {
        (Arg::None, false) => return Err(format!("/{} takes no argument", spec.name)),
        (Arg::Required(_), true) => return Err(usage_error()),
        _ => {}
    }
    let arg = arg.to_string();
    Ok(match spec.name {
        "image" => Slash::Image(arg),
        "view" if arg.is_empty() => Slash::View(None),
        "view" => match arg.trim_start_matches("img").parse::<usize>() {
            Ok(n) if n > 0 => Slash::View(Some(n)),
            _ => return Err(format!("/view {arg:?}: give an image's number (1 or more, as [img1])")),
        },
        "detach" if arg.is_empty() => Slash::Detach(None),
        "detach" => match arg.parse::<usize>() {
            Ok(n) if n > 0 => Slash::Detach(Some(n)),
            _ => {
                return Err(format!(
                    "/detach {arg:?}: give the number of an attached image (1 or more)"
                ))
            }
        },
        "model" => Slash::Model(arg),
        "compare" if arg.is_empty() => Slash::Compare(vec!["7b".into(), "34b".into()]),
        "compare" => match super::paste::split_words(&arg) {
            Some(models) if models.len() == 2 => Slash::Compare(
                models
                    .iter()
                    .map(|m| super::paste::expand_home(m).display().to_string())
                    .collect(),
            ),
            _ => return Err(
                "usage: /compare A B — two models (7b, 34b, a repo id or a checkpoint directory)"
                    .into(),
            ),
        },
        "clear" => Slash::Clear,
        "regen" => Slash::Regen,
        "drop" => match arg.parse::<usize>() {
            Ok(n) if n > 0 => Slash::Drop(n),
            _ => {
                return Err(format!(
                    "/drop {arg:?}: give how many of the oldest turns to drop (1 or more)"
                ))
            }
        },
        "set" if arg.is_empty() => Slash::Set(None),
        "set" => Slash::Set(Some(parse_setting(&arg)?)),
        "save" if arg.is_empty() => Slash::Save(None),
        "save" => Slash::Save(Some(arg)),
        "load" => Slash::Load(arg),
        "sessions" => Slash::Sessions,
        "export" => Slash::Export(super::paste::expand_home(&arg)),
        "copy" if arg.is_empty() => Slash::Copy(CopyWhat::LastAnswer),
        "copy" if arg == "code" => Slash::Copy(CopyWhat::Code),
        "copy" => match arg.parse::<usize>() {
            Ok(n) if n > 0 => Slash::Copy(CopyWhat::Answer(n)),
            _ => {
                return Err(format!(
                    "/copy {arg:?}: give an answer's number (1 or more), or `code` for the last code block"
                ))
            }
        },
        "help" => Slash::Help,
        _ => Slash::Quit,
    })
}

/// `KEY VALUE` of `/set`; `-` and `_` are the same in keys.
fn parse_setting(arg: &str) -> Result<Setting, String> {
    let (key, value) = match arg.split_once(char::is_whitespace) {
        Some((k, v)) => (k.replace('-', "_"), v.trim()),
        None => {
            return Err(format!(
                "usage: /set KEY VALUE — KEY is one of {}",
                SET_KEYS.join(", ")
            ))
        }
    };
    let bad = |what: &str| format!("/set {key}: {value:?} is not {what}");
    let float = || value.parse::<f32>().map_err(|_| bad("a number"));
    let count = || value.parse::<usize>().map_err(|_| bad("a whole number"));
    Ok(match key.as_str() {
        "temperature" => Setting::Temperature(float()?),
        "top_k" => Setting::TopK(count()?),
        "top_p" => Setting::TopP(float()?),
        "repetition_penalty" => Setting::RepetitionPenalty(float()?),
        "max_new_tokens" => Setting::MaxNewTokens(count()?),
        "seed" => Setting::Seed(value.parse().map_err(|_| bad("a whole number"))?),
        _ => {
            return Err(format!(
                "/set: unknown setting {key:?}; use one of {}",
                SET_KEYS.join(", ")
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses() {
        let cases: &[(&str, Slash)] = &[
            ("/image a b.png", Slash::Image("a b.png".into())),
            ("/model 34b", Slash::Model("34b".into())),
            ("/detach", Slash::Detach(None)),
            ("/view", Slash::View(None)),
            ("/view 2", Slash::View(Some(2))),
            ("/detach 2", Slash::Detach(Some(2))),
            ("/clear", Slash::Clear),
            ("/compare", Slash::Compare(vec!["7b".into(), "34b".into()])),
            (
                "/compare 7b org/name",
                Slash::Compare(vec!["7b".into(), "org/name".into()]),
            ),
            ("/new", Slash::Clear),
            ("/regen", Slash::Regen),
            ("/set", Slash::Set(None)),
            (
                "/set temperature 0",
                Slash::Set(Some(Setting::Temperature(0.0))),
            ),
            ("/set top-k 5", Slash::Set(Some(Setting::TopK(5)))),
            ("/set seed 7", Slash::Set(Some(Setting::Seed(7)))),
            ("/save", Slash::Save(None)),
            ("/save case-12", Slash::Save(Some("case-12".into()))),
            ("/load case-12", Slash::Load("case-12".into())),
            ("/export out.md", Slash::Export("out.md".into())),
            ("/copy", Slash::Copy(CopyWhat::LastAnswer)),
            ("/copy 2", Slash::Copy(CopyWhat::Answer(2))),
            ("/copy code", Slash::Copy(CopyWhat::Code)),
            ("/help", Slash::Help),
            ("/quit", Slash::Quit),
            ("  /q  ", Slash::Quit),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).as_ref(), Ok(want), "{line}");
        }
    }

    #[test]
    fn errors_say_what_to_type() {
        let cases = [
            ("/imgae x", "unknown command /imgae (did you mean /image?)"),
            ("/image", "usage: /image PATH"),
            ("/clear now", "/clear takes no argument"),
            ("/set temperature", "usage: /set KEY VALUE"),
            ("/set temp 1", "unknown setting \"temp\""),
            ("/set top_k many", "\"many\" is not a whole number"),
            ("/load", "usage: /load NAME"),
            ("/tmp/x.txt what", "start the line with //"),
        ];
        for (line, want) in cases {
            let err = parse(line).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn every_command_has_help_and_unique_names() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        names.extend(COMMANDS.iter().flat_map(|c| c.aliases.iter().copied()));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        assert!(COMMANDS.iter().all(|c| !c.help.is_empty()));
    }
}
