//! The vision attention's product tile in plain Rust: the reference the SIMD tile is tested
//! against, with its signature and its order of additions (one product added per step of
//! the depth, as the FMA tile does), so the two agree to the rounding of a fused multiply-add.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::{MR, NR};

/// `c[MR, NR] = a[MR, depth] · b[depth, NR]`, rows of `a` `lda` apart, of `b` `ldb`, of `c`
/// `ldc`.
///
/// # Safety
/// Every element addressed must be in bounds.
pub(super) unsafe fn tile(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[0f32; NR]; MR];
    for p in 0..depth {
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: element `p < depth` of row `i < MR` of `a` (the contract above).
            let ai = unsafe { *a.add(i * lda + p) };
            for (j, x) in row.iter_mut().enumerate() {
                // SAFETY: column `j < NR` of row `p < depth` of `b` (the contract above).
                *x = ai.mul_add(unsafe { *b.add(p * ldb + j) }, *x);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            // SAFETY: column `j < NR` of row `i < MR` of `c` (the contract above).
            unsafe { *c.add(i * ldc + j) = x };
        }
    }
}
