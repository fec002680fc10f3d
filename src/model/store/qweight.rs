//! A quantized weight as huatuo holds it ([`QWeight`]): candle's `QTensor` and, on a CPU,
//! the GGML blocks behind it ([`Blocks`]), which huatuo's kernels read directly and which
//! may lie in a memory-mapped cache file; or a q4_K matrix interleaved as it was read
//! ([`Q4kX8`]), which candle never sees.
//!
//! Why there is no way to free blocks early (issue 13). candle's safe `QTensor::data()`
//! builds a slice from the storage's `as_ptr()` and `storage_size_in_bytes()`, valid for as
//! long as the tensor is borrowed. huatuo used to free the blocks of a q4_K layer once it had
//! interleaved them (`Blocks::release`, from `linear::prepare`), behind a tensor that stayed
//! alive: a `data()` slice taken before the release, or racing it, pointed at freed memory
//! from safe code. Now the two never meet, by construction:
//! - [`Blocks`] are immutable and owned (through an `Arc`) by the tensor itself, so they
//!   live exactly as long as the last tensor, clone or kernel that can reach them;
//! - a q4_K matrix that huatuo multiplies interleaved is interleaved before it is handed
//!   to a layer ([`QWeight::from_bytes_in`], [`QWeight::interleave`]) and then held only as
//!   [`QWeight::Interleaved`], without a candle tensor: its blocks go with the last tensor
//!   over them, and there is nothing left to call `data()` on.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, Device, Result, Shape, Tensor};

use super::mapped::{self, MappedFile};
use crate::kernels::q4k::{self as q4k_x8, Q4kX8};

/// A quantized weight as read from a GGUF file or built in memory.
#[derive(Debug, Clone)]
pub(crate) enum QWeight {
    /// candle's tensor and, on a CPU, the blocks behind it (shared with the tensor, so
    /// they live as long as it does).
    Candle {
        tensor: Arc<QTensor>,
        blocks: Option<Arc<Blocks>>,
    },
    /// A q4_K matrix interleaved eight rows at a time, for huatuo's kernels only.
    Interleaved(Arc<Q4kX8>),
}

impl QWeight {
    /// A weight of `dtype` and `shape` from its raw GGML bytes, on `device`.
    pub fn from_bytes(
        dtype: GgmlDType,
        shape: &[usize],
        data: &[u8],
        device: &Device,
    ) -> Result<Self> {
        let elems: usize = shape.iter().product();
        let expected = elems / dtype.block_size() * dtype.type_size();
        if data.len() != expected || !elems.is_multiple_of(dtype.block_size()) {
            candle_core::bail!(
                "{dtype:?} tensor {shape:?} needs {expected} bytes, got {}",
                data.len()
            );
        }
        if !device.is_cpu() {
            let storage = QStorage::from_data(std::borrow::Cow::Borrowed(data), device, dtype)?;
            return Ok(Self::Candle {
                tensor: Arc::new(QTensor::new(storage, shape)?),
                blocks: None,
            });
        }
        let blocks = dtype.from_data(std::borrow::Cow::Borrowed(data));
        Self::with_blocks(shape, blocks, false)
    }

    /// A CPU weight over `blocks` (in a mapped file when `mapped`), shared by candle's
    /// tensor and huatuo's kernels.
    fn with_blocks(shape: &[usize], blocks: Box<dyn QuantizedType>, mapped: bool) -> Result<Self> {
        let blocks = Arc::new(Blocks {
            data: blocks,
            mapped,
        });
        let storage = QStorage::Cpu(Box::new(SharedBlocks(blocks.clone())));
        Ok(Self::Candle {
            tensor: Arc::new(QTensor::new(storage, shape)?),
            blocks: Some(blocks),
        })
    }

    /// A weight of `dtype` and `shape` whose GGML bytes are `range` of a memory-mapped
    /// cache file. On a CPU its blocks are used where they are in the file (no copy), unless
    /// `interleave` makes an interleaved q4_K copy of them; elsewhere they are copied as
    /// [`QWeight::from_bytes_in`] copies them.
    pub(crate) fn from_mapped(
        dtype: GgmlDType,
        shape: &[usize],
        file: &Arc<MappedFile>,
        range: std::ops::Range<usize>,
        device: &Device,
        interleave: bool,
    ) -> Result<Self> {
        let elems: usize = shape.iter().product();
        let expected = elems / dtype.block_size() * dtype.type_size();
        let Some(data) = file.bytes().get(range.clone()) else {
            candle_core::bail!(
                "{dtype:?} tensor {shape:?} lies past the end of its file ({range:?})"
            );
        };
        // A wrong size falls through to `from_bytes`, which reports it.
        let in_place = device.is_cpu()
            && !(interleave && Self::interleaves(dtype, shape, device))
            && data.len() == expected
            && elems.is_multiple_of(dtype.block_size());
        match in_place
            .then(|| mapped::blocks(file, dtype, range))
            .flatten()
        {
            Some(blocks) => Self::with_blocks(shape, blocks, true),
            None => Self::from_bytes_in(dtype, shape, data, device, interleave),
        }
    }

    /// Whether the blocks are read in place from a mapped file.
    pub(crate) fn is_in_place(&self) -> bool {
        matches!(self, Self::Candle { blocks: Some(b), .. } if b.mapped)
    }

    /// Whether [`QWeight::from_bytes_in`] interleaves a tensor of this type and shape (on
    /// every core: [`Q4kX8::pack`]).
    pub(crate) fn interleaves(dtype: GgmlDType, shape: &[usize], device: &Device) -> bool {
        matches!(shape, [n, k] if dtype == GgmlDType::Q4K
            && device.is_cpu()
            && q4k_x8::supported()
            && q4k_x8::fits(*n, *k))
    }

    /// [`QWeight::from_bytes`], except that with `interleave` a q4_K matrix the interleaved
    /// kernels take is interleaved straight from `data`: the model then holds one copy made
    /// once, where candle's blocks followed by the interleaved copy cost a reload of the 7B
    /// about 9 GB of freshly zeroed pages instead of 4.6.
    pub fn from_bytes_in(
        dtype: GgmlDType,
        shape: &[usize],
        data: &[u8],
        device: &Device,
        interleave: bool,
    ) -> Result<Self> {
        let packed = match shape {
            [n, k] if interleave && Self::interleaves(dtype, shape, device) => {
                Q4kX8::pack(data, *n, *k)
            }
            _ => None,
        };
        match packed {
            Some(p) => Ok(Self::Interleaved(Arc::new(p))),
            None => Self::from_bytes(dtype, shape, data, device),
        }
    }

    /// This weight interleaved where [`QWeight::interleaves`] would have interleaved it as it
    /// was read (a q4_K matrix's CPU blocks), otherwise as it is. The interleaved weight is
    /// a copy: the blocks are freed with the last clone of this weight and of its tensor.
    pub(crate) fn interleave(self) -> Result<Self> {
        let packed = match &self {
            Self::Candle {
                tensor,
                blocks: Some(_),
            } if Self::interleaves(tensor.dtype(), tensor.shape().dims(), &Device::Cpu) => {
                let (n, k) = tensor.shape().dims2()?;
                let data = tensor.data()?;
                Q4kX8::pack(&data, n, k).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "cannot interleave a q4_K weight of [{n}, {k}] ({} bytes)",
                        data.len()
                    ))
                })?
            }
            _ => return Ok(self),
        };
        Ok(Self::Interleaved(Arc::new(packed)))
    }

    /// The weight's shape (`[out, in]` for a matrix).
    pub(crate) fn shape(&self) -> Shape {
        match self {
            Self::Candle { tensor, .. } => tensor.shape().clone(),
            Self::Interleaved(p) => Shape::from((p.rows_count(), p.cols())),
        }
    }

    /// The GGML type of the weight (q4_K for an interleaved one).
    pub(crate) fn dtype(&self) -> GgmlDType {
        match self {
            Self::Candle { tensor, .. } => tensor.dtype(),
            Self::Interleaved(_) => GgmlDType::Q4K,
        }
    }

    /// Bytes the weight occupies in memory.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Self::Candle { tensor, .. } => tensor.storage_size_in_bytes(),
            Self::Interleaved(p) => p.bytes(),
        }
    }

    /// The whole weight as a dense f32 tensor on `device`.
    pub(crate) fn dequantize(&self, device: &Device) -> Result<Tensor> {
        match self {
            Self::Candle { tensor, .. } => tensor.dequantize(device),
            Self::Interleaved(p) => {
                let ids: Vec<u32> = (0..p.rows_count() as u32).collect();
                Tensor::from_vec(p.rows(&ids)?, (p.rows_count(), p.cols()), device)
            }
        }
    }
}

/// The CPU blocks of one quantized weight, shared between candle's `QTensor` (through
/// [`SharedBlocks`]) and huatuo's own multiplications. Immutable: see the module docs.
pub(crate) struct Blocks {
    data: Box<dyn QuantizedType>,
    /// Whether `data` is read in place from a mapped file ([`QWeight::from_mapped`]).
    mapped: bool,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Blocks({:?}, {} bytes)",
            self.data.dtype(),
            self.data.storage_size_in_bytes()
        )
    }
}

impl Blocks {
    /// candle's block operations on these blocks.
    pub(crate) fn get(&self) -> &dyn QuantizedType {
        self.data.as_ref()
    }

    /// The whole weight as a dense f32 `[out, in]` tensor.
    pub(crate) fn dequantize_tensor(&self, shape: (usize, usize)) -> Result<Tensor> {
        match self.data.dequantize(shape.0 * shape.1)? {
            CpuStorage::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu),
            _ => candle_core::bail!("dequantized blocks are not f32"),
        }
    }
}

/// The `QuantizedType` candle's `QTensor` holds: a handle on huatuo's [`Blocks`], which
/// therefore live at least as long as the tensor and every slice `data()` makes of them.
struct SharedBlocks(Arc<Blocks>);

impl QuantizedType for SharedBlocks {
    fn dtype(&self) -> GgmlDType {
        self.0.data.dtype()
    }

    fn matmul_t(&self, mkn: (usize, usize, usize), lhs: &[f32], dst: &mut [f32]) -> Result<()> {
        self.0.data.matmul_t(mkn, lhs, dst)
    }

    fn matmul_t_f16(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[half::f16],
        dst: &mut [half::f16],
    ) -> Result<()> {
        self.0.data.matmul_t_f16(mkn, lhs, dst)
    }

    fn embedding(&self, ids: &[u32], rows: usize, hidden: usize) -> Result<CpuStorage> {
        self.0.data.embedding(ids, rows, hidden)
    }

    fn dequantize(&self, elem_count: usize) -> Result<CpuStorage> {
        self.0.data.dequantize(elem_count)
    }

    fn storage_size_in_bytes(&self) -> usize {
        self.0.data.storage_size_in_bytes()
    }

    fn as_ptr(&self) -> *const u8 {
        self.0.data.as_ptr()
    }

    fn block_size(&self) -> usize {
        self.0.data.block_size()
    }

    fn from_float(&mut self, xs: &[f32]) {
        // candle calls this only on storage it has just allocated to quantize into, never
        // on a tensor's: blocks that huatuo shares are read-only.
        match Arc::get_mut(&mut self.0) {
            Some(b) => b.data.from_float(xs),
            None => unreachable!("shared blocks are read-only"),
        }
    }

    fn from_float_imatrix(&mut self, xs: &[f32], imatrix_weights: &[f32], n_per_row: usize) {
        match Arc::get_mut(&mut self.0) {
            Some(b) => b.data.from_float_imatrix(xs, imatrix_weights, n_per_row),
            None => unreachable!("shared blocks are read-only"),
        }
    }

    fn size(&self) -> usize {
        self.0.data.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[n, k]` q4_K weight's GGUF bytes, from a fixed pattern.
    fn q4k_bytes(n: usize, k: usize) -> Vec<u8> {
        let vals: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 0.1)
            .collect();
        let w = Tensor::from_vec(vals, (n, k), &Device::Cpu).expect("weight");
        QTensor::quantize(&w, GgmlDType::Q4K)
            .and_then(|q| q.data().map(|d| d.into_owned()))
            .expect("quantize")
    }

    /// Issue 13: a slice candle's `data()` made of a weight's blocks stays valid while that
    /// weight is interleaved for a layer and the layer is dropped. Before, interleaving
    /// freed the blocks behind the still-live tensor (`Blocks::release`), so reading `data`
    /// below read freed memory: a use-after-free from safe code, which Miri reports.
    #[test]
    fn candle_slices_outlive_interleaving() {
        let (n, k) = (64, 512);
        let bytes = q4k_bytes(n, k);
        let weight =
            QWeight::from_bytes(GgmlDType::Q4K, &[n, k], &bytes, &Device::Cpu).expect("weight");
        let QWeight::Candle { tensor, .. } = &weight else {
            panic!("blocks expected");
        };
        let tensor = tensor.clone();
        let data = tensor.data().expect("data");
        let layer =
            crate::model::linear::Linear::quantized(weight.clone(), None, true).expect("layer");
        let interleaved = weight.interleave().expect("interleave");
        assert_eq!(
            matches!(interleaved, QWeight::Interleaved(_)),
            q4k_x8::supported()
        );
        drop((layer, interleaved));
        assert_eq!(&*data, &bytes[..]);
    }

    /// An interleaved weight has the shape, type and size of the blocks it came from and
    /// dequantizes to the same values.
    #[test]
    fn interleaved_weights_keep_shape_and_values() {
        let (n, k) = (16, 256);
        let bytes = q4k_bytes(n, k);
        let blocks =
            QWeight::from_bytes(GgmlDType::Q4K, &[n, k], &bytes, &Device::Cpu).expect("weight");
        let Some(packed) = Q4kX8::pack(&bytes, n, k) else {
            panic!("a [16, 256] q4_K weight fits");
        };
        let packed = QWeight::Interleaved(Arc::new(packed));
        assert_eq!(packed.shape(), blocks.shape());
        assert_eq!(packed.dtype(), GgmlDType::Q4K);
        assert_eq!(packed.bytes(), blocks.bytes());
        let values = |w: &QWeight| {
            w.dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .expect("dequantize")
        };
        assert_eq!(values(&packed), values(&blocks));
    }
}
