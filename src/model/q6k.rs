//! q6_K products on the GGUF blocks as they are, for x86 with AVX2 (issue 6: the LM head of
//! q4k and q5k, and every matrix of q6k, at decode).
//!
//! candle 0.11.1's q6_K kernel subtracts q6_K's offset of 32 from every product (a second
//! `maddubs` and a `sub` per 32 weights) and unpacks the high bits with three extra shifts;
//! on this project's 2-core AVX2 machine it ran the 7B's LM head (152k × 3584, 447 MB) at
//! 13 GMAC/s per core with the weight in cache, too slow for two cores to reach the memory's
//! speed. This is llama.cpp's current `ggml_vec_dot_q6_K_q8_K` for AVX2
//! (`ggml/src/ggml-cpu/arch/x86/quants.c`, MIT licence), ported to Rust: the offset is taken
//! off once per block from the activation's 16-value sums (`32 · Σ scaleᵢ · bsumᵢ`), and
//! the high bits are masked in place. The integer sums are those of candle's and ggml's
//! kernels.
//!
//! From memory, though, that kernel alone ran slower than candle's (5–8 GB/s on one core):
//! the hardware prefetcher did not keep ahead of it. It prefetches the weight 10 kB ahead,
//! which made one core 1.3× and two cores 1.2–1.4× faster than candle's kernel on the LM
//! head (`examples/kbench.rs`). The blocks are read where they lie (the memory-mapped cache
//! file), so nothing is copied or repacked.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::q4k_x8::{BlockQ8K, QK_K};
use crate::kernels::pool::{self, Order};
use crate::kernels::rows::quantize_rows;

/// Bytes of one GGUF q6_K block: 128 of low nibbles, 64 of high bit pairs, 16 signed 8-bit
/// scales (one per 16 weights), the f16 super-block scale.
const BLOCK_BYTES: usize = 210;
/// How far ahead (10 kB) the kernel prefetches weight blocks: the hardware prefetcher alone
/// left the single-core product of the 7B's LM head at 5–8 GB/s, slower than candle's
/// kernel; 4 blocks ahead did not help, 24 and 48 did alike (`examples/kbench.rs`).
const PREFETCH_BLOCKS: usize = 48;
/// Weight rows (output columns) per work item: the 7B's LM head makes 9,500 items, which the
/// pool hands out a few hundred at a time, as it handed out its rows one by one before.
const ROWS_PER_ITEM: usize = 16;

/// Whether an `[n, k]` q6_K weight runs on these kernels on this CPU.
pub(crate) fn fits(n: usize, k: usize) -> bool {
    super::q4k_x8::supported() && n > 0 && k > 0 && k.is_multiple_of(QK_K)
}

/// `dst[m, n] = lhs[m, k] · Wᵀ` for the GGUF q6_K bytes `w` of an `[n, k]` weight that
/// [`fits`], on candle's thread pool. Each weight row is read from memory once for all `m`
/// activation rows (meant for few of them: a decode step).
pub(crate) fn matmul(w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    assert!(
        fits(n, k),
        "q6_K kernels: [{n}, {k}] does not fit this CPU or layout"
    );
    let kb = k / QK_K;
    assert_eq!(
        w.len(),
        n * kb * BLOCK_BYTES,
        "q6_K weight is not [{n}, {k}]"
    );
    assert_eq!(lhs.len(), m * k, "lhs is not [{m}, {k}]");
    assert_eq!(dst.len(), m * n, "dst is not [{m}, {n}]");
    let act = quantize_rows(lhs, m, k, QK_K, BlockQ8K::ZERO, BlockQ8K::quantize);
    pool::for_each_tile(dst, n, (m, ROWS_PER_ITEM), Order::RowBlocks, |tiles| {
        for tile in tiles {
            for j in 0..ROWS_PER_ITEM.min(n - tile.col0) {
                let r = tile.col0 + j;
                let wr = &w[r * kb * BLOCK_BYTES..(r + 1) * kb * BLOCK_BYTES];
                for (i, out) in tile.rows.iter_mut().enumerate() {
                    // SAFETY: `fits` checked the CPU; `wr` holds as many blocks as an
                    // activation row.
                    out[j] = unsafe { dot(wr, &act[i * kb..(i + 1) * kb]) };
                }
            }
        }
    });
}

/// ggml's `get_scale_shuffle`: mask `i` spreads scale bytes `2i` and `2i + 1` over the
/// 8 + 8 sixteen-bit lanes that a `maddubs` of 32 weights fills.
const SCALE_SHUFFLE: [[u8; 16]; 8] = {
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot(w: &[u8], a: &[BlockQ8K]) -> f32 {
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

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot(_: &[u8], _: &[BlockQ8K]) -> f32 {
    unreachable!("fits() is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// The kernels give candle's q6_K block product (the same q8_K activations and integer
    /// sums, summed in another order), for one and several activation rows.
    #[test]
    fn kernels_compute_candles_q6k_product() {
        if !super::super::q4k_x8::supported() {
            return;
        }
        let (n, k) = (37, 768);
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).expect("randn");
        let q = QTensor::quantize(&w, GgmlDType::Q6K).expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        for m in [1, 3] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).expect("x");
            let want = candle_core::quantized::QMatMul::from_qtensor(
                QTensor::quantize(&w, GgmlDType::Q6K).expect("quantize"),
            )
            .and_then(|mm| candle_core::Module::forward(&mm, &x))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("candle");
            let lhs = x.flatten_all().and_then(|t| t.to_vec1()).expect("lhs");
            let mut got = vec![0f32; m * n];
            matmul(&bytes, n, k, &lhs, m, &mut got);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "m {m}, output {i}: {g} vs candle's {w}"
                );
            }
        }
    }
}
