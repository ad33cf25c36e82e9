//! `modbal estimate`: values against references, file formats, and clear errors.

use modbal::data::npy::write_npy;
use modbal::tensors::SeededRng;
use std::path::Path;
use std::process::Command;

fn modbal(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modbal"))
        .args(args)
        .output()
        .expect("run modbal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

fn p(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

#[test]
fn discrete_estimators_match_scikit_learn() {
    // scikit-learn 1.9.1:
    //   x = [0, 0, 1, 1, 2, 2, 0, 1]; y = [0, 0, 1, 1, 1, 2, 2, 0]
    //   mutual_info_score(x, y)                                    -> 0.43152310867767113
    //   normalized_mutual_info_score(x, y, average_method="geometric") -> 0.398747820241147
    let dir = tempfile::tempdir().unwrap();
    write_npy(
        &dir.path().join("x.npy"),
        &[8],
        &[0i64, 0, 1, 1, 2, 2, 0, 1],
    )
    .unwrap();
    std::fs::write(dir.path().join("y.csv"), "label\n0\n0\n1\n1\n1\n2\n2\n0\n").unwrap();
    let (code, out, err) = modbal(&[
        "estimate",
        "mi",
        "--x",
        &p(dir.path(), "x.npy"),
        "--y",
        &p(dir.path(), "y.csv"),
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["estimator"], "mi");
    assert_eq!(v["n"], 8);
    assert!((v["estimate"].as_f64().unwrap() - 0.43152310867767113).abs() < 1e-12);
    let (code, out, err) = modbal(&[
        "estimate",
        "nmi",
        "--x",
        &p(dir.path(), "x.npy"),
        "--y",
        &p(dir.path(), "y.csv"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!((json(&out)["estimate"].as_f64().unwrap() - 0.398747820241147).abs() < 1e-12);
    // CMI given a constant Z equals MI (closed form); NCMI stays in [0, 1].
    write_npy(&dir.path().join("z.npy"), &[8], &[1i64; 8]).unwrap();
    let args = [
        "--x",
        &p(dir.path(), "x.npy"),
        "--y",
        &p(dir.path(), "y.csv"),
        "--z",
        &p(dir.path(), "z.npy"),
    ];
    let (code, out, err) = modbal(&[&["estimate", "cmi"][..], &args].concat());
    assert_eq!(code, 0, "{err}");
    assert!((json(&out)["estimate"].as_f64().unwrap() - 0.43152310867767113).abs() < 1e-12);
    let (code, out, _) = modbal(&[&["estimate", "ncmi"][..], &args].concat());
    assert_eq!(code, 0);
    let v = json(&out)["estimate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&v));
}

#[test]
fn gaussian_and_club_estimates_are_close_to_the_closed_form() {
    // x ~ N(0, 1), y = 0.8 x + 0.6 ε: I = −½ log(1 − 0.8²) = 0.5108 nats (closed form).
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SeededRng::new(1);
    let n = 4000;
    let x: Vec<f32> = rng
        .normal_vec(n, 0.0, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let y: Vec<f64> = x
        .iter()
        .map(|&v| 0.8 * v as f64 + 0.6 * rng.normal())
        .collect();
    write_npy(&dir.path().join("x.npy"), &[n, 1], &x).unwrap();
    write_npy(&dir.path().join("y.npy"), &[n], &y).unwrap();
    let truth = -0.5 * (1.0f64 - 0.64).ln();
    let xy = [
        "--x",
        &p(dir.path(), "x.npy"),
        "--y",
        &p(dir.path(), "y.npy"),
    ];
    let (code, out, err) = modbal(&[&["estimate", "gaussian-mi"][..], &xy].concat());
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["n"], n);
    assert!(
        (v["estimate"].as_f64().unwrap() - truth).abs() < 0.03,
        "{v}"
    );
    let (code, out, err) = modbal(&[&["estimate", "club", "--steps", "300"][..], &xy].concat());
    assert_eq!(code, 0, "{err}");
    let c = json(&out)["estimate"].as_f64().unwrap();
    // CLUB upper-bounds I, but is not tight here: with the exact q(y|x) = N(0.8x, 0.36) it
    // equals E_x KL(p(y) || p(y|x)) + I = ρ²/(1 − ρ²) = 1.778 (closed form). q's log-variance is
    // tanh-bounded (σ² ≥ e⁻¹ = 0.368), so the fitted value sits slightly below that.
    let club_exact = 0.64 / 0.36;
    assert!(
        c > truth && (c - club_exact).abs() < 0.2,
        "CLUB {c}: true MI {truth}, exact-q CLUB {club_exact}"
    );
    let (code, out, _) = modbal(&[
        "estimate",
        "gaussian-entropy",
        "--x",
        &p(dir.path(), "x.npy"),
    ]);
    assert_eq!(code, 0);
    // H of N(0, 1) = ½ log(2πe) = 1.4189 nats.
    let h = json(&out)["estimate"].as_f64().unwrap();
    assert!((h - 1.4189385332046727).abs() < 0.05, "{h}");
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_npy(&dir.path().join("a.npy"), &[5, 2], &[0.5f64; 10]).unwrap();
    write_npy(&dir.path().join("b.npy"), &[4], &[0.5f64; 4]).unwrap();
    std::fs::write(dir.path().join("bad.npy"), b"not numpy at all").unwrap();
    let a = p(dir.path(), "a.npy");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec![
                "gaussian-mi".into(),
                "--x".into(),
                a.clone(),
                "--y".into(),
                p(dir.path(), "b.npy"),
            ],
            vec!["shape mismatch", "[5, 2]", "[4]"],
        ),
        (
            vec!["gaussian-mi".into(), "--x".into(), a.clone()],
            vec!["--y"],
        ),
        (
            vec![
                "mi".into(),
                "--x".into(),
                p(dir.path(), "missing.npy"),
                "--y".into(),
                a.clone(),
            ],
            vec!["missing.npy"],
        ),
        (
            vec![
                "mi".into(),
                "--x".into(),
                p(dir.path(), "bad.npy"),
                "--y".into(),
                a.clone(),
            ],
            vec!["bad.npy", "magic"],
        ),
        (
            vec![
                "cmi".into(),
                "--x".into(),
                a.clone(),
                "--y".into(),
                a.clone(),
            ],
            vec!["--z"],
        ),
        (
            vec![
                "mi".into(),
                "--x".into(),
                a.clone(),
                "--y".into(),
                a.clone(),
                "--bins".into(),
                "0".into(),
            ],
            vec!["bins"],
        ),
    ];
    for (args, needles) in cases {
        let mut full = vec!["estimate"];
        full.extend(args.iter().map(String::as_str));
        let (code, _, err) = modbal(&full);
        assert_eq!(code, 1, "{full:?} should fail");
        for n in needles {
            assert!(err.contains(n), "{full:?}: {err:?} lacks {n:?}");
        }
    }
}
