//! The interleaved q4_K product on AVX2, FMA and F16C ([`super`]): ggml's
//! `gemv_q4_K_8x8_q8_K` for AVX2 (llama.cpp, `ggml/src/ggml-cpu/arch/x86/repack.cpp`, MIT
//! licence), with the nibbles, scales and mins unpacked once for up to four activation rows.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::{BlockQ4Kx8, BlockQ8K, PREFETCH_BLOCKS, QK_K};

/// Eight outputs for each of `R` activation rows: `out[r][j] = a[r] · w_row(j)` for the
/// eight weight rows of one interleaved group. ggml's AVX2 gemv, with the row-independent
/// half of its work (nibbles, scales, mins) done once for all `R` rows.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C. (Each `a[r]` must have `w.len()` blocks, which is
/// checked: every access is in bounds of a block.)
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemm_tile<const R: usize>(
    w: &[BlockQ4Kx8],
    a: [&[BlockQ8K]; R],
) -> [[f32; 8]; R] {
    use std::arch::x86_64::*;
    let deltamask = _mm_set_epi8(15, 14, 7, 6, 13, 12, 5, 4, 11, 10, 3, 2, 9, 8, 1, 0);
    let scalemask = _mm_set_epi8(7, 7, 3, 3, 6, 6, 2, 2, 5, 5, 1, 1, 4, 4, 0, 0);
    let finalpermutemask = _mm256_set_epi32(7, 5, 3, 1, 6, 4, 2, 0);
    let m4b = _mm256_set1_epi8(0x0F);

    let mut acc_row = [_mm256_setzero_ps(); R];
    let mut acc_min_rows = [_mm256_setzero_ps(); R];

    for (b, wb) in w.iter().enumerate() {
        // At decode (one activation row) the weight streams from memory once: prefetch it
        // (`wrapping_add`: past the last block the address is only named, never read).
        if R == 1 {
            let ahead = (wb as *const BlockQ4Kx8).wrapping_add(PREFETCH_BLOCKS) as *const u8;
            for line in 0..size_of::<BlockQ4Kx8>() / 64 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
            }
        }
        // SAFETY: `d` and `dmin` are eight f16 each, 16 bytes: one unaligned load each.
        let (d, dmin) = unsafe {
            (
                _mm_loadu_si128(wb.d.as_ptr() as *const __m128i),
                _mm_loadu_si128(wb.dmin.as_ptr() as *const __m128i),
            )
        };
        let col_scale_f32 = _mm256_cvtph_ps(_mm_shuffle_epi8(d, deltamask));
        let col_dmin_f32 = _mm256_cvtph_ps(dmin);

        let mut iacc_b = [_mm256_setzero_si256(); R];
        let mut iacc_min_b = [_mm256_setzero_si256(); R];
        let mut q8s: [__m256i; R] = std::array::from_fn(|r| {
            // SAFETY: `bsums` is sixteen i16, 32 bytes: one unaligned load.
            let sums = unsafe { _mm256_loadu_si256(a[r][b].bsums.as_ptr() as *const __m256i) };
            let s = _mm256_castsi128_si256(_mm_hadd_epi16(
                _mm256_castsi256_si128(sums),
                _mm256_extracti128_si256::<1>(sums),
            ));
            _mm256_permute2f128_si256::<0>(s, s)
        });

        for sb in 0..QK_K / 64 {
            // SAFETY: sub-block `sb < 4` is bytes `256·sb..256·sb + 256` of the 1024 of `qs`.
            let qs = unsafe { wb.qs.as_ptr().add(sb * 256) };
            // SAFETY: `off ≤ 224` below: the 32 bytes lie in the sub-block's 256.
            let raw = |off: usize| unsafe { _mm256_loadu_si256(qs.add(off) as *const __m256i) };
            // Rows 0-3 and 4-7 of each 64-byte stretch: eight chunks of 32 bytes.
            let raws: [__m256i; 8] = std::array::from_fn(|i| raw(32 * i));

            let lo = |v: __m256i| _mm256_and_si256(v, m4b);
            let hi = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4b);
            // The two operands of each pair of products, for the eight weight rows.
            let ev = |x0123: __m256i, x4567: __m256i| {
                _mm256_blend_epi32::<170>(x0123, _mm256_shuffle_epi32::<177>(x4567))
            };
            let od = |x0123: __m256i, x4567: __m256i| {
                _mm256_blend_epi32::<170>(_mm256_shuffle_epi32::<177>(x0123), x4567)
            };
            let operands = |x: [__m256i; 8]| -> [__m256i; 8] {
                std::array::from_fn(|i| {
                    let (a, b) = (x[i / 2 * 2], x[i / 2 * 2 + 1]);
                    if i % 2 == 0 {
                        ev(a, b)
                    } else {
                        od(a, b)
                    }
                })
            };
            let w0 = operands(raws.map(lo));
            let w1 = operands(raws.map(hi));

            let unpack = |at: usize| {
                let u = super::scales_and_mins(&wb.scales, at);
                _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32)
            };
            let mins_and_scales_0 = unpack(24 * sb);
            let mins_and_scales_1 = unpack(12 + 24 * sb);
            let scales_0 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(mins_and_scales_0, scalemask));
            let scales_1 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(mins_and_scales_1, scalemask));
            let mins_01 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(
                _mm_shuffle_epi32::<78>(mins_and_scales_0),
                _mm_shuffle_epi32::<78>(mins_and_scales_1),
            ));

            for r in 0..R {
                // SAFETY: sub-block `sb < 4` is values `64·sb..64·sb + 64` of the 256 of `qs`.
                let q8 = unsafe { a[r][b].qs.as_ptr().add(sb * 64) };
                let lhs = |off: usize| {
                    // SAFETY: `off ≤ 48` below: the 16 bytes lie in the sub-block's 64.
                    let v = unsafe { _mm_loadu_si128(q8.add(off) as *const __m128i) };
                    let v = _mm256_castsi128_si256(v);
                    _mm256_permute2f128_si256::<0>(v, v)
                };
                let (l00, l01, l10, l11) = (lhs(0), lhs(16), lhs(32), lhs(48));
                let dot = |wv: &[__m256i; 8], la: __m256i, lb: __m256i| {
                    let mut acc = _mm256_maddubs_epi16(wv[0], _mm256_shuffle_epi32::<0>(la));
                    let t = |x: __m256i, y: __m256i| _mm256_maddubs_epi16(x, y);
                    acc = _mm256_add_epi16(acc, t(wv[1], _mm256_shuffle_epi32::<85>(la)));
                    acc = _mm256_add_epi16(acc, t(wv[2], _mm256_shuffle_epi32::<170>(la)));
                    acc = _mm256_add_epi16(acc, t(wv[3], _mm256_shuffle_epi32::<255>(la)));
                    acc = _mm256_add_epi16(acc, t(wv[4], _mm256_shuffle_epi32::<0>(lb)));
                    acc = _mm256_add_epi16(acc, t(wv[5], _mm256_shuffle_epi32::<85>(lb)));
                    acc = _mm256_add_epi16(acc, t(wv[6], _mm256_shuffle_epi32::<170>(lb)));
                    _mm256_add_epi16(acc, t(wv[7], _mm256_shuffle_epi32::<255>(lb)))
                };
                let iacc_0 = _mm256_madd_epi16(dot(&w0, l00, l01), scales_0);
                let iacc_1 = _mm256_madd_epi16(dot(&w1, l10, l11), scales_1);
                iacc_b[r] = _mm256_add_epi32(iacc_b[r], _mm256_add_epi32(iacc_0, iacc_1));
                let q8s_sb = _mm256_shuffle_epi32::<0>(q8s[r]);
                iacc_min_b[r] = _mm256_add_epi32(iacc_min_b[r], _mm256_madd_epi16(q8s_sb, mins_01));
                q8s[r] = _mm256_bsrli_epi128::<4>(q8s[r]);
            }
        }

        for r in 0..R {
            let row_scale_f32 = _mm256_set1_ps(a[r][b].d);
            acc_row[r] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(iacc_b[r]),
                _mm256_mul_ps(col_scale_f32, row_scale_f32),
                acc_row[r],
            );
            acc_min_rows[r] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(iacc_min_b[r]),
                _mm256_mul_ps(col_dmin_f32, row_scale_f32),
                acc_min_rows[r],
            );
        }
    }

    let mut out = [[0f32; 8]; R];
    for (o, (acc, acc_min)) in out.iter_mut().zip(acc_row.iter().zip(&acc_min_rows)) {
        let v = _mm256_permutevar8x32_ps(*acc, finalpermutemask);
        // SAFETY: `o` is eight f32: one unaligned 32-byte store.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_sub_ps(v, *acc_min)) };
    }
    out
}
