//! The q8_0 inner loops in plain Rust: the reference the SIMD variants are tested against,
//! with their signatures. Each dot product sums a block's 32 byte products exactly in i32,
//! then adds `sum · d_w · d_a` per block in f32, as the SIMD variants do (their f32 sums run
//! in another order, so they agree to rounding, not bit for bit).

use half::f16;

use super::{BlockQ8, BlockQ8x8, BLOCK_BYTES, QK};

/// Block `b` of a GGUF q8_0 weight row: its scale and 32 signed bytes.
fn weight_block(w: &[u8], b: usize) -> (f32, &[u8]) {
    let at = b * BLOCK_BYTES;
    let d = f16::from_le_bytes([w[at], w[at + 1]]).to_f32();
    (d, &w[at + 2..at + 2 + QK])
}

/// One weight row against the activation blocks `a` (`scale(b)` and quants `q(b)`).
fn dot(w: &[u8], blocks: usize, a: impl Fn(usize) -> (f32, [i8; QK])) -> f32 {
    let mut acc = 0f32;
    for b in 0..blocks {
        let (wd, wq) = weight_block(w, b);
        let (ad, aq) = a(b);
        let sum: i32 = wq
            .iter()
            .zip(aq)
            .map(|(&x, y)| i32::from(x as i8) * i32::from(y))
            .sum();
        acc += sum as f32 * (wd * ad);
    }
    acc
}

/// Row `l` of block `blk` of eight interleaved activation rows, as 32 plain quants.
fn deinterleave(blk: &BlockQ8x8, l: usize) -> [i8; QK] {
    std::array::from_fn(|j| blk.qs[32 * (j / 4) + 4 * l + j % 4])
}

pub(super) fn tile<const R: usize>(w: [&[u8]; 4], a: [&[BlockQ8]; R]) -> [[f32; 4]; R] {
    std::array::from_fn(|r| {
        std::array::from_fn(|i| dot(w[i], a[r].len(), |b| (a[r][b].d, a[r][b].qs)))
    })
}

pub(super) fn tile_pairs<const P: usize>(
    w: [&[u8]; 4],
    a: [[&[BlockQ8]; 2]; P],
) -> [[[f32; 4]; 2]; P] {
    std::array::from_fn(|p| tile(w, a[p]))
}

pub(super) fn tile8(w: [&[u8]; 8], a: &[BlockQ8]) -> [f32; 8] {
    std::array::from_fn(|i| dot(w[i], a.len(), |b| (a[b].d, a[b].qs)))
}

pub(super) fn tile_x8(w: [&[u8]; 4], a: &[BlockQ8x8]) -> [[f32; 4]; 8] {
    std::array::from_fn(|l| {
        std::array::from_fn(|i| dot(w[i], a.len(), |b| (a[b].d[l], deinterleave(&a[b], l))))
    })
}
