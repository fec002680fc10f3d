//! A decode step's attention straight over a half-precision KV cache (issue 6).
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

use crate::kernels::pool;

/// Whether [`decode`] runs on this CPU.
pub(crate) fn supported() -> bool {
    super::q4k_x8::supported()
}

/// `softmax(q · kᵀ · scale) · v` for one query position: `q` is `[1, kv_heads, groups, d]`
/// f32 (the query heads that share a KV head, stacked), `k` and `v` are `[1, kv_heads, t, d]`
/// f16 views whose positions are contiguous rows (the cache's buffers, narrowed). Returns
/// `[1, kv_heads, groups, d]` f32.
pub fn decode(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    let (b, kv, groups, d) = q.dims4()?;
    let (_, _, t, _) = k.dims4()?;
    if b != 1 || !d.is_multiple_of(8) || !supported() {
        candle_core::bail!(
            "f16 decode attention: unsupported shape {:?} or CPU",
            q.shape()
        );
    }
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
            // SAFETY: `supported` checked the CPU and `d` (a multiple of 8); the slices
            // have the lengths `head` asks for.
            unsafe { head(q, k, v, (groups, t, d), scale, &mut scores, ctx) };
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

/// Key rows widened together for the scores, and value rows per pass of the weighted sum.
const KEY_BLOCK: usize = 8;
const VALUE_BLOCK: usize = 64;

/// One KV head: `ctx[g] = softmax(q[g] · kᵀ · scale) · v` for its `groups` query rows.
///
/// Scores, eight positions at a time: their key rows are widened once into `kf`, each query
/// row's eight dot products run in eight accumulators, reduced together into one vector
/// (no horizontal sum per dot product). The weighted sum runs eight output columns at a
/// time over 64 positions, every query row's column in a register ([`weighted_sum`]).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `q`, `ctx` hold `groups · d` values, `k` and `v`
/// `t · d`, `scores` `groups` rows of `t` rounded up to a multiple of 8, and `d` is a
/// multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn head(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    (groups, t, d): (usize, usize, usize),
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(q.len() >= groups * d && ctx.len() >= groups * d && d.is_multiple_of(8));
    debug_assert!(k.len() >= t * d && v.len() >= t * d);
    let stride = scores.len() / groups;
    debug_assert!(stride >= t && stride.is_multiple_of(8));
    let mut kf = vec![0f32; KEY_BLOCK * d];
    for p0 in (0..t).step_by(KEY_BLOCK) {
        let np = (t - p0).min(KEY_BLOCK);
        for p in 0..KEY_BLOCK {
            for c in (0..d).step_by(8) {
                let row = if p < np {
                    // SAFETY: position `p0 + p < t`, columns `c..c + 8 ≤ d` of `k` (`t · d`
                    // values, `d` a multiple of 8: the contract above).
                    unsafe { wide(k.as_ptr().add((p0 + p) * d + c)) }
                } else {
                    _mm256_setzero_ps()
                };
                // SAFETY: row `p < KEY_BLOCK`, columns `c..c + 8 ≤ d` of `kf`.
                unsafe { _mm256_storeu_ps(kf.as_mut_ptr().add(p * d + c), row) };
            }
        }
        for g in 0..groups {
            let mut acc = [_mm256_setzero_ps(); KEY_BLOCK];
            for c in (0..d).step_by(8) {
                // SAFETY: row `g < groups`, columns `c..c + 8 ≤ d` of `q` (`groups · d`).
                let qc = unsafe { _mm256_loadu_ps(q.as_ptr().add(g * d + c)) };
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: row `p < KEY_BLOCK`, columns `c..c + 8 ≤ d` of `kf`.
                    let kc = unsafe { _mm256_loadu_ps(kf.as_ptr().add(p * d + c)) };
                    *a = _mm256_fmadd_ps(qc, kc, *a);
                }
            }
            // Lane p of `sums`: position p's dot product.
            let g0 = _mm256_hadd_ps(
                _mm256_hadd_ps(acc[0], acc[1]),
                _mm256_hadd_ps(acc[2], acc[3]),
            );
            let g1 = _mm256_hadd_ps(
                _mm256_hadd_ps(acc[4], acc[5]),
                _mm256_hadd_ps(acc[6], acc[7]),
            );
            let sums = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(g0, g1),
                _mm256_permute2f128_ps::<0x31>(g0, g1),
            );
            let mut out = [0f32; KEY_BLOCK];
            // SAFETY: `out` is eight f32: one unaligned 32-byte store.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(sums, _mm256_set1_ps(scale)))
            };
            scores[g * stride + p0..g * stride + p0 + np].copy_from_slice(&out[..np]);
        }
    }
    // Softmax per query row in f32, as transformers does (the vision tower's, on 8 lanes).
    for row in scores.chunks_exact_mut(stride) {
        // SAFETY: the CPU's features include softmax's; `row` (`stride` long, a multiple of
        // 8) holds at least `t` scores (the contract above).
        unsafe { super::vit_attention::softmax(row, t) };
    }
    ctx.fill(0.0);
    for g0 in (0..groups).step_by(8) {
        let rows = (&scores[g0 * stride..], stride, t);
        let out = &mut ctx[g0 * d..];
        // SAFETY: the CPU's features are this function's; `rows` and `out` hold the
        // `groups - g0 ≥ G` rows from `g0` on, `v` its `t · d` values (the contract above).
        unsafe {
            match (groups - g0).min(8) {
                1 => weighted_sum::<1>(v, d, rows, out),
                2 => weighted_sum::<2>(v, d, rows, out),
                3 => weighted_sum::<3>(v, d, rows, out),
                4 => weighted_sum::<4>(v, d, rows, out),
                5 => weighted_sum::<5>(v, d, rows, out),
                6 => weighted_sum::<6>(v, d, rows, out),
                7 => weighted_sum::<7>(v, d, rows, out),
                _ => weighted_sum::<8>(v, d, rows, out),
            }
        }
    }
}

/// Eight f16 values widened to f32.
///
/// # Safety
/// The CPU must have AVX2 and F16C; `p` must point at eight readable f16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn wide(p: *const f16) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: eight f16 are 16 readable bytes at `p` (the contract above).
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
}

/// `ctx[g] += Σ_pos probs[g][pos] · v[pos]` for `G` query rows, row `g`'s `t`
/// probabilities at `probs[g · stride..]`: eight columns at a time, over [`VALUE_BLOCK`]
/// positions, with the `G` rows' partial sums in registers.
///
/// # Safety
/// As [`head`]; `probs` and `ctx` hold at least `G` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sum<const G: usize>(
    v: &[f16],
    d: usize,
    (probs, stride, t): (&[f32], usize, usize),
    ctx: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(probs.len() >= (G - 1) * stride + t && ctx.len() >= G * d);
    let base = ctx.as_mut_ptr();
    for p0 in (0..t).step_by(VALUE_BLOCK) {
        let np = (t - p0).min(VALUE_BLOCK);
        for c in (0..d).step_by(8) {
            // SAFETY: `g < G`: row `g`, columns `c..c + 8 ≤ d` of `ctx`, which holds `G` rows
            // of `d` (the contract above); the loads and stores below stay inside them.
            let out = |g: usize| unsafe { base.add(g * d + c) };
            // SAFETY: eight f32 at `out(g)`, as just said.
            let mut acc: [__m256; G] = std::array::from_fn(|g| unsafe { _mm256_loadu_ps(out(g)) });
            for p in p0..p0 + np {
                // SAFETY: the CPU's features are this function's; position `p < t`,
                // columns `c..c + 8 ≤ d` of `v` (`t · d` values).
                let vc = unsafe { wide(v.as_ptr().add(p * d + c)) };
                for (g, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `g < G`, `p < t ≤ stride`: inside row `g` of `probs`.
                    let prob = unsafe { *probs.get_unchecked(g * stride + p) };
                    *a = _mm256_fmadd_ps(_mm256_set1_ps(prob), vc, *a);
                }
            }
            for (g, a) in acc.iter().enumerate() {
                // SAFETY: eight f32 at `out(g)`, as for the loads.
                unsafe { _mm256_storeu_ps(out(g), *a) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn head(
    _: &[f32],
    _: &[f16],
    _: &[f16],
    _: (usize, usize, usize),
    _: f32,
    _: &mut [f32],
    _: &mut [f32],
) {
    unreachable!("f16 decode attention runs only where `supported` is true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The kernel gives candle's f32 attention over the same (f16-rounded) keys and values,
    /// on views narrowed from larger buffers as the cache hands them out.
    #[test]
    fn decode_matches_f32_attention_on_the_same_values() {
        if !supported() {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        let dev = Device::Cpu;
        // Nine query rows per KV head: a pass of eight and one of one; 29 positions: whole
        // and partial blocks.
        let (kv, groups, d, cap, t) = (3, 9, 16, 40, 29);
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
        let got = decode(&q, &k, &v, scale).expect("decode");
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
                "[{i}]: {g} vs {w}"
            );
        }
    }
}
