//! Unmasked multi-head attention (the CLIP tower's) in one parallel pass (issue 21: the
//! product's inner tile in `scalar.rs`, the reference, `x86_avx2.rs`, AVX2 and FMA, and
//! `x86_avx512.rs`, two tiles at once):
//! `softmax(q·s · kᵀ) · v` for every image and head, written straight into the
//! `[b, n, heads·d]` layout the output projection reads (issue 6: CLIP encode at least as
//! fast as PyTorch's f32).
//!
//! candle runs this as seven operations, each a pass over memory: the head split of q, k and
//! v (three copies), a batched q·kᵀ whose 64-deep products keep its gemm at ~26 GMAC/s, a
//! softmax with scalar `expf`, p·v and the transpose back. Here each work item takes 48
//! queries of one head: their scores (48 × 577 floats) stay in L2 from the product through
//! the softmax to p·v. Both products run one register-tiled kernel (6 rows × 16 columns,
//! BLIS's AVX2 shape); `exp` is Cephes' polynomial on eight lanes (a relative error of
//! ~1e-7, as PyTorch's vectorised exp).
//!
//! The scale multiplies q before the product, as transformers' `CLIPAttention` does
//! (`q_proj(x) * scale`), with the same f32 product candle's `affine` computes.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::pool::{self, Order};
use super::{isa, Isa};

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// Rows of the micro-kernel's output tile.
const MR: usize = 6;
/// Columns of the micro-kernel's output tile (two AVX registers).
const NR: usize = 16;
/// Queries per work item (a multiple of [`MR`]).
const QUERY_BLOCK: usize = 48;

/// `softmax((q · scale) kᵀ) v` per head for `q`, `k`, `v` of `[b, n, heads·d]` (f32, on the
/// CPU), as `[b, n, heads·d]`; `None` where the kernels do not run (another device or dtype,
/// a CPU without AVX2), for the caller to use candle's operations.
/// Without AVX2 candle's operations run (its gemm has NEON and other kernels this scalar
/// reference does not).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let set = isa();
    if set < Isa::Avx2 {
        return Ok(None);
    }
    attention_with(set, q, k, v, heads, scale)
}

/// [`attention`] on the kernels of `set`, the scalar ones included (tests and benchmarks
/// compare the sets this CPU runs); `None` for another device or dtype.
pub fn attention_with(
    set: Isa,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    if !set.supported() {
        candle_core::bail!("this CPU does not run the {set} kernels");
    }
    if !q.device().is_cpu() || q.dtype() != DType::F32 {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3_no_bwd(&k, &v, &FullAttention { set, heads, scale })
        .map(Some)
}

struct FullAttention {
    set: Isa,
    heads: usize,
    scale: f32,
}

/// The geometry of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    n: usize,
    heads: usize,
    d: usize,
    /// `n` rounded up to [`NR`]: the width of the transposed keys and of the scores.
    n_pad: usize,
    /// `d` rounded up to [`NR`]: the width of the packed values.
    d_pad: usize,
}

impl Dims {
    fn c(&self) -> usize {
        self.heads * self.d
    }
}

impl CustomOp3 for FullAttention {
    fn name(&self) -> &'static str {
        "huatuo-vit-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        /// The f32 elements of a contiguous operand shaped as q.
        fn get<'a>(s: &'a CpuStorage, l: &Layout, q: &Layout, what: &str) -> Result<&'a [f32]> {
            if l.shape() != q.shape() {
                candle_core::bail!("attention {what} is {:?}, q is {:?}", l.shape(), q.shape());
            }
            match l.contiguous_offsets() {
                Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
                None => candle_core::bail!("attention {what} is not contiguous"),
            }
        }
        let q = get(s1, l1, l1, "q")?;
        let (k, v) = (get(s2, l2, l1, "k")?, get(s3, l3, l1, "v")?);
        let (b, n, c) = l1.shape().dims3()?;
        if self.heads == 0 || !c.is_multiple_of(self.heads) {
            candle_core::bail!("{c} features do not split into {} heads", self.heads);
        }
        let d = c / self.heads;
        let dims = Dims {
            b,
            n,
            heads: self.heads,
            d,
            n_pad: n.div_ceil(NR) * NR,
            d_pad: d.div_ceil(NR) * NR,
        };
        let out = run(self.set, q, k, v, dims, self.scale);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Both passes: keys transposed and values packed per head, then attention per block of
/// queries.
fn run(set: Isa, q: &[f32], k: &[f32], v: &[f32], dims: Dims, scale: f32) -> Vec<f32> {
    let Dims {
        b,
        n,
        heads,
        d,
        n_pad,
        d_pad,
    } = dims;
    let c = dims.c();

    // Pass 1: per (image, head), kᵀ as [d, n_pad] and v as [n, d_pad], zero-padded.
    let kt_len = (d * n_pad).max(1);
    let vp_len = (n * d_pad).max(1);
    let mut kt = vec![0f32; b * heads * d * n_pad];
    let mut vp = vec![0f32; b * heads * n * d_pad];
    let mut per_head: Vec<_> = kt.chunks_mut(kt_len).zip(vp.chunks_mut(vp_len)).collect();
    pool::for_each_run(&mut per_head, 1, true, |first, run| {
        for (i, (kt, vp)) in run.iter_mut().enumerate() {
            let (img, h) = ((first + i) / heads, (first + i) % heads);
            for j in 0..n {
                let row = (img * n + j) * c + h * d;
                for (t, &x) in k[row..row + d].iter().enumerate() {
                    kt[t * n_pad + j] = x;
                }
                vp[j * d_pad..j * d_pad + d].copy_from_slice(&v[row..row + d]);
            }
        }
    });
    drop(per_head);

    // Pass 2: per (image, head, block of queries), scores, softmax and p·v, into that
    // block's rows of the head's columns of `out`; one head's keys and values after the
    // other (they stay in cache), an image at a time.
    let mut out = vec![0f32; b * n * c];
    let (kt, vp) = (&kt[..], &vp[..]);
    for (img, out) in out.chunks_mut((n * c).max(1)).enumerate() {
        pool::for_each_tile(out, c, (QUERY_BLOCK, d), Order::ColumnBands, |run| {
            attend(set, run, (q, kt, vp), img, dims, scale)
        });
    }
    out
}

/// Pass 2 of [`run`] for a run of tiles of image `img`'s output (`QUERY_BLOCK` queries by
/// one head): `kt`, `vp` as pass 1 made them.
fn attend(
    set: Isa,
    run: &mut [pool::Tile<'_, '_, f32>],
    (q, kt, vp): (&[f32], &[f32], &[f32]),
    img: usize,
    dims: Dims,
    scale: f32,
) {
    let Dims {
        n,
        heads,
        d,
        n_pad,
        d_pad,
        ..
    } = dims;
    let c = dims.c();
    let (kt_len, vp_len) = (d * n_pad, n * d_pad);
    let rows_pad = QUERY_BLOCK;
    let mut qs = vec![0f32; rows_pad * d];
    let mut scores = vec![0f32; rows_pad * n_pad];
    let mut ctx = vec![0f32; rows_pad * d_pad];
    for out in run {
        let h = out.col0 / d.max(1);
        let head_item = img * heads + h;
        let first = out.row0;
        let rows = out.rows.len();
        let tiles = rows.div_ceil(MR);
        // The block's queries, scaled, and zero rows up to a whole tile.
        for (i, qrow) in qs.chunks_exact_mut(d).enumerate().take(tiles * MR) {
            if i < rows {
                let at = (img * n + first + i) * c + h * d;
                for (o, &x) in qrow.iter_mut().zip(&q[at..at + d]) {
                    *o = x * scale;
                }
            } else {
                qrow.fill(0.0);
            }
        }
        let kt = &kt[head_item * kt_len..(head_item + 1) * kt_len];
        let vp = &vp[head_item * vp_len..(head_item + 1) * vp_len];
        // SAFETY: the CPU runs `set` (`isa()`, or checked by `attention_with`); every tile
        // reads and writes inside the buffers sized above (rows up to tiles·MR ≤
        // QUERY_BLOCK, columns up to n_pad and d_pad, depth d and n).
        unsafe {
            for j in (0..n_pad).step_by(NR) {
                let (a, b, c) = (qs.as_ptr(), kt.as_ptr().add(j), scores.as_mut_ptr().add(j));
                column_of_tiles(set, tiles, (a, d), (b, n_pad), d, (c, n_pad));
            }
            for row in scores.chunks_exact_mut(n_pad).take(tiles * MR) {
                match set {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::Avx512 => super::softmax::x86_avx2::softmax(row, n),
                    _ => super::softmax::scalar(row, n),
                }
            }
            for col in (0..d_pad).step_by(NR) {
                let (a, b, c) = (
                    scores.as_ptr(),
                    vp.as_ptr().add(col),
                    ctx.as_mut_ptr().add(col),
                );
                column_of_tiles(set, tiles, (a, n_pad), (b, d_pad), n, (c, d_pad));
            }
        }
        for (crow, dst) in ctx.chunks_exact(d_pad).zip(out.rows.iter_mut()) {
            dst.copy_from_slice(&crow[..d]);
        }
    }
}

/// `count` tiles one under the other: `c[count·MR, NR] = a[count·MR, depth] · b[depth, NR]`
/// on `set` (`a` and `c` with their row strides), two tiles at a time on AVX-512.
///
/// # Safety
/// As [`tile`], for `count · MR` rows of `a` and `c`.
unsafe fn column_of_tiles(
    set: Isa,
    count: usize,
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    depth: usize,
    (c, ldc): (*mut f32, usize),
) {
    let mut t = 0;
    #[cfg(target_arch = "x86_64")]
    if set == Isa::Avx512 {
        while t + 2 <= count {
            // SAFETY: the CPU runs `set`, so AVX-512 F and FMA; rows `t·MR..(t + 2)·MR ≤
            // count·MR` of `a` and `c` (the contract above).
            unsafe {
                x86_avx512::tile2(
                    a.add(t * MR * lda),
                    lda,
                    b,
                    ldb,
                    depth,
                    c.add(t * MR * ldc),
                    ldc,
                )
            };
            t += 2;
        }
    }
    while t < count {
        // SAFETY: as above, rows `t·MR..(t + 1)·MR`.
        unsafe {
            tile(
                set,
                a.add(t * MR * lda),
                lda,
                b,
                ldb,
                depth,
                c.add(t * MR * ldc),
                ldc,
            )
        };
        t += 1;
    }
}

/// `c[MR, NR] = a[MR, depth] · b[depth, NR]` on `set`.
///
/// # Safety
/// The CPU runs `set`; every element addressed must be in bounds (rows of `a` `lda` apart,
/// of `b` `ldb`, of `c` `ldc`).
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    set: Isa,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
) {
    match set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs `set`, so AVX2 and FMA; the bounds are the caller's (above).
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::tile(a, lda, b, ldb, depth, c, ldc) },
        // SAFETY: the bounds are the caller's (above).
        _ => unsafe { scalar::tile(a, lda, b, ldb, depth, c, ldc) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Attention in f64, head by head, from the same inputs.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        b: usize,
        n: usize,
        heads: usize,
        d: usize,
    ) -> Vec<f64> {
        let c = heads * d;
        let mut out = vec![0f64; b * n * c];
        for img in 0..b {
            for h in 0..heads {
                let at = |t: &[f32], i: usize, x: usize| t[(img * n + i) * c + h * d + x] as f64;
                for i in 0..n {
                    let s: Vec<f64> = (0..n)
                        .map(|j| (0..d).map(|x| at(q, i, x) * 0.125 * at(k, j, x)).sum())
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for x in 0..d {
                        out[(img * n + i) * c + h * d + x] =
                            (0..n).map(|j| e[j] / z * at(v, j, x)).sum();
                    }
                }
            }
        }
        out
    }

    /// Every SIMD tile this CPU runs gives the scalar tile's floats, bit for bit (the same
    /// fused multiply-adds in the same order), on depths that are not a multiple of anything.
    #[test]
    fn simd_tiles_match_the_scalar_tile() {
        let mut ran = vec!["scalar"];
        for depth in [1, 37, 64] {
            let (lda, ldb, ldc) = (depth + 3, NR + 5, NR + 7);
            let a: Vec<f32> = (0..2 * MR * lda)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..depth * ldb)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 5.0)
                .collect();
            let mut want = vec![0f32; 2 * MR * ldc];
            // SAFETY: `a`, `b` and `want` hold every row the two tiles address.
            unsafe {
                scalar::tile(
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    ldb,
                    depth,
                    want.as_mut_ptr(),
                    ldc,
                );
                let (a2, c2) = (a.as_ptr().add(MR * lda), want.as_mut_ptr().add(MR * ldc));
                scalar::tile(a2, lda, b.as_ptr(), ldb, depth, c2, ldc);
            }
            for set in Isa::available().into_iter().filter(|&s| s > Isa::Scalar) {
                let mut got = vec![0f32; 2 * MR * ldc];
                // SAFETY: the CPU runs `set`; the buffers are as above.
                unsafe {
                    column_of_tiles(
                        set,
                        2,
                        (a.as_ptr(), lda),
                        (b.as_ptr(), ldb),
                        depth,
                        (got.as_mut_ptr(), ldc),
                    )
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{set} tiles, depth {depth}");
                if !ran.contains(&set.name()) {
                    ran.push(set.name());
                }
            }
        }
        eprintln!("vision attention tiles checked here: {ran:?}");
    }

    /// The kernels agree with an f64 computation within f32 rounding for shapes with
    /// padded heads, padded keys and partial query blocks, and with several images.
    #[test]
    fn matches_f64_reference() {
        eprintln!("vision attention sets run here: {:?}", Isa::available());
        let dev = Device::Cpu;
        for (b, n, heads, d) in [
            (1, 577, 2, 64),
            (2, 37, 4, 16),
            (1, 5, 3, 8),
            (2, 50, 2, 20),
        ] {
            let make = |seed: u64| {
                let len = b * n * heads * d;
                let vals: Vec<f32> = (0..len)
                    .map(|i| {
                        let x = (i as u64)
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(seed);
                        ((x >> 33) % 2000) as f32 / 250.0 - 4.0
                    })
                    .collect();
                (
                    Tensor::from_vec(vals.clone(), (b, n, heads * d), &dev).expect("t"),
                    vals,
                )
            };
            let (q, qv) = make(1);
            let (k, kv) = make(7);
            let (v, vv) = make(13);
            let want = reference(&qv, &kv, &vv, b, n, heads, d);
            for set in Isa::available() {
                let ours: Vec<f32> = attention_with(set, &q, &k, &v, heads, 0.125)
                    .expect("attention")
                    .expect("runs here")
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .expect("vec");
                let worst = ours
                    .iter()
                    .zip(&want)
                    .map(|(&o, &w)| (o as f64 - w).abs() / w.abs().max(1.0))
                    .fold(0f64, f64::max);
                assert!(
                    worst < 2e-5,
                    "{set} [{b}, {n}, {heads}×{d}]: worst error {worst:e}"
                );
            }
        }
    }
}
