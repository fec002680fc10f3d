//! The vision attention's register-tiled product on AVX2 and FMA ([`super`]): BLIS's 6 × 16
//! shape, two AVX registers a row.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::MR;

/// `c[MR, NR] = a[MR, depth] · b[depth, NR]`, rows of `a` `lda` apart, of `b` `ldb`, of `c`
/// `ldc`.
///
/// # Safety
/// AVX2 and FMA must be available and every element addressed must be in bounds.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..depth {
        // SAFETY: columns `0..NR` of row `p < depth` of `b` (in bounds: the contract above).
        let (b0, b1) = unsafe {
            (
                _mm256_loadu_ps(b.add(p * ldb)),
                _mm256_loadu_ps(b.add(p * ldb + 8)),
            )
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: element `p < depth` of row `i < MR` of `a` (the contract above).
            let ai = _mm256_broadcast_ss(unsafe { &*a.add(i * lda + p) });
            acc[0] = _mm256_fmadd_ps(ai, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(ai, b1, acc[1]);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: columns `0..NR` of row `i < MR` of `c` (the contract above).
        unsafe {
            _mm256_storeu_ps(c.add(i * ldc), acc[0]);
            _mm256_storeu_ps(c.add(i * ldc + 8), acc[1]);
        }
    }
}
