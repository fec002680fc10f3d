//! The HuatuoGPT-Vision prompt template (reference §3.1, §3.4), as plain strings.
//!
//! The reference CLI (`cli.py`) builds no single prompt string: it tokenizes a list of
//! *segments* one by one and concatenates the ids (reference §3.2). This module produces
//! exactly those segments; [`crate::model::tokenizer::Tokenizer::prompt_ids`] turns them into
//! ids. Everything here is pure: no tokenizer, no IO.
//!
//! `strip()` in the reference is Python's `str.strip()`, whose notion of whitespace is
//! slightly wider than Rust's [`char::is_whitespace`]; [`py_strip`] reproduces it.

use serde::{Deserialize, Serialize};

/// The image placeholder of the reference (`llava/constants.py` `DEFAULT_IMAGE_TOKEN`).
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// What `cli.py` `input_moderation` removes from user text, in its order (reference §3.1).
const BANNED: [&str; 3] = ["<image>", "<s>", "</s>"];

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

/// User-text sanitation of `cli.py` `input_moderation` (reference §3.1): removes every
/// `<image>`, then every `<s>`, then every `</s>`, like successive `str.replace` calls (so
/// `"<<image>s>"` becomes `"<s>"` and then `""`).
pub fn sanitize_user_text(text: &str) -> String {
    let mut out = text.to_owned();
    for banned in BANNED {
        if out.contains(banned) {
            out = out.replace(banned, "");
        }
    }
    out
}

/// `cli.py` `insert_image_placeholder` (reference §3.1): prepends `"<image>\n"` once per
/// image of this turn.
pub fn with_image_placeholders(text: &str, n_images: usize) -> String {
    let mut out = String::with_capacity(text.len() + n_images * (IMAGE_PLACEHOLDER.len() + 1));
    for _ in 0..n_images {
        out.push_str(IMAGE_PLACEHOLDER);
        out.push('\n');
    }
    out.push_str(text);
    out
}

/// One completed round of a conversation, as the reference keeps it in `self.history`
/// (reference §3.1, §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The sanitized user text with this round's `<image>\n` placeholders in front, not
    /// stripped (it is stripped when the prompt is built).
    pub user: String,
    /// The model's answer as streamed, **not** stripped.
    pub answer: String,
}

/// One separately tokenized piece of the prompt (reference §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A user segment: split on `<image>`, each chunk tokenized alone, joined with the image
    /// sentinel (`tokenizer_image_token`).
    User(String),
    /// An assistant segment of a past round: tokenized whole (with `truncation=True`).
    Assistant(String),
}

impl Segment {
    /// The segment's text.
    pub fn text(&self) -> &str {
        match self {
            Segment::User(s) | Segment::Assistant(s) => s,
        }
    }
}

/// The segments of `cli.py` `preprocess_huatuo` (reference §3.1, §3.4): for each past round
/// `User("<|user|>\n{user.strip()}\n")` then `Assistant("<|assistant|>\n{answer} \n")` (the
/// answer unstripped, a space before the newline), and last
/// `User("<|user|>\n{user.strip()}\n<|assistant|>\n")`. `user` is the current user text with
/// its placeholders.
pub fn segments(history: &[Exchange], user: &str) -> Vec<Segment> {
    let mut out = Vec::with_capacity(2 * history.len() + 1);
    for exchange in history {
        out.push(Segment::User(format!(
            "<|user|>\n{}\n",
            py_strip(&exchange.user)
        )));
        out.push(Segment::Assistant(format!(
            "<|assistant|>\n{} \n",
            exchange.answer
        )));
    }
    out.push(Segment::User(format!(
        "<|user|>\n{}\n<|assistant|>\n",
        py_strip(user)
    )));
    out
}

/// The whole prompt as one string (the concatenation of [`segments`]); for display and
/// transcripts only, since the ids come from tokenizing the segments separately.
pub fn prompt_text(history: &[Exchange], user: &str) -> String {
    segments(history, user)
        .iter()
        .map(Segment::text)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn sanitize_in_order() {
        assert_eq!(sanitize_user_text("a<image>b<s>c</s>d"), "abcd");
        // successive replaces: removing <image> can create <s>, which is then removed
        assert_eq!(sanitize_user_text("<<image>s>x"), "x");
        // but removing <s> can create an <image> that stays, like in Python
        assert_eq!(sanitize_user_text("<ima<s>ge>"), "<image>");
        assert_eq!(sanitize_user_text("<|user|> <S>"), "<|user|> <S>");
    }

    #[test]
    fn placeholders() {
        assert_eq!(with_image_placeholders("q", 0), "q");
        assert_eq!(with_image_placeholders("q", 2), "<image>\n<image>\nq");
    }

    /// Reference §3.4, turn 1: one image, "What does the picture show?".
    #[test]
    fn worked_example_turn_1() {
        let user = with_image_placeholders("What does the picture show?", 1);
        let segs = segments(&[], &user);
        assert_eq!(
            segs,
            vec![Segment::User(
                "<|user|>\n<image>\nWhat does the picture show?\n<|assistant|>\n".into()
            )]
        );
    }

    /// Reference §3.4, turn 2: no new image, "Is there a fracture?".
    #[test]
    fn worked_example_turn_2() {
        let a1 = " The X-ray shows a hand.\n";
        let history = vec![Exchange {
            user: "<image>\nWhat does the picture show?".into(),
            answer: a1.into(),
        }];
        let segs = segments(&history, "Is there a fracture?");
        assert_eq!(
            segs,
            vec![
                Segment::User("<|user|>\n<image>\nWhat does the picture show?\n".into()),
                Segment::Assistant(format!("<|assistant|>\n{a1} \n")),
                Segment::User("<|user|>\nIs there a fracture?\n<|assistant|>\n".into()),
            ]
        );
        assert_eq!(
            prompt_text(&history, "Is there a fracture?"),
            format!(
                "<|user|>\n<image>\nWhat does the picture show?\n<|assistant|>\n{a1} \n\
                 <|user|>\nIs there a fracture?\n<|assistant|>\n"
            )
        );
    }

    #[test]
    fn user_text_is_stripped_answer_is_not() {
        let history = vec![Exchange {
            user: "  <image>\n hi \n".into(),
            answer: "\n ok \n".into(),
        }];
        let segs = segments(&history, "\u{1f} next\u{3000}");
        assert_eq!(segs[0].text(), "<|user|>\n<image>\n hi\n");
        assert_eq!(segs[1].text(), "<|assistant|>\n\n ok \n \n");
        assert_eq!(segs[2].text(), "<|user|>\nnext\n<|assistant|>\n");
    }

    #[test]
    fn exchange_serde_round_trip() {
        let e = Exchange {
            user: "<image>\nq".into(),
            answer: " a ".into(),
        };
        let json = serde_json::to_string(&e).expect("serialize");
        let back: Exchange = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, e);
    }
}
