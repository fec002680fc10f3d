//! The q8_0 inner loops on AVX-512 F/BW/VL with VNNI: `vpdpbusd` multiplies unsigned by
//! signed bytes and adds each four products into an i32 lane in one instruction, where AVX2
//! needs `maddubs`, `madd` and an add. The sign trick is ggml's (`|a|` times `w` with `a`'s
//! sign), with a masked subtract for the sign, which AVX-512 has no `sign` instruction for.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::x86_avx2::{lanes, prefetch_ahead, weight_scales};
use super::{BlockQ8, BlockQ8x8, BLOCK_BYTES, QK};

/// `out[i] = a · w[i]` for eight weight rows and one activation row (a decode step): two
/// weight rows' blocks per 512-bit register against the activation block in both halves, so
/// a block of all eight rows is four `vpdpbusd`. The integer sums are scaled per lane and
/// added in f32 (lanes 0–7 row `2p`, 8–15 row `2p + 1`); the lanes of a row are summed once,
/// at the end, instead of a tree of horizontal adds per block.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; every `w[i]` must hold
/// `a.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn tile8(w: [&[u8]; 8], a: &[BlockQ8]) -> [f32; 8] {
    debug_assert!(w.iter().all(|w| w.len() >= a.len() * BLOCK_BYTES));
    let wp: [*const u8; 8] = std::array::from_fn(|i| w[i].as_ptr());
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 4];
    // For pair `p`: lanes 0–7 take row 2p's scale, lanes 8–15 row 2p + 1's.
    let pick: [__m512i; 4] = std::array::from_fn(|p| {
        let (lo, hi) = (2 * p as i32, 2 * p as i32 + 1);
        _mm512_set_epi32(
            hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
        )
    });
    for (b, blk) in a.iter().enumerate() {
        let at = b * BLOCK_BYTES;
        prefetch_ahead(&wp, at);
        // SAFETY: block `b < a.len()` of every weight row is readable (the contract above);
        // its scale is bytes `at..at + 2`.
        let d = |i: usize| unsafe { (wp[i].add(at) as *const i16).read_unaligned() };
        let wd = _mm256_cvtph_ps(_mm_set_epi16(
            d(7),
            d(6),
            d(5),
            d(4),
            d(3),
            d(2),
            d(1),
            d(0),
        ));
        // Lanes 8–15 are never picked.
        let scale = _mm512_castps256_ps512(_mm256_mul_ps(wd, _mm256_set1_ps(blk.d)));
        // SAFETY: `qs` is 32 bytes: one unaligned load.
        let aq = unsafe { _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i) };
        let a2 = _mm512_broadcast_i64x4(aq);
        let aabs = _mm512_abs_epi8(a2);
        let negative = _mm512_movepi8_mask(a2);
        for (p, acc) in acc.iter_mut().enumerate() {
            // SAFETY: block `b`'s 32 quants are bytes `at + 2..at + 34` of weight rows 2p and
            // 2p + 1 (the contract above).
            let (lo, hi) = unsafe {
                (
                    _mm256_loadu_si256(wp[2 * p].add(at + 2) as *const __m256i),
                    _mm256_loadu_si256(wp[2 * p + 1].add(at + 2) as *const __m256i),
                )
            };
            let wq = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let signed = _mm512_mask_sub_epi8(wq, negative, zero, wq);
            let sums = _mm512_dpbusd_epi32(zero, aabs, signed);
            *acc = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(sums),
                _mm512_permutexvar_ps(pick[p], scale),
                *acc,
            );
        }
    }
    let mut out = [0f32; 8];
    for (p, acc) in acc.iter().enumerate() {
        let lo = _mm512_castps512_ps256(*acc);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
        out[2 * p] = sum8(lo);
        out[2 * p + 1] = sum8(hi);
    }
    out
}

/// The sum of the eight lanes of `v`.
#[target_feature(enable = "avx2")]
fn sum8(v: __m256) -> f32 {
    let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)))
}

/// `out[l][i] = a_l · w[i]` for four weight rows and eight interleaved activation rows (a
/// prefill): AVX2's broadcast scheme ([`super::x86_avx2::tile_x8`]) on 512-bit registers, two
/// four-column steps at once: the lower half holds columns `4c..4c + 4` of the eight rows,
/// the upper half the next four, against each weight row's four bytes of each step, and one
/// `vpdpbusd` does the multiplies and adds where AVX2 takes three instructions per half.
///
/// # Safety
/// As [`tile8`], for `w[i]` holding `a.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn tile_x8(w: [&[u8]; 4], a: &[BlockQ8x8]) -> [[f32; 4]; 8] {
    let mut acc = [_mm256_setzero_ps(); 4];
    debug_assert!(w.iter().all(|w| w.len() >= a.len() * BLOCK_BYTES));
    let wp: [*const u8; 4] = std::array::from_fn(|i| w[i].as_ptr());
    let zero = _mm512_setzero_si512();
    // Dword 0 of the eight bytes loaded into the lower half, dword 1 into the upper.
    let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    for (b, blk) in a.iter().enumerate() {
        let at = b * BLOCK_BYTES;
        let mut isum = [zero; 4];
        for c in 0..QK / 8 {
            // SAFETY: `c < 4`: bytes `64·c..64·c + 64` of the 256 of `qs` and of `abs`, which
            // start 32 and 288 bytes into a 32-byte aligned `BlockQ8x8`: unaligned loads.
            let (av, aabs) = unsafe {
                (
                    _mm512_loadu_si512(blk.qs.as_ptr().add(64 * c) as *const _),
                    _mm512_loadu_si512(blk.abs.as_ptr().add(64 * c) as *const _),
                )
            };
            let negative = _mm512_movepi8_mask(av);
            for (i, sum) in isum.iter_mut().enumerate() {
                // SAFETY: bytes `at + 2 + 8·c..at + 10 + 8·c` lie in block `b`'s quants,
                // `at + 2..at + 34`, of weight row `i` (readable: the contract above).
                let eight = unsafe { (wp[i].add(at + 2 + 8 * c) as *const i64).read_unaligned() };
                let wq = _mm512_permutexvar_epi32(halves, _mm512_set1_epi64(eight));
                let signed = _mm512_mask_sub_epi8(wq, negative, zero, wq);
                *sum = _mm512_dpbusd_epi32(*sum, aabs, signed);
            }
        }
        // SAFETY: `d`, eight f32, starts a 32-byte aligned `BlockQ8x8`: an aligned load.
        let ad = unsafe { _mm256_load_ps(blk.d.as_ptr()) };
        // SAFETY: the CPU's features include AVX2, FMA and F16C; block `b` of every weight
        // row is readable (the contract above).
        let wds = lanes(unsafe { weight_scales(&wp, at) });
        for i in 0..4 {
            // Lane l of each half is row l's sum of that half's columns.
            let lo = _mm512_castsi512_si256(isum[i]);
            let hi = _mm512_extracti64x4_epi64::<1>(isum[i]);
            let sums = _mm256_add_epi32(lo, hi);
            let scale = _mm256_mul_ps(ad, wds[i]);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[i]);
        }
    }
    let mut rows = [[0f32; 8]; 4];
    for (row, acc) in rows.iter_mut().zip(&acc) {
        // SAFETY: `row` is eight f32: one unaligned 32-byte store.
        unsafe { _mm256_storeu_ps(row.as_mut_ptr(), *acc) };
    }
    std::array::from_fn(|l| std::array::from_fn(|i| rows[i][l]))
}
