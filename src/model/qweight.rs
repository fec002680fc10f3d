//! A quantized weight as huatuo holds it ([`QWeight`]): candle's `QTensor` for the
//! operations candle runs, and on a CPU the GGML blocks behind it ([`Blocks`]), which
//! huatuo's kernels read directly, which may lie in a memory-mapped cache file, and which
//! are released once a layer runs on an interleaved copy.

use std::sync::{Arc, PoisonError, RwLock};

use candle_core::quantized::{GgmlDType, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, Device, Result, Tensor};

use super::mapped::{self, MappedFile};
use super::q4k_x8::{self, Q4kX8};

/// A quantized weight as read from a GGUF file or built in memory: candle's tensor and, on a
/// CPU, the blocks behind it.
#[derive(Debug, Clone)]
pub(crate) struct QWeight {
    pub tensor: Arc<QTensor>,
    pub blocks: Option<Arc<Blocks>>,
    /// A q4_K weight interleaved as it was read ([`QWeight::from_bytes_in`]); its `blocks`
    /// are then empty.
    pub packed: Option<Arc<Q4kX8>>,
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
            return Ok(Self {
                tensor: Arc::new(QTensor::new(storage, shape)?),
                blocks: None,
                packed: None,
            });
        }
        let blocks = dtype.from_data(std::borrow::Cow::Borrowed(data));
        Self::with_blocks(dtype, shape, Some(blocks), false)
    }

    /// A CPU weight over `blocks` (in a mapped file when `mapped`; none for an interleaved
    /// weight), shared by candle's tensor and huatuo's kernels.
    fn with_blocks(
        dtype: GgmlDType,
        shape: &[usize],
        blocks: Option<Box<dyn QuantizedType>>,
        mapped: bool,
    ) -> Result<Self> {
        let blocks = Arc::new(Blocks {
            dtype,
            block_size: dtype.block_size(),
            data: RwLock::new(blocks),
            mapped,
        });
        let storage = QStorage::Cpu(Box::new(SharedBlocks(blocks.clone())));
        Ok(Self {
            tensor: Arc::new(QTensor::new(storage, shape)?),
            blocks: Some(blocks),
            packed: None,
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
            Some(blocks) => Self::with_blocks(dtype, shape, Some(blocks), true),
            None => Self::from_bytes_in(dtype, shape, data, device, interleave),
        }
    }

    /// Whether the blocks are read in place from a mapped file.
    pub(crate) fn is_in_place(&self) -> bool {
        self.blocks.as_ref().is_some_and(|b| b.mapped)
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
            Some(p) => Self::interleaved(Arc::new(p)),
            None => Self::from_bytes(dtype, shape, data, device),
        }
    }

    /// An interleaved q4_K weight, with a candle tensor of its shape whose blocks are empty.
    pub(super) fn interleaved(packed: Arc<Q4kX8>) -> Result<Self> {
        let shape = [packed.rows_count(), packed.cols()];
        let mut weight = Self::with_blocks(GgmlDType::Q4K, &shape, None, false)?;
        weight.packed = Some(packed);
        Ok(weight)
    }
}

/// The CPU blocks of one quantized weight, shared between candle's `QTensor` (through
/// [`SharedBlocks`]) and huatuo's own multiplications, and releasable once candle has
/// repacked them.
pub(crate) struct Blocks {
    dtype: GgmlDType,
    block_size: usize,
    data: RwLock<Option<Box<dyn QuantizedType>>>,
    /// Whether `data` is read in place from a mapped file ([`QWeight::from_mapped`]).
    mapped: bool,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Blocks({:?}, {} bytes)",
            self.dtype,
            self.size_in_bytes()
        )
    }
}

impl Blocks {
    pub(super) fn with<R>(&self, f: impl FnOnce(&dyn QuantizedType) -> Result<R>) -> Result<R> {
        let guard = self.data.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(b) => f(b.as_ref()),
            None => candle_core::bail!(
                "the {:?} blocks of this weight were released after repacking",
                self.dtype
            ),
        }
    }

    /// `f` over the blocks' raw GGML bytes.
    pub(super) fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.with(|b| {
            // SAFETY: `as_ptr` and `storage_size_in_bytes` describe the blocks' own bytes,
            // which live as long as the read guard `with` holds.
            #[allow(unsafe_code)]
            let bytes =
                unsafe { std::slice::from_raw_parts(b.as_ptr(), b.storage_size_in_bytes()) };
            f(bytes)
        })
    }

    #[cfg(test)]
    pub(super) fn is_released(&self) -> bool {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    pub(super) fn release(&self) {
        *self.data.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub(super) fn size_in_bytes(&self) -> usize {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|b| b.storage_size_in_bytes())
            .unwrap_or_default()
    }

    /// The whole weight as a dense f32 `[out, in]` tensor.
    pub(super) fn dequantize_tensor(&self, shape: (usize, usize)) -> Result<Tensor> {
        let storage = self.with(|b| b.dequantize(shape.0 * shape.1))?;
        match storage {
            CpuStorage::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu),
            _ => candle_core::bail!("dequantized blocks are not f32"),
        }
    }
}

/// The `QuantizedType` candle's `QTensor` holds: a handle on huatuo's [`Blocks`]. After
/// a release it reports zero bytes at a dangling (never dereferenced) address and fails
/// every computation, which no repacked layer asks for (it runs on its interleaved copy).
struct SharedBlocks(Arc<Blocks>);

impl QuantizedType for SharedBlocks {
    fn dtype(&self) -> GgmlDType {
        self.0.dtype
    }

    fn matmul_t(&self, mkn: (usize, usize, usize), lhs: &[f32], dst: &mut [f32]) -> Result<()> {
        self.0.with(|b| b.matmul_t(mkn, lhs, dst))
    }

    fn matmul_t_f16(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[half::f16],
        dst: &mut [half::f16],
    ) -> Result<()> {
        self.0.with(|b| b.matmul_t_f16(mkn, lhs, dst))
    }

    fn embedding(&self, ids: &[u32], rows: usize, hidden: usize) -> Result<CpuStorage> {
        self.0.with(|b| b.embedding(ids, rows, hidden))
    }

    fn dequantize(&self, elem_count: usize) -> Result<CpuStorage> {
        self.0.with(|b| b.dequantize(elem_count))
    }

    fn storage_size_in_bytes(&self) -> usize {
        self.0.size_in_bytes()
    }

    fn as_ptr(&self) -> *const u8 {
        let guard = self.0.data.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(b) => b.as_ptr(),
            None => std::ptr::NonNull::<u64>::dangling().as_ptr() as *const u8,
        }
    }

    fn block_size(&self) -> usize {
        self.0.block_size
    }

    fn from_float(&mut self, xs: &[f32]) {
        let mut guard = self.0.data.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = guard.as_mut() {
            b.from_float(xs);
        }
    }

    fn from_float_imatrix(&mut self, xs: &[f32], imatrix_weights: &[f32], n_per_row: usize) {
        let mut guard = self.0.data.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = guard.as_mut() {
            b.from_float_imatrix(xs, imatrix_weights, n_per_row);
        }
    }

    fn size(&self) -> usize {
        self.0.size_in_bytes()
    }
}
