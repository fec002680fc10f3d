//! Quantized blocks read in place from a memory-mapped cache file (issue 6: "later loads
//! memory-map it").
//!
//! The quantized kernels (`q8_0.rs`, candle's block kernels) read GGUF blocks as they are
//! laid out in the file, so a reload can hand them the file's pages instead of copying every
//! tensor into fresh memory: nothing is read or zeroed up front, the pages are shared with
//! the page cache (a second huatuo process, or a reload after a swap, finds them there), and
//! where the page cache holds the file in large folios the kernel maps them as huge pages,
//! as it does for llama.cpp's memory-mapped GGUF files.
//!
//! The file must not be changed in place while mapped: huatuo's cache writer renames a
//! complete new file over the old one, which leaves the mapped inode intact. The same
//! contract as candle's, safetensors' and llama.cpp's memory-mapped weights.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::{GgmlDType, QuantizedType};
use candle_core::{CpuStorage, Result};
use half::f16;

/// A whole file mapped read-only.
pub(crate) struct MappedFile(memmap2::Mmap);

impl MappedFile {
    /// Maps `path`. With `populate` its pages are mapped up front (`MAP_POPULATE` on Linux,
    /// as llama.cpp maps its models): one pass over the page cache at load instead of a
    /// page fault every 4 KiB during the first image encode and prefill. Without, the
    /// kernel is only asked to read ahead: for a file whose bytes are mostly copied
    /// (interleaved q4_K), mapping them all first would hold the whole file in the
    /// process's memory at once (4.59 → 4.86 GB peak for the 7B) and add a pass over it.
    pub fn open(path: &Path, populate: bool) -> std::io::Result<Arc<Self>> {
        let file = std::fs::File::open(path)?;
        let mut options = memmap2::MmapOptions::new();
        if populate {
            options.populate();
        }
        // SAFETY: see the module docs: cache files are replaced by rename, never rewritten
        // in place, so the mapped bytes do not change while they are in use.
        let map = unsafe { options.map(&file)? };
        #[cfg(unix)]
        if !populate {
            // Advice only: a kernel that ignores it loses nothing.
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
        Ok(Arc::new(Self(map)))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lets the pages of `range` go from this mapping (they stay in the page cache), once
    /// their bytes have been copied: otherwise they would count in the process's memory
    /// for as long as the mapping lives.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        {
            const PAGE: usize = 4096;
            let start = range.start.next_multiple_of(PAGE);
            let end = range.end.min(self.0.len()) / PAGE * PAGE;
            if end > start {
                // SAFETY: the mapping is shared and read-only, so dropping its pages loses
                // nothing: a later access reads them from the file again (which also covers
                // a neighbour's page where the system's pages are larger than 4 KiB).
                let _ = unsafe {
                    self.0.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

/// The blocks of `dtype` at `range` of `file`, in place. `None` for a type other than
/// q8_0 and the k-quants, or a range that is not whole, aligned blocks inside the file.
pub(crate) fn blocks(
    file: &Arc<MappedFile>,
    dtype: GgmlDType,
    range: std::ops::Range<usize>,
) -> Option<Box<dyn QuantizedType>> {
    fn make<T: GgmlType + Send + Sync + 'static>(
        file: &Arc<MappedFile>,
        range: std::ops::Range<usize>,
    ) -> Option<Box<dyn QuantizedType>> {
        let size = std::mem::size_of::<T>();
        let bytes = file.bytes().get(range.clone())?;
        if !bytes.len().is_multiple_of(size)
            || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        {
            return None;
        }
        Some(Box::new(MappedBlocks::<T> {
            file: file.clone(),
            start: range.start,
            len: bytes.len() / size,
            _block: PhantomData,
        }))
    }
    match dtype {
        GgmlDType::Q8_0 => make::<k_quants::BlockQ8_0>(file, range),
        GgmlDType::Q4K => make::<k_quants::BlockQ4K>(file, range),
        GgmlDType::Q5K => make::<k_quants::BlockQ5K>(file, range),
        GgmlDType::Q6K => make::<k_quants::BlockQ6K>(file, range),
        _ => None,
    }
}

/// `len` blocks of `T` at byte `start` of a mapped file.
struct MappedBlocks<T> {
    file: Arc<MappedFile>,
    start: usize,
    len: usize,
    _block: PhantomData<T>,
}

impl<T: GgmlType> MappedBlocks<T> {
    fn as_slice(&self) -> &[T] {
        // SAFETY: `blocks` checked that the range lies in the file and is aligned for `T`;
        // the blocks are plain `repr(C)` integers and f16 bit patterns, valid for any
        // bytes; the map lives as long as `self.file`.
        unsafe {
            std::slice::from_raw_parts(
                self.file.bytes().as_ptr().add(self.start) as *const T,
                self.len,
            )
        }
    }
}

/// candle's `QuantizedType` for `Vec<T>`, over the mapped slice.
impl<T: GgmlType + Send + Sync> QuantizedType for MappedBlocks<T> {
    fn dtype(&self) -> GgmlDType {
        T::DTYPE
    }

    fn matmul_t(&self, mkn: (usize, usize, usize), lhs: &[f32], dst: &mut [f32]) -> Result<()> {
        k_quants::matmul(mkn, lhs, self.as_slice(), dst)
    }

    fn matmul_t_f16(&self, mkn: (usize, usize, usize), lhs: &[f16], dst: &mut [f16]) -> Result<()> {
        k_quants::matmul_f16(mkn, lhs, self.as_slice(), dst)
    }

    fn embedding(&self, ids: &[u32], rows: usize, hidden: usize) -> Result<CpuStorage> {
        if !hidden.is_multiple_of(T::BLCK_SIZE) || self.len != rows * (hidden / T::BLCK_SIZE) {
            candle_core::bail!(
                "a mapped {:?} table of {} blocks is not {rows} rows of {hidden}",
                T::DTYPE,
                self.len
            );
        }
        let row_blocks = hidden / T::BLCK_SIZE;
        let blocks = self.as_slice();
        let mut out = vec![0f32; ids.len() * hidden];
        for (dst, &id) in out.chunks_exact_mut(hidden).zip(ids) {
            let row = id as usize;
            if row >= rows {
                candle_core::bail!("embedding id {row} is out of range for {rows} rows");
            }
            T::to_float(&blocks[row * row_blocks..(row + 1) * row_blocks], dst);
        }
        Ok(CpuStorage::F32(out))
    }

    fn dequantize(&self, elem_count: usize) -> Result<CpuStorage> {
        let mut ys = vec![0f32; elem_count];
        T::to_float(self.as_slice(), &mut ys);
        Ok(CpuStorage::F32(ys))
    }

    fn storage_size_in_bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr() as *const u8
    }

    fn block_size(&self) -> usize {
        T::BLCK_SIZE
    }

    fn from_float(&mut self, _: &[f32]) {
        // candle calls this only on storage it has just allocated to quantize into.
        unreachable!("mapped weights are read-only")
    }

    fn from_float_imatrix(&mut self, _: &[f32], _: &[f32], _: usize) {
        unreachable!("mapped weights are read-only")
    }

    fn size(&self) -> usize {
        self.storage_size_in_bytes()
    }
}
