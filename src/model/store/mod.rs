//! Where the weights are kept, in one place (issue 21): reading the checkpoint's tensors
//! ([`weights`]), the quantization choices ([`quant`]), the quantized GGUF cache file and
//! its writer ([`gguf`], [`gguf_write`]), quantized weights in memory or memory-mapped
//! (`qweight`, `mapped`). The network itself (config, checkpoint, CLIP, projector, decoder,
//! LLaVA, KV cache) is the rest of `model`.

pub mod gguf;
pub mod gguf_write;
pub(crate) mod mapped;
pub mod quant;
pub(crate) mod qweight;
pub mod weights;
