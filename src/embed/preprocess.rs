//! From encoded image bytes to the tower's input, exactly as `transformers`'
//! `CLIPImageProcessor` does it: decode (JPEG with libjpeg-turbo's decoder, [`super::jpeg`]), convert to RGB (transparency composited onto white, grey replicated),
//! resize with Pillow's filter ([`super::resize`]), center crop (`top = (h - crop_h) // 2`,
//! zero padding where the image is smaller), rescale and normalize in float32.

use image::DynamicImage;

use super::config::{Preprocess, ResizeTo};
use super::error::EmbedError;
use super::jpeg::{decode_jpeg, is_jpeg};
use super::resize::{resize, Rgb8};

/// Decodes PNG, JPEG or WebP bytes to 8-bit RGB as transformers' `convert_to_rgb` does: an
/// image with transparency is alpha-composited onto white (Pillow's `alpha_composite`
/// integer arithmetic), any other is converted (`convert("RGB")`: grey replicated). JPEG goes
/// through libjpeg-turbo's decoder ([`super::jpeg`]), the others through the `image` crate.
pub fn decode_rgb(bytes: &[u8], id: &str, origin: &str) -> Result<Rgb8, EmbedError> {
    if is_jpeg(bytes) {
        return decode_jpeg(bytes, id, origin);
    }
    let img = image::load_from_memory(bytes).map_err(|e| EmbedError::Decode {
        id: id.to_string(),
        origin: origin.to_string(),
        reason: e.to_string(),
    })?;
    let rgb = match img {
        DynamicImage::ImageRgb8(b) => b,
        other if other.color().has_alpha() => {
            let rgba = other.to_rgba8();
            let (w, h) = rgba.dimensions();
            let data = rgba
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| composite_on_white([p[0], p[1], p[2]], p[3]))
                .collect();
            image::RgbImage::from_raw(w, h, data).expect("3 bytes per pixel")
        }
        other => other.to_rgb8(),
    };
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(Rgb8 {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// Pillow's `alpha_composite` of one pixel over opaque white (`AlphaComposite.c`, 7 extra
/// bits of precision, rounded divisions by 255).
fn composite_on_white(rgb: [u8; 3], a: u8) -> [u8; 3] {
    if a == 0 {
        return [255; 3];
    }
    const BITS: u32 = 7;
    let div255 = |x: u32| ((x >> 8) + x) >> 8;
    let (sa, da) = (u32::from(a), 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << BITS) / outa255;
    let coef2 = 255 * (1 << BITS) - coef1;
    rgb.map(|c| {
        let tmp = u32::from(c) * coef1 + 255 * coef2;
        (div255(tmp + (0x80 << BITS)) >> BITS) as u8
    })
}

/// The `(width, height)` of the resize: transformers' `get_resize_output_image_size` with
/// `default_to_square=False` (shortest edge to `n`, longer edge `int(n · long / short)`).
pub fn resized_size(width: usize, height: usize, to: ResizeTo) -> (usize, usize) {
    match to {
        ResizeTo::Exact { height, width } => (width, height),
        ResizeTo::ShortestEdge(n) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            let new_long = ((n * long) as f64 / short as f64) as usize;
            if width <= height {
                (n, new_long.max(1))
            } else {
                (new_long.max(1), n)
            }
        }
    }
}

/// transformers' `center_crop` of an 8-bit image to `crop_h × crop_w`: `top = (h − crop_h) // 2`
/// (floor), with zero padding (centred, `ceil` on the leading side) where the image is smaller.
pub fn center_crop(img: &Rgb8, crop_h: usize, crop_w: usize) -> Rgb8 {
    if img.height == crop_h && img.width == crop_w {
        return img.clone();
    }
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch, cw) = (crop_h as i64, crop_w as i64);
    // Offsets of the crop's origin in the image (negative: padding), as transformers computes
    // them after padding: top = (h - ch) // 2 + top_pad, minus top_pad again for the source.
    let top = (h - ch).div_euclid(2);
    let left = (w - cw).div_euclid(2);
    let top_pad = if ch > h { (ch - h + 1) / 2 } else { 0 };
    let left_pad = if cw > w { (cw - w + 1) / 2 } else { 0 };
    // In padded coordinates the crop starts at top + top_pad; the padded image holds the
    // original at top_pad, so a padded row r maps to image row r - top_pad.
    let (ptop, pleft) = ((top + top_pad).max(0), (left + left_pad).max(0));
    let mut data = vec![0u8; crop_h * crop_w * 3];
    for y in 0..ch {
        let sy = ptop + y - top_pad;
        if sy < 0 || sy >= h {
            continue;
        }
        for x in 0..cw {
            let sx = pleft + x - left_pad;
            if sx < 0 || sx >= w {
                continue;
            }
            let s = ((sy * w + sx) * 3) as usize;
            let d = ((y * cw + x) * 3) as usize;
            data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    Rgb8 {
        width: crop_w,
        height: crop_h,
        data,
    }
}

/// The processed image: `[3, height, width]` float32, channel-major.
#[derive(Debug, Clone)]
pub struct Pixels {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `3 · height · width` values.
    pub data: Vec<f32>,
}

/// Resize, crop, rescale and normalize a decoded image as `p` says.
pub fn preprocess(img: &Rgb8, p: &Preprocess) -> Pixels {
    let resized;
    let mut cur = img;
    if let Some(to) = p.resize {
        let (w, h) = resized_size(img.width, img.height, to);
        if (w, h) != (img.width, img.height) {
            resized = resize(img, w, h, p.resample);
            cur = &resized;
        }
    }
    let cropped;
    if let Some((ch, cw)) = p.crop {
        cropped = center_crop(cur, ch, cw);
        cur = &cropped;
    }
    let (h, w) = (cur.height, cur.width);
    let mut data = vec![0f32; 3 * h * w];
    // transformers: rescale in float64 then cast to float32; normalize in float32.
    let (mean, std) = match p.normalize {
        Some((m, s)) => (m.map(|x| x as f32), s.map(|x| x as f32)),
        None => ([0f32; 3], [1f32; 3]),
    };
    for ch in 0..3 {
        let plane = &mut data[ch * h * w..(ch + 1) * h * w];
        for (i, v) in plane.iter_mut().enumerate() {
            let raw = f64::from(cur.data[i * 3 + ch]);
            let x = match p.rescale {
                Some(f) => (raw * f) as f32,
                None => raw as f32,
            };
            *v = if p.normalize.is_some() {
                (x - mean[ch]) / std[ch]
            } else {
                x
            };
        }
    }
    Pixels {
        height: h,
        width: w,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_floors_the_long_side() {
        assert_eq!(
            resized_size(640, 480, ResizeTo::ShortestEdge(224)),
            (298, 224)
        );
        assert_eq!(
            resized_size(100, 333, ResizeTo::ShortestEdge(224)),
            (224, 745)
        );
        assert_eq!(resized_size(50, 50, ResizeTo::ShortestEdge(8)), (8, 8));
    }

    #[test]
    fn crop_floors_and_pads() {
        let img = Rgb8 {
            width: 3,
            height: 1,
            data: vec![1, 1, 1, 2, 2, 2, 3, 3, 3],
        };
        // Width 3 → 2: left = (3 - 2) // 2 = 0.
        let c = center_crop(&img, 1, 2);
        assert_eq!(c.data, vec![1, 1, 1, 2, 2, 2]);
        // Height 1 → 4: top_pad = ceil(3 / 2) = 2, so the row lands at index 2.
        let c = center_crop(&img, 4, 3);
        assert_eq!(&c.data[2 * 9..3 * 9], &img.data[..]);
        assert!(c.data[..2 * 9].iter().all(|&v| v == 0));
    }
}
