//! Softmax over a row of scores, shared by the attention kernels (decode over the f16 KV
//! cache, the vision tower's): the maximum subtracted, `exp`, divided by the sum, as candle's
//! and PyTorch's softmax. [`scalar`] is the reference; `x86_avx2` works eight lanes at a time
//! with Cephes' `expf`.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The first `n` scores of `row` to probabilities, the rest (padding) to zero.
pub(crate) fn scalar(row: &mut [f32], n: usize) {
    let max = row[..n].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0f32;
    for x in &mut row[..n] {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in &mut row[..n] {
        *x /= sum;
    }
    row[n..].fill(0.0);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2 {
    /// The first `n` scores of `row` to probabilities, the rest (padding) to zero: the maximum
    /// subtracted, `exp`, divided by the sum, as candle's and PyTorch's softmax.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `row.len()` is a multiple of 8 and at least `n`.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn softmax(row: &mut [f32], n: usize) {
        use std::arch::x86_64::*;
        let max = row[..n].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let vmax = _mm256_set1_ps(max);
        let mut vsum = _mm256_setzero_ps();
        let full = n / 8 * 8;
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ full ≤ n ≤ row.len()` (`row[..n]` above checked the last):
            // eight f32 of `row`, loaded and stored back.
            unsafe {
                let p = row.as_mut_ptr().add(j);
                let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), vmax));
                _mm256_storeu_ps(p, e);
                vsum = _mm256_add_ps(vsum, e);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` is eight f32: one unaligned 32-byte store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vsum) };
        let mut sum: f32 = lanes.iter().sum();
        if full < n {
            let mut tail = [f32::NEG_INFINITY; 8];
            tail[..n - full].copy_from_slice(&row[full..n]);
            // SAFETY: `tail` is eight f32: one unaligned load and one store.
            unsafe {
                let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), vmax));
                _mm256_storeu_ps(tail.as_mut_ptr(), e);
            }
            row[full..n].copy_from_slice(&tail[..n - full]);
            sum += tail[..n - full].iter().sum::<f32>();
        }
        row[n..].fill(0.0);
        let vsum = _mm256_set1_ps(sum);
        for j in (0..full).step_by(8) {
            // SAFETY: as in the first loop: eight f32 of `row`, loaded and stored back.
            unsafe {
                let p = row.as_mut_ptr().add(j);
                _mm256_storeu_ps(p, _mm256_div_ps(_mm256_loadu_ps(p), vsum));
            }
        }
        for x in &mut row[full..n] {
            *x /= sum;
        }
    }

    /// `exp` on eight lanes: Cephes' `expf` as in avx_mathfun (range reduction by ln 2 in two
    /// parts, a degree-5 polynomial, the power of two through the exponent bits). Inputs below
    /// −87.3 give 0 (they are scores far under the maximum), −∞ gives 0. Safe to call where AVX2
    /// and FMA are enabled (it touches no memory).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp256(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3), _CMP_LT_OQ);
        let x = _mm256_min_ps(x, _mm256_set1_ps(88.376_26));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.3));
        // n = round(x / ln 2), r = x − n·ln 2 in two steps for precision.
        let fx = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_add_ps(_mm256_fmadd_ps(y, r2, r), _mm256_set1_ps(1.0));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(fx),
            _mm256_set1_epi32(127),
        ));
        let e = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2));
        _mm256_andnot_ps(too_small, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// The AVX2 softmax against the scalar one, with padding, a tail and a -inf score.
    #[test]
    fn softmax_variants_agree() {
        for n in [1usize, 7, 8, 29, 64] {
            let len = n.div_ceil(8) * 8 + 8;
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.7)
                .collect();
            if n > 1 {
                row[n / 2] = f32::NEG_INFINITY;
            }
            let mut want = row.clone();
            scalar(&mut want, n);
            assert!((want.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            #[cfg(target_arch = "x86_64")]
            if Isa::Avx2.supported() {
                let mut got = row.clone();
                // SAFETY: the CPU has AVX2 and FMA; `got.len()` is a multiple of 8 and ≥ n.
                unsafe { x86_avx2::softmax(&mut got, n) };
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-6, "n {n}: {g} vs {w}");
                }
            }
        }
        eprintln!("softmax variants compared here: {:?}", Isa::available());
    }

    /// `exp256` against `f64::exp` over the softmax's range, and 0 for −∞.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_is_accurate() {
        if !Isa::Avx2.supported() {
            eprintln!("skipped: no AVX2");
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0f64;
        for i in 0..20_000 {
            let x = -87.0 + i as f32 * 0.00435;
            let mut lanes = [0f32; 8];
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x86_avx2::exp256(_mm256_set1_ps(x))) };
            let want = (x as f64).exp();
            worst = worst.max((lanes[0] as f64 - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        let mut lanes = [1f32; 8];
        // SAFETY: as above.
        unsafe {
            _mm256_storeu_ps(
                lanes.as_mut_ptr(),
                x86_avx2::exp256(_mm256_set1_ps(f32::NEG_INFINITY)),
            )
        };
        assert_eq!(lanes, [0.0; 8]);
    }
}
