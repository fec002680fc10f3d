//! Tokenizer and prompt-template parity with the Python reference (reference §3).
//!
//! `tests/fixtures/prompts/<tokenizer>.json` are written by `scripts/reference/prompts.py`
//! from transformers' `AutoTokenizer` and `scripts/reference/huatuo_ref.py`; the tokenizers
//! are `tests/fixtures/tokenizers/qwen2` (the real Qwen2 one, 7B) and `yi-tiny` (a small
//! tokenizer in the style of Yi's, 34B, with clean-up of tokenization spaces on).

use std::path::{Path, PathBuf};

use huatuo::chat::template::{
    prompt_ids, prompt_text, sanitize_user_text, segments, with_image_placeholders,
};
use huatuo::model::tokenizer::{AnswerStream, Tokenizer};
use huatuo::protocol::Exchange;
use huatuo::text::{is_py_whitespace, py_strip, IMAGE_TOKEN_INDEX};
use serde::Deserialize;

const TOKENIZERS: [&str; 2] = ["qwen2", "yi-tiny"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tokenizer_dir(name: &str) -> PathBuf {
    fixtures().join("tokenizers").join(name)
}

fn load_tokenizer(name: &str) -> Tokenizer {
    let dir = tokenizer_dir(name);
    Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

#[derive(Deserialize)]
struct Fixture {
    vocab_size: usize,
    eos_id: u32,
    bos_id: Option<u32>,
    clean_up_tokenization_spaces: bool,
    model_max_length: u64,
    prompts: Vec<PromptCase>,
    encode: Vec<EncodeCase>,
    decode: Vec<DecodeCase>,
}

#[derive(Deserialize)]
struct HistoryItem {
    user: String,
    n_images: usize,
    answer: String,
}

#[derive(Deserialize)]
struct PromptCase {
    name: String,
    history: Vec<HistoryItem>,
    user: String,
    n_images: usize,
    history_with_placeholders: Vec<String>,
    user_with_placeholders: String,
    prompt_text: String,
    ids: Vec<i64>,
}

#[derive(Deserialize)]
struct EncodeCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct DecodeCase {
    name: String,
    ids: Vec<u32>,
    text: String,
    stripped: String,
    streamed: String,
}

fn load_fixture(name: &str) -> Fixture {
    let path = fixtures().join("prompts").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The user text of a turn as the reference builds it: sanitized, then placeholders.
fn turn_text(user: &str, n_images: usize) -> String {
    with_image_placeholders(&sanitize_user_text(user), n_images)
}

#[test]
fn tokenizer_settings_match_transformers() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        let fx = load_fixture(name);
        assert_eq!(tok.vocab_size(), fx.vocab_size, "{name}: len(tokenizer)");
        assert_eq!(tok.eos_id(), fx.eos_id, "{name}: eos_token_id");
        assert_eq!(tok.bos_id(), fx.bos_id, "{name}: bos_token_id");
        assert_eq!(
            tok.clean_up_tokenization_spaces(),
            fx.clean_up_tokenization_spaces,
            "{name}: clean_up_tokenization_spaces"
        );
        assert_eq!(
            tok.model_max_length().map(|n| n as u64),
            Some(fx.model_max_length),
            "{name}: model_max_length"
        );
    }
    let qwen = load_tokenizer("qwen2");
    assert_eq!(
        (qwen.vocab_size(), qwen.eos_id(), qwen.bos_id()),
        (151646, 151643, None)
    );
    let yi = load_tokenizer("yi-tiny");
    assert_eq!((yi.eos_id(), yi.bos_id()), (2, Some(1)));
}

#[test]
fn prompt_ids_match_python() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        let fx = load_fixture(name);
        assert!(fx.prompts.len() >= 10, "{name}: too few prompt cases");
        for case in &fx.prompts {
            let history: Vec<Exchange> = case
                .history
                .iter()
                .map(|h| Exchange {
                    user: turn_text(&h.user, h.n_images),
                    answer: h.answer.clone(),
                })
                .collect();
            let placed: Vec<&str> = history.iter().map(|e| e.user.as_str()).collect();
            assert_eq!(
                placed, case.history_with_placeholders,
                "{name}/{}",
                case.name
            );
            let user = turn_text(&case.user, case.n_images);
            assert_eq!(user, case.user_with_placeholders, "{name}/{}", case.name);
            assert_eq!(
                prompt_text(&history, &user),
                case.prompt_text,
                "{name}/{}: prompt text",
                case.name
            );
            let ids = prompt_ids(
                &segments(&history, &user),
                |chunk| tok.encode_chunk(chunk),
                tok.bos_id(),
                tok.model_max_length(),
            )
            .unwrap_or_else(|e| panic!("{name}/{}: {e}", case.name));
            assert_eq!(ids, case.ids, "{name}/{}: prompt ids", case.name);
            // One -200 per placeholder. Usually one per image, but sanitation can create a
            // placeholder: "<ima<s>ge>" becomes "<image>" (case banned_markers_in_history).
            // (Assistant segments are not split: an "<image>" in an answer is plain text.)
            let placeholders = std::iter::once(&case.user_with_placeholders)
                .chain(&case.history_with_placeholders)
                .map(|t| t.matches("<image>").count())
                .sum::<usize>();
            let sentinels = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
            assert_eq!(sentinels, placeholders, "{name}/{}: -200s", case.name);
            let images: usize =
                case.n_images + case.history.iter().map(|h| h.n_images).sum::<usize>();
            if case.name == "banned_markers_in_history" {
                assert_eq!(placeholders, images + 1, "{name}/{}", case.name);
            } else {
                assert_eq!(placeholders, images, "{name}/{}", case.name);
            }
        }
    }
}

#[test]
fn encode_chunk_matches_python() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        for case in load_fixture(name).encode {
            let ids = tok.encode_chunk(&case.text).expect("encode");
            assert_eq!(ids, case.ids, "{name}: tokenizer({:?})", case.text);
        }
    }
}

#[test]
fn decode_matches_python() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        for case in load_fixture(name).decode {
            let text = tok.decode(&case.ids).expect("decode");
            assert_eq!(text, case.text, "{name}/{}: decode", case.name);
            assert_eq!(
                py_strip(&text),
                case.stripped,
                "{name}/{}: strip",
                case.name
            );
            let streamed = tok.streamed_text(&case.ids).expect("streamed");
            assert_eq!(streamed, case.streamed, "{name}/{}: streamer", case.name);
        }
    }
}

/// Pushes `ids` one by one and checks the invariant of `AnswerStream`: the pieces concatenate
/// to `decode(ids).strip()`, and no piece carries half a character or strippable whitespace.
fn check_stream(tok: &Tokenizer, ids: &[u32], label: &str) {
    let expected = py_strip(&tok.decode(ids).expect("decode")).to_owned();
    let mut stream = AnswerStream::new(tok);
    let mut pieces = Vec::new();
    for &id in ids {
        let piece = stream.push(id).expect("push");
        pieces.push(piece);
        let so_far: String = pieces.concat();
        assert!(
            expected.starts_with(&so_far),
            "{label}: emitted {so_far:?} is not a prefix of {expected:?} (ids {ids:?})"
        );
    }
    pieces.push(stream.finish().expect("finish"));
    let all: String = pieces.concat();
    assert_eq!(all, expected, "{label}: pieces {pieces:?} (ids {ids:?})");
    assert_eq!(stream.emitted(), expected, "{label}");
    assert_eq!(
        stream.text().expect("text"),
        tok.decode(ids).expect("decode")
    );
    if let Some(first) = pieces.iter().find(|p| !p.is_empty()) {
        assert!(
            !first.starts_with(is_py_whitespace),
            "{label}: first piece {first:?} starts with whitespace"
        );
    }
    // A U+FFFD may only be printed where the final answer has one too (checked by the prefix
    // test above); in particular a piece never ends in a character that is still incomplete.
    let mut at = 0;
    for piece in &pieces {
        at += piece.len();
        assert!(expected.is_char_boundary(at), "{label}");
    }
}

#[test]
fn answer_stream_on_fixture_cases() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        for case in load_fixture(name).decode {
            check_stream(&tok, &case.ids, &format!("{name}/{}", case.name));
            let mut stream = AnswerStream::new(&tok);
            for &id in &case.ids {
                stream.push(id).expect("push");
            }
            assert_eq!(stream.history_text().expect("history"), case.streamed);
            let mut all: String = String::new();
            let mut stream = AnswerStream::new(&tok);
            for &id in &case.ids {
                all.push_str(&stream.push(id).expect("push"));
            }
            all.push_str(&stream.finish().expect("finish"));
            assert_eq!(all, case.stripped, "{name}/{}: vs Python strip", case.name);
        }
    }
}

/// xorshift64*: a deterministic generator for the property-style loops.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const STREAM_TEXTS: [&str; 12] = [
    "The chest X-ray shows clear lung fields.\nNo fracture is seen.",
    "这张胸部X光片显示了什么？有没有骨折？未见明显骨折。",
    "emoji 🩻🦴👩‍⚕️😀 split 🧑🏽‍⚕️ across byte tokens",
    "   leading spaces, trailing newlines\n\n\n",
    "\n\t\u{3000}全角空格与制表符\u{3000} \n",
    "I do n't know , it 's fine . They 're here , are n't they ? We 've seen ' it '",
    "a ' b n't 'm 's 've 're ' ' n ' t",
    "Line one\n - item two\n\n  indented three  ",
    "混合 mixed 文本 text，标点！？ 37.5°C café naïve",
    "<|endoftext|> in the middle <|im_start|> of text <unk>",
    "x\u{1c}y\u{1f} \u{85}z\u{a0}",
    "🩻",
];

#[test]
fn answer_stream_property() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        let vocab = tok.vocab_size();
        let specials: Vec<u32> = tok
            .inner()
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        // Byte-fallback tokens (yi-tiny) and single-character tokens, to make broken
        // characters and whitespace likely.
        let small: Vec<u32> = (0..vocab as u32)
            .filter(|&id| tok.id_to_token(id).is_some_and(|t| t.chars().count() <= 2))
            .collect();
        let encoded: Vec<Vec<u32>> = STREAM_TEXTS
            .iter()
            .map(|t| tok.encode_chunk(t).expect("encode"))
            .collect();
        for ids in &encoded {
            check_stream(&tok, ids, &format!("{name}/text"));
        }
        for round in 0..1500 {
            let mut ids: Vec<u32> = match round % 3 {
                // a slice of an encoded text (cuts characters), maybe two texts joined
                0 => {
                    let src = &encoded[rng.below(encoded.len())];
                    let a = rng.below(src.len());
                    let b = a + 1 + rng.below(src.len() - a);
                    let mut v = src[a..b].to_vec();
                    if rng.below(2) == 0 {
                        v.extend(&encoded[rng.below(encoded.len())]);
                    }
                    v
                }
                // short tokens only
                1 => (0..1 + rng.below(20))
                    .map(|_| small[rng.below(small.len())])
                    .collect(),
                // anything in the vocabulary
                _ => (0..1 + rng.below(20))
                    .map(|_| rng.below(vocab) as u32)
                    .collect(),
            };
            for _ in 0..rng.below(3) {
                let at = rng.below(ids.len() + 1);
                ids.insert(at, specials[rng.below(specials.len())]);
            }
            check_stream(&tok, &ids, &format!("{name}/round {round}"));
        }
    }
}

/// Each byte of a multi-byte character arrives alone: nothing is printed until the
/// character is complete.
#[test]
fn answer_stream_holds_back_partial_characters() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        let ids = tok.encode_chunk("ok 🩻 骨").expect("encode");
        let mut stream = AnswerStream::new(&tok);
        for &id in &ids {
            let piece = stream.push(id).expect("push");
            assert!(!piece.contains('\u{fffd}'), "{name}: {piece:?}");
        }
        let rest = stream.finish().expect("finish");
        assert_eq!(stream.emitted(), "ok 🩻 骨", "{name}: rest {rest:?}");
    }
}

#[test]
fn missing_tokenizer_json_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Tokenizer::from_dir(dir.path()).expect_err("no tokenizer.json");
    let msg = err.to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

fn yi_dir_with(config: &str, map: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        tokenizer_dir("yi-tiny").join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy");
    std::fs::write(dir.path().join("tokenizer_config.json"), config).expect("write");
    if let Some(map) = map {
        std::fs::write(dir.path().join("special_tokens_map.json"), map).expect("write");
    }
    dir
}

#[test]
fn unknown_eos_is_named() {
    let dir = yi_dir_with(
        r#"{"tokenizer_class": "LlamaTokenizer", "eos_token": "<nope>"}"#,
        None,
    );
    let msg = Tokenizer::from_dir(dir.path())
        .expect_err("unknown eos")
        .to_string();
    assert!(msg.contains("EOS token <nope>"), "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn bad_config_is_named() {
    let dir = yi_dir_with("{not json", None);
    let msg = Tokenizer::from_dir(dir.path())
        .expect_err("bad json")
        .to_string();
    assert!(msg.contains("tokenizer_config.json"), "{msg}");
}

/// transformers: without `added_tokens_decoder`, special_tokens_map.json overrides
/// tokenizer_config.json; token objects `{"content": ...}` are accepted.
#[test]
fn special_tokens_map_overrides_config() {
    let dir = yi_dir_with(
        r#"{"tokenizer_class": "LlamaTokenizer", "eos_token": "</s>"}"#,
        Some(r#"{"eos_token": {"content": "<|endoftext|>"}, "bos_token": "<|startoftext|>"}"#),
    );
    let tok = Tokenizer::from_dir(dir.path()).expect("load");
    assert_eq!((tok.eos_id(), tok.bos_id()), (2, Some(1)));
    // LlamaTokenizerFast default: no clean-up when the key is absent.
    assert!(!tok.clean_up_tokenization_spaces());
    assert_eq!(tok.model_max_length(), None);
}

/// Absent keys take the class defaults of transformers' Qwen2TokenizerFast.
#[test]
fn class_defaults_when_keys_are_absent() {
    let dir = yi_dir_with(r#"{"tokenizer_class": "Qwen2Tokenizer"}"#, None);
    let tok = Tokenizer::from_dir(dir.path()).expect("load");
    assert_eq!((tok.eos_id(), tok.bos_id()), (2, None));
    let dir = yi_dir_with(r#"{"eos_token": null}"#, None);
    let msg = Tokenizer::from_dir(dir.path())
        .expect_err("no eos")
        .to_string();
    assert!(msg.contains("no EOS token"), "{msg}");
}

/// Text is printed while it is generated, not only at the end.
#[test]
fn answer_stream_streams_early() {
    for name in TOKENIZERS {
        let tok = load_tokenizer(name);
        for text in [
            "The chest X-ray shows clear lung fields and no fracture at all.",
            "患者今天感觉好多了，体温正常，咳嗽减少。",
        ] {
            let ids = tok.encode_chunk(text).expect("encode");
            let mut stream = AnswerStream::new(&tok);
            let mut before_last = String::new();
            for (i, &id) in ids.iter().enumerate() {
                let piece = stream.push(id).expect("push");
                if i + 1 < ids.len() {
                    before_last.push_str(&piece);
                }
            }
            let rest = stream.finish().expect("finish");
            assert_eq!(stream.emitted(), text, "{name}");
            assert!(
                before_last.chars().count() * 2 > text.chars().count(),
                "{name}: only {before_last:?} printed before the last token of {text:?}"
            );
            assert!(
                rest.chars().count() <= 8,
                "{name}: {rest:?} left for finish"
            );
        }
    }
}
