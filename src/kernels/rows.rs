//! Activation rows quantized block by block before a quantized matrix product, shared by
//! every kernel that quantizes its left-hand side (q8_0, q4_K, q6_K).

use super::pool;

/// Weights per q4_K / q6_K / q8_K block.
pub(crate) const QK_K: usize = 256;

/// One activation block quantized to 8 bits (ggml's `block_q8_K`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8K {
    pub(crate) d: f32,
    pub(crate) qs: [i8; QK_K],
    pub(crate) bsums: [i16; QK_K / 16],
}

impl BlockQ8K {
    pub(crate) const ZERO: Self = Self {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };

    /// ggml's `quantize_row_q8_K_ref` for 256 values: the scale from the value of largest
    /// magnitude, then round-to-nearest-even (`nearest_int`), written so that it vectorizes.
    pub(crate) fn quantize(xs: &[f32]) -> Self {
        let amax = xs.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let mut out = Self::ZERO;
        if amax == 0.0 {
            return out;
        }
        // The first value of that magnitude gives the sign, as in ggml.
        let max = xs.iter().copied().find(|x| x.abs() == amax).unwrap_or(amax);
        let iscale = -127f32 / max;
        for (q, &x) in out.qs.iter_mut().zip(xs) {
            // ggml's nearest_int: |iscale·x| ≤ 127, so the float trick is exact.
            let v = iscale * x + 12_582_912.0;
            *q = ((v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000) as i8;
        }
        for (sum, qs) in out.bsums.iter_mut().zip(out.qs.chunks_exact(16)) {
            *sum = qs.iter().map(|&q| q as i16).sum();
        }
        out.d = 1.0 / iscale;
        out
    }
}

/// The `m` rows of `lhs` (`k` wide) quantized `block` values at a time by `quantize`, on
/// candle's thread pool when there are enough rows to share.
pub(crate) fn quantize_rows<B: Copy + Send>(
    lhs: &[f32],
    m: usize,
    k: usize,
    block: usize,
    zero: B,
    quantize: impl Fn(&[f32]) -> B + Sync,
) -> Vec<B> {
    let kb = (k / block).max(1);
    let mut act = vec![zero; m * (k / block)];
    pool::for_each_run(&mut act, kb, m >= 8, |first, run| {
        for (i, row) in run.chunks_mut(kb).enumerate() {
            let x = &lhs[(first + i) * k..];
            for (b, slot) in row.iter_mut().enumerate() {
                *slot = quantize(&x[b * block..(b + 1) * block]);
            }
        }
    });
    act
}
