//! `modbal estimate` on forged inputs and absurd options (issue 17, "Bad inputs"): every case
//! exits 1 with an error naming the value — no panic, no huge allocation, no exit 0 with a
//! wrapped number.

mod common;

use modbal::data::npy::write_npy;
use std::path::Path;

fn p(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

/// A version-1.0 `.npy` file with the header dict `dict` and the data `body`.
fn forged_npy(path: &Path, dict: &str, body: &[u8]) {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((h.len() as u16).to_le_bytes());
    b.extend(h.as_bytes());
    b.extend(body);
    std::fs::write(path, b).unwrap();
}

fn fails_naming(args: &[&str], needles: &[&str]) {
    let mut full = vec!["estimate"];
    full.extend(args);
    let (code, out, err) = common::modbal_cli(&full);
    assert_eq!(
        code, 1,
        "{full:?} should fail with exit 1: stdout {out:?}, stderr {err:?}"
    );
    assert!(!err.contains("panicked"), "{full:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{full:?}: {err:?} lacks {n:?}");
    }
}

#[test]
fn huge_bins_is_refused_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    write_npy(
        &dir.path().join("a.npy"),
        &[5, 2],
        &[0.5f64, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    )
    .unwrap();
    let a = p(dir.path(), "a.npy");
    fails_naming(
        &["mi", "--x", &a, "--y", &a, "--bins", "1000000000"],
        &["--bins 1000000000", "1048576"],
    );
    fails_naming(
        &[
            "cmi",
            "--x",
            &a,
            "--y",
            &a,
            "--z",
            &a,
            "--bins",
            "4294967296",
        ],
        &["--bins 4294967296"],
    );
    // The limit itself is accepted.
    let (code, out, err) =
        common::modbal_cli(&["estimate", "mi", "--x", &a, "--y", &a, "--bins", "1048576"]);
    assert_eq!(code, 0, "{out} {err}");
}

#[test]
fn forged_npy_shape_is_refused_naming_the_shape() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    write_npy(&dir.path().join("y.npy"), &[4], &[0i64, 1, 0, 1]).unwrap();
    let y = p(dir.path(), "y.npy");
    // 2^62 + 1 rows of 4 one-byte labels: the element count wraps to 4, the bytes present.
    forged_npy(
        &x,
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387905, 4), }",
        &[0, 1, 0, 1],
    );
    let xs = x.display().to_string();
    for est in ["mi", "gaussian-mi", "gaussian-entropy"] {
        fails_naming(
            &[est, "--x", &xs, "--y", &y],
            &["x.npy", "[4611686018427387905, 4]"],
        );
    }
    // 2^62 rows of 1 byte over 4 bytes of data.
    forged_npy(
        &x,
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387904,), }",
        &[0, 1, 0, 1],
    );
    fails_naming(
        &["mi", "--x", &xs, "--y", &y],
        &["x.npy", "data truncated: shape [4611686018427387904] needs 4611686018427387904 bytes, file has 4"],
    );
}

#[test]
fn csv_with_a_byte_order_mark_keeps_its_first_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.csv"), "\u{feff}0\n1\n0\n1\n").unwrap();
    std::fs::write(dir.path().join("y.csv"), "0\n1\n0\n1\n").unwrap();
    let (code, out, err) = common::modbal_cli(&[
        "estimate",
        "mi",
        "--x",
        &p(dir.path(), "x.csv"),
        "--y",
        &p(dir.path(), "y.csv"),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // All 4 rows (the BOM used to turn the first into a skipped "header": 3 rows, shape error).
    assert_eq!(v["n"], 4, "{out}");
    // I(X; X) for a fair binary X is log 2.
    assert!(
        (v["estimate"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-12,
        "{out}"
    );
}

#[test]
fn gaussian_estimators_refuse_absurd_widths() {
    let dir = tempfile::tempdir().unwrap();
    // 2 × 9000 floats (144 kB) would need a 9000 × 9000 covariance.
    let data: Vec<f64> = (0..18_000).map(|i| (i % 7) as f64).collect();
    write_npy(&dir.path().join("w.npy"), &[2, 9000], &data).unwrap();
    let w = p(dir.path(), "w.npy");
    fails_naming(
        &["gaussian-entropy", "--x", &w],
        &["x has 9000 columns", "limit of 8192"],
    );
    fails_naming(
        &["gaussian-mi", "--x", &w, "--y", &w],
        &[
            "x has 9000 columns, y has 9000 columns",
            "18000 columns together",
        ],
    );
}
