//! The interleaved q4_K product in plain Rust: the reference the SIMD loops are tested
//! against, with their signature. Each weight row is read back out of the interleaving
//! ([`super::lane_block`]) and multiplied as ggml's generic `ggml_vec_dot_q4_K_q8_K` does:
//! per sub-block of 32, the nibble products summed exactly in i32 times the 6-bit scale, less
//! the 6-bit min times the activations' sum (from `bsums`), scaled by the blocks' scales.

use super::{lane_block, BlockQ4Kx8, BlockQ8K, BlockQ8Kx16, Q4kUnpacked, X16};

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

/// [`Q4kUnpacked`] read off the rows of `blk` ([`super::lane_block`]), not off the
/// interleaving's byte order as the SIMD unpacking does: the reference that order is tested
/// against.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) fn unpack(blk: &BlockQ4Kx8) -> Q4kUnpacked {
    let mut u = Q4kUnpacked::ZERO;
    for r in 0..8 {
        let row = lane_block(blk, r);
        let value = |v: usize| {
            let byte = row.qs[32 * (v / 64) + v % 32];
            i32::from(if v % 64 >= 32 { byte >> 4 } else { byte & 0xF })
        };
        for t in 0..8 {
            let (sc, m) = row.scale_min[t];
            u.sc[t][r] = i32::from(sc);
            u.mins[t / 2][r] |= u32::from(m) << (16 * (t % 2));
            let mut sum = 0;
            for j in 0..8 {
                for i in 0..4 {
                    let v = value(32 * t + 4 * j + i);
                    u.q[Q4kUnpacked::at(t, j, r) + i] = v as u8;
                    sum += v;
                }
            }
            u.corr[r] += 128 * i32::from(sc) * sum;
        }
        u.d[r] = row.d;
        u.dmin[r] = row.dmin;
    }
    u
}

/// The 16-row product on unpacked weights and biased activations, with the SIMD loop's
/// integer sums and float steps (`mul_add` for its fused multiply-adds): its results must
/// be these, bit for bit.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) fn gemm_x16(w: &[Q4kUnpacked], a: &[BlockQ8Kx16]) -> [[f32; X16]; 8] {
    let mut out = [[0f32; X16]; 8];
    for (r, out) in out.iter_mut().enumerate() {
        for (l, out) in out.iter_mut().enumerate() {
            let (mut acc, mut acc_min) = (0f32, 0f32);
            for (u, blk) in w.iter().zip(a) {
                let mut itot = -u.corr[r];
                for t in 0..8 {
                    let mut isum = 0i32;
                    for j in 0..8 {
                        for i in 0..4 {
                            let x = i32::from(blk.qs[64 * (8 * t + j) + 4 * l + i]);
                            isum += x * i32::from(u.q[Q4kUnpacked::at(t, j, r) + i]);
                        }
                    }
                    itot += isum * u.sc[t][r];
                }
                let mut imin = 0i32;
                for p in 0..4 {
                    let (bs, m) = (blk.bsums[16 * p + l], u.mins[p][r]);
                    let half = |v: u32, h: u32| i32::from((v >> (16 * h)) as u16 as i16);
                    imin += half(bs, 0) * half(m, 0) + half(bs, 1) * half(m, 1);
                }
                acc = (itot as f32).mul_add(u.d[r] * blk.d[l], acc);
                acc_min = (imin as f32).mul_add(u.dmin[r] * blk.d[l], acc_min);
            }
            *out = acc - acc_min;
        }
    }
    out
}
