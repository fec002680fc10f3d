//! Choosing the next token from logits, as transformers' `generate` does for the reference CLI
//! (huatuo-reference.md §4.1): repetition penalty over *generated* tokens only → EOS masked
//! until `min_new_tokens` → temperature → top-k → top-p → softmax → draw. Temperature 0 is
//! greedy (first maximum, like `argmax`). The RNG is ChaCha20 from a seed, so a given seed gives
//! the same answer on every platform and version.

use crate::protocol::SamplingParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Stateful sampler for one answer.
pub struct Sampler {
    params: SamplingParams,
    eos: u32,
    rng: ChaCha20Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams, eos: u32) -> Self {
        let rng = ChaCha20Rng::seed_from_u64(params.seed);
        Self { params, eos, rng }
    }

    /// Picks the next token given the logits of the last position and the tokens generated
    /// so far in this answer. `logits` is modified in place.
    pub fn next(&mut self, logits: &mut [f32], generated: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = generated.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(s) = logits.get_mut(t as usize) {
                    *s = if *s < 0.0 {
                        *s * p.repetition_penalty
                    } else {
                        *s / p.repetition_penalty
                    };
                }
            }
        }
        if generated.len() < p.min_new_tokens {
            if let Some(s) = logits.get_mut(self.eos as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        if p.is_greedy() {
            return argmax(logits);
        }
        let t = p.temperature;
        logits.iter_mut().for_each(|s| *s /= t);
        if p.top_k > 0 && p.top_k < logits.len() {
            let mut sorted: Vec<f32> = logits.to_vec();
            let k = p.top_k;
            sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            logits
                .iter_mut()
                .filter(|s| **s < kth)
                .for_each(|s| *s = f32::NEG_INFINITY);
        }
        let mut probs = softmax(logits);
        if p.top_p < 1.0 {
            top_p_filter(&mut probs, p.top_p);
        }
        let total: f64 = probs.iter().map(|&x| f64::from(x)).sum();
        let mut u = self.rng.random::<f64>() * total;
        let mut last = 0;
        for (i, &x) in probs.iter().enumerate() {
            if x > 0.0 {
                last = i;
                u -= f64::from(x);
                if u < 0.0 {
                    return i as u32;
                }
            }
        }
        last as u32
    }
}

/// Index of the first maximum (NaN never wins).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &x) in xs.iter().enumerate() {
        if x > best_v {
            best_v = x;
            best = i;
        }
    }
    best as u32
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// transformers' TopPLogitsWarper on probabilities: sorted ascending, drop the tokens whose
/// cumulative probability is `<= 1 - top_p`, always keeping the most likely one.
fn top_p_filter(probs: &mut [f32], top_p: f32) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let mut cum = 0.0f32;
    let n = order.len();
    let mut drop = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum <= 1.0 - top_p && rank + 1 < n {
            drop.push(i);
        }
    }
    for i in drop {
        probs[i] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = Sampler::new(greedy(), 9);
        assert_eq!(s.next(&mut [0.0, 3.0, 3.0, 1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_applies_to_generated_tokens_only() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..greedy()
        };
        let mut s = Sampler::new(p, 9);
        // token 1 (3.0) was generated -> 1.5 < token 2's 2.0
        assert_eq!(s.next(&mut [0.0, 3.0, 2.0], &[1]), 2);
        // a negative logit is multiplied: -1 -> -2 < -1.5
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..greedy()
        };
        let mut s = Sampler::new(p, 9);
        assert_eq!(s.next(&mut [-1.0, -1.5], &[0]), 1);
    }

    #[test]
    fn eos_is_masked_before_min_new_tokens() {
        let mut s = Sampler::new(greedy(), 0);
        assert_eq!(s.next(&mut [5.0, 1.0], &[]), 1);
        assert_eq!(s.next(&mut [5.0, 1.0], &[1]), 0);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_is_reproducible() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            repetition_penalty: 1.0,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(p, 99);
        assert_eq!(s.next(&mut [0.1, 0.5, 0.2], &[]), 1);
        let p = SamplingParams {
            temperature: 1.0,
            repetition_penalty: 1.0,
            seed: 7,
            ..SamplingParams::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone(), 99);
            (0..20)
                .map(|_| s.next(&mut [0.0; 8], &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p));
        assert!(a.iter().any(|&t| t != a[0]), "uniform draws vary: {a:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut probs = vec![0.05, 0.15, 0.5, 0.3];
        top_p_filter(&mut probs, 0.7);
        assert_eq!(probs, vec![0.0, 0.0, 0.5, 0.3]);
    }
}
