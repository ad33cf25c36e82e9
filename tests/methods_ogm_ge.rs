//! `ogm-ge` through the registry and the training loop, plus one-step checks of the hooks.
//!
//! Reference values are closed forms: `k = 1 − tanh(α·ρ)` if `ρ > 1`, else 1 (OGM-GE eq 10,
//! form "paper") with `ρ_m = s_m / min s`, `s_m = Σ_i softmax(z_m,i)[y_i]`; the window is the
//! official `[0, 51)` of 100 epochs scaled to the run: `[0, round(51·N/100))`.

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::ogm_ge::{OgmGeMethod, OgmGeMethodConfig, OgmGeScope};
use modbal::modulate::true_class_score;
use modbal::tensors::SeededRng;

fn ogm_run(out: &std::path::Path, seed: u64, extra: &[&str]) -> modbal::RunConfig {
    let mut sets = vec!["method.name=ogm-ge".to_string()];
    sets.extend(extra.iter().map(|s| s.to_string()));
    common::small_vec(out, seed, 3)
        .with_overrides(&sets)
        .unwrap()
}

fn per_mod(rec: &modbal::EpochRecord, key: &str, m: &str) -> f64 {
    rec.method[key][m]
        .as_f64()
        .unwrap_or_else(|| panic!("method.{key}.{m} missing in {:?}", rec.method))
}

#[test]
fn run_completes_and_only_the_stronger_modality_is_slowed() {
    let dir = tempfile::tempdir().unwrap();
    // Window taken literally (schedule_epochs = 0): every epoch of the 3 is modulated.
    let out = common::train(&ogm_run(dir.path(), 0, &["method.schedule_epochs=0"]));
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for r in &train {
        eprintln!(
            "epoch {}: s {:?} rho {:?} k {:?} tensors {:?} | val acc {:?}",
            r.epoch,
            r.method["s"],
            r.method["rho"],
            r.method["k"],
            r.method["tensors"],
            recs.iter()
                .find(|v| v.split == "val" && v.epoch == r.epoch)
                .map(|v| (v.fusion_acc, v.modality_acc.clone()))
        );
        assert_eq!(r.method["active"].as_f64(), Some(1.0));
        for m in ["audio", "visual"] {
            let (rho, k) = (per_mod(r, "rho", m), per_mod(r, "k", m));
            assert!(rho >= 1.0 && k <= 1.0 && k > 0.0, "{m}: rho {rho} k {k}");
            // k < 1 exactly where ρ > 1 (both are epoch means of per-batch values, and
            // ρ_m = 1 in a batch ⇔ k_m = 1 there).
            assert_eq!(k < 1.0, rho > 1.0, "{m}: rho {rho} k {k}");
            // Scope `auto` on synth-vec's MLP encoders: the weight matrices (2 per encoder
            // with the default one hidden layer).
            assert!(per_mod(r, "tensors", m) > 0.0);
        }
        // synth-vec's audio dominates: it is the one slowed down.
        assert!(per_mod(r, "k", "audio") < 1.0);
        assert!(per_mod(r, "k", "audio") < per_mod(r, "k", "visual"));
        // Unimodal CEs are logged (not backpropagated).
        assert!(r.method["loss.audio"].as_f64().is_some());
        assert!(r.method["loss.fused"].as_f64().is_some());
    }
    let s = out.summary.unwrap();
    assert!(s.test.fusion_acc > 0.4, "{}", s.test.fusion_acc);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = common::train(&ogm_run(a.path(), 7, &["train.epochs=2"]));
    let rb = common::train(&ogm_run(b.path(), 7, &["train.epochs=2"]));
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

#[test]
fn bad_options_are_named() {
    let err = |opts: &str| {
        let t: toml::Table = toml::from_str(opts).unwrap();
        common::build_method("ogm-ge", &t).unwrap_err().to_string()
    };
    let e = err("alpah = 0.5");
    assert!(e.contains("alpah"), "{e}");
    let e = err("alpha = -1.0");
    assert!(e.contains("alpha"), "{e}");
    let e = err("scope = \"everything\"");
    assert!(e.contains("everything"), "{e}");
    let e = err("window = { start = 5, end = 2 }");
    assert!(e.contains("window"), "{e}");
    // The defaults are recorded in the resolved options.
    let b = common::build_method("ogm-ge", &toml::Table::new()).unwrap();
    assert_eq!(b.resolved["alpha"].as_float(), Some(0.8));
    assert_eq!(b.resolved["form"].as_str(), Some("paper"));
    assert_eq!(b.resolved["scope"].as_str(), Some("auto"));
    assert_eq!(b.resolved["window"]["end"].as_integer(), Some(51));
    assert_eq!(b.resolved["schedule_epochs"].as_integer(), Some(100));
    // "official" is accepted as an alias of "paper" (eq 10 = the official code) and resolves to
    // "paper"; "continuous" is the variant; anything else is named.
    let t: toml::Table = toml::from_str("form = \"official\"").unwrap();
    let b = common::build_method("ogm-ge", &t).unwrap();
    assert_eq!(b.resolved["form"].as_str(), Some("paper"));
    let t: toml::Table = toml::from_str("form = \"continuous\"").unwrap();
    let b = common::build_method("ogm-ge", &t).unwrap();
    assert_eq!(b.resolved["form"].as_str(), Some("continuous"));
    let e = err("form = \"relu\"");
    assert!(e.contains("relu"), "{e}");
}

/// A 12-epoch run with the default window (official epochs 0-50 of 100): the window scaled to
/// the run is `[0, round(51·12/100)) = [0, 6)`, so epochs 0-5 are modulated (`active = 1`,
/// audio's `k < 1`) and epochs 6-11 are not (`active = 0`, `k = 1` for every modality).
#[test]
fn default_window_is_scaled_to_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&ogm_run(dir.path(), 0, &["train.epochs=12"]));
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 12);
    for r in &train {
        eprintln!(
            "epoch {}: active {:?} k {:?} rho {:?}",
            r.epoch, r.method["active"], r.method["k"], r.method["rho"]
        );
        assert_eq!(r.method["window.start"].as_f64(), Some(0.0));
        assert_eq!(r.method["window.end"].as_f64(), Some(6.0));
        if r.epoch < 6 {
            assert_eq!(r.method["active"].as_f64(), Some(1.0), "epoch {}", r.epoch);
            assert!(per_mod(r, "k", "audio") < 1.0, "epoch {}", r.epoch);
        } else {
            assert_eq!(r.method["active"].as_f64(), Some(0.0), "epoch {}", r.epoch);
            for m in ["audio", "visual"] {
                assert_eq!(per_mod(r, "k", m), 1.0, "epoch {} {m}", r.epoch);
            }
            // ρ is still measured (and audio still leads) outside the window.
            assert!(per_mod(r, "rho", "audio") > 1.0);
        }
    }
}

/// A two-modality MLP model and a batch in which audio is made informative (its input carries
/// the label) so that the two scores differ.
fn tiny() -> (MultimodalNet, Batch) {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(3);
    let specs = [
        ModalitySpec::new("audio", EncoderConfig::Mlp { hidden: vec![8] }, &[4]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![8] }, &[4]),
    ];
    let net = MultimodalNet::new(&specs, &FusionConfig::Concat, 3, &mut rng, &dev).unwrap();
    let b = 12;
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
    let a: Vec<f32> = labels
        .iter()
        .flat_map(|&y| (0..4).map(move |j| if j == y as usize { 3.0 } else { 0.0 }))
        .collect();
    let batch = Batch {
        inputs: vec![
            Tensor::from_vec(a, (b, 4), &dev).unwrap(),
            rng.randn((b, 4), 0.0, 1.0, DType::F32, &dev).unwrap(),
        ],
        labels: Tensor::from_vec(labels, b, &dev).unwrap(),
        sample_ids: (0..b).collect(),
    };
    (net, batch)
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn one_step_scales_only_the_stronger_encoder_by_k() {
    let (net, batch) = tiny();
    let cfg = OgmGeMethodConfig {
        ge: false,
        ..Default::default()
    };
    let alpha = cfg.alpha;
    let mut method = OgmGeMethod::new(cfg).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
    let plain = loss.total.backward().unwrap();
    let modulated = method
        .backward(&net, &batch, &out, &loss, &mut ctx)
        .unwrap();
    let s: Vec<f64> = out
        .per_modality_logits
        .iter()
        .map(|z| true_class_score(z, &batch.labels).unwrap())
        .collect();
    let min = s[0].min(s[1]);
    // eq 10: k = 1 − tanh(α·ρ) if ρ > 1, else 1.
    let k: Vec<f64> = s
        .iter()
        .map(|x| {
            let rho = x / min;
            if rho > 1.0 {
                1.0 - (alpha * rho).tanh()
            } else {
                1.0
            }
        })
        .collect();
    eprintln!("scores {s:?} k {k:?}");
    assert!(s[0] != s[1]);
    // Exactly one modality (the one with ρ > 1) has k < 1.
    assert_eq!(k.iter().filter(|&&x| x < 1.0).count(), 1);
    let (scoped, _) = method.scoped_params(&net);
    let names: Vec<&String> = scoped.iter().map(|(n, _)| n).collect();
    for (name, var) in net.params().trainable() {
        let g0 = to_vec(plain.get(var.as_tensor()).unwrap());
        let g1 = to_vec(modulated.get(var.as_tensor()).unwrap());
        let m = if name.starts_with("encoder.audio") {
            Some(0)
        } else if name.starts_with("encoder.visual") {
            Some(1)
        } else {
            None
        };
        // Scope `auto` on MLPs: rank ≥ 2 encoder tensors (weights), never biases or the head.
        let in_scope = names.contains(&&name);
        assert_eq!(in_scope, m.is_some() && var.rank() >= 2, "{name}");
        let factor = if in_scope { k[m.unwrap()] } else { 1.0 };
        for (a, b) in g0.iter().zip(&g1) {
            assert!(
                (a * factor - b).abs() <= 1e-6 * (1.0 + a.abs()),
                "{name}: {a} × {factor} vs {b}"
            );
        }
    }
}

#[test]
fn conv_kernel_scope_leaves_mlp_encoders_alone() {
    let (net, batch) = tiny();
    let method = OgmGeMethod::new(OgmGeMethodConfig {
        scope: OgmGeScope::ConvKernels,
        ..Default::default()
    })
    .unwrap();
    assert!(method.scoped_params(&net).0.is_empty());
    let all = OgmGeMethod::new(OgmGeMethodConfig {
        scope: OgmGeScope::AllEncoder,
        ..Default::default()
    })
    .unwrap();
    // `hidden = [8]`: one Linear (weight, bias) per encoder, × 2 encoders.
    assert_eq!(all.scoped_params(&net).0.len(), 4);
    let _ = batch;
}

/// Outside the window OGM-GE touches nothing and draws nothing: with an empty window it is
/// concat training step for step (same seed), and logs `k = 1`.
#[test]
fn empty_window_is_concat() {
    let dir = tempfile::tempdir().unwrap();
    let ogm = common::train(&ogm_run(
        dir.path(),
        0,
        &["method.window={ start = 0, end = 0 }"],
    ));
    let concat = common::train(&common::small_vec(dir.path(), 0, 3));
    let (a, b) = (
        common::read_metrics(&ogm.run_dir),
        common::read_metrics(&concat.run_dir),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.loss, x.fusion_acc), (y.loss, y.fusion_acc));
        if x.split == "train" {
            assert_eq!(x.method["active"].as_f64(), Some(0.0));
            assert_eq!(per_mod(x, "k", "audio"), 1.0);
        }
    }
}
