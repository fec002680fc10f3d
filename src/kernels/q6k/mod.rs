//! q6_K products on the GGUF blocks as they are (issue 6: the LM head of q4k and q5k, and
//! every matrix of q6k, at decode; issue 21: `scalar.rs` is the reference beside
//! `x86_avx2.rs` and `x86_avx512.rs`, and the entry point here dispatches on [`super::isa`]).
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

use super::pool::{self, Order};
use super::rows::{quantize_rows, BlockQ8K, QK_K};
use super::{isa, Isa};

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// Bytes of one GGUF q6_K block: 128 of low nibbles, 64 of high bit pairs, 16 signed 8-bit
/// scales (one per 16 weights), the f16 super-block scale.
const BLOCK_BYTES: usize = 210;
/// Weight rows (output columns) per work item: the 7B's LM head makes 9,500 items, which the
/// pool hands out a few hundred at a time, as it handed out its rows one by one before.
const ROWS_PER_ITEM: usize = 16;

/// Whether an `[n, k]` q6_K weight runs on these kernels on this CPU (elsewhere candle's run).
pub(crate) fn fits(n: usize, k: usize) -> bool {
    isa() >= Isa::Avx2 && n > 0 && k > 0 && k.is_multiple_of(QK_K)
}

/// `dst[m, n] = lhs[m, k] · Wᵀ` for the GGUF q6_K bytes `w` of an `[n, k]` weight that
/// [`fits`], on candle's thread pool. Each weight row is read from memory once for all `m`
/// activation rows (meant for few of them: a decode step).
pub(crate) fn matmul(w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    run(isa(), w, n, k, lhs, m, dst);
}

/// [`matmul`] on the kernels of `set` (tests and benchmarks compare the sets this CPU runs).
///
/// # Panics
/// When this CPU does not run `set`, or the shapes are not an `[n, k]` q6_K weight with `k` a
/// multiple of 256.
pub fn matmul_with(set: Isa, w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    assert!(set.supported(), "this CPU does not run the {set} kernels");
    run(set, w, n, k, lhs, m, dst);
}

fn run(set: Isa, w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    assert!(
        n > 0 && k > 0 && k.is_multiple_of(QK_K),
        "q6_K kernels: [{n}, {k}] is not whole blocks of 256"
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
                    out[j] = dot(set, wr, &act[i * kb..(i + 1) * kb]);
                }
            }
        }
    });
}

/// One weight row against one activation row of as many blocks, on `set` (one the CPU runs).
fn dot(set: Isa, w: &[u8], a: &[BlockQ8K]) -> f32 {
    assert!(
        w.len() >= a.len() * BLOCK_BYTES,
        "q6_K: a weight row shorter than its {} activation blocks",
        a.len()
    );
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (`isa()` or checked by `matmul_with`): AVX-512 F/BW/VL
        // and AVX2's; `w` holds `a.len()` blocks (checked above).
        Isa::Avx512 => unsafe { x86_avx512::dot(w, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (`isa()` or checked by `matmul_with`): AVX2, FMA, F16C;
        // `w` holds `a.len()` blocks (checked above).
        Isa::Avx2 => unsafe { x86_avx2::dot(w, a) },
        _ => scalar::dot(w, a),
    }
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
        eprintln!("q6_K kernel sets run here: {:?}", Isa::available());
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
            for set in Isa::available() {
                let mut got = vec![0f32; m * n];
                matmul_with(set, &bytes, n, k, &lhs, m, &mut got);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "{set} m {m}, output {i}: {g} vs candle's {w}"
                    );
                }
            }
        }
    }
}
