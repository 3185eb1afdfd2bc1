//! NPY version 1.0 files, little-endian, C order: the `part-NNNNNN.npy` (f32 `[n, D]`) and
//! `part-NNNNNN.features.npy` (f16 `[n, P, F]`) of an embedding directory, written and read.

use std::path::Path;

use half::f16;

use super::error::EmbedError;
use crate::fsutil::IoContext;

/// Encodes an NPY v1.0 file: `descr` (`<f4`, `<f2`), `shape`, and the raw little-endian data.
fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
    // of 64 and ended by a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// An f32 array as an NPY file's bytes.
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", shape, &data)
}

/// An f16 array (from f32 values, rounded to nearest) as an NPY file's bytes.
pub fn encode_f16(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    encode("<f2", shape, &data)
}

/// An array read from an NPY file, as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values in C order.
    pub values: Vec<f32>,
}

/// Reads an NPY v1.0/v2.0 file of `<f4` or `<f2` values in C order.
pub fn read(path: &Path) -> Result<NpyArray, EmbedError> {
    let bytes = std::fs::read(path).at("reading", path)?;
    let bad = |reason: String| EmbedError::BadPart {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an NPY file (magic \\x93NUMPY missing)".into()));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("NPY version {v} (expected 1 or 2)"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or non-UTF-8 header".into()))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[i..].trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next());
    let width = match descr {
        Some("<f4") => 4,
        Some("<f2") => 2,
        other => return Err(bad(format!("dtype {other:?}: expected '<f4' or '<f2'"))),
    };
    if !field("fortran_order").is_some_and(|r| r.starts_with("False")) {
        return Err(bad("fortran_order is not False".into()));
    }
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("no shape in the header".into()))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("shape entry {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count: usize = shape.iter().product();
    let data = &bytes[start + hlen..];
    if data.len() != count * width {
        return Err(bad(format!(
            "{} data bytes, shape {shape:?} needs {}",
            data.len(),
            count * width
        )));
    }
    let values = if width == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    };
    Ok(NpyArray { shape, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_to_64_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        for (shape, vals) in [(vec![2, 3], vec![1.5f32; 6]), (vec![0, 4], vec![])] {
            let bytes = encode_f32(&shape, &vals);
            let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + hlen) % 64, 0);
            let p = dir.path().join("a.npy");
            std::fs::write(&p, &bytes).unwrap();
            let a = read(&p).unwrap();
            assert_eq!((a.shape, a.values), (shape, vals));
        }
        let p = dir.path().join("b.npy");
        std::fs::write(&p, encode_f16(&[1, 2, 1], &[0.5, -2.0])).unwrap();
        assert_eq!(read(&p).unwrap().values, vec![0.5, -2.0]);
    }
}
