//! The decode attention over the f16 KV cache in plain Rust: the reference the SIMD loops are
//! tested against, and what runs where there are none (aarch64 today), still reading each
//! key and value row where it is, widened to f32 one value at a time.

use half::f16;

/// One KV head: `ctx[g] = softmax(q[g] · kᵀ · scale) · v` for its `groups` query rows
/// (lengths as `super::head` checks them: `scores` holds `groups` rows of `stride ≥ t`).
pub(super) fn head(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    (groups, t, d): (usize, usize, usize),
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    let stride = scores.len() / groups.max(1);
    for g in 0..groups {
        let qg = &q[g * d..(g + 1) * d];
        let row = &mut scores[g * stride..(g + 1) * stride];
        for (p, s) in row[..t].iter_mut().enumerate() {
            let kp = &k[p * d..(p + 1) * d];
            *s = qg
                .iter()
                .zip(kp)
                .map(|(&a, &b)| a * b.to_f32())
                .sum::<f32>()
                * scale;
        }
        crate::kernels::softmax::scalar(row, t);
        let out = &mut ctx[g * d..(g + 1) * d];
        out.fill(0.0);
        for (p, &prob) in row[..t].iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&v[p * d..(p + 1) * d]) {
                *o += prob * x.to_f32();
            }
        }
    }
}
