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
    Completion, GenerateRequest, ImageRef, SamplingOverrides, SamplingParams, Stop,
    MAX_IMAGES_PER_TURN,
};

use super::session::{now, Session, Turn};
use super::template::{sanitize_user_text, with_image_placeholders};

/// A turn that cannot be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error(
        "{0} images given: at most {MAX_IMAGES_PER_TURN} per question (the model sees 576 positions per image)"
    )]
    TooManyImages(usize),
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
    pub fn next_turn(
        &self,
        text: &str,
        images: Vec<ImageRef>,
        sampling: &SamplingOverrides,
        model: &str,
    ) -> Result<(GenerateRequest, Turn), TurnError> {
        if images.len() > MAX_IMAGES_PER_TURN {
            return Err(TurnError::TooManyImages(images.len()));
        }
        let (history, history_images) = self.history();
        let user = user_text(text, images.len());
        let request = GenerateRequest {
            history,
            history_images,
            user: user.clone(),
            images: images.clone(),
            sampling: sampling.clone(),
        };
        let turn = Turn {
            text: text.to_string(),
            user,
            images,
            answer: String::new(),
            interrupted: false,
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
    /// §3.3), with the settings that produced it.
    pub fn finish(&mut self, completion: &Completion) {
        self.answer = completion.history_text.clone();
        self.interrupted = completion.stop == Stop::Cancelled;
        self.started(&completion.params);
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
    use std::path::PathBuf;

    fn image(name: &str) -> ImageRef {
        ImageRef {
            path: PathBuf::from(name),
            sha256: Some(format!("{name}-hash")),
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
    /// request carries the first exchange (answer unstripped) and the first turn's image.
    #[test]
    fn turns_build_the_reference_history() {
        let mut session = Session::new("s");
        let overrides = SamplingOverrides {
            temperature: Some(0.0),
            ..Default::default()
        };
        let (req, mut turn) = session
            .next_turn(
                "What<image> does the picture show?",
                vec![image("a.png")],
                &overrides,
                "7b",
            )
            .expect("turn 1");
        assert_eq!(req.user, "<image>\nWhat does the picture show?");
        assert!(req.history.is_empty() && req.history_images.is_empty());
        assert_eq!(req.images, vec![image("a.png")]);
        assert_eq!(req.sampling, overrides);
        assert_eq!(turn.text, "What<image> does the picture show?");
        turn.finish(&completion(" A hand.\n", Stop::Eos));
        assert!(!turn.interrupted);
        assert_eq!(
            turn.settings.as_ref().and_then(|s| s["seed"].as_u64()),
            Some(9)
        );
        session.turns.push(turn);

        let (req, _) = session
            .next_turn("Is there a fracture?", Vec::new(), &overrides, "7b")
            .expect("turn 2");
        assert_eq!(
            req.history,
            vec![Exchange {
                user: "<image>\nWhat does the picture show?".into(),
                answer: " A hand.\n".into(),
            }]
        );
        assert_eq!(req.history_images, vec![image("a.png")]);
        assert_eq!(req.user, "Is there a fracture?");
    }

    #[test]
    fn too_many_images_are_refused_before_anything_is_sent() {
        let images = (0..6).map(|i| image(&format!("{i}.png"))).collect();
        let err = Session::new("s")
            .next_turn("q", images, &SamplingOverrides::default(), "7b")
            .expect_err("six images");
        assert_eq!(err, TurnError::TooManyImages(6));
    }

    #[test]
    fn a_cut_answer_is_kept_marked() {
        let (_, mut turn) = Session::new("s")
            .next_turn("q", Vec::new(), &SamplingOverrides::default(), "7b")
            .expect("turn");
        turn.cut_short("partial");
        assert_eq!((turn.answer.as_str(), turn.interrupted), ("partial", true));
        turn.finish(&completion("all of it", Stop::Cancelled));
        assert!(turn.interrupted);
    }
}
