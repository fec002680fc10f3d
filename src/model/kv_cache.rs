//! Per-layer key/value cache of the decoder. Its length is the number of positions already
//! run, so a forward pass continues at `len()`; `truncate` and `reset` serve prefix reuse
//! across chat turns (issue 6).

use candle_core::{DType, Result, Tensor};

/// Positions a layer's buffers grow by at least (and start with).
const MIN_GROWTH: usize = 256;

/// Keys and values `[1, kv_heads, len, head_dim]` for every layer, written in place into
/// buffers with room to grow: a decode step copies only its own position, not the whole
/// sequence so far (issue 6). Not `Clone`: two caches must never share a buffer that one
/// of them writes into.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
    len: usize,
    /// Capacity that growth ahead of need stops at (the model's context length): a
    /// conversation near the end of the context does not reserve half as much again.
    limit: usize,
    /// The dtype keys and values are stored in, when not that of the activations (f16 for
    /// quantized models: [`KvCache::storing`]).
    store: Option<DType>,
}

/// One layer's buffers `[1, kv_heads, capacity, head_dim]`; positions `0..len` are valid.
#[derive(Debug)]
struct Layer {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl Layer {
    fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }

    /// Buffers like `k`'s (and `v`'s) with room for `capacity` positions, holding `keep`
    /// positions of `old`.
    fn with_capacity(k: &Tensor, v: &Tensor, capacity: usize, old: Option<&Layer>) -> Result<Self> {
        let buffer = |t: &Tensor| -> Result<Tensor> {
            let (b, h, _, d) = t.dims4()?;
            Tensor::zeros((b, h, capacity, d), t.dtype(), t.device())
        };
        let layer = Self {
            k: buffer(k)?,
            v: buffer(v)?,
            len: 0,
        };
        if let Some(old) = old.filter(|o| o.len > 0) {
            layer
                .k
                .slice_set(&old.k.narrow(2, 0, old.len)?.contiguous()?, 2, 0)?;
            layer
                .v
                .slice_set(&old.v.narrow(2, 0, old.len)?.contiguous()?, 2, 0)?;
            return Ok(Self {
                len: old.len,
                ..layer
            });
        }
        Ok(layer)
    }
}

impl KvCache {
    /// An empty cache for a decoder of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self::with_limit(num_layers, usize::MAX)
    }

    /// An empty cache whose buffers grow ahead of need only up to `limit` positions (they
    /// still hold whatever is appended beyond it).
    pub fn with_limit(num_layers: usize, limit: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            limit,
            store: None,
        }
    }

    /// This cache, storing keys and values in `dtype` (appends are converted to it) rather
    /// than in the activations' dtype.
    pub fn storing(self, dtype: DType) -> Self {
        Self {
            store: Some(dtype),
            ..self
        }
    }

    /// The dtype keys and values are stored in (`None`: that of the activations).
    pub fn dtype(&self) -> Option<DType> {
        self.store
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends this step's keys and values to `layer` and returns views of the whole
    /// sequence so far (valid until the next append to that layer).
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
        let (k, v) = match self.store {
            Some(dtype) => (k.to_dtype(dtype)?, v.to_dtype(dtype)?),
            None => (k.clone(), v.clone()),
        };
        let n = k.dim(2)?;
        let needed = slot.as_ref().map_or(0, |l| l.len) + n;
        if slot.as_ref().is_none_or(|l| l.capacity() < needed) {
            let grown = slot.as_ref().map_or(0, |l| l.capacity() * 3 / 2);
            let capacity = grown.max(MIN_GROWTH).min(self.limit).max(needed);
            *slot = Some(Layer::with_capacity(&k, &v, capacity, slot.as_ref())?);
        }
        let Some(l) = slot.as_mut() else {
            candle_core::bail!("cache slot for layer {layer} was not allocated");
        };
        l.k.slice_set(&k.contiguous()?, 2, l.len)?;
        l.v.slice_set(&v.contiguous()?, 2, l.len)?;
        l.len += n;
        Ok((l.k.narrow(2, 0, l.len)?, l.v.narrow(2, 0, l.len)?))
    }

    /// Records that a forward pass of `n` positions has completed.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Keeps the first `len` positions (a no-op if the cache is shorter); later appends
    /// overwrite the rest in place.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        if len == 0 {
            self.reset();
            return Ok(());
        }
        for l in self.layers.iter_mut().flatten() {
            l.len = l.len.min(len);
        }
        self.len = len;
        Ok(())
    }

    /// Forgets everything (and frees the buffers).
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|s| *s = None);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn step(start: usize, n: usize) -> Tensor {
        let vals: Vec<f32> = (0..2 * n * 3).map(|i| (start * 1000 + i) as f32).collect();
        Tensor::from_vec(vals, (1, 2, n, 3), &Device::Cpu).expect("step")
    }

    /// Buffers grow by half ahead of need until the limit, then only as far as appended.
    #[test]
    fn growth_ahead_of_need_stops_at_the_limit() {
        let mut cache = KvCache::with_limit(1, 300);
        let capacity = |c: &KvCache| c.layers[0].as_ref().map(Layer::capacity);
        let mut seen = Vec::new();
        for n in [200usize, 100, 1] {
            let t = step(0, n);
            cache.append(0, &t, &t).expect("append");
            cache.advance(n);
            seen.push(capacity(&cache));
        }
        // 256 at first (MIN_GROWTH), then 384 capped at 300, then exactly the 301 held.
        assert_eq!(seen, [Some(256), Some(300), Some(301)]);
        let mut unlimited = KvCache::new(1);
        for n in [200usize, 100] {
            let t = step(0, n);
            unlimited.append(0, &t, &t).expect("append");
        }
        assert_eq!(capacity(&unlimited), Some(384));
    }

    /// A cache storing f16 converts what is appended and hands out f16 views of it.
    #[test]
    fn a_half_precision_cache_stores_appends_rounded() {
        let mut cache = KvCache::new(1).storing(DType::F16);
        assert_eq!(cache.dtype(), Some(DType::F16));
        let t = (step(0, 3) / 7.0).expect("step");
        let (k, v) = cache.append(0, &t, &t).expect("append");
        assert_eq!((k.dtype(), v.dtype()), (DType::F16, DType::F16));
        let want = t
            .to_dtype(DType::F16)
            .and_then(|x| x.to_dtype(DType::F32))
            .and_then(|x| x.squeeze(0))
            .and_then(|x| x.to_vec3::<f32>())
            .expect("rounded");
        let got = k
            .to_dtype(DType::F32)
            .and_then(|x| x.squeeze(0))
            .and_then(|x| x.to_vec3::<f32>())
            .expect("k");
        assert_eq!(got, want);
        assert_ne!(
            got,
            t.squeeze(0).and_then(|x| x.to_vec3::<f32>()).expect("t")
        );
    }

    /// Appends across growth, truncation and re-append give what concatenation would.
    #[test]
    fn appends_equal_concatenation_across_growth_and_truncation() {
        let mut cache = KvCache::new(1);
        let mut want: Vec<Tensor> = Vec::new();
        for (i, n) in [200usize, 1, 1, 100, 300].into_iter().enumerate() {
            let t = step(i, n);
            let (k, v) = cache
                .append(0, &t, &(&t * 2.0).expect("v"))
                .expect("append");
            cache.advance(n);
            want.push(t);
            let cat = Tensor::cat(&want, 2).expect("cat");
            assert_eq!(
                k.squeeze(0).expect("sq").to_vec3::<f32>().expect("k"),
                cat.squeeze(0).expect("sq").to_vec3::<f32>().expect("cat")
            );
            let v2 = (&cat * 2.0).expect("v2");
            assert_eq!(
                v.squeeze(0).expect("sq").to_vec3::<f32>().expect("v"),
                v2.squeeze(0).expect("sq").to_vec3::<f32>().expect("v2")
            );
        }
        cache.truncate(150).expect("truncate");
        assert_eq!(cache.len(), 150);
        let t = step(9, 4);
        let (k, _) = cache.append(0, &t, &t).expect("append");
        let head = Tensor::cat(&want, 2)
            .expect("cat")
            .narrow(2, 0, 150)
            .expect("narrow");
        let cat = Tensor::cat(&[&head, &t], 2).expect("cat");
        assert_eq!(
            k.squeeze(0).expect("sq").to_vec3::<f32>().expect("k"),
            cat.squeeze(0).expect("sq").to_vec3::<f32>().expect("cat")
        );
    }
}
