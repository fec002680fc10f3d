//! The engine protocol end to end on the tiny checkpoints of both families: event order,
//! cancellation, failures with the partial answer, model swaps with the conversation kept,
//! and three-turn conversations answered exactly as the reference's `chat()`
//! (tests/fixtures/chat/*.json, from scripts/reference/chat.py).

use huatuo::chat::conversation::user_text;
use huatuo::chat::images::ImageStore;
use huatuo::chat::session::Session;
use huatuo::engine::{local_resolver, Engine, EngineHandle, Faults, Pipeline};
use huatuo::protocol::{
    Command, Completion, DType as ModelDType, DevicePref, Event, Exchange, FailureKind,
    GenerateRequest, ImageRef, LoadStage, PromptStats, RequestId, SamplingOverrides,
    SamplingParams, Stop,
};
use serde_json::Value;

use crate::util::{
    fixture, fixture_params, greedy, image, image_at, load, loaded, next, spec, spec_of,
    tiny_checkpoint, TIMEOUT,
};

fn request(
    history: &[Exchange],
    history_images: &[ImageRef],
    user: &str,
    images: &[ImageRef],
    params: SamplingParams,
) -> Box<GenerateRequest> {
    Box::new(GenerateRequest {
        history: history.to_vec(),
        history_images: history_images.to_vec(),
        user: user_text(user, images.len()),
        images: images.to_vec(),
        sampling: SamplingOverrides::from(&params),
    })
}

/// The history entry of a finished turn, as the conversation core records it.
fn exchange(request: &GenerateRequest, c: &Completion) -> Exchange {
    Exchange {
        user: request.user.clone(),
        answer: c.history_text.clone(),
    }
}

/// The events of one generation, checked to come in the order Started → Token* → end.
#[derive(Debug)]
struct Run {
    started: Option<PromptStats>,
    tokens: Vec<String>,
    end: Event,
}

impl Run {
    fn streamed(&self) -> String {
        self.tokens.concat()
    }

    #[track_caller]
    fn completion(&self) -> &Completion {
        match &self.end {
            Event::Finished { completion, .. } => completion,
            other => panic!("expected Finished, got {other:?}"),
        }
    }

    #[track_caller]
    fn failure(&self) -> (FailureKind, &str, &str) {
        match &self.end {
            Event::Failed {
                kind,
                error,
                partial,
                ..
            } => (*kind, error.as_str(), partial.as_str()),
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

/// Collects the events of request `id` until it ends. `on_token` runs after each Token.
#[track_caller]
fn collect(engine: &EngineHandle, id: RequestId, mut on_token: impl FnMut(&str)) -> Run {
    let mut started = None;
    let mut tokens = Vec::new();
    loop {
        match next(engine) {
            Event::Started { id: i, prompt, .. } if i == id => {
                assert!(started.is_none(), "Started twice");
                assert!(tokens.is_empty(), "Started after a Token");
                started = Some(prompt);
            }
            Event::Token { id: i, text } if i == id => {
                assert!(started.is_some(), "Token before Started");
                assert!(!text.is_empty(), "empty Token event");
                on_token(&text);
                tokens.push(text);
            }
            end @ (Event::Finished { id: i, .. } | Event::Failed { id: i, .. }) if i == id => {
                return Run {
                    started,
                    tokens,
                    end,
                }
            }
            other => panic!("unexpected event for request {id}: {other:?}"),
        }
    }
}

#[track_caller]
fn generate(engine: &EngineHandle, id: RequestId, request: Box<GenerateRequest>) -> Run {
    engine
        .send(Command::Generate { id, request })
        .expect("send");
    collect(engine, id, |_| {})
}

/// Started, then non-empty Tokens that concatenate to the answer, then Finished with its
/// stats; the answer is the reference's single-turn answer (parity fixture).
#[test]
fn streams_started_tokens_finished_in_order() {
    let engine = Engine::spawn(local_resolver());
    let (progress, info) = load(&engine, 1, spec_of("qwen2"));
    assert_eq!(
        progress,
        [(LoadStage::Weights, 0, 1), (LoadStage::Weights, 1, 1)],
        "a first load has nothing to unload"
    );
    assert_eq!(info.family, "qwen2");
    assert_eq!((info.dtype.as_str(), info.device.as_str()), ("f32", "cpu"));
    assert_eq!(info.quantization, "none");
    assert_eq!((info.context_length, info.tokens_per_image), (4096, 576));
    assert!(info.path.is_absolute() && info.path.is_dir());
    assert_eq!(
        (info.repo.as_deref(), info.revision.as_deref()),
        (None, None)
    );

    let parity: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("parity/qwen2.json")).expect("fixture"),
    )
    .expect("json");
    let ask = &parity["ask"];
    let max_new_tokens = ask["max_new_tokens"].as_u64().expect("n") as usize;
    let run = generate(
        &engine,
        7,
        request(
            &[],
            &[],
            ask["prompt"].as_str().expect("prompt"),
            &[image(ask["image"].as_str().expect("image"))],
            greedy(max_new_tokens),
        ),
    );
    let c = run.completion();
    assert!(run.tokens.len() > 1, "the answer should stream in pieces");
    assert_eq!(
        run.streamed(),
        c.text,
        "Token texts concatenate to the answer"
    );
    assert_eq!(c.text, ask["answer"].as_str().expect("answer"));
    assert_eq!(c.stop, Stop::Length);
    assert_eq!(c.history_text.trim(), c.text);
    let prompt = run.started.expect("Started");
    assert_eq!(c.stats.prompt, prompt);
    assert_eq!((prompt.images, prompt.image_tokens), (1, 576));
    assert_eq!(prompt.total, prompt.text_tokens + 576);
    assert_eq!(prompt.context_length, 4096);
    let s = &c.stats;
    assert_eq!(s.generated_tokens, max_new_tokens);
    assert!(s.image_encode_ms > 0.0 && s.time_to_first_token_ms >= s.image_encode_ms);
    assert!(s.prefill_tokens_per_s > 0.0 && s.decode_tokens_per_s > 0.0);
    engine.shutdown();
}

/// Cancel reaches a busy worker: the answer stops with `Stop::Cancelled` and keeps what was
/// streamed, a prefix of the uncancelled greedy answer. A request cancelled while queued ends
/// before it starts; cancelling unknown ids changes nothing.
#[test]
fn cancel_mid_generation_keeps_a_prefix() {
    const N: usize = 200;
    let engine = loaded("qwen2", Faults::default());
    let ask = || {
        request(
            &[],
            &[],
            "Describe the image.",
            &[image("cell.png")],
            greedy(N),
        )
    };
    let full = generate(&engine, 2, ask());
    let full = full.completion().clone();
    assert_eq!(full.stop, Stop::Length, "the test needs a long answer");

    engine
        .send(Command::Generate {
            id: 3,
            request: ask(),
        })
        .expect("send");
    let mut cancelled = false;
    let run = collect(&engine, 3, |_| {
        if !cancelled {
            engine.cancel(3);
            cancelled = true;
        }
    });
    let c = run.completion();
    assert_eq!(c.stop, Stop::Cancelled);
    assert!(!c.text.is_empty());
    assert_eq!(
        run.streamed(),
        c.text,
        "the partial answer is what was streamed"
    );
    assert!(
        full.text.starts_with(&c.text),
        "partial {:?} is not a prefix of {:?}",
        c.text,
        full.text
    );
    eprintln!(
        "cancelled after {} of {N} tokens: {:?}",
        c.stats.generated_tokens, c.text
    );
    assert!(
        c.stats.generated_tokens < N,
        "stopped after {} tokens",
        c.stats.generated_tokens
    );
    assert!(full.history_text.starts_with(&c.history_text));

    // Request 5 is queued behind 4 and cancelled before it starts: no Started, no tokens.
    engine
        .send(Command::Generate {
            id: 4,
            request: ask(),
        })
        .expect("send");
    engine
        .send(Command::Generate {
            id: 5,
            request: ask(),
        })
        .expect("send");
    engine.cancel(5);
    engine.cancel(99); // unknown: ignored
    engine.send(Command::Cancel { id: 100 }).expect("send"); // the same, as a message
    let mut first = true;
    let run4 = collect(&engine, 4, |_| {
        if first {
            engine.cancel(4);
            first = false;
        }
    });
    assert_eq!(run4.completion().stop, Stop::Cancelled);
    let run5 = collect(&engine, 5, |_| {
        panic!("a cancelled queued request streamed")
    });
    assert!(run5.started.is_none());
    let c5 = run5.completion();
    assert_eq!(
        (c5.stop, c5.text.as_str(), c5.stats.generated_tokens),
        (Stop::Cancelled, "", 0)
    );
    assert_eq!(c5.stats.prompt.images, 1, "the prompt was still measured");

    // Stale cancellations do not leak into later requests with other ids.
    let again = generate(&engine, 6, ask());
    assert_eq!(again.completion().text, full.text);
    assert_eq!(again.completion().stop, Stop::Length);
}

/// A computation failure in the middle of an answer is reported with the text streamed so
/// far (a fault injected after 5 tokens, as a candle error would surface).
#[test]
fn failure_mid_generation_keeps_the_partial_answer() {
    let engine = Engine::spawn_with_faults(
        local_resolver(),
        Faults {
            token_delay: None,
            fail_after_tokens: Some(5),
        },
    );
    load(&engine, 1, spec_of("qwen2"));
    let parity: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("parity/qwen2.json")).expect("fixture"),
    )
    .expect("json");
    let run = generate(
        &engine,
        2,
        request(
            &[],
            &[],
            "What does the picture show?",
            &[image("cell.png")],
            greedy(24),
        ),
    );
    assert!(run.started.is_some());
    let (kind, error, partial) = run.failure();
    assert_eq!(kind, FailureKind::Internal);
    assert!(error.contains("injected fault after 5 tokens"), "{error}");
    assert!(!error.contains('\n'));
    assert!(!partial.is_empty());
    assert_eq!(partial, run.streamed(), "the partial is what was streamed");
    let full = parity["ask"]["answer"].as_str().expect("answer");
    assert!(full.starts_with(partial), "{partial:?} vs {full:?}");
}

/// An image removed between turns fails the next turn as bad input naming the file, before
/// anything is generated; the engine keeps serving.
#[test]
fn missing_history_image_is_bad_input() {
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = tmp.path().join("scan.png");
    std::fs::copy(fixture("images/cell.png"), &copy).expect("copy");
    let engine = loaded("yi", Faults::default());
    let ask = request(
        &[],
        &[],
        "What is this?",
        &[image_at(copy.clone())],
        greedy(8),
    );
    let first = generate(&engine, 2, ask.clone());
    let history = [exchange(&ask, first.completion())];
    std::fs::remove_file(&copy).expect("rm");
    let run = generate(
        &engine,
        3,
        request(
            &history,
            &[image_at(copy.clone())],
            "And now?",
            &[],
            greedy(8),
        ),
    );
    assert!(run.started.is_none() && run.tokens.is_empty());
    let (kind, error, partial) = run.failure();
    assert_eq!(kind, FailureKind::BadInput);
    assert!(error.contains("scan.png"), "{error}");
    assert_eq!(partial, "");
    // Placeholders and images that disagree are refused, not clamped as the reference does.
    let run = generate(
        &engine,
        4,
        request(&history, &[], "And now?", &[], greedy(8)),
    );
    let (kind, error, _) = run.failure();
    assert_eq!(kind, FailureKind::BadInput);
    assert!(
        error.contains("1 image placeholders but 0 images"),
        "{error}"
    );
    // Still serving.
    let ok = generate(&engine, 5, request(&[], &[], "Hello", &[], greedy(4)));
    assert_eq!(ok.completion().stats.generated_tokens, 4);
}

/// Too many images in one turn and prompts past the context window are bad input.
#[test]
fn limits_are_bad_input() {
    let engine = loaded("qwen2", Faults::default());
    // A single question takes up to 6 images (the reference's inference()), a turn of a
    // conversation up to 5 (its chat()).
    let seven = vec![image("cell.png"); 7];
    let run = generate(&engine, 2, request(&[], &[], "Compare", &seven, greedy(4)));
    let (kind, error, _) = run.failure();
    assert_eq!(kind, FailureKind::BadInput);
    assert!(error.contains("7 images in one turn: at most 6"), "{error}");
    let six = vec![image("cell.png"); 6];
    let earlier = [Exchange {
        user: "Hi".into(),
        answer: "Hello".into(),
    }];
    let run = generate(
        &engine,
        6,
        request(&earlier, &[], "Compare", &six, greedy(4)),
    );
    let (kind, error, _) = run.failure();
    assert_eq!(kind, FailureKind::BadInput);
    assert!(error.contains("6 images in one turn: at most 5"), "{error}");

    let long = "word ".repeat(5000);
    let run = generate(
        &engine,
        3,
        request(&[], &[], &long, &[image("cell.png")], greedy(4)),
    );
    let (kind, error, _) = run.failure();
    assert_eq!(kind, FailureKind::BadInput);
    assert!(error.contains("context window is 4096"), "{error}");
    assert!(error.contains("1 image × 576"), "{error}");

    let bad = SamplingParams {
        top_p: 0.0,
        ..greedy(4)
    };
    let run = generate(&engine, 4, request(&[], &[], "Hi", &[], bad));
    assert_eq!(run.failure().0, FailureKind::BadInput);
}

/// qwen2 → yi in one engine: the old model is dropped first (Unload progress before
/// Weights), and a second turn on the new model answers with the full history, images
/// included — exactly what the yi pipeline answers to the same conversation directly.
#[test]
fn swap_models_keeps_the_conversation() {
    let engine = loaded("qwen2", Faults::default());
    let ask = request(
        &[],
        &[],
        "What does the picture show?",
        &[image("cell.png")],
        greedy(12),
    );
    let turn1 = generate(&engine, 2, ask.clone());
    let history = vec![exchange(&ask, turn1.completion())];
    assert_eq!(history[0].user, "<image>\nWhat does the picture show?");

    let (progress, info) = load(&engine, 3, spec_of("yi"));
    // The new model loads before the old one goes (both fit).
    assert_eq!(
        progress,
        [
            (LoadStage::Weights, 0, 1),
            (LoadStage::Weights, 1, 1),
            (LoadStage::Unload, 0, 1),
            (LoadStage::Unload, 1, 1),
        ]
    );
    assert_eq!(info.family, "llama");

    let user = "Compare it with this one.";
    let ask = request(
        &history,
        &[image("cell.png")],
        user,
        &[image("hubble_deep_field.jpg")],
        greedy(12),
    );
    assert_eq!(ask.user, format!("<image>\n{user}"));
    let run = generate(&engine, 4, ask);
    let c = run.completion();

    // The same turn computed directly with the yi pipeline.
    let yi =
        Pipeline::load(tiny_checkpoint("yi"), DevicePref::Cpu, ModelDType::F32).expect("load yi");
    let (ids, _) = yi.prompt_ids(&history, user, 1).expect("ids");
    let text_tokens = ids.iter().filter(|&&t| t >= 0).count();
    let prompt = run.started.expect("Started");
    assert_eq!((prompt.images, prompt.image_tokens), (2, 2 * 576));
    assert_eq!(prompt.text_tokens, text_tokens);
    assert!(
        text_tokens > 20,
        "the history's text is in the prompt ({text_tokens} tokens)"
    );
    assert_eq!(prompt.total, text_tokens + 2 * 576);
    let pixels = yi
        .load_images(&[
            fixture("images/cell.png"),
            fixture("images/hubble_deep_field.jpg"),
        ])
        .expect("images");
    let direct = yi
        .generate(&ids, &pixels, &greedy(12), |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("generate");
    assert_eq!(c.text, direct.text);
    assert_eq!(c.history_text, direct.raw);
}

/// Issue 14: a swap that fails keeps the model that was loaded and says so (`Failed`, then
/// `Restored` with it), without ever unloading it; the next question is answered by it. Also
/// for a directory that is not a checkpoint (it fails after resolving). With no model loaded
/// before, a failed load leaves none.
#[test]
fn failed_swap_keeps_the_loaded_model() {
    let engine = loaded("qwen2", Faults::default());
    let before = generate(&engine, 2, request(&[], &[], "Hi", &[], greedy(4)));
    let before = before.completion().text.clone();
    let empty = tempfile::tempdir().expect("tmp");
    for (id, source) in [
        (3, "/no/such/checkpoint".to_string()),
        (5, empty.path().to_string_lossy().into_owned()),
    ] {
        engine
            .send(Command::Load {
                id,
                spec: spec(&source),
            })
            .expect("send");
        let mut stages = Vec::new();
        let error = loop {
            match next(&engine) {
                Event::LoadProgress { id: i, stage, .. } if i == id => stages.push(stage),
                Event::Failed {
                    id: i,
                    kind,
                    error,
                    partial,
                } if i == id => {
                    assert_eq!((kind, partial.as_str()), (FailureKind::Model, ""));
                    break error;
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(!stages.contains(&LoadStage::Unload), "{stages:?}");
        assert!(error.contains(&source), "{error}");
        assert!(error.ends_with("is still loaded"), "{error}");
        match next(&engine) {
            Event::Restored { id: i, info } if i == id => assert_eq!(info.family, "qwen2"),
            other => panic!("expected Restored, got {other:?}"),
        }
        let run = generate(&engine, id + 1, request(&[], &[], "Hi", &[], greedy(4)));
        assert_eq!(run.completion().text, before, "the same model answers");
    }

    let fresh = Engine::spawn(local_resolver());
    fresh
        .send(Command::Load {
            id: 1,
            spec: spec("/no/such/checkpoint"),
        })
        .expect("send");
    let error = loop {
        match next(&fresh) {
            Event::LoadProgress { .. } => {}
            Event::Failed { error, .. } => break error,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(error.contains("no model is loaded"), "{error}");
    let run = generate(&fresh, 2, request(&[], &[], "Hi", &[], greedy(4)));
    let (kind, error, _) = run.failure();
    assert_eq!(kind, FailureKind::Model);
    assert!(error.starts_with("no model loaded"), "{error}");
    let engine = fresh;

    // Loading again recovers.
    load(&engine, 6, spec_of("yi"));
    let ok = generate(&engine, 7, request(&[], &[], "Hi", &[], greedy(4)));
    assert_eq!(ok.completion().stats.generated_tokens, 4);
}

/// Unload frees the model; generation is then refused until the next Load.
#[test]
fn unload_then_generate_fails() {
    let engine = loaded("yi", Faults::default());
    engine.send(Command::Unload).expect("send");
    assert_eq!(next(&engine), Event::Unloaded);
    let run = generate(&engine, 2, request(&[], &[], "Hi", &[], greedy(4)));
    let (kind, error, partial) = run.failure();
    assert_eq!((kind, partial), (FailureKind::Model, ""));
    assert!(error.starts_with("no model loaded"), "{error}");
    engine.send(Command::Shutdown).expect("send");
    assert!(
        engine.events().recv_timeout(TIMEOUT).is_err(),
        "the worker ends on Shutdown"
    );
    assert!(engine.send(Command::Unload).is_err());
}

/// A three-turn conversation (image, no image, a new image) through the engine answers turn
/// by turn exactly what the reference's `chat()` answers, and stores what it stores.
fn chat_parity(family: &str) {
    let path = fixture(&format!("chat/{family}.json"));
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    let params = fixture_params(&fx);
    let engine = loaded(family, Faults::default());
    // min_new_tokens is no user setting: the fixture's must be the default.
    assert_eq!(
        params.min_new_tokens,
        SamplingParams::default().min_new_tokens
    );
    // Through the conversation core, as every front end goes.
    let mut session = Session::new("parity");
    let overrides = SamplingOverrides::from(&params);
    let tmp = tempfile::tempdir().expect("tmp");
    let store = ImageStore::new(tmp.path().join("images"));
    for (i, turn) in fx["turns"].as_array().expect("turns").iter().enumerate() {
        let images: Vec<ImageRef> = turn["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|n| image(n.as_str().expect("name")))
            .collect();
        let (ask, mut kept) = session
            .next_turn(
                turn["user"].as_str().expect("user"),
                images,
                &overrides,
                family,
                &store,
            )
            .expect("turn");
        let what = format!("{family} turn {}", i + 1);
        assert_eq!(
            ask.user,
            turn["user_with_placeholders"].as_str().expect("u"),
            "{what}"
        );
        let run = generate(&engine, 10 + i as u64, Box::new(ask));
        let c = run.completion();
        let ids: Vec<i64> = turn["prompt_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect();
        let sentinels = ids.iter().filter(|&&t| t < 0).count();
        let prompt = run.started.expect("Started");
        assert_eq!(prompt.images, sentinels, "{what}");
        assert_eq!(prompt.text_tokens, ids.len() - sentinels, "{what}");
        assert_eq!(
            prompt.total,
            ids.len() - sentinels + 576 * sentinels,
            "{what}"
        );
        assert_eq!(c.text, turn["answer"].as_str().expect("answer"), "{what}");
        assert_eq!(
            c.history_text,
            turn["history_answer"].as_str().expect("history"),
            "{what}"
        );
        assert_eq!(
            c.stats.generated_tokens,
            turn["ids"].as_array().expect("ids").len(),
            "{what}"
        );
        assert_eq!(run.streamed(), c.text, "{what}");
        kept.finish(c, None, &session.turns);
        session.turns.push(kept);
    }
}

#[test]
fn qwen2_three_turn_chat_matches_reference() {
    chat_parity("qwen2");
}

#[test]
fn yi_three_turn_chat_matches_reference() {
    chat_parity("yi");
}
