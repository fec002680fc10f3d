//! The one linear-layer type (and token-embedding type) of every network in huatuo, dense or
//! quantized, so that quantized weights replace dense ones in a single place (issue 6) and
//! the architectures never know which they run.
//!
//! Dense layers are candle's `Linear`, untouched, so f32 results stay bit-for-bit those of
//! the parity tests. Quantized layers hold a [`QWeight`]: a candle `QTensor` whose CPU blocks
//! are a [`Blocks`] that huatuo can still reach, or an interleaved q4_K matrix, which lets
//! it pick the multiplication per layer:
//!
//! - **q4k on x86 with AVX2**: the weight is interleaved eight rows at a time at load
//!   ([`crate::kernels::q4k`], ggml's `block_q4_Kx8`: the same 4.5 bits per weight as the GGUF
//!   blocks) and multiplied by huatuo's port of ggml's AVX2 kernels, for every row count.
//!   A layer made from q4_K blocks interleaves them when it is made
//!   ([`QWeight::interleave`]) and keeps only the interleaved copy.
//! - **q8_0 on x86 with AVX2**: huatuo's own kernels ([`crate::kernels::q8_0`]) on the blocks as
//!   they are, for every row count.
//! - **q6k on x86 with AVX2**, few rows (decode, the LM head): huatuo's kernel
//!   ([`crate::kernels::q6k`]) on the blocks as they are.
//! - **everything else** (q5k, q6k's prefills, q8_0 and q4k elsewhere, q4k in the compact layout,
//!   [`super::store::quant::WeightLayout`]): candle's plain block kernels for a
//!   few rows (decode) and, for 32 rows or more (prefill, the vision tower), the weight is
//!   dequantized to f32 for that call and multiplied with the dense gemm, which is 1.5–3.5×
//!   faster than q8_0/q6k's block kernels on AVX2 and never keeps a second copy.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor};

use super::store::qweight::Blocks;
pub(crate) use super::store::qweight::QWeight;
use crate::kernels::q4k::Q4kX8;
use crate::kernels::q6k;
use crate::kernels::q8_0;
use candle_nn::VarBuilder;

/// A kernel over a weight's GGUF bytes: `(w, n, k, lhs, m, dst)`, `dst[m, n] = lhs[m, k] · Wᵀ`.
type BytesKernel = fn(&[u8], usize, usize, &[f32], usize, &mut [f32]);

/// Rows from which a non-repacked quantized layer is dequantized for a dense gemm.
const DEQUANTIZE_MIN_ROWS: usize = 32;
/// Largest f32 copy of a weight made for that (the 7B's LM head, 2.2 GB, stays on blocks).
const DEQUANTIZE_MAX_BYTES: usize = 1 << 30;

/// `y = x Wᵀ + b` over the last dimension, with PyTorch's `[out, in]` weight layout.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Dense(candle_nn::Linear),
    Quantized(QLinear),
}

#[derive(Debug, Clone)]
struct QLinear {
    /// candle's tensor with its CPU blocks (none on GPUs, where candle's own op runs), or
    /// the interleaved q4_K matrix the interleaved kernels run (see the module docs).
    weight: QWeight,
    bias: Option<Tensor>,
    out_dim: usize,
    in_dim: usize,
}

impl Linear {
    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`), checking their shapes.
    pub fn load(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self::dense(weight, bias))
    }

    /// A dense layer over existing tensors.
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: Inner::Dense(candle_nn::Linear::new(weight, bias)),
        }
    }

    /// A bias-free layer over an existing weight (tied embeddings).
    pub fn from_weight(weight: Tensor) -> Self {
        Self::dense(weight, None)
    }

    /// A layer over a quantized `[out, in]` weight, interleaved now when `repack` and the
    /// CPU allow ([`QWeight::interleave`]). F32/F16 weights (the fallback of matrices too
    /// narrow for any block) become dense f32 layers.
    pub(crate) fn quantized(weight: QWeight, bias: Option<Tensor>, repack: bool) -> Result<Self> {
        let (out_dim, in_dim) = weight.shape().dims2()?;
        let weight = match weight {
            QWeight::Interleaved(_) if !repack => {
                candle_core::bail!("an interleaved q4_K weight cannot be used as plain blocks")
            }
            QWeight::Candle { tensor, .. }
                if matches!(tensor.dtype(), GgmlDType::F32 | GgmlDType::F16) =>
            {
                return Ok(Self::dense(tensor.dequantize(&tensor.device())?, bias));
            }
            w if repack => w.interleave()?,
            w => w,
        };
        Ok(Self {
            inner: Inner::Quantized(QLinear {
                weight,
                bias,
                out_dim,
                in_dim,
            }),
        })
    }

    /// A layer over a dense `[out, in]` weight quantized in memory to `dtype` on the CPU,
    /// interleaved when `repack` and the CPU allow: what the loaders build from a GGUF file,
    /// for benchmarks and tests.
    pub fn quantize(weight: &Tensor, dtype: GgmlDType, repack: bool) -> Result<Self> {
        let q = QTensor::quantize(weight, dtype)?;
        let data = q.data()?;
        let weight = QWeight::from_bytes_in(dtype, weight.dims(), &data, &Device::Cpu, repack)?;
        Self::quantized(weight, None, repack)
    }

    /// The GGML type of the weight (`F32`/`F16`/`BF16` for dense layers).
    pub fn weight_type(&self) -> GgmlDType {
        match &self.inner {
            Inner::Dense(l) => match l.weight().dtype() {
                DType::F16 => GgmlDType::F16,
                DType::BF16 => GgmlDType::BF16,
                _ => GgmlDType::F32,
            },
            Inner::Quantized(q) => q.weight.dtype(),
        }
    }

    /// Whether the interleaved q4_K kernels run this layer.
    #[cfg(test)]
    fn is_interleaved(&self) -> bool {
        matches!(
            &self.inner,
            Inner::Quantized(QLinear {
                weight: QWeight::Interleaved(_),
                ..
            })
        )
    }

    /// Bytes this layer's weight and bias occupy in memory now.
    pub fn bytes(&self) -> usize {
        match &self.inner {
            Inner::Dense(l) => {
                tensor_bytes(l.weight()) + l.bias().map(tensor_bytes).unwrap_or_default()
            }
            Inner::Quantized(q) => {
                q.weight.bytes() + q.bias.as_ref().map(tensor_bytes).unwrap_or_default()
            }
        }
    }
}

impl QLinear {
    /// `x Wᵀ` with the interleaved kernels, for a contiguous f32 `x`.
    fn forward_packed(&self, packed: &Q4kX8, xs: &Tensor) -> Result<Tensor> {
        self.rows_through(xs, |lhs, rows, dst| {
            packed.matmul(lhs, rows, dst);
            Ok(())
        })
    }

    /// `x Wᵀ` with one of huatuo's kernels over the GGUF bytes of `weight`'s CPU blocks as
    /// they are ([`q8_0::matmul`], [`q6k::matmul`]: `(w, n, k, lhs, m, dst)`).
    fn forward_bytes(&self, weight: &QTensor, xs: &Tensor, kernel: BytesKernel) -> Result<Tensor> {
        let w = weight.data()?;
        self.rows_through(xs, |lhs, rows, dst| {
            kernel(&w, self.out_dim, self.in_dim, lhs, rows, dst);
            Ok(())
        })
    }

    /// Runs `f(lhs, rows, dst)` over the rows of a contiguous f32 `x` (`[..., in]`) and
    /// returns `dst` as `[..., out]`.
    fn rows_through(
        &self,
        xs: &Tensor,
        f: impl FnOnce(&[f32], usize, &mut [f32]) -> Result<()>,
    ) -> Result<Tensor> {
        let mut dims = xs.dims().to_vec();
        match dims.last_mut() {
            Some(k) if *k == self.in_dim => *k = self.out_dim,
            _ => candle_core::bail!(
                "input {:?} does not end in {} features",
                xs.shape(),
                self.in_dim
            ),
        }
        // The activations are read where they are (a prefill's or the vision tower's are
        // megabytes), and the bias is added to each row as the products leave it.
        let (storage, layout) = xs.storage_and_layout();
        let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("the quantized kernels take contiguous activations on the CPU");
        };
        let lhs = &cpu.as_slice::<f32>()?[start..end];
        let rows = lhs.len() / self.in_dim.max(1);
        let mut dst = vec![0f32; rows * self.out_dim];
        f(lhs, rows, &mut dst)?;
        drop(storage);
        if let Some(bias) = &self.bias {
            let bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let add = |row: &mut [f32]| {
                for (y, b) in row.iter_mut().zip(&bias) {
                    *y += b;
                }
            };
            if rows >= 8 {
                let chunk = rows.div_ceil(candle_core::utils::get_num_threads().max(1));
                std::thread::scope(|s| {
                    for part in dst.chunks_mut(chunk * self.out_dim) {
                        s.spawn(move || part.chunks_exact_mut(self.out_dim).for_each(add));
                    }
                });
            } else {
                dst.chunks_exact_mut(self.out_dim).for_each(add);
            }
        }
        Tensor::from_vec(dst, dims, xs.device())
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.inner {
            Inner::Dense(l) => l.forward(xs),
            Inner::Quantized(q) => {
                let xs = if xs.dtype() == DType::F32 {
                    xs.contiguous()?
                } else {
                    xs.to_dtype(DType::F32)?
                };
                let rows = xs.elem_count() / q.in_dim.max(1);
                let (tensor, blocks) = match &q.weight {
                    QWeight::Interleaved(p) => return q.forward_packed(p, &xs),
                    QWeight::Candle { tensor, blocks } => (tensor, blocks),
                };
                // huatuo's kernels add the bias themselves.
                let ys = match blocks {
                    Some(_)
                        if tensor.dtype() == GgmlDType::Q8_0 && q8_0::fits(q.out_dim, q.in_dim) =>
                    {
                        return q.forward_bytes(tensor, &xs, q8_0::matmul);
                    }
                    Some(blocks)
                        if rows >= DEQUANTIZE_MIN_ROWS
                            && q.out_dim * q.in_dim * 4 <= DEQUANTIZE_MAX_BYTES =>
                    {
                        let w = blocks.dequantize_tensor((q.out_dim, q.in_dim))?;
                        candle_nn::Linear::new(w, None).forward(&xs)?
                    }
                    Some(_)
                        if tensor.dtype() == GgmlDType::Q6K && q6k::fits(q.out_dim, q.in_dim) =>
                    {
                        return q.forward_bytes(tensor, &xs, q6k::matmul);
                    }
                    Some(blocks) => xs.apply_op1_no_bwd(&BlockMatMul {
                        blocks: blocks.clone(),
                        out_dim: q.out_dim,
                        in_dim: q.in_dim,
                    })?,
                    None => {
                        candle_core::quantized::QMatMul::from_arc(tensor.clone())?.forward(&xs)?
                    }
                };
                match &q.bias {
                    Some(b) => ys.broadcast_add(b),
                    None => Ok(ys),
                }
            }
        }
    }
}

/// A token-embedding table: rows gathered by id. A quantized table is gathered row by row
/// without dequantizing the whole table (the 7B's is 2.2 GB as f32).
#[derive(Debug, Clone)]
pub struct Embedding(Table);

#[derive(Debug, Clone)]
enum Table {
    Dense(candle_nn::Embedding),
    Quantized(Arc<QTensor>),
    /// A q4_K table interleaved as it was read: rows are dequantized from that layout.
    Interleaved(Arc<Q4kX8>),
}

impl Embedding {
    /// A dense table.
    pub(crate) fn dense(e: candle_nn::Embedding) -> Self {
        Self(Table::Dense(e))
    }

    /// A quantized table in candle's blocks.
    pub(crate) fn quantized(q: Arc<QTensor>) -> Self {
        Self(Table::Quantized(q))
    }

    /// A q4_K table interleaved as it was read.
    pub(crate) fn interleaved(p: Arc<Q4kX8>) -> Self {
        Self(Table::Interleaved(p))
    }

    /// `[...]` ids → `[..., hidden]` rows.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.0 {
            Table::Dense(e) => e.forward(ids),
            Table::Quantized(q) => q.embedding(ids),
            Table::Interleaved(p) => {
                let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let mut dims = ids.dims().to_vec();
                dims.push(p.cols());
                Tensor::from_vec(p.rows(&flat)?, dims, ids.device())
            }
        }
    }

    /// The dtype of the gathered rows (that activations run in).
    pub fn dtype(&self) -> DType {
        match &self.0 {
            Table::Dense(e) => e.embeddings().dtype(),
            Table::Quantized(_) | Table::Interleaved(_) => DType::F32,
        }
    }

    /// The table as a bias-free linear layer (tied LM head).
    pub fn as_linear(&self) -> Result<Linear> {
        match &self.0 {
            Table::Dense(e) => Ok(Linear::from_weight(e.embeddings().clone())),
            Table::Quantized(q) => Linear::quantized(
                QWeight::Candle {
                    tensor: q.clone(),
                    blocks: None,
                },
                None,
                false,
            ),
            Table::Interleaved(p) => Linear::quantized(QWeight::Interleaved(p.clone()), None, true),
        }
    }

    /// Bytes the table occupies in memory.
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Table::Dense(e) => tensor_bytes(e.embeddings()),
            Table::Quantized(q) => q.storage_size_in_bytes(),
            Table::Interleaved(p) => p.bytes(),
        }
    }
}

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// `x Wᵀ` with candle's plain block kernels (no repacking), for a few rows.
struct BlockMatMul {
    blocks: Arc<Blocks>,
    out_dim: usize,
    in_dim: usize,
}

impl CustomOp1 for BlockMatMul {
    fn name(&self) -> &'static str {
        "huatuo-block-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quantized matmul input is not contiguous");
        };
        let lhs = &storage.as_slice::<f32>()?[start..end];
        let mut dims = layout.shape().dims().to_vec();
        match dims.last_mut() {
            Some(k) if *k == self.in_dim => *k = self.out_dim,
            _ => candle_core::bail!(
                "input {:?} does not end in {} features",
                layout.shape(),
                self.in_dim
            ),
        }
        let rows = lhs.len() / self.in_dim.max(1);
        let mut dst = vec![0f32; rows * self.out_dim];
        self.blocks
            .get()
            .matmul_t((rows, self.in_dim, self.out_dim), lhs, &mut dst)?;
        Ok((CpuStorage::F32(dst), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q4k as q4k_x8;
    use crate::model::store::mapped::MappedFile;

    fn quantized(dtype: GgmlDType, n: usize, k: usize) -> (Linear, Tensor) {
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).expect("randn");
        let q = QTensor::quantize(&w, dtype).expect("quantize");
        let data = q.data().expect("data").into_owned();
        let weight = QWeight::from_bytes(dtype, &[n, k], &data, &Device::Cpu).expect("bytes");
        let deq = weight.dequantize(&Device::Cpu).expect("dequantize");
        (Linear::quantized(weight, None, true).expect("linear"), deq)
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let num = (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        let den = b
            .abs()
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("max");
        num / den
    }

    /// Every path (block kernels, dequantize + gemm, interleaved q4_K)
    /// computes `x Wᵀ` for the dequantized weight, at decode and prefill row counts.
    #[test]
    fn quantized_paths_agree_with_the_dequantized_weight() {
        for dtype in [
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::Q8_0,
        ] {
            let (layer, w) = quantized(dtype, 64, 512);
            for rows in [1, 3, 40] {
                let x = Tensor::randn(0f32, 1.0, (1, rows, 512), &Device::Cpu).expect("x");
                let want = x.broadcast_matmul(&w.t().expect("t")).expect("matmul");
                let got = layer.forward(&x).expect("forward");
                // The block kernels quantize x to 8 bits on the fly: 1e-2 relative.
                let d = max_rel_diff(&got, &want);
                assert!(d < 2e-2, "{dtype:?} rows {rows}: relative difference {d}");
            }
        }
    }

    /// A layer made from q4_K blocks interleaves them where the CPU runs the interleaved
    /// kernels and keeps only that copy: the blocks are freed with the weight (a q4k model
    /// holds its 4.5 bits per weight once). q8_0 blocks are kept.
    #[test]
    fn q4k_blocks_are_freed_only_where_they_are_interleaved() {
        for (dtype, bytes) in [(GgmlDType::Q4K, 144), (GgmlDType::Q8_0, 34 * 8)] {
            let w = Tensor::randn(0f32, 0.05, (64, 512), &Device::Cpu).expect("randn");
            let data = QTensor::quantize(&w, dtype)
                .and_then(|q| q.data().map(|d| d.into_owned()))
                .expect("quantize");
            let weight = QWeight::from_bytes(dtype, &[64, 512], &data, &Device::Cpu).expect("w");
            let QWeight::Candle {
                blocks: Some(blocks),
                ..
            } = &weight
            else {
                panic!("cpu blocks expected");
            };
            let blocks = Arc::downgrade(blocks);
            let layer = Linear::quantized(weight, None, true).expect("linear");
            let interleaved = dtype == GgmlDType::Q4K && q4k_x8::supported();
            assert_eq!(layer.is_interleaved(), interleaved, "{dtype:?}");
            assert_eq!(blocks.upgrade().is_none(), interleaved, "{dtype:?}");
            assert_eq!(layer.bytes(), 64 * 512 / 256 * bytes, "{dtype:?}");
        }
    }

    /// Blocks the kernels read as they are stay in the mapped file and compute what a copy
    /// of the same bytes computes; interleaved q4_K matrices are copies; a range past the
    /// end of the file is an error, not a read out of bounds.
    #[test]
    fn mapped_blocks_are_used_in_place_and_compute_as_copies_do() {
        let (n, k) = (64, 512);
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).expect("randn");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("weights.bin");
        let mut file_bytes = vec![7u8; 96]; // a header's worth, like a GGUF file
        let mut ranges = Vec::new();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q6K, GgmlDType::Q4K] {
            let q = QTensor::quantize(&w, dtype).expect("quantize");
            let data = q.data().expect("data").into_owned();
            file_bytes.resize(file_bytes.len().next_multiple_of(32), 0);
            ranges.push((dtype, file_bytes.len()..file_bytes.len() + data.len()));
            file_bytes.extend_from_slice(&data);
        }
        std::fs::write(&path, &file_bytes).expect("write");
        let file = MappedFile::open(&path, true).expect("map");
        let x = Tensor::randn(0f32, 1.0, (1, 40, k), &Device::Cpu).expect("x");
        for (dtype, range) in ranges {
            for interleave in [false, true] {
                let mapped = QWeight::from_mapped(
                    dtype,
                    &[n, k],
                    &file,
                    range.clone(),
                    &Device::Cpu,
                    interleave,
                )
                .expect("mapped");
                let in_place = !(interleave && QWeight::interleaves(dtype, &[n, k], &Device::Cpu));
                assert_eq!(
                    mapped.is_in_place(),
                    in_place,
                    "{dtype:?} interleave {interleave}"
                );
                let copy = QWeight::from_bytes_in(
                    dtype,
                    &[n, k],
                    &file_bytes[range.clone()],
                    &Device::Cpu,
                    interleave,
                )
                .expect("copy");
                assert!(!copy.is_in_place());
                let run = |q: QWeight| {
                    let layer = Linear::quantized(q, None, interleave).expect("linear");
                    layer
                        .forward(&x)
                        .and_then(|y| y.flatten_all())
                        .and_then(|y| y.to_vec1::<f32>())
                };
                assert_eq!(
                    run(mapped).expect("mapped"),
                    run(copy).expect("copy"),
                    "{dtype:?}"
                );
            }
        }
        let past = file_bytes.len() - 100..file_bytes.len() + 100;
        let err = QWeight::from_mapped(GgmlDType::Q8_0, &[n, k], &file, past, &Device::Cpu, false)
            .expect_err("past the end");
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
