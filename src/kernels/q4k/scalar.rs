//! The interleaved q4_K product in plain Rust: the reference the SIMD loops are tested
//! against, with their signature. Each weight row is read back out of the interleaving
//! ([`super::lane_block`]) and multiplied as ggml's generic `ggml_vec_dot_q4_K_q8_K` does:
//! per sub-block of 32, the nibble products summed exactly in i32 times the 6-bit scale, less
//! the 6-bit min times the activations' sum (from `bsums`), scaled by the blocks' scales.

use super::{lane_block, BlockQ4Kx8, BlockQ8K};

pub(super) fn gemm_tile<const R: usize>(w: &[BlockQ4Kx8], a: [&[BlockQ8K]; R]) -> [[f32; 8]; R] {
    let mut out = [[0f32; 8]; R];
    for (b, blk) in w.iter().enumerate() {
        for lane in 0..8 {
            let row = lane_block(blk, lane);
            for (r, out) in out.iter_mut().enumerate() {
                let y = &a[r][b];
                let (mut isum, mut imin) = (0i32, 0i32);
                for j in 0..4 {
                    for (t, shift) in [(2 * j, 0), (2 * j + 1, 4)] {
                        let (sc, m) = row.scale_min[t];
                        let s: i32 = (0..32)
                            .map(|l| {
                                let q = i32::from((row.qs[32 * j + l] >> shift) & 0xF);
                                q * i32::from(y.qs[32 * t + l])
                            })
                            .sum();
                        isum += i32::from(sc) * s;
                        imin += i32::from(m)
                            * (i32::from(y.bsums[2 * t]) + i32::from(y.bsums[2 * t + 1]));
                    }
                }
                out[lane] += row.d * y.d * isum as f32 - row.dmin * y.d * imin as f32;
            }
        }
    }
    out
}
