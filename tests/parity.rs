//! Parity with the Python reference (scripts/reference/model.py) on tiny checkpoints of both
//! families, in f32: logits at every position of a two-image Chinese prompt within 1e-4, and
//! greedy answers identical token for token.

use candle_core::{DType, Device, IndexOp, Tensor, D};
use huatuo::engine::Pipeline;
use huatuo::model::Logits;
use huatuo::protocol::SamplingParams;
use huatuo::protocol::{DType as ModelDType, DevicePref};
use serde_json::Value;

use crate::util::{fixture, tiny_checkpoint};

const TOLERANCE: f32 = 1e-4;

struct Reference {
    meta: Value,
    arrays: std::collections::HashMap<String, Tensor>,
}

fn reference(family: &str) -> Reference {
    let json =
        std::fs::read_to_string(fixture(&format!("parity/{family}.json"))).expect("fixture json");
    let meta: Value = serde_json::from_str(&json).expect("json");
    let arrays = candle_core::safetensors::load(
        fixture(&format!("parity/{family}.safetensors")),
        &Device::Cpu,
    )
    .expect("fixture safetensors");
    Reference { meta, arrays }
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

fn load(family: &str) -> Pipeline {
    Pipeline::load(tiny_checkpoint(family), DevicePref::Cpu, ModelDType::F32)
        .expect("load tiny checkpoint")
}

#[track_caller]
fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shapes differ");
    let diff = (ours - theirs)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    eprintln!("{what}: max abs difference {diff:e}");
    assert!(
        diff <= TOLERANCE,
        "{what}: max abs difference {diff} > {TOLERANCE}"
    );
}

fn check_logits(family: &str) {
    let r = reference(family);
    let p = load(family);
    let images: Vec<_> = r.meta["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|n| fixture(&format!("images/{}", n.as_str().expect("name"))))
        .collect();
    let prompt = r.meta["prompt"].as_str().expect("prompt");
    let (ids, _) = p.prompt_ids(&[], prompt, images.len()).expect("prompt ids");
    assert_eq!(
        ids,
        ids_of(&r.meta["prompt_ids"]),
        "prompt ids differ from the reference"
    );
    let pixels = p.load_images(&images).expect("images");
    let feats = p.model.encode_images(&pixels).expect("encode");
    let embeds = p.model.embed_prompt(&ids, &feats).expect("embed");
    let mut cache = p.model.new_cache();
    let logits = p
        .model
        .forward(&embeds, &mut cache, Logits::All)
        .expect("forward");
    let positions = r.meta["positions"].as_u64().expect("positions") as usize;
    assert_eq!(
        logits.dims(),
        &[positions, r.meta["vocab"].as_u64().expect("vocab") as usize]
    );

    let a = &r.arrays;
    assert_close(
        "log-sum-exp",
        &logits.log_sum_exp(D::Minus1).expect("lse"),
        &a["lse"],
    );
    assert_close("max", &logits.max(D::Minus1).expect("max"), &a["max"]);
    let top_ids = a["top_ids"].to_dtype(DType::U32).expect("ids");
    assert_close(
        "top-8 logits",
        &logits.gather(&top_ids, 1).expect("gather"),
        &a["top_vals"],
    );
    let cols = a["cols"].to_dtype(DType::U32).expect("cols");
    assert_close(
        "64 fixed columns",
        &logits.index_select(&cols, 1).expect("select"),
        &a["col_vals"],
    );
    // The last position decides the first answer token: compare it in full detail too.
    let last = logits.i(positions - 1).expect("last");
    assert_eq!(
        last.argmax(0)
            .and_then(|t| t.to_scalar::<u32>())
            .expect("argmax") as i64,
        a["top_ids"]
            .i((positions - 1, 0))
            .and_then(|t| t.to_scalar::<i64>())
            .expect("top id"),
    );
}

fn check_greedy(family: &str) {
    let r = reference(family);
    let p = load(family);
    let images: Vec<_> = r.meta["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|n| fixture(&format!("images/{}", n.as_str().expect("name"))))
        .collect();
    let prompt = r.meta["prompt"].as_str().expect("prompt");
    let (ids, _) = p.prompt_ids(&[], prompt, images.len()).expect("prompt ids");
    let pixels = p.load_images(&images).expect("images");
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 32,
        ..SamplingParams::default()
    };
    let answer = p
        .generate(&ids, &pixels, &params, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("generate");
    let expected: Vec<u32> = ids_of(&r.meta["greedy_ids"])
        .into_iter()
        .map(|t| t as u32)
        .collect();
    assert_eq!(
        answer.tokens, expected,
        "greedy answer differs from the reference"
    );
}

#[test]
fn qwen2_logits_match_reference_at_every_position() {
    check_logits("qwen2");
}

#[test]
fn yi_logits_match_reference_at_every_position() {
    check_logits("yi");
}

#[test]
fn qwen2_greedy_answer_matches_reference() {
    check_greedy("qwen2");
}

#[test]
fn yi_greedy_answer_matches_reference() {
    check_greedy("yi");
}
