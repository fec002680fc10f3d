//! The conversation core: every rule of a turn, in one place, for every front end (`ask`, the
//! TUI, and the servers and evaluators to come). A front end hands over what the user typed
//! and attached; the core returns the engine's [`GenerateRequest`] and the [`Turn`] to keep,
//! built as the reference's multi-turn `chat()` builds them (huatuo-reference.md §3.1): the
//! text sanitised (`input_moderation`), one `<image>\n` per new image in front
//! (`insert_image_placeholder`), the earlier exchanges with their unstripped answers and every
//! earlier image in order. Front ends never apply these rules themselves.
//!
//! Sampling settings travel as the user's [`SamplingOverrides`] (config.toml under flags and
//! `/set`); the engine applies them over the loaded model's defaults and reports the result,
//! which the turn records.

use crate::protocol::{
    Completion, GenerateRequest, ImageRecord, ImageRef, ModelInfo, Record, SamplingOverrides,
    SamplingParams, Stop, MAX_IMAGES_INFERENCE, MAX_IMAGES_PER_TURN,
};

use super::images::{ImageError, ImageStore};
use super::session::{now, Session, Turn};
use super::template::{sanitize_user_text, with_image_placeholders};

/// A turn that cannot be asked.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(
        "{0} images given: at most {MAX_IMAGES_PER_TURN} per question (the model sees 576 positions per image)"
    )]
    TooManyImages(usize),
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The text a turn contributes to the history: `typed` sanitised, with one `<image>\n` per new
/// image in front (reference §3.1).
pub fn user_text(typed: &str, new_images: usize) -> String {
    with_image_placeholders(&sanitize_user_text(typed), new_images)
}

impl Session {
    /// The next turn of this conversation: the request that asks it and the turn to keep (its
    /// answer empty until [`Turn::finish`]). `model` is what the user asked for (`7b`, a repo
    /// id or a path), recorded with the turn.
    ///
    /// Every image goes through `store`: this turn's are read once, checked against the hash
    /// they were shown with (when the front end knows it) and kept; earlier turns' are read
    /// from their stored copies. The request names those copies, so the engine answers about
    /// exactly the images of the conversation whatever happened to the original files; the
    /// turn keeps the original paths (for people) with the hashes.
    pub fn next_turn(
        &self,
        text: &str,
        images: Vec<ImageRef>,
        sampling: &SamplingOverrides,
        model: &str,
        store: &ImageStore,
    ) -> Result<(GenerateRequest, Turn), TurnError> {
        if images.len() > MAX_IMAGES_PER_TURN {
            return Err(TurnError::TooManyImages(images.len()));
        }
        self.turn(text, images, sampling, model, store)
    }

    /// The reference's one-shot `inference(text, images)` (cli.py:236-284), which `huatuo
    /// eval` asks as eval.py does: a single turn with at most [`MAX_IMAGES_INFERENCE`] images,
    /// the ones after them dropped as the reference drops them. (Unreadable images are the
    /// caller's to leave out first, as the reference leaves them out before counting.)
    pub fn inference(
        text: &str,
        images: Vec<ImageRef>,
        sampling: &SamplingOverrides,
        model: &str,
        store: &ImageStore,
    ) -> Result<(GenerateRequest, Turn), TurnError> {
        let images = images.into_iter().take(MAX_IMAGES_INFERENCE).collect();
        Session::new("").turn(text, images, sampling, model, store)
    }

    fn turn(
        &self,
        text: &str,
        images: Vec<ImageRef>,
        sampling: &SamplingOverrides,
        model: &str,
        store: &ImageStore,
    ) -> Result<(GenerateRequest, Turn), TurnError> {
        let (history, earlier) = self.history();
        let history_images = earlier
            .iter()
            .map(|image| {
                Ok(ImageRef {
                    path: store.resolve(image)?,
                    ..image.clone()
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        let mut kept = Vec::with_capacity(images.len());
        let mut sent = Vec::with_capacity(images.len());
        for image in &images {
            let (image, stored) = store.keep_new(image)?;
            sent.push(ImageRef {
                path: stored,
                ..image.clone()
            });
            kept.push(image);
        }
        let user = user_text(text, images.len());
        let request = GenerateRequest {
            history,
            history_images,
            user: user.clone(),
            images: sent,
            sampling: sampling.clone(),
        };
        let images = kept;
        let turn = Turn {
            text: text.to_string(),
            user,
            images,
            answer: String::new(),
            interrupted: false,
            stop: None,
            record: None,
            model: Some(model.to_string()),
            settings: None,
            time: now(),
        };
        Ok((request, turn))
    }
}

impl Turn {
    /// Records the settings the engine is answering with (its `Started` event).
    pub fn started(&mut self, params: &SamplingParams) {
        self.settings = serde_json::to_value(params).ok();
    }

    /// Records the finished (or stopped) answer as the history keeps it (unstripped, reference
    /// §3.3), with the settings that produced it and, when the model is known, the whole
    /// record (`earlier`: the turns before this one, whose images are in the prompt too).
    pub fn finish(&mut self, completion: &Completion, info: Option<&ModelInfo>, earlier: &[Turn]) {
        self.answer = completion.history_text.clone();
        self.interrupted = completion.stop == Stop::Cancelled;
        self.stop = Some(completion.stop);
        self.started(&completion.params);
        self.record = info.map(|info| {
            let images = (earlier.iter().chain([&*self]))
                .enumerate()
                .flat_map(|(i, turn)| {
                    turn.images.iter().map(move |image| ImageRecord {
                        path: image.path.clone(),
                        sha256: image.sha256.clone(),
                        turn: i + 1,
                        window: image.window.clone(),
                        frame: image.frame,
                    })
                })
                .collect();
            Record::new(info, completion, images)
        });
    }

    /// Records the part of an answer produced before it was cut short (an error, a crash).
    pub fn cut_short(&mut self, partial: &str) {
        self.answer = partial.to_string();
        self.interrupted = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Exchange, GenerationStats};
    use std::path::Path;

    /// A real file with `bytes`, as the front end attaches it (hash not yet known).
    fn image(dir: &Path, name: &str, bytes: &[u8]) -> ImageRef {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write image");
        ImageRef {
            path,
            ..ImageRef::default()
        }
    }

    fn completion(answer: &str, stop: Stop) -> Completion {
        Completion {
            text: answer.trim().to_string(),
            history_text: answer.to_string(),
            stop,
            stats: GenerationStats::default(),
            params: SamplingParams {
                seed: 9,
                ..SamplingParams::default()
            },
        }
    }

    /// Reference §3.4: the first turn with one image, then a follow-up without one; the second
    /// request carries the first exchange (answer unstripped) and the first turn's image,
    /// read from the store even after the file was replaced.
    #[test]
    fn turns_build_the_reference_history() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("store"));
        let mut session = Session::new("s");
        let overrides = SamplingOverrides {
            temperature: Some(0.0),
            ..Default::default()
        };
        // A PNG's signature, then anything: new images must look like images.
        let a = image(tmp.path(), "a.png", b"\x89PNG\r\n\x1a\nabc");
        let (req, mut turn) = session
            .next_turn(
                "What<image> does the picture show?",
                vec![a.clone()],
                &overrides,
                "7b",
                &store,
            )
            .expect("turn 1");
        // Python: hashlib.sha256(b"\x89PNG\r\n\x1a\nabc").hexdigest()
        let sha = "2cb922ecae93d405c9b9631a154ff097e354a411d5444196a182a0ffcbe63071";
        let stored = store.dir().join(sha).join("a.png");
        assert_eq!(req.user, "<image>\nWhat does the picture show?");
        assert!(req.history.is_empty() && req.history_images.is_empty());
        let sent = ImageRef {
            path: stored.clone(),
            sha256: Some(sha.into()),
            ..ImageRef::default()
        };
        assert_eq!(req.images, vec![sent.clone()]);
        assert_eq!(req.sampling, overrides);
        assert_eq!(turn.text, "What<image> does the picture show?");
        // The turn keeps the user's path, with the hash.
        assert_eq!(turn.images[0].path, a.path);
        assert_eq!(turn.images[0].sha256.as_deref(), Some(sha));
        turn.finish(&completion(" A hand.\n", Stop::Eos), None, &[]);
        assert!(!turn.interrupted);
        assert_eq!(
            turn.settings.as_ref().and_then(|s| s["seed"].as_u64()),
            Some(9)
        );
        session.turns.push(turn);

        std::fs::write(&a.path, b"another scan at the same path").expect("overwrite");
        let (req, _) = session
            .next_turn("Is there a fracture?", Vec::new(), &overrides, "7b", &store)
            .expect("turn 2");
        assert_eq!(
            req.history,
            vec![Exchange {
                user: "<image>\nWhat does the picture show?".into(),
                answer: " A hand.\n".into(),
            }]
        );
        assert_eq!(req.history_images, vec![sent]);
        assert_eq!(req.user, "Is there a fracture?");
    }

    #[test]
    fn too_many_images_are_refused_before_anything_is_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("store"));
        let images = (0..6)
            .map(|i| ImageRef {
                path: tmp.path().join(format!("{i}.png")),
                sha256: None,
                ..ImageRef::default()
            })
            .collect();
        let err = Session::new("s")
            .next_turn("q", images, &SamplingOverrides::default(), "7b", &store)
            .expect_err("six images");
        assert!(matches!(err, TurnError::TooManyImages(6)), "{err}");
    }

    #[test]
    fn a_cut_answer_is_kept_marked() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("store"));
        let (_, mut turn) = Session::new("s")
            .next_turn("q", Vec::new(), &SamplingOverrides::default(), "7b", &store)
            .expect("turn");
        turn.cut_short("partial");
        assert_eq!((turn.answer.as_str(), turn.interrupted), ("partial", true));
        turn.finish(&completion("all of it", Stop::Cancelled), None, &[]);
        assert!(turn.interrupted);
    }
}
