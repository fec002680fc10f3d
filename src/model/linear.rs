//! The one linear-layer type of every network in huatuo, so that quantized weights can replace
//! dense ones in a single place (issue 6) without touching the architectures.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = x Wᵀ + b` over the last dimension, with PyTorch's `[out, in]` weight layout.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
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
        Ok(Self {
            inner: candle_nn::Linear::new(weight, bias),
        })
    }

    /// A bias-free layer over an existing weight (tied embeddings).
    pub fn from_weight(weight: Tensor) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, None),
        }
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward(xs)
    }
}
