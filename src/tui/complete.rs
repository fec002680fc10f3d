//! Tab completion of a prompt that starts with `/`: command names from the command table,
//! then each command's argument by its [`Complete`] kind (files and directories, `7b`/`34b`,
//! `/set` keys, saved session names). Reads directory listings; changes nothing.

use std::path::Path;

use crate::chat::session::Store;

use super::commands::{self, Arg, Complete, COMMANDS, SET_KEYS};
use super::paste;

/// What can replace the text from byte `from` to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub from: usize,
    pub candidates: Vec<String>,
}

/// Completions for `text` (the cursor at its end), or `None` when there is nothing to do.
pub fn complete(text: &str, sessions: &Store) -> Option<Found> {
    if !text.starts_with('/') || text.contains('\n') {
        return None;
    }
    let Some((name, arg)) = text[1..].split_once(' ') else {
        let mut candidates: Vec<String> = COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(&text[1..]))
            .map(|c| match c.arg {
                Arg::None => format!("/{}", c.name),
                _ => format!("/{} ", c.name),
            })
            .collect();
        candidates.sort();
        return (!candidates.is_empty()).then_some(Found {
            from: 0,
            candidates,
        });
    };
    let spec = commands::find(name)?;
    let kind = match spec.arg {
        Arg::None => return None,
        Arg::Required(k) | Arg::Optional(k) => k,
    };
    let from = text.len() - arg.len();
    let mut candidates = match kind {
        Complete::Nothing => Vec::new(),
        Complete::ImagePath => paths(arg, true),
        Complete::Path => paths(arg, false),
        Complete::Model => {
            let mut c: Vec<String> = ["7b", "34b"]
                .iter()
                .filter(|m| m.starts_with(arg))
                .map(|m| m.to_string())
                .collect();
            if arg.contains('/') || arg.starts_with('.') || arg.starts_with('~') {
                c = paths(arg, true)
                    .into_iter()
                    .filter(|p| p.ends_with('/'))
                    .collect();
            }
            c
        }
        Complete::SetKey if !arg.contains(' ') => SET_KEYS
            .iter()
            .filter(|k| k.starts_with(arg))
            .map(|k| format!("{k} "))
            .collect(),
        Complete::SetKey => Vec::new(),
        Complete::Session => sessions
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with(arg))
            .collect(),
    };
    candidates.sort();
    candidates.dedup();
    (!candidates.is_empty()).then_some(Found { from, candidates })
}

/// Files and directories (with a trailing `/`) that complete `typed`; `images` keeps only
/// image files. Hidden entries only when the typed name starts with `.`.
fn paths(typed: &str, images: bool) -> Vec<String> {
    let (dir_typed, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let dir = if dir_typed.is_empty() {
        Path::new(".").to_path_buf()
    } else {
        paste::expand_home(dir_typed)
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            let is_dir = e.path().is_dir();
            if is_dir {
                Some(format!("{dir_typed}{name}/"))
            } else if !images
                || paste::has_image_extension(Path::new(&name))
                || paste::is_extensionless_dicom(&e.path())
            {
                Some(format!("{dir_typed}{name}"))
            } else {
                None
            }
        })
        .collect()
}

/// The longest common prefix of the candidates (on character boundaries).
pub fn common_prefix(candidates: &[String]) -> String {
    let Some(first) = candidates.first() else {
        return String::new();
    };
    let mut end = first.len();
    for c in &candidates[1..] {
        end = first
            .char_indices()
            .zip(c.chars())
            .find(|((_, a), b)| a != b)
            .map_or(end.min(c.len()), |((i, _), _)| i.min(end));
    }
    first[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new("/nonexistent/sessions".into())
    }

    #[test]
    fn command_names() {
        let f = complete("/s", &store()).expect("some");
        assert_eq!(f.candidates, ["/save ", "/sessions", "/set "]);
        assert_eq!(common_prefix(&f.candidates), "/s");
        let f = complete("/cl", &store()).expect("one");
        assert_eq!(f.candidates, ["/clear"]);
        assert!(complete("/zz", &store()).is_none());
        assert!(complete("hello", &store()).is_none());
    }

    #[test]
    fn arguments_by_kind() {
        let f = complete("/set t", &store()).expect("keys");
        assert_eq!(f.from, 5);
        assert_eq!(f.candidates, ["temperature ", "top_k ", "top_p "]);
        let f = complete("/model 3", &store()).expect("model");
        assert_eq!(f.candidates, ["34b"]);
        assert!(complete("/clear x", &store()).is_none());
    }

    #[test]
    fn files_directories_and_sessions() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::create_dir(d.join("scans")).expect("dir");
        std::fs::write(d.join("scan1.png"), b"x").expect("w");
        std::fs::write(d.join("scan2.txt"), b"x").expect("w");
        std::fs::write(d.join(".hidden.png"), b"x").expect("w");
        let base = format!("{}/", d.display());
        let f = complete(&format!("/image {base}sc"), &store()).expect("files");
        assert_eq!(
            f.candidates,
            [format!("{base}scan1.png"), format!("{base}scans/")]
        );
        let f = complete(&format!("/export {base}sc"), &store()).expect("any file");
        assert_eq!(f.candidates.len(), 3);
        let sessions = Store::new(d.join("sessions"));
        let mut s = crate::chat::session::Session::new("case-1");
        sessions.save(&mut s).expect("save");
        let f = complete("/load ca", &sessions).expect("sessions");
        assert_eq!(f.candidates, ["case-1"]);
    }

    #[test]
    fn common_prefix_is_char_safe() {
        let c = vec!["肺部a".to_string(), "肺部b".to_string()];
        assert_eq!(common_prefix(&c), "肺部");
        assert_eq!(common_prefix(&["ab".into(), "a".into()]), "a");
    }
}
