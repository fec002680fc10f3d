//! A decode step's attention straight over a half-precision KV cache (issues 6 and 21): this
//! file holds the entry point (shapes, views, threading); the per-head loops are in
//! `scalar.rs` (the reference, and what runs without AVX2: on aarch64 too, so the cache is
//! never converted to f32 per step anywhere), `x86_avx2.rs` and `x86_avx512.rs` (heads a
//! multiple of 16 wide; others take AVX2's loops on that CPU).
//!
//! Quantized models keep their KV cache in f16, as llama.cpp does by default: half the
//! memory (the 34B's cache at its 4,096-position context is 1 GB instead of 2) and half the
//! bytes a decode step reads from it. candle multiplies only like dtypes, so without this
//! module every step would first convert the whole cache to f32, the per-token copy the
//! issue rules out. Here each key and value row is widened to f32 in registers (F16C) as
//! it is read; queries, scores, the softmax and the weighted sum stay in f32. Prefills
//! (many queries) convert the cache views once per call and use candle's gemm.
//!
//! Per layer and decode step, against candle's f32 products on an f32 cache
//! (`examples/kvbench.rs`, 2 threads): 0.08 vs 0.42 ms at 512 positions, 0.7 vs 3.4 ms at
//! 4,096 (the 7B's 4 KV heads), 1.6 vs 6.6 ms (the 34B's 8).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use candle_core::{DType, Layout, Result, Storage, Tensor};
use half::f16;

use super::{isa, pool, Isa};

/// `$f::<G>(args…)` for `G` = `$rows` (1–8): the SIMD weighted sums take the query rows of a
/// KV head eight at a time, with a loop of its own for each count (defined before the
/// per-instruction-set modules, which use it).
#[cfg(target_arch = "x86_64")]
macro_rules! for_rows {
    ($rows:expr, $f:ident($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            _ => $f::<8>($($arg),*),
        }
    };
}

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// `softmax(q · kᵀ · scale) · v` for one query position: `q` is `[1, kv_heads, groups, d]`
/// f32 (the query heads that share a KV head, stacked), `k` and `v` are `[1, kv_heads, t, d]`
/// f16 views whose positions are contiguous rows (the cache's buffers, narrowed). Returns
/// `[1, kv_heads, groups, d]` f32.
pub fn decode(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    run(isa(), q, k, v, scale)
}

/// [`decode`] on the kernels of `set` (tests and benchmarks compare the sets this CPU runs).
pub fn decode_with(set: Isa, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    if !set.supported() {
        candle_core::bail!("this CPU does not run the {set} kernels");
    }
    run(set, q, k, v, scale)
}

fn run(set: Isa, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    let (b, kv, groups, d) = q.dims4()?;
    let (_, _, t, _) = k.dims4()?;
    if b != 1 || d == 0 {
        candle_core::bail!("f16 decode attention: unsupported shape {:?}", q.shape());
    }
    // The AVX2 loops take eight columns at a time; another width runs the scalar ones.
    let set = if d.is_multiple_of(8) {
        set
    } else {
        Isa::Scalar
    };
    if k.dims() != [1, kv, t, d] || v.dims() != [1, kv, t, d] {
        candle_core::bail!(
            "f16 decode attention: keys {:?} and values {:?} do not match queries {:?}",
            k.shape(),
            v.shape(),
            q.shape()
        );
    }
    let q = q.to_dtype(DType::F32)?.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(qc), Storage::Cpu(kc), Storage::Cpu(vc)) = (&*qs, &*ks, &*vs) else {
        candle_core::bail!("f16 decode attention runs on the CPU");
    };
    let qf = &qc.as_slice::<f32>()?[ql.start_offset()..];
    let (kf, k_head) = rows(kc.as_slice::<f16>()?, kl, d)?;
    let (vf, v_head) = rows(vc.as_slice::<f16>()?, vl, d)?;
    let mut out = vec![0f32; kv * groups * d];
    let head_len = (groups * d).max(1);
    pool::for_each_run(&mut out, head_len, true, |first, run| {
        // Rows padded to whole vectors for the vectorized softmax.
        let mut scores = vec![0f32; groups * t.div_ceil(8) * 8];
        for (i, ctx) in run.chunks_mut(head_len).enumerate() {
            let h = first + i;
            let q = &qf[h * groups * d..(h + 1) * groups * d];
            let k = &kf[h * k_head..h * k_head + t * d];
            let v = &vf[h * v_head..h * v_head + t * d];
            head(set, q, k, v, (groups, t, d), scale, &mut scores, ctx);
        }
    });
    drop((qs, ks, vs));
    Tensor::from_vec(out, (1, kv, groups, d), q.device())
}

/// The f16 elements of a `[1, heads, t, d]` view from its first element on, and the
/// distance between heads, for a view whose positions are contiguous rows of `d`.
fn rows<'a>(data: &'a [f16], layout: &Layout, d: usize) -> Result<(&'a [f16], usize)> {
    match layout.stride() {
        [_, head, row, 1] if *row == d => Ok((&data[layout.start_offset()..], *head)),
        s => candle_core::bail!("f16 decode attention: cache strides {s:?} are not rows of {d}"),
    }
}

/// One KV head: `ctx[g] = softmax(q[g] · kᵀ · scale) · v` for its `groups` query rows, on
/// `set` (one the CPU runs; `d` a multiple of 8 unless scalar).
#[allow(clippy::too_many_arguments)]
fn head(
    set: Isa,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    (groups, t, d): (usize, usize, usize),
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    // The loops' memory contract, checked once per head.
    let stride = scores.len() / groups.max(1);
    assert!(
        q.len() >= groups * d
            && ctx.len() >= groups * d
            && k.len() >= t * d
            && v.len() >= t * d
            && stride >= t
            && stride.is_multiple_of(8)
            && scores.len() == groups * stride,
        "f16 decode attention: buffers too short for {groups} rows, {t} positions of {d}"
    );
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (`isa()` or checked by `decode_with`): AVX-512 F and
        // AVX2, FMA, F16C; `d` is a multiple of 16 here; the lengths were checked.
        Isa::Avx512 if d.is_multiple_of(16) => unsafe {
            x86_avx512::head(q, k, v, (groups, t, d), scale, scores, ctx)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above: AVX2, FMA, F16C, `d` a multiple of 8.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86_avx2::head(q, k, v, (groups, t, d), scale, scores, ctx)
        },
        _ => scalar::head(q, k, v, (groups, t, d), scale, scores, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The kernel gives candle's f32 attention over the same (f16-rounded) keys and values,
    /// on views narrowed from larger buffers as the cache hands them out.
    #[test]
    fn decode_matches_f32_attention_on_the_same_values() {
        eprintln!("f16 decode attention sets run here: {:?}", Isa::available());
        // Nine query rows per KV head: a pass of eight and one of one; 29 positions: whole
        // and partial blocks; a head width that is not a multiple of 8 (scalar), one of 8
        // (AVX2's loops under the AVX-512 set), 128 (the models'), one row.
        for (kv, groups, d, cap, t) in [
            (3, 9, 16, 40, 29),
            (2, 3, 12, 8, 5),
            (1, 1, 8, 1, 1),
            (2, 7, 128, 80, 70),
        ] {
            for set in Isa::available() {
                check(set, kv, groups, d, cap, t);
            }
        }
    }

    fn check(set: Isa, kv: usize, groups: usize, d: usize, cap: usize, t: usize) {
        let dev = Device::Cpu;
        let val = |i: usize, s: u64| {
            ((i as u64 ^ s).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / 8_388_608.0 - 1.0
        };
        let q: Vec<f32> = (0..kv * groups * d).map(|i| val(i, 1)).collect();
        let q = Tensor::from_vec(q, (1, kv, groups, d), &dev).expect("q");
        let buf = |s: u64| {
            let x: Vec<f32> = (0..kv * cap * d).map(|i| val(i, s) * 2.0).collect();
            Tensor::from_vec(x, (1, kv, cap, d), &dev)
                .and_then(|x| x.to_dtype(DType::F16))
                .and_then(|x| x.narrow(2, 0, t))
                .expect("buffer")
        };
        let (k, v) = (buf(2), buf(3));
        let scale = 0.25;
        let got = decode_with(set, &q, &k, &v, scale).expect("decode");
        let (k32, v32) = (
            k.to_dtype(DType::F32).expect("k"),
            v.to_dtype(DType::F32).expect("v"),
        );
        let scores = (q.matmul(&k32.t().expect("t")).expect("qk") * scale as f64).expect("scale");
        let probs = candle_nn::ops::softmax_last_dim(&scores).expect("softmax");
        let want = probs.matmul(&v32).expect("pv");
        let got: Vec<f32> = got.flatten_all().and_then(|x| x.to_vec1()).expect("got");
        let want: Vec<f32> = want.flatten_all().and_then(|x| x.to_vec1()).expect("want");
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{set} d {d} t {t} [{i}]: {g} vs {w}"
            );
        }
    }
}
