//! `eau` (Gao et al., "Embracing Unimodal Aleatoric Uncertainty for Robust Multimodal Fusion",
//! CVPR 2024; official URMF code as preserved in `Knightrider16/EAURMF` @ 17d012d): each equation
//! against its closed form computed here independently in f64, the augmentation rule with a
//! known draw, the loss composition, gradients to every parameter, deterministic evaluation,
//! resume, three modalities, a restored snapshot that predicts, and runs through the registry.
//!
//! No torch on the development machine: the closed forms are restated in plain Rust loops. The
//! official arithmetic they follow (`util.py` of the official code):
//!
//! ```python
//! def KL_normal(mu, logvar):
//!     return (-(1 + logvar - mu.pow(2) - logvar.exp()) / 2).sum(dim=1).mean()
//! weight = torch.softmax(torch.stack([img_var, txt_var]), dim=0)
//! img_w, txt_w = weight[1], weight[0]          # each modality weighted by the OTHER's entry
//! ```
//!
//! For two modalities `exp(v_o)/(exp(v_o)+exp(v_m)) = softmax(−v)_m`, which the weight test
//! checks against the official swapped form directly.

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::eau::{
    info_nce, kl_standard_normal, reparameterise, uncertainty_weights, Eau, EauConfig, SampleScale,
};
use modbal::tensors::SeededRng;

fn t2(v: &[Vec<f64>]) -> Tensor {
    let r = v.len();
    let c = v[0].len();
    Tensor::from_vec(v.concat(), (r, c), &Device::Cpu).unwrap()
}

fn tiny(m: usize, b: usize) -> (MultimodalNet, Batch) {
    let mut rng = SeededRng::new(3);
    let net = common::tiny_mlp_net(m, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(m, b, &mut rng);
    (net, batch)
}

fn small_cfg() -> EauConfig {
    EauConfig {
        latent_dim: 5,
        // Large weights so every term is visible in the total.
        beta: 0.3,
        unimodal_kl: 0.2,
        ib_weight: 0.4,
        contrastive_weight: 0.5,
        ..EauConfig::default()
    }
}

fn ce_rows(logits: &[Vec<f64>], y: &[usize]) -> f64 {
    logits
        .iter()
        .zip(y)
        .map(|(r, &k)| {
            let mx = r.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + r.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
            lse - r[k]
        })
        .sum::<f64>()
        / y.len() as f64
}

fn kl_closed(mu: &[Vec<f64>], lv: &[Vec<f64>]) -> f64 {
    let b = mu.len() as f64;
    mu.iter()
        .zip(lv)
        .map(|(m, l)| {
            m.iter()
                .zip(l)
                .map(|(m, l)| 0.5 * (m * m + l.exp() - 1.0 - l))
                .sum::<f64>()
        })
        .sum::<f64>()
        / b
}

fn info_nce_closed(z1: &[Vec<f64>], z2: &[Vec<f64>], tau: f64) -> f64 {
    let norm = |v: &Vec<f64>| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<_>>()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let a: Vec<_> = z1.iter().map(norm).collect();
    let b: Vec<_> = z2.iter().map(norm).collect();
    let semi = |a: &[Vec<f64>], b: &[Vec<f64>], i: usize| {
        let n = a.len();
        let refl: f64 = (0..n).map(|j| (dot(&a[i], &a[j]) / tau).exp()).sum::<f64>()
            - (dot(&a[i], &a[i]) / tau).exp();
        let between: f64 = (0..n).map(|j| (dot(&a[i], &b[j]) / tau).exp()).sum();
        -((dot(&a[i], &b[i]) / tau).exp() / (refl + between)).ln()
    };
    let n = a.len();
    (0..n)
        .map(|i| 0.5 * (semi(&a, &b, i) + semi(&b, &a, i)))
        .sum::<f64>()
        / n as f64
}

// ---------------------------------------------------------------- equations

#[test]
fn kl_to_the_standard_normal_matches_the_closed_form() {
    let mu = vec![vec![0.5, -1.0, 0.0], vec![2.0, 0.1, -0.3]];
    let lv = vec![vec![0.0, 0.7, -1.2], vec![0.3, -0.4, 1.1]];
    let got = kl_standard_normal(&t2(&mu), &t2(&lv))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((got - kl_closed(&mu, &lv)).abs() < 1e-12, "{got}");
    // N(0, I) itself: zero.
    let z = vec![vec![0.0; 3]; 2];
    let k = kl_standard_normal(&t2(&z), &t2(&z))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_eq!(k, 0.0);
}

#[test]
fn reparameterised_sample_with_a_known_draw() {
    let mu = t2(&[vec![1.0, -2.0]]);
    let lv = t2(&[vec![2.0_f64.ln(), -1.0]]);
    let eps = t2(&[vec![0.5, -1.5]]);
    let std = common::v64(&reparameterise(&mu, &lv, &eps, SampleScale::Std).unwrap());
    common::assert_close(
        &std,
        &[1.0 + 2.0_f64.sqrt() * 0.5, -2.0 + (-0.5_f64).exp() * -1.5],
        1e-12,
    );
    let var = common::v64(&reparameterise(&mu, &lv, &eps, SampleScale::Var).unwrap());
    common::assert_close(
        &var,
        &[1.0 + 2.0 * 0.5, -2.0 + (-1.0_f64).exp() * -1.5],
        1e-12,
    );
}

#[test]
fn uncertainty_weights_are_the_softmax_of_the_negative_variance() {
    let va = vec![vec![0.2, 3.0], vec![1.0, 0.5]];
    let vb = vec![vec![1.5, 0.1], vec![1.0, 2.0]];
    let w = uncertainty_weights(&[t2(&va), t2(&vb)]).unwrap();
    let (wa, wb) = (common::v64(&w[0]), common::v64(&w[1]));
    let (fa, fb): (Vec<f64>, Vec<f64>) = (va.concat(), vb.concat());
    for k in 0..4 {
        // The official swapped form: a's weight is the softmax entry of b's variance.
        let official_a = fb[k].exp() / (fa[k].exp() + fb[k].exp());
        assert!((wa[k] - official_a).abs() < 1e-12);
        assert!((wa[k] + wb[k] - 1.0).abs() < 1e-12);
    }
    // Less variance, more weight.
    assert!(wa[0] > wb[0] && wa[1] < wb[1]);
    // Three modalities: softmax over the three negative variances, element-wise.
    let vc = vec![vec![0.0, 0.0], vec![0.0, 0.0]];
    let w3 = uncertainty_weights(&[t2(&va), t2(&vb), t2(&vc)]).unwrap();
    let fc = vc.concat();
    for k in 0..4 {
        let z = (-fa[k]).exp() + (-fb[k]).exp() + (-fc[k]).exp();
        common::assert_close(
            &[
                common::v64(&w3[0])[k],
                common::v64(&w3[1])[k],
                common::v64(&w3[2])[k],
            ],
            &[(-fa[k]).exp() / z, (-fb[k]).exp() / z, (-fc[k]).exp() / z],
            1e-12,
        );
    }
}

#[test]
fn info_nce_matches_the_closed_form() {
    let z1 = vec![
        vec![1.0, 0.2, -0.3],
        vec![-0.5, 1.0, 0.0],
        vec![0.1, 0.1, 2.0],
    ];
    let z2 = vec![
        vec![0.9, 0.0, -0.1],
        vec![0.3, 1.2, 0.4],
        vec![-0.2, 0.5, 1.0],
    ];
    for tau in [0.5, 1.3] {
        let got = info_nce(&t2(&z1), &t2(&z2), tau)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let want = info_nce_closed(&z1, &z2, tau);
        assert!((got - want).abs() < 1e-10, "tau {tau}: {got} vs {want}");
    }
    // Identical, well-separated views score lower than shuffled ones.
    let same = info_nce(&t2(&z1), &t2(&z1), 0.5)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let swapped = vec![z1[1].clone(), z1[2].clone(), z1[0].clone()];
    let other = info_nce(&t2(&z1), &t2(&swapped), 0.5)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(same < other, "{same} vs {other}");
}

// ---------------------------------------------------------------- the method on a tiny net

/// One training forward + loss on the tiny net; returns the method, the context's RNG state
/// just before that forward, the batch and the loss.
fn step(
    m: usize,
    cfg: EauConfig,
) -> (
    Eau,
    MultimodalNet,
    Batch,
    modbal::core::LossTerms,
    modbal::core::MultimodalOutput,
    SeededRng,
) {
    let (net, batch) = tiny(m, 6);
    let mut method = Eau::new(cfg).unwrap();
    let mut ctx = RunContext::new(11, Device::Cpu, 1);
    // A first forward builds the layers (one draw of the init seed from the run's RNG).
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    method.loss(&net, &batch, &out, &mut ctx).unwrap();
    let rng_before = ctx.rng.clone();
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
    (method, net, batch, loss, out, rng_before)
}

fn features(net: &MultimodalNet, batch: &Batch) -> Vec<Tensor> {
    batch
        .inputs
        .iter()
        .enumerate()
        .map(|(m, x)| net.encode(m, x, true).unwrap())
        .collect()
}

#[test]
fn augmentation_uses_the_learned_distribution_and_the_run_rng() {
    let cfg = small_cfg();
    let (method, _net, _batch, _loss, _out, mut rng) = step(2, cfg.clone());
    let f = method.last_forward().unwrap();
    let (b, k) = (6, cfg.latent_dim);
    // The draws in order: per modality two views, then the VIB sample.
    for m in 0..2 {
        let mu = common::v64(&f.mus[m]);
        let lv = common::v64(&f.logvars[m]);
        for view in [&f.views[m].0, &f.views[m].1] {
            let eps = rng.normal_vec(b * k, 0.0, 1.0);
            let want: Vec<f64> = (0..b * k)
                .map(|i| mu[i] + (0.5 * lv[i]).exp() * (eps[i] as f32 as f64))
                .collect();
            common::assert_close(&common::v64(view), &want, 1e-5);
        }
    }
}

#[test]
fn loss_is_the_official_composition() {
    let cfg = small_cfg();
    let (method, net, batch, loss, out, _) = step(2, cfg.clone());
    let f = method.last_forward().unwrap();
    let y: Vec<usize> = batch
        .labels
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let ce = ce_rows(&common::rows(&f.logits), &y);
    let kl_vib = kl_closed(&common::rows(&f.mu_z), &common::rows(&f.logvar_z));
    let ib = ce_rows(&common::rows(f.ib_logits.as_ref().unwrap()), &y);
    let mut kl_uni = 0.0;
    let mut con = 0.0;
    for m in 0..2 {
        kl_uni += kl_closed(&common::rows(&f.mus[m]), &common::rows(&f.logvars[m]));
        con += info_nce_closed(
            &common::rows(&f.views[m].0),
            &common::rows(&f.views[m].1),
            cfg.tau,
        );
    }
    let feats: Vec<Tensor> = features(&net, &batch);
    let probe = ce_rows(&common::rows(&net.head(&feats).unwrap().0), &y);
    let want = ce
        + cfg.beta * kl_vib
        + cfg.unimodal_kl * kl_uni
        + cfg.ib_weight * ib
        + cfg.contrastive_weight * con
        + probe;
    let got = loss
        .total
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    // The prediction is the classifier on the VIB mean.
    let clf = method
        .layers()
        .unwrap()
        .params()
        .into_iter()
        .filter(|(n, _)| n.starts_with("clf."))
        .collect::<Vec<_>>();
    let w = clf
        .iter()
        .find(|(n, _)| n == "clf.weight")
        .unwrap()
        .1
        .as_tensor()
        .clone();
    let bias = clf
        .iter()
        .find(|(n, _)| n == "clf.bias")
        .unwrap()
        .1
        .as_tensor()
        .clone();
    let manual = f
        .mu_z
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&bias)
        .unwrap();
    common::assert_close(&common::v64(&manual), &common::v64(&out.fused_logits), 1e-5);
    for k in ["ce", "kl_vib", "kl_uni", "ib", "con", "probe"] {
        assert!(loss.parts.contains_key(k), "{k}");
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let (method, net, _batch, loss, _out, _) = step(2, small_cfg());
    let grads = loss.total.backward().unwrap();
    let mut all = net.params().trainable();
    all.extend(method.layers().unwrap().params());
    assert!(all.len() > 10);
    for (n, v) in all {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {n}"));
        let s: f64 = common::v64(g).iter().map(|x| x.abs()).sum();
        assert!(s > 0.0, "zero gradient for {n}");
    }
}

#[test]
fn evaluation_is_deterministic_and_sample_free() {
    let (method, net, batch, _loss, _out, _) = step(2, small_cfg());
    let out = net.forward_t(&batch.inputs, false).unwrap();
    let a = common::v64(&method.predict(&net, &out).unwrap());
    let b = common::v64(&method.predict(&net, &out).unwrap());
    assert_eq!(a, b);
    let fwd = method
        .layers()
        .unwrap()
        .forward(&out.features, method.config(), None)
        .unwrap();
    assert!(fwd.ib_logits.is_none() && fwd.views.is_empty());
    assert_eq!(a, common::v64(&fwd.logits));
}

#[test]
fn three_modalities_work() {
    let (method, net, _batch, loss, _out, _) = step(3, small_cfg());
    let f = method.last_forward().unwrap();
    assert_eq!(f.mus.len(), 3);
    assert_eq!(f.gate.dims(), &[6, 3]);
    let grads = loss.total.backward().unwrap();
    for (n, v) in net.params().trainable() {
        assert!(grads.get(v.as_tensor()).is_some(), "{n}");
    }
}

#[test]
fn saved_state_restores_the_prediction() {
    let (method, net, batch, _loss, _out, _) = step(2, small_cfg());
    let out = net.forward_t(&batch.inputs, false).unwrap();
    let want = common::v64(&method.predict(&net, &out).unwrap());
    let mut fresh = Eau::new(small_cfg()).unwrap();
    assert!(fresh.predict(&net, &out).is_err());
    fresh.load_state(&method.state()).unwrap();
    assert_eq!(common::v64(&fresh.predict(&net, &out).unwrap()), want);
    // Checkpoint tensors: the layers and their Adam state.
    let t = method.state_tensors().unwrap();
    assert!(t.contains_key("clf.weight") && t.contains_key("vib.mu.weight"));
}

// ---------------------------------------------------------------- registry and runs

#[test]
fn registry_builds_eau_with_its_defaults_and_rejects_bad_values() {
    let b = common::build_method("eau", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Concat);
    assert_eq!(b.resolved["latent_dim"].as_integer(), Some(128));
    assert_eq!(b.resolved["beta"].as_float(), Some(1e-3));
    assert_eq!(b.resolved["unimodal_kl"].as_float(), Some(1e-3));
    assert_eq!(b.resolved["ib_weight"].as_float(), Some(1e-3));
    assert_eq!(b.resolved["contrastive_weight"].as_float(), Some(1e-3));
    assert_eq!(b.resolved["tau"].as_float(), Some(0.5));
    assert_eq!(b.resolved["sample_scale"].as_str(), Some("std"));
    for (key, value) in [
        ("latent_dim", toml::Value::Integer(0)),
        ("beta", toml::Value::Float(-1.0)),
        ("unimodal_kl", toml::Value::Float(f64::NAN)),
        ("ib_weight", toml::Value::Float(f64::INFINITY)),
        ("contrastive_weight", toml::Value::Float(-0.1)),
        ("tau", toml::Value::Float(0.0)),
        ("sample_scale", toml::Value::String("logvar".into())),
        ("betta", toml::Value::Float(0.1)),
    ] {
        let e = common::option_error("eau", key, value);
        assert!(e.contains(key) || e.contains("logvar"), "{key}: {e}");
    }
}

/// synth-av through the registry: logs the mechanism each epoch and learns (chance is 0.25; this
/// small split gives concat 0.59 and eau 0.54 at seed 0, 6 epochs); the best-model snapshot,
/// restored by a fresh learner (`evaluate_test`, the robustness tables' path), predicts the same
/// test accuracy.
#[test]
fn synth_av_run_logs_the_mechanism_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(
        dir.path(),
        "eau",
        0,
        6,
        &[
            "dataset.name=\"synth-av\"",
            "dataset.train=192",
            "dataset.val=96",
            "dataset.test=96",
        ],
    );
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 6);
    for r in &train {
        let m = &r.method;
        assert_eq!(m["variance"].as_object().unwrap().len(), 2);
        assert_eq!(m["weight"].as_object().unwrap().len(), 2);
        assert!(m["kl_vib"].as_f64().unwrap() >= 0.0);
        assert_eq!(m["beta"].as_f64(), Some(1e-3));
        assert!(m.get("loss.con").is_some());
    }
    let s = o.summary.as_ref().unwrap();
    assert!(s.test.fusion_acc > 0.4, "{}", s.test.fusion_acc);
    let again = modbal::Registry::builtin()
        .evaluate_test(&o.run_dir, None)
        .unwrap();
    assert_eq!(again.fusion_acc, s.test.fusion_acc);
}

#[test]
fn three_modality_run_trains() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "eau", 1, 3, &["dataset.third_modality=true"]);
    let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
    assert_eq!(last.method["variance"].as_object().unwrap().len(), 3);
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}

#[test]
fn resumed_runs_match_uninterrupted_ones() {
    let sets = vec!["method.name=eau".to_string()];
    common::assert_resume_matches(&sets, 3, 3, 1, "eau");
}

/// The presets for CAL Tables 2-3's datasets parse as run settings and carry the official
/// optimizer (Adam = AdamW without weight decay, lr 5e-5, batch 8).
#[test]
fn presets_apply_and_carry_the_official_protocol() {
    for (name, dataset) in [("eau/mvsa", "mvsa"), ("eau/nyu-depth", "nyu-depth")] {
        let p = modbal::presets::find(name).unwrap();
        assert_eq!(p.method(), Some("eau"));
        assert_eq!(p.dataset(), Some(dataset));
        // The dataset keys need a dataset root to validate; the rest must apply as they are.
        let sets: Vec<String> = p
            .values
            .iter()
            .filter(|v| !v.key.starts_with("dataset."))
            .map(|v| format!("{}={}", v.key, v.value))
            .collect();
        let cfg = modbal::RunConfig::default().with_overrides(&sets).unwrap();
        assert_eq!(cfg.train.batch_size, 8, "{name}");
        assert_eq!(cfg.train.epochs, 100, "{name}");
        let get = |k: &str| p.values.iter().find(|v| v.key == k).unwrap().value;
        assert_eq!(get("train.optimizer.kind"), "\"adamw\"");
        assert_eq!(get("train.optimizer.lr"), "5e-5");
        assert_eq!(get("train.optimizer.weight_decay"), "0.0");
    }
}
