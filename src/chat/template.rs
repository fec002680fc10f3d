//! The HuatuoGPT-Vision prompt template (reference §3.1, §3.4), as plain strings.
//!
//! The reference CLI (`cli.py`) builds no single prompt string: it tokenizes a list of
//! *segments* one by one and concatenates the ids (reference §3.2). This module produces
//! exactly those segments, and [`prompt_ids`] turns them into ids with any tokenizer's
//! chunk encoding. Everything here is pure: no tokenizer, no IO.
//!
//! `strip()` in the reference is Python's `str.strip()`, whose notion of whitespace is
//! slightly wider than Rust's [`char::is_whitespace`]; [`crate::text::py_strip`] reproduces it.

use crate::protocol::Exchange;
use crate::text::{py_strip, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX};

/// What `cli.py` `input_moderation` removes from user text, in its order (reference §3.1).
const BANNED: [&str; 3] = ["<image>", "<s>", "</s>"];

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

/// The prompt ids of `cli.py` `preprocess_huatuo` (reference §3.2): a user segment is
/// split on `<image>`, each chunk tokenized alone by `encode_chunk` (the tokenizer with
/// `add_special_tokens=False`) and the chunks joined with [`IMAGE_TOKEN_INDEX`]
/// (`tokenizer_image_token`, including its BOS-offset rule, dead for both real tokenizers); an
/// assistant segment is tokenized whole and truncated to `max_length` (`truncation=True`).
pub fn prompt_ids<E>(
    segments: &[Segment],
    mut encode_chunk: impl FnMut(&str) -> Result<Vec<u32>, E>,
    bos: Option<u32>,
    max_length: Option<usize>,
) -> Result<Vec<i64>, E> {
    let mut ids = Vec::new();
    for segment in segments {
        match segment {
            Segment::User(text) => {
                let chunks = text
                    .split(IMAGE_PLACEHOLDER)
                    .map(&mut encode_chunk)
                    .collect::<Result<Vec<_>, _>>()?;
                ids.extend(join_chunks(&chunks, bos));
            }
            Segment::Assistant(text) => {
                let mut chunk = encode_chunk(text)?;
                if let Some(max) = max_length {
                    chunk.truncate(max);
                }
                ids.extend(chunk.into_iter().map(i64::from));
            }
        }
    }
    Ok(ids)
}

/// `tokenizer_image_token`'s join as in `cli.py` (copied from LLaVA): when the first chunk
/// starts with BOS, BOS is kept once and the first id of every element (chunks and the
/// `[IMAGE_TOKEN_INDEX] * 2` separators) is dropped, leaving one sentinel per image.
fn join_chunks(chunks: &[Vec<u32>], bos: Option<u32>) -> Vec<i64> {
    let first = chunks.first().and_then(|c| c.first()).copied();
    let offset = usize::from(bos.is_some() && first == bos);
    let mut ids = Vec::new();
    if offset == 1 {
        ids.extend(first.map(i64::from));
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            ids.extend(std::iter::repeat_n(IMAGE_TOKEN_INDEX, offset + 1).skip(offset));
        }
        ids.extend(chunk.iter().skip(offset).map(|&t| i64::from(t)));
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_chunks_without_bos() {
        let chunks = vec![vec![5, 6], vec![7], vec![]];
        assert_eq!(join_chunks(&chunks, None), vec![5, 6, -200, 7, -200]);
        assert_eq!(join_chunks(&chunks, Some(9)), vec![5, 6, -200, 7, -200]);
        assert_eq!(join_chunks(&[vec![]], Some(1)), Vec::<i64>::new());
    }

    /// The dead BOS branch, as in cli.py: one sentinel per image, first id of each chunk
    /// dropped.
    #[test]
    fn join_chunks_with_leading_bos() {
        let chunks = vec![vec![1, 5], vec![1, 6], vec![7]];
        assert_eq!(join_chunks(&chunks, Some(1)), vec![1, 5, -200, 6, -200]);
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
