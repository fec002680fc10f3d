//! expand2square followed by Pillow's bicubic resize, computed without building the square
//! (issue 15): the padding is one constant colour, so only the output pixels whose bicubic
//! support reaches the image mix with it, and the rest are constants. A 1×100000 image is
//! padded to a 100000² canvas (30 GB) by llava's `expand2square`; here it costs a few
//! megabytes whatever the aspect ratio, and the bytes are those of
//! [`pillow_resize_bicubic`](super::pillow_resize_bicubic)`(`[`expand_to_square`](super::expand_to_square)`(..))`.
//!
//! Why this is exact: Pillow's sums are integers (fixed-point taps, `resample.rs`), so a sum
//! over a window that is part background splits into `bg × (Σ taps over the background)` plus
//! the image's terms, in any order. The horizontal pass is clipped to u8 per canvas row before
//! the vertical pass, as in Pillow, and the vertical pass over a column whose horizontal values
//! are the same on every row is `value × Σ taps`.

use image::RgbImage;

use super::resample::{clip8, precompute_coeffs, Taps, PRECISION_BITS};

/// Pillow's rounding term, `1 << (PRECISION_BITS - 1)`.
const ROUND: i64 = 1 << (PRECISION_BITS - 1);

/// Taps that copy the input: what Pillow does on an axis whose size does not change (it skips
/// the pass; `clip8(ROUND + p << PRECISION_BITS)` is `p`).
fn identity_taps(n: u32) -> Taps {
    Taps {
        ksize: 1,
        bounds: (0..n as usize).map(|i| (i, 1)).collect(),
        k: vec![1 << PRECISION_BITS; n as usize],
    }
}

fn taps(in_size: u32, out_size: u32) -> Taps {
    if in_size == out_size {
        identity_taps(out_size)
    } else {
        precompute_coeffs(in_size, out_size)
    }
}

/// One output index whose window reaches the image: its index, its taps over image indices
/// (`(index in the image, tap)`), and the sum of its taps over the background.
struct Touching {
    out: usize,
    image_taps: Vec<(usize, i64)>,
    background_weight: i64,
}

/// The output indices of `t` whose windows overlap `[start, start + len)` of the input.
fn touching(t: &Taps, start: usize, len: usize) -> Vec<Touching> {
    let mut out = Vec::new();
    for (i, &(min, n)) in t.bounds.iter().enumerate() {
        let k = &t.k[i * t.ksize..][..n];
        let total: i64 = k.iter().map(|&v| i64::from(v)).sum();
        let image_taps: Vec<(usize, i64)> = (min.max(start)..(min + n).min(start + len))
            .map(|x| (x - start, i64::from(k[x - min])))
            .collect();
        if !image_taps.is_empty() {
            let inside: i64 = image_taps.iter().map(|&(_, v)| v).sum();
            out.push(Touching {
                out: i,
                image_taps,
                background_weight: total - inside,
            });
        }
    }
    out
}

/// The sum of each output index's taps.
fn tap_sums(t: &Taps) -> Vec<i64> {
    t.bounds
        .iter()
        .enumerate()
        .map(|(i, &(_, n))| t.k[i * t.ksize..][..n].iter().map(|&v| i64::from(v)).sum())
        .collect()
}

/// `pillow_resize_bicubic(&expand_to_square(img, background), out_w, out_h)`, byte for byte,
/// in memory proportional to the output and the image, never to the square.
pub(super) fn resize_square_padded(
    img: &RgbImage,
    background: [u8; 3],
    out_w: u32,
    out_h: u32,
) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.max(h);
    if w == 0 || h == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(out_w, out_h);
    }
    if (side, side) == (out_w, out_h) {
        // Pillow copies: the square is the output, as small as the output.
        return super::expand_to_square(img, background);
    }
    let (x0, y0) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    let (x0, y0, w, h) = (x0 as usize, y0 as usize, w as usize, h as usize);
    let horiz = taps(side, out_w);
    let vert = taps(side, out_h);
    let bg = background.map(i64::from);

    // A canvas row of background, after the horizontal pass.
    let h_sums = tap_sums(&horiz);
    let bg_row: Vec<[i64; 3]> = h_sums
        .iter()
        .map(|&s| bg.map(|b| i64::from(clip8(ROUND + b * s))))
        .collect();
    let cols = touching(&horiz, x0, w);
    let rows = touching(&vert, y0, h);
    let v_sums = tap_sums(&vert);

    // Vertical sums of the (row, column) pairs that reach the image, started with the
    // background rows' share.
    let mut acc: Vec<[i64; 3]> = Vec::with_capacity(rows.len() * cols.len());
    for r in &rows {
        for c in &cols {
            let v = bg_row[c.out];
            acc.push([0, 1, 2].map(|ch| ROUND + v[ch] * r.background_weight));
        }
    }
    let src = img.as_raw();
    let mut line = vec![[0i64; 3]; cols.len()];
    let mut first = 0; // the first touching output row whose window has not ended
    for iy in 0..h {
        let px = &src[iy * w * 3..][..w * 3];
        for (value, c) in line.iter_mut().zip(&cols) {
            let mut ss = bg.map(|b| ROUND + b * c.background_weight);
            for &(ix, k) in &c.image_taps {
                for (ch, s) in ss.iter_mut().enumerate() {
                    *s += i64::from(px[ix * 3 + ch]) * k;
                }
            }
            *value = ss.map(|s| i64::from(clip8(s)));
        }
        // Windows move forward with the output index, so the rows using image row `iy`
        // are consecutive.
        while first < rows.len() && rows[first].image_taps.last().is_some_and(|&(i, _)| i < iy) {
            first += 1;
        }
        for (ri, r) in rows.iter().enumerate().skip(first) {
            // `image_taps` covers consecutive image rows, starting at its first entry's.
            let start = r.image_taps.first().map_or(usize::MAX, |&(i, _)| i);
            if start > iy {
                break;
            }
            let Some(&(_, k)) = r.image_taps.get(iy - start) else {
                continue;
            };
            let a = &mut acc[ri * cols.len()..][..cols.len()];
            for (sum, value) in a.iter_mut().zip(&line) {
                for ch in 0..3 {
                    sum[ch] += value[ch] * k;
                }
            }
        }
    }

    let mut out = RgbImage::new(out_w, out_h);
    let row_bytes = out_w as usize * 3;
    let bytes: &mut [u8] = out.as_mut();
    for (yy, out_row) in bytes.chunks_exact_mut(row_bytes).enumerate() {
        for (xx, o) in out_row.chunks_exact_mut(3).enumerate() {
            for ch in 0..3 {
                o[ch] = clip8(ROUND + bg_row[xx][ch] * v_sums[yy]);
            }
        }
    }
    for (ri, r) in rows.iter().enumerate() {
        for (ci, c) in cols.iter().enumerate() {
            let o = &mut bytes[r.out * row_bytes + c.out * 3..][..3];
            for ch in 0..3 {
                o[ch] = clip8(acc[ri * cols.len() + ci][ch]);
            }
        }
    }
    out
}

/// The `width`×`height` region at (`left`, `top`) of `expand_to_square(img, background)`,
/// which it must lie inside, without building the square.
pub(super) fn square_region(
    img: &RgbImage,
    background: [u8; 3],
    left: u32,
    top: u32,
    width: u32,
    height: u32,
) -> RgbImage {
    let (w, h) = img.dimensions();
    let (x0, y0) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    RgbImage::from_fn(width, height, |x, y| {
        let (cx, cy) = (left + x, top + y);
        if (x0..x0 + w).contains(&cx) && (y0..y0 + h).contains(&cy) {
            *img.get_pixel(cx - x0, cy - y0)
        } else {
            image::Rgb(background)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{expand_to_square, pillow_resize_bicubic};
    use super::*;

    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for p in &mut px {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *p = (s >> 56) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn equals_padding_then_resizing() {
        let shapes = [
            (1, 1),
            (1, 50),
            (50, 1),
            (3, 700),
            (700, 3),
            (37, 29),
            (29, 37),
            (336, 200),
            (200, 336),
            (1, 336),
            (336, 1),
            (64, 64),
            (2, 5),
            (401, 400),
        ];
        for (i, &(w, h)) in shapes.iter().enumerate() {
            let img = noise(w, h, i as u64);
            let square = expand_to_square(&img, [122, 116, 104]);
            for (ow, oh) in [
                (336, 336),
                (7, 7),
                (800, 800),
                (336, 100),
                (700, 336),
                (5, 900),
            ] {
                let want = pillow_resize_bicubic(&square, ow, oh);
                let got = resize_square_padded(&img, [122, 116, 104], ow, oh);
                assert!(
                    got == want,
                    "{w}x{h} -> {ow}x{oh}: differs from expand_to_square + resize"
                );
            }
        }
    }

    #[test]
    fn region_equals_cropping_the_square() {
        for (w, h) in [(3, 40), (40, 3), (9, 9)] {
            let img = noise(w, h, 3);
            let square = expand_to_square(&img, [1, 2, 3]);
            let side = w.max(h);
            for (l, t, cw, ch) in [
                (0, 0, side, side),
                (1, 2, side - 2, side - 3),
                (side - 1, 0, 1, 1),
            ] {
                let want = image::imageops::crop_imm(&square, l, t, cw, ch).to_image();
                assert!(square_region(&img, [1, 2, 3], l, t, cw, ch) == want);
            }
        }
    }

    #[test]
    fn extreme_backgrounds_clip_like_pillow() {
        for bg in [[0, 0, 0], [255, 255, 255], [255, 0, 128]] {
            let img = noise(5, 123, 9);
            let square = expand_to_square(&img, bg);
            assert!(
                resize_square_padded(&img, bg, 17, 33) == pillow_resize_bicubic(&square, 17, 33)
            );
        }
    }
}
