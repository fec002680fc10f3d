//! Per-layer key/value cache of the decoder. Its length is the number of positions already
//! run, so a forward pass continues at `len()`; `truncate` and `reset` serve prefix reuse
//! across chat turns (issue 6).

use candle_core::{Result, Tensor};

/// Keys and values `[1, kv_heads, len, head_dim]` for every layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a decoder of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends this step's keys and values to `layer` and returns the whole sequence so far.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("no cache slot for layer {layer}")))?;
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
            None => (k.clone(), v.clone()),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Records that a forward pass of `n` positions has completed.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Keeps the first `len` positions (a no-op if the cache is shorter). The kept keys and
    /// values are views of the old storage until the next append copies them.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        if len == 0 {
            self.reset();
            return Ok(());
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(2, 0, len)?;
            *v = v.narrow(2, 0, len)?;
        }
        self.len = len;
        Ok(())
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|s| *s = None);
        self.len = 0;
    }
}
