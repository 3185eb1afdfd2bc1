//! Pillow's resampling of 8-bit RGB images, replicated: `Image.resize(size, BICUBIC)` (and
//! BILINEAR, LANCZOS), which `transformers`' `CLIPImageProcessor` calls. Pillow computes each
//! output pixel from a support scaled by the reduction factor (`support · max(1, in/out)`),
//! normalises the filter weights, converts them to 22-bit fixed point, and rounds and clips to
//! 8 bits after each pass; a pass whose size does not change is skipped. Every step below
//! follows `libImaging/Resample.c` of Pillow 13 so the result is bit-identical. The order of
//! the passes is Pillow 13's: vertical first when the height shrinks by more than twice as many
//! pixels as the width (`in_h − out_h > 2 · (in_w − out_w)`), else horizontal first. Pillow
//! 12 and older always ran the horizontal pass first, so for such images (portrait more than
//! 2:1 under a shortest-edge resize) they differ from Pillow 13, and from this, by a few levels.

use super::config::Resample;

/// Fixed-point precision of Pillow's 8-bit coefficients (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height · width · 3` bytes.
    pub data: Vec<u8>,
}

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

fn filter(kind: Resample) -> (fn(f64) -> f64, f64) {
    match kind {
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Bilinear => (bilinear, 1.0),
        Resample::Lanczos => (lanczos, 3.0),
    }
}

/// One axis's fixed-point coefficients: for each output index, the first input index, the
/// number of taps, and `ksize` weights (`precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    k: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize, kind: Resample) -> Coeffs {
    let (f, base_support) = filter(kind);
    // Pillow: `(double)(in1 - in0) / outSize` with float box edges 0 and inSize.
    let scale = (in_size as f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = base_support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let taps = xmax.max(0) as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(taps) {
            let v = f((((x as i64 + xmin) as f64) - center + 0.5) * ss);
            *wx = v;
            ww += v;
        }
        for x in 0..taps {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let scaled = v * f64::from(1u32 << PRECISION_BITS);
            k[xx * ksize + x] = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin as usize, taps));
    }
    Coeffs { bounds, ksize, k }
}

fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(img: &Rgb8, out_w: usize, kind: Resample) -> Rgb8 {
    let c = coeffs(img.width, out_w, kind);
    let mut data = vec![0u8; img.height * out_w * 3];
    for y in 0..img.height {
        let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let out = &mut data[y * out_w * 3..(y + 1) * out_w * 3];
        for (xx, &(xmin, taps)) in c.bounds.iter().enumerate() {
            let k = &c.k[xx * c.ksize..xx * c.ksize + taps];
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] += i32::from(p[ch]) * kx;
                }
            }
            for ch in 0..3 {
                out[xx * 3 + ch] = clip8(ss[ch]);
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: img.height,
        data,
    }
}

fn vertical(img: &Rgb8, out_h: usize, kind: Resample) -> Rgb8 {
    let c = coeffs(img.height, out_h, kind);
    let stride = img.width * 3;
    let mut data = vec![0u8; out_h * stride];
    for (yy, &(ymin, taps)) in c.bounds.iter().enumerate() {
        let k = &c.k[yy * c.ksize..yy * c.ksize + taps];
        let out = &mut data[yy * stride..(yy + 1) * stride];
        for (i, o) in out.iter_mut().enumerate() {
            let mut ss = 1i32 << (PRECISION_BITS - 1);
            for (y, &ky) in k.iter().enumerate() {
                ss += i32::from(img.data[(ymin + y) * stride + i]) * ky;
            }
            *o = clip8(ss);
        }
    }
    Rgb8 {
        width: img.width,
        height: out_h,
        data,
    }
}

/// `img.resize((width, height), kind)` as Pillow 13 computes it (`width`, `height` ≥ 1).
pub fn resize(img: &Rgb8, width: usize, height: usize, kind: Resample) -> Rgb8 {
    let shrink_h = img.height as i64 - height as i64;
    let shrink_w = img.width as i64 - width as i64;
    if shrink_h > 0 && shrink_h > 2 * shrink_w {
        let vert = vertical(img, height, kind);
        return if width != img.width {
            horizontal(&vert, width, kind)
        } else {
            vert
        };
    }
    let horiz = if width != img.width {
        Some(horizontal(img, width, kind))
    } else {
        None
    };
    let src = horiz.as_ref().unwrap_or(img);
    if height != src.height {
        vertical(src, height, kind)
    } else {
        horiz.unwrap_or_else(|| img.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let img = Rgb8 {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(resize(&img, 2, 1, Resample::Bicubic), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Rgb8 {
            width: 7,
            height: 5,
            data: vec![200; 7 * 5 * 3],
        };
        for (w, h) in [(3, 2), (11, 9), (7, 1)] {
            let out = resize(&img, w, h, Resample::Bicubic);
            assert!(out.data.iter().all(|&v| v == 200), "{w}x{h}");
        }
    }
}
