//! Times one quantized matrix product per layout: `cargo run --release --example kbench`.
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Module, Tensor};
use huatuo::model::linear::Linear;
use std::time::Instant;

fn time(layer: &impl Module, x: &Tensor, reps: usize) -> f64 {
    layer.forward(x).unwrap();
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            layer.forward(x).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[ts.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // `kbench [shape [layout [rows]]]`: the shapes and layouts whose names contain these
    // substrings, and only that many activation rows.
    let arg = |i: usize| std::env::args().nth(i).unwrap_or_default();
    let (only, layouts, rows) = (arg(1), arg(2), arg(3).parse::<usize>().ok());
    for (name, n, k) in [
        ("gate 18944x3584", 18944usize, 3584usize),
        ("down 3584x18944", 3584, 18944),
        ("clip fc1 4096x1024", 4096, 1024),
        ("clip fc2 1024x4096", 1024, 4096),
        ("lm_head 151936x3584", 151936, 3584),
        // Fits in the L2/L3 caches: the kernels' speed without the memory stream.
        ("cached 512x3584", 512, 3584),
    ] {
        if !name.contains(&only) {
            continue;
        }
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        if name.starts_with("clip") {
            // The f32 gemm candle runs for dense layers, for comparison.
            let dense = Linear::dense(w.clone(), None);
            let m = 577;
            let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev)?;
            let t = time(&dense, &x, 3);
            println!(
                "{name} f32 dense  m={m:3}: {:8.2} ms  {:6.1} GMAC/s",
                t * 1e3,
                (m * n * k) as f64 / t / 1e9
            );
        }
        if "q6k candle".contains(&layouts) && rows.is_none_or(|m| m == 1) {
            // candle's own q6_K block kernel at decode, for comparison.
            let q = candle_core::quantized::QTensor::quantize(&w, GgmlDType::Q6K)?;
            let bytes = q.storage_size_in_bytes();
            let mm = candle_core::quantized::QMatMul::from_qtensor(q)?;
            let x = Tensor::randn(0f32, 1.0, (1, 1, k), &dev)?;
            let t = time(&mm, &x, if n * k < 1 << 22 { 2000 } else { 30 });
            println!(
                "{name} {:10} m={:3}: {:8.2} ms  {:5.1} GB/s  {:6.1} GMAC/s",
                "q6k candle",
                1,
                t * 1e3,
                bytes as f64 / t / 1e9,
                (n * k) as f64 / t / 1e9
            );
        }
        for (label, dtype, repack) in [
            ("q4k x8", GgmlDType::Q4K, true),
            ("q4k blocks", GgmlDType::Q4K, false),
            ("q8_0", GgmlDType::Q8_0, true),
            ("q6k", GgmlDType::Q6K, false),
        ] {
            if !label.contains(&layouts) {
                continue;
            }
            let layer = Linear::quantize(&w, dtype, repack)?;
            let bytes = layer.bytes();
            // The LM head only ever multiplies the last position.
            let ms: &[usize] = if n > 100_000 { &[1] } else { &[1, 512, 577] };
            for &m in ms.iter().filter(|&&m| rows.is_none_or(|r| r == m)) {
                let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev)?;
                let reps = match (m, n * k < 1 << 22) {
                    (1, true) => 2000,
                    (1, false) => 30,
                    _ => 3,
                };
                let t = time(&layer, &x, reps);
                println!(
                    "{name} {label:10} m={m:3}: {:8.2} ms  {:5.1} GB/s  {:6.1} GMAC/s",
                    t * 1e3,
                    bytes as f64 / t / 1e9,
                    (m * n * k) as f64 / t / 1e9
                );
            }
        }
    }
    Ok(())
}
