//! Text conventions that the prompt template (`chat`) and the tokenizer and network (`model`)
//! share, so that neither has to import the other: Python's notion of whitespace (the
//! reference strips with `str.strip()`, slightly wider than Rust's [`char::is_whitespace`]) and
//! LLaVA's image placeholder and sentinel id (`llava/constants.py`).

/// The image placeholder of the reference (`llava/constants.py` `DEFAULT_IMAGE_TOKEN`).
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// The sentinel id that stands for one image's features in a prompt
/// (`llava/constants.py` `IMAGE_TOKEN_INDEX`, reference §3.2).
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// `n` and the noun in the right number: `1 image`, `2 images`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// An error and its causes on one line, joined with ": " as anyhow's `{:#}` does, but without
/// saying a cause twice: an error whose own message already quotes its source (`cannot read
/// X: permission denied`) is not followed by that source again. Newlines become spaces.
pub fn error_line<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut out = String::new();
    for cause in chain {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out.replace('\n', " ")
}

/// Python's `str.isspace()` for one character: Rust's `char::is_whitespace` (Unicode
/// `White_Space`) plus the information separators U+001C..U+001F, which Python also
/// counts (bidirectional class B/S).
pub fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.strip()` (no argument): trims [`is_py_whitespace`] characters at both ends.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_whitespace)
}

/// Python's `s.lstrip()` (no argument).
pub fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(is_py_whitespace)
}

/// Python's `s.rstrip()` (no argument).
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_whitespace)
}

#[cfg(test)]
mod tests {
    /// A cause that its error already quotes is said once; new causes are joined with ": ".
    #[test]
    fn error_lines_never_say_a_cause_twice() {
        #[derive(Debug)]
        struct E(String, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let io = E("permission denied".into(), None);
        let quoting = E(
            "cannot read image /x/a.png: permission denied".into(),
            Some(Box::new(io)),
        );
        let chain = |e: &E| {
            let mut v: Vec<&(dyn std::error::Error + 'static)> = vec![];
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(c) = cur {
                v.push(c);
                cur = c.source();
            }
            super::error_line(v)
        };
        assert_eq!(
            chain(&quoting),
            "cannot read image /x/a.png: permission denied"
        );
        let outer = E(
            "cannot load model m".into(),
            Some(Box::new(E("no\nconfig".into(), None))),
        );
        assert_eq!(chain(&outer), "cannot load model m: no config");
    }

    #[test]
    fn counts_take_the_right_number() {
        assert_eq!(super::count(1, "image", "images"), "1 image");
        assert_eq!(super::count(0, "image", "images"), "0 images");
        assert_eq!(super::count(2, "turn", "turns"), "2 turns");
    }

    use super::*;

    #[test]
    fn python_whitespace_set() {
        // Python 3.11: [c for c in range(0x110000) if chr(c).isspace()]
        let python: Vec<u32> = [
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ]
        .to_vec();
        let ours: Vec<u32> = (0..=0x10ffffu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_py_whitespace(c))
            .map(|c| c as u32)
            .collect();
        assert_eq!(ours, python);
    }

    #[test]
    fn strip_like_python() {
        assert_eq!(py_strip(" \x1c a b\u{3000}\n"), "a b");
        assert_eq!(py_strip("\u{200b}a"), "\u{200b}a"); // zero-width space is not whitespace
        assert_eq!(py_lstrip("  a  "), "a  ");
        assert_eq!(py_rstrip("  a  "), "  a");
        assert_eq!(py_strip(" \t\n"), "");
    }
}
