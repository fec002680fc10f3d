//! The q8_0 inner loops on AVX2, FMA and F16C ([`super`] says which runs where). ggml's sign
//! trick multiplies signed bytes by signed bytes: `maddubs(|x|, sign(y, x))`.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::{BlockQ8, BlockQ8x8, BLOCK_BYTES, QK};

/// The f16 scales of block `at` (a byte offset) of four weight rows, as four f32.
///
/// # Safety
/// As [`tile`]: every `wp[i]` must point at least `at + 2` readable bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn weight_scales(wp: &[*const u8; 4], at: usize) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    // SAFETY: bytes `at..at + 2` of every weight row are readable (the contract above).
    let d = |i: usize| unsafe { (wp[i].add(at) as *const i16).read_unaligned() };
    _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, d(3), d(2), d(1), d(0)))
}

/// Each of the four lanes of `v`, broadcast to a whole vector.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn lanes(v: std::arch::x86_64::__m128) -> [std::arch::x86_64::__m256; 4] {
    use std::arch::x86_64::*;
    [
        _mm256_broadcastss_ps(v),
        _mm256_broadcastss_ps(_mm_shuffle_ps::<0x55>(v, v)),
        _mm256_broadcastss_ps(_mm_shuffle_ps::<0xAA>(v, v)),
        _mm256_broadcastss_ps(_mm_shuffle_ps::<0xFF>(v, v)),
    ]
}

/// `out[r][i] = a[r] · w[i]` for four weight rows (GGUF q8_0 bytes) and `R` activation rows.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; every `w[i]` must hold `a[r].len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile<const R: usize>(w: [&[u8]; 4], a: [&[BlockQ8]; R]) -> [[f32; 4]; R] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let kb = a[0].len();
    debug_assert!(a.iter().all(|a| a.len() == kb));
    debug_assert!(w.iter().all(|w| w.len() >= kb * BLOCK_BYTES));
    let wp: [*const u8; 4] = std::array::from_fn(|i| w[i].as_ptr());
    let ap: [*const BlockQ8; R] = std::array::from_fn(|r| a[r].as_ptr());
    for b in 0..kb {
        let at = b * BLOCK_BYTES;
        // The four weight rows' f16 scales, converted together.
        // SAFETY: the CPU's features are this function's; block `b < kb` of every weight
        // row is readable (the contract above).
        let wd = unsafe { weight_scales(&wp, at) };
        let wds = lanes(wd);
        let wq: [__m256i; 4] = std::array::from_fn(|i| {
            // SAFETY: block `b`'s 32 quants are bytes `at + 2..at + 34` of weight row `i`.
            unsafe { _mm256_loadu_si256(wp[i].add(at + 2) as *const __m256i) }
        });
        let wabs: [__m256i; 4] = std::array::from_fn(|i| _mm256_sign_epi8(wq[i], wq[i]));
        for r in 0..R {
            // SAFETY: `b < kb` and every `a[r]` holds `kb` blocks (the contract above).
            let blk = unsafe { &*ap[r].add(b) };
            // SAFETY: `qs` is 32 bytes: one unaligned load.
            let aq = unsafe { _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i) };
            let ad = _mm256_set1_ps(blk.d);
            for i in 0..4 {
                let p = _mm256_maddubs_epi16(wabs[i], _mm256_sign_epi8(aq, wq[i]));
                let s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), wds[i]);
                acc[r][i] = _mm256_fmadd_ps(s, ad, acc[r][i]);
            }
        }
    }
    let mut out = [[0f32; 4]; R];
    for (o, acc) in out.iter_mut().zip(&acc) {
        // Horizontal sums of the four accumulators, into four consecutive outputs.
        let h01 = _mm256_hadd_ps(acc[0], acc[1]);
        let h23 = _mm256_hadd_ps(acc[2], acc[3]);
        let h = _mm256_hadd_ps(h01, h23);
        let sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        // SAFETY: `o` is four f32: one unaligned 16-byte store.
        unsafe { _mm_storeu_ps(o.as_mut_ptr(), sum) };
    }
    out
}

/// `out[r][i] = a[r] · w[i]` for four weight rows and `2·P` activation rows: the eight dot
/// products of a block and a pair of rows are reduced into one vector of eight sums before
/// they are scaled, so the float work is one conversion and one multiply-add per block for
/// all eight.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c")]
// `b` walks the weights (by byte offset) and every activation row together.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn tile_pairs<const P: usize>(
    w: [&[u8]; 4],
    a: [[&[BlockQ8]; 2]; P],
) -> [[[f32; 4]; 2]; P] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); P];
    let kb = a[0][0].len();
    debug_assert!(w.iter().all(|w| w.len() >= kb * BLOCK_BYTES));
    let wp: [*const u8; 4] = std::array::from_fn(|i| w[i].as_ptr());
    for b in 0..kb {
        let at = b * BLOCK_BYTES;
        // SAFETY: the CPU's features are this function's; block `b < kb` of every weight
        // row is readable (the contract of `tile`).
        let wd = unsafe { weight_scales(&wp, at) };
        let wd2 = _mm256_set_m128(wd, wd);
        let wq: [__m256i; 4] = std::array::from_fn(|i| {
            // SAFETY: block `b`'s 32 quants are bytes `at + 2..at + 34` of weight row `i`.
            unsafe { _mm256_loadu_si256(wp[i].add(at + 2) as *const __m256i) }
        });
        let wabs: [__m256i; 4] = std::array::from_fn(|i| _mm256_sign_epi8(wq[i], wq[i]));
        for p in 0..P {
            let (x0, x1) = (&a[p][0][b], &a[p][1][b]);
            // Lane r·4 + i: the scale of weight row i times that of activation row r.
            let scale = _mm256_mul_ps(wd2, _mm256_set_m128(_mm_set1_ps(x1.d), _mm_set1_ps(x0.d)));
            // SAFETY: each `qs` is 32 bytes: one unaligned load each.
            let (q0, q1) = unsafe {
                (
                    _mm256_loadu_si256(x0.qs.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(x1.qs.as_ptr() as *const __m256i),
                )
            };
            let dot = |i: usize, q: __m256i| {
                let p = _mm256_maddubs_epi16(wabs[i], _mm256_sign_epi8(q, wq[i]));
                _mm256_madd_epi16(p, ones)
            };
            let h0 = _mm256_hadd_epi32(dot(0, q0), dot(1, q0));
            let h1 = _mm256_hadd_epi32(dot(2, q0), dot(3, q0));
            let h2 = _mm256_hadd_epi32(dot(0, q1), dot(1, q1));
            let h3 = _mm256_hadd_epi32(dot(2, q1), dot(3, q1));
            let g0 = _mm256_hadd_epi32(h0, h1);
            let g1 = _mm256_hadd_epi32(h2, h3);
            let sums = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(g0, g1),
                _mm256_permute2x128_si256::<0x31>(g0, g1),
            );
            acc[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[p]);
        }
    }
    let mut out = [[[0f32; 4]; 2]; P];
    for (o, acc) in out.iter_mut().zip(&acc) {
        // SAFETY: `o[0]` and `o[1]` are four f32 each: one unaligned 16-byte store each.
        unsafe {
            _mm_storeu_ps(o[0].as_mut_ptr(), _mm256_castps256_ps128(*acc));
            _mm_storeu_ps(o[1].as_mut_ptr(), _mm256_extractf128_ps::<1>(*acc));
        }
    }
    out
}

/// `out[i] = a · w[i]` for eight weight rows and one activation row (a decode step). The
/// activation's magnitudes are taken once for all eight rows (`maddubs(|a|, sign(w, a))`,
/// as in [`tile_x8`]), and the eight rows' sums of a block are reduced into one vector
/// (as in [`tile_pairs`]) before a single conversion and multiply-add scale them all: per
/// 32 multiply-adds a sign, a `maddubs` and a `madd`, where [`tile`] also takes a weight's
/// magnitude and converts, scales and adds each row on its own.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; every `w[i]` must hold `a.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile8(w: [&[u8]; 8], a: &[BlockQ8]) -> [f32; 8] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    debug_assert!(w.iter().all(|w| w.len() >= a.len() * BLOCK_BYTES));
    let wp: [*const u8; 8] = std::array::from_fn(|i| w[i].as_ptr());
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
        let scale = _mm256_mul_ps(wd, _mm256_set1_ps(blk.d));
        // SAFETY: `qs` is 32 bytes: one unaligned load.
        let aq = unsafe { _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i) };
        let aabs = _mm256_sign_epi8(aq, aq);
        let dot = |i: usize| {
            // SAFETY: block `b`'s 32 quants are bytes `at + 2..at + 34` of weight row `i`.
            let wq = unsafe { _mm256_loadu_si256(wp[i].add(at + 2) as *const __m256i) };
            _mm256_madd_epi16(_mm256_maddubs_epi16(aabs, _mm256_sign_epi8(wq, aq)), ones)
        };
        // Lane j of `g0` (`g1`): part of row j's (j + 4's) sum, the two halves apart.
        let g0 = _mm256_hadd_epi32(
            _mm256_hadd_epi32(dot(0), dot(1)),
            _mm256_hadd_epi32(dot(2), dot(3)),
        );
        let g1 = _mm256_hadd_epi32(
            _mm256_hadd_epi32(dot(4), dot(5)),
            _mm256_hadd_epi32(dot(6), dot(7)),
        );
        let sums = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(g0, g1),
            _mm256_permute2x128_si256::<0x31>(g0, g1),
        );
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
    }
    let mut out = [0f32; 8];
    // SAFETY: `out` is eight f32: one unaligned 32-byte store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

/// `out[l][i] = a_l · w[i]` for four weight rows (GGUF q8_0 bytes) and the eight
/// interleaved activation rows of `a`: each weight row's four bytes are broadcast against
/// four columns of all eight rows, so one instruction advances eight dot products and no
/// horizontal sums are needed. The sign trick runs the other way round from [`tile`]:
/// `maddubs(|a|, sign(w, a))`. Per 32 multiply-adds that is one sign, one `maddubs`, one
/// `madd` and one add, against [`tile_pairs`]' extra share of horizontal adds.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_x8(w: [&[u8]; 4], a: &[BlockQ8x8]) -> [[f32; 4]; 8] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    debug_assert!(w.iter().all(|w| w.len() >= a.len() * BLOCK_BYTES));
    let wp: [*const u8; 4] = std::array::from_fn(|i| w[i].as_ptr());
    for (b, blk) in a.iter().enumerate() {
        let at = b * BLOCK_BYTES;
        let mut isum = [_mm256_setzero_si256(); 4];
        for c in 0..QK / 4 {
            // SAFETY: `c < 8`: bytes `32·c..32·c + 32` of the 256 of `qs` and of `abs`, which
            // start 32 and 288 bytes into a 32-byte aligned `BlockQ8x8`: aligned loads.
            let (av, aabs) = unsafe {
                (
                    _mm256_load_si256(blk.qs.as_ptr().add(32 * c) as *const __m256i),
                    _mm256_load_si256(blk.abs.as_ptr().add(32 * c) as *const __m256i),
                )
            };
            for i in 0..4 {
                // SAFETY: bytes `at + 2 + 4·c..at + 6 + 4·c` lie in block `b`'s quants,
                // `at + 2..at + 34`, of weight row `i` (readable: the contract of `tile`).
                let four = unsafe { (wp[i].add(at + 2 + 4 * c) as *const i32).read_unaligned() };
                let p = _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(_mm256_set1_epi32(four), av));
                isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(p, ones));
            }
            // Keep the sums in this order: left free, the compiler regroups them by weight
            // row, holds all sixteen activation vectors at once and spills them to the
            // stack (a third slower).
            for v in &mut isum {
                // SAFETY: an empty template (a comment) that only names the register: it
                // reads and writes no memory, stack or flags, as its options declare.
                unsafe {
                    std::arch::asm!(
                        "/* {0} */",
                        inout(ymm_reg) * v,
                        options(pure, nomem, nostack, preserves_flags)
                    )
                };
            }
        }
        // SAFETY: `d`, eight f32, starts a 32-byte aligned `BlockQ8x8`: an aligned load.
        let ad = unsafe { _mm256_load_ps(blk.d.as_ptr()) };
        // SAFETY: the CPU's features are this function's; block `b` of every weight row is
        // readable (the contract of `tile`).
        let wd = unsafe { weight_scales(&wp, at) };
        let wds = lanes(wd);
        for i in 0..4 {
            let scale = _mm256_mul_ps(ad, wds[i]);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), scale, acc[i]);
        }
    }
    let mut lanes = [[0f32; 8]; 4];
    for (lane, acc) in lanes.iter_mut().zip(&acc) {
        // SAFETY: `lane` is eight f32: one unaligned 32-byte store.
        unsafe { _mm256_storeu_ps(lane.as_mut_ptr(), *acc) };
    }
    std::array::from_fn(|l| std::array::from_fn(|i| lanes[i][l]))
}

/// Bytes of each weight row the decode loops ([`tile8`] and AVX-512's) ask the memory for
/// ahead of their loads: eight rows stream side by side, more than the hardware prefetcher
/// keeps up with on rows a few kB long: the whole 7B shape with 4 layers decoded at a median
/// 18.9 tok/s instead of 15.7 (AVX-512, four alternations), and 640–1536 bytes were alike
/// (`examples/kernels`, `huatuo bench`).
pub(super) const PREFETCH_BYTES: usize = 768;

/// Prefetches each row of `wp` [`PREFETCH_BYTES`] past byte `at` (`wrapping_add`: past a
/// row's end the address is only named, never read; a prefetch does not fault).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn prefetch_ahead(wp: &[*const u8; 8], at: usize) {
    use std::arch::x86_64::*;
    for p in wp {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at + PREFETCH_BYTES).cast());
    }
}
