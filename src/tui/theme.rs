//! Colours and text attributes of the chat screen. Three themes are built in (`themes/*.toml`,
//! embedded with `include_str!`): `dark` (the default), `light` and `high-contrast`. A user theme
//! is `<config dir>/themes/NAME.toml`; it holds only the keys it changes (gitui's partial
//! overrides) on top of `base` (a built-in name; by default the built-in of the same name, else
//! `dark`). This module reads theme files and nothing else; it never draws.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The names of the built-in themes, in the order `/help` and errors list them.
pub const BUILTIN: [&str; 3] = ["dark", "light", "high-contrast"];

/// The text of a built-in theme file.
fn builtin_text(name: &str) -> Option<&'static str> {
    match name {
        "dark" => Some(include_str!("../../themes/dark.toml")),
        "light" => Some(include_str!("../../themes/light.toml")),
        "high-contrast" => Some(include_str!("../../themes/high-contrast.toml")),
        _ => None,
    }
}

/// One style as a theme file writes it: every key optional, so a file can change only the
/// foreground of one element.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StyleDef {
    /// A colour name (`cyan`, `lightblue`, `darkgray`), `#rrggbb`, an index `0`–`255`, or `reset`.
    pub fg: Option<String>,
    pub bg: Option<String>,
    pub bold: Option<bool>,
    pub italic: Option<bool>,
    pub dim: Option<bool>,
    pub underline: Option<bool>,
    pub reversed: Option<bool>,
}

impl StyleDef {
    /// This definition with `over`'s keys replacing ours.
    fn merged(&self, over: &StyleDef) -> StyleDef {
        StyleDef {
            fg: over.fg.clone().or_else(|| self.fg.clone()),
            bg: over.bg.clone().or_else(|| self.bg.clone()),
            bold: over.bold.or(self.bold),
            italic: over.italic.or(self.italic),
            dim: over.dim.or(self.dim),
            underline: over.underline.or(self.underline),
            reversed: over.reversed.or(self.reversed),
        }
    }

    /// The ratatui style, or an error naming the bad colour.
    fn to_style(&self) -> Result<Style, String> {
        let color = |s: &Option<String>| -> Result<Option<Color>, String> {
            s.as_deref()
                .map(|c| Color::from_str(c).map_err(|_| format!("unknown colour {c:?}")))
                .transpose()
        };
        let mut style = Style::default();
        if let Some(fg) = color(&self.fg)? {
            style = style.fg(fg);
        }
        if let Some(bg) = color(&self.bg)? {
            style = style.bg(bg);
        }
        let flags = [
            (self.bold, Modifier::BOLD),
            (self.italic, Modifier::ITALIC),
            (self.dim, Modifier::DIM),
            (self.underline, Modifier::UNDERLINED),
            (self.reversed, Modifier::REVERSED),
        ];
        for (on, modifier) in flags {
            if on == Some(true) {
                style = style.add_modifier(modifier);
            }
        }
        Ok(style)
    }
}

/// Declares the themable elements once: the [`Theme`] fields, the file format and the merge.
macro_rules! theme_elements {
    ($($name:ident: $doc:literal,)*) => {
        /// Every style the chat screen uses.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Theme {
            $(#[doc = $doc] pub $name: Style,)*
        }

        /// A theme file: an optional base theme and any subset of the elements.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ThemeFile {
            /// The built-in theme this file changes.
            base: Option<String>,
            $($name: Option<StyleDef>,)*
        }

        impl Theme {
            /// No colours at all: the fallback if a built-in file were broken (a test checks
            /// they are not).
            fn plain() -> Theme {
                Theme { $($name: Style::default(),)* }
            }
        }

        impl ThemeFile {
            /// `self` with every element `over` sets replaced (key by key).
            fn merged(&self, over: &ThemeFile) -> ThemeFile {
                ThemeFile {
                    base: over.base.clone().or_else(|| self.base.clone()),
                    $($name: match (&self.$name, &over.$name) {
                        (Some(a), Some(b)) => Some(a.merged(b)),
                        (a, b) => b.clone().or_else(|| a.clone()),
                    },)*
                }
            }

            /// Converts to styles; a missing element is the terminal's default style.
            fn to_theme(&self) -> Result<Theme, String> {
                Ok(Theme {
                    $($name: match &self.$name {
                        Some(def) => def
                            .to_style()
                            .map_err(|e| format!("[{}]: {e}", stringify!($name)))?,
                        None => Style::default(),
                    },)*
                })
            }

            /// The names of the elements this file leaves unset.
            #[cfg(test)]
            fn missing(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$name.is_none() { out.push(stringify!($name)); })*
                out
            }
        }
    };
}

theme_elements! {
    text: "Plain text everywhere (and the screen background, if it sets one).",
    user_label: "The \"You\" label over a user turn.",
    user_text: "What the user typed.",
    assistant_label: "The model's name over an answer.",
    assistant_text: "Answer text.",
    heading: "Markdown headings in answers.",
    code: "Inline code in answers.",
    code_block: "Fenced and indented code blocks.",
    quote: "Block quotes.",
    link: "Links.",
    list_marker: "Bullets and numbers of lists.",
    image_label: "The `[img1] name 512×512` line of an attachment.",
    notice: "Informational lines in the transcript (saved, loaded, model ready).",
    error: "Error lines in the transcript and the prompt.",
    interrupted: "The mark of an answer that was stopped.",
    border: "The input box border.",
    border_busy: "The input box border while the model answers.",
    title: "Titles of the input box and overlays.",
    hint: "Key hints and placeholder text.",
    status: "The status line.",
    status_accent: "The model name in the status line.",
    progress: "The filled part of a progress bar.",
    progress_track: "The empty part of a progress bar.",
    help_key: "Command and key names in the help overlay.",
    popup: "The help overlay's background.",
}

impl Default for Theme {
    /// The built-in dark theme.
    fn default() -> Self {
        builtin("dark").unwrap_or_else(|_| Theme::plain())
    }
}

/// What went wrong finding or reading a theme.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    #[error("unknown theme {name:?}: the built-in themes are dark, light and high-contrast, or put {name}.toml in {dir}")]
    Unknown { name: String, dir: PathBuf },
    #[error("cannot read theme {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid theme {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn parse(text: &str, path: &Path) -> Result<ThemeFile, ThemeError> {
    toml::from_str(text).map_err(|e| ThemeError::Invalid {
        path: path.to_path_buf(),
        reason: e.message().to_string(),
    })
}

fn builtin_file(name: &str) -> Option<Result<ThemeFile, ThemeError>> {
    builtin_text(name).map(|text| parse(text, Path::new(&format!("themes/{name}.toml"))))
}

/// A built-in theme by name.
pub fn builtin(name: &str) -> Result<Theme, ThemeError> {
    let not_found = || ThemeError::Unknown {
        name: name.to_string(),
        dir: PathBuf::from("<config dir>/themes"),
    };
    let file = builtin_file(name).ok_or_else(not_found)??;
    file.to_theme().map_err(|reason| ThemeError::Invalid {
        path: PathBuf::from(format!("themes/{name}.toml")),
        reason,
    })
}

/// Finds theme `name`: `<themes_dir>/NAME.toml` over its base, else the built-in `name`.
pub fn load(name: &str, themes_dir: &Path) -> Result<Theme, ThemeError> {
    let path = themes_dir.join(format!("{name}.toml"));
    let user = match std::fs::read_to_string(&path) {
        Ok(text) => Some(parse(&text, &path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ThemeError::Io { path, source }),
    };
    let Some(user) = user else {
        return match builtin_file(name) {
            Some(_) => builtin(name),
            None => Err(ThemeError::Unknown {
                name: name.to_string(),
                dir: themes_dir.to_path_buf(),
            }),
        };
    };
    let base_name = user.base.clone().unwrap_or_else(|| {
        if builtin_text(name).is_some() {
            name.to_string()
        } else {
            "dark".to_string()
        }
    });
    let base = match builtin_file(&base_name) {
        Some(file) => file?,
        None => {
            return Err(ThemeError::Invalid {
                path,
                reason: format!(
                    "base {base_name:?} is not a built-in theme (dark, light, high-contrast)"
                ),
            })
        }
    };
    base.merged(&user)
        .to_theme()
        .map_err(|reason| ThemeError::Invalid { path, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_sets_every_element() {
        for name in BUILTIN {
            let file = builtin_file(name).expect("known").expect("parses");
            assert!(
                file.missing().is_empty(),
                "{name} misses {:?}",
                file.missing()
            );
            builtin(name).expect("valid colours");
        }
        assert_eq!(Theme::default(), builtin("dark").expect("dark"));
    }

    #[test]
    fn a_user_file_overrides_only_what_it_sets() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("mine.toml"),
            "base = \"light\"\n[error]\nfg = \"#ff0000\"\n",
        )
        .expect("write");
        let mine = load("mine", dir.path()).expect("load");
        let light = builtin("light").expect("light");
        assert_eq!(mine.error.fg, Some(Color::Rgb(255, 0, 0)));
        assert_eq!(mine.error.add_modifier, light.error.add_modifier);
        assert_eq!(mine.user_label, light.user_label);
    }

    #[test]
    fn a_user_file_named_like_a_builtin_changes_that_builtin() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("dark.toml"), "[hint]\nitalic = true\n").expect("write");
        let dark = load("dark", dir.path()).expect("load");
        assert!(dark.hint.add_modifier.contains(Modifier::ITALIC));
        assert_eq!(dark.error, builtin("dark").expect("dark").error);
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = load("nope", dir.path()).expect_err("unknown");
        assert!(err.to_string().contains("high-contrast"), "{err}");
        std::fs::write(dir.path().join("bad.toml"), "[eror]\nfg = \"red\"\n").expect("write");
        let err = load("bad", dir.path()).expect_err("typo");
        assert!(err.to_string().contains("bad.toml"), "{err}");
        std::fs::write(dir.path().join("ugly.toml"), "[error]\nfg = \"redd\"\n").expect("write");
        let err = load("ugly", dir.path()).expect_err("colour");
        assert!(err.to_string().contains("redd"), "{err}");
    }
}
