//! Recognising file paths in pasted or typed text: what terminals produce when a file is
//! dropped on them (quoted with `'…'` or `"…"`, spaces escaped as `\ `, `file://` URLs with
//! `%20`, several files separated by spaces or newlines) and `~/…`. Only reads file metadata;
//! never opens a file.

use std::path::{Path, PathBuf};

/// File name extensions of images the engine can read.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "dcm", "dicom",
];

/// Whether `path` names an image by its extension (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// `~` and `~/…` expanded to the home directory.
pub fn expand_home(path: &str) -> PathBuf {
    expand_tilde(&expand_vars(path))
}

/// `$VAR` and `${VAR}` replaced by the environment's value, as a shell would (an unset
/// variable is left as written, so the error names what was typed).
pub fn expand_vars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match std::env::var(name).ok().filter(|_| !name.is_empty()) {
            Some(value) => {
                out.push_str(&value);
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn expand_tilde(path: &str) -> PathBuf {
    let home = || directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    if path == "~" {
        if let Some(h) = home() {
            return h;
        }
    }
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(h) = home() {
            return h.join(rest);
        }
    }
    PathBuf::from(path)
}

/// Splits text into shell-like words: quotes group, a backslash escapes the next character,
/// and `file://` URLs become paths. `None` if a quote is left open.
pub fn split_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '\'' | '"' => {
                in_word = true;
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == c {
                        closed = true;
                        break;
                    }
                    word.push(q);
                }
                if !closed {
                    return None;
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words.into_iter().map(|w| from_file_url(&w)).collect())
}

/// `file:///a%20b.png` → `/a b.png`; anything else unchanged.
fn from_file_url(word: &str) -> String {
    let Some(rest) = word.strip_prefix("file://") else {
        return word.to_string();
    };
    // `file://host/path`: keep the path.
    let path = match rest.find('/') {
        Some(i) => &rest[i..],
        None => rest,
    };
    percent_decode(path)
}

/// Decodes `%XX` escapes (invalid UTF-8 becomes U+FFFD).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The image files `text` names, if it is nothing but one or more paths of existing image
/// files (a drop or a paste of paths); `None` for ordinary text.
pub fn image_paths(text: &str) -> Option<Vec<PathBuf>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    // A whole line that is a path with unescaped spaces (some terminals drop them so).
    let whole = expand_home(text);
    if !text.contains('\n') && is_image_file(&whole) {
        return Some(vec![whole]);
    }
    let words = split_words(text)?;
    if words.is_empty() {
        return None;
    }
    let paths: Vec<PathBuf> = words.iter().map(|w| expand_home(w)).collect();
    paths.iter().all(|p| is_image_file(p)).then_some(paths)
}

/// An existing regular file with an image extension.
pub fn is_image_file(path: &Path) -> bool {
    (has_image_extension(path) && path.is_file()) || is_extensionless_dicom(path)
}

/// A file without an extension that is DICOM by its first bytes (`IM000001` from a scanner).
pub fn is_extensionless_dicom(path: &Path) -> bool {
    if path.extension().is_some() || !path.is_file() {
        return false;
    }
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    crate::dicom::is_dicom(&head[..n])
}

/// The paths an `/image` argument names: the whole argument if it is a file, else its words.
pub fn argument_paths(arg: &str) -> Vec<PathBuf> {
    let arg = arg.trim();
    let whole = expand_home(arg);
    if whole.is_file() {
        return vec![whole];
    }
    match split_words(arg) {
        Some(words) if !words.is_empty() => words.iter().map(|w| expand_home(w)).collect(),
        _ => vec![whole],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_home_expand_in_paths() {
        // A variable no other test uses.
        std::env::set_var("HUATUO_TEST_SCANS", "/data/scans");
        assert_eq!(
            expand_home("$HUATUO_TEST_SCANS/ct.dcm"),
            PathBuf::from("/data/scans/ct.dcm")
        );
        assert_eq!(
            expand_home("${HUATUO_TEST_SCANS}x/a.png"),
            PathBuf::from("/data/scansx/a.png")
        );
        assert_eq!(
            expand_home("$HUATUO_NOT_SET_ANYWHERE/a.png"),
            PathBuf::from("$HUATUO_NOT_SET_ANYWHERE/a.png")
        );
        assert_eq!(expand_home("price$"), PathBuf::from("price$"));
        if let Some(home) = directories::BaseDirs::new() {
            assert_eq!(expand_home("~/a.png"), home.home_dir().join("a.png"));
        }
    }

    #[test]
    fn words_handle_quotes_escapes_and_urls() {
        let w = split_words(r#"'/a b/c.png' "/d e.jpg" /f\ g.png file:///h%20i.png"#);
        assert_eq!(
            w.expect("closed"),
            ["/a b/c.png", "/d e.jpg", "/f g.png", "/h i.png"]
        );
        assert_eq!(split_words("'open"), None);
        assert_eq!(split_words("  ").expect("ok"), Vec::<String>::new());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%e4%b8%ad%zz%"), "中%zz%");
    }

    #[test]
    fn only_existing_images_are_paths() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("my scan.png");
        let b = dir.path().join("b.JPG");
        let txt = dir.path().join("notes.txt");
        for p in [&a, &b, &txt] {
            std::fs::write(p, b"x").expect("write");
        }
        let quoted = format!("'{}'", a.display());
        assert_eq!(image_paths(&quoted), Some(vec![a.clone()]));
        let escaped = format!(
            "{} {}",
            a.display().to_string().replace(' ', "\\ "),
            b.display()
        );
        assert_eq!(image_paths(&escaped), Some(vec![a.clone(), b.clone()]));
        assert_eq!(image_paths(&a.display().to_string()), Some(vec![a.clone()]));
        assert_eq!(image_paths(&txt.display().to_string()), None);
        assert_eq!(image_paths("what is this?"), None);
        assert_eq!(image_paths(&format!("{} hello", b.display())), None);
        assert_eq!(argument_paths(&a.display().to_string()), vec![a]);
    }
}
