//! `dgl` (Wei, Luo & Luo, "Boosting Multimodal Learning via Disentangled Gradient Learning",
//! ICCV 2025; official code shicaiwei123/ICCV2025-GDL): the logits and losses of the official
//! arithmetic on one sample, the head's gradient against its closed form, the single-pass
//! implementation against the official two-pass gradient surgery, the truncation of the fused
//! loss from the encoders, evaluation, the logged suppression ratio, resume, three modalities and
//! runs through the registry.
//!
//! Reference numbers come from Python 3's `math` module (no torch here), restating the official
//! `main_dgl.py` / `ConcatFusion_DGL` arithmetic on 2-d features:
//!
//! ```python
//! # PyTorch, official: out = fc_out(cat(a, v).detach()); out_a = fc_out(cat(a, 0)); out_v = ...
//! #   W = [[1, 0, 0, 2], [0, 2, 3, 0]], b = [0.5, -0.5], a = [3, 4], v = [1, 0], y = 0
//! import math
//! z   = [3 + 0 + 0.5, 8 + 3 - 0.5]          # fused (3.5, 10.5)
//! z_a = [3 + 0.5, 8 - 0.5]                  # (3.5, 7.5): W_a a + b, the whole bias
//! z_v = [0 + 0.5, 3 - 0.5]                  # (0.5, 2.5)
//! ce  = lambda r: math.log(1 + math.exp(r[1] - r[0]))     # y = 0
//! ce(z), ce(z_a), ce(z_v)   # 7.000911466453774, 4.0181499279178094, 2.1269280110429727
//! p1 = 1 / (1 + math.exp(-7))               # 0.9990889488055994: fused p(class 1)
//! # head gradient (fused CE only, detached features): dW = (p - onehot(y)) ⊗ [a; v], db = p - y
//! ```

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::dgl::{unimodal_logits, Dgl, DglConfig, DglHead, UnimodalBias};
use modbal::methods::params::MethodParams;
use modbal::tensors::{cross_entropy, SeededRng};
use std::collections::BTreeMap;

/// Encoders that only flatten (`Mlp { hidden: [] }`: features = inputs), width `d`.
fn flat_net(m: usize, d: usize, c: usize, fusion: FusionConfig) -> MultimodalNet {
    let specs: Vec<_> = ["audio", "visual", "text"][..m]
        .iter()
        .map(|n| ModalitySpec::new(*n, EncoderConfig::Mlp { hidden: vec![] }, &[d]))
        .collect();
    MultimodalNet::new(&specs, &fusion, c, &mut SeededRng::new(3), &Device::Cpu).unwrap()
}

fn t2(rows: &[&[f32]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn dgl(cfg: DglConfig) -> Dgl {
    Dgl::new(cfg).unwrap()
}

/// The total loss of one DGL step and its gradients.
fn dgl_grads(
    model: &dyn MultimodalModel,
    batch: &Batch,
    cfg: DglConfig,
) -> (f64, candle_core::backprop::GradStore) {
    let mut m = dgl(cfg);
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let out = m.forward(model, batch, &mut ctx).unwrap();
    let loss = m.loss(model, batch, &out, &mut ctx).unwrap();
    (scalar(&loss.total), loss.total.backward().unwrap())
}

#[test]
fn official_arithmetic_one_sample() {
    let model = flat_net(2, 2, 2, FusionConfig::Concat);
    common::var(&model, "head.fc.weight")
        .set(&t2(&[&[1., 0., 0., 2.], &[0., 2., 3., 0.]]))
        .unwrap();
    common::var(&model, "head.fc.bias")
        .set(&Tensor::new(&[0.5f32, -0.5], &Device::Cpu).unwrap())
        .unwrap();
    let batch = Batch {
        inputs: vec![t2(&[&[3., 4.]]), t2(&[&[1., 0.]])],
        labels: Tensor::new(&[0u32], &Device::Cpu).unwrap(),
        sample_ids: vec![0],
    };
    let mut m = dgl(DglConfig::default());
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let out = m.forward(&model, &batch, &mut ctx).unwrap();
    common::assert_close(&common::v64(&out.fused_logits), &[3.5, 10.5], 1e-6);
    common::assert_close(&common::v64(&out.per_modality_logits[0]), &[3.5, 7.5], 1e-6);
    common::assert_close(&common::v64(&out.per_modality_logits[1]), &[0.5, 2.5], 1e-6);
    let loss = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let (ce, ce_a, ce_v) = (7.000911466453774, 4.0181499279178094, 2.1269280110429727);
    assert!((scalar(&loss.parts["fused"]) - ce).abs() < 1e-5);
    assert!((scalar(&loss.parts["audio"]) - ce_a).abs() < 1e-5);
    assert!((scalar(&loss.parts["visual"]) - ce_v).abs() < 1e-5);
    // α = 4 (official default) on both unimodal terms.
    assert!((scalar(&loss.total) - (ce + 4.0 * (ce_a + ce_v))).abs() < 1e-4);
    // The head's gradient is the fused CE's alone: (p − y) ⊗ [a; v], db = p − y, whatever α.
    let p1 = 0.9990889488055994;
    let grads = loss.total.backward().unwrap();
    let gw = common::v64(
        grads
            .get(common::var(&model, "head.fc.weight").as_tensor())
            .unwrap(),
    );
    common::assert_close(
        &gw,
        &[-p1 * 3., -p1 * 4., -p1, 0., p1 * 3., p1 * 4., p1, 0.],
        1e-5,
    );
    let gb = common::v64(
        grads
            .get(common::var(&model, "head.fc.bias").as_tensor())
            .unwrap(),
    );
    common::assert_close(&gb, &[-p1, p1], 1e-6);
}

/// The official two passes (`main_dgl.py`): backward of `α Σ CE(head([0, …, f_m, …, 0]))`,
/// every head gradient erased, then backward of `CE(head(detached features))`; summed.
fn official_two_pass(
    model: &MultimodalNet,
    batch: &Batch,
    alpha: f64,
) -> BTreeMap<String, Vec<f64>> {
    let n = model.modalities().len();
    let f: Vec<Tensor> = (0..n)
        .map(|m| model.encode(m, &batch.inputs[m], true).unwrap())
        .collect();
    let mut l_uni: Option<Tensor> = None;
    for m in 0..n {
        let keep: Vec<bool> = (0..n).map(|k| k == m).collect();
        let padded = common::mask_features(&f, &keep);
        // The zero-padded concat head gives W_m f_m + b (the other slices see zeros).
        let z = model.head(&padded).unwrap().0;
        let ce = (cross_entropy(&z, &batch.labels).unwrap() * alpha).unwrap();
        l_uni = Some(match l_uni {
            None => ce,
            Some(l) => (l + ce).unwrap(),
        });
    }
    let g_uni = l_uni.unwrap().backward().unwrap();
    let detached: Vec<Tensor> = f.iter().map(Tensor::detach).collect();
    let l_f = cross_entropy(&model.head(&detached).unwrap().0, &batch.labels).unwrap();
    let g_f = l_f.backward().unwrap();
    let mut out = BTreeMap::new();
    for (name, v) in model.params().trainable() {
        let from_uni = (!name.starts_with("head"))
            .then(|| g_uni.get(v.as_tensor()).map(common::v64))
            .flatten();
        let from_f = g_f.get(v.as_tensor()).map(common::v64);
        let g = match (from_uni, from_f) {
            (Some(a), Some(b)) => a.iter().zip(&b).map(|(x, y)| x + y).collect(),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => vec![0.0; v.as_tensor().elem_count()],
        };
        out.insert(name, g);
    }
    out
}

#[test]
fn single_pass_equals_the_official_two_pass_gradient_surgery() {
    for m in [2, 3] {
        let mut rng = SeededRng::new(11);
        let model = common::tiny_mlp_net(m, &FusionConfig::Concat, &mut rng);
        let batch = common::audio_label_batch(m, 7, &mut rng);
        let reference = official_two_pass(&model, &batch, 3.0);
        let (_, grads) = dgl_grads(
            &model,
            &batch,
            DglConfig {
                alpha: 3.0,
                ..Default::default()
            },
        );
        let mut nonzero = 0;
        for (name, v) in model.params().trainable() {
            let g = grads
                .get(v.as_tensor())
                .map(common::v64)
                .unwrap_or_else(|| vec![0.0; v.as_tensor().elem_count()]);
            let r = &reference[&name];
            let scale = r.iter().fold(1e-6f64, |a, x| a.max(x.abs()));
            common::assert_close(&g, r, 1e-5 * scale.max(1.0));
            if g.iter().any(|x| *x != 0.0) {
                nonzero += 1;
            }
        }
        // Every parameter (every encoder layer and the head) receives a gradient.
        assert_eq!(nonzero, model.params().trainable().len(), "M = {m}");
    }
}

#[test]
fn the_fused_loss_never_reaches_the_encoders() {
    let mut rng = SeededRng::new(5);
    let model = common::tiny_mlp_net(2, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(2, 6, &mut rng);
    let audio_grads = |batch: &Batch, alpha: f64| -> Vec<Vec<f64>> {
        let (_, g) = dgl_grads(
            &model,
            batch,
            DglConfig {
                alpha,
                ..Default::default()
            },
        );
        model
            .params()
            .trainable()
            .iter()
            .filter(|(n, _)| n.starts_with("encoder.audio"))
            .map(|(_, v)| g.get(v.as_tensor()).map(common::v64).unwrap_or_default())
            .collect()
    };
    let base = audio_grads(&batch, 4.0);
    assert!(base.iter().flatten().any(|x| *x != 0.0));
    // Another visual input changes the fused loss, not the audio encoder's gradient.
    let mut other = batch.clone();
    other.inputs[1] = (other.inputs[1].clone() * -3.0).unwrap();
    let moved = audio_grads(&other, 4.0);
    for (a, b) in base.iter().zip(&moved) {
        common::assert_close(a, b, 1e-7);
    }
    // The encoder gradient is linear in α, and α = 0 leaves the encoders untouched.
    let double = audio_grads(&batch, 8.0);
    for (a, b) in base.iter().zip(&double) {
        let twice: Vec<f64> = a.iter().map(|x| 2.0 * x).collect();
        common::assert_close(&twice, b, 1e-6);
    }
    let zero = audio_grads(&batch, 0.0);
    assert!(zero.iter().flatten().all(|x| *x == 0.0), "{zero:?}");
}

#[test]
fn unimodal_logits_bias_options_and_the_sum_head() {
    let model = flat_net(2, 2, 2, FusionConfig::Concat);
    common::var(&model, "head.fc.bias")
        .set(&Tensor::new(&[1.0f32, -3.0], &Device::Cpu).unwrap())
        .unwrap();
    let inputs = vec![t2(&[&[1., 2.]]), t2(&[&[-1., 0.5]])];
    let out = model.forward_t(&inputs, false).unwrap();
    // modbal's own per-modality logits carry b/2; "full" adds the other half.
    let full = dgl(DglConfig::default())
        .predict_modalities(&model, &out)
        .unwrap();
    let split = dgl(DglConfig {
        unimodal_bias: UnimodalBias::Split,
        ..Default::default()
    })
    .predict_modalities(&model, &out)
    .unwrap();
    for k in 0..2 {
        let plain = common::v64(&out.per_modality_logits[k]);
        common::assert_close(&common::v64(&split[k]), &plain, 1e-6);
        common::assert_close(
            &common::v64(&full[k]),
            &[plain[0] + 0.5, plain[1] - 1.5],
            1e-6,
        );
    }
    // Sum head: each modality's own fc (weight and bias).
    let sum = flat_net(2, 2, 2, FusionConfig::Sum);
    common::var(&sum, "head.audio.weight")
        .set(&t2(&[&[1., 0.], &[0., 2.]]))
        .unwrap();
    common::var(&sum, "head.audio.bias")
        .set(&Tensor::new(&[0.25f32, 0.0], &Device::Cpu).unwrap())
        .unwrap();
    let z = unimodal_logits(
        &sum,
        DglHead::Sum,
        UnimodalBias::Full,
        &[t2(&[&[3., 4.]]), t2(&[&[1., 1.]])],
    )
    .unwrap();
    common::assert_close(&common::v64(&z[0]), &[3.25, 8.0], 1e-6);
    // A concat config on a sum model names the missing parameter.
    let e = unimodal_logits(
        &sum,
        DglHead::Concat,
        UnimodalBias::Full,
        &[t2(&[&[3., 4.]]), t2(&[&[1., 1.]])],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("head.fc.weight") && e.contains("dgl"), "{e}");
}

/// The logged `suppression.<m>` against its closed form on one sample: identity class weights,
/// `‖(p − y)W_m‖ = ‖p − y‖`.
#[test]
fn suppression_ratio_is_the_fused_over_the_own_residual_norm() {
    let model = flat_net(2, 2, 2, FusionConfig::Concat);
    common::var(&model, "head.fc.weight")
        .set(&t2(&[&[1., 0., 1., 0.], &[0., 1., 0., 1.]]))
        .unwrap();
    common::var(&model, "head.fc.bias")
        .set(&Tensor::new(&[0f32, 0.], &Device::Cpu).unwrap())
        .unwrap();
    // Both modalities favour y = 0 by a logit margin of 1: z_m = (1, 0), z = (2, 0).
    let batch = Batch {
        inputs: vec![t2(&[&[1., 0.]]), t2(&[&[1., 0.]])],
        labels: Tensor::new(&[0u32], &Device::Cpu).unwrap(),
        sample_ids: vec![0],
    };
    let mut m = dgl(DglConfig::default());
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let out = m.forward(&model, &batch, &mut ctx).unwrap();
    m.loss(&model, &batch, &out, &mut ctx).unwrap();
    m.on_epoch_end(&model, &mut ctx).unwrap();
    let rec = ctx.log.take();
    // ‖p − y‖ = √2·(1 − σ(margin)): fused margin 2, own margin 1.
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let expect = (1.0 - sig(2.0)) / (1.0 - sig(1.0));
    assert!(expect < 1.0);
    for k in ["audio", "visual"] {
        let got = rec["suppression"][k].as_f64().unwrap();
        assert!((got - expect).abs() < 1e-6, "{k}: {got} vs {expect}");
        assert_eq!(rec["alpha"][k].as_f64(), Some(4.0));
    }
}

#[test]
fn bad_options_are_errors_naming_them() {
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let e = DglConfig {
            alpha: bad,
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("alpha"), "{e}");
    }
    let e = DglConfig {
        alpha_modality: [("visual".to_string(), -2.0)].into(),
        ..Default::default()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(e.contains("alpha_modality.visual"), "{e}");
    // An override naming a modality the model lacks is an error at the first step.
    let mut rng = SeededRng::new(1);
    let model = common::tiny_mlp_net(2, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(2, 3, &mut rng);
    let mut m = dgl(DglConfig {
        alpha_modality: [("depth".to_string(), 1.0)].into(),
        ..Default::default()
    });
    let e = m
        .forward(&model, &batch, &mut RunContext::new(0, Device::Cpu, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth") && e.contains("alpha_modality"), "{e}");
    let mut o = toml::Table::new();
    o.insert("lambda".into(), toml::Value::Float(1.0));
    let e = common::build_method("dgl", &o).unwrap_err().to_string();
    assert!(e.contains("lambda"), "{e}");
    let d = common::build_method("dgl", &toml::Table::new()).unwrap();
    assert_eq!(d.fusion, FusionConfig::Concat);
    assert_eq!(d.resolved["alpha"].as_float(), Some(4.0));
    assert_eq!(d.resolved["unimodal_bias"].as_str(), Some("full"));
}

#[test]
fn run_learns_and_logs_the_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(
        dir.path(),
        "dgl",
        0,
        3,
        &["method.alpha_modality={ visual = 2.0 }"],
    );
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for r in &train {
        assert_eq!(r.method["alpha"]["audio"].as_f64(), Some(4.0));
        assert_eq!(r.method["alpha"]["visual"].as_f64(), Some(2.0));
        for m in ["audio", "visual"] {
            let s = r.method["suppression"][m].as_f64().unwrap();
            assert!(s.is_finite() && s > 0.0, "{m}: {s}");
            assert!(r.method[&format!("loss.{m}")].as_f64().is_some());
        }
    }
    let loss = |r: &modbal::EpochRecord| r.method["loss.fused"].as_f64().unwrap();
    assert!(
        loss(train[2]) < loss(train[0]),
        "{} → {}",
        loss(train[0]),
        loss(train[2])
    );
    let val = recs.iter().rfind(|r| r.split == "val").unwrap();
    assert!(val.fusion_acc > 0.5, "val accuracy {}", val.fusion_acc);
}

#[test]
fn three_modality_run_logs_every_modality() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "dgl", 1, 2, &["dataset.third_modality=true"]);
    let recs = common::read_metrics(&out.run_dir);
    let r = recs.iter().find(|r| r.split == "train").unwrap();
    assert_eq!(r.method["suppression"].as_object().unwrap().len(), 3);
    let val = recs.iter().find(|r| r.split == "val").unwrap();
    assert_eq!(val.modality_acc.len(), 3);
}

/// A run stopped after its first epoch and resumed writes the same metrics as an uninterrupted
/// one.
#[test]
fn resumed_run_matches_the_uninterrupted_one() {
    common::assert_resume_matches(&["method.name=dgl".to_string()], 3, 3, 1, "dgl");
}
