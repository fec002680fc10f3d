//! Every kernel set this CPU runs, side by side on the same weights (issue 21): the q8_0 and
//! interleaved q4_K products at the 7B's shapes, one activation row (a decode step) and 512
//! (a prefill chunk), the q6_K product at decode, and both attention kernels.
//! The sets take turns within each repetition, so a noisy neighbour hits them alike; medians.
//!
//!     cargo run --release --example kernels -- [SHAPE-SUBSTRING] [REPS]

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use huatuo::kernels::q4k::Q4kX8;
use huatuo::kernels::{cpu_features, kv_attention, q6k, q8_0, vit_attention, Isa};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let arg = |i: usize| std::env::args().nth(i).unwrap_or_default();
    let only = arg(1);
    let reps: usize = arg(2).parse().unwrap_or(9);
    let sets: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&s| s != Isa::Scalar)
        .collect();
    println!(
        "kernel sets {sets:?}, CPU: {}, {} threads",
        cpu_features().join(" "),
        candle_core::utils::get_num_threads()
    );
    for (name, n, k) in [
        ("gate 18944x3584", 18944usize, 3584usize),
        ("down 3584x18944", 3584, 18944),
        ("qkv 4608x3584", 4608, 3584),
        ("clip fc1 4096x1024", 4096, 1024),
        ("cached 512x3584", 512, 3584),
    ] {
        if !name.contains(&only) {
            continue;
        }
        let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
        let bytes = QTensor::quantize(&w, GgmlDType::Q8_0)?.data()?.into_owned();
        let q4k_bytes = QTensor::quantize(&w, GgmlDType::Q4K)?.data()?.into_owned();
        let q4k = Q4kX8::pack(&q4k_bytes, n, k).expect("an [n, k] q4_K weight");
        for (kind, m) in [("q8_0", 1usize), ("q8_0", 512), ("q4k", 1), ("q4k", 512)] {
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            let mut out = vec![0f32; m * n];
            let inner = if m == 1 { 20 } else { 1 };
            let mut times = vec![Vec::new(); sets.len()];
            for _ in 0..reps {
                for (s, &set) in sets.iter().enumerate() {
                    let t = Instant::now();
                    for _ in 0..inner {
                        if kind == "q8_0" {
                            q8_0::matmul_with(set, &bytes, n, k, &x, m, &mut out);
                        } else {
                            q4k.matmul_with(set, &x, m, &mut out);
                        }
                    }
                    times[s].push(t.elapsed().as_secs_f64() / inner as f64);
                }
            }
            let base = median(times[0].clone());
            let size = if kind == "q8_0" {
                bytes.len()
            } else {
                q4k_bytes.len()
            };
            for (s, set) in sets.iter().enumerate() {
                let t = median(times[s].clone());
                println!(
                    "{kind} {name} m={m:3} {set:6}: {:8.3} ms  {:5.1} GB/s  {:6.1} GMAC/s  {:.2}x",
                    t * 1e3,
                    size as f64 / t / 1e9,
                    (m * n * k) as f64 / t / 1e9,
                    base / t
                );
            }
        }
    }
    // q6_K at decode: the LM head of q4k (the 7B's, 447 MB) and a layer's shape.
    for (name, n, k) in [
        ("lm_head 152064x3584", 152064usize, 3584usize),
        ("gate 18944x3584", 18944, 3584),
    ] {
        if !name.contains(&only) {
            continue;
        }
        let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
        let bytes = QTensor::quantize(&w, GgmlDType::Q6K)?.data()?.into_owned();
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (1, k), &Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let mut out = vec![0f32; n];
        let mut times = vec![Vec::new(); sets.len()];
        for _ in 0..reps {
            for (s, &set) in sets.iter().enumerate() {
                let t = Instant::now();
                q6k::matmul_with(set, &bytes, n, k, &x, 1, &mut out);
                times[s].push(t.elapsed().as_secs_f64());
            }
        }
        let base = median(times[0].clone());
        for (s, set) in sets.iter().enumerate() {
            let t = median(times[s].clone());
            println!(
                "q6k {name} m=  1 {set:6}: {:8.3} ms  {:5.1} GB/s  {:.2}x",
                t * 1e3,
                bytes.len() as f64 / t / 1e9,
                base / t
            );
        }
    }
    // The attention kernels: the vision tower's (one 336-pixel image, CLIP-L's 16 heads of
    // 64) and a decode step's over the f16 KV cache (the 7B's 4 KV heads of 128, 7 query
    // heads each) at two depths.
    if "vit attention".contains(&only) {
        let (n, heads, d) = (577usize, 16usize, 64usize);
        let t = |s: f32| Tensor::randn(0f32, s, (1, n, heads * d), &Device::Cpu);
        let (q, k, v) = (t(1.0)?, t(1.0)?, t(1.0)?);
        let mut times = vec![Vec::new(); sets.len()];
        for _ in 0..reps {
            for (s, &set) in sets.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..5 {
                    vit_attention::attention_with(set, &q, &k, &v, heads, 0.125)?;
                }
                times[s].push(start.elapsed().as_secs_f64() / 5.0);
            }
        }
        report("vit attention 577x16x64", &sets, &times);
    }
    for depth in [512usize, 4096] {
        let name = format!("kv attention t={depth}");
        if !name.contains(&only) {
            continue;
        }
        let (kv, groups, d) = (4usize, 7usize, 128usize);
        let q = Tensor::randn(0f32, 1.0, (1, kv, groups, d), &Device::Cpu)?;
        let cache =
            |_: u8| Tensor::randn(0f32, 1.0, (1, kv, depth, d), &Device::Cpu)?.to_dtype(DType::F16);
        let (k, v) = (cache(0)?, cache(1)?);
        let mut times = vec![Vec::new(); sets.len()];
        for _ in 0..reps {
            for (s, &set) in sets.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..50 {
                    kv_attention::decode_with(set, &q, &k, &v, 0.088)?;
                }
                times[s].push(start.elapsed().as_secs_f64() / 50.0);
            }
        }
        report(&name, &sets, &times);
    }
    Ok(())
}

/// One line per set: its median time and its speed against the first set's.
fn report(name: &str, sets: &[Isa], times: &[Vec<f64>]) {
    let base = median(times[0].clone());
    for (s, set) in sets.iter().enumerate() {
        let t = median(times[s].clone());
        println!("{name} {set:6}: {:8.3} ms  {:.2}x", t * 1e3, base / t);
    }
}
