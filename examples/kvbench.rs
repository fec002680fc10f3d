//! Times one decode step's attention over a KV cache, per layer: candle's f32 products (what
//! `--quant none` runs) against huatuo's f16 kernel (quantized models):
//! `cargo run --release --example kvbench`.
use candle_core::{DType, Device, Result, Tensor};
use std::time::Instant;

fn median_ms(f: &dyn Fn() -> Result<Tensor>, reps: usize) -> Result<f64> {
    f()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[reps / 2])
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let d = 128;
    let scale = 1.0 / (d as f32).sqrt();
    // The 7B's 4 KV heads and the 34B's 8, seven query heads each; 512 and 4,096 positions.
    for (kv, groups, t) in [(4usize, 7usize, 512usize), (4, 7, 4096), (8, 7, 4096)] {
        // Views of larger buffers, as the cache hands them out.
        let cap = t + 64;
        let q = Tensor::randn(0f32, 1.0, (1, kv, groups, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, kv, cap, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, kv, cap, d), &dev)?;
        let (k16, v16) = (k.to_dtype(DType::F16)?, v.to_dtype(DType::F16)?);
        let (k, v) = (k.narrow(2, 0, t)?, v.narrow(2, 0, t)?);
        let (k16, v16) = (k16.narrow(2, 0, t)?, v16.narrow(2, 0, t)?);
        let f32_path = || -> Result<Tensor> {
            let scores = (q.matmul(&k.t()?)? * scale as f64)?;
            candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)
        };
        let f16_path = || huatuo::kernels::kv_attention::decode(&q, &k16, &v16, scale);
        println!(
            "{kv} KV heads × {groups} queries, {t:5} positions: f32 (candle) {:6.3} ms, f16 (huatuo) {:6.3} ms",
            median_ms(&f32_path, 51)?,
            median_ms(&f16_path, 51)?
        );
    }
    Ok(())
}
