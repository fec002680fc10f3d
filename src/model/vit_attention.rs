//! Unmasked multi-head attention (the CLIP tower's) in one parallel pass on an x86 CPU with
//! AVX2 and FMA: `softmax(q·s · kᵀ) · v` for every image and head, written straight into the
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

use crate::kernels::pool::{self, Order};

/// Rows of the micro-kernel's output tile.
const MR: usize = 6;
/// Columns of the micro-kernel's output tile (two AVX registers).
const NR: usize = 16;
/// Queries per work item (a multiple of [`MR`]).
const QUERY_BLOCK: usize = 48;

/// Whether [`attention`]'s kernels run (AVX2 and FMA, unless the process chose the scalar
/// kernel set: [`crate::kernels::isa`]; candle's attention runs otherwise).
fn supported() -> bool {
    crate::kernels::isa() >= crate::kernels::Isa::Avx2
}

/// `softmax((q · scale) kᵀ) v` per head for `q`, `k`, `v` of `[b, n, heads·d]` (f32, on the
/// CPU), as `[b, n, heads·d]`; `None` where the kernels do not run (another device or dtype,
/// a CPU without AVX2), for the caller to use candle's operations.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || !supported() {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3_no_bwd(&k, &v, &FullAttention { heads, scale })
        .map(Some)
}

struct FullAttention {
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
        let out = run(q, k, v, dims, self.scale);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Both passes: keys transposed and values packed per head, then attention per block of
/// queries.
fn run(q: &[f32], k: &[f32], v: &[f32], dims: Dims, scale: f32) -> Vec<f32> {
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
            attend(run, (q, kt, vp), img, dims, scale)
        });
    }
    out
}

/// Pass 2 of [`run`] for a run of tiles of image `img`'s output (`QUERY_BLOCK` queries by
/// one head): `kt`, `vp` as pass 1 made them.
fn attend(
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
        // SAFETY: `supported()` was checked by `attention`; every tile reads and writes
        // inside the buffers sized above (rows up to tiles·MR ≤ QUERY_BLOCK, columns up
        // to n_pad and d_pad, depth d and n).
        unsafe {
            for j in (0..n_pad).step_by(NR) {
                for t in 0..tiles {
                    tile(
                        qs.as_ptr().add(t * MR * d),
                        d,
                        kt.as_ptr().add(j),
                        n_pad,
                        d,
                        scores.as_mut_ptr().add(t * MR * n_pad + j),
                        n_pad,
                    );
                }
            }
            for row in scores.chunks_exact_mut(n_pad).take(tiles * MR) {
                softmax(row, n);
            }
            for col in (0..d_pad).step_by(NR) {
                for t in 0..tiles {
                    tile(
                        scores.as_ptr().add(t * MR * n_pad),
                        n_pad,
                        vp.as_ptr().add(col),
                        d_pad,
                        n,
                        ctx.as_mut_ptr().add(t * MR * d_pad + col),
                        d_pad,
                    );
                }
            }
        }
        for (crow, dst) in ctx.chunks_exact(d_pad).zip(out.rows.iter_mut()) {
            dst.copy_from_slice(&crow[..d]);
        }
    }
}

/// `c[MR, NR] = a[MR, depth] · b[depth, NR]`, rows of `a` `lda` apart, of `b` `ldb`, of `c`
/// `ldc`.
///
/// # Safety
/// AVX2 and FMA must be available and every element addressed must be in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..depth {
        // SAFETY: columns `0..NR` of row `p < depth` of `b` (in bounds: the contract above).
        let (b0, b1) = unsafe {
            (
                _mm256_loadu_ps(b.add(p * ldb)),
                _mm256_loadu_ps(b.add(p * ldb + 8)),
            )
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: element `p < depth` of row `i < MR` of `a` (the contract above).
            let ai = _mm256_broadcast_ss(unsafe { &*a.add(i * lda + p) });
            acc[0] = _mm256_fmadd_ps(ai, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(ai, b1, acc[1]);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: columns `0..NR` of row `i < MR` of `c` (the contract above).
        unsafe {
            _mm256_storeu_ps(c.add(i * ldc), acc[0]);
            _mm256_storeu_ps(c.add(i * ldc + 8), acc[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(_: *const f32, _: usize, _: *const f32, _: usize, _: usize, _: *mut f32, _: usize) {
    unreachable!("the attention kernels run only where `supported()`")
}

/// The first `n` scores of `row` to probabilities, the rest (padding) to zero: the maximum
/// subtracted, `exp`, divided by the sum, as candle's and PyTorch's softmax.
///
/// # Safety
/// AVX2 and FMA must be available; `row.len()` is a multiple of 8 and at least `n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn softmax(row: &mut [f32], n: usize) {
    use std::arch::x86_64::*;
    let max = row[..n].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let vmax = _mm256_set1_ps(max);
    let mut vsum = _mm256_setzero_ps();
    let full = n / 8 * 8;
    for j in (0..full).step_by(8) {
        // SAFETY: `j + 8 ≤ full ≤ n ≤ row.len()` (`row[..n]` above checked the last):
        // eight f32 of `row`, loaded and stored back.
        unsafe {
            let p = row.as_mut_ptr().add(j);
            let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), vmax));
            _mm256_storeu_ps(p, e);
            vsum = _mm256_add_ps(vsum, e);
        }
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is eight f32: one unaligned 32-byte store.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vsum) };
    let mut sum: f32 = lanes.iter().sum();
    if full < n {
        let mut tail = [f32::NEG_INFINITY; 8];
        tail[..n - full].copy_from_slice(&row[full..n]);
        // SAFETY: `tail` is eight f32: one unaligned load and one store.
        unsafe {
            let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), vmax));
            _mm256_storeu_ps(tail.as_mut_ptr(), e);
        }
        row[full..n].copy_from_slice(&tail[..n - full]);
        sum += tail[..n - full].iter().sum::<f32>();
    }
    row[n..].fill(0.0);
    let vsum = _mm256_set1_ps(sum);
    for j in (0..full).step_by(8) {
        // SAFETY: as in the first loop: eight f32 of `row`, loaded and stored back.
        unsafe {
            let p = row.as_mut_ptr().add(j);
            _mm256_storeu_ps(p, _mm256_div_ps(_mm256_loadu_ps(p), vsum));
        }
    }
    for x in &mut row[full..n] {
        *x /= sum;
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn softmax(_: &mut [f32], _: usize) {
    unreachable!("the attention kernels run only where `supported()`")
}

/// `exp` on eight lanes: Cephes' `expf` as in avx_mathfun (range reduction by ln 2 in two
/// parts, a degree-5 polynomial, the power of two through the exponent bits). Inputs below
/// −87.3 give 0 (they are scores far under the maximum), −∞ gives 0. Safe to call where AVX2
/// and FMA are enabled (it touches no memory).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp256(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3), _CMP_LT_OQ);
    let x = _mm256_min_ps(x, _mm256_set1_ps(88.376_26));
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.3));
    // n = round(x / ln 2), r = x − n·ln 2 in two steps for precision.
    let fx = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(y, r2, r), _mm256_set1_ps(1.0));
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(fx),
        _mm256_set1_epi32(127),
    ));
    let e = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2));
    _mm256_andnot_ps(too_small, e)
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

    /// The kernels agree with an f64 computation within f32 rounding for shapes with
    /// padded heads, padded keys and partial query blocks, and with several images.
    #[test]
    fn matches_f64_reference() {
        if !supported() {
            return;
        }
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
            let ours: Vec<f32> = attention(&q, &k, &v, heads, 0.125)
                .expect("attention")
                .expect("runs here")
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .expect("vec");
            let want = reference(&qv, &kv, &vv, b, n, heads, d);
            let worst = ours
                .iter()
                .zip(&want)
                .map(|(&o, &w)| (o as f64 - w).abs() / w.abs().max(1.0))
                .fold(0f64, f64::max);
            assert!(
                worst < 2e-5,
                "[{b}, {n}, {heads}×{d}]: worst error {worst:e}"
            );
        }
    }

    /// `exp256` against `f64::exp` over the softmax's range, and 0 for −∞.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_is_accurate() {
        if !supported() {
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0f64;
        for i in 0..20_000 {
            let x = -87.0 + i as f32 * 0.00435;
            let mut lanes = [0f32; 8];
            // SAFETY: supported() is checked above.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), exp256(_mm256_set1_ps(x))) };
            let want = (x as f64).exp();
            worst = worst.max((lanes[0] as f64 - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        let mut lanes = [1f32; 8];
        // SAFETY: as above.
        unsafe {
            _mm256_storeu_ps(
                lanes.as_mut_ptr(),
                exp256(_mm256_set1_ps(f32::NEG_INFINITY)),
            )
        };
        assert_eq!(lanes, [0.0; 8]);
    }
}
