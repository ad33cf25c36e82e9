//! Minimal `.npy` I/O for `f32` C-order arrays (format 1.0, dtype `<f4`): what the recipes write.

use crate::error::{AudioError, Result};
use std::io::Write;
use std::path::Path;

/// The complete `.npy` bytes of an `f32` C-order array.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape/data mismatch"
    );
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Size in bytes of the `.npy` file [`npy_bytes`] writes for `shape`.
pub fn npy_file_len(shape: &[usize]) -> u64 {
    let n: usize = shape.iter().product();
    npy_bytes(shape, &vec![0.0; n]).len() as u64
}

/// Writes an `f32` array to `path` (directly; callers wanting atomicity write a temp file and rename).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = npy_bytes(shape, data);
    let mut f = std::fs::File::create(path).map_err(|e| AudioError::io(path, e))?;
    f.write_all(&bytes).map_err(|e| AudioError::io(path, e))?;
    f.sync_all().map_err(|e| AudioError::io(path, e))
}

/// Reads an `f32` C-order `.npy` written by [`write_npy_f32`] (or numpy with dtype `<f4`).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| AudioError::io(path, e))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(AudioError::decode(path, "not a .npy file"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(AudioError::decode(
                path,
                format!("unsupported .npy version {v}"),
            ))
        }
    };
    let header = std::str::from_utf8(bytes.get(start..start + hlen).unwrap_or_default())
        .map_err(|_| AudioError::decode(path, "bad .npy header"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(AudioError::decode(
            path,
            format!("expected a C-order <f4 array, header {header}"),
        ));
    }
    let s = header
        .split("'shape':")
        .nth(1)
        .and_then(|r| r.split('(').nth(1))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| AudioError::decode(path, "no shape in .npy header"))?;
    let shape: Vec<usize> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| AudioError::decode(path, format!("bad shape {s}")))?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + hlen..];
    if body.len() != 4 * n {
        return Err(AudioError::decode(
            path,
            format!(
                "truncated .npy: {} data bytes for shape {shape:?}",
                body.len()
            ),
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_alignment() {
        let dir = std::env::temp_dir().join(format!("modbal-audio-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        write_npy_f32(&p, &[3, 4], &data).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(bytes.len() as u64, npy_file_len(&[3, 4]));
        assert_eq!(read_npy_f32(&p).unwrap(), (vec![3, 4], data));
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = read_npy_f32(&p).unwrap_err().to_string();
        assert!(e.contains("a.npy") && e.contains("truncated"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
