//! JPEG decoding with libjpeg-turbo's own algorithm, so that `embed` sees the very pixels
//! Pillow (hence transformers' `CLIPImageProcessor`) sees. JPEG decoders may legally differ by
//! a few levels (IDCT rounding, chroma upsampling); Pillow's wheels bundle libjpeg-turbo, and the
//! `mozjpeg` crate builds MozJPEG 4 (a libjpeg-turbo fork with the same decoder) from vendored C
//! with only a C compiler. Settings are Pillow's `JpegDecode.c` defaults: the integer slow IDCT
//! (`JDCT_ISLOW`), fancy upsampling, no scaling, no EXIF orientation. Like Pillow's
//! `Image.open(p).convert("RGB")`: a grey JPEG is replicated to RGB, and a CMYK/YCCK one is
//! decoded to CMYK, inverted ("CMYK;I", Adobe polarity, which Pillow always assumes) and
//! converted with Pillow's `cmyk2rgb`. libjpeg's fatal errors unwind out of the C code
//! (`mozjpeg-sys/unwinding`) and are caught here as [`EmbedError::Decode`]; a file that ends
//! before its end-of-image marker is an error too, as in Pillow ("image file is truncated"),
//! where libjpeg alone would fill the missing part with grey. (Catching needs `panic = "unwind"`,
//! the default; an `abort` profile would end the process on a corrupt JPEG.)

use std::io::{BufRead, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress};

use super::error::EmbedError;
use super::resize::Rgb8;

/// Whether `bytes` start like a JPEG file (SOI marker then another marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes an 8-bit JPEG (baseline or progressive, Huffman or arithmetic) to RGB as Pillow
/// does (see the module docs).
/// Any libjpeg error (corrupt header, unsupported precision, …) is returned as
/// [`EmbedError::Decode`] naming `id` and `origin`.
pub fn decode_jpeg(bytes: &[u8], id: &str, origin: &str) -> Result<Rgb8, EmbedError> {
    let fail = |reason: String| EmbedError::Decode {
        id: id.to_string(),
        origin: origin.to_string(),
        reason: format!("JPEG: {reason}"),
    };
    match catch_unwind(AssertUnwindSafe(|| decode_unwinding(bytes))) {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(payload) => Err(fail(panic_message(payload))),
    }
}

/// The text of a libjpeg error carried by an unwind (`mozjpeg` resumes with a `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "libjpeg error".to_string(),
        },
    }
}

/// The JPEG bytes as a reader that records whether libjpeg asked for data past their end.
struct EofWatch<'a> {
    rest: &'a [u8],
    hit_eof: bool,
}

impl Read for EofWatch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for EofWatch<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.rest.is_empty() {
            self.hit_eof = true;
        }
        Ok(self.rest)
    }

    fn consume(&mut self, n: usize) {
        self.rest = &self.rest[n.min(self.rest.len())..];
    }
}

/// The decode itself; libjpeg's fatal errors unwind through it.
fn decode_unwinding(bytes: &[u8]) -> std::io::Result<Rgb8> {
    let d = Decompress::new_reader(EofWatch {
        rest: bytes,
        hit_eof: false,
    })?;
    let cmyk = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
    let out = if cmyk {
        ColorSpace::JCS_CMYK
    } else {
        ColorSpace::JCS_RGB
    };
    let mut started = d.to_colorspace(out)?;
    let (width, height) = (started.width(), started.height());
    let raw: Vec<u8> = started.read_scanlines()?;
    if started.finish_into_inner()?.hit_eof {
        return Err(std::io::Error::other(
            "the file is truncated (it ends before the end-of-image marker)",
        ));
    }
    let data = if cmyk {
        raw.chunks_exact(4).flat_map(inverted_cmyk_to_rgb).collect()
    } else {
        raw
    };
    if data.len() != width * height * 3 {
        return Err(std::io::Error::other(format!(
            "{} bytes decoded for {width}×{height} RGB",
            data.len()
        )));
    }
    Ok(Rgb8 {
        width,
        height,
        data,
    })
}

/// Pillow's unpacking of a JPEG's CMYK ("CMYK;I": every byte inverted) followed by its
/// `cmyk2rgb` (`Convert.c`): `nk = 255 − k`, each channel `nk − nk·c/255` with
/// `MULDIV255`'s rounding.
fn inverted_cmyk_to_rgb(p: &[u8]) -> [u8; 3] {
    let [c, m, y, k] = [p[0], p[1], p[2], p[3]].map(|v| 255 - i32::from(v));
    let nk = 255 - k;
    let muldiv255 = |a: i32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (nk - muldiv255(v)).clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_typed_error_naming_the_image() {
        let e = decode_jpeg(&[0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3], "im7", "a/b.jpg").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("im7") && msg.contains("a/b.jpg") && msg.contains("JPEG"),
            "{msg}"
        );
    }

    #[test]
    fn empty_after_soi_is_an_error() {
        assert!(decode_jpeg(&[0xFF, 0xD8], "x", "y").is_err());
        assert!(!is_jpeg(b"\x89PNG\r\n"));
    }

    #[test]
    fn eof_watch_reads_all_then_flags_the_end() {
        let mut r = EofWatch {
            rest: b"abc",
            hit_eof: false,
        };
        let mut buf = [0u8; 2];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(r.read(&mut buf).unwrap(), 1);
        assert!(!r.hit_eof);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert!(r.hit_eof);
    }

    #[test]
    fn cmyk_conversion_matches_pillow_formula() {
        // Stored inverted: 255 stored = 0 ink. No ink → white; full black → black.
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        // Full cyan only: c = 255, k = 0 → r = 255 − 255 = 0.
        assert_eq!(inverted_cmyk_to_rgb(&[0, 255, 255, 255]), [0, 255, 255]);
    }
}
