//! Bounded fuzzing of modbal-data's parsers (issue 17, "Fuzzing"): `.npy` (whole file and
//! header only), IDX image/label pairs (and CGMNIST built from the survivors), numeric CSV and
//! CSV split-list lines. Each target runs a few thousand seeded mutations of small valid inputs
//! (see `fuzz_support`) and asserts that every case returns `Ok` or `Err` — no panic, no absurd
//! allocation — and that what an `Ok` returns is consistent with the bytes present.
//!
//! Long campaign: `MODBAL_FUZZ_CASES=200000 cargo test --release -p modbal-data --test
//! fuzz_parsers -- --nocapture`.

mod fuzz_support;

use fuzz_support::{Field, Hints};
use modbal_data::npy::{parse_csv, parse_npy, parse_npy_header};
use modbal_data::real::cgmnist::{parse_idx_pair, CgmnistConfig};
use modbal_data::real::parse_csv_line;
use modbal_data::Dataset;
use std::path::Path;

#[global_allocator]
static GUARD: fuzz_support::Guard = fuzz_support::Guard;

/// Cases per target in the normal test run (all five targets together take about a second in
/// release mode).
const CASES: u64 = 10_000;

fn npy(descr: &str, shape: &str, body: &[u8], v2: bool) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pre = if v2 { 12 } else { 10 };
    while (pre + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY".to_vec();
    if v2 {
        b.extend([2, 0]);
        b.extend((h.len() as u32).to_le_bytes());
    } else {
        b.extend([1, 0]);
        b.extend((h.len() as u16).to_le_bytes());
    }
    b.extend(h.as_bytes());
    b.extend(body);
    b
}

fn npy_seeds() -> Vec<Vec<u8>> {
    let f4: Vec<u8> = [1.0f32, -2.0, 3.5, 0.0, 5.0, 6.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let i8s: Vec<u8> = [7i64, -1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    vec![
        npy("<f4", "(2, 3)", &f4, false),
        npy("<i8", "(3,)", &i8s, false),
        npy("|u1", "(2, 2, 1)", &[1, 2, 3, 4], false),
        npy("<f8", "()", &2.5f64.to_le_bytes(), false),
        npy("<f4", "(1, 6)", &f4, true),
        npy("|b1", "(0, 4)", &[], false),
    ]
}

fn npy_hints() -> Hints {
    let tokens: &[&[u8]] = &[
        b"(4611686018427387904, 4)",
        b"(4611686018427387905, 4)",
        b"(18446744073709551615,)",
        b"(4294967296, 4294967296, 4294967296)",
        b"(1000000000,)",
        b"()",
        b"(0,)",
        b"-1",
        b"'<f8'",
        b"'>f4'",
        b"'>u1'",
        b"'|O'",
        b"''",
        b"'\xc3\xa94'",
        b"True",
        b"'shape': (",
        b"'descr': ",
        b"'fortran_order': ",
        b"}",
        b")",
        b",",
    ];
    Hints {
        fields: vec![
            Field {
                at: 6,
                width: 1,
                big_endian: false,
            },
            Field {
                at: 8,
                width: 2,
                big_endian: false,
            },
            Field {
                at: 8,
                width: 4,
                big_endian: false,
            },
        ],
        tokens: tokens.iter().map(|t| t.to_vec()).collect(),
    }
}

#[test]
fn fuzz_npy() {
    fuzz_support::run("npy", &npy_seeds(), &npy_hints(), CASES, |b| {
        let a = parse_npy(b)?;
        // Ok means the shape accounts for exactly the values read.
        let n = a.shape.iter().try_fold(1usize, |x, &d| x.checked_mul(d));
        assert_eq!(n, Some(a.data.len()), "shape {:?}", a.shape);
        let (r, c) = a.rows_cols();
        assert_eq!(r.checked_mul(c), Some(a.data.len()), "shape {:?}", a.shape);
        Ok(())
    });
}

#[test]
fn fuzz_npy_header() {
    fuzz_support::run("npy-header", &npy_seeds(), &npy_hints(), CASES, |b| {
        let (descr, shape) = parse_npy_header(std::io::Cursor::new(b), b.len() as u64)?;
        // A header the full reader accepts agrees with it.
        if let Ok(a) = parse_npy(b) {
            assert_eq!(a.shape, shape, "{descr}");
        }
        Ok(())
    });
}

/// An IDX pair of `n` 8×8 images (labels `i % 10`).
fn idx(n: u32) -> (Vec<u8>, Vec<u8>) {
    let mut ib = Vec::new();
    for w in [0x0803u32, n, 8, 8] {
        ib.extend(w.to_be_bytes());
    }
    ib.extend((0..n * 64).map(|i| (i * 37 % 256) as u8));
    let mut lb = Vec::new();
    for w in [0x0801u32, n] {
        lb.extend(w.to_be_bytes());
    }
    lb.extend((0..n).map(|i| (i % 10) as u8));
    (ib, lb)
}

/// Labels consistent with the image header of `ib` (when it asks for a modest count), so that
/// mutated images get past the label checks.
fn labels_for(ib: &[u8]) -> Vec<u8> {
    let n = if ib.len() >= 8 {
        u32::from_be_bytes([ib[4], ib[5], ib[6], ib[7]]).min(100_000)
    } else {
        3
    };
    idx(0).1[..4]
        .iter()
        .copied()
        .chain(n.to_be_bytes())
        .chain((0..n).map(|i| (i % 10) as u8))
        .collect()
}

#[test]
fn fuzz_idx() {
    let seeds: Vec<Vec<u8>> = [1u32, 3, 12].iter().map(|&n| idx(n).0).collect();
    let hints = Hints {
        fields: [0, 4, 8, 12]
            .iter()
            .map(|&at| Field {
                at,
                width: 4,
                big_endian: true,
            })
            .collect(),
        tokens: vec![vec![0x1f, 0x8b]],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut built = 0;
    fuzz_support::run("idx", &seeds, &hints, CASES, |ib| {
        let lb = labels_for(ib);
        let d = parse_idx_pair(ib, &lb, Path::new("images"), Path::new("labels"))
            .map_err(|e| e.to_string())?;
        let n = d
            .labels
            .len()
            .checked_mul(d.rows)
            .and_then(|v| v.checked_mul(d.cols));
        assert_eq!(
            Some(d.images.len()),
            n,
            "{} images of {}×{}",
            d.labels.len(),
            d.rows,
            d.cols
        );
        // Every 8th accepted pair goes through the whole CGMNIST loader and every sample is read.
        built += 1;
        if built % 8 == 0 {
            for prefix in ["train", "t10k"] {
                std::fs::write(dir.path().join(format!("{prefix}-images-idx3-ubyte")), ib).unwrap();
                std::fs::write(dir.path().join(format!("{prefix}-labels-idx1-ubyte")), &lb)
                    .unwrap();
            }
            let (tr, va, te) = CgmnistConfig {
                root: dir.path().to_path_buf(),
                val_fraction: 0.5,
                ..Default::default()
            }
            .build_splits()
            .map_err(|e| e.to_string())?;
            for s in [&tr, &va, &te] {
                for i in 0..s.len() {
                    s.get(i).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_idx_labels() {
    let (ib, _) = idx(3);
    let seeds: Vec<Vec<u8>> = vec![idx(3).1];
    let hints = Hints {
        fields: [0, 4]
            .iter()
            .map(|&at| Field {
                at,
                width: 4,
                big_endian: true,
            })
            .collect(),
        tokens: vec![vec![0x1f, 0x8b], vec![10], vec![255]],
    };
    fuzz_support::run("idx-labels", &seeds, &hints, CASES, |lb| {
        let d = parse_idx_pair(&ib, lb, Path::new("images"), Path::new("labels"))
            .map_err(|e| e.to_string())?;
        assert!(d.labels.iter().all(|&y| y <= 9));
        Ok(())
    });
}

#[test]
fn fuzz_csv() {
    let seeds: Vec<Vec<u8>> = [
        "a,b\n1,2\n3,4.5\n",
        "\u{feff}1,2\n3,4\n",
        "0\n1\n0\n1\n",
        "x\n1.5e3\n-2\n",
        " 1 , 2 ,3\r\n4,5,6\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let tokens: &[&[u8]] = &[
        b",",
        b"\n",
        b"\r\n",
        b"\"",
        b"\xef\xbb\xbf",
        b"1e999",
        b"-",
        b".",
        b"NaN",
        b"inf",
        b"\xff",
        b"18446744073709551616",
    ];
    let hints = Hints {
        fields: Vec::new(),
        tokens: tokens.iter().map(|t| t.to_vec()).collect(),
    };
    fuzz_support::run("csv", &seeds, &hints, CASES, |b| {
        let text = String::from_utf8_lossy(b);
        // The split-list line parser on every line (never fails, never panics).
        for line in text.lines() {
            let _ = parse_csv_line(line);
        }
        let a = parse_csv(&text)?;
        assert_eq!(a.shape.len(), 2);
        assert_eq!(a.shape[0] * a.shape[1], a.data.len());
        Ok(())
    });
}
