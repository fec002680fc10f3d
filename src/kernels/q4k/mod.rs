//! q4_K weights interleaved eight rows at a time, and the kernels that multiply them (issue 6:
//! decode at memory speed, prefill near llama.cpp's, 4.5 bits per weight; issue 21: the
//! product's loops in `scalar.rs`, the reference, `x86_avx2.rs` and `x86_avx512.rs`).
//!
//! This is ggml's `block_q4_Kx8` layout and its `gemv_q4_K_8x8_q8_K` kernel (llama.cpp,
//! `ggml/src/ggml-cpu/repack.cpp` and `arch/x86/repack.cpp`, MIT licence), ported to Rust:
//! eight GGUF q4_K blocks of eight consecutive weight rows are interleaved eight bytes at a
//! time, with their scales and mins rearranged so that one AVX2 pass computes eight outputs.
//! The layout has exactly the bytes of the blocks it came from (1152 = 8 × 144), unlike
//! candle 0.11.1's repacked tiles (6 bits per weight), so a 7B keeps its 4.7 GB file size.
//!
//! Where ggml has a second, larger kernel for many activation rows (interleaving those too),
//! this one takes up to four activation rows per pass ([`gemm_tile`]): the weight nibbles,
//! scales and mins are unpacked once and used for all of them, which is where most of
//! ggml's gemm gain comes from. Activations are quantized to q8_K exactly as ggml and candle
//! do (`quantize_row_q8_K`), so the integer sums are those of their block kernels.
//!
//! With AVX-512 VNNI, eight activation rows or more take another route (issue 21): each work
//! item unpacks its weight groups to a byte per value ([`Q4kUnpacked`]), the activations lie
//! sixteen rows to a tile ([`BlockQ8Kx16`]), and `vpdpbusd` multiplies a weight row's four
//! values, broadcast from memory, with four of each of the sixteen rows: 64 multiply-adds an
//! instruction, no shuffles. ggml's AVX-512 gemm still multiplies with `maddubs`; this one
//! ran at 450–500 GMAC/s on the 7B's projections at 512 rows on two cores, where the AVX-512
//! four-row loop ran at 218 (`examples/kernels`, BENCHMARKS.md). Its integer sums
//! are the four-row loop's and so are its float steps, lane by lane, so every output is the
//! same bit for bit whichever path computes its row (`a_row_comes_out_the_same_in_any_tile`).
//!
//! `unsafe` here is the kernel's (AVX2 intrinsics and loads from fixed-size blocks) and one
//! `set_len` once [`Q4kX8::pack`] has written every block, each block with a `// SAFETY:`
//! comment where it happens (`unsafe_op_in_unsafe_fn` and clippy's
//! `undocumented_unsafe_blocks` hold that). The pool's workers get their parts of an output
//! as `&mut` slices ([`crate::kernels::pool`]), never a shared raw pointer. q8_0, q6_K and the two
//! attention kernels have SIMD code of their own, and the memory-mapped weights theirs
//! (`mapped.rs`).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;

use super::pool::{self, Order};
use super::rows::{quantize_rows, BlockQ8K, QK_K};
use super::{isa, Isa};

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// Bytes of one GGUF q4_K block: d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 of
/// nibbles.
const Q4K_BYTES: usize = 144;
/// Activation rows per block of work in a multi-row product: their q8_K rows stay in L2
/// while every weight group of a chunk passes over them (32 and 4 were the best of 16–128
/// and 2–8 on the 7B's gate and down projections at 512 rows, `examples/kbench.rs`).
const ROW_BLOCK: usize = 32;
/// Interleaved blocks (9 kB) the SIMD loops prefetch ahead at decode: the 7B's LM head shape
/// as q4_K took a median 15.6 ms instead of 17.4 on two cores (`examples/kbench.rs`,
/// alternating).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PREFETCH_BLOCKS: usize = 8;
/// Weight groups (eight rows each) per work item.
const GROUP_CHUNK: usize = 4;

/// Activation rows per tile of the AVX-512 VNNI product ([`Q4kX8::run_x16`]): one per lane
/// of a 512-bit register of i32 sums.
const X16: usize = 16;
/// Fewest activation rows that take the 16-row tiles on AVX-512: below, the four-row
/// [`gemm_tile`], whose cost grows with the rows where a 16-row tile costs the same for 1 or
/// 16 (padded rows are zeros). Reasoned from the loops' instruction counts (the tile does a
/// row in about a quarter of the four-row loop's), not tuned: prefills and images are far
/// above it, decode (one row) far below.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const X16_MIN_ROWS: usize = 8;
/// Activation rows per block of work on the 16-row tiles: sixteen tiles, over whose
/// interleaved activations (4.4 kB a block each) each weight group passes once unpacked
/// (64, 128, 256 and 512 rows: 350, 450, 480 and 500 GMAC/s on the 7B's projections at 512
/// rows, with 256 best on the smaller ones; `examples/kernels`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const X16_ROW_BLOCK: usize = 256;

/// Eight q4_K blocks (one per weight row) of the same 256 columns, interleaved.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ4Kx8 {
    d: [f16; 8],
    dmin: [f16; 8],
    scales: [u8; 96],
    qs: [u8; 1024],
}
const _: () = assert!(std::mem::size_of::<BlockQ4Kx8>() == 8 * Q4K_BYTES);

/// One interleaved block of eight weight rows unpacked for the AVX-512 VNNI product: the
/// nibbles one per byte, so that `vpdpbusd` can broadcast any weight row's four values
/// against sixteen activation rows, and the scales, mins and sums it needs per row and
/// sub-block as plain integers. Made per work item from [`BlockQ4Kx8`], never stored.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Q4kUnpacked {
    /// `q[256·t + 64·c + 8·r + e]` is weight row `r`'s value `32·t + 8·c + e` (sub-block
    /// `t`), 0–15: the order in which the interleaved nibbles lie.
    q: [u8; 2048],
    /// `sc[t][r]`: row `r`'s 6-bit scale of sub-block `t`.
    sc: [[i32; 8]; 8],
    /// `mins[p][r]`: row `r`'s 6-bit mins of sub-blocks `2p` (low half) and `2p + 1`.
    mins: [[u32; 8]; 4],
    /// `128 · Σ_t sc[t][r] · Σ(values of row r in sub-block t)`: what the activations' bias
    /// of 128 ([`BlockQ8Kx16`]) adds to row `r`'s scaled sum.
    corr: [i32; 8],
    d: [f32; 8],
    dmin: [f32; 8],
}

impl Q4kUnpacked {
    const ZERO: Self = Self {
        q: [0; 2048],
        sc: [[0; 8]; 8],
        mins: [[0; 8]; 4],
        corr: [0; 8],
        d: [0.0; 8],
        dmin: [0.0; 8],
    };

    /// Offset in [`Self::q`] of row `r`'s four values `32·t + 4·j..+4` (`j < 8`).
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const fn at(t: usize, j: usize, r: usize) -> usize {
        256 * t + 64 * (j / 2) + 8 * r + 4 * (j % 2)
    }
}

/// One q8_K block of sixteen activation rows, for [`Q4kUnpacked`]: `qs[64·(8·t + j) + 4·l
/// ..+4]` is row `l`'s values `32·t + 4·j..+4` plus 128 (`vpdpbusd` takes its unsigned
/// operand from the activations so that the weights' four bytes can be a broadcast memory
/// operand; the bias comes off through [`Q4kUnpacked::corr`]), `bsums[16·p + l]` row `l`'s
/// sums of sub-blocks `2p` and `2p + 1` as two i16, `d[l]` its scale. Rows past the matrix are
/// zeros.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct BlockQ8Kx16 {
    qs: [u8; QK_K * X16],
    bsums: [u32; 4 * X16],
    d: [f32; X16],
}

impl BlockQ8Kx16 {
    const ZERO: Self = Self {
        qs: [128; QK_K * X16],
        bsums: [0; 4 * X16],
        d: [0.0; X16],
    };

    /// Writes row `l` of the tile from its q8_K block.
    fn set_row(&mut self, l: usize, q: &BlockQ8K) {
        self.d[l] = q.d;
        for (dw, four) in q.qs.chunks_exact(4).enumerate() {
            for (e, &v) in four.iter().enumerate() {
                self.qs[64 * dw + 4 * l + e] = (v as u8) ^ 0x80;
            }
        }
        for p in 0..4 {
            let sub = |t: usize| (q.bsums[2 * t] + q.bsums[2 * t + 1]) as u16 as u32;
            self.bsums[16 * p + l] = sub(2 * p) | (sub(2 * p + 1) << 16);
        }
    }
}

/// The `m` rows of `lhs` (`k` wide) as q8_K tiles of sixteen rows, `k / 256` blocks per tile.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn quantize_x16(lhs: &[f32], m: usize, k: usize) -> Vec<BlockQ8Kx16> {
    let kb = k / QK_K;
    let tiles = m.div_ceil(X16);
    let mut out = vec![BlockQ8Kx16::ZERO; tiles * kb];
    pool::for_each_run(&mut out, kb, tiles >= 2, |first, run| {
        for (i, blocks) in run.chunks_mut(kb).enumerate() {
            let row0 = (first + i) * X16;
            for l in 0..X16.min(m - row0) {
                let x = &lhs[(row0 + l) * k..(row0 + l + 1) * k];
                for (blk, xs) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
                    blk.set_row(l, &BlockQ8K::quantize(xs));
                }
            }
        }
    });
    out
}

/// Whether the interleaved q4_K kernels run (x86-64 with AVX2, FMA and F16C, and the kernel
/// set chosen for the process is not `scalar`: [`super::isa`]); elsewhere the weights keep
/// candle's layout and kernels.
pub(crate) fn supported() -> bool {
    isa() >= Isa::Avx2
}

/// Whether an `[n, k]` q4_K weight can be interleaved (and [`supported`] runs it).
pub(crate) fn fits(n: usize, k: usize) -> bool {
    n > 0 && k > 0 && n.is_multiple_of(8) && k.is_multiple_of(QK_K)
}

/// A `[n, k]` q4_K weight in the interleaved layout.
pub struct Q4kX8 {
    blocks: Vec<BlockQ4Kx8>,
    n: usize,
    k: usize,
}

impl std::fmt::Debug for Q4kX8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q4kX8([{}, {}])", self.n, self.k)
    }
}

impl Q4kX8 {
    /// Interleaves the GGUF bytes of a `[n, k]` q4_K weight (row-major blocks). `None` when
    /// the shape does not [`fit`](fits) or the byte count is wrong.
    pub fn pack(data: &[u8], n: usize, k: usize) -> Option<Self> {
        let kb = k / QK_K;
        if !fits(n, k) || data.len() != n * kb * Q4K_BYTES {
            return None;
        }
        let total = n / 8 * kb;
        // Written in parallel straight into fresh memory: most of a reload is the kernel
        // zeroing those pages as they are first touched, which then happens on every core.
        let mut blocks: Vec<BlockQ4Kx8> = Vec::with_capacity(total);
        let written = AtomicUsize::new(0);
        let slots = &mut blocks.spare_capacity_mut()[..total];
        pool::for_each_run(slots, kb, total >= 256, |first, run| {
            for (i, group) in run.chunks_mut(kb).enumerate() {
                let rows = (first + i) * 8;
                for (b, slot) in group.iter_mut().enumerate() {
                    let src: [&[u8]; 8] = std::array::from_fn(|r| {
                        let at = ((rows + r) * kb + b) * Q4K_BYTES;
                        &data[at..at + Q4K_BYTES]
                    });
                    slot.write(interleave(&src));
                }
                written.fetch_add(group.len(), Ordering::Relaxed);
            }
        });
        if written.into_inner() != total {
            return None;
        }
        // SAFETY: the first `total` slots were handed out as disjoint `&mut` runs, every
        // slot of which was written above, and those runs held `total` slots between them.
        unsafe { blocks.set_len(total) };
        Some(Self { blocks, n, k })
    }

    /// Rows of the weight (`n`).
    pub fn rows_count(&self) -> usize {
        self.n
    }

    /// Columns of the weight (`k`).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Rows `ids` of the weight dequantized to f32, one after the other (an embedding
    /// lookup): ggml's `dequantize_row_q4_K` read through the interleaving.
    pub fn rows(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        let kb = self.k / QK_K;
        let mut out = Vec::with_capacity(ids.len() * self.k);
        for &id in ids {
            let id = id as usize;
            if id >= self.n {
                candle_core::bail!("row {id} is out of range for a table of {} rows", self.n);
            }
            let (group, lane) = (id / 8, id % 8);
            for blk in &self.blocks[group * kb..(group + 1) * kb] {
                let row = lane_block(blk, lane);
                for j in 0..4 {
                    let bytes = &row.qs[32 * j..32 * j + 32];
                    for (t, shift) in [(2 * j, 0), (2 * j + 1, 4)] {
                        let (sc, m) = row.scale_min[t];
                        let (dl, ml) = (row.d * sc as f32, row.dmin * m as f32);
                        out.extend(bytes.iter().map(|&b| dl * ((b >> shift) & 0xF) as f32 - ml));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Bytes held (the same as the GGUF blocks').
    pub fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<BlockQ4Kx8>()
    }

    /// `dst[m, n] = lhs[m, k] · Wᵀ` on candle's thread pool.
    pub fn matmul(&self, lhs: &[f32], m: usize, dst: &mut [f32]) {
        self.run(isa(), lhs, m, dst);
    }

    /// [`Q4kX8::matmul`] on the kernels of `set` (tests and benchmarks compare the sets this
    /// CPU runs, the scalar reference included).
    ///
    /// # Panics
    /// When this CPU does not run `set`.
    pub fn matmul_with(&self, set: Isa, lhs: &[f32], m: usize, dst: &mut [f32]) {
        assert!(set.supported(), "this CPU does not run the {set} kernels");
        self.run(set, lhs, m, dst);
    }

    fn run(&self, set: Isa, lhs: &[f32], m: usize, dst: &mut [f32]) {
        assert_eq!(lhs.len(), m * self.k, "lhs is not [{m}, {}]", self.k);
        assert_eq!(dst.len(), m * self.n, "dst is not [{m}, {}]", self.n);
        #[cfg(target_arch = "x86_64")]
        if set == Isa::Avx512 && m >= X16_MIN_ROWS {
            return self.run_x16(lhs, m, dst);
        }
        let kb = self.k / QK_K;

        // Activations to q8_K, a row per item (parallel when there are many).
        let act = quantize_rows(lhs, m, self.k, QK_K, BlockQ8K::ZERO, BlockQ8K::quantize);

        // Work items of ROW_BLOCK rows by GROUP_CHUNK groups of eight columns.
        let groups = self.n / 8;
        let tile = (ROW_BLOCK, GROUP_CHUNK * 8);
        pool::for_each_tile(dst, self.n, tile, Order::RowBlocks, |tiles| {
            for tile in tiles {
                let first = tile.col0 / 8;
                for (j, g) in (first..groups.min(first + GROUP_CHUNK)).enumerate() {
                    let w = &self.blocks[g * kb..(g + 1) * kb];
                    let mut r = 0;
                    while r < tile.rows.len() {
                        let take = (tile.rows.len() - r).min(4);
                        let row = tile.row0 + r;
                        let a = |i: usize| &act[(row + i) * kb..(row + i + 1) * kb];
                        match take {
                            4 => tile.put(r, j * 8, &gemm_tile(set, w, [a(0), a(1), a(2), a(3)])),
                            3 => tile.put(r, j * 8, &gemm_tile(set, w, [a(0), a(1), a(2)])),
                            2 => tile.put(r, j * 8, &gemm_tile(set, w, [a(0), a(1)])),
                            _ => tile.put(r, j * 8, &gemm_tile(set, w, [a(0)])),
                        }
                        r += take;
                    }
                }
            }
        });
    }
}

#[cfg(target_arch = "x86_64")]
impl Q4kX8 {
    /// [`Q4kX8::run`] on AVX-512 VNNI for eight rows or more: the activations quantized into
    /// tiles of sixteen rows; each work item unpacks its weight groups once
    /// ([`x86_avx512::unpack`]) and multiplies them with every tile of its rows
    /// ([`x86_avx512::gemm_x16`]). Each output is the same, bit for bit, as the four-row
    /// kernel's: the same integer sums, scaled in the same order.
    fn run_x16(&self, lhs: &[f32], m: usize, dst: &mut [f32]) {
        let kb = self.k / QK_K;
        let act = quantize_x16(lhs, m, self.k);
        let groups = self.n / 8;
        let tile = (X16_ROW_BLOCK, GROUP_CHUNK * 8);
        pool::for_each_tile(dst, self.n, tile, Order::RowBlocks, |tiles| {
            let mut unpacked = vec![Q4kUnpacked::ZERO; kb];
            for tile in tiles {
                let first = tile.col0 / 8;
                for (j, g) in (first..groups.min(first + GROUP_CHUNK)).enumerate() {
                    for (u, blk) in unpacked.iter_mut().zip(&self.blocks[g * kb..(g + 1) * kb]) {
                        // SAFETY: the caller runs the AVX-512 set (`isa()` or checked by
                        // `matmul_with`), which includes F/BW/VL and AVX2's features.
                        unsafe { x86_avx512::unpack(blk, u) };
                    }
                    for r in (0..tile.rows.len()).step_by(X16) {
                        let t = (tile.row0 + r) / X16;
                        let a = &act[t * kb..(t + 1) * kb];
                        // SAFETY: as above, with VNNI; `a` and `unpacked` are `kb` blocks.
                        let cols = unsafe { x86_avx512::gemm_x16(&unpacked, a) };
                        let rows: [[f32; 8]; X16] =
                            std::array::from_fn(|l| std::array::from_fn(|c| cols[c][l]));
                        let valid = X16.min(tile.rows.len() - r);
                        tile.put(r, j * 8, &rows[..valid]);
                    }
                }
            }
        });
    }
}

/// One weight row's part of an interleaved block, as its own q4_K block reads: its scales,
/// its eight sub-blocks' 6-bit scales and mins, its 128 nibble bytes (value `64·j + l` in
/// the low nibble of byte `32·j + l`, value `64·j + 32 + l` in the high one).
struct LaneBlock {
    d: f32,
    dmin: f32,
    scale_min: [(u8, u8); 8],
    qs: [u8; 128],
}

/// Row `lane` (0–7) of the interleaved block `blk`.
fn lane_block(blk: &BlockQ4Kx8, lane: usize) -> LaneBlock {
    // Sub-block t's scales and mins of the eight rows are packed like one q4_K block's eight
    // sub-blocks, with the row in the sub-block's place.
    let scale_min = std::array::from_fn(|t| {
        let q = &blk.scales[t * 12..t * 12 + 12];
        if lane < 4 {
            (q[lane] & 63, q[lane + 4] & 63)
        } else {
            (
                (q[lane + 4] & 0xF) | ((q[lane - 4] >> 6) << 4),
                (q[lane + 4] >> 4) | ((q[lane] >> 6) << 4),
            )
        }
    });
    // This row's 128 nibble bytes, eight at a time from every eighth chunk.
    let mut qs = [0u8; 128];
    for (c, chunk) in qs.chunks_exact_mut(8).enumerate() {
        let at = (c * 8 + lane) * 8;
        chunk.copy_from_slice(&blk.qs[at..at + 8]);
    }
    LaneBlock {
        d: blk.d[lane].to_f32(),
        dmin: blk.dmin[lane].to_f32(),
        scale_min,
        qs,
    }
}

/// `out[r][j] = a[r] · w_row(j)` for the eight weight rows of one interleaved group and `R`
/// activation rows of `w.len()` blocks, on `set` (one the CPU runs).
fn gemm_tile<const R: usize>(set: Isa, w: &[BlockQ4Kx8], a: [&[BlockQ8K]; R]) -> [[f32; 8]; R] {
    assert!(
        a.iter().all(|a| a.len() == w.len()),
        "q4_K: activation rows of another length than the weight's {} blocks",
        w.len()
    );
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (`isa()` or checked by `matmul_with`): AVX-512 F/BW/VL
        // and AVX2's; the lengths were checked above.
        Isa::Avx512 => unsafe { x86_avx512::gemm_tile(w, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set` (`isa()` or checked by `matmul_with`): AVX2, FMA, F16C.
        Isa::Avx2 => unsafe { x86_avx2::gemm_tile(w, a) },
        _ => scalar::gemm_tile(w, a),
    }
}

/// The eight rows' 6-bit scales (or, from the second 12 bytes of a sub-block, the rest of
/// them and the mins) unpacked from q4_K's 12-byte packing at `at` into four u32 of one byte
/// per row, as ggml's kernels load them (`KMASK1..3`); shared by the SIMD loops.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
// Inlined into the SIMD loops: called out of line, it made the q4_K products 1.4–2× slower
// (examples/kernels, qkv shape, both sets).
#[inline(always)]
pub(super) fn scales_and_mins(scales: &[u8; 96], at: usize) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let mut u = [0u32; 4];
    for (i, v) in u.iter_mut().take(3).enumerate() {
        let p = at + i * 4;
        *v = u32::from_le_bytes([scales[p], scales[p + 1], scales[p + 2], scales[p + 3]]);
    }
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let uaux = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = uaux;
    u[0] &= KMASK1;
    u
}

/// ggml's `make_block_q4_Kx8` with an interleave of eight bytes.
fn interleave(src: &[&[u8]; 8]) -> BlockQ4Kx8 {
    let d = |i: usize, at: usize| f16::from_le_bytes([src[i][at], src[i][at + 1]]);
    let scales = |i: usize| &src[i][4..16];
    let qs = |i: usize| &src[i][16..144];
    let mut out = BlockQ4Kx8 {
        d: std::array::from_fn(|i| d(i, 0)),
        dmin: std::array::from_fn(|i| d(i, 2)),
        scales: [0; 96],
        qs: [0; 1024],
    };
    for i in 0..QK_K * 4 / 8 {
        let (src_id, src_offset) = (i % 8, (i / 8) * 8);
        out.qs[i * 8..i * 8 + 8].copy_from_slice(&qs(src_id)[src_offset..src_offset + 8]);
    }
    // 8 scales and 8 mins of 6 bits per block; the output keeps, per sub-block, those of
    // the eight rows together, in q4_K's own 12-byte packing.
    let mut pack = |base: usize, s: [u8; 8], m: [u8; 8]| {
        for j in 0..4 {
            out.scales[base + j] = (s[j] & 63) + ((s[j + 4] & 48) << 2);
            out.scales[base + 4 + j] = (m[j] & 63) + ((m[j + 4] & 48) << 2);
            out.scales[base + 8 + j] = (s[j + 4] & 15) + ((m[j + 4] & 15) << 4);
        }
    };
    for i in 0..4 {
        let s = std::array::from_fn(|j| scales(j)[i] & 63);
        let m = std::array::from_fn(|j| scales(j)[i + 4] & 63);
        pack(i * 12, s, m);
    }
    for i in 0..4 {
        let s = std::array::from_fn(|j| ((scales(j)[i] & 192) >> 2) | (scales(j)[i + 8] & 15));
        let m = std::array::from_fn(|j| {
            ((scales(j)[i + 4] & 192) >> 2) | ((scales(j)[i + 8] & 240) >> 4)
        });
        pack(i * 12 + 48, s, m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// A random `[n, k]` q4_K weight: its GGUF bytes and its dequantized f32 values.
    fn weight(n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let dev = Device::Cpu;
        // A fixed pseudo-random pattern (candle's CPU rng cannot be seeded).
        let vals: Vec<f32> = (0..n * k)
            .map(|i| {
                let h = (i as u64 + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                (h as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect();
        let w = Tensor::from_vec(vals, (n, k), &dev).expect("weight");
        let q = QTensor::quantize(&w, GgmlDType::Q4K).expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        let deq = q.dequantize(&dev).expect("dequantize");
        (
            bytes,
            deq.flatten_all().expect("flat").to_vec1().expect("vec"),
        )
    }

    /// The reference the kernel must reproduce: each activation row quantized to q8_K as
    /// the kernel does, then exact integer-valued sums per sub-block, as ggml's scalar
    /// `gemv_q4_K_8x8_q8_K_generic` computes them (in f64 here).
    fn reference(w_deq: &[f32], lhs: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            let act: Vec<f32> = lhs[r * k..(r + 1) * k]
                .chunks_exact(QK_K)
                .flat_map(|c| {
                    let q = BlockQ8K::quantize(c);
                    q.qs.map(|v| v as f32 * q.d)
                })
                .collect();
            for j in 0..n {
                let row = &w_deq[j * k..(j + 1) * k];
                let s: f64 = row
                    .iter()
                    .zip(&act)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                out[r * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn interleaved_kernels_compute_the_quantized_product() {
        eprintln!("q4_K kernel sets run here: {:?}", Isa::available());
        let (n, k) = (40, 768);
        let (bytes, deq) = weight(n, k, 7);
        let packed = Q4kX8::pack(&bytes, n, k).expect("pack");
        assert_eq!(packed.bytes(), bytes.len());
        // 1 (decode), 3 and 6 (a partial quad), 8 (one padded 16-row tile on AVX-512), 70
        // (two row blocks; four 16-row tiles and a part).
        for m in [1, 3, 6, 8, 70] {
            let lhs: Vec<f32> = (0..m * k)
                .map(|i| {
                    ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * if i % 5 == 0 { 4.0 } else { 1.0 }
                })
                .collect();
            let want = reference(&deq, &lhs, m, n, k);
            let scale = want.iter().fold(0f32, |a, &v| a.max(v.abs()));
            for set in Isa::available() {
                let mut got = vec![f32::NAN; m * n];
                packed.matmul_with(set, &lhs, m, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale.max(1.0),
                        "{set} m {m}, output {i}: got {g}, want {w}"
                    );
                }
            }
        }
    }

    /// Every output row is the same, bit for bit, whichever tile computes it: a row alone
    /// (a decode step) and the same row among 37 (a prefill, 16-row tiles on AVX-512) give
    /// the same floats, so a cached prefix and a recomputed one agree exactly.
    #[test]
    fn a_row_comes_out_the_same_in_any_tile() {
        let (n, k) = (24, 512);
        let (bytes, _) = weight(n, k, 5);
        let packed = Q4kX8::pack(&bytes, n, k).expect("pack");
        let m = 37;
        let lhs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 4099 % 2003) as f32 / 2003.0 - 0.5) * if i % 7 == 0 { 3.0 } else { 1.0 })
            .collect();
        for set in Isa::available() {
            let mut all = vec![f32::NAN; m * n];
            packed.matmul_with(set, &lhs, m, &mut all);
            for r in 0..m {
                let mut one = vec![f32::NAN; n];
                packed.matmul_with(set, &lhs[r * k..(r + 1) * k], 1, &mut one);
                assert_eq!(
                    one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    all[r * n..(r + 1) * n]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    "{set}: row {r} of {m}"
                );
            }
        }
    }

    /// The 16-row tiles: the scalar unpacking (read off each row's block) and product are
    /// checked against the f64 reference on every machine; where the CPU runs AVX-512 VNNI,
    /// its unpacking must give the same bytes and its product the same floats, bit for bit,
    /// on tails of a partly filled tile.
    #[test]
    fn sixteen_row_tiles_match_their_scalar_reference() {
        let (n, k) = (16, 768);
        let (bytes, deq) = weight(n, k, 9);
        let packed = Q4kX8::pack(&bytes, n, k).expect("pack");
        let kb = k / QK_K;
        for m in [16, 5, 1] {
            let lhs: Vec<f32> = (0..m * k)
                .map(|i| {
                    ((i * 613 % 997) as f32 / 997.0 - 0.5) * if i % 3 == 0 { 2.0 } else { 1.0 }
                })
                .collect();
            let act = quantize_x16(&lhs, m, k);
            assert_eq!(act.len(), kb);
            let want = reference(&deq, &lhs, m, n, k);
            let scale = want.iter().fold(0f32, |a, &v| a.max(v.abs()));
            for g in 0..n / 8 {
                let blocks = &packed.blocks[g * kb..(g + 1) * kb];
                let unpacked: Vec<Q4kUnpacked> = blocks.iter().map(scalar::unpack).collect();
                let got = scalar::gemm_x16(&unpacked, &act);
                for (r, col) in got.iter().enumerate() {
                    for (l, &v) in col.iter().enumerate() {
                        let w = if l < m { want[l * n + g * 8 + r] } else { 0.0 };
                        assert!(
                            (v - w).abs() <= 1e-5 * scale.max(1.0),
                            "scalar x16 m {m}, row {l}, column {}: got {v}, want {w}",
                            g * 8 + r
                        );
                    }
                }
                #[cfg(target_arch = "x86_64")]
                if Isa::Avx512.supported() {
                    for (blk, want) in blocks.iter().zip(&unpacked) {
                        // Every field is written: start from bytes the reference never has.
                        let mut simd = Q4kUnpacked::ZERO;
                        simd.q = [0xAA; 2048];
                        simd.corr = [i32::MIN; 8];
                        // SAFETY: the CPU runs the AVX-512 set.
                        unsafe { x86_avx512::unpack(blk, &mut simd) };
                        assert_eq!(simd.q, want.q, "unpacked values");
                        assert_eq!(simd.sc, want.sc, "unpacked scales");
                        assert_eq!(simd.mins, want.mins, "unpacked mins");
                        assert_eq!(simd.corr, want.corr, "bias corrections");
                        assert_eq!((simd.d, simd.dmin), (want.d, want.dmin), "block scales");
                    }
                    // SAFETY: the CPU runs the AVX-512 set; `act` holds `kb` blocks.
                    let simd = unsafe { x86_avx512::gemm_x16(&unpacked, &act) };
                    let bits = |v: &[[f32; X16]; 8]| v.map(|c| c.map(f32::to_bits));
                    assert_eq!(bits(&simd), bits(&got), "avx512 x16, m {m}");
                }
            }
        }
        eprintln!(
            "16-row q4_K tiles: scalar reference checked{}",
            if Isa::Avx512.supported() {
                "; avx512 checked against it"
            } else {
                "; avx512 not run here (this CPU lacks AVX-512 VNNI)"
            }
        );
    }

    /// Rows gathered from the interleaved layout are the dequantized rows of the blocks.
    #[test]
    fn rows_are_the_dequantized_rows() {
        let (n, k) = (24, 512);
        let (bytes, deq) = weight(n, k, 3);
        let packed = Q4kX8::pack(&bytes, n, k).expect("pack");
        let ids = [0u32, 7, 8, 13, 23, 5];
        let got = packed.rows(&ids).expect("rows");
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            assert_eq!(
                &got[i * k..(i + 1) * k],
                &deq[id * k..(id + 1) * k],
                "row {id}"
            );
        }
        assert!(packed.rows(&[24]).is_err());
    }

    /// A matrix large enough to be interleaved on every core: every row reads back as
    /// candle's dequantization of its GGUF blocks.
    #[test]
    fn parallel_packing_keeps_every_row() {
        let (n, k) = (264, 2048); // 33 groups × 8 blocks = 264 blocks ≥ 256
        let (bytes, deq) = weight(n, k, 11);
        let packed = Q4kX8::pack(&bytes, n, k).expect("pack");
        assert_eq!(packed.bytes(), bytes.len());
        let ids: Vec<u32> = (0..n as u32).collect();
        assert_eq!(packed.rows(&ids).expect("rows"), deq);
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused() {
        let (bytes, _) = weight(8, 256, 1);
        assert!(Q4kX8::pack(&bytes, 8, 256).is_some());
        assert!(Q4kX8::pack(&bytes[..bytes.len() - 1], 8, 256).is_none());
        assert!(!fits(12, 256));
        assert!(!fits(16, 128));
    }
}
