//! The checkpoint's tokenizer, used the way the reference uses it (reference §1.7, §3.2, §3.3).
//!
//! The reference loads `AutoTokenizer.from_pretrained(model_dir)`, i.e. a *fast* tokenizer
//! driven by the checkpoint's `tokenizer.json` (Qwen2 byte-level BPE for the 7B, Yi
//! sentencepiece-style BPE with byte fallback for the 34B). We load the same file with the
//! `tokenizers` crate, and read `tokenizer_config.json` / `special_tokens_map.json` the way
//! transformers does for what the crate does not know: the EOS and BOS tokens, whether
//! `decode` cleans up tokenization spaces, and `model_max_length`.
//!
//! * [`Tokenizer::encode_chunk`] is one `tokenizer(text, add_special_tokens=False)` call: the
//!   prompt template (`chat::template::prompt_ids`) tokenizes each segment, and each
//!   `<image>`-separated chunk of a user segment, through it (`cli.py` `preprocess_huatuo` +
//!   `tokenizer_image_token`).
//! * [`Tokenizer::decode`] reproduces `tokenizer.decode(ids, skip_special_tokens=True)`.
//! * [`AnswerStream`] prints an answer while it is generated, so that what was printed is
//!   exactly the stripped answer of `cli.py` `inference()`; [`Tokenizer::streamed_text`]
//!   reproduces what `cli.py` `chat()` stores in its history (the concatenated output of
//!   transformers' `TextIteratorStreamer`).

mod stream;

pub use stream::AnswerStream;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};
use tokenizers::AddedToken;

/// transformers' `LARGE_INTEGER` (`int(1e20)`): a `model_max_length` above it means "no limit".
const LARGE_INTEGER: f64 = 1e20;

/// Errors of loading and using a tokenizer; each names the file or the text involved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required file is absent from the checkpoint directory.
    #[error("missing {file} in {}", dir.display())]
    Missing {
        /// The file's name.
        file: &'static str,
        /// The directory searched.
        dir: PathBuf,
    },
    /// A file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file is not what we expect (bad JSON, bad tokenizer, bad value).
    #[error("cannot parse {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The EOS (or BOS) token named by the configuration has no id.
    #[error("{role} token {token} is not in the vocabulary of {}", path.display())]
    NotInVocabulary {
        /// `EOS` or `BOS`.
        role: &'static str,
        /// The token's text.
        token: String,
        /// The `tokenizer.json` consulted.
        path: PathBuf,
    },
    /// No EOS token is configured at all, so generation could never stop.
    #[error("no EOS token is configured in {} (tokenizer_config.json / special_tokens_map.json)", dir.display())]
    NoEos {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// The tokenizer failed on a text.
    #[error("cannot tokenize {text:?}: {message}")]
    Encode {
        /// The start of the text.
        text: String,
        /// The tokenizer's message.
        message: String,
    },
    /// The tokenizer failed to decode ids.
    #[error("cannot decode token ids: {message}")]
    Decode {
        /// The tokenizer's message.
        message: String,
    },
}

/// The checkpoint's tokenizer plus the transformers-level settings the reference uses
/// (reference §1.7, §3.3).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos_id: u32,
    eos_token: String,
    bos_id: Option<u32>,
    clean_up_tokenization_spaces: bool,
    /// `model_max_length` when transformers would truncate to it (assistant segments are
    /// tokenized with `truncation=True`, reference §3.2).
    max_length: Option<usize>,
    /// Ids that `decode(..., skip_special_tokens=True)` drops (added tokens marked special).
    special_ids: HashSet<u32>,
}

/// Per-class defaults of the transformers fast tokenizer classes we know, used when a key is
/// absent from the configuration.
struct ClassDefaults {
    bos: Option<&'static str>,
    eos: Option<&'static str>,
    unk: Option<&'static str>,
    pad: Option<&'static str>,
    clean_up: bool,
}

fn class_defaults(class: &str) -> ClassDefaults {
    match class.trim_end_matches("Fast") {
        // transformers Qwen2TokenizerFast.__init__ defaults.
        "Qwen2Tokenizer" => ClassDefaults {
            bos: None,
            eos: Some("<|endoftext|>"),
            unk: Some("<|endoftext|>"),
            pad: Some("<|endoftext|>"),
            clean_up: true,
        },
        // transformers LlamaTokenizerFast.__init__ defaults (clean_up_tokenization_spaces=False).
        "LlamaTokenizer" => ClassDefaults {
            bos: Some("<s>"),
            eos: Some("</s>"),
            unk: Some("<unk>"),
            pad: None,
            clean_up: false,
        },
        // PreTrainedTokenizerFast: no special tokens; transformers 4.40 cleans up by default.
        _ => ClassDefaults {
            bos: None,
            eos: None,
            unk: None,
            pad: None,
            clean_up: true,
        },
    }
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(TokenizerError::Parse {
            path: path.to_owned(),
            message: "expected a JSON object".into(),
        }),
        Err(e) => Err(TokenizerError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// A special-token entry: `"<x>"`, `{"content": "<x>", ...}` or `null`.
/// `Ok(None)` for null; `Err` for anything else.
fn token_content(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(map) => match map.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err("a special token object without a string \"content\"".into()),
        },
        _ => Err(format!("unexpected special token value {value}")),
    }
}

fn flag(map: &Map<String, Value>, key: &str, default: bool) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The first `n` characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

impl Tokenizer {
    /// Loads `DIR/tokenizer.json` and the transformers configuration next to it
    /// (`tokenizer_config.json`, and `special_tokens_map.json` when the former has no
    /// `added_tokens_decoder`, as transformers 4.46 does).
    ///
    /// Special tokens named by the configuration that are in the vocabulary but not among
    /// `tokenizer.json`'s added tokens are registered as transformers does at load time (a
    /// no-op for the Qwen2 and Yi files); an EOS or BOS token outside the vocabulary is an
    /// error (transformers would append it with an id the model has no embedding for).
    ///
    /// Missing configuration keys take the transformers class defaults of `tokenizer_class`
    /// (`Qwen2Tokenizer`, `LlamaTokenizer`); an absent `clean_up_tokenization_spaces` is
    /// `false` for `LlamaTokenizer` and `true` otherwise (the transformers 4.40 default).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let json_path = dir.join("tokenizer.json");
        let text = match std::fs::read_to_string(&json_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TokenizerError::Missing {
                    file: "tokenizer.json",
                    dir: dir.to_owned(),
                })
            }
            Err(source) => {
                return Err(TokenizerError::Read {
                    path: json_path,
                    source,
                })
            }
        };
        let mut inner =
            tokenizers::Tokenizer::from_str(&text).map_err(|e| TokenizerError::Parse {
                path: json_path.clone(),
                message: e.to_string(),
            })?;
        // transformers sets truncation/padding per call; neither is on for our calls.
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Parse {
                path: json_path.clone(),
                message: e.to_string(),
            })?;
        inner.with_padding(None);

        let config_path = dir.join("tokenizer_config.json");
        let mut config = read_json(&config_path)?.unwrap_or_default();
        let map_path = dir.join("special_tokens_map.json");
        if !config.contains_key("added_tokens_decoder") {
            if let Some(map) = read_json(&map_path)? {
                for (key, value) in map {
                    if key == "additional_special_tokens" {
                        let mut merged = match config.remove(&key) {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        };
                        if let Value::Array(extra) = value {
                            for token in extra {
                                if !merged.contains(&token) {
                                    merged.push(token);
                                }
                            }
                        }
                        config.insert(key, Value::Array(merged));
                    } else {
                        config.insert(key, value);
                    }
                }
            }
        }
        let parse_err = |message: String| TokenizerError::Parse {
            path: config_path.clone(),
            message,
        };

        let class = config
            .get("tokenizer_class")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let defaults = class_defaults(&class);
        let special =
            |key: &str, default: Option<&'static str>| -> Result<Option<String>, TokenizerError> {
                match config.get(key) {
                    Some(v) => token_content(v).map_err(|m| parse_err(format!("{key}: {m}"))),
                    None => Ok(default.map(str::to_owned)),
                }
            };
        let bos = special("bos_token", defaults.bos)?;
        let eos = special("eos_token", defaults.eos)?;
        let unk = special("unk_token", defaults.unk)?;
        let pad = special("pad_token", defaults.pad)?;
        let clean_up_tokenization_spaces = match config.get("clean_up_tokenization_spaces") {
            None | Some(Value::Null) => defaults.clean_up,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(parse_err(format!(
                    "clean_up_tokenization_spaces: expected a boolean, got {other}"
                )))
            }
        };
        let max_length = match config.get("model_max_length") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(u), _) => Some(usize::try_from(u).unwrap_or(usize::MAX)),
                (None, Some(f)) if f > 0.0 && f <= LARGE_INTEGER => Some(f as usize),
                _ => None,
            },
            Some(other) => {
                return Err(parse_err(format!(
                    "model_max_length: expected a number, got {other}"
                )))
            }
        };

        // Special tokens transformers registers on the backend if tokenizer.json lacks them
        // among its added tokens: added_tokens_decoder entries (with their flags), then the
        // named special tokens. Registering marks a vocabulary token special (so decode skips
        // it and encode matches it whole).
        let mut to_add: Vec<AddedToken> = Vec::new();
        if let Some(Value::Object(decoder)) = config.get("added_tokens_decoder") {
            let mut entries: Vec<(u64, &Map<String, Value>)> = decoder
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_object()?)))
                .collect();
            entries.sort_by_key(|(id, _)| *id);
            for (_, entry) in entries {
                if let Some(Value::String(content)) = entry.get("content") {
                    let special = flag(entry, "special", false);
                    to_add.push(
                        AddedToken::from(content.clone(), special)
                            .single_word(flag(entry, "single_word", false))
                            .lstrip(flag(entry, "lstrip", false))
                            .rstrip(flag(entry, "rstrip", false))
                            .normalized(flag(entry, "normalized", !special)),
                    );
                }
            }
        }
        let mut named: Vec<String> = [&bos, &eos, &unk, &pad]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(Value::Array(extra)) = config.get("additional_special_tokens") {
            for v in extra {
                if let Ok(Some(content)) = token_content(v) {
                    named.push(content);
                }
            }
        }
        to_add.extend(named.into_iter().map(|c| AddedToken::from(c, true)));
        let mut seen: HashSet<String> = inner
            .get_added_vocabulary()
            .get_vocab()
            .keys()
            .cloned()
            .collect();
        let mut missing_special = Vec::new();
        let mut missing_plain = Vec::new();
        for token in to_add {
            // transformers would append a token that is not in the vocabulary at all with a
            // new id past the model's embedding rows; we register only existing ones (and
            // report an unknown EOS / BOS below).
            if inner.token_to_id(&token.content).is_some() && seen.insert(token.content.clone()) {
                if token.special {
                    missing_special.push(token);
                } else {
                    missing_plain.push(token);
                }
            }
        }
        if !missing_plain.is_empty() {
            inner
                .add_tokens(missing_plain)
                .map_err(|e| parse_err(e.to_string()))?;
        }
        if !missing_special.is_empty() {
            inner
                .add_special_tokens(missing_special)
                .map_err(|e| parse_err(e.to_string()))?;
        }

        let lookup = |role: &'static str, token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::NotInVocabulary {
                    role,
                    token: token.to_owned(),
                    path: json_path.clone(),
                })
        };
        let eos_token = eos.ok_or_else(|| TokenizerError::NoEos {
            dir: dir.to_owned(),
        })?;
        let eos_id = lookup("EOS", &eos_token)?;
        let bos_id = match &bos {
            Some(token) => Some(lookup("BOS", token)?),
            None => None,
        };
        let special_ids = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        Ok(Self {
            inner,
            eos_id,
            eos_token,
            bos_id,
            clean_up_tokenization_spaces,
            max_length,
            special_ids,
        })
    }

    /// The id generation stops at (`tokenizer.eos_token_id`, reference §3.3).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The EOS token's text.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// `tokenizer.bos_token_id` (None for Qwen2). Never added to prompts (reference §3.1).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// `len(tokenizer)`: the vocabulary with the added tokens (151646 for Qwen2).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether `decode` applies transformers' `clean_up_tokenization`.
    pub fn clean_up_tokenization_spaces(&self) -> bool {
        self.clean_up_tokenization_spaces
    }

    /// `model_max_length` when transformers would truncate to it.
    pub fn model_max_length(&self) -> Option<usize> {
        self.max_length
    }

    /// The token text of an id (`convert_ids_to_tokens`), if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// `tokenizer(text, add_special_tokens=False).input_ids` (reference §3.2).
    pub fn encode_chunk(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode {
                text: excerpt(text),
                message: e.to_string(),
            })
    }

    /// The backend decode with special tokens skipped, without clean-up.
    fn decode_raw(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Decode {
                message: e.to_string(),
            })
    }

    /// `tokenizer.decode(ids, skip_special_tokens=True)` (reference §3.3): the backend decode
    /// without the added tokens marked special, then transformers' `clean_up_tokenization`
    /// when `clean_up_tokenization_spaces` is on. Unknown ids are skipped, like transformers.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text = self.decode_raw(ids)?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// transformers' `PreTrainedTokenizerBase.clean_up_tokenization` (4.40-4.46): these
/// replacements, in this order, each over the whole string.
pub fn clean_up_tokenization(text: &str) -> String {
    const REPLACEMENTS: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    let mut out = text.to_owned();
    for (from, to) in REPLACEMENTS {
        if out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_like_transformers() {
        assert_eq!(
            clean_up_tokenization("Hello , world ! I do n't know . It 's ok ?"),
            "Hello, world! I don't know. It's ok?"
        );
        assert_eq!(clean_up_tokenization("a ' b"), "a'b");
        assert_eq!(
            clean_up_tokenization("we 're they 've I 'm"),
            "we're they've I'm"
        );
        // order matters: " ' " before " 's"
        assert_eq!(clean_up_tokenization("it ' s"), "it's");
        assert_eq!(clean_up_tokenization("x ' ."), "x '.");
    }
}
