//! The q6_K dot product in plain Rust (ggml's generic `ggml_vec_dot_q6_K_q8_K`): the reference
//! the SIMD loop is tested against. Per block, the 256 products of 6-bit weights (stored
//! plus 32) and q8_K activations, each group of 16 times its signed scale, summed exactly in
//! i32, then scaled by both blocks' scales in f32.

use half::f16;

use super::{BlockQ8K, BLOCK_BYTES, QK_K};

pub(super) fn dot(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (b, y) in a.iter().enumerate() {
        let x = &w[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
        let (ql, qh, scales) = (&x[..128], &x[128..192], &x[192..208]);
        let d = f16::from_le_bytes([x[208], x[209]]).to_f32();
        let mut isum = 0i32;
        for j in 0..QK_K / 128 {
            for i in 0..4 {
                for l in 0..32 {
                    let low = ql[64 * j + 32 * (i % 2) + l];
                    let nibble = if i < 2 { low & 0xF } else { low >> 4 };
                    let high = (qh[32 * j + l] >> (2 * i)) & 3;
                    let q = i32::from(nibble | (high << 4)) - 32;
                    let p = 128 * j + 32 * i + l;
                    isum += i32::from(scales[p / 16] as i8) * q * i32::from(y.qs[p]);
                }
            }
        }
        acc += d * y.d * isum as f32;
    }
    acc
}
