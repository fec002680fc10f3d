//! The vision attention's product on AVX-512 F ([`super`]): two of AVX2's 6 × 16 tiles at
//! once, a row of sixteen columns in one 512-bit register, twelve accumulators against one
//! load of `b` per step of the depth (AVX2's tile: six accumulator pairs). Each element sees
//! the same fused multiply-adds in the same order as in AVX2's tile and the scalar one, so the
//! three agree bit for bit.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::{MR, NR};

const _: () = assert!(NR == 16, "one 512-bit register per row of a tile");

/// `c[2·MR, NR] = a[2·MR, depth] · b[depth, NR]`, rows of `a` `lda` apart, of `b` `ldb`, of
/// `c` `ldc`.
///
/// # Safety
/// AVX-512 F and FMA must be available and every element addressed must be in bounds.
#[target_feature(enable = "avx2,fma,avx512f")]
pub(super) unsafe fn tile2(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    for p in 0..depth {
        // SAFETY: columns `0..NR` of row `p < depth` of `b` (the contract above).
        let bv = unsafe { _mm512_loadu_ps(b.add(p * ldb)) };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: element `p < depth` of row `i < 2·MR` of `a` (the contract above).
            let ai = _mm512_set1_ps(unsafe { *a.add(i * lda + p) });
            *acc = _mm512_fmadd_ps(ai, bv, *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: columns `0..NR` of row `i < 2·MR` of `c` (the contract above).
        unsafe { _mm512_storeu_ps(c.add(i * ldc), *acc) };
    }
}
