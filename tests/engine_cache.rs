//! The engine's caches across turns (issue 6, acceptance 2) on the tiny checkpoints of both
//! families: a conversation answered through the image-feature and prefix KV caches gives,
//! turn by turn, exactly the reference's answers (tests/fixtures/chat/*.json) and exactly
//! what a full recomputation gives, while encoding each image once and running only the part
//! of the prompt that changed. A swap, `Unload` and `Reset` drop the caches; a cancelled
//! answer leaves them usable.

use std::time::Duration;

use std::cell::RefCell;

use huatuo::chat::images::ImageStore;
use huatuo::chat::session::{Session, Turn};
use huatuo::engine::{EngineHandle, Faults};
use huatuo::protocol::{
    Command, Completion, Event, ImageRef, RequestId, SamplingOverrides, SamplingParams, Stop,
};
use serde_json::Value;

use crate::util::{fixture, fixture_params, image, image_at, load, loaded, next, spec_of};

/// Positions of one image in the tiny checkpoints (CLIP ViT-L/14-336 geometry).
const PER_IMAGE: usize = 576;

/// A conversation as a front end keeps it, through the conversation core: the session, and
/// the turn last asked.
struct Conversation {
    session: Session,
    asked: RefCell<Option<Turn>>,
    images: ImageStore,
    _dir: tempfile::TempDir,
}

impl Default for Conversation {
    fn default() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        Self {
            session: Session::new("test"),
            asked: RefCell::new(None),
            images: ImageStore::new(dir.path().join("images")),
            _dir: dir,
        }
    }
}

impl Conversation {
    fn request(&self, user: &str, images: &[ImageRef], params: &SamplingParams) -> Command {
        let (request, turn) = self
            .session
            .next_turn(
                user,
                images.to_vec(),
                &SamplingOverrides::from(params),
                "tiny",
                &self.images,
            )
            .expect("turn");
        *self.asked.borrow_mut() = Some(turn);
        Command::Generate {
            id: 0,
            request: Box::new(request),
        }
    }

    /// Keeps the answer to the turn last asked.
    fn push(&mut self, c: &Completion) {
        let mut turn = self.asked.take().expect("a turn was asked");
        turn.finish(c, None, &self.session.turns);
        self.session.turns.push(turn);
    }
}

/// Sends `command` (a `Generate`, renumbered `id`) and returns its completion; `on_token`
/// runs after every streamed token.
#[track_caller]
fn answer(
    engine: &EngineHandle,
    id: RequestId,
    command: Command,
    mut on_token: impl FnMut(),
) -> Completion {
    let Command::Generate { request, .. } = command else {
        panic!("not a Generate");
    };
    engine
        .send(Command::Generate { id, request })
        .expect("send");
    loop {
        match next(engine) {
            Event::Started { id: i, .. } | Event::Token { id: i, .. } if i == id => on_token(),
            Event::Finished { id: i, completion } if i == id => return completion,
            other => panic!("unexpected event for request {id}: {other:?}"),
        }
    }
}

/// The turns of a fixture conversation: (user text, new images, reference answer).
fn fixture_turns(fx: &Value) -> Vec<(String, Vec<ImageRef>, String)> {
    let turns = fx["turns"].as_array().expect("turns");
    turns
        .iter()
        .map(|t| {
            let images = t["images"].as_array().expect("images");
            (
                t["user"].as_str().expect("user").to_string(),
                images
                    .iter()
                    .map(|n| image(n.as_str().expect("name")))
                    .collect(),
                t["answer"].as_str().expect("answer").to_string(),
            )
        })
        .collect()
}

/// Answers `turns` twice, each on its own engine: through the caches, and with `Reset`
/// before each turn (a full recomputation: every image encoded, the whole prompt run). Each
/// conversation continues with its own answers, as a front end would. Returns the
/// completions of both, turn by turn.
fn cached_and_recomputed(
    family: &str,
    turns: &[(String, Vec<ImageRef>, String)],
    params: &SamplingParams,
) -> Vec<(Completion, Completion)> {
    let cached = loaded(family, Faults::default());
    let fresh = loaded(family, Faults::default());
    let (mut a, mut b) = (Conversation::default(), Conversation::default());
    let mut out = Vec::new();
    for (i, (user, images, _)) in turns.iter().enumerate() {
        let id = 10 + i as u64;
        let c = answer(&cached, id, a.request(user, images, params), || {});
        fresh.send(Command::Reset).expect("send");
        let f = answer(&fresh, id, b.request(user, images, params), || {});
        let what = format!("{family} turn {}", i + 1);
        assert_eq!(
            f.stats.reused_positions, 0,
            "{what}: Reset leaves nothing to reuse"
        );
        for s in [&c.stats, &f.stats] {
            assert_eq!(
                s.images_encoded + s.images_from_cache,
                s.prompt.images,
                "{what}"
            );
        }
        a.push(&c);
        b.push(&f);
        out.push((c, f));
    }
    out
}

/// Acceptance 2: the fixture's three turns (a new image in turns 1 and 3) through the caches
/// give the reference's answers and the full recomputation's, each turn; turn 2 encodes no
/// image and reuses the image and the text before it; turn 3 encodes only its new image.
fn three_turns_match_full_recomputation(family: &str) {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("chat/{family}.json"))).expect("fixture"),
    )
    .expect("json");
    let params = fixture_params(&fx);
    let turns = fixture_turns(&fx);
    let runs = cached_and_recomputed(family, &turns, &params);
    for (i, ((c, f), (_, _, reference))) in runs.iter().zip(&turns).enumerate() {
        let what = format!("{family} turn {}", i + 1);
        assert_eq!(&c.text, reference, "{what}: the reference's answer");
        assert_eq!(c.text, f.text, "{what}: the full recomputation's answer");
        assert_eq!(c.history_text, f.history_text, "{what}");
        assert_eq!(c.stop, f.stop, "{what}");
        assert_eq!(c.stats.generated_tokens, f.stats.generated_tokens, "{what}");
        assert_eq!(c.stats.prompt, f.stats.prompt, "{what}");
        assert!(c.stats.reused_positions < c.stats.prompt.total, "{what}");
        assert_eq!(
            (f.stats.images_encoded, f.stats.images_from_cache),
            (f.stats.prompt.images, 0),
            "{what}: a recomputation encodes every image"
        );
        eprintln!(
            "{what}: {} of {} positions reused, {} image(s) encoded, {} from cache, \
             first token {:.1} ms cached vs {:.1} ms recomputed",
            c.stats.reused_positions,
            c.stats.prompt.total,
            c.stats.images_encoded,
            c.stats.images_from_cache,
            c.stats.time_to_first_token_ms,
            f.stats.time_to_first_token_ms,
        );
    }
    let s: Vec<_> = runs.iter().map(|(c, _)| &c.stats).collect();
    assert_eq!(
        (
            s[0].reused_positions,
            s[0].images_encoded,
            s[0].images_from_cache
        ),
        (0, 1, 0),
        "turn 1 starts from nothing"
    );
    assert_eq!(
        (s[1].images_encoded, s[1].images_from_cache),
        (0, 1),
        "turn 2 encodes no image"
    );
    assert!(
        s[1].reused_positions > PER_IMAGE,
        "turn 2 reuses the image and the text around it: {}",
        s[1].reused_positions
    );
    assert_eq!(
        (s[2].images_encoded, s[2].images_from_cache),
        (1, 1),
        "turn 3 encodes only its new image"
    );
    assert!(
        s[2].reused_positions > s[1].reused_positions,
        "turn 3 reuses more than turn 2 ({} vs {})",
        s[2].reused_positions,
        s[1].reused_positions
    );
}

#[test]
fn qwen2_three_turns_with_caches_match_full_recomputation() {
    three_turns_match_full_recomputation("qwen2");
}

#[test]
fn yi_three_turns_with_caches_match_full_recomputation() {
    three_turns_match_full_recomputation("yi");
}

/// Longer greedy answers without a repetition penalty (more decode steps run over reused
/// positions, so a difference would have more chances to show) and an image attached again
/// under another name (same content: served from the cache) still match the recomputation.
#[test]
fn longer_answers_and_a_renamed_image_match_full_recomputation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = tmp.path().join("same-cell-other-name.png");
    std::fs::copy(fixture("images/cell.png"), &copy).expect("copy");
    let turns = vec![
        (
            "Describe the image.".to_string(),
            vec![image("cell.png")],
            String::new(),
        ),
        ("And the borders?".to_string(), Vec::new(), String::new()),
        (
            "Is this the same picture?".to_string(),
            vec![image_at(copy)],
            String::new(),
        ),
    ];
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 48,
        repetition_penalty: 1.0,
        ..SamplingParams::default()
    };
    for family in ["qwen2", "yi"] {
        let runs = cached_and_recomputed(family, &turns, &params);
        for (i, (c, f)) in runs.iter().enumerate() {
            assert_eq!(c.text, f.text, "{family} turn {}", i + 1);
            assert_eq!(c.history_text, f.history_text, "{family} turn {}", i + 1);
        }
        let last = &runs[2].0.stats;
        assert_eq!((last.images_encoded, last.images_from_cache), (0, 2));
        eprintln!(
            "{family}: reused {:?} positions",
            runs.iter()
                .map(|(c, _)| c.stats.reused_positions)
                .collect::<Vec<_>>()
        );
    }
}

/// A model swap, `Unload` + `Load` and `Reset` each drop both caches: the next turn encodes
/// its images again and runs its whole prompt, and still answers the same.
#[test]
fn swap_unload_and_reset_drop_the_caches() {
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 8,
        ..SamplingParams::default()
    };
    let engine = loaded("qwen2", Faults::default());
    let mut conv = Conversation::default();
    let first = answer(
        &engine,
        2,
        conv.request("What is it?", &[image("cell.png")], &params),
        || {},
    );
    conv.push(&first);
    let follow_up = || conv.request("Anything abnormal?", &[], &params);
    let warm = answer(&engine, 3, follow_up(), || {});
    assert_eq!(
        (warm.stats.images_encoded, warm.stats.images_from_cache),
        (0, 1)
    );
    assert!(warm.stats.reused_positions > PER_IMAGE);

    let cold = |c: &Completion, what: &str| {
        assert_eq!(
            (
                c.stats.images_encoded,
                c.stats.images_from_cache,
                c.stats.reused_positions
            ),
            (1, 0, 0),
            "{what} drops the caches"
        );
    };
    engine.send(Command::Reset).expect("send");
    let after_reset = answer(&engine, 4, follow_up(), || {});
    cold(&after_reset, "Reset");
    assert_eq!(after_reset.text, warm.text);

    // Another model, then this one again: each load starts with empty caches.
    load(&engine, 5, spec_of("yi"));
    cold(&answer(&engine, 6, follow_up(), || {}), "a swap");
    load(&engine, 7, spec_of("qwen2"));
    let after_swap = answer(&engine, 8, follow_up(), || {});
    cold(&after_swap, "a swap back");
    assert_eq!(after_swap.text, warm.text);

    engine.send(Command::Unload).expect("send");
    assert!(matches!(next(&engine), Event::Unloaded));
    load(&engine, 9, spec_of("qwen2"));
    let after_unload = answer(&engine, 10, follow_up(), || {});
    cold(&after_unload, "Unload");
    assert_eq!(after_unload.text, warm.text);
}

/// An answer cancelled midway leaves the KV cache holding its prompt and the tokens run so
/// far; asking the same turn again reuses all of the prompt but its last position (which runs
/// for its logits) and answers exactly as a full recomputation.
fn cancelled_then_new_turn_is_exact(family: &str) {
    const N: usize = 40;
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: N,
        repetition_penalty: 1.0,
        ..SamplingParams::default()
    };
    let engine = loaded(
        family,
        Faults {
            fail_after_tokens: None,
            token_delay: Some(Duration::from_millis(5)),
        },
    );
    let mut conv = Conversation::default();
    let first = answer(
        &engine,
        2,
        conv.request("Describe the image.", &[image("cell.png")], &params),
        || {},
    );
    conv.push(&first);
    let turn2 = || conv.request("Is there anything abnormal?", &[], &params);

    let mut tokens = 0;
    let cancelled = answer(&engine, 3, turn2(), || {
        tokens += 1;
        if tokens == 3 {
            engine.cancel(3);
        }
    });
    assert_eq!(cancelled.stop, Stop::Cancelled, "{family}");
    assert!(cancelled.stats.generated_tokens < N, "{family}");

    let again = answer(&engine, 4, turn2(), || {});
    assert_eq!(
        again.stats.reused_positions,
        again.stats.prompt.total - 1,
        "{family}: the same prompt again runs only its last position"
    );
    assert_eq!(again.stats.images_encoded, 0);
    engine.send(Command::Reset).expect("send");
    let recomputed = answer(&engine, 5, turn2(), || {});
    assert_eq!(recomputed.stats.reused_positions, 0);
    assert_eq!(again.text, recomputed.text, "{family}");
    assert_eq!(again.history_text, recomputed.history_text, "{family}");
    assert!(
        recomputed.text.starts_with(&cancelled.text),
        "{family}: {:?} vs {:?}",
        cancelled.text,
        recomputed.text
    );
}

#[test]
fn qwen2_cancelled_then_new_turn_is_exact() {
    cancelled_then_new_turn_is_exact("qwen2");
}

#[test]
fn yi_cancelled_then_new_turn_is_exact() {
    cancelled_then_new_turn_is_exact("yi");
}
