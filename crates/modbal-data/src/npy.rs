//! Reading and writing NumPy `.npy` arrays and numeric CSV tables.
//!
//! Supported `.npy`: format versions 1.0, 2.0 and 3.0, C order (`fortran_order: False`),
//! little-endian or byte-order-free dtypes `f4`, `f8`, `i1`, `i2`, `i4`, `i8`, `u1`, `u2`, `u4`,
//! `u8`, `b1`, any rank. Fortran order, big-endian data, object arrays and structured dtypes
//! are refused with an error naming the file and the header. Values are returned as `f64`
//! (integers up to 2⁵³ are exact), with the dtype kept so that callers can tell labels from
//! features.
//!
//! Nothing in the header is trusted: the header length must fit in the file, and the shape's
//! element count × item size (checked arithmetic) must equal the bytes after the header, so a
//! forged shape is an error naming it before anything is allocated.
//!
//! CSV: comma-separated numbers, one row per line; a first line that does not parse as numbers
//! is taken as a header and skipped (a UTF-8 byte-order mark before it is ignored); every row
//! must have the same number of columns.

use modbal_core::{ModbalError, Result};
use std::path::Path;

/// A dense array read from disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    /// True if the stored dtype was an integer or boolean type.
    pub integer: bool,
}

impl Array {
    /// Element count implied by the shape.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// `(rows, columns)`: 1-D arrays are one column; higher ranks flatten the trailing axes.
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.len() {
            0 => (1, 1),
            1 => (self.shape[0], 1),
            _ => (self.shape[0], self.shape[1..].iter().product()),
        }
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> ModbalError {
    ModbalError::Data(format!("{}: {msg}", path.display()))
}

/// Extracts the value text of `'key':` from a header dict.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start();
    if rest.starts_with('(') {
        let end = rest.find(')')?;
        Some(&rest[..=end])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// The fixed part of a `.npy` file (magic, version, header length) from its first bytes (12, or
/// the whole file if shorter): `(offset of the header text, header length)`.
fn preamble(head: &[u8]) -> std::result::Result<(usize, usize), String> {
    if head.len() < 10 || &head[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    match head[6] {
        1 => Ok((10, u16::from_le_bytes([head[8], head[9]]) as usize)),
        2 | 3 => {
            if head.len() < 12 {
                return Err("truncated header".into());
            }
            Ok((
                12,
                u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
            ))
        }
        v => Err(format!("unsupported .npy version {v}")),
    }
}

/// `descr` and `shape` of a header dict (Fortran order is refused).
fn parse_header_text(bytes: &[u8]) -> std::result::Result<(String, Vec<usize>), String> {
    let header = std::str::from_utf8(bytes).map_err(|_| "header is not UTF-8")?;
    let descr = header_field(header, "descr")
        .ok_or_else(|| format!("header without 'descr': {header:.200}"))?
        .trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_field(header, "fortran_order").ok_or("header without 'fortran_order'")?;
    if fortran.starts_with("True") {
        return Err(
            "Fortran-order arrays are not supported (save with np.ascontiguousarray)".into(),
        );
    }
    let shape_txt = header_field(header, "shape").ok_or("header without 'shape'")?;
    let shape: Vec<usize> = shape_txt
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_txt:.200}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok((descr.to_string(), shape))
}

/// The type code (`descr` without its byte-order character) and item size of a supported
/// dtype.
fn dtype(descr: &str) -> std::result::Result<(&str, usize), String> {
    let Some(order) = descr.chars().next() else {
        return Err("unsupported dtype \"\" (use f4, f8 or an integer type)".into());
    };
    let kind = &descr[order.len_utf8()..];
    if order == '>' && !kind.ends_with('1') {
        return Err(format!("big-endian dtype {descr} is not supported"));
    }
    let size = match kind {
        "f4" | "i4" | "u4" => 4,
        "f8" | "i8" | "u8" => 8,
        "i2" | "u2" => 2,
        "i1" | "u1" | "b1" => 1,
        _ => {
            return Err(format!(
                "unsupported dtype {descr:?} (use f4, f8 or an integer type)"
            ))
        }
    };
    Ok((kind, size))
}

/// Bytes of data that `shape` of `size`-byte items needs, with checked arithmetic (a forged
/// shape is an error naming it, never a wrapped count), and the check that exactly that many
/// bytes (`present`) follow the header.
fn check_data_bytes(
    shape: &[usize],
    descr: &str,
    size: usize,
    present: u64,
) -> std::result::Result<usize, String> {
    // Zero-size arrays too: the other axes must not overflow (NumPy refuses such arrays), so
    // that any product of axes (e.g. `rows_cols`) fits.
    let need = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d.max(1)))
        .map(|v| if shape.contains(&0) { 0 } else { v })
        .ok_or_else(|| {
            format!(
                "shape {shape:?} of dtype {descr} needs more bytes than this machine can address \
                 (corrupt header?); file has {present} bytes of data"
            )
        })?;
    if (need as u64) > present {
        return Err(format!(
            "data truncated: shape {shape:?} needs {need} bytes, file has {present}"
        ));
    }
    if (need as u64) < present {
        return Err(format!(
            "shape {shape:?} of dtype {descr} needs {need} bytes of data, file has {present} \
             after the header (header and data disagree)"
        ));
    }
    Ok(need)
}

/// Read a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| ModbalError::io("reading", path, e))?;
    parse_npy(&bytes).map_err(|m| bad(path, m))
}

/// Decode the bytes of a `.npy` file (what [`read_npy`] does after reading the file). The
/// header's element count × item size must equal the bytes after the header.
pub fn parse_npy(b: &[u8]) -> std::result::Result<Array, String> {
    let (off, hlen) = preamble(b)?;
    if b.len() - off < hlen {
        return Err(format!(
            "truncated header: header length {hlen}, file has {} bytes",
            b.len()
        ));
    }
    let (descr, shape) = parse_header_text(&b[off..off + hlen])?;
    let (kind, size) = dtype(&descr)?;
    let body = &b[off + hlen..];
    check_data_bytes(&shape, &descr, size, body.len() as u64)?;
    let c = body.chunks_exact(size);
    let data: Vec<f64> = match kind {
        "f4" => c
            .map(|x| f32::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
        "f8" => c
            .map(|x| f64::from_le_bytes(x.try_into().unwrap()))
            .collect(),
        "i1" => c.map(|x| x[0] as i8 as f64).collect(),
        "u1" | "b1" => c.map(|x| x[0] as f64).collect(),
        "i2" => c
            .map(|x| i16::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
        "u2" => c
            .map(|x| u16::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
        "i4" => c
            .map(|x| i32::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
        "u4" => c
            .map(|x| u32::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
        "i8" => c
            .map(|x| i64::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
        _ => c
            .map(|x| u64::from_le_bytes(x.try_into().unwrap()) as f64)
            .collect(),
    };
    Ok(Array {
        shape,
        data,
        integer: !kind.starts_with('f'),
    })
}

/// The dtype (`descr`, e.g. `"<f4"`) and shape of a `.npy` file, reading only its header
/// (used to check thousands of spectrogram files without loading them). For a supported
/// dtype the shape is checked against the file's length, as [`read_npy`] does.
pub fn read_npy_header(path: &Path) -> Result<(String, Vec<usize>)> {
    let f = std::fs::File::open(path).map_err(|e| ModbalError::io("opening", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| ModbalError::io("reading", path, e))?
        .len();
    parse_npy_header(f, len).map_err(|m| bad(path, m))
}

/// [`read_npy_header`] on a reader positioned at the start of a `.npy` file of `file_len`
/// bytes. The header length is checked against `file_len` before anything is allocated.
pub fn parse_npy_header<R: std::io::Read>(
    mut r: R,
    file_len: u64,
) -> std::result::Result<(String, Vec<usize>), String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(12);
    r.by_ref()
        .take(12)
        .read_to_end(&mut head)
        .map_err(|e| format!("reading the header: {e}"))?;
    let (off, hlen) = preamble(&head)?;
    let end = (off + hlen) as u64;
    if end > file_len {
        return Err(format!(
            "truncated header: header length {hlen}, file has {file_len} bytes"
        ));
    }
    let mut buf = vec![0u8; hlen];
    let have = (head.len() - off).min(hlen);
    buf[..have].copy_from_slice(&head[off..off + have]);
    r.read_exact(&mut buf[have..])
        .map_err(|_| "truncated header".to_string())?;
    let (descr, shape) = parse_header_text(&buf)?;
    // Unsupported dtypes are reported by `read_npy`; a supported one lets the size be checked.
    if let Ok((_, size)) = dtype(&descr) {
        check_data_bytes(&shape, &descr, size, file_len - end)?;
    }
    Ok((descr, shape))
}

/// Element types [`write_npy`] can store.
pub trait NpyElement: Copy {
    const DESCR: &'static str;
    fn put(self, out: &mut Vec<u8>);
}
impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn put(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes())
    }
}
impl NpyElement for f64 {
    const DESCR: &'static str = "<f8";
    fn put(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes())
    }
}
impl NpyElement for i64 {
    const DESCR: &'static str = "<i8";
    fn put(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes())
    }
}
impl NpyElement for u32 {
    const DESCR: &'static str = "<u4";
    fn put(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes())
    }
}

/// Write a C-order `.npy` (version 1.0) file.
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if n != Some(data.len()) {
        let n = n.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string());
        return Err(ModbalError::Data(format!(
            "write_npy {}: shape {shape:?} needs {n} values, got {}",
            path.display(),
            data.len()
        )));
    }
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_txt}, }}",
        T::DESCR
    );
    // Pad so that magic + len + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 8);
    out.extend(b"\x93NUMPY\x01\x00");
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for &v in data {
        v.put(&mut out);
    }
    std::fs::write(path, out).map_err(|e| ModbalError::io("writing", path, e))
}

/// Read a numeric CSV table as `[rows, cols]` (a UTF-8 byte-order mark is ignored).
pub fn read_csv(path: &Path) -> Result<Array> {
    let text = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    parse_csv(&text).map_err(|m| bad(path, m))
}

/// Parse the text of a numeric CSV table (what [`read_csv`] does after reading the file).
pub fn parse_csv(text: &str) -> std::result::Result<Array, String> {
    // A BOM would make the first row look like a header and drop it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed: std::result::Result<Vec<f64>, _> =
            line.split(',').map(|c| c.trim().parse::<f64>()).collect();
        match parsed {
            Ok(r) => {
                if let Some(first) = rows.first() {
                    if first.len() != r.len() {
                        return Err(format!(
                            "line {}: {} columns, expected {}",
                            ln + 1,
                            r.len(),
                            first.len()
                        ));
                    }
                }
                rows.push(r);
            }
            Err(_) if rows.is_empty() && ln == 0 => continue, // header
            Err(e) => return Err(format!("line {}: {e}: {line:?}", ln + 1)),
        }
    }
    if rows.is_empty() {
        return Err("no numeric rows".into());
    }
    let cols = rows[0].len();
    let integer = rows.iter().flatten().all(|v| v.fract() == 0.0);
    Ok(Array {
        shape: vec![rows.len(), cols],
        data: rows.into_iter().flatten().collect(),
        integer,
    })
}

/// Read `.npy` or `.csv` by extension.
pub fn read_array(path: &Path) -> Result<Array> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("csv") | Some("txt") => read_csv(path),
        _ => Err(bad(path, "unknown file type (expected .npy or .csv)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_roundtrip_and_numpy_written_file() {
        let dir = std::env::temp_dir().join(format!("modbal-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        write_npy(&p, &[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        let a = read_npy(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert!(!a.integer);
        write_npy(&p, &[3], &[7i64, -1, 2]).unwrap();
        let a = read_npy(&p).unwrap();
        assert_eq!(
            (a.shape.clone(), a.data.clone(), a.integer),
            (vec![3], vec![7.0, -1.0, 2.0], true)
        );
        // Bytes of `np.save(f, np.array([[1.5, -2.0]], dtype='<f8'))` (NumPy 2.4.6).
        let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut h = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }".to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        assert_eq!(h.len(), 118);
        b.extend(h.as_bytes());
        b.extend(1.5f64.to_le_bytes());
        b.extend((-2.0f64).to_le_bytes());
        assert_eq!(parse_npy(&b).unwrap().data, vec![1.5, -2.0]);
        // Errors name the problem.
        let mut f = b.clone();
        let at = f.windows(5).position(|w| w == b"False").unwrap();
        f[at..at + 5].copy_from_slice(b"True ");
        assert!(parse_npy(&f).unwrap_err().contains("Fortran"));
        assert!(parse_npy(&b[..b.len() - 4])
            .unwrap_err()
            .contains("truncated"));
        assert!(parse_npy(b"hello world").unwrap_err().contains("magic"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn csv_with_header_and_errors() {
        let dir = std::env::temp_dir().join(format!("modbal-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.csv");
        std::fs::write(&p, "a,b\n1,2\n3,4.5\n").unwrap();
        let a = read_csv(&p).unwrap();
        assert_eq!(
            (a.shape.clone(), a.data.clone()),
            (vec![2, 2], vec![1.0, 2.0, 3.0, 4.5])
        );
        std::fs::write(&p, "1,2\n3\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("a.csv"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
