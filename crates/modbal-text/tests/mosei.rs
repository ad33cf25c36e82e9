//! The pickle reader and CMU-MOSEI: a tiny MulT-style pickle (committed, protocol 4; and, when
//! python3 + numpy are available, written at test time with protocols 2, 4 and 5 by
//! `tests/fixtures/make_mosei_pickle.py`) is read with exact values, labels follow the binary
//! and 7-class rules, and malformed files give errors naming the file.

use modbal_data::Dataset;
use modbal_text::pickle::{self, Value};
use modbal_text::{CmuMosei, CmuMoseiConfig, MoseiLabels};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_file(path: &Path) {
    let cfg = CmuMoseiConfig {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let s = CmuMosei::splits(&cfg).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (4, 3, 3));
    assert_eq!(s.train.modalities(), ["text", "audio", "vision"]);
    assert_eq!(s.train.input_shapes(), [vec![5, 6], vec![5, 4], vec![5, 3]]);
    assert_eq!(s.train.num_classes(), 2);
    for (split, d, off) in [
        ("train", &s.train, 0.0f32),
        ("valid", &s.val, 1.0),
        ("test", &s.test, 2.0),
    ] {
        for i in 0..d.len() {
            let x = d.get(i).unwrap();
            for t in 0..5 {
                for f in 0..6 {
                    let want = 0.01 * (100 * i + 10 * t + f) as f32 + off;
                    assert!(
                        (x.inputs[0][t * 6 + f] - want).abs() < 1e-6,
                        "{split} text[{i},{t},{f}]"
                    );
                }
            }
            // -inf → 0 (MulT), the rest the split offset.
            let a0 = x.inputs[1][0];
            assert_eq!(a0, if i == 0 { 0.0 } else { off }, "{split} audio[{i},0,0]");
            // Fortran-ordered float64 vision, back in C order.
            let v: Vec<f32> = (0..15).map(|k| (i * 15 + k) as f32).collect();
            assert_eq!(x.inputs[2], v, "{split} vision[{i}]");
        }
    }
    // Binary: y < 0 → 0 (0.0 counts as positive).
    let labels: Vec<u32> = (0..4).map(|i| s.train.get(i).unwrap().label).collect();
    assert_eq!(labels, [0, 1, 1, 0]);
    // 7-class: round-half-even(clip(y, −3, 3)) + 3: −1.2→2, 0→3, 2.5→5 (half to even), −3.4→0.
    let seven = CmuMosei::split(
        &CmuMoseiConfig {
            labels: MoseiLabels::Seven,
            ..cfg.clone()
        },
        "train",
    )
    .unwrap();
    assert_eq!(seven.num_classes(), 7);
    let labels: Vec<u32> = (0..4).map(|i| seven.get(i).unwrap().label).collect();
    assert_eq!(labels, [2, 3, 5, 0]);
    assert_eq!(seven.scores, [-1.2, 0.0, 2.5, -3.4]);
    // Strict mode refuses the -inf.
    let e = CmuMosei::split(
        &CmuMoseiConfig {
            zero_nonfinite: false,
            ..cfg.clone()
        },
        "train",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("audio") && e.contains("non-finite"), "{e}");
    // Modality selection and order.
    let two = CmuMosei::split(
        &CmuMoseiConfig {
            modalities: vec!["vision".into(), "text".into()],
            ..cfg
        },
        "test",
    )
    .unwrap();
    assert_eq!(two.input_shapes(), [vec![5, 3], vec![5, 6]]);
}

#[test]
fn committed_fixture_and_fresh_pickles() {
    check_file(&fixture("mosei_tiny.pkl"));
    let have_numpy = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_numpy {
        eprintln!("python3 + numpy not available: only the committed pickle was read");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for proto in [2, 4, 5] {
        let out = tmp.path().join(format!("mosei_p{proto}.pkl"));
        let st = std::process::Command::new("python3")
            .arg(fixture("make_mosei_pickle.py"))
            .arg(&out)
            .arg(proto.to_string())
            .status()
            .unwrap();
        assert!(st.success());
        check_file(&out);
    }
}

#[test]
fn pickle_values_and_errors() {
    // pickle.dumps({"a": [1, -2, 3.5, None, True], "b": (b"xy", "é")}, protocol=2)
    let bytes: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03c_codecs\nencode\nq\x04X\x02\x00\x00\x00xyq\x05X\x06\x00\x00\x00latin1q\x06\x86q\x07Rq\x08X\x02\x00\x00\x00\xc3\xa9q\t\x86q\nu.";
    let v = pickle::loads(bytes).unwrap();
    assert_eq!(
        v.get("a").unwrap(),
        &Value::List(vec![
            Value::Int(1),
            Value::Int(-2),
            Value::Float(3.5),
            Value::None,
            Value::Bool(true)
        ])
    );
    match v.get("b").unwrap() {
        Value::Tuple(t) => {
            assert_eq!(t[0].as_str().unwrap(), "xy");
            assert_eq!(t[1], Value::Str("é".into()));
        }
        other => panic!("{other:?}"),
    }
    assert!(pickle::loads(&bytes[..20])
        .unwrap_err()
        .contains("truncated"));
    assert!(pickle::loads(b"\x80\x02\xff")
        .unwrap_err()
        .contains("opcode 0xff"));

    // Malformed files through the dataset: the error names the file.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("mosei_broken.pkl");
    let full = std::fs::read(fixture("mosei_tiny.pkl")).unwrap();
    std::fs::write(&bad, &full[..full.len() / 2]).unwrap();
    let e = CmuMosei::splits(&CmuMoseiConfig {
        path: bad.clone(),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("mosei_broken.pkl"), "{e}");
    // A pickle that is not the MulT dict.
    std::fs::write(&bad, b"\x80\x02}q\x00X\x05\x00\x00\x00trainq\x01}q\x02s.").unwrap();
    let e = CmuMosei::splits(&CmuMoseiConfig {
        path: bad.clone(),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mosei_broken.pkl") && e.contains("labels"),
        "{e}"
    );
    let e = CmuMosei::splits(&CmuMoseiConfig {
        path: tmp.path().join("absent.pkl"),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("absent.pkl"), "{e}");
}
