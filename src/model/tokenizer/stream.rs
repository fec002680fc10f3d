//! Streaming an answer's text: what can be printed after each generated token so that the
//! printed pieces add up to exactly the reference's answer, and the text the reference's
//! `chat()` keeps in its history (huatuo-reference.md §3.3).

use super::{clean_up_tokenization, Tokenizer, TokenizerError};
use crate::text::py_strip;

impl Tokenizer {
    /// What `cli.py` `chat()` stores as the answer in its history (reference §3.3): the
    /// concatenation of transformers' `TextIteratorStreamer(skip_prompt=True,
    /// skip_special_tokens=True)` outputs for the generated `ids`.
    ///
    /// It usually equals [`Tokenizer::decode`] but not always: the streamer restarts decoding
    /// after every text ending in `"\n"` (so a sentencepiece decoder strips the leading space
    /// of the next piece again), and it never takes back text it printed before a later
    /// clean-up rewrote it (`"do n"` + `"'t"`).
    pub fn streamed_text(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = String::new();
        let mut cache: Vec<u32> = Vec::new();
        let mut print_len = 0usize; // in characters, like Python indices
        for &id in ids {
            cache.push(id);
            let text = self.decode(&cache)?;
            let chars: Vec<char> = text.chars().collect();
            if text.ends_with('\n') {
                out.extend(chars.iter().skip(print_len));
                cache.clear();
                print_len = 0;
            } else if chars.last().is_some_and(|&c| is_cjk_char(c)) {
                let piece: String = chars.iter().skip(print_len).collect();
                print_len += piece.chars().count();
                out.push_str(&piece);
            } else {
                // text[print_len : text.rfind(" ") + 1]
                let end = chars.iter().rposition(|&c| c == ' ').map_or(0, |i| i + 1);
                if end > print_len {
                    out.extend(&chars[print_len..end]);
                    print_len = end;
                }
            }
        }
        if !cache.is_empty() {
            let text = self.decode(&cache)?;
            out.extend(text.chars().skip(print_len));
        }
        Ok(out)
    }

    /// Whether the backend decoder sees this id (known, and not a skipped special token).
    fn is_decoded(&self, id: u32) -> bool {
        !self.special_ids.contains(&id) && self.inner.id_to_token(id).is_some()
    }

    /// Whether the id is a byte-fallback token `<0xXX>`, whose text can still change when
    /// the following bytes arrive (the `ByteFallback` decoder turns a whole run of byte
    /// tokens into U+FFFDs if any of it is invalid UTF-8).
    fn is_byte_token(&self, id: u32) -> bool {
        self.inner.id_to_token(id).is_some_and(|t| {
            t.len() == 6
                && t.starts_with("<0x")
                && t.ends_with('>')
                && u8::from_str_radix(&t[3..5], 16).is_ok()
        })
    }

    /// The part of the stripped answer that no further token can change (see
    /// [`AnswerStream`]).
    fn stable_answer(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| self.is_decoded(id))
            .collect();
        let mut end = kept.len();
        while end > 0 && self.is_byte_token(kept[end - 1]) {
            end -= 1;
        }
        let raw = self.decode_raw(&kept[..end])?;
        let raw = raw.trim_end_matches('\u{fffd}');
        let text = if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&raw[..cleanup_safe_cut(raw)])
        } else {
            raw.to_owned()
        };
        Ok(py_strip(&text).to_owned())
    }
}

/// The largest `c` such that `clean_up_tokenization(raw[..c])` is a prefix of
/// `clean_up_tokenization(raw + anything)`.
///
/// Every pattern starts with a space and the replacements only delete spaces, so a later
/// text can only change a match that starts at a space of `raw[..c]` and runs past `c`.
/// Such a match needs the text after the last space of `raw[..c]` (after earlier deletions,
/// a word ending with the last word `w`) to be a proper prefix of a pattern's rest: empty,
/// `'`, `n`, `n'`, `'v` or `'r`. So the cut is safe when `raw[..c]` has no space, or when `w`
/// is non-empty and not a suffix of one of those.
fn cleanup_safe_cut(raw: &str) -> usize {
    const UNSAFE_LAST_WORDS: [&str; 7] = ["'", "n", "n'", "'v", "v", "'r", "r"];
    let mut cut = raw.len();
    loop {
        let head = &raw[..cut];
        match head.rfind(' ') {
            None => return cut,
            Some(space) => {
                let word = &head[space + 1..];
                if !word.is_empty() && !UNSAFE_LAST_WORDS.contains(&word) {
                    return cut;
                }
            }
        }
        // step back one character (head is not empty: it contains a space)
        cut = head.char_indices().next_back().map_or(0, |(i, _)| i);
    }
}

/// transformers' `TextStreamer._is_chinese_char`: the CJK ideograph blocks.
fn is_cjk_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}
/// Streaming detokenizer for a generated answer (reference §3.3).
///
/// Feed the generated ids one by one with [`AnswerStream::push`] (stopping before EOS) and
/// print what it returns; then print [`AnswerStream::finish`]. The printed pieces
/// concatenate to exactly `decode(ids).strip()`, the answer of `cli.py` `inference()`, and
/// no piece holds half a character or whitespace that the final strip would remove.
///
/// Each step decodes all ids and emits the part of the stripped text that no later token
/// can change: it holds back a trailing run of byte-fallback tokens, trailing U+FFFD,
/// trailing whitespace and, when clean-up is on, the tail that clean-up could still rewrite.
#[derive(Debug, Clone)]
pub struct AnswerStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: String,
}

impl<'a> AnswerStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            emitted: String::new(),
        }
    }

    /// Adds one generated id; returns the text that can be printed now (often empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let stable = self.tokenizer.stable_answer(&self.ids)?;
        Ok(self.advance(&stable))
    }

    /// Ends the answer; returns the rest of `decode(ids).strip()`.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let full = self.tokenizer.decode(&self.ids)?;
        Ok(self.advance(py_strip(&full)))
    }

    /// The whole answer decoded, unstripped (`tokenizer.decode(ids, skip_special_tokens=True)`).
    pub fn text(&self) -> Result<String, TokenizerError> {
        self.tokenizer.decode(&self.ids)
    }

    /// The answer as `cli.py` `chat()` stores it in its history
    /// ([`Tokenizer::streamed_text`]).
    pub fn history_text(&self) -> Result<String, TokenizerError> {
        self.tokenizer.streamed_text(&self.ids)
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Everything returned by `push` and `finish` so far.
    pub fn emitted(&self) -> &str {
        &self.emitted
    }

    fn advance(&mut self, target: &str) -> String {
        match target.strip_prefix(self.emitted.as_str()) {
            Some(rest) if !rest.is_empty() => {
                let piece = rest.to_owned();
                self.emitted.push_str(&piece);
                piece
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over a small alphabet: cleaning the safe prefix gives a prefix of cleaning
    /// any longer text.
    #[test]
    fn cleanup_safe_cut_is_safe() {
        let alphabet = [
            ' ', '\'', 'n', 't', 'v', 'e', 'r', 'm', 's', '.', ',', 'a', '\n',
        ];
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20000 {
            let len = (next() % 12) as usize;
            let full: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let final_clean = clean_up_tokenization(&full);
            for (i, _) in full.char_indices().chain([(full.len(), ' ')]) {
                let prefix = &full[..i];
                let cut = cleanup_safe_cut(prefix);
                let stable = clean_up_tokenization(&prefix[..cut]);
                assert!(
                    final_clean.starts_with(&stable),
                    "{full:?}: prefix {prefix:?} cut {cut} gives {stable:?}, final {final_clean:?}"
                );
            }
        }
        assert_eq!(cleanup_safe_cut("hello world"), 11);
        assert_eq!(cleanup_safe_cut("I do n"), 4);
        assert_eq!(cleanup_safe_cut("say "), 3);
        assert_eq!(cleanup_safe_cut("无空格"), "无空格".len());
    }

    #[test]
    fn cjk_ranges() {
        assert!(is_cjk_char('中'));
        assert!(is_cjk_char('\u{3400}'));
        assert!(!is_cjk_char('。'));
        assert!(!is_cjk_char('a'));
    }
}
