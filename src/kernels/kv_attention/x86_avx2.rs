//! The decode attention over the f16 KV cache on AVX2, FMA and F16C ([`super`]).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use half::f16;

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
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn head(
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
        unsafe { crate::kernels::softmax::x86_avx2::softmax(row, t) };
    }
    ctx.fill(0.0);
    for g0 in (0..groups).step_by(8) {
        let rows = (&scores[g0 * stride..], stride, t);
        let out = &mut ctx[g0 * d..];
        // SAFETY: the CPU's features are this function's; `rows` and `out` hold the
        // `groups - g0 ≥ G` rows from `g0` on, `v` its `t · d` values (the contract above).
        unsafe { for_rows!((groups - g0).min(8), weighted_sum(v, d, rows, out)) }
    }
}

/// Eight f16 values widened to f32.
///
/// # Safety
/// The CPU must have AVX2 and F16C; `p` must point at eight readable f16.
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
