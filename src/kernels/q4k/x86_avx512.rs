//! The interleaved q4_K product on AVX-512 F/BW/VL: the AVX2 loop ([`super::x86_avx2`]) with
//! two sub-blocks of 64 values side by side in each 512-bit register (the lower half sub-block
//! `2p`, the upper `2p + 1`), so the nibble unpacking, the products and their sums take half
//! the instructions. The integer sums are the same as AVX2's; the two halves are added before
//! the float stage, which is AVX2's.
//!
//! For eight activation rows or more, [`gemm_x16`] uses VNNI instead: the weight group
//! unpacked once per work item to a byte per value ([`unpack`]), and sixteen activation rows
//! in the lanes of each register, so that one `vpdpbusd` with a broadcast memory operand
//! (a weight row's four values) does 64 multiply-adds, where the loop above needs a
//! `maddubs`, an add and a shuffle for as many; its integer sums, and so its outputs, are
//! this loop's.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::{BlockQ4Kx8, BlockQ8K, BlockQ8Kx16, Q4kUnpacked, PREFETCH_BLOCKS, QK_K, X16};

/// Eight outputs for each of `R` activation rows: `out[r][j] = a[r] · w_row(j)` for the eight
/// weight rows of one interleaved group.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL. (Each `a[r]` must have `w.len()`
/// blocks, which the caller checks: every access is in bounds of a block.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn gemm_tile<const R: usize>(
    w: &[BlockQ4Kx8],
    a: [&[BlockQ8K]; R],
) -> [[f32; 8]; R] {
    let deltamask = _mm_set_epi8(15, 14, 7, 6, 13, 12, 5, 4, 11, 10, 3, 2, 9, 8, 1, 0);
    let scalemask = _mm_set_epi8(7, 7, 3, 3, 6, 6, 2, 2, 5, 5, 1, 1, 4, 4, 0, 0);
    let finalpermutemask = _mm256_set_epi32(7, 5, 3, 1, 6, 4, 2, 0);
    let m4b = _mm512_set1_epi8(0x0F);

    let mut acc_row = [_mm256_setzero_ps(); R];
    let mut acc_min_rows = [_mm256_setzero_ps(); R];

    for (b, wb) in w.iter().enumerate() {
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

        let mut iacc_b = [_mm512_setzero_si512(); R];
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

        for p in 0..QK_K / 128 {
            let (sb0, sb1) = (2 * p, 2 * p + 1);
            // SAFETY: sub-blocks `sb0, sb1 < 4` are bytes `256·sb..256·sb + 256` of the 1024
            // of `qs`; `off ≤ 224` below keeps each 32-byte load inside its sub-block.
            let raw = |off: usize| unsafe {
                let lo = _mm256_loadu_si256(wb.qs.as_ptr().add(sb0 * 256 + off) as *const __m256i);
                let hi = _mm256_loadu_si256(wb.qs.as_ptr().add(sb1 * 256 + off) as *const __m256i);
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            };
            let raws: [__m512i; 8] = std::array::from_fn(|i| raw(32 * i));
            let lo = |v: __m512i| _mm512_and_si512(v, m4b);
            let hi = |v: __m512i| _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4b);
            let ev = |x0123: __m512i, x4567: __m512i| {
                _mm512_mask_blend_epi32(0xAAAA, x0123, _mm512_shuffle_epi32::<177>(x4567))
            };
            let od = |x0123: __m512i, x4567: __m512i| {
                _mm512_mask_blend_epi32(0xAAAA, _mm512_shuffle_epi32::<177>(x0123), x4567)
            };
            let operands = |x: [__m512i; 8]| -> [__m512i; 8] {
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

            let ms = |sb: usize, half: usize| {
                let u = super::scales_and_mins(&wb.scales, 24 * sb + 12 * half);
                _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32)
            };
            let (ms00, ms01, ms10, ms11) = (ms(sb0, 0), ms(sb0, 1), ms(sb1, 0), ms(sb1, 1));
            let scales = |a: __m128i, b: __m128i| {
                let lo = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(a, scalemask));
                let hi = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(b, scalemask));
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            };
            // Lower half: sub-block sb0's scales; upper: sb1's.
            let scales_0 = scales(ms00, ms10);
            let scales_1 = scales(ms01, ms11);
            let mins = |a: __m128i, b: __m128i| {
                _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(
                    _mm_shuffle_epi32::<78>(a),
                    _mm_shuffle_epi32::<78>(b),
                ))
            };
            let (mins_0, mins_1) = (mins(ms00, ms01), mins(ms10, ms11));

            for r in 0..R {
                let q8 = a[r][b].qs.as_ptr();
                let lhs = |off: usize| {
                    // SAFETY: `off ≤ 48`: 16 bytes inside each sub-block's 64 values of the
                    // 256 of `qs`.
                    let (x, y) = unsafe {
                        (
                            _mm_loadu_si128(q8.add(sb0 * 64 + off) as *const __m128i),
                            _mm_loadu_si128(q8.add(sb1 * 64 + off) as *const __m128i),
                        )
                    };
                    let x = _mm256_broadcastsi128_si256(x);
                    let y = _mm256_broadcastsi128_si256(y);
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), y)
                };
                let (l00, l01, l10, l11) = (lhs(0), lhs(16), lhs(32), lhs(48));
                let dot = |wv: &[__m512i; 8], la: __m512i, lb: __m512i| {
                    let t = |x: __m512i, y: __m512i| _mm512_maddubs_epi16(x, y);
                    let mut acc = t(wv[0], _mm512_shuffle_epi32::<0>(la));
                    acc = _mm512_add_epi16(acc, t(wv[1], _mm512_shuffle_epi32::<85>(la)));
                    acc = _mm512_add_epi16(acc, t(wv[2], _mm512_shuffle_epi32::<170>(la)));
                    acc = _mm512_add_epi16(acc, t(wv[3], _mm512_shuffle_epi32::<255>(la)));
                    acc = _mm512_add_epi16(acc, t(wv[4], _mm512_shuffle_epi32::<0>(lb)));
                    acc = _mm512_add_epi16(acc, t(wv[5], _mm512_shuffle_epi32::<85>(lb)));
                    acc = _mm512_add_epi16(acc, t(wv[6], _mm512_shuffle_epi32::<170>(lb)));
                    _mm512_add_epi16(acc, t(wv[7], _mm512_shuffle_epi32::<255>(lb)))
                };
                let iacc_0 = _mm512_madd_epi16(dot(&w0, l00, l01), scales_0);
                let iacc_1 = _mm512_madd_epi16(dot(&w1, l10, l11), scales_1);
                iacc_b[r] = _mm512_add_epi32(iacc_b[r], _mm512_add_epi32(iacc_0, iacc_1));
                for mins in [mins_0, mins_1] {
                    let q8s_sb = _mm256_shuffle_epi32::<0>(q8s[r]);
                    iacc_min_b[r] =
                        _mm256_add_epi32(iacc_min_b[r], _mm256_madd_epi16(q8s_sb, mins));
                    q8s[r] = _mm256_bsrli_epi128::<4>(q8s[r]);
                }
            }
        }

        for r in 0..R {
            let sum = _mm256_add_epi32(
                _mm512_castsi512_si256(iacc_b[r]),
                _mm512_extracti64x4_epi64::<1>(iacc_b[r]),
            );
            let row_scale_f32 = _mm256_set1_ps(a[r][b].d);
            acc_row[r] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(sum),
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

/// `blk` unpacked for [`gemm_x16`] into `u` (every field written): the nibbles to bytes as
/// they lie (a 64-byte stretch of the interleaving holds eight bytes of each row: its low
/// nibbles are sub-block `2j`'s values `8·c..8·c + 8`, its high nibbles sub-block `2j + 1`'s),
/// the sums of each row's values per sub-block by `vpsadbw`, the scales and mins as ggml
/// unpacks them, eight rows per vector.
///
/// # Safety
/// The CPU must have AVX2, F16C and AVX-512 F/BW/VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn unpack(blk: &BlockQ4Kx8, u: &mut Q4kUnpacked) {
    let m4b = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let mut corr = _mm256_setzero_si256();
    let mut mins_lo = _mm256_setzero_si256();
    for j in 0..4 {
        // Sums of each row's values in sub-blocks 2j and 2j + 1 (a u64 lane per row).
        let (mut sum_lo, mut sum_hi) = (zero, zero);
        for c in 0..4 {
            // SAFETY: `j < 4`, `c < 4`: 64 bytes at `256·j + 64·c` of the 1024 of `qs`.
            let z = unsafe { _mm512_loadu_si512(blk.qs.as_ptr().add(256 * j + 64 * c).cast()) };
            let lo = _mm512_and_si512(z, m4b);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(z), m4b);
            // SAFETY: sub-blocks `2j + 1 < 8`, `c < 4`: 64 bytes at `256·t + 64·c` of the
            // 2048 of `q`, 64-byte aligned.
            unsafe {
                _mm512_store_si512(u.q.as_mut_ptr().add(256 * (2 * j) + 64 * c).cast(), lo);
                _mm512_store_si512(u.q.as_mut_ptr().add(256 * (2 * j + 1) + 64 * c).cast(), hi);
            }
            sum_lo = _mm512_add_epi64(sum_lo, _mm512_sad_epu8(lo, zero));
            sum_hi = _mm512_add_epi64(sum_hi, _mm512_sad_epu8(hi, zero));
        }
        for (t, sum) in [(2 * j, sum_lo), (2 * j + 1, sum_hi)] {
            let b = super::scales_and_mins(&blk.scales, 12 * t);
            // Bytes 0–7 are the eight rows' scales, 8–15 their mins.
            let bytes = _mm_set_epi32(b[3] as i32, b[2] as i32, b[1] as i32, b[0] as i32);
            let sc = _mm256_cvtepu8_epi32(bytes);
            let m = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(bytes));
            // SAFETY: `sc[t]` is eight i32, 32 bytes: one unaligned store.
            unsafe { _mm256_storeu_si256(u.sc[t].as_mut_ptr().cast(), sc) };
            corr = _mm256_add_epi32(corr, _mm256_mullo_epi32(sc, _mm512_cvtepi64_epi32(sum)));
            if t % 2 == 0 {
                mins_lo = m;
            } else {
                let pair = _mm256_or_si256(mins_lo, _mm256_slli_epi32::<16>(m));
                // SAFETY: `mins[t / 2]` is eight u32, 32 bytes: one unaligned store.
                unsafe { _mm256_storeu_si256(u.mins[t / 2].as_mut_ptr().cast(), pair) };
            }
        }
    }
    // SAFETY: `corr` is eight i32 (32 bytes); `d` and `dmin` are eight f16 each (16 bytes)
    // and their f32 eight each.
    unsafe {
        _mm256_storeu_si256(u.corr.as_mut_ptr().cast(), _mm256_slli_epi32::<7>(corr));
        let d = _mm_loadu_si128(blk.d.as_ptr().cast());
        let dmin = _mm_loadu_si128(blk.dmin.as_ptr().cast());
        _mm256_storeu_ps(u.d.as_mut_ptr(), _mm256_cvtph_ps(d));
        _mm256_storeu_ps(u.dmin.as_mut_ptr(), _mm256_cvtph_ps(dmin));
    }
}

/// `out[r][l] = a_l · w_row(r)` for the eight weight rows of an unpacked group and sixteen
/// activation rows, over `w.len()` blocks: per sub-block and weight row, eight `vpdpbusd`
/// (the activations' biased bytes times the weight row's four values, broadcast from
/// memory), then times the row's scale (`vpmulld`) into the block's integer sum; the mins by
/// `vpdpwssd` on the rows' sub-block sums. The float stage is the four-row loop's, lane by
/// lane.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `a` must hold as many blocks
/// as `w`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x16(w: &[Q4kUnpacked], a: &[BlockQ8Kx16]) -> [[f32; X16]; 8] {
    debug_assert_eq!(w.len(), a.len());
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 8];
    let mut acc_min = [_mm512_setzero_ps(); 8];
    for (u, blk) in w.iter().zip(a) {
        let mut itot: [__m512i; 8] = std::array::from_fn(|r| _mm512_set1_epi32(-u.corr[r]));
        for t in 0..QK_K / 32 {
            let mut isum = [zero; 8];
            for j in 0..8 {
                // SAFETY: `8·t + j < 64`: 64 of the 4096 bytes of `qs`, 64-byte aligned.
                let av = unsafe { _mm512_load_si512(blk.qs.as_ptr().add(64 * (8 * t + j)).cast()) };
                for (r, sum) in isum.iter_mut().enumerate() {
                    // SAFETY: `Q4kUnpacked::at(t, j, r) + 4 ≤ 2048`: four bytes of `q`.
                    let four = unsafe {
                        (u.q.as_ptr().add(Q4kUnpacked::at(t, j, r)) as *const i32).read_unaligned()
                    };
                    *sum = _mm512_dpbusd_epi32(*sum, av, _mm512_set1_epi32(four));
                }
            }
            for (r, tot) in itot.iter_mut().enumerate() {
                let scaled = _mm512_mullo_epi32(isum[r], _mm512_set1_epi32(u.sc[t][r]));
                *tot = _mm512_add_epi32(*tot, scaled);
            }
        }
        let mut imin = [zero; 8];
        for p in 0..4 {
            // SAFETY: `p < 4`: 16 of the 64 u32 of `bsums`, 64-byte aligned.
            let bs = unsafe { _mm512_load_si512(blk.bsums.as_ptr().add(16 * p).cast()) };
            for (r, m) in imin.iter_mut().enumerate() {
                *m = _mm512_dpwssd_epi32(*m, bs, _mm512_set1_epi32(u.mins[p][r] as i32));
            }
        }
        // SAFETY: sixteen f32, 64-byte aligned in the block.
        let da = unsafe { _mm512_load_ps(blk.d.as_ptr()) };
        for r in 0..8 {
            let scale = _mm512_mul_ps(_mm512_set1_ps(u.d[r]), da);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(itot[r]), scale, acc[r]);
            let scale_min = _mm512_mul_ps(_mm512_set1_ps(u.dmin[r]), da);
            acc_min[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[r]), scale_min, acc_min[r]);
        }
    }
    let mut out = [[0f32; X16]; 8];
    for (o, (acc, acc_min)) in out.iter_mut().zip(acc.iter().zip(&acc_min)) {
        // SAFETY: `o` is sixteen f32: one unaligned 64-byte store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_sub_ps(*acc, *acc_min)) };
    }
    out
}
