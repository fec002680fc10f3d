//! The q6_K dot product on AVX2, FMA and F16C ([`super`]): llama.cpp's
//! `ggml_vec_dot_q6_K_q8_K` for AVX2, with a prefetch ahead of the weight stream.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::{BlockQ8K, BLOCK_BYTES, QK_K};

/// How far ahead (10 kB) the kernel prefetches weight blocks: the hardware prefetcher alone
/// left the single-core product of the 7B's LM head at 5–8 GB/s, slower than candle's
/// kernel; 4 blocks ahead did not help, 24 and 48 did alike (`examples/kbench.rs`).
pub(super) const PREFETCH_BLOCKS: usize = 48;

/// ggml's `get_scale_shuffle`: mask `i` spreads scale bytes `2i` and `2i + 1` over the
/// 8 + 8 sixteen-bit lanes that a `maddubs` of 32 weights fills.
pub(super) const SCALE_SHUFFLE: [[u8; 16]; 8] = {
    let mut m = [[0u8; 16]; 8];
    let mut i = 0;
    while i < 8 {
        let mut j = 0;
        while j < 16 {
            m[i][j] = (2 * i + j / 8) as u8;
            j += 1;
        }
        i += 1;
    }
    m
};

/// The dot product of one q6_K weight row with one q8_K activation row of as many blocks.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds `a.len()` blocks. The prefetches may point past
/// `w` (they never fault).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot(w: &[u8], a: &[BlockQ8K]) -> f32 {
    use std::arch::x86_64::*;
    let m3 = _mm256_set1_epi8(3);
    let m12 = _mm256_set1_epi8(12);
    let m48 = _mm256_set1_epi8(48);
    let m192 = _mm256_set1_epi8(-64);
    let m15 = _mm256_set1_epi8(15);
    // SAFETY: each mask is 16 bytes: one unaligned load.
    let shuffle = |i: usize| unsafe { _mm_loadu_si128(SCALE_SHUFFLE[i].as_ptr().cast()) };
    let mut acc = _mm256_setzero_ps();
    debug_assert!(w.len() >= a.len() * BLOCK_BYTES);
    for (b, y) in a.iter().enumerate() {
        // SAFETY: block `b < a.len()` of `w` is readable (the contract above): the 210
        // bytes from `x` on, which every read below stays inside.
        let x = unsafe { w.as_ptr().add(b * BLOCK_BYTES) };
        // `wrapping_add`: the address may lie past `w`, which a prefetch may name.
        let ahead = x.wrapping_add(PREFETCH_BLOCKS * BLOCK_BYTES);
        for line in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
        }
        let (ql, q8) = (x, y.qs.as_ptr());
        // SAFETY: the high bits are bytes 128..192 of the block, the scales 192..208.
        let (qh, scales) = unsafe { (x.add(128), _mm_loadu_si128(x.add(192).cast())) };
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 128 {
            // SAFETY: `j < 2`: the low nibbles read are bytes `64·j..64·j + 64` of the 128
            // at `ql`, the high bits `32·j..32·j + 32` of the 64 at `qh`.
            let (bits1, bits2, high) = unsafe {
                (
                    _mm256_loadu_si256(ql.add(64 * j).cast()),
                    _mm256_loadu_si256(ql.add(64 * j + 32).cast()),
                    _mm256_loadu_si256(qh.add(32 * j).cast()),
                )
            };
            let h0 = _mm256_slli_epi16(_mm256_and_si256(high, m3), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(high, m12), 2);
            let h2 = _mm256_and_si256(high, m48);
            let h3 = _mm256_srli_epi16(_mm256_and_si256(high, m192), 2);
            let q = [
                _mm256_or_si256(_mm256_and_si256(bits1, m15), h0),
                _mm256_or_si256(_mm256_and_si256(bits2, m15), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3),
            ];
            for (i, q) in q.into_iter().enumerate() {
                // SAFETY: `j < 2`, `i < 4`: 32 of the 256 activations of `qs`.
                let a8 = unsafe { _mm256_loadu_si256(q8.add(128 * j + 32 * i).cast()) };
                let p16 = _mm256_maddubs_epi16(q, a8);
                let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuffle(4 * j + i)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p16));
            }
        }
        // q6_K stores weight + 32: take 32 · Σ scale · (sum of 16 activations) off once.
        // SAFETY: `bsums` is sixteen i16, 32 bytes: one unaligned load.
        let q8sums = unsafe { _mm256_loadu_si256(y.bsums.as_ptr().cast()) };
        let offset = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, _mm256_cvtepi8_epi16(scales)), 5);
        let sumi = _mm256_sub_epi32(sumi, offset);
        // SAFETY: the block's f16 scale is its bytes 208 and 209.
        let d = unsafe { u16::from_le_bytes([*x.add(208), *x.add(209)]) };
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(d)))) * y.d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}
