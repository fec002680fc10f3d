//! Times one quantized matrix product per layout: `cargo run --release --example kbench`.
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Module, Tensor};
use huatuo::model::linear::Linear;
use std::time::Instant;

fn time(layer: &Linear, x: &Tensor, reps: usize) -> f64 {
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
    for (name, n, k) in [
        ("gate 18944x3584", 18944usize, 3584usize),
        ("down 3584x18944", 3584, 18944),
        ("clip fc1 4096x1024", 4096, 1024),
        ("clip fc2 1024x4096", 1024, 4096),
    ] {
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
        for (label, dtype, repack) in [
            ("q4k x8", GgmlDType::Q4K, true),
            ("q4k blocks", GgmlDType::Q4K, false),
            ("q8_0", GgmlDType::Q8_0, true),
        ] {
            let layer = Linear::quantize(&w, dtype, repack)?;
            let bytes = layer.bytes();
            for m in [1usize, 512, 577] {
                let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev)?;
                let t = time(&layer, &x, if m == 1 { 30 } else { 3 });
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
