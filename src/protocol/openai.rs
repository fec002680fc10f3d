//! The OpenAI chat-completions API as huatuo speaks it in both directions: `huatuo serve`
//! answers it, and `--endpoint` sends it to any serving engine (vLLM, SGLang, llama-server,
//! another huatuo). Plain wire types and the rules of their content: messages with string or
//! part content, `data:` URLs, streamed chunks, usage and error objects
//! (platform.openai.com/docs/api-reference/chat; vLLM's extra sampling fields).
//!
//! huatuo adds one field of its own to responses, `huatuo` ([`Extension`]): the answer as the
//! reference's `chat()` keeps it in its history (unstripped), why it stopped, and the record of
//! what produced it. Other clients ignore it; a huatuo client uses it to keep sessions exact.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Record, SamplingParams, Stop};

/// `POST /v1/chat/completions`. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// vLLM's extra fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string, or parts (text and images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Default for Content {
    fn default() -> Self {
        Content::Text(String::new())
    }
}

/// One part of a message's content. Parts of other types are refused by the server (they
/// cannot be shown to this model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

impl Content {
    /// The text parts, joined with `\n` as vLLM joins them, and the image URLs in order.
    pub fn split(&self) -> (String, Vec<&str>) {
        match self {
            Content::Text(t) => (t.clone(), Vec::new()),
            Content::Parts(parts) => {
                let mut texts = Vec::new();
                let mut images = Vec::new();
                for part in parts {
                    match part {
                        Part::Text { text } => texts.push(text.as_str()),
                        Part::ImageUrl { image_url } => images.push(image_url.url.as_str()),
                    }
                }
                (texts.join("\n"), images)
            }
        }
    }
}

/// The usage object of every response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Text tokens and image positions of the prompt.
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt: usize, completion: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// huatuo's own field of a response (absent from other engines' responses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    /// The answer as the reference's `chat()` keeps it in its history: unstripped. `content`
    /// is the stripped answer (`inference()`'s); sending either back as the assistant turn
    /// gives the reference's next prompt.
    pub history_text: String,
    pub stop: Stop,
    /// The prompt is not the reference's (a system message was prepended to the first turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<Record>>,
}

/// A non-streamed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huatuo: Option<Extension>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: Message,
    pub finish_reason: Option<String>,
}

/// One `data:` line of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only with `stream_options.include_usage`: `null` on every chunk but the last, which
    /// has no choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huatuo: Option<Extension>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(default)]
    pub object: String,
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
    /// vLLM's context window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
    /// A huatuo server's model: the sampling defaults its checkpoint gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huatuo: Option<ServedModel>,
}

/// What a huatuo server says of its model, so a huatuo client sends the same defaults as a
/// local run would use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedModel {
    pub defaults: SamplingParams,
    pub context_length: usize,
    pub tokens_per_image: usize,
}

/// The OpenAI `finish_reason` of a stop.
pub fn finish_reason(stop: Stop) -> Option<&'static str> {
    match stop {
        Stop::Eos => Some("stop"),
        Stop::Length | Stop::Context => Some("length"),
        Stop::Cancelled => None,
    }
}

/// The stop a `finish_reason` reports.
pub fn stop_of(finish_reason: Option<&str>) -> Stop {
    match finish_reason {
        Some("length") => Stop::Length,
        Some(_) => Stop::Eos,
        None => Stop::Cancelled,
    }
}

/// A `data:` URL of `bytes`.
pub fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Why a `data:` URL cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataUrlError {
    #[error("not a data: URL")]
    NotData,
    #[error("a data: URL without ;base64 (only base64 data is accepted)")]
    NotBase64,
    #[error("the base64 data does not decode: {0}")]
    Decode(String),
}

/// The bytes of a `data:[<mime>][;…];base64,<data>` URL and its media type.
pub fn parse_data_url(url: &str) -> Result<(String, Vec<u8>), DataUrlError> {
    let rest = url
        .strip_prefix("data:")
        .or_else(|| url.strip_prefix("DATA:"))
        .ok_or(DataUrlError::NotData)?;
    let (meta, data) = rest.split_once(',').ok_or(DataUrlError::NotBase64)?;
    let mut fields = meta.split(';');
    let mime = fields.next().unwrap_or_default().to_ascii_lowercase();
    if !fields.any(|f| f.eq_ignore_ascii_case("base64")) {
        return Err(DataUrlError::NotBase64);
    }
    // Clients wrap long base64 lines; whitespace is not data.
    let clean: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&clean))
        .map_err(|e| DataUrlError::Decode(e.to_string()))?;
    Ok((mime, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_round_trip_and_bad_ones_are_named() {
        let url = data_url("image/png", b"\x89PNG\r\n");
        assert_eq!(url, "data:image/png;base64,iVBORw0K");
        assert_eq!(
            parse_data_url(&url),
            Ok(("image/png".into(), b"\x89PNG\r\n".to_vec()))
        );
        assert_eq!(
            parse_data_url("data:application/dicom;base64,iVBO\nRw0K"),
            Ok(("application/dicom".into(), b"\x89PNG\r\n".to_vec()))
        );
        assert_eq!(
            parse_data_url("https://x/y.png"),
            Err(DataUrlError::NotData)
        );
        assert_eq!(
            parse_data_url("data:image/png,abc"),
            Err(DataUrlError::NotBase64)
        );
        assert!(matches!(
            parse_data_url("data:image/png;base64,@@@"),
            Err(DataUrlError::Decode(_))
        ));
    }

    #[test]
    fn content_as_string_or_parts() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[
                {"role":"user","content":[{"type":"image_url","image_url":{"url":"data:a"}},
                  {"type":"text","text":"one"},{"type":"text","text":"two"}]},
                {"role":"assistant","content":"ans"}],
              "max_tokens":3,"top_k":-1,"unknown":1}"#,
        )
        .expect("parse");
        assert_eq!(
            req.messages[0].content.split(),
            ("one\ntwo".to_string(), vec!["data:a"])
        );
        assert_eq!(req.messages[1].content.split(), ("ans".into(), vec![]));
        assert_eq!((req.max_tokens, req.top_k), (Some(3), Some(-1)));
    }
}
