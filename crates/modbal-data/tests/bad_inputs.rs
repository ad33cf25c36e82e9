//! Regression tests of issue 17 ("Bad inputs"): sizes read from a file header or an option are
//! never trusted. Each test writes a forged file (or sets an absurd option) and checks that the
//! error names the value — no capacity-overflow or out-of-bounds panic, no huge allocation, no
//! silently wrapped count.

use modbal_data::npy::{read_array, read_csv, read_npy, read_npy_header, write_npy};
use modbal_data::real::av::CremaDConfig;
use modbal_data::real::cgmnist::CgmnistConfig;
use modbal_data::real::fixtures;
use modbal_data::real::Layout;
use modbal_data::synth::SynthCommon;
use modbal_data::{Dataset, SynthAvConfig, SynthShiftConfig, SynthVecConfig};
use std::path::Path;

/// A `.npy` file (version 1.0 unless `v2`) with the header dict `dict` and the data `body`.
fn npy_bytes(dict: &str, body: &[u8], v2: bool) -> Vec<u8> {
    let mut h = dict.to_string();
    let pre = if v2 { 12 } else { 10 };
    while !(pre + h.len() + 1).is_multiple_of(64) {
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

fn err_of<T: std::fmt::Debug>(r: modbal_core::Result<T>) -> String {
    r.expect_err("must be refused").to_string()
}

#[test]
fn npy_shape_whose_size_overflows_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("forged.npy");
    // 2^62 × 4 elements of 8 bytes: the byte count wraps to 0 in unchecked arithmetic.
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }";
    std::fs::write(&p, npy_bytes(dict, &[0u8; 32], false)).unwrap();
    for e in [err_of(read_npy(&p)), err_of(read_npy_header(&p))] {
        assert!(
            e.contains("forged.npy")
                && e.contains("[4611686018427387904, 4]")
                && e.contains("more bytes than this machine can address"),
            "{e}"
        );
    }
    // (2^62 + 1) × 4 one-byte elements wraps to 4, the 4 bytes present.
    let dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387905, 4), }";
    std::fs::write(&p, npy_bytes(dict, &[1, 2, 3, 4], false)).unwrap();
    let e = err_of(read_npy(&p));
    assert!(e.contains("[4611686018427387905, 4]"), "{e}");
}

#[test]
fn npy_shape_must_match_the_bytes_present() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    // A header claiming 10^9 floats over 8 bytes of data.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }";
    std::fs::write(&p, npy_bytes(dict, &[0u8; 8], false)).unwrap();
    for e in [err_of(read_npy(&p)), err_of(read_npy_header(&p))] {
        assert!(
            e.contains("data truncated: shape [1000000000] needs 4000000000 bytes, file has 8"),
            "{e}"
        );
    }
    // More data than the shape says: header and data disagree.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    std::fs::write(&p, npy_bytes(dict, &[0u8; 12], false)).unwrap();
    for e in [err_of(read_npy(&p)), err_of(read_npy_header(&p))] {
        assert!(
            e.contains("shape [2] of dtype <f4 needs 8 bytes of data, file has 12"),
            "{e}"
        );
    }
    // The exact size is read as before.
    std::fs::write(&p, npy_bytes(dict, &[0u8; 8], false)).unwrap();
    assert_eq!(read_npy(&p).unwrap().shape, vec![2]);
    assert_eq!(read_npy_header(&p).unwrap(), ("<f4".to_string(), vec![2]));
}

#[test]
fn npy_header_length_beyond_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.npy");
    // Version 2.0: a 4-byte header length of 0xFFFFFFFF over a 76-byte file (allocated up front
    // by the header-only reader before).
    let mut b = npy_bytes(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &[0u8; 8],
        true,
    );
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let want = format!(
        "truncated header: header length 4294967295, file has {} bytes",
        b.len()
    );
    for e in [err_of(read_npy(&p)), err_of(read_npy_header(&p))] {
        assert!(e.contains(&want), "{e}");
    }
}

#[test]
fn npy_odd_dtype_strings_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npy");
    for (descr, needle) in [
        ("", "unsupported dtype \"\""),
        ("é4", "unsupported dtype \"é4\""),
    ] {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
        std::fs::write(&p, npy_bytes(&dict, &[0u8; 4], false)).unwrap();
        let e = err_of(read_npy(&p));
        assert!(e.contains(needle), "{descr:?}: {e}");
    }
}

#[test]
fn csv_with_a_byte_order_mark_keeps_its_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bom.csv");
    std::fs::write(&p, "\u{feff}1,2\n3,4\n").unwrap();
    let a = read_csv(&p).unwrap();
    assert_eq!(
        (a.shape.clone(), a.data.clone()),
        (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
    );
    // With a header row after the BOM, the header is still skipped.
    std::fs::write(&p, "\u{feff}a,b\n1,2\n").unwrap();
    assert_eq!(read_array(&p).unwrap().data, vec![1.0, 2.0]);
}

/// Overwrite the 32-bit big-endian word `at` of an IDX file.
fn poke(path: &Path, at: usize, v: u32) {
    let mut b = std::fs::read(path).unwrap();
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    std::fs::write(path, b).unwrap();
}

fn cgmnist_err(root: &Path) -> String {
    CgmnistConfig {
        root: root.to_path_buf(),
        ..Default::default()
    }
    .build()
    .expect_err("must be refused")
    .to_string()
}

#[test]
fn idx_sizes_that_wrap_to_zero_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_mnist(dir.path(), 20, 10, 0).unwrap();
    let ip = dir.path().join("train-images-idx3-ubyte");
    // 2^16 images of 2^24 × 2^24: n·rows·cols = 2^64 wraps to 0 in unchecked arithmetic.
    poke(&ip, 4, 1 << 16);
    poke(&ip, 8, 1 << 24);
    poke(&ip, 12, 1 << 24);
    let e = cgmnist_err(dir.path());
    assert!(
        e.contains("train-images-idx3-ubyte")
            && e.contains("65536 images of 16777216×16777216")
            && e.contains("more bytes than this machine can address"),
        "{e}"
    );
}

#[test]
fn idx_sizes_must_match_the_file_length() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_mnist(dir.path(), 20, 10, 0).unwrap();
    let ip = dir.path().join("t10k-images-idx3-ubyte");
    // More images than the file holds.
    poke(&ip, 4, 1000);
    let e = cgmnist_err(dir.path());
    assert!(
        e.contains("t10k-images-idx3-ubyte")
            && e.contains("truncated: 1000 images of 28×28 need 784016 bytes, file has 7856"),
        "{e}"
    );
    // Fewer images than the file holds.
    poke(&ip, 4, 5);
    let e = cgmnist_err(dir.path());
    assert!(
        e.contains("header says 5 images of 28×28 (3936 bytes), but the file has 7856"),
        "{e}"
    );
    // No images at all (the shapes would be unbounded).
    poke(&ip, 4, 0);
    let e = cgmnist_err(dir.path());
    assert!(e.contains("the header says 0 images"), "{e}");
    // Trailing bytes in the label file.
    poke(&ip, 4, 10);
    let lp = dir.path().join("t10k-labels-idx1-ubyte");
    let mut b = std::fs::read(&lp).unwrap();
    b.push(3);
    std::fs::write(&lp, b).unwrap();
    let e = cgmnist_err(dir.path());
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("10 labels (19 bytes) for 10 images"),
        "{e}"
    );
}

#[test]
fn synthetic_sizes_are_bounded_and_named() {
    let vec_cfg = |train: usize| SynthVecConfig {
        common: SynthCommon {
            train,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = err_of(vec_cfg(1_000_000_000).build());
    assert!(
        e.contains("dataset.train = 1000000000")
            && e.contains("48 values each")
            && e.contains("more than the limit of 268435456"),
        "{e}"
    );
    // Sizes whose sum overflows.
    let e = err_of(vec_cfg(usize::MAX).build());
    assert!(
        e.contains(&format!("dataset.train = {}", usize::MAX))
            && e.contains("more than usize::MAX"),
        "{e}"
    );
    // Class-level tables count too: 2^40 classes of means.
    let mut c = vec_cfg(10);
    c.common.classes = 1 << 40;
    c.common.audio_confusable = 0;
    let e = err_of(c.build());
    assert!(e.contains("1099511627776 classes"), "{e}");
    // A spectrogram side whose square overflows (and whose FFT size would wrap).
    let av = SynthAvConfig {
        spec_size: usize::MAX / 2,
        ..Default::default()
    };
    let e = err_of(av.build());
    assert!(e.contains(&format!("{}", usize::MAX / 2)), "{e}");
    let shift = SynthShiftConfig {
        image_size: 1_000_000,
        ..Default::default()
    };
    let e = err_of(shift.build());
    assert!(
        e.contains("[1, 1000000, 1000000]") && e.contains("dataset.train = 3000"),
        "{e}"
    );
    // The defaults are well inside the limit.
    assert!(SynthShiftConfig {
        train: 10,
        val: 10,
        test: 10,
        ..Default::default()
    }
    .build()
    .is_ok());
}

/// A prepared CREMA-D tree whose clips come from `actors` actors (ids `10AA_IEO_EMO_XX`), all
/// in `splits/train.csv`, as `modbal prepare`'s actor-disjoint split leaves a tree of fewer
/// than 10 actors; `test_csv`: the content of `splits/test.csv`, if any.
fn cremad_tree(root: &Path, actors: u32, test_csv: Option<&str>) {
    for d in ["splits", "audio", "visual"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let emotions = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"];
    std::fs::write(root.join("classes.txt"), emotions.join("\n") + "\n").unwrap();
    let mut train = String::from("id,label\n");
    for a in 0..actors {
        for e in emotions {
            for s in ["IEO", "DFA"] {
                let id = format!("{}_{s}_{e}_XX", 1001 + a);
                train.push_str(&format!("{id},{e}\n"));
                write_npy(
                    &root.join("audio").join(format!("{id}.npy")),
                    &[4, 3],
                    &[0.5f32; 12],
                )
                .unwrap();
                let dir = root.join("visual").join(&id);
                std::fs::create_dir_all(&dir).unwrap();
                fixtures::write_image(&dir.join("00001.png"), 8, 8, 3, |_, _, _| 100).unwrap();
            }
        }
    }
    std::fs::write(root.join("splits/train.csv"), train).unwrap();
    if let Some(t) = test_csv {
        std::fs::write(root.join("splits/test.csv"), t).unwrap();
    }
}

fn cremad(root: &Path) -> CremaDConfig {
    CremaDConfig {
        root: root.to_path_buf(),
        layout: Layout::Prepared,
        image_size: 8,
        val_fraction: 0.25,
        ..Default::default()
    }
}

#[test]
fn cremad_with_fewer_than_ten_actors_names_the_actor_count() {
    // No test.csv at all (what `modbal prepare` writes when no actor is held out).
    let dir = tempfile::tempdir().unwrap();
    cremad_tree(dir.path(), 5, None);
    let e = err_of(cremad(dir.path()).build());
    assert!(
        e.contains("test.csv does not exist")
            && e.contains("come from 5 actor(s) ([1001, 1002, 1003, 1004, 1005])")
            && e.contains("fewer than 10 actors"),
        "{e}"
    );
    // A test.csv with no row.
    let dir = tempfile::tempdir().unwrap();
    cremad_tree(dir.path(), 3, Some("id,label\n"));
    let e = err_of(cremad(dir.path()).build());
    assert!(
        e.contains("dataset crema-d: the test split is empty")
            && e.contains("test.csv lists no clip")
            && e.contains("come from 3 actor(s)"),
        "{e}"
    );
    // With a test clip the tree loads.
    let dir = tempfile::tempdir().unwrap();
    cremad_tree(dir.path(), 2, Some("id,label\n1001_IEO_NEU_XX,NEU\n"));
    let (train, val, test) = cremad(dir.path()).build_splits().unwrap();
    assert_eq!((train.len() + val.len(), test.len()), (24, 1));
}

#[test]
fn an_empty_validation_split_is_a_warning_and_loading_still_works() {
    // One training clip per class: round(0.25 · 1) = 0 held out in every class. The splits still
    // load (a warning naming val_fraction goes to stderr: unit test in real/av.rs), and the
    // training-side check names the empty split.
    let dir = tempfile::tempdir().unwrap();
    fixtures::AvFixture {
        train_per_class: 1,
        test_per_class: 1,
        ..Default::default()
    }
    .write_prepared(dir.path())
    .unwrap();
    let splits = cremad(dir.path()).build().unwrap();
    assert_eq!((splits.train.len(), splits.val.len()), (6, 0));
    let e = splits.validate().unwrap_err().to_string();
    assert!(e.contains("empty split: train 6, val 0, test 6"), "{e}");
}
