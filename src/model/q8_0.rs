//! x86 AVX2 kernels for q8_0 weights, straight on their GGUF blocks (issue 6).
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
//! Weights are read where they are: no repacking, no second copy.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use super::pool::{self, Order, Tile};
use super::q4k_x8::quantize_rows;

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

/// Whether an `[n, k]` q8_0 weight runs on these kernels here.
pub(crate) fn fits(n: usize, k: usize) -> bool {
    super::q4k_x8::supported()
        && n > 0
        && k > 0
        && n.is_multiple_of(TILE_ROWS)
        && k.is_multiple_of(QK)
}

/// `dst[m, n] = lhs[m, k] · Wᵀ` for the GGUF q8_0 bytes `w` of an `[n, k]` weight that
/// [`fits`], on candle's thread pool.
pub(crate) fn matmul(w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    assert!(
        fits(n, k),
        "q8_0 kernels: [{n}, {k}] does not fit this CPU or layout"
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
        matmul_x8(w, n, k, &lhs[..whole * k], whole / 8, &mut dst[..whole * n]);
    }
    if whole < m {
        matmul_rows(w, n, k, &lhs[whole * k..], m - whole, &mut dst[whole * n..]);
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
fn matmul_x8(w: &[u8], n: usize, k: usize, lhs: &[f32], groups: usize, dst: &mut [f32]) {
    let kb = k / QK;
    let act = quantize_groups(lhs, groups, k);
    for_each_tile(w, (n, kb), dst, GROUP_BLOCK * 8, |out, col, ws| {
        for l in (0..out.rows.len()).step_by(8) {
            let g = (out.row0 + l) / 8;
            let a = &act[g * kb..(g + 1) * kb];
            // SAFETY: `fits` checked the CPU; `a` holds as many blocks as each weight row.
            out.put(l, col, &unsafe { tile_x8(ws, a) });
        }
    });
}

/// [`matmul`] for fewer than eight activation rows (a decode step, the rest of a prefill):
/// four weight rows by up to four activation rows per pass.
fn matmul_rows(w: &[u8], n: usize, k: usize, lhs: &[f32], m: usize, dst: &mut [f32]) {
    debug_assert!(m < 8, "whole groups of eight rows go to matmul_x8");
    if m == 1 {
        return matmul_one(w, k, lhs, dst);
    }
    let kb = k / QK;
    let act = quantize_rows(lhs, m, k, QK, BlockQ8::ZERO, BlockQ8::quantize);
    for_each_tile(w, (n, kb), dst, m, |out, col, ws| {
        let mut r = 0;
        while r < m {
            let take = (m - r).min(MAX_R);
            let a = |i: usize| &act[(r + i) * kb..(r + i + 1) * kb];
            // SAFETY: `fits` checked the CPU; every `a(i)` holds as many blocks as each
            // weight row.
            unsafe {
                match take {
                    4 => {
                        let sums = tile_pairs(ws, [[a(0), a(1)], [a(2), a(3)]]);
                        out.put(r, col, sums.as_flattened());
                    }
                    2 | 3 => {
                        out.put(r, col, tile_pairs(ws, [[a(0), a(1)]]).as_flattened());
                        if take == 3 {
                            out.put(r + 2, col, &tile(ws, [a(2)]));
                        }
                    }
                    _ => out.put(r, col, &tile(ws, [a(0)])),
                }
            }
            r += take;
        }
    });
}

/// [`matmul`] for one activation row (a decode step): eight weight rows per pass
/// ([`tile8`]), the last four of an `n` that is not a multiple of eight on [`tile`].
fn matmul_one(w: &[u8], k: usize, lhs: &[f32], dst: &mut [f32]) {
    let kb = k / QK;
    let act = quantize_rows(lhs, 1, k, QK, BlockQ8::ZERO, BlockQ8::quantize);
    let wrow = |r: usize| &w[r * kb * BLOCK_BYTES..(r + 1) * kb * BLOCK_BYTES];
    pool::for_each_run(dst, 8, true, |first, run| {
        for (t, out) in run.chunks_mut(8).enumerate() {
            let row0 = (first + t) * 8;
            // SAFETY: `fits` checked the CPU and that `n`, so `out.len()`, is a multiple of
            // four; `act` holds as many blocks as each weight row.
            unsafe {
                if out.len() == 8 {
                    out.copy_from_slice(&tile8(std::array::from_fn(|i| wrow(row0 + i)), &act));
                } else {
                    let [four] = tile(std::array::from_fn(|i| wrow(row0 + i)), [&act]);
                    out.copy_from_slice(&four);
                }
            }
        }
    });
}

/// The f16 scales of block `at` (a byte offset) of four weight rows, as four f32.
///
/// # Safety
/// As [`tile`]: every `wp[i]` must point at least `at + 2` readable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight_scales(wp: &[*const u8; 4], at: usize) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    // SAFETY: bytes `at..at + 2` of every weight row are readable (the contract above).
    let d = |i: usize| unsafe { (wp[i].add(at) as *const i16).read_unaligned() };
    _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, d(3), d(2), d(1), d(0)))
}

/// Each of the four lanes of `v`, broadcast to a whole vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn lanes(v: std::arch::x86_64::__m128) -> [std::arch::x86_64::__m256; 4] {
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize>(w: [&[u8]; 4], a: [&[BlockQ8]; R]) -> [[f32; 4]; R] {
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

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const R: usize>(_: [&[u8]; 4], _: [&[BlockQ8]; R]) -> [[f32; 4]; R] {
    unreachable!("the q8_0 kernels run only where `fits` is true")
}

/// `out[r][i] = a[r] · w[i]` for four weight rows and `2·P` activation rows: the eight dot
/// products of a block and a pair of rows are reduced into one vector of eight sums before
/// they are scaled, so the float work is one conversion and one multiply-add per block for
/// all eight.
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
// `b` walks the weights (by byte offset) and every activation row together.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_pairs<const P: usize>(w: [&[u8]; 4], a: [[&[BlockQ8]; 2]; P]) -> [[[f32; 4]; 2]; P] {
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

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_pairs<const P: usize>(_: [&[u8]; 4], _: [[&[BlockQ8]; 2]; P]) -> [[[f32; 4]; 2]; P] {
    unreachable!("the q8_0 kernels run only where `fits` is true")
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile8(w: [&[u8]; 8], a: &[BlockQ8]) -> [f32; 8] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    debug_assert!(w.iter().all(|w| w.len() >= a.len() * BLOCK_BYTES));
    let wp: [*const u8; 8] = std::array::from_fn(|i| w[i].as_ptr());
    for (b, blk) in a.iter().enumerate() {
        let at = b * BLOCK_BYTES;
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

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile8(_: [&[u8]; 8], _: &[BlockQ8]) -> [f32; 8] {
    unreachable!("the q8_0 kernels run only where `fits` is true")
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_x8(w: [&[u8]; 4], a: &[BlockQ8x8]) -> [[f32; 4]; 8] {
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

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_x8(_: [&[u8]; 4], _: &[BlockQ8x8]) -> [[f32; 4]; 8] {
    unreachable!("the q8_0 kernels run only where `fits` is true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    #[test]
    fn kernels_compute_the_quantized_product() {
        let (n, k) = (12, 320);
        if !fits(n, k) {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        let vals: Vec<f32> = (0..n * k)
            .map(|i| {
                ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / 16_777_216.0 - 0.5
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
        for m in [1, 2, 3, 5, 7, 8, 17, 40, 136] {
            let lhs: Vec<f32> = (0..m * k)
                .map(|i| {
                    ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * if i % 7 == 0 { 3.0 } else { 1.0 }
                })
                .collect();
            let mut got = vec![f32::NAN; m * n];
            matmul(&bytes, n, k, &lhs, m, &mut got);
            for r in 0..m {
                // The reference: the activation row quantized as the kernel does, then the
                // exact products in f64.
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
                        "m {m} [{r}, {j}]: {g} vs {want}"
                    );
                }
            }
        }
    }
}
