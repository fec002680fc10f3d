//! Exact caches across chat turns (issue 6): projected image features keyed by the image's
//! content, and the decoder's KV cache together with the positions it holds, so that the next
//! turn runs only what differs from the previous one.
//!
//! Exactness is the invariant: the prompt is still built exactly as the reference builds it
//! (huatuo-reference.md §3.1–§3.4), and only positions whose whole past is identical are
//! reused. The reference re-tokenizes the previous answer differently (§3.4 note a), so the
//! common prefix usually ends inside the previous turn's text, never past it. Both caches
//! belong to one loaded model and are dropped with it. Nothing here prints or reads settings.

use std::collections::HashMap;
use std::fmt;

use candle_core::Tensor;
use sha2::{Digest, Sha256};

use crate::model::{Huatuo, KvCache, Logits, ModelError};
use crate::text::IMAGE_TOKEN_INDEX;

/// How many bytes of image features are kept: 7B features (576 × 3584 f32) are about 8 MB,
/// 34B ones (576 × 7168) about 16 MB, so this holds every image a 4096-position context can
/// hold (7) for either model, with room to spare, while staying small next to the weights.
pub const FEATURE_CACHE_BYTES: usize = 256 << 20;

/// The identity of an image: SHA-256 of its file's bytes. Hashing the bytes rather than the
/// preprocessed pixels lets a cached image skip decoding and resizing too, and within one
/// loaded model (one preprocessor config) equal bytes always give equal pixels. A file edited
/// between turns gets a new key, so stale features are never used.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageKey([u8; 32]);

impl ImageKey {
    /// The key of some bytes (a file's content, or raw pixels for callers without files).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The key of preprocessed pixels, for callers that have no file (the plain
    /// [`Pipeline::generate`](super::Pipeline::generate) path).
    pub fn of_pixels(pixels: &[f32]) -> Self {
        let bytes: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        Self::of_bytes(&bytes)
    }

    /// The key of a file's `bytes` shown with `view` (a DICOM window and frame): the bytes'
    /// key when the view is the default, else one that also covers the view.
    pub fn of_view(bytes: &[u8], view: &crate::dicom::ImageOptions) -> Self {
        if view.window.is_none() && view.frame.is_none() {
            return Self::of_bytes(bytes);
        }
        let window = (view.window.as_ref())
            .map(|w| w.to_string())
            .unwrap_or_default();
        let frame = view.frame.unwrap_or(1);
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        hasher.update(format!("\0view:{window}:{frame}").as_bytes());
        Self(hasher.finalize().into())
    }
}

impl fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 6 bytes are enough to tell images apart in a log or a failed assert.
        let short: String = self.0[..6].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "ImageKey({short})")
    }
}

struct Entry {
    features: Tensor,
    bytes: usize,
    last_used: u64,
}

/// Projected image features `[tokens_per_image, hidden]` by image content, least recently
/// used first out once the byte budget is exceeded (the newest entry always stays).
pub struct FeatureCache {
    entries: HashMap<ImageKey, Entry>,
    bytes: usize,
    budget: usize,
    clock: u64,
}

impl FeatureCache {
    /// An empty cache holding at most `budget` bytes of features.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
        }
    }

    /// The features of `key`, marking them recently used. A clone of a tensor shares its
    /// storage, so this copies nothing.
    pub fn get(&mut self, key: &ImageKey) -> Option<Tensor> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.last_used = self.clock;
        Some(entry.features.clone())
    }

    /// Keeps `features` for `key`, evicting the least recently used entries past the budget.
    pub fn insert(&mut self, key: ImageKey, features: Tensor) {
        self.clock += 1;
        let bytes = features.elem_count() * features.dtype().size_in_bytes();
        if let Some(old) = self.entries.insert(
            key,
            Entry {
                features,
                bytes,
                last_used: self.clock,
            },
        ) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        while self.bytes > self.budget && self.entries.len() > 1 {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes;
            }
        }
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no image is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of features held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every image.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// What one position of a prompt is: a text token, or the `offset`-th of an image's positions.
/// Two positions are interchangeable in the KV cache when they and everything before them
/// are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A text token id.
    Text(u32),
    /// Position `offset` (0..tokens_per_image) of the image with content `key`.
    Image { key: ImageKey, offset: u32 },
}

/// The positions of prompt `ids`, each sentinel expanded to `per_image` positions of the next
/// image in `keys` (the same order `Huatuo::embed_prompt` splices them).
pub fn positions(
    ids: &[i64],
    keys: &[ImageKey],
    per_image: usize,
) -> Result<Vec<Position>, ModelError> {
    let sentinels = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
    if sentinels != keys.len() {
        return Err(ModelError::ImageCount {
            placeholders: sentinels,
            images: keys.len(),
        });
    }
    let mut keys = keys.iter();
    let mut out = Vec::with_capacity(ids.len() + sentinels * per_image);
    for &id in ids {
        if id == IMAGE_TOKEN_INDEX {
            if let Some(&key) = keys.next() {
                out.extend((0..per_image as u32).map(|offset| Position::Image { key, offset }));
            }
        } else {
            let token = u32::try_from(id).map_err(|_| ModelError::BadToken { id })?;
            out.push(Position::Text(token));
        }
    }
    Ok(out)
}

/// How many positions of `prompt` can be taken from a cache holding `cached`: their common
/// prefix, moved back to the start of an image it would cut (an image's positions are reused
/// whole or not at all), and short of the whole prompt, because the last position must run
/// for its logits.
pub fn reusable(cached: &[Position], prompt: &[Position]) -> usize {
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    let mut n = common.min(prompt.len().saturating_sub(1));
    if let Some(Position::Image { offset, .. }) = prompt.get(n) {
        n -= *offset as usize;
    }
    n
}

/// The decoder's KV cache and the positions it holds: `kv.len() == positions.len()` after
/// every call, and on any failure both are emptied, so a cache is never trusted for
/// positions it does not hold.
pub struct PrefixCache {
    kv: KvCache,
    positions: Vec<Position>,
}

impl PrefixCache {
    /// An empty cache for `model`.
    pub fn new(model: &Huatuo) -> Self {
        Self {
            kv: model.new_cache(),
            positions: Vec::new(),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.kv.reset();
        self.positions.clear();
    }

    /// Runs prompt `ids` (one sentinel per image, whose keys and projected features are
    /// `keys` and `features`), reusing the longest exact prefix already held and running only
    /// the rest. Returns the last position's logits `[1, vocab]` and how many positions were
    /// reused.
    pub fn prefill(
        &mut self,
        model: &Huatuo,
        ids: &[i64],
        keys: &[ImageKey],
        features: &[Tensor],
    ) -> Result<(Tensor, usize), ModelError> {
        let prompt = positions(ids, keys, model.tokens_per_image())?;
        let reused = reusable(&self.positions, &prompt);
        if let Err(e) = self.kv.truncate(reused) {
            self.clear();
            return Err(e.into());
        }
        self.positions.truncate(reused);
        let (rest_ids, first_image) = suffix_ids(ids, reused, model.tokens_per_image());
        let result = model
            .embed_prompt(rest_ids, &features[first_image.min(features.len())..])
            .and_then(|embeds| model.forward(&embeds, &mut self.kv, Logits::Last));
        match result {
            Ok(logits) if self.kv.len() == prompt.len() => {
                self.positions = prompt;
                Ok((logits, reused))
            }
            Ok(_) => {
                self.clear();
                Err(ModelError::Candle(candle_core::Error::Msg(
                    "the KV cache does not hold the prompt it was given".into(),
                )))
            }
            Err(e) => {
                self.clear();
                Err(e)
            }
        }
    }

    /// Runs one generated token after what is held; its logits `[1, vocab]`.
    pub fn step(&mut self, model: &Huatuo, token: u32) -> Result<Tensor, ModelError> {
        let result = model
            .embed_tokens(&[token])
            .and_then(|embeds| model.forward(&embeds, &mut self.kv, Logits::Last));
        match result {
            Ok(logits) => {
                self.positions.push(Position::Text(token));
                Ok(logits)
            }
            Err(e) => {
                self.clear();
                Err(e)
            }
        }
    }
}

/// The ids after the first `reused` positions and the index of the first image among them.
/// `reused` never ends inside an image ([`reusable`]), so it falls between two ids.
fn suffix_ids(ids: &[i64], reused: usize, per_image: usize) -> (&[i64], usize) {
    let mut covered = 0;
    let mut images = 0;
    for (i, &id) in ids.iter().enumerate() {
        if covered >= reused {
            return (&ids[i..], images);
        }
        if id == IMAGE_TOKEN_INDEX {
            covered += per_image;
            images += 1;
        } else {
            covered += 1;
        }
    }
    (&ids[ids.len()..], images)
}

/// Both caches of one loaded model; dropped with it, and on an explicit reset.
pub struct Caches {
    /// Encoded images by content.
    pub features: FeatureCache,
    /// The KV cache of the last answer, with its positions.
    pub prefix: PrefixCache,
}

impl Caches {
    /// Empty caches for `model`, with the default feature budget.
    pub fn new(model: &Huatuo) -> Self {
        Self {
            features: FeatureCache::new(FEATURE_CACHE_BYTES),
            prefix: PrefixCache::new(model),
        }
    }

    /// Forgets every image and every position (`/clear`).
    pub fn clear(&mut self) {
        self.features.clear();
        self.prefix.clear();
    }
}

/// One image of a prompt, ready for the encoder or already encoded.
pub struct PromptImage {
    /// The image's content hash.
    pub key: ImageKey,
    /// Its pixels, or its features when they are cached.
    pub source: ImageSource,
}

/// Where an image's features come from.
pub enum ImageSource {
    /// Preprocessed CHW pixels still to encode.
    Pixels(Vec<f32>),
    /// Features found in the [`FeatureCache`].
    Cached(Tensor),
    /// The same content as an earlier image of the same prompt.
    Repeat,
}

/// The projected features of a prompt's images, in order, encoding only the ones not cached
/// (each once) and keeping those in `cache`. Returns the features, the number of images
/// encoded and the number not encoded because their content was encoded before (in an
/// earlier turn or earlier in this prompt); the two add up to the number of images.
pub fn features(
    model: &Huatuo,
    images: Vec<PromptImage>,
    cache: &mut FeatureCache,
) -> Result<(Vec<Tensor>, usize, usize), ModelError> {
    let mut done: HashMap<ImageKey, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(images.len());
    let (mut encoded, mut hits) = (0, 0);
    for image in images {
        let features = match (image.source, done.get(&image.key)) {
            (_, Some(f)) => {
                hits += 1;
                f.clone()
            }
            (ImageSource::Cached(f), None) => {
                hits += 1;
                f
            }
            (ImageSource::Pixels(pixels), None) => {
                encoded += 1;
                let mut f = model.encode_images(std::slice::from_ref(&pixels))?;
                let f = f.pop().ok_or_else(|| {
                    ModelError::Candle(candle_core::Error::Msg(
                        "the encoder returned nothing".into(),
                    ))
                })?;
                cache.insert(image.key, f.clone());
                f
            }
            (ImageSource::Repeat, None) => {
                return Err(ModelError::Candle(candle_core::Error::Msg(
                    "an image repeats one that was not given before it".into(),
                )))
            }
        };
        done.insert(image.key, features.clone());
        out.push(features);
    }
    Ok((out, encoded, hits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn key(n: u8) -> ImageKey {
        ImageKey::of_bytes(&[n])
    }

    fn text(ids: &[u32]) -> Vec<Position> {
        ids.iter().map(|&t| Position::Text(t)).collect()
    }

    #[test]
    fn positions_expand_each_image_in_order() {
        let p = positions(
            &[7, IMAGE_TOKEN_INDEX, 8, IMAGE_TOKEN_INDEX],
            &[key(1), key(2)],
            3,
        )
        .unwrap();
        assert_eq!(p.len(), 8);
        assert_eq!(p[0], Position::Text(7));
        assert_eq!(
            p[3],
            Position::Image {
                key: key(1),
                offset: 2
            }
        );
        assert_eq!(p[4], Position::Text(8));
        assert_eq!(
            p[5],
            Position::Image {
                key: key(2),
                offset: 0
            }
        );
        assert!(positions(&[IMAGE_TOKEN_INDEX], &[], 3).is_err());
        assert!(positions(&[-5], &[], 3).is_err());
    }

    #[test]
    fn reuse_is_the_common_prefix_short_of_the_last_position() {
        let cached = text(&[1, 2, 3, 4]);
        assert_eq!(reusable(&cached, &text(&[1, 2, 9, 9])), 2);
        assert_eq!(reusable(&cached, &text(&[1, 2, 3, 4, 5])), 4);
        // The whole prompt is cached: its last position still runs.
        assert_eq!(reusable(&cached, &text(&[1, 2, 3])), 2);
        assert_eq!(reusable(&cached, &text(&[1, 2, 3, 4])), 3);
        assert_eq!(reusable(&[], &text(&[1])), 0);
        assert_eq!(reusable(&cached, &[]), 0);
    }

    #[test]
    fn reuse_never_cuts_an_image() {
        let a = positions(&[5, IMAGE_TOKEN_INDEX, 6], &[key(1)], 4).unwrap();
        // Another image in the same place: only the text before it.
        let b = positions(&[5, IMAGE_TOKEN_INDEX, 6], &[key(2)], 4).unwrap();
        assert_eq!(reusable(&a, &b), 1);
        // A cache that stops inside the image (never made, but guarded).
        assert_eq!(reusable(&a[..3], &a), 1);
        // The same image and a different text after it: the whole image.
        let c = positions(&[5, IMAGE_TOKEN_INDEX, 7], &[key(1)], 4).unwrap();
        assert_eq!(reusable(&a, &c), 5);
        // A prompt ending in the image it shares: back to the image's start.
        let d = positions(&[5, IMAGE_TOKEN_INDEX], &[key(1)], 4).unwrap();
        assert_eq!(reusable(&a, &d), 1);
    }

    #[test]
    fn suffix_ids_start_after_the_reused_positions() {
        let ids = [5, IMAGE_TOKEN_INDEX, 6, IMAGE_TOKEN_INDEX, 7];
        assert_eq!(suffix_ids(&ids, 0, 4), (&ids[..], 0));
        assert_eq!(suffix_ids(&ids, 1, 4), (&ids[1..], 0));
        assert_eq!(suffix_ids(&ids, 5, 4), (&ids[2..], 1));
        assert_eq!(suffix_ids(&ids, 6, 4), (&ids[3..], 1));
        assert_eq!(suffix_ids(&ids, 10, 4), (&ids[4..], 2));
    }

    #[test]
    fn feature_cache_evicts_least_recently_used_past_its_budget() {
        let t = || Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(); // 64 bytes
        let mut c = FeatureCache::new(64 * 2);
        c.insert(key(1), t());
        c.insert(key(2), t());
        assert_eq!((c.len(), c.bytes()), (2, 128));
        assert!(c.get(&key(1)).is_some()); // 1 is now newer than 2
        c.insert(key(3), t());
        assert!(c.get(&key(2)).is_none(), "the least recently used goes");
        assert!(c.get(&key(1)).is_some() && c.get(&key(3)).is_some());
        // Re-inserting a key replaces it without double counting.
        c.insert(key(3), t());
        assert_eq!((c.len(), c.bytes()), (2, 128));
        // One entry larger than the budget stays, alone.
        let mut small = FeatureCache::new(10);
        small.insert(key(1), t());
        small.insert(key(2), t());
        assert_eq!(small.len(), 1);
        assert!(small.get(&key(2)).is_some());
        small.clear();
        assert!(small.is_empty() && small.bytes() == 0);
    }

    /// The tiny Qwen2 checkpoint (tests/util.rs builds the same), written under a temp dir.
    fn tiny_model() -> (tempfile::TempDir, Huatuo) {
        let dir = tempfile::tempdir().unwrap();
        let tok = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tokenizers/qwen2");
        crate::tiny::write_checkpoint(&crate::tiny::TinySpec::qwen2(1), &tok, dir.path()).unwrap();
        let ckpt = crate::model::Checkpoint::open(dir.path()).unwrap();
        let model = Huatuo::load(&ckpt, &Device::Cpu, DType::F32).unwrap();
        (dir, model)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Running only the suffix after a reused prefix gives the logits of a fresh prefill
    /// (to float rounding: the same products, grouped into other matrix shapes), and a failed
    /// prefill leaves the cache empty rather than half-filled.
    #[test]
    fn prefix_reuse_matches_a_fresh_prefill_and_failures_empty_the_cache() {
        let (_dir, model) = tiny_model();
        let fresh = |ids: &[i64]| {
            let mut c = PrefixCache::new(&model);
            c.prefill(&model, ids, &[], &[]).unwrap().0
        };
        let mut cache = PrefixCache::new(&model);
        let (_, reused) = cache.prefill(&model, &[10, 11, 12, 13], &[], &[]).unwrap();
        assert_eq!((reused, cache.len()), (0, 4));
        cache.step(&model, 14).unwrap();
        assert_eq!(cache.len(), 5);

        let ids = [10, 11, 12, 13, 14, 15, 16];
        let (logits, reused) = cache.prefill(&model, &ids, &[], &[]).unwrap();
        assert_eq!((reused, cache.len()), (5, 7));
        let d = max_diff(&logits, &fresh(&ids));
        assert!(d < 1e-4, "reused-prefix logits differ by {d}");

        // A shorter prompt inside the cache: truncated, the last position run again.
        let (logits, reused) = cache.prefill(&model, &ids[..3], &[], &[]).unwrap();
        assert_eq!((reused, cache.len()), (2, 3));
        assert!(max_diff(&logits, &fresh(&ids[..3])) < 1e-4);

        // A token past the vocabulary fails in the embedding: nothing stays cached.
        assert!(cache.prefill(&model, &[10, 11, 1 << 30], &[], &[]).is_err());
        assert!(cache.is_empty() && cache.kv.is_empty());
        let (_, reused) = cache.prefill(&model, &ids, &[], &[]).unwrap();
        assert_eq!(reused, 0);
    }

    #[test]
    fn keys_follow_content() {
        assert_eq!(ImageKey::of_bytes(b"abc"), ImageKey::of_bytes(b"abc"));
        assert_ne!(ImageKey::of_bytes(b"abc"), ImageKey::of_bytes(b"abd"));
        assert_eq!(
            ImageKey::of_pixels(&[1.0, 2.0]),
            ImageKey::of_pixels(&[1.0, 2.0])
        );
        assert_ne!(
            ImageKey::of_pixels(&[1.0, 2.0]),
            ImageKey::of_pixels(&[1.0, 2.5])
        );
    }
}
