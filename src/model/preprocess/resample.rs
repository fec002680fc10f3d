//! Pillow's `ImagingResample` (src/libImaging/Resample.c), 8 bits per channel, BICUBIC: the
//! fixed-point separable convolution whose output the reference's pixels come from.

use image::RgbImage;

/// Resample.c: "8 bits for result. Filter can have negative areas. In one cases the sum of
/// the coefficients will be negative, in the other it will be more than 1.0. That is why we
/// need two extra bits for overflow and int type."
pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resample.c `bicubic_filter` (a = -0.5), support 2.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}
const BICUBIC_SUPPORT: f64 = 2.0;

/// Fixed-point taps for one axis: for output index `i`, source `[start_i, start_i + len_i)`
/// weighted by `k[i * ksize ..][..len_i]`.
pub(super) struct Taps {
    pub(super) ksize: usize,
    pub(super) bounds: Vec<(usize, usize)>,
    pub(super) k: Vec<i32>,
}

/// Resample.c `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
pub(super) fn precompute_coeffs(in_size: u32, out_size: u32) -> Taps {
    // box[] is float in C; in0 = 0, in1 = in_size (exact in f32 for any real image).
    let in0 = 0.0f64;
    let in1 = f64::from(in_size as f32);
    let scale = (in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut k = vec![0i32; out_size as usize * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // (int) casts truncate toward zero, as Rust's `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
        let xmax = xmax.max(0) as usize;
        let mut ww = 0.0f64;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for (x, wx) in w.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { wx / ww } else { *wx };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            k[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin as usize, xmax));
    }
    Taps { ksize, bounds, k }
}

/// Resample.c `clip8`: `clip8_lookups[in >> PRECISION_BITS]`, i.e. clamp to 0..=255.
pub(super) fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow `Image.resize((width, height), Image.BICUBIC)` on an RGB image, byte for byte:
/// Resample.c `ImagingResampleInner` — vertical taps first (to know the rows needed), a
/// horizontal pass into a temporary image (only if the width changes), then a vertical pass
/// (only if the height changes), each rounding `(sum + 2^21) >> 22` and clamping to u8.
/// An unchanged size is a copy (Image.resize returns `self.copy()`).
pub fn pillow_resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    if [in_w, in_h, width, height].contains(&0) {
        return RgbImage::new(width, height);
    }
    let need_horizontal = width != in_w;
    let need_vertical = height != in_h;
    let mut vert = precompute_coeffs(in_h, height);
    let ybox_first = vert.bounds[0].0;
    let last = vert.bounds[vert.bounds.len() - 1];
    let ybox_last = last.0 + last.1;

    let mut current: std::borrow::Cow<'_, RgbImage> = std::borrow::Cow::Borrowed(img);
    if need_horizontal {
        let horiz = precompute_coeffs(in_w, width);
        for b in &mut vert.bounds {
            b.0 -= ybox_first;
        }
        let rows = ybox_last - ybox_first;
        let mut tmp = RgbImage::new(width, rows as u32);
        let src = img.as_raw();
        let src_row = in_w as usize * 3;
        let dst_row = width as usize * 3;
        let dst: &mut [u8] = tmp.as_mut();
        for yy in 0..rows {
            let line = &src[(yy + ybox_first) * src_row..][..src_row];
            for (xx, &(xmin, xlen)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.k[xx * horiz.ksize..][..xlen];
                let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &line[(x + xmin) * 3..][..3];
                    for c in 0..3 {
                        ss[c] += i64::from(p[c]) * i64::from(kx);
                    }
                }
                let o = &mut dst[yy * dst_row + xx * 3..][..3];
                for c in 0..3 {
                    o[c] = clip8(ss[c]);
                }
            }
        }
        current = std::borrow::Cow::Owned(tmp);
    }
    if !need_vertical {
        return current.into_owned();
    }
    let src_img = current.as_ref();
    let row = src_img.width() as usize * 3;
    let src = src_img.as_raw();
    let mut out = RgbImage::new(src_img.width(), height);
    // Same sums as Resample.c's per-pixel loop, accumulated a whole row at a time.
    let mut acc = vec![0i64; row];
    let out_bytes: &mut [u8] = out.as_mut();
    for (yy, (out_row, &(ymin, ylen))) in out_bytes
        .chunks_exact_mut(row)
        .zip(&vert.bounds)
        .enumerate()
    {
        acc.fill(1i64 << (PRECISION_BITS - 1));
        for (y, &ky) in vert.k[yy * vert.ksize..][..ylen].iter().enumerate() {
            let line = &src[(y + ymin) * row..][..row];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i64::from(p) * i64::from(ky);
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}
