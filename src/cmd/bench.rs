//! `huatuo bench`: how fast and how big a model is on this machine (issue 6). Loads a
//! checkpoint (through the quantized cache), or builds one in memory with random weights at
//! the real 7B/34B geometry, then times image encoding, a 512-token prefill (`--depth`), 64
//! decode steps after it
//! and the time to first token of a one-image question and of a second turn about it, and
//! reads the peak RSS. Prints a table, or one JSON object with `--json`.
//!
//! Turns run through the engine's caches ([`crate::engine::cache`]): the first turn encodes
//! its image and prefills everything; its answer is then run as generated tokens would be,
//! and the second turn reuses the cached image features and the KV cache of the first, so
//! only its new positions are prefilled. The same second turn recomputed from scratch (what
//! the reference does every turn) is reported beside it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cli::{BenchArgs, Shape};
use crate::engine::cache::{self, Caches, ImageKey, ImageSource, PromptImage};
use crate::model::config::{ClipVisionConfig, LlavaConfig};
use crate::model::store::quant::{choose_quant, LoadOptions, WeightLayout};
use crate::model::{Checkpoint, Huatuo, KvCache, Logits};
use crate::protocol::Quant;
use crate::text::IMAGE_TOKEN_INDEX;

const DECODE_TOKENS: usize = 64;
/// Text tokens around the image in the one-image question (system + question + template),
/// and the answer and follow-up question of the second turn.
const QUESTION_TOKENS: usize = 40;
const ANSWER_TOKENS: usize = 48;
const FOLLOW_UP_TOKENS: usize = 24;

/// Everything `huatuo bench` measures.
#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    /// The kernel set that ran (`scalar`, `avx2`, `avx512`) and the CPU's features.
    pub kernels: crate::kernels::Isa,
    pub cpu_features: Vec<&'static str>,
    pub shape: Option<Shape>,
    pub layers: usize,
    pub quant: Quant,
    pub layout: WeightLayout,
    /// The dtype of the KV cache (f16 with quantized weights on a CPU).
    pub kv_cache: String,
    pub threads: usize,
    pub runs: usize,
    /// Seconds to load (or, with --shape, build) the weights; a cache conversion excluded.
    pub load_s: f64,
    /// Seconds the first load spent converting the shards to the quantized cache (--model).
    pub convert_s: Option<f64>,
    pub weight_bytes: u64,
    /// Vision tower + projector on one 336×336 image.
    pub image_encode_ms: f64,
    pub prefill_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    /// Positions of the one-image question (576 image + text).
    pub first_turn_positions: usize,
    pub first_turn_ttft_ms: f64,
    pub second_turn_positions: usize,
    /// With the engine's prefix and image caches (the first turn and its answer reused).
    pub second_turn_ttft_ms: f64,
    /// Positions of the second turn that were prefilled (not reused).
    pub second_turn_new_positions: usize,
    /// The same second turn recomputed from scratch (image re-encoded, all positions).
    pub second_turn_uncached_ttft_ms: f64,
    /// VmHWM of this process (after a cache conversion, reset first where Linux allows).
    pub peak_rss_bytes: Option<u64>,
    /// /proc/loadavg when the measurements ended: the machine may be shared.
    pub loadavg: Option<String>,
}

/// Runs the benchmark and prints its report.
pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // Read by candle and rayon when their thread pools start, which is after this.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    let runs = args.runs.max(1);
    let device = Device::Cpu;
    let available = crate::hub::memory::available_memory().unwrap_or(u64::MAX);
    let (model, mut report) = match (&args.model, args.shape) {
        (Some(dir), _) => load_checkpoint(dir, &args, available, &device)?,
        (None, Some(shape)) => build_shape(shape, &args, available, &device)?,
        (None, None) => bail!("give --model DIR or --shape 7b|34b"),
    };
    report.runs = runs;
    let context = model.context_length();
    if args.depth + DECODE_TOKENS > context {
        bail!(
            "--depth {} and {DECODE_TOKENS} decode steps exceed the model's context of {context} \
             positions: give --depth {} or less",
            args.depth,
            context.saturating_sub(DECODE_TOKENS)
        );
    }
    let kv = model.new_cache().dtype().unwrap_or(model.dtype());
    report.kv_cache = kv.as_str().to_string();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let vocab = model_vocab(&report, &args)?;
    let mut ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(100..vocab.min(30_000) as u32))
            .collect()
    };
    let s = model.image_size();
    let pixels: Vec<f32> = (0..3 * s * s)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();

    let mut encode = Vec::new();
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut uncached = Vec::new();
    let mut new_positions = 0;
    let question = ids(QUESTION_TOKENS);
    let answer = ids(ANSWER_TOKENS);
    let follow_up = ids(FOLLOW_UP_TOKENS);
    let prompt = ids(args.depth);
    let turn1 = with_image(&question);
    let mut turn2 = turn1.clone();
    turn2.extend(answer.iter().map(|&t| t as i64));
    turn2.extend(follow_up.iter().map(|&t| t as i64));
    for _ in 0..runs {
        let t = Instant::now();
        model.encode_images(std::slice::from_ref(&pixels))?;
        encode.push(t.elapsed());

        let mut cache = model.new_cache();
        let t = Instant::now();
        let mut logits = model
            .forward(&model.embed_tokens(&prompt)?, &mut cache, Logits::Last)
            .with_context(|| format!("a {}-token prompt (--depth)", prompt.len()))?;
        prefill.push(t.elapsed());
        let t = Instant::now();
        for _ in 0..DECODE_TOKENS {
            let next = argmax(&logits)?;
            logits = model.forward(&model.embed_tokens(&[next])?, &mut cache, Logits::Last)?;
        }
        decode.push(t.elapsed());
        drop(cache);

        let mut turns = Turns {
            model: &model,
            pixels: &pixels,
            caches: Caches::new(&model),
        };
        first.push(turns.time_to_first_token(&turn1)?.0);
        turns.run_answer(&answer)?;
        let (t, reused) = turns.time_to_first_token(&turn2)?;
        second.push(t);
        new_positions = turn2.len() - 1 + model.tokens_per_image() - reused;
        uncached.push(time_uncached(&model, &pixels, &turn2)?);
    }
    let ms = |d: &mut Vec<Duration>| median(d).as_secs_f64() * 1e3;
    report.image_encode_ms = ms(&mut encode);
    report.prefill_tokens = args.depth;
    report.prefill_tok_s = args.depth as f64 / median(&mut prefill).as_secs_f64();
    report.decode_tokens = DECODE_TOKENS;
    report.decode_tok_s = DECODE_TOKENS as f64 / median(&mut decode).as_secs_f64();
    let per_image = model.tokens_per_image();
    report.first_turn_positions = turn1.len() - 1 + per_image;
    report.first_turn_ttft_ms = ms(&mut first);
    report.second_turn_positions = turn2.len() - 1 + per_image;
    report.second_turn_ttft_ms = ms(&mut second);
    report.second_turn_new_positions = new_positions;
    report.second_turn_uncached_ttft_ms = ms(&mut uncached);
    report.threads = candle_core::utils::get_num_threads();
    report.peak_rss_bytes = peak_rss();
    report.loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// A conversation's turns as the engine runs them, through its feature and prefix caches.
struct Turns<'a> {
    model: &'a Huatuo,
    pixels: &'a [f32],
    caches: Caches,
}

impl Turns<'_> {
    /// Time to the first token of prompt `ids`, and how many positions were reused.
    fn time_to_first_token(&mut self, ids: &[i64]) -> Result<(Duration, usize)> {
        let t = Instant::now();
        let key = ImageKey::of_pixels(self.pixels);
        let images = ids.iter().filter(|&&i| i == IMAGE_TOKEN_INDEX).count();
        let prompt_images = (0..images)
            .map(|_| PromptImage {
                key,
                source: match self.caches.features.get(&key) {
                    Some(f) => ImageSource::Cached(f),
                    None => ImageSource::Pixels(self.pixels.to_vec()),
                },
            })
            .collect();
        let (features, _, _) =
            cache::features(self.model, prompt_images, &mut self.caches.features)?;
        let keys = vec![key; images];
        let (logits, reused) = self
            .caches
            .prefix
            .prefill(self.model, ids, &keys, &features)?;
        argmax(&logits)?;
        Ok((t.elapsed(), reused))
    }

    /// Runs an answer's tokens after the prompt, as generation does (not timed).
    fn run_answer(&mut self, answer: &[u32]) -> Result<()> {
        for &t in answer {
            self.caches.prefix.step(self.model, t)?;
        }
        Ok(())
    }
}

/// Time to the first token of `ids` recomputed from scratch: the image encoded and every
/// position prefilled from an empty KV cache (what the reference does every turn).
fn time_uncached(model: &Huatuo, pixels: &[f32], ids: &[i64]) -> Result<Duration> {
    let t = Instant::now();
    let images = ids.iter().filter(|&&i| i == IMAGE_TOKEN_INDEX).count();
    let features = model.encode_images(&vec![pixels.to_vec(); images])?;
    let embeds = model.embed_prompt(ids, &features)?;
    let mut cache: KvCache = model.new_cache();
    let logits = model.forward(&embeds, &mut cache, Logits::Last)?;
    argmax(&logits)?;
    Ok(t.elapsed())
}

/// A question with one image placeholder after its first 8 tokens (the template header).
fn with_image(question: &[u32]) -> Vec<i64> {
    let mut ids: Vec<i64> = question.iter().map(|&t| t as i64).collect();
    ids.insert(8.min(ids.len()), IMAGE_TOKEN_INDEX);
    ids
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// VmHWM from /proc/self/status, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets VmHWM (Linux ≥ 4.0) so that a cache conversion's peak does not count.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn model_vocab(report: &Report, args: &BenchArgs) -> Result<usize> {
    match (&args.model, report.shape) {
        (Some(dir), _) => Ok(Checkpoint::open(dir)?.config.vocab_size),
        (None, Some(shape)) => Ok(shape_config(shape, None)?.vocab_size),
        (None, None) => bail!("no model"),
    }
}

fn empty_report(model: String, shape: Option<Shape>, layers: usize, quant: Quant) -> Report {
    Report {
        model,
        kernels: crate::kernels::isa(),
        cpu_features: crate::kernels::cpu_features(),
        shape,
        layers,
        quant,
        layout: WeightLayout::Repacked,
        kv_cache: String::new(),
        threads: 0,
        runs: 0,
        load_s: 0.0,
        convert_s: None,
        weight_bytes: 0,
        image_encode_ms: 0.0,
        prefill_tokens: 0,
        prefill_tok_s: 0.0,
        decode_tokens: 0,
        decode_tok_s: 0.0,
        first_turn_positions: 0,
        first_turn_ttft_ms: 0.0,
        second_turn_positions: 0,
        second_turn_ttft_ms: 0.0,
        second_turn_new_positions: 0,
        second_turn_uncached_ttft_ms: 0.0,
        peak_rss_bytes: None,
        loadavg: None,
    }
}

fn load_checkpoint(
    dir: &std::path::Path,
    args: &BenchArgs,
    available: u64,
    device: &Device,
) -> Result<(Huatuo, Report)> {
    let ckpt = Checkpoint::open(dir)?;
    let bf16: u64 = ckpt
        .shards
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let quant = args
        .quant
        .unwrap_or_else(|| choose_quant(bf16, available, true));
    let cache_dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => crate::config::Dirs::from_env()?.quant_cache(),
    };
    let opts = LoadOptions {
        dtype: candle_core::DType::F32,
        quant,
        cache_dir,
    };
    let layout = layout_of(args);
    let (mut model, mut load) = Huatuo::load_with_layout(&ckpt, device, &opts, layout, &|_| {})
        .with_context(|| format!("loading {}", dir.display()))?;
    let convert_s = load.converted.then_some(load.convert_time.as_secs_f64());
    if load.converted {
        // Time the load users see from now on: from the cache.
        drop(model);
        reset_peak_rss();
        (model, load) = Huatuo::load_with_layout(&ckpt, device, &opts, layout, &|_| {})?;
    }
    let mut report = empty_report(
        dir.display().to_string(),
        None,
        ckpt.config.num_hidden_layers,
        quant,
    );
    report.load_s = load.load_time.as_secs_f64();
    report.layout = layout;
    report.convert_s = convert_s;
    report.weight_bytes = load.weight_bytes;
    Ok((model, report))
}

fn build_shape(
    shape: Shape,
    args: &BenchArgs,
    available: u64,
    device: &Device,
) -> Result<(Huatuo, Report)> {
    let cfg = shape_config(shape, args.layers)?;
    let full = shape_config(shape, None)?;
    let bf16_bytes = match shape {
        Shape::B7 => 15_880_000_000u64,
        Shape::B34 => 69_400_000_000u64,
    } * cfg.num_hidden_layers as u64
        / full.num_hidden_layers as u64;
    let quant = args
        .quant
        .unwrap_or_else(|| choose_quant(bf16_bytes, available, true));
    let t = Instant::now();
    let layout = layout_of(args);
    let model = Huatuo::synthetic(&cfg, &clip_l_336()?, quant, layout, device, 42)?;
    let mut report = empty_report(
        format!("random weights at the {} shape", shape_name(shape)),
        Some(shape),
        cfg.num_hidden_layers,
        quant,
    );
    report.load_s = t.elapsed().as_secs_f64();
    report.layout = layout;
    report.weight_bytes = model.weight_bytes() as u64;
    Ok((model, report))
}

fn layout_of(args: &BenchArgs) -> WeightLayout {
    if args.compact {
        WeightLayout::Compact
    } else {
        WeightLayout::Repacked
    }
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::B7 => "7b",
        Shape::B34 => "34b",
    }
}

/// config.json of the real checkpoints (huatuo-reference.md §1.1, §1.2), optionally with
/// fewer decoder layers.
fn shape_config(shape: Shape, layers: Option<usize>) -> Result<LlavaConfig> {
    let mut cfg = match shape {
        Shape::B7 => serde_json::json!({
            "model_type": "llava_qwen2", "hidden_size": 3584, "intermediate_size": 18944,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "vocab_size": 152064, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "max_position_embeddings": 131072, "tie_word_embeddings": false,
            "use_sliding_window": false, "mm_hidden_size": 1024,
            "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
            "tokenizer_model_max_length": 4096
        }),
        Shape::B34 => serde_json::json!({
            "model_type": "llava_llama", "hidden_size": 7168, "intermediate_size": 20480,
            "num_hidden_layers": 60, "num_attention_heads": 56, "num_key_value_heads": 8,
            "vocab_size": 64000, "rms_norm_eps": 1e-6, "rope_theta": 5000000.0,
            "max_position_embeddings": 4096, "attention_bias": false,
            "tie_word_embeddings": false, "mm_hidden_size": 1024,
            "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
            "tokenizer_model_max_length": 4096
        }),
    };
    if let Some(n) = layers {
        if n == 0 {
            bail!("--layers must be at least 1");
        }
        cfg["num_hidden_layers"] = n.into();
    }
    Ok(serde_json::from_value(cfg)?)
}

/// openai/clip-vit-large-patch14-336's vision config (huatuo-reference.md §1.3).
fn clip_l_336() -> Result<ClipVisionConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
        "num_hidden_layers": 24, "image_size": 336, "patch_size": 14,
        "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"
    }))?)
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn print_table(r: &Report) {
    let runs = if r.runs == 1 {
        "1 run".to_string()
    } else {
        format!("medians of {} runs", r.runs)
    };
    let layout = match r.layout {
        WeightLayout::Repacked => "",
        WeightLayout::Compact => " (compact)",
    };
    println!(
        "huatuo bench: {} ({} decoder layers), {}{layout}, KV cache {}, {} threads, {runs}",
        r.model, r.layers, r.quant, r.kv_cache, r.threads
    );
    println!(
        "  kernels {} on a CPU with {}",
        r.kernels,
        r.cpu_features.join(" ")
    );
    let load_note = if r.shape.is_some() {
        "random weights built in memory"
    } else {
        "from the quantized cache"
    };
    println!("  {:<28} {:>10.2} s    {load_note}", "load", r.load_s);
    if let Some(c) = r.convert_s {
        println!(
            "  {:<28} {:>10.2} s    first use: shards → GGUF cache",
            "convert", c
        );
    }
    println!("  {:<28} {:>12}", "weights in memory", gb(r.weight_bytes));
    println!(
        "  {:<28} {:>10.0} ms   CLIP ViT-L/14-336 + projector, one image",
        "image encode", r.image_encode_ms
    );
    println!(
        "  {:<28} {:>10.2} tok/s",
        format!("prefill ({} tokens)", r.prefill_tokens),
        r.prefill_tok_s
    );
    println!(
        "  {:<28} {:>10.2} tok/s",
        format!("decode ({} after {})", r.decode_tokens, r.prefill_tokens),
        r.decode_tok_s
    );
    println!(
        "  {:<28} {:>10.0} ms   one image + text, {} positions",
        "first turn: first token", r.first_turn_ttft_ms, r.first_turn_positions
    );
    println!(
        "  {:<28} {:>10.0} ms   {} positions, {} new (prefix and image caches)",
        "second turn: first token",
        r.second_turn_ttft_ms,
        r.second_turn_positions,
        r.second_turn_new_positions
    );
    println!(
        "  {:<28} {:>10.0} ms   the same turn recomputed from scratch",
        "second turn, uncached", r.second_turn_uncached_ttft_ms
    );
    if let Some(p) = r.peak_rss_bytes {
        println!("  {:<28} {:>12}", "peak RSS", gb(p));
    }
    if let Some(l) = &r.loadavg {
        println!("  {:<28} {:>12}", "load average", l);
    }
}
