//! Activation rows quantized block by block before a quantized matrix product, shared by
//! every kernel that quantizes its left-hand side (q8_0, q4_K, q6_K).

use super::pool;

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
