//! `mmcosine` (MMCosine, ICASSP'23): the cosine logits, their gradients, evaluation on the cosine
//! classifier, resume, three modalities and runs through the registry.
//!
//! Reference values are closed forms of `z_m = s·cos(f_m, W_m,c)`, `z = Σ_m z_m`,
//! `L = CE(z, y)` (module docs of `modbal::methods::mmcosine`), derived by hand below; no
//! PyTorch or numpy was available here, so the PyTorch snippet of the official arithmetic is
//! quoted with the numbers it gives by hand (plain-Python `math` for the logs).

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::mmcosine::{cosine_logits, EvalFused, MmCosine, MmCosineConfig, MmCosineHead};
use modbal::methods::params::MethodParams;
use modbal::tensors::SeededRng;

/// A model whose encoders only flatten (`Mlp { hidden: [] }`: features = inputs), with
/// `M` modalities of width `d` and `c` classes.
fn net(m: usize, d: usize, c: usize, fusion: FusionConfig) -> MultimodalNet {
    let names = ["audio", "visual", "text"];
    let specs: Vec<_> = names[..m]
        .iter()
        .map(|n| ModalitySpec::new(*n, EncoderConfig::Mlp { hidden: vec![] }, &[d]))
        .collect();
    let mut rng = SeededRng::new(3);
    MultimodalNet::new(&specs, &fusion, c, &mut rng, &Device::Cpu).unwrap()
}

fn set(model: &dyn MultimodalModel, name: &str, rows: &[&[f32]]) {
    let v = common::var(model, name);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    v.set(&Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap())
        .unwrap();
}

fn t2(rows: &[&[f32]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

fn close(a: &[Vec<f64>], b: &[Vec<f64>], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.iter().zip(rb) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }
}

fn method(cfg: MmCosineConfig) -> MmCosine {
    MmCosine::new(cfg).unwrap()
}

/// The independent closed form: `s·⟨f, w⟩ / (‖f‖·‖w‖)` per (sample, class).
fn cos_ref(f: &[Vec<f64>], w: &[Vec<f64>], s: f64) -> Vec<Vec<f64>> {
    let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    f.iter()
        .map(|fi| {
            w.iter()
                .map(|wc| {
                    s * fi.iter().zip(wc).map(|(a, b)| a * b).sum::<f64>() / (norm(fi) * norm(wc))
                })
                .collect()
        })
        .collect()
}

// ---- reference: the official arithmetic, one sample, hand-derived ---------------------------
//
// Official main_CD.py (train_epoch, --mmcosine True --scaling 10), restated on 2-d features:
//   a = torch.tensor([[3., 4.]]); v = torch.tensor([[1., 0.]]); y = torch.tensor([0])
//   W = torch.tensor([[1., 0., 0., 2.], [0., 2., 3., 0.]])          # fc_out.weight [C=2, 4]
//   out_a = torch.mm(F.normalize(a, dim=1), F.normalize(W[:, :2].t(), dim=0)) * 10
//   out_v = torch.mm(F.normalize(v, dim=1), F.normalize(W[:, 2:].t(), dim=0)) * 10
//   out = out_a + out_v; loss = F.cross_entropy(out, y); loss.backward()
// By hand: â = (0.6, 0.8); audio rows (1,0)→(1,0), (0,2)→(0,1): out_a = (6, 8). v̂ = (1, 0);
// visual rows (0,2)→(0,1), (3,0)→(1,0): out_v = (0, 10). out = (6, 18);
// loss = log(1 + e^12) = 12.000006144193478; CE(out_a) = log(1 + e^2) = 2.1269280110429727,
// CE(out_v) = log(1 + e^10) = 10.000045398899218 (logged only).
// Gradients, with p₁ = σ(12) = 0.9999938558253978 and ∂cos/∂w = (f̂ − cos·ŵ)/‖w‖:
//   W[0, :2] (cos 0.6):  (p₀−1)·10·((0.6,0.8) − 0.6·(1,0))/1 = (0, −8·p₁)
//   W[1, :2] (cos 0.8):  p₁·10·((0.6,0.8) − 0.8·(0,1))/2     = (3·p₁, 0)
//   W[0, 2:] (cos 0):    (p₀−1)·10·((1,0) − 0)/2             = (−5·p₁, 0)
//   W[1, 2:] (cos 1):    p₁·10·((1,0) − (1,0))/3             = (0, 0)
//   bias: unused, no gradient.
#[test]
fn official_arithmetic_one_sample() {
    let model = net(2, 2, 2, FusionConfig::Concat);
    set(
        &model,
        "head.fc.weight",
        &[&[1., 0., 0., 2.], &[0., 2., 3., 0.]],
    );
    // A bias that would change every plain-head logit: MMCosine must ignore it.
    common::var(&model, "head.fc.bias")
        .set(&Tensor::new(&[5f32, -5.], &Device::Cpu).unwrap())
        .unwrap();
    let batch = Batch {
        inputs: vec![t2(&[&[3., 4.]]), t2(&[&[1., 0.]])],
        labels: Tensor::new(&[0u32], &Device::Cpu).unwrap(),
        sample_ids: vec![0],
    };
    let mut m = method(MmCosineConfig::default());
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let out = m.forward(&model, &batch, &mut ctx).unwrap();
    close(&rows(&out.per_modality_logits[0]), &[vec![6.0, 8.0]], 1e-5);
    close(&rows(&out.per_modality_logits[1]), &[vec![0.0, 10.0]], 1e-5);
    close(&rows(&out.fused_logits), &[vec![6.0, 18.0]], 1e-5);
    let loss = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let val = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    assert!((val(&loss.total) - 12.000006144193478).abs() < 1e-4);
    assert!((val(&loss.parts["audio"]) - 2.1269280110429727).abs() < 1e-5);
    assert!((val(&loss.parts["visual"]) - 10.000045398899218).abs() < 1e-4);
    let grads = loss.total.backward().unwrap();
    let gw = rows(
        grads
            .get(common::var(&model, "head.fc.weight").as_tensor())
            .unwrap(),
    );
    let p1 = 0.9999938558253978;
    close(
        &gw,
        &[
            vec![0.0, -8.0 * p1, -5.0 * p1, 0.0],
            vec![3.0 * p1, 0.0, 0.0, 0.0],
        ],
        1e-4,
    );
    assert!(
        grads
            .get(common::var(&model, "head.fc.bias").as_tensor())
            .is_none(),
        "the bias must not be in the graph"
    );
}

// ---- mechanism: modality-wise normalisation bounds each modality's logits -------------------

#[test]
fn logits_are_scaled_cosines_invariant_to_feature_and_weight_norms() {
    let model = net(2, 3, 4, FusionConfig::Concat);
    let f_a = vec![vec![1.0, -2.0, 0.5], vec![0.0, 3.0, 1.0]];
    let f_v = vec![vec![0.2, 0.1, -0.3], vec![-1.0, 1.0, 2.0]];
    let w: Vec<Vec<f64>> = (0..4)
        .map(|c| (0..6).map(|j| ((c * 7 + j * 3) % 5) as f64 - 1.5).collect())
        .collect();
    let to_t = |x: &[Vec<f64>]| {
        let r: Vec<Vec<f32>> = x
            .iter()
            .map(|r| r.iter().map(|&v| v as f32).collect())
            .collect();
        let refs: Vec<&[f32]> = r.iter().map(|r| r.as_slice()).collect();
        t2(&refs)
    };
    common::var(&model, "head.fc.weight")
        .set(&to_t(&w))
        .unwrap();
    let s = 7.5;
    let (z, per) =
        cosine_logits(&model, MmCosineHead::Concat, s, &[to_t(&f_a), to_t(&f_v)]).unwrap();
    let w_a: Vec<Vec<f64>> = w.iter().map(|r| r[..3].to_vec()).collect();
    let w_v: Vec<Vec<f64>> = w.iter().map(|r| r[3..].to_vec()).collect();
    let (ra, rv) = (cos_ref(&f_a, &w_a, s), cos_ref(&f_v, &w_v, s));
    close(&rows(&per[0]), &ra, 1e-5);
    close(&rows(&per[1]), &rv, 1e-5);
    let sum: Vec<Vec<f64>> = ra
        .iter()
        .zip(&rv)
        .map(|(a, v)| a.iter().zip(v).map(|(x, y)| x + y).collect())
        .collect();
    close(&rows(&z), &sum, 1e-5);
    // |z_m| ≤ s whatever the norms: a 1000× larger audio feature and audio weights give the
    // same logits (the plain head's audio logits would grow 10⁶×).
    let big_a: Vec<Vec<f64>> = f_a
        .iter()
        .map(|r| r.iter().map(|v| v * 1000.0).collect())
        .collect();
    let big_w: Vec<Vec<f64>> = w
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, v)| if j < 3 { v * 1000.0 } else { *v })
                .collect()
        })
        .collect();
    common::var(&model, "head.fc.weight")
        .set(&to_t(&big_w))
        .unwrap();
    let (_, per_big) =
        cosine_logits(&model, MmCosineHead::Concat, s, &[to_t(&big_a), to_t(&f_v)]).unwrap();
    close(&rows(&per_big[0]), &ra, 1e-4);
    for r in rows(&per_big[0]).iter().chain(&rows(&per_big[1])) {
        assert!(r.iter().all(|x| x.abs() <= s + 1e-4), "{r:?}");
    }
}

#[test]
fn a_zero_feature_row_gives_zero_logits_and_finite_gradients() {
    // F.normalize divides by max(‖x‖, 1e-12): an all-zero feature (a dead ReLU layer) has
    // cosine 0 with every class, and its gradient must stay finite.
    let model = net(2, 2, 2, FusionConfig::Concat);
    set(
        &model,
        "head.fc.weight",
        &[&[1., 0., 0., 2.], &[0., 2., 3., 0.]],
    );
    let batch = Batch {
        inputs: vec![t2(&[&[0., 0.]]), t2(&[&[1., 0.]])],
        labels: Tensor::new(&[1u32], &Device::Cpu).unwrap(),
        sample_ids: vec![0],
    };
    let mut m = method(MmCosineConfig::default());
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let out = m.forward(&model, &batch, &mut ctx).unwrap();
    close(&rows(&out.per_modality_logits[0]), &[vec![0.0, 0.0]], 1e-9);
    let loss = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let grads = loss.total.backward().unwrap();
    let gw = rows(
        grads
            .get(common::var(&model, "head.fc.weight").as_tensor())
            .unwrap(),
    );
    assert!(gw.iter().flatten().all(|g| g.is_finite()), "{gw:?}");
}

// ---- evaluation: fused and per-modality predictions are the cosine classifier's -------------

#[test]
fn evaluation_predicts_with_the_cosine_classifier() {
    let model = net(2, 2, 2, FusionConfig::Concat);
    // Class 1 has large weights and a large bias: the plain head predicts class 1, the cosine
    // classifier class 0.
    set(
        &model,
        "head.fc.weight",
        &[&[1., 0., 1., 0.], &[0., 9., 0., 9.]],
    );
    common::var(&model, "head.fc.bias")
        .set(&Tensor::new(&[0f32, 4.], &Device::Cpu).unwrap())
        .unwrap();
    // a = (4, 3): cos with (1,0) 0.8, with (0,9) 0.6 → cosine argmax 0; plain 4 vs 27+2.
    let inputs = vec![t2(&[&[4., 3.]]), t2(&[&[4., 3.]])];
    let out = model.forward_t(&inputs, false).unwrap();
    let plain = rows(&out.per_modality_logits[0]);
    assert!(
        plain[0][1] > plain[0][0],
        "the plain head prefers class 1: {plain:?}"
    );
    let m = method(MmCosineConfig::default());
    let per = m.predict_modalities(&model, &out).unwrap();
    close(&rows(&per[0]), &[vec![8.0, 6.0]], 1e-5);
    close(&rows(&per[1]), &[vec![8.0, 6.0]], 1e-5);
    close(
        &rows(&m.predict(&model, &out).unwrap()),
        &[vec![16.0, 12.0]],
        1e-5,
    );
    // eval_fused = "head": the fused prediction is the plain head's (official main_CD.py),
    // the per-modality ones stay cosine.
    let h = method(MmCosineConfig {
        eval_fused: EvalFused::Head,
        ..Default::default()
    });
    close(
        &rows(&h.predict(&model, &out).unwrap()),
        &rows(&out.fused_logits),
        1e-6,
    );
    close(
        &rows(&h.predict_modalities(&model, &out).unwrap()[0]),
        &[vec![8.0, 6.0]],
        1e-5,
    );
}

#[test]
fn sum_head_uses_each_modality_fc_weight() {
    let model = net(2, 2, 2, FusionConfig::Sum);
    set(&model, "head.audio.weight", &[&[1., 0.], &[0., 2.]]);
    set(&model, "head.visual.weight", &[&[0., 2.], &[3., 0.]]);
    let (z, per) = cosine_logits(
        &model,
        MmCosineHead::Sum,
        10.0,
        &[t2(&[&[3., 4.]]), t2(&[&[1., 0.]])],
    )
    .unwrap();
    // The official example above on separate per-modality weights.
    close(&rows(&per[0]), &[vec![6.0, 8.0]], 1e-5);
    close(&rows(&per[1]), &[vec![0.0, 10.0]], 1e-5);
    close(&rows(&z), &[vec![6.0, 18.0]], 1e-5);
    // A concat config on a sum model names the missing parameter.
    let e = cosine_logits(
        &model,
        MmCosineHead::Concat,
        10.0,
        &[t2(&[&[3., 4.]]), t2(&[&[1., 0.]])],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("head.fc.weight") && e.contains("head.audio.weight"),
        "{e}"
    );
}

// ---- three modalities ---------------------------------------------------------------------

#[test]
fn three_modalities_sum_three_cosines() {
    let model = net(3, 2, 2, FusionConfig::Concat);
    set(
        &model,
        "head.fc.weight",
        &[&[1., 0., 0., 2., 1., 1.], &[0., 2., 3., 0., -1., 1.]],
    );
    let (z, per) = cosine_logits(
        &model,
        MmCosineHead::Concat,
        10.0,
        &[t2(&[&[3., 4.]]), t2(&[&[1., 0.]]), t2(&[&[0., 5.]])],
    )
    .unwrap();
    // Text: t̂ = (0, 1); rows (1,1)/√2 and (−1,1)/√2 → 10/√2 = 7.0710678 both.
    let r2 = 10.0 / 2f64.sqrt();
    close(&rows(&per[2]), &[vec![r2, r2]], 1e-5);
    close(&rows(&z), &[vec![6.0 + r2, 18.0 + r2]], 1e-5);
}

#[test]
fn three_modality_run_logs_every_modality() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 1, 2)
        .with_overrides(&[
            "method.name=mmcosine".into(),
            "dataset.third_modality=true".into(),
        ])
        .unwrap();
    let out = common::train(&cfg);
    let recs = common::read_metrics(&out.run_dir);
    let r = recs.iter().find(|r| r.split == "train").unwrap();
    let names: Vec<&String> = r.method["cos_y"].as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 3, "{:?}", r.method);
    let val = recs.iter().find(|r| r.split == "val").unwrap();
    assert_eq!(val.modality_acc.len(), 3);
}

// ---- options ------------------------------------------------------------------------------

#[test]
fn bad_options_are_errors_naming_them() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = MmCosineConfig {
            scale: bad,
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("scale"), "{e}");
    }
    let mut o = toml::Table::new();
    o.insert("scaling".into(), toml::Value::Float(10.0));
    let e = common::build_method("mmcosine", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("scaling"), "{e}");
    let mut o = toml::Table::new();
    o.insert("head".into(), toml::Value::String("sum".into()));
    let b = common::build_method("mmcosine", &o).unwrap();
    assert_eq!(b.fusion, FusionConfig::Sum);
    let d = common::build_method("mmcosine", &toml::Table::new()).unwrap();
    assert_eq!(d.fusion, FusionConfig::Concat);
    assert_eq!(d.resolved["scale"].as_float(), Some(10.0));
    assert_eq!(d.resolved["eval_fused"].as_str(), Some("cosine"));
}

// ---- end to end through the registry -----------------------------------------------------

fn run(out: &std::path::Path, seed: u64, epochs: usize, extra: &[&str]) -> modbal::RunConfig {
    let mut sets = vec!["method.name=mmcosine".to_string()];
    sets.extend(extra.iter().map(|s| s.to_string()));
    common::small_vec(out, seed, epochs)
        .with_overrides(&sets)
        .unwrap()
}

#[test]
fn run_learns_and_logs_the_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&run(dir.path(), 0, 3, &[]));
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for r in &train {
        assert_eq!(r.method["scale"].as_f64(), Some(10.0));
        for m in ["audio", "visual"] {
            let cos = r.method["cos_y"][m].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&cos), "{m}: {cos}");
            assert!(r.method["weight_norm"][m].as_f64().unwrap() > 0.0);
            assert!(r.method["feature_norm"][m].as_f64().unwrap() > 0.0);
            assert!(r.method[&format!("loss.{m}")].as_f64().is_some());
        }
    }
    // Training raises the true-class cosine of both modalities.
    for m in ["audio", "visual"] {
        let c = |r: &modbal::EpochRecord| r.method["cos_y"][m].as_f64().unwrap();
        assert!(
            c(train[2]) > c(train[0]),
            "{m}: {} → {}",
            c(train[0]),
            c(train[2])
        );
    }
    let s = out.summary.unwrap();
    assert!(s.test.fusion_acc > 0.4, "{}", s.test.fusion_acc);
}

#[test]
fn sum_head_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&run(dir.path(), 0, 2, &["method.head=\"sum\""]));
    assert!(out.summary.unwrap().test.fusion_acc > 0.3);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = common::train(&run(a.path(), 7, 2, &[]));
    let rb = common::train(&run(b.path(), 7, 2, &[]));
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = common::train(&run(d1.path(), 5, 4, &[]));
    let part = modbal::train(&run(d2.path(), 5, 4, &[]), &common::stop_after(2)).unwrap();
    assert!(part.summary.is_none());
    let resumed = modbal::resume(&part.run_dir, &common::quiet()).unwrap();
    let a = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
    let b = std::fs::read_to_string(resumed.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(a, b);
    assert_eq!(full.summary.unwrap().test, resumed.summary.unwrap().test);
}
