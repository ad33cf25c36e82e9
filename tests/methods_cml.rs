//! `cml` (Ma et al., "Calibrating Multimodal Learning", ICML 2023; official code
//! QingyangZhang/CML; BalanceBenchmark's port `balancemm/trainer/CML_trainer.py`): each
//! mechanism against its closed form computed here independently, the official rank-loss
//! arithmetic, resume, three modalities, one modality (an error) and short runs through the
//! registry.
//!
//! Reference numbers were computed with Python 3's `math` module (no torch or numpy on the
//! development machine), restating the official arithmetic (CPM `rank_loss`, BalanceBenchmark
//! `conf_loss`) on three samples:
//!
//! ```python
//! import math
//! def sm(r): m = max(r); e = [math.exp(x - m) for x in r]; s = sum(e); return [x / s for x in e]
//! zt = [[2.0, 0, 0], [0, 1.0, 0.5], [0.2, 0.1, 0]]     # larger input T
//! zs = [[3.0, 0, 0], [0, 0.5, 1.5], [0, 0.1, 0]]       # smaller input S (one modality removed)
//! y = [0, 2, 1]
//! # conf = max(softmax), pred = argmax: c_T = [0.78699, 0.50648, 0.36717], pred_T = [0, 1, 0]
//! #                                     c_S = [0.90944, 0.62853, 0.35591], pred_S = [0, 2, 1]
//! # CPM trick 1: sign = ~((pred_S == y) & (pred_T != y)) -> [1, 0, 0]
//! sum(max((cs - ct) * sign - 0.0, 0))   # CPM rank_loss            -> 0.12245695635114362
//! sum(max(cs - ct, 0))                  # per-sample hinge, no mask -> 0.24450828450725204
//! max(0, sum(cs - ct))                  # BalanceBenchmark conf_loss -> 0.23325595460354687
//! ```

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::cml::{
    cml_pairs, rank_term, subset_logits, Cml, CmlConfig, CmlHinge, CmlSubsets,
};
use modbal::tensors::SeededRng;

// ---------------------------------------------------------------- helpers

/// An MLP net with `modalities` modalities and a batch in which `audio` carries the label.
fn tiny(modalities: usize, b: usize, fusion: FusionConfig) -> (MultimodalNet, Batch) {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(3);
    let net = common::tiny_mlp_net(modalities, &fusion, &mut rng);
    // Non-zero biases, so that the b/M bookkeeping is visible.
    for (name, v) in net.params().trainable() {
        if name.ends_with("bias") {
            let n = v.as_tensor().elem_count();
            let vals: Vec<f32> = (0..n).map(|i| 0.3 * (i as f32 + 1.0)).collect();
            v.set(&Tensor::from_vec(vals, v.as_tensor().shape(), &dev).unwrap())
                .unwrap();
        }
    }
    let batch = common::audio_label_batch(modalities, b, &mut rng);
    (net, batch)
}

fn param(net: &MultimodalNet, name: &str) -> Tensor {
    net.params()
        .trainable()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
        .as_tensor()
        .clone()
}

fn softmax(r: &[f64]) -> Vec<f64> {
    let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = r.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn max_conf(r: &[f64]) -> f64 {
    softmax(r).into_iter().fold(f64::NEG_INFINITY, f64::max)
}

fn ce(r: &[f64], y: usize) -> f64 {
    -softmax(r)[y].ln()
}

/// `W·f + b` in f64 with the columns of the removed modalities skipped (`keep[m]`), the concat
/// head's closed form.
fn concat_closed(
    w: &[Vec<f64>],
    b: &[f64],
    feats: &[Vec<Vec<f64>>],
    keep: &[bool],
) -> Vec<Vec<f64>> {
    let n = feats[0].len();
    (0..n)
        .map(|i| {
            (0..b.len())
                .map(|c| {
                    let mut off = 0;
                    let mut z = b[c];
                    for (m, f) in feats.iter().enumerate() {
                        let d = f[i].len();
                        if keep[m] {
                            z += (0..d).map(|j| w[c][off + j] * f[i][j]).sum::<f64>();
                        }
                        off += d;
                    }
                    z
                })
                .collect()
        })
        .collect()
}

fn features(net: &MultimodalNet, batch: &Batch) -> Vec<Tensor> {
    (0..batch.inputs.len())
        .map(|m| net.encode(m, &batch.inputs[m], true).unwrap())
        .collect()
}

// ---------------------------------------------------------------- the maths

/// The official rank-loss arithmetic (numbers in the module docs): CPM's per-sample hinge with
/// trick 1, the unmasked per-sample hinge, BalanceBenchmark's hinge on the batch sum.
#[test]
fn rank_term_matches_the_official_arithmetic() {
    let dev = Device::Cpu;
    let zt = Tensor::new(
        &[[2.0f64, 0.0, 0.0], [0.0, 1.0, 0.5], [0.2, 0.1, 0.0]],
        &dev,
    )
    .unwrap();
    let zs = Tensor::new(
        &[[3.0f64, 0.0, 0.0], [0.0, 0.5, 1.5], [0.0, 0.1, 0.0]],
        &dev,
    )
    .unwrap();
    let y = [0usize, 2, 1];
    let v = |t: Tensor| t.to_scalar::<f64>().unwrap();
    let (t, d, skipped) = rank_term(&zt, &zs, &y, CmlHinge::Sample, true).unwrap();
    assert!((v(t) - 0.12245695635114362).abs() < 1e-12, "CPM rank_loss");
    assert_eq!(skipped, vec![false, true, true]);
    let want_d = [
        0.12245695635114362,
        0.12205132815610842,
        -0.011252329903705172,
    ];
    for (a, b) in d.iter().zip(want_d) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    let (t, _, skipped) = rank_term(&zt, &zs, &y, CmlHinge::Sample, false).unwrap();
    assert!(
        (v(t) - 0.24450828450725204).abs() < 1e-12,
        "per-sample hinge"
    );
    assert_eq!(skipped, vec![false; 3]);
    let (t, _, _) = rank_term(&zt, &zs, &y, CmlHinge::Batch, false).unwrap();
    assert!(
        (v(t) - 0.23325595460354687).abs() < 1e-12,
        "BalanceBenchmark conf_loss"
    );
    // No violation: nothing to pay.
    let (t, _, _) = rank_term(&zs, &zt, &y, CmlHinge::Batch, false).unwrap();
    assert_eq!(v(t), 0.0);
    // The gradient reaches both inputs: d/dz of c_S − c_T on sample 0 (violated).
    let zt_v = candle_core::Var::from_tensor(&zt).unwrap();
    let zs_v = candle_core::Var::from_tensor(&zs).unwrap();
    let (t, _, _) = rank_term(
        zt_v.as_tensor(),
        zs_v.as_tensor(),
        &y,
        CmlHinge::Sample,
        true,
    )
    .unwrap();
    let g = t.backward().unwrap();
    let gs = common::rows(g.get(zs_v.as_tensor()).unwrap());
    let gt = common::rows(g.get(zt_v.as_tensor()).unwrap());
    // d max softmax / d z_k = p_max (δ_{k,max} − p_k) on row 0; rows 1-2 are skipped (zero).
    for (z, gr, sgn) in [(&[3.0, 0.0, 0.0], &gs, 1.0), (&[2.0, 0.0, 0.0], &gt, -1.0)] {
        let p = softmax(z);
        for k in 0..3 {
            let want = sgn * p[0] * (f64::from(u8::from(k == 0)) - p[k]);
            assert!(
                (gr[0][k] - want).abs() < 1e-12,
                "{k}: {} vs {want}",
                gr[0][k]
            );
            assert_eq!(gr[1][k], 0.0);
            assert_eq!(gr[2][k], 0.0);
        }
    }
}

/// The pairs: a chain follows each sample's removal order (one modality more per link), the
/// leave-one-out pairs remove each modality from the full input.
#[test]
fn pairs_follow_the_removal_orders() {
    let p = cml_pairs(CmlSubsets::Chain, &[vec![2, 0, 1], vec![1, 2, 0]], 3);
    assert_eq!(p.len(), 2, "M − 1 links");
    assert_eq!(p[0].keep, vec![vec![true; 3]; 2]);
    assert_eq!(p[0].removed, vec![2, 1]);
    assert_eq!(
        p[1].keep,
        vec![vec![true, true, false], vec![true, false, true]]
    );
    assert_eq!(p[1].removed, vec![0, 2]);
    let p = cml_pairs(CmlSubsets::Chain, &[vec![1, 0]], 2);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].removed, vec![1]);
    let p = cml_pairs(CmlSubsets::LeaveOneOut, &vec![vec![0, 1, 2]; 2], 3);
    assert_eq!(p.len(), 3);
    for (m, x) in p.iter().enumerate() {
        assert_eq!(x.keep, vec![vec![true; 3]; 2]);
        assert_eq!(x.removed, vec![m; 2]);
    }
}

/// Removing a modality = zeroing its feature before the head: on the concat head this is
/// `W_{−m} f_{−m} + b` (closed form) and BalanceBenchmark's `out − z_m + b/M`; per sample, each
/// row loses only its own removed modality.
#[test]
fn removal_zeroes_the_feature_before_the_head() {
    let (net, batch) = tiny(3, 6, FusionConfig::Concat);
    let f = features(&net, &batch);
    let (fused, per) = net.head(&f).unwrap();
    let w = common::rows(&param(&net, "head.fc.weight"));
    let b: Vec<f64> = param(&net, "head.fc.bias")
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let fr: Vec<Vec<Vec<f64>>> = f.iter().map(common::rows).collect();
    for m in 0..3 {
        let keep: Vec<Vec<bool>> = (0..6).map(|_| (0..3).map(|k| k != m).collect()).collect();
        let got = common::rows(&subset_logits(&net, &f, &keep).unwrap());
        let closed = concat_closed(&w, &b, &fr, &keep[0]);
        // BalanceBenchmark: out_s − unimodal_result[m] + fc_out.bias / M.
        let bm = common::rows(
            &(fused.clone() - &per[m])
                .unwrap()
                .broadcast_add(&(param(&net, "head.fc.bias") / 3.0).unwrap())
                .unwrap(),
        );
        for i in 0..6 {
            for c in 0..3 {
                assert!((got[i][c] - closed[i][c]).abs() < 1e-5, "closed form m={m}");
                assert!(
                    (got[i][c] - bm[i][c]).abs() < 1e-5,
                    "BalanceBenchmark m={m}"
                );
            }
        }
    }
    // Per-sample masks: row i removes modality i % 3.
    let keep: Vec<Vec<bool>> = (0..6)
        .map(|i| (0..3).map(|k| k != i % 3).collect())
        .collect();
    let got = common::rows(&subset_logits(&net, &f, &keep).unwrap());
    for (i, row) in got.iter().enumerate() {
        let closed = concat_closed(&w, &b, &fr, &keep[i]);
        for c in 0..3 {
            assert!((row[c] - closed[i][c]).abs() < 1e-5, "row {i}");
        }
    }
    // Sum head: the removed modality's layer keeps its bias.
    let (net, batch) = tiny(2, 4, FusionConfig::Sum);
    let f = features(&net, &batch);
    let keep = vec![vec![true, false]; 4];
    let got = common::rows(&subset_logits(&net, &f, &keep).unwrap());
    let (_, per) = net.head(&f).unwrap();
    let za = common::rows(&per[0]);
    let bv: Vec<f64> = param(&net, "head.visual.bias")
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    for i in 0..4 {
        for c in 0..3 {
            assert!((got[i][c] - (za[i][c] + bv[c])).abs() < 1e-5);
        }
    }
}

/// The whole loss on a leave-one-out step against its closed form in f64:
/// `mean(CE(z), CE(z^{−a}), CE(z^{−v})) + λ Σ_m Σ_i ReLU(c^{−m}_i − c_i)`, and the CE of the
/// full input alone with `partial_ce = false`.
#[test]
fn loss_matches_the_closed_form() {
    let (net, batch) = tiny(2, 6, FusionConfig::Concat);
    let f = features(&net, &batch);
    let w = common::rows(&param(&net, "head.fc.weight"));
    let b: Vec<f64> = param(&net, "head.fc.bias")
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let fr: Vec<Vec<Vec<f64>>> = f.iter().map(common::rows).collect();
    let y: Vec<usize> = (0..6).map(|i| i % 3).collect();
    let full = concat_closed(&w, &b, &fr, &[true, true]);
    let subs = [
        concat_closed(&w, &b, &fr, &[false, true]),
        concat_closed(&w, &b, &fr, &[true, false]),
    ];
    let mean_ce = |z: &[Vec<f64>]| z.iter().zip(&y).map(|(r, &c)| ce(r, c)).sum::<f64>() / 6.0;
    let mut reg = 0.0;
    for s in &subs {
        for i in 0..6 {
            reg += (max_conf(&s[i]) - max_conf(&full[i])).max(0.0);
        }
    }
    for (partial_ce, lambda) in [(true, 0.7), (false, 2.0)] {
        let mut method = Cml::new(CmlConfig {
            lambda,
            subsets: CmlSubsets::LeaveOneOut,
            partial_ce,
            ..Default::default()
        })
        .unwrap();
        let mut ctx = RunContext::new(0, Device::Cpu, 1);
        let out = method.forward(&net, &batch, &mut ctx).unwrap();
        let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
        let ce_part = if partial_ce {
            (mean_ce(&full) + mean_ce(&subs[0]) + mean_ce(&subs[1])) / 3.0
        } else {
            mean_ce(&full)
        };
        let want = ce_part + lambda * reg;
        let got = loss
            .total
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "partial_ce {partial_ce}: {got} vs {want}"
        );
        let logged = ctx.log.take();
        assert!((logged["reg"].as_f64().unwrap() - reg).abs() < 1e-4);
    }
}

/// A chain's links compare consecutive inputs (T of link k is S of link k − 1), with the
/// orders drawn from the run's RNG: the same seed gives the same loss, another seed (with
/// three modalities) eventually another one.
#[test]
fn chain_orders_come_from_the_run_rng() {
    let (net, batch) = tiny(3, 6, FusionConfig::Concat);
    let loss_with = |seed: u64| {
        let mut method = Cml::new(CmlConfig {
            lambda: 5.0,
            ..Default::default()
        })
        .unwrap();
        let mut ctx = RunContext::new(seed, Device::Cpu, 1);
        let out = method.forward(&net, &batch, &mut ctx).unwrap();
        let l = method.loss(&net, &batch, &out, &mut ctx).unwrap();
        l.total
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    assert_eq!(loss_with(1), loss_with(1));
    assert!(
        (2..20).any(|s| loss_with(s) != loss_with(1)),
        "orders never change"
    );
    // The chain's closed form for one known order per sample: recompute with the orders drawn
    // by a twin RNG.
    let mut twin = RunContext::new(9, Device::Cpu, 1);
    let orders: Vec<Vec<usize>> = (0..6).map(|_| twin.rng.permutation(3)).collect();
    let f = features(&net, &batch);
    let w = common::rows(&param(&net, "head.fc.weight"));
    let b: Vec<f64> = param(&net, "head.fc.bias")
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let fr: Vec<Vec<Vec<f64>>> = f.iter().map(common::rows).collect();
    let mut reg = 0.0;
    let mut ces = 0.0;
    for i in 0..6 {
        let mut keep = vec![true; 3];
        let mut prev = concat_closed(&w, &b, &fr, &keep)[i].clone();
        ces += ce(&prev, i % 3);
        for &r in &orders[i][..2] {
            keep[r] = false;
            let z = concat_closed(&w, &b, &fr, &keep)[i].clone();
            reg += (max_conf(&z) - max_conf(&prev)).max(0.0);
            ces += ce(&z, i % 3);
            prev = z;
        }
    }
    let want = ces / (3.0 * 6.0) + 5.0 * reg;
    assert!(
        (loss_with(9) - want).abs() < 1e-4,
        "{} vs {want}",
        loss_with(9)
    );
}

#[test]
fn one_modality_is_an_error_naming_cml() {
    let (net, _) = tiny(1, 4, FusionConfig::Concat);
    let mut method = Cml::new(CmlConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let e = method
        .on_stage_start(&net, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cml") && e.contains("at least two modalities"),
        "{e}"
    );
}

#[test]
fn registry_builds_cml_with_its_defaults_and_rejects_bad_values() {
    let b = common::build_method("cml", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Concat);
    assert_eq!(b.resolved["lambda"].as_float(), Some(0.1));
    assert_eq!(b.resolved["subsets"].as_str(), Some("chain"));
    assert_eq!(b.resolved["order"].as_str(), Some("sample"));
    assert_eq!(b.resolved["hinge"].as_str(), Some("sample"));
    assert_eq!(b.resolved["skip_corrected"].as_bool(), Some(false));
    assert_eq!(b.resolved["partial_ce"].as_bool(), Some(true));
    let mut t = toml::Table::new();
    t.insert("head".into(), toml::Value::String("sum".into()));
    assert_eq!(
        common::build_method("cml", &t).unwrap().fusion,
        FusionConfig::Sum
    );
    for (key, value) in [
        ("lambda", toml::Value::Float(-0.1)),
        ("lambda", toml::Value::Float(f64::NAN)),
        ("subsets", toml::Value::String("all".into())),
        ("lamda", toml::Value::Float(0.1)),
    ] {
        let e = common::option_error("cml", key, value);
        assert!(e.contains(key) || e.contains("all"), "{key}: {e}");
    }
}

// ---------------------------------------------------------------- runs

/// A short run on synth-vec logs the mechanism every epoch and learns; the regulariser lowers
/// the share of violated pairs against λ = 0 (same seed).
#[test]
fn runs_log_the_mechanism_and_learn() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "cml", 0, 6, &[]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 6);
    for r in &train {
        let m = &r.method;
        eprintln!(
            "cml {}: reg {} violated {} by {} rise {}",
            r.epoch, m["reg"], m["violated"], m["violated_by"], m["rise"]
        );
        let v = m["violated"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{v}");
        assert_eq!(m["violated_by"].as_object().unwrap().len(), 2);
        assert!(m["reg"].as_f64().unwrap() >= 0.0);
        assert!(m["conf.full"].as_f64().unwrap() > 0.0);
        assert!(m.get("loss.partial").is_some());
        assert_eq!(m["skipped"].as_f64(), Some(0.0));
    }
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.5);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = common::run_method(a.path(), "cml", 5, 2, &[]);
    let rb = common::run_method(b.path(), "cml", 5, 2, &[]);
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

/// A run stopped after its first epoch and resumed writes the same metrics as an uninterrupted
/// one, for per-sample and per-epoch orders (both from the run's RNG).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    for order in ["sample", "epoch"] {
        let sets = vec![
            "method.name=cml".to_string(),
            format!("method.order=\"{order}\""),
        ];
        common::assert_resume_matches(&sets, 3, 3, 1, order);
    }
}

/// Three modalities end to end (synth-vec with its text modality), chain and leave-one-out.
#[test]
fn three_modality_runs_train() {
    for subsets in ["chain", "leave-one-out"] {
        let dir = tempfile::tempdir().unwrap();
        let s = format!("method.subsets=\"{subsets}\"");
        let o = common::run_method(
            dir.path(),
            "cml",
            1,
            3,
            &["dataset.third_modality=true", &s],
        );
        let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
        let by = last.method["violated_by"].as_object().unwrap();
        assert_eq!(by.len(), 3, "{subsets}: {by:?}");
        assert!(
            o.summary.as_ref().unwrap().test.fusion_acc > 0.4,
            "{subsets}"
        );
    }
}
