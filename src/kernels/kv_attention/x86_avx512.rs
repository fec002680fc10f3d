//! The decode attention over the f16 KV cache on AVX-512 F ([`super`]): AVX2's loops
//! ([`super::x86_avx2`]) sixteen columns to a register, for heads a multiple of 16 wide (the
//! 7B's and the 34B's are 128): the dot products take half the loads and multiply-adds, the
//! weighted sum half the passes over the values. The softmax is AVX2's.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use half::f16;

/// Key rows widened together for the scores, and value rows per pass of the weighted sum.
const KEY_BLOCK: usize = 8;
const VALUE_BLOCK: usize = 64;

/// One KV head: `ctx[g] = softmax(q[g] · kᵀ · scale) · v` for its `groups` query rows (as
/// AVX2's `head`): eight positions' dot products in eight 16-lane accumulators, each folded
/// to eight lanes and the eight reduced together into one vector.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F; `q`, `ctx` hold `groups · d` values, `k`
/// and `v` `t · d`, `scores` `groups` rows of `t` rounded up to a multiple of 8, and `d` is a
/// multiple of 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn head(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    (groups, t, d): (usize, usize, usize),
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    debug_assert!(q.len() >= groups * d && ctx.len() >= groups * d && d.is_multiple_of(16));
    debug_assert!(k.len() >= t * d && v.len() >= t * d);
    let stride = scores.len() / groups;
    debug_assert!(stride >= t && stride.is_multiple_of(8));
    let mut kf = vec![0f32; KEY_BLOCK * d];
    for p0 in (0..t).step_by(KEY_BLOCK) {
        let np = (t - p0).min(KEY_BLOCK);
        for p in 0..KEY_BLOCK {
            for c in (0..d).step_by(16) {
                let row = if p < np {
                    // SAFETY: position `p0 + p < t`, columns `c..c + 16 ≤ d` of `k` (`t · d`
                    // values, `d` a multiple of 16: the contract above).
                    unsafe { wide(k.as_ptr().add((p0 + p) * d + c)) }
                } else {
                    _mm512_setzero_ps()
                };
                // SAFETY: row `p < KEY_BLOCK`, columns `c..c + 16 ≤ d` of `kf`.
                unsafe { _mm512_storeu_ps(kf.as_mut_ptr().add(p * d + c), row) };
            }
        }
        for g in 0..groups {
            let mut acc = [_mm512_setzero_ps(); KEY_BLOCK];
            for c in (0..d).step_by(16) {
                // SAFETY: row `g < groups`, columns `c..c + 16 ≤ d` of `q` (`groups · d`).
                let qc = unsafe { _mm512_loadu_ps(q.as_ptr().add(g * d + c)) };
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: row `p < KEY_BLOCK`, columns `c..c + 16 ≤ d` of `kf`.
                    let kc = unsafe { _mm512_loadu_ps(kf.as_ptr().add(p * d + c)) };
                    *a = _mm512_fmadd_ps(qc, kc, *a);
                }
            }
            let half = acc.map(|a| {
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
                _mm256_add_ps(_mm512_castps512_ps256(a), hi)
            });
            // Lane p of `sums`: position p's dot product.
            let g0 = _mm256_hadd_ps(
                _mm256_hadd_ps(half[0], half[1]),
                _mm256_hadd_ps(half[2], half[3]),
            );
            let g1 = _mm256_hadd_ps(
                _mm256_hadd_ps(half[4], half[5]),
                _mm256_hadd_ps(half[6], half[7]),
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

/// Sixteen f16 values widened to f32.
///
/// # Safety
/// The CPU must have AVX-512 F; `p` must point at sixteen readable f16.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
unsafe fn wide(p: *const f16) -> __m512 {
    // SAFETY: sixteen f16 are 32 readable bytes at `p` (the contract above).
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p as *const __m256i) })
}

/// `ctx[g] += Σ_pos probs[g][pos] · v[pos]` for `G` query rows (as AVX2's), sixteen columns
/// at a time.
///
/// # Safety
/// As [`head`]; `probs` and `ctx` hold at least `G` rows.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn weighted_sum<const G: usize>(
    v: &[f16],
    d: usize,
    (probs, stride, t): (&[f32], usize, usize),
    ctx: &mut [f32],
) {
    debug_assert!(probs.len() >= (G - 1) * stride + t && ctx.len() >= G * d);
    let base = ctx.as_mut_ptr();
    for p0 in (0..t).step_by(VALUE_BLOCK) {
        let np = (t - p0).min(VALUE_BLOCK);
        for c in (0..d).step_by(16) {
            // SAFETY: `g < G`: row `g`, columns `c..c + 16 ≤ d` of `ctx`, which holds `G`
            // rows of `d` (the contract above); the loads and stores below stay inside them.
            let out = |g: usize| unsafe { base.add(g * d + c) };
            // SAFETY: sixteen f32 at `out(g)`, as just said.
            let mut acc: [__m512; G] = std::array::from_fn(|g| unsafe { _mm512_loadu_ps(out(g)) });
            for p in p0..p0 + np {
                // SAFETY: the CPU's features are this function's; position `p < t`,
                // columns `c..c + 16 ≤ d` of `v` (`t · d` values).
                let vc = unsafe { wide(v.as_ptr().add(p * d + c)) };
                for (g, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `g < G`, `p < t ≤ stride`: inside row `g` of `probs`.
                    let prob = unsafe { *probs.get_unchecked(g * stride + p) };
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(prob), vc, *a);
                }
            }
            for (g, a) in acc.iter().enumerate() {
                // SAFETY: sixteen f32 at `out(g)`, as for the loads.
                unsafe { _mm512_storeu_ps(out(g), *a) };
            }
        }
    }
}
