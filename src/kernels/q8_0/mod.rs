//! q8_0 matrix products straight on GGUF blocks (issues 6 and 21): this file is the safe entry
//! point (shapes, tiling, threading); the inner loops are in `scalar.rs` (the reference),
//! `x86_avx2.rs` and `x86_avx512.rs` (`vpdpbusd` for the int8 dot products), chosen by
//! [`super::isa`].
//!
//! candle 0.11.1 has no fast q8_0 path on AVX2 (its repacked kernel needs VNNI, its block
//! kernel ran at ~10 GB/s here), so q8_0 decoded at half llama.cpp's speed and prefilled
//! through a dequantized f32 copy. These kernels quantize the activations to q8_0 as ggml
//! does and use ggml's sign trick for signed×signed bytes (`maddubs(|x|, sign(y, x))`):
//! - for one activation row (a decode step), eight weight rows per pass whose sums of a
//!   block are reduced into one vector before they are scaled ([`tile8`]): 1.8× the
//!   speed of a four-row tile with the weight in cache, 1.2–1.3× from memory;
//! - for two to seven rows (the rest of a prefill), a tile of four weight rows by two or
//!   four rows per pass ([`tile_pairs`], [`tile`]), a weight block loaded once for all;
//! - for many rows (a prefill, the vision tower), eight activation rows interleaved four
//!   bytes at a time, against which each weight row's four bytes are broadcast
//!   ([`tile_x8`]): no horizontal sums, one sign, two multiplies and an add per 32
//!   multiply-adds, 85–100 GMAC/s on two cores where the pair tiles ran at 55–75.
//!
//! With AVX-512 VNNI, `vpdpbusd` does the multiply and both adds at once: [`tile8`] takes two
//! weight rows per 512-bit register and [`tile_x8`] two four-column steps; the few-row tiles
//! stay on AVX2's code, which that CPU also runs. At decode both sets' [`tile8`] prefetch each
//! of their eight weight rows ahead (`x86_avx2::PREFETCH_BYTES`).
//!
//! Weights are read where they are: no repacking, no second copy.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::pool::{self, Order, Tile};
use super::rows::quantize_rows;
use super::{isa, Isa};

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// Weights per block.
const QK: usize = 32;
/// Bytes of one GGUF q8_0 block: d (f16) and 32 signed bytes.
const BLOCK_BYTES: usize = 34;
/// Weight rows per tile.
const TILE_ROWS: usize = 4;
/// Groups of eight activation rows per block of work on the interleaved path: 128 rows,
/// whose interleaved blocks (0.5–5 MB at the 7B's and CLIP's widths) stay in L3 while the
/// weight tiles of a chunk pass over them, so a weight is read from memory once per 128
/// rows (4, 16 and 64 groups: 84, 97 and 57 GMAC/s on the 7B's gate projection at 512
/// rows, and 64 halved the down projection's speed; `examples/kbench.rs`).
const GROUP_BLOCK: usize = 16;
/// Activation rows per pass (two pairs: [`tile_pairs`]).
const MAX_R: usize = 4;
/// Weight tiles per work item.
const TILE_CHUNK: usize = 4;

/// One activation block quantized to 8 bits, with an f32 scale.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ8 {
    d: f32,
    qs: [i8; QK],
}

impl BlockQ8 {
    const ZERO: Self = Self {
        d: 0.0,
        qs: [0; QK],
    };

    /// ggml's `quantize_row_q8_0` for 32 values (round to nearest even), keeping the scale
    /// in f32.
    fn quantize(xs: &[f32]) -> Self {
        let amax = xs.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut out = Self { d, qs: [0; QK] };
        for (q, &x) in out.qs.iter_mut().zip(xs) {
            let v = x * id + 12_582_912.0;
            *q = ((v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000) as i8;
        }
        out
    }
}

/// One 32-column block of eight activation rows, interleaved four bytes at a time:
/// `qs[32·c + 4·l + t]` is row `l`'s value `4·c + t`, so that one vector holds four columns
/// of all eight rows and a weight row's four bytes are broadcast against it ([`tile_x8`]);
/// `abs` holds their magnitudes, made once here rather than once per weight tile.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct BlockQ8x8 {
    d: [f32; 8],
    qs: [i8; 8 * QK],
    abs: [u8; 8 * QK],
}

impl BlockQ8x8 {
    const ZERO: Self = Self {
        d: [0.0; 8],
        qs: [0; 8 * QK],
        abs: [0; 8 * QK],
    };
}

/// Activation rows `8·g..8·g + 8` of `lhs` (`k` wide) for each of `groups` groups,
/// quantized as [`BlockQ8::quantize`] and interleaved: `k / 32` blocks per group.
fn quantize_groups(lhs: &[f32], groups: usize, k: usize) -> Vec<BlockQ8x8> {
    let kb = (k / QK).max(1);
    let mut out = vec![BlockQ8x8::ZERO; groups * (k / QK)];
    pool::for_each_run(&mut out, kb, groups >= 2, |first, run| {
        for (i, blocks) in run.chunks_mut(kb).enumerate() {
            let g = first + i;
            for (b, blk) in blocks.iter_mut().enumerate() {
                for l in 0..8 {
                    let at = (g * 8 + l) * k + b * QK;
                    let q = BlockQ8::quantize(&lhs[at..at + QK]);
                    blk.d[l] = q.d;
                    for (c, four) in q.qs.chunks_exact(4).enumerate() {
                        blk.qs[32 * c + 4 * l..32 * c + 4 * l + 4].copy_from_slice(four);
                    }
                }
                for (a, &q) in blk.abs.iter_mut().zip(&blk.qs) {
                    *a = q.unsigned_abs();
                }
            }
        }
    });
    out
}

/// Whether an `[n, k]` q8_0 weight runs on these kernels here (elsewhere candle's run).
pub(crate) fn fits(n: usize, k: usize) -> bool {
    isa() >= Isa::Avx2 && shape_fits(n, k)
}

fn shape_fits(n: usize, k: usize) -> bool {
    n > 0 && k > 0 && n.is_multiple_of(TILE_ROWS) && k.is_multiple_of(QK)
}

/// `dst[m, n] = lhs[m, k] · Wᵀ` for the GGUF q8_0 bytes `w` of an `[n, k]` weight that
/// [`fits`], on candle's thread pool.
pub(crate) fn matmul(w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    run(isa(), w, n, k, lhs, m, dst);
}

/// [`matmul`] on the kernels of `set` (tests and benchmarks compare the sets this CPU runs).
///
/// # Panics
/// When this CPU does not run `set`, or the shapes are not an `[n, k]` q8_0 weight with `n` a
/// multiple of 4 and `k` of 32.
pub fn matmul_with(set: Isa, w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    assert!(set.supported(), "this CPU does not run the {set} kernels");
    run(set, w, n, k, lhs, m, dst);
}

/// [`matmul`] on `set`, which the CPU runs (it came from [`isa`] or was checked).
fn run(set: Isa, w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    assert!(
        shape_fits(n, k),
        "q8_0 kernels: [{n}, {k}] is not a multiple of 4 rows by 32 columns"
    );
    let kb = k / QK;
    assert_eq!(
        w.len(),
        n * kb * BLOCK_BYTES,
        "q8_0 weight is not [{n}, {k}]"
    );
    assert_eq!(lhs.len(), m * k, "lhs is not [{m}, {k}]");
    assert_eq!(dst.len(), m * n, "dst is not [{m}, {n}]");
    // Whole groups of eight rows on the interleaved kernel, the rest (a decode step's one
    // row, a prefill's last few) on the few-row tiles.
    let whole = m / 8 * 8;
    if whole > 0 {
        matmul_x8(
            set,
            w,
            n,
            k,
            &lhs[..whole * k],
            whole / 8,
            &mut dst[..whole * n],
        );
    }
    if whole < m {
        matmul_rows(
            set,
            w,
            n,
            k,
            &lhs[whole * k..],
            m - whole,
            &mut dst[whole * n..],
        );
    }
}

/// Runs `f(tile, col, weights)` on candle's thread pool for every tile of `dst` (`[m, n]`)
/// of `rows` activation rows by a chunk of [`TILE_CHUNK`] × 4 weight rows, and every four
/// weight rows in it, whose outputs are the tile's columns `col..col + 4`.
fn for_each_tile(
    w: &[u8],
    (n, kb): (usize, usize),
    dst: &mut [f32],
    rows: usize,
    f: impl Fn(&mut Tile<'_, '_, f32>, usize, [&[u8]; 4]) + Sync,
) {
    let tiles = n / TILE_ROWS;
    let shape = (rows, TILE_CHUNK * TILE_ROWS);
    pool::for_each_tile(dst, n, shape, Order::RowBlocks, |run| {
        for tile in run {
            let first = tile.col0 / TILE_ROWS;
            for (i, t) in (first..tiles.min(first + TILE_CHUNK)).enumerate() {
                let wrow = |j: usize| {
                    let at = (t * TILE_ROWS + j) * kb * BLOCK_BYTES;
                    &w[at..at + kb * BLOCK_BYTES]
                };
                f(tile, i * TILE_ROWS, [wrow(0), wrow(1), wrow(2), wrow(3)]);
            }
        }
    });
}

/// [`matmul`] for `groups` whole groups of eight activation rows, on [`tile_x8`].
fn matmul_x8(set: Isa, w: &[u8], n: usize, k: usize, lhs: &[f32], groups: usize, dst: &mut [f32]) {
    let kb = k / QK;
    let act = quantize_groups(lhs, groups, k);
    for_each_tile(w, (n, kb), dst, GROUP_BLOCK * 8, |out, col, ws| {
        for l in (0..out.rows.len()).step_by(8) {
            let g = (out.row0 + l) / 8;
            let a = &act[g * kb..(g + 1) * kb];
            out.put(l, col, &tile_x8(set, ws, a));
        }
    });
}

/// [`matmul`] for fewer than eight activation rows (a decode step, the rest of a prefill):
/// four weight rows by up to four activation rows per pass.
fn matmul_rows(set: Isa, w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    debug_assert!(m < 8, "whole groups of eight rows go to matmul_x8");
    if m == 1 {
        return matmul_one(set, w, k, lhs, dst);
    }
    let kb = k / QK;
    let act = quantize_rows(lhs, m, k, QK, BlockQ8::ZERO, BlockQ8::quantize);
    for_each_tile(w, (n, kb), dst, m, |out, col, ws| {
        let mut r = 0;
        while r < m {
            let take = (m - r).min(MAX_R);
            let a = |i: usize| &act[(r + i) * kb..(r + i + 1) * kb];
            match take {
                4 => {
                    let sums = tile_pairs(set, ws, [[a(0), a(1)], [a(2), a(3)]]);
                    out.put(r, col, sums.as_flattened());
                }
                2 | 3 => {
                    out.put(r, col, tile_pairs(set, ws, [[a(0), a(1)]]).as_flattened());
                    if take == 3 {
                        out.put(r + 2, col, &tile(set, ws, [a(2)]));
                    }
                }
                _ => out.put(r, col, &tile(set, ws, [a(0)])),
            }
            r += take;
        }
    });
}

/// [`matmul`] for one activation row (a decode step): eight weight rows per pass
/// ([`tile8`]), the last four of an `n` that is not a multiple of eight on [`tile`].
fn matmul_one(set: Isa, w: &[u8], k: usize, lhs: &[f32], dst: &mut [f32]) {
    let kb = k / QK;
    let act = quantize_rows(lhs, 1, k, QK, BlockQ8::ZERO, BlockQ8::quantize);
    let wrow = |r: usize| &w[r * kb * BLOCK_BYTES..(r + 1) * kb * BLOCK_BYTES];
    pool::for_each_run(dst, 8, true, |first, run| {
        for (t, out) in run.chunks_mut(8).enumerate() {
            let row0 = (first + t) * 8;
            // `n`, so `out.len()`, is a multiple of four (checked by `run`).
            if out.len() == 8 {
                out.copy_from_slice(&tile8(set, std::array::from_fn(|i| wrow(row0 + i)), &act));
            } else {
                let [four] = tile(set, std::array::from_fn(|i| wrow(row0 + i)), [&act]);
                out.copy_from_slice(&four);
            }
        }
    });
}

// The inner loops, dispatched on the kernel set. `set` is always one this CPU runs (it comes
// from `isa()`, which only holds a detected or checked set, or was checked by `matmul_with`),
// and each call's slices hold as many blocks as each weight row (built so by the callers
// above): the contracts of the SIMD variants.

/// `out[r][i] = a[r] · w[i]` for four weight rows and `R` activation rows.
fn tile<const R: usize>(set: Isa, w: [&[u8]; 4], a: [&[BlockQ8]; R]) -> [[f32; 4]; R] {
    check_rows(&w, a.iter().map(|a| a.len()));
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (above), so AVX2, FMA and F16C; the rows were checked.
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::tile(w, a) },
        _ => scalar::tile(w, a),
    }
}

/// `out[p][j][i] = a[p][j] · w[i]` for four weight rows and `P` pairs of activation rows.
fn tile_pairs<const P: usize>(
    set: Isa,
    w: [&[u8]; 4],
    a: [[&[BlockQ8]; 2]; P],
) -> [[[f32; 4]; 2]; P] {
    check_rows(&w, a.iter().flatten().map(|a| a.len()));
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (above), so AVX2, FMA and F16C; the rows were checked.
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::tile_pairs(w, a) },
        _ => scalar::tile_pairs(w, a),
    }
}

/// `out[i] = a · w[i]` for eight weight rows and one activation row.
fn tile8(set: Isa, w: [&[u8]; 8], a: &[BlockQ8]) -> [f32; 8] {
    check_rows(&w, [a.len()]);
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (above), so AVX-512 F/BW/VL/VNNI; the rows were checked.
        Isa::Avx512 => unsafe { x86_avx512::tile8(w, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (above), so AVX2, FMA and F16C; the rows were checked.
        Isa::Avx2 => unsafe { x86_avx2::tile8(w, a) },
        _ => scalar::tile8(w, a),
    }
}

/// `out[l][i] = a_l · w[i]` for four weight rows and eight interleaved activation rows.
fn tile_x8(set: Isa, w: [&[u8]; 4], a: &[BlockQ8x8]) -> [[f32; 4]; 8] {
    check_rows(&w, [a.len()]);
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (above), so AVX-512 F/BW/VL/VNNI; the rows were checked.
        Isa::Avx512 => unsafe { x86_avx512::tile_x8(w, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (above), so AVX2, FMA and F16C; the rows were checked.
        Isa::Avx2 => unsafe { x86_avx2::tile_x8(w, a) },
        _ => scalar::tile_x8(w, a),
    }
}

/// The SIMD variants' memory contract: every weight row holds the blocks of every activation
/// row. A few compares per tile, against thousands of multiply-adds.
#[inline]
fn check_rows(w: &[&[u8]], blocks: impl IntoIterator<Item = usize>) {
    let shortest = w.iter().map(|w| w.len()).min().unwrap_or(0);
    for kb in blocks {
        assert!(
            shortest >= kb * BLOCK_BYTES,
            "q8_0: a weight row shorter than its {kb} activation blocks"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// A weight of `n` rows by `k`, as GGUF q8_0 bytes and dequantized.
    fn weight(n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let vals: Vec<f32> = (0..n * k)
            .map(|i| {
                ((i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / 16_777_216.0
                    - 0.5
            })
            .collect();
        let q = QTensor::quantize(
            &Tensor::from_vec(vals, (n, k), &Device::Cpu).expect("w"),
            GgmlDType::Q8_0,
        )
        .expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("dequantize");
        (bytes, deq)
    }

    fn activations(m: usize, k: usize) -> Vec<f32> {
        (0..m * k)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * if i % 7 == 0 { 3.0 } else { 1.0 })
            .collect()
    }

    /// Every kernel set this CPU runs, the scalar reference included, computes the product of
    /// the activations quantized as the kernels do with the weight, to f32 rounding: for one
    /// row (decode), two to seven (the few-row tiles), whole groups of eight (interleaved)
    /// and mixtures, with a tail of four weight rows, one block or many.
    #[test]
    fn every_kernel_set_computes_the_quantized_product() {
        let ran = Isa::available();
        eprintln!("q8_0 kernel sets run on this CPU: {ran:?}");
        for (n, k) in [(12, 320), (4, 32), (8, 96)] {
            let (bytes, deq) = weight(n, k, n as u64);
            for m in [1, 2, 3, 5, 7, 8, 17, 40, 136] {
                let lhs = activations(m, k);
                for &set in &ran {
                    let mut got = vec![f32::NAN; m * n];
                    matmul_with(set, &bytes, n, k, &lhs, m, &mut got);
                    for r in 0..m {
                        // The reference: the activation row quantized as the kernel does,
                        // then the exact products in f64.
                        let act: Vec<f64> = lhs[r * k..(r + 1) * k]
                            .chunks_exact(QK)
                            .flat_map(|c| {
                                let q = BlockQ8::quantize(c);
                                q.qs.map(|v| v as f64 * q.d as f64)
                            })
                            .collect();
                        for j in 0..n {
                            let want: f64 = deq[j * k..(j + 1) * k]
                                .iter()
                                .zip(&act)
                                .map(|(&w, &a)| w as f64 * a)
                                .sum();
                            let g = got[r * n + j] as f64;
                            assert!(
                                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                                "{set} [{n}, {k}] m {m} [{r}, {j}]: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Each SIMD inner loop against its scalar twin on the same blocks, with extreme values
    /// (±127 weights and activations, zero scales): the integer sums are exact in both, so
    /// they agree to f32 rounding.
    #[test]
    fn simd_tiles_match_the_scalar_ones() {
        let ran: Vec<Isa> = Isa::available()
            .into_iter()
            .filter(|&s| s != Isa::Scalar)
            .collect();
        eprintln!("q8_0 SIMD variants compared with scalar here: {ran:?}");
        for kb in [1, 3, 17] {
            let k = kb * QK;
            let (mut bytes, _) = weight(8, k, kb as u64);
            // Saturate some weights to ±127 and zero one block's scale.
            for (i, byte) in bytes.iter_mut().enumerate() {
                let in_block = i % BLOCK_BYTES;
                if in_block >= 2 && i % 5 == 0 {
                    *byte = if i % 2 == 0 { 127 } else { (-127i8) as u8 };
                }
            }
            bytes[0] = 0;
            bytes[1] = 0;
            let rows: Vec<&[u8]> = bytes.chunks_exact(kb * BLOCK_BYTES).collect();
            let mut lhs = activations(8, k);
            lhs[3] = 1e4;
            let act = quantize_rows(&lhs, 8, k, QK, BlockQ8::ZERO, BlockQ8::quantize);
            let row = |r: usize| &act[r * kb..(r + 1) * kb];
            let groups = quantize_groups(&lhs, 1, k);
            let w8: [&[u8]; 8] = std::array::from_fn(|i| rows[i]);
            let w4: [&[u8]; 4] = std::array::from_fn(|i| rows[i + 4]);
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
            for &set in &ran {
                let (got, want) = (tile8(set, w8, row(0)), scalar::tile8(w8, row(0)));
                assert!(
                    got.iter().zip(&want).all(|(&g, &w)| close(g, w)),
                    "{set} tile8 kb {kb}: {got:?} vs {want:?}"
                );
                let (got, want) = (tile_x8(set, w4, &groups), scalar::tile_x8(w4, &groups));
                assert!(
                    got.as_flattened()
                        .iter()
                        .zip(want.as_flattened())
                        .all(|(&g, &w)| close(g, w)),
                    "{set} tile_x8 kb {kb}"
                );
                let (got, want) = (
                    tile_pairs(set, w4, [[row(1), row(2)], [row(3), row(4)]]),
                    scalar::tile_pairs(w4, [[row(1), row(2)], [row(3), row(4)]]),
                );
                assert!(
                    got.as_flattened()
                        .as_flattened()
                        .iter()
                        .zip(want.as_flattened().as_flattened())
                        .all(|(&g, &w)| close(g, w)),
                    "{set} tile_pairs kb {kb}"
                );
                let (got, want) = (tile(set, w4, [row(5)]), scalar::tile(w4, [row(5)]));
                assert!(
                    got.as_flattened()
                        .iter()
                        .zip(want.as_flattened())
                        .all(|(&g, &w)| close(g, w)),
                    "{set} tile kb {kb}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "shorter than its")]
    fn a_short_weight_row_is_refused_before_any_simd_read() {
        let act = [BlockQ8::ZERO; 2];
        let short = [0u8; BLOCK_BYTES];
        let _ = tile8(Isa::detected(), [&short[..]; 8], &act);
    }
}
