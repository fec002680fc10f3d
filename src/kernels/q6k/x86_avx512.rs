//! The q6_K dot product on AVX-512 F/BW/VL: the AVX2 loop ([`super::x86_avx2`]) with both
//! 128-value halves of a block side by side in each 512-bit register, so a block is one pass
//! of four products instead of two. The integer sums are the same as AVX2's.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::x86_avx2::{PREFETCH_BLOCKS, SCALE_SHUFFLE};
use super::{BlockQ8K, BLOCK_BYTES};

/// Two 32-byte loads, at `lo` into the lower half and at `hi` into the upper.
///
/// # Safety
/// 32 bytes must be readable at each pointer; the CPU must have AVX-512 F.
#[target_feature(enable = "avx2,avx512f")]
unsafe fn pair(lo: *const u8, hi: *const u8) -> __m512i {
    // SAFETY: 32 readable bytes at each (the contract above).
    let (lo, hi) = unsafe { (_mm256_loadu_si256(lo.cast()), _mm256_loadu_si256(hi.cast())) };
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The dot product of one q6_K weight row with one q8_K activation row of as many blocks.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL; `w` holds `a.len()` blocks. The
/// prefetches may point past `w` (they never fault).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn dot(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let m3 = _mm512_set1_epi8(3);
    let m12 = _mm512_set1_epi8(12);
    let m48 = _mm512_set1_epi8(48);
    let m192 = _mm512_set1_epi8(-64);
    let m15 = _mm512_set1_epi8(15);
    // SAFETY: each mask is 16 bytes: one unaligned load.
    let shuffle = |i: usize| unsafe { _mm_loadu_si128(SCALE_SHUFFLE[i].as_ptr().cast()) };
    let mut acc = _mm256_setzero_ps();
    debug_assert!(w.len() >= a.len() * BLOCK_BYTES);
    for (b, y) in a.iter().enumerate() {
        // SAFETY: block `b < a.len()` of `w` is readable (the contract above): the 210
        // bytes from `x` on, which every read below stays inside.
        let x = unsafe { w.as_ptr().add(b * BLOCK_BYTES) };
        let ahead = x.wrapping_add(PREFETCH_BLOCKS * BLOCK_BYTES);
        for line in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
        }
        let q8 = y.qs.as_ptr().cast::<u8>();
        // SAFETY: the low nibbles are bytes 0..128 of the block (the halves at 0 and 64, 32
        // and 96), the high bits 128..192 (one 64-byte load), the scales 192..208.
        let (bits1, bits2, high, scales) = unsafe {
            (
                pair(x, x.add(64)),
                pair(x.add(32), x.add(96)),
                _mm512_loadu_si512(x.add(128).cast()),
                _mm_loadu_si128(x.add(192).cast()),
            )
        };
        let h0 = _mm512_slli_epi16::<4>(_mm512_and_si512(high, m3));
        let h1 = _mm512_slli_epi16::<2>(_mm512_and_si512(high, m12));
        let h2 = _mm512_and_si512(high, m48);
        let h3 = _mm512_srli_epi16::<2>(_mm512_and_si512(high, m192));
        let q = [
            _mm512_or_si512(_mm512_and_si512(bits1, m15), h0),
            _mm512_or_si512(_mm512_and_si512(bits2, m15), h1),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(bits1), m15), h2),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(bits2), m15), h3),
        ];
        let mut sumi = _mm512_setzero_si512();
        for (i, q) in q.into_iter().enumerate() {
            // SAFETY: `i < 4`: activations `32·i..32·i + 32` and `128 + 32·i..` of the 256.
            let a8 = unsafe { pair(q8.add(32 * i), q8.add(128 + 32 * i)) };
            let p16 = _mm512_maddubs_epi16(q, a8);
            // The lower half's scales are those of values 32·i.., the upper's 128 + 32·i...
            let s = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_shuffle_epi8(scales, shuffle(i))),
                _mm_shuffle_epi8(scales, shuffle(4 + i)),
            );
            let scale = _mm512_cvtepi8_epi16(s);
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(scale, p16));
        }
        let sumi = _mm256_add_epi32(
            _mm512_castsi512_si256(sumi),
            _mm512_extracti64x4_epi64::<1>(sumi),
        );
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
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}
