//! Display windows: what the user asks for (`40,400`, `lung`) and what was applied.
//!
//! A [`Window`] is a centre and width in the units after the modality rescale (Hounsfield units
//! for CT), applied with the LINEAR function of DICOM PS3.3 C.11.2.1.2. The presets are the
//! Radiopaedia values issue 16 lists.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Named windows (centre, width), issue 16.
pub const PRESETS: [(&str, f64, f64); 8] = [
    ("brain", 40.0, 80.0),
    ("subdural", 75.0, 215.0),
    ("stroke", 40.0, 40.0),
    ("lung", -600.0, 1500.0),
    ("mediastinum", 50.0, 350.0),
    ("abdomen", 50.0, 400.0),
    ("liver", 30.0, 150.0),
    ("bone", 400.0, 1800.0),
];

/// A window asked for by the user: `C,W` or a preset name. Written back (Display, serde) the
/// way it was given, so a saved session keeps `lung` rather than `-600,1500`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Window {
    /// Centre, in rescaled units.
    pub center: f64,
    /// Width, at least 1 (LINEAR needs `w - 1 >= 0`).
    pub width: f64,
    /// The preset this came from, if any (an index into [`PRESETS`]).
    preset: Option<usize>,
}

impl Window {
    /// A window from numbers; `None` unless both are finite and the width is at least 1.
    pub fn new(center: f64, width: f64) -> Option<Self> {
        (center.is_finite() && width.is_finite() && width >= 1.0).then_some(Self {
            center,
            width,
            preset: None,
        })
    }

    /// A preset by name (case-insensitive).
    pub fn preset(name: &str) -> Option<Self> {
        let i = PRESETS
            .iter()
            .position(|(n, _, _)| n.eq_ignore_ascii_case(name))?;
        let (_, center, width) = PRESETS[i];
        Some(Self {
            center,
            width,
            preset: Some(i),
        })
    }

    /// The preset's name, if this window is one.
    pub fn preset_name(&self) -> Option<&'static str> {
        self.preset.map(|i| PRESETS[i].0)
    }

    /// The list of presets for help texts: `brain (40,80), subdural (75,215), ...`.
    pub fn presets_help() -> String {
        PRESETS
            .iter()
            .map(|(n, c, w)| format!("{n} ({c},{w})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a window string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid window {given:?}: {reason}")]
pub struct WindowParseError {
    given: String,
    reason: String,
}

impl FromStr for Window {
    type Err = WindowParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| WindowParseError {
            given: s.to_string(),
            reason,
        };
        let text = s.trim();
        if let Some(w) = Self::preset(text) {
            return Ok(w);
        }
        let Some((c, w)) = text.split_once(',') else {
            return Err(bad(format!(
                "use CENTER,WIDTH (e.g. 40,400 or -600,1500) or a preset: {}",
                Self::presets_help()
            )));
        };
        let number = |t: &str, what: &str| {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(format!("the {what} {:?} is not a number", t.trim())))
        };
        let (center, width) = (number(c, "centre")?, number(w, "width")?);
        Self::new(center, width)
            .ok_or_else(|| bad(format!("the width must be at least 1, not {width}")))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.preset_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{},{}", self.center, self.width),
        }
    }
}

impl TryFrom<String> for Window {
    type Error = WindowParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Window> for String {
    fn from(w: Window) -> Self {
        w.to_string()
    }
}

/// The VOI LUT function (0028,1056), PS3.3 C.11.2.1.2-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VoiFunction {
    /// `c' = c - 0.5, w' = w - 1`, clipped linear ramp (the default).
    Linear,
    /// `clamp((v - c) / w + 0.5)`.
    LinearExact,
    /// `1 / (1 + exp(-4 (v - c) / w))`.
    Sigmoid,
}

impl VoiFunction {
    /// The DICOM name; unknown names read as LINEAR, the default.
    pub fn from_dicom(name: &str) -> Self {
        match name.trim() {
            "LINEAR_EXACT" => Self::LinearExact,
            "SIGMOID" => Self::Sigmoid,
            _ => Self::Linear,
        }
    }

    /// The DICOM name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "LINEAR",
            Self::LinearExact => "LINEAR_EXACT",
            Self::Sigmoid => "SIGMOID",
        }
    }
}

/// Where the applied window came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "window")]
pub enum WindowSource {
    /// The user's window (`--window`, the TUI, a session).
    Option(Window),
    /// The file's first WindowCenter/WindowWidth.
    File,
    /// The frame's minimum to maximum, as LINEAR_EXACT.
    MinMax,
}

/// The window a greyscale rendering used: enough to say on screen what the model saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AppliedWindow {
    /// Centre.
    pub center: f64,
    /// Width (0 for a constant frame under min-max).
    pub width: f64,
    /// The VOI function.
    pub function: VoiFunction,
    /// Where it came from.
    pub source: WindowSource,
}

impl fmt::Display for AppliedWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, w) = (self.center, self.width);
        match self.source {
            WindowSource::Option(win) => match win.preset_name() {
                Some(name) => write!(f, "{name} ({c},{w})"),
                None => write!(f, "{c},{w}"),
            },
            WindowSource::File => match self.function {
                VoiFunction::Linear => write!(f, "{c},{w} (from the file)"),
                other => write!(f, "{c},{w} {} (from the file)", other.as_str()),
            },
            WindowSource::MinMax => write!(f, "{c},{w} (min-max)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_presets_and_refuses_the_rest() {
        let ok = [
            ("40,400", 40.0, 400.0, "40,400"),
            ("-600,1500", -600.0, 1500.0, "-600,1500"),
            (" -600.5 , 1500 ", -600.5, 1500.0, "-600.5,1500"),
            ("lung", -600.0, 1500.0, "lung"),
            ("Bone", 400.0, 1800.0, "bone"),
            ("40,1", 40.0, 1.0, "40,1"),
        ];
        for (text, c, w, shown) in ok {
            let win: Window = text.parse().expect(text);
            assert_eq!((win.center, win.width), (c, w), "{text}");
            assert_eq!(win.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<Window>().expect("round trip"), win, "{text}");
        }
        for bad in [
            "", "40", "40,0", "40,0.5", "40,-10", "a,b", "40,400,1", "lungs", "nan,4", "40,inf",
        ] {
            let err = bad.parse::<Window>().expect_err(bad).to_string();
            assert!(err.contains("invalid window"), "{bad}: {err}");
        }
        let err = "lungs".parse::<Window>().expect_err("name").to_string();
        assert!(err.contains("lung (-600,1500)"), "{err}");
    }

    #[test]
    fn presets_are_the_issue_values() {
        let p = |n: &str| Window::preset(n).map(|w| (w.center, w.width));
        assert_eq!(p("brain"), Some((40.0, 80.0)));
        assert_eq!(p("subdural"), Some((75.0, 215.0)));
        assert_eq!(p("stroke"), Some((40.0, 40.0)));
        assert_eq!(p("lung"), Some((-600.0, 1500.0)));
        assert_eq!(p("mediastinum"), Some((50.0, 350.0)));
        assert_eq!(p("abdomen"), Some((50.0, 400.0)));
        assert_eq!(p("liver"), Some((30.0, 150.0)));
        assert_eq!(p("bone"), Some((400.0, 1800.0)));
    }

    #[test]
    fn serde_keeps_the_written_form() {
        let w: Window = "lung".parse().expect("lung");
        assert_eq!(serde_json::to_string(&w).expect("json"), "\"lung\"");
        let back: Window = serde_json::from_str("\"-600,1500\"").expect("json");
        assert_eq!((back.center, back.width), (-600.0, 1500.0));
        assert!(serde_json::from_str::<Window>("\"0,0\"").is_err());
    }
}
