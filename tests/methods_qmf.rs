//! `qmf` (Quality-aware Multimodal Fusion, ICML'23): the energy confidences, the fused logits,
//! the per-sample loss history, the ranking targets/margins and the ranking loss, the method's
//! loss on a hand-built batch, resume (history restored), three modalities and runs through the
//! registry.
//!
//! Reference values are derived by hand below (logsumexp of small vectors, PyTorch's
//! `MarginRankingLoss` formula `mean(max(0, −y·(x1 − x2) + margin))`); no PyTorch here, so the
//! official arithmetic is quoted with the numbers it gives by hand.

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Method, MultimodalOutput, RunContext};
use modbal::encoders::FusionConfig;
use modbal::methods::params::MethodParams;
use modbal::methods::qmf::{
    confidence, fused_logits, margin_ranking_loss, rank_loss, History, HistoryUpdate, Qmf,
    QmfConfig,
};
use modbal::tensors::SeededRng;

fn t2(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn t1(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn lse(v: &[f64]) -> f64 {
    v.iter().map(|x| x.exp()).sum::<f64>().ln()
}

// ---- confidence and fusion ----------------------------------------------------------------

/// Official `late_fusion.py`: `conf = log(sum(exp(z), 1)) / 10`; `z = Σ z_m · conf_m.detach()`.
/// For z = [[0, ln 3], [2, 2]]: logsumexp = ln 4 and 2 + ln 2.
#[test]
fn confidence_is_logsumexp_over_temperature() {
    let z = t2(&[vec![0.0, 3f64.ln()], vec![2.0, 2.0], vec![1000.0, 0.0]]);
    let c = common::v64(&confidence(&z, 10.0).unwrap());
    common::assert_close(
        &c,
        &[4f64.ln() / 10.0, (2.0 + 2f64.ln()) / 10.0, 100.0],
        1e-9,
    );
    let c2 = common::v64(&confidence(&z, 2.0).unwrap());
    assert!((c2[0] - 4f64.ln() / 2.0).abs() < 1e-12);
}

#[test]
fn fused_logits_weight_each_modality_by_its_confidence() {
    let za = t2(&[vec![1.0, 2.0, 0.5], vec![0.0, 0.0, 3.0]]);
    let zv = t2(&[vec![-1.0, 0.0, 4.0], vec![2.0, 1.0, 1.0]]);
    let ca = confidence(&za, 10.0).unwrap();
    let cv = confidence(&zv, 10.0).unwrap();
    let z = fused_logits(&[za.clone(), zv.clone()], &[ca, cv], true).unwrap();
    let (ra, rv) = (common::rows(&za), common::rows(&zv));
    let want: Vec<f64> = ra
        .iter()
        .zip(&rv)
        .flat_map(|(a, v)| {
            let (wa, wv) = (lse(a) / 10.0, lse(v) / 10.0);
            a.iter()
                .zip(v)
                .map(move |(x, y)| wa * x + wv * y)
                .collect::<Vec<_>>()
        })
        .collect();
    common::assert_close(&common::v64(&z), &want, 1e-9);
}

/// Detached weights: `∂z/∂z_a = c_a` only; without detaching, the confidence's own gradient
/// `softmax(z_a)/T · Σ_k z_a,k` is added.
#[test]
fn detached_weights_pass_no_gradient_through_the_confidence() {
    let a = [1.0, 2.0, 0.5];
    for detach in [true, false] {
        let v = candle_core::Var::from_tensor(&t2(&[a.to_vec()])).unwrap();
        let c = confidence(v.as_tensor(), 10.0).unwrap();
        let z = fused_logits(&[v.as_tensor().clone()], &[c], detach).unwrap();
        let g = z.sum_all().unwrap().backward().unwrap();
        let got = common::v64(g.get(v.as_tensor()).unwrap());
        let w = lse(&a) / 10.0;
        let s: f64 = a.iter().sum();
        let e: f64 = a.iter().map(|x| x.exp()).sum();
        let want: Vec<f64> = a
            .iter()
            .map(|x| {
                if detach {
                    w
                } else {
                    w + x.exp() / e / 10.0 * s
                }
            })
            .collect();
        common::assert_close(&got, &want, 1e-9);
    }
}

// ---- history, targets, margins, ranking loss -----------------------------------------------

/// Official `History`: `correctness[idx] += loss`; normalised by the min and max over every
/// training sample (unseen ones 0); pairs `(idx, roll(idx, −1))`.
/// 5 samples, history after two batches: h = [0.9, 0.3, 0.0 (unseen), 0.6, 1.2]
/// ⇒ n = h / 1.2 = [.75, .25, 0, .5, 1]. Batch ids [4, 1, 3, 0]: pairs (4,1), (1,3), (3,0), (0,4)
/// ⇒ n pairs (1, .25), (.25, .5), (.5, .75), (.75, 1) ⇒ t = [1, −1, −1, −1], μ = [.75, .25, .25, .25].
#[test]
fn history_normalisation_targets_and_margins_by_hand() {
    let mut h = History::new(5);
    h.add(&[0, 1, 3], &[0.4, 0.3, 0.1]);
    h.add(&[0, 3, 4], &[0.5, 0.5, 1.2]);
    common::assert_close(&h.values, &[0.9, 0.3, 0.0, 0.6, 1.2], 1e-12);
    common::assert_close(
        &h.normalized(&[0, 1, 2, 3, 4]),
        &[0.75, 0.25, 0.0, 0.5, 1.0],
        1e-12,
    );
    let (t, mu) = h.targets_margins(&[4, 1, 3, 0]);
    assert_eq!(t, vec![1.0, -1.0, -1.0, -1.0]);
    common::assert_close(&mu, &[0.75, 0.25, 0.25, 0.25], 1e-12);
    // Equal histories: target 0, margin 0.
    let (t, mu) = h.targets_margins(&[1, 1]);
    assert_eq!((t, mu), (vec![0.0, 0.0], vec![0.0, 0.0]));
    // All equal (the official 0/0): every n is 0, no pair is ranked.
    let flat = History::new(3);
    assert_eq!(flat.normalized(&[0, 2]), vec![0.0, 0.0]);
    // Ids beyond the known length grow the history.
    let mut g = History::new(2);
    g.add(&[4], &[1.0]);
    assert_eq!(g.values, vec![0.0, 0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn margin_ranking_loss_is_pytorchs() {
    // mean(max(0, −y(x1 − x2) + m)) with x1 = [1, 2, 3], x2 = [2, 2, 1], y = [1, −1, 1], m = .5:
    // [max(0, 1 + .5), max(0, 0 + .5), max(0, −2 + .5)] = [1.5, .5, 0] ⇒ 2/3.
    let l = margin_ranking_loss(
        &t1(&[1.0, 2.0, 3.0]),
        &t1(&[2.0, 2.0, 1.0]),
        &t1(&[1.0, -1.0, 1.0]),
        0.5,
    )
    .unwrap();
    assert!((scalar(&l) - 2.0 / 3.0).abs() < 1e-12);
}

/// Official `rank_loss`: `x2 = roll(c, −1) + μ/t'` (t' = t, or 1 where t = 0),
/// `MarginRankingLoss(0)(c, x2, −t)` = mean max(0, t·(c_i − c_j) − μ) for t ≠ 0.
/// c = [.5, .2, .4, .1], t = [1, −1, −1, 1], μ = [.1, .3, .05, 0]:
/// pairs (c_i, c_j) = (.5,.2), (.2,.4), (.4,.1), (.1,.5):
/// [max(0, .3 − .1), max(0, .2 − .3), max(0, −.3 − .05), max(0, −.4 − 0)] = [.2, 0, 0, 0] ⇒ .05.
#[test]
fn rank_loss_by_hand_and_its_gradient() {
    let v = candle_core::Var::from_tensor(&t1(&[0.5, 0.2, 0.4, 0.1])).unwrap();
    let l = rank_loss(
        v.as_tensor(),
        &[1.0, -1.0, -1.0, 1.0],
        &[0.1, 0.3, 0.05, 0.0],
    )
    .unwrap();
    assert!((scalar(&l) - 0.05).abs() < 1e-12, "{}", scalar(&l));
    // Only pair 0 is active: ∂/∂c_0 = +1/4, ∂/∂c_1 = −1/4.
    let g = common::v64(l.backward().unwrap().get(v.as_tensor()).unwrap());
    common::assert_close(&g, &[0.25, -0.25, 0.0, 0.0], 1e-12);
    // t = 0 pairs never contribute.
    let l0 = rank_loss(&t1(&[3.0, -1.0]), &[0.0, 0.0], &[0.0, 0.0]).unwrap();
    assert_eq!(scalar(&l0), 0.0);
    assert!(rank_loss(&t1(&[1.0]), &[0.0, 1.0], &[0.0]).is_err());
}

// ---- the method's loss ---------------------------------------------------------------------

/// Two samples (ids 0, 1), labels [0, 1], two modalities; audio logits [[2, 0], [0, 0]],
/// visual [[0, 0], [0, 3]]. Per-sample CE: audio [ln(1 + e⁻²), ln 2], visual [ln 2, ln(1 + e⁻³)].
/// History before ranking (default): h_a = [ln(1+e⁻²), ln 2] (0.127, 0.693) ⇒ n_a = [0, 1]:
/// t_a = [−1, 1], μ_a = [1, 1]; c_a = [lse(2,0), ln 2]/10 = [.2127, .0693]:
/// R_a = mean[max(0, −(.2127 − .0693) − 1), max(0, (.0693 − .2127) − 1)] = 0.
/// Visual: h_v = [ln 2, ln(1+e⁻³)] ⇒ n_v = [1, 0]: t_v = [1, −1], μ = [1, 1]; c_v = [ln 2, lse(0,3)]/10
/// ⇒ R_v = mean[max(0, (.0693 − .3049) − 1), max(0, −(.3049 − .0693) − 1)] = 0.
#[test]
fn method_loss_on_a_hand_built_batch() {
    let mut rng = SeededRng::new(0);
    let model = common::tiny_mlp_net(2, &FusionConfig::Sum, &mut rng);
    let mut batch = common::audio_label_batch(2, 2, &mut rng);
    batch.labels = Tensor::from_vec(vec![0u32, 1], 2, &Device::Cpu).unwrap();
    let za = t2(&[vec![2.0, 0.0], vec![0.0, 0.0]]);
    let zv = t2(&[vec![0.0, 0.0], vec![0.0, 3.0]]);
    let ca = [lse(&[2.0, 0.0]) / 10.0, 2f64.ln() / 10.0];
    let cv = [2f64.ln() / 10.0, lse(&[0.0, 3.0]) / 10.0];
    let fused = t2(&[vec![2.0 * ca[0], 0.0], vec![0.0, 3.0 * cv[1]]]);
    let out = MultimodalOutput {
        fused_logits: fused.clone(),
        per_modality_logits: vec![za, zv],
        features: vec![],
    };
    let mut m = Qmf::new(QmfConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    m.epoch_indices(2, &mut ctx).unwrap();
    let l = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let ce = |z: [f64; 2], y: usize| lse(&z) - z[y];
    let fused_ce = (ce([2.0 * ca[0], 0.0], 0) + ce([0.0, 3.0 * cv[1]], 1)) / 2.0;
    let ce_a = (ce([2.0, 0.0], 0) + ce([0.0, 0.0], 1)) / 2.0;
    let ce_v = (ce([0.0, 0.0], 0) + ce([0.0, 3.0], 1)) / 2.0;
    let want = fused_ce + ce_a + ce_v;
    assert!(
        (scalar(&l.total) - want).abs() < 1e-9,
        "{} vs {want}",
        scalar(&l.total)
    );
    assert_eq!(scalar(&l.parts["rank.audio"]), 0.0);
    assert_eq!(scalar(&l.parts["rank.visual"]), 0.0);
    let h = m.history(0).unwrap();
    common::assert_close(&h.values, &[ce([2.0, 0.0], 0), 2f64.ln()], 1e-6);
    let log = ctx.log.take();
    assert!((log["confidence.audio"].as_f64().unwrap() - (ca[0] + ca[1]) / 2.0).abs() < 1e-9);
    let spread = ((ca[0] - cv[0]).abs() + (ca[1] - cv[1]).abs()) / 2.0;
    assert!((log["weight_spread"].as_f64().unwrap() - spread).abs() < 1e-9);
    assert_eq!(log["rank_target_nonzero"].as_f64(), Some(1.0));

    // A second step with a large confidence on the sample of larger history activates R:
    // audio: sample 1 has the larger history (t_0 = −1 for the pair (0, 1)); with
    // c_a = [0, 2]/… pick logits so c_a,1 − c_a,0 > μ = 1: z_a,1 = [30, 30] ⇒ c = (30 + ln 2)/10.
    let out2 = MultimodalOutput {
        fused_logits: fused,
        per_modality_logits: vec![
            t2(&[vec![0.0, 0.0], vec![30.0, 30.0]]),
            t2(&[vec![0.0, 0.0], vec![0.0, 3.0]]),
        ],
        features: vec![],
    };
    let cfg = QmfConfig {
        fused_ce: false,
        history_update: HistoryUpdate::After,
        ..Default::default()
    };
    let mut m2 = Qmf::new(cfg).unwrap();
    m2.epoch_indices(2, &mut ctx).unwrap();
    // Seed the history with the first batch (update after ranking: this step ranks on it).
    m2.loss(&model, &batch, &out, &mut ctx).unwrap();
    let l2 = m2.loss(&model, &batch, &out2, &mut ctx).unwrap();
    // Audio pairs: (0,1): t = −1, μ = 1: max(0, −(c0 − c1) − 1) = c1 − c0 − 1;
    // (1,0): t = 1: max(0, (c1 − c0) − 1) — the same. c0 = ln 2/10, c1 = (30 + ln 2)/10 ⇒ 2.
    let r = scalar(&l2.parts["rank.audio"]);
    assert!((r - 2.0).abs() < 1e-6, "{r}");
    // fused_ce = false: total = CE_a + CE_v + λ(R_a + R_v), fused CE only logged.
    let ce_a2 = (ce([0.0, 0.0], 0) + ce([30.0, 30.0], 1)) / 2.0;
    let want2 = ce_a2 + ce_v + r + scalar(&l2.parts["rank.visual"]);
    assert!(
        (scalar(&l2.total) - want2).abs() < 1e-6,
        "{} vs {want2}",
        scalar(&l2.total)
    );
}

#[test]
fn prediction_is_the_confidence_weighted_sum() {
    let mut rng = SeededRng::new(0);
    let model = common::tiny_mlp_net(2, &FusionConfig::Sum, &mut rng);
    let za = t2(&[vec![1.0, 0.0, 0.0]]);
    let zv = t2(&[vec![0.0, 0.0, 2.5]]);
    let out = MultimodalOutput {
        fused_logits: (&za + &zv).unwrap(),
        per_modality_logits: vec![za, zv],
        features: vec![],
    };
    let m = Qmf::new(QmfConfig::default()).unwrap();
    let p = common::v64(&m.predict(&model, &out).unwrap());
    let (wa, wv) = (lse(&[1.0, 0.0, 0.0]) / 10.0, lse(&[0.0, 0.0, 2.5]) / 10.0);
    common::assert_close(&p, &[wa, 0.0, 2.5 * wv], 1e-9);
}

// ---- options -------------------------------------------------------------------------------

#[test]
fn bad_options_are_errors_naming_them() {
    for (k, v) in [
        ("temperature", toml::Value::Float(0.0)),
        ("temperature", toml::Value::Float(f64::NAN)),
        ("lambda", toml::Value::Float(-1.0)),
        ("history_update", toml::Value::String("never".into())),
        ("lamb", toml::Value::Float(0.1)),
    ] {
        let e = common::option_error("qmf", k, v.clone());
        assert!(e.contains(k) || e.contains("never"), "{k}: {e}");
    }
    let d = common::build_method("qmf", &toml::Table::new()).unwrap();
    assert_eq!(d.fusion, FusionConfig::Sum);
    assert_eq!(d.resolved["temperature"].as_float(), Some(10.0));
    assert_eq!(d.resolved["lambda"].as_float(), Some(1.0));
    assert_eq!(d.resolved["detach_weights"].as_bool(), Some(true));
    assert!(QmfConfig {
        lambda: f64::INFINITY,
        ..Default::default()
    }
    .check()
    .is_err());
}

// ---- end to end ----------------------------------------------------------------------------

#[test]
fn run_learns_and_logs_the_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "qmf", 0, 3, &[]);
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for r in &train {
        for m in ["audio", "visual"] {
            assert!(r.method[&format!("confidence.{m}")].as_f64().is_some());
            assert!(r.method[&format!("loss.rank.{m}")].as_f64().unwrap() >= 0.0);
            assert!(r.method[&format!("history_mean.{m}")].as_f64().unwrap() > 0.0);
        }
        assert!(r.method["weight_spread"].as_f64().unwrap() >= 0.0);
        assert_eq!(r.method["lambda"].as_f64(), Some(1.0));
    }
    // The histories accumulate: their means grow every epoch.
    let hm = |r: &modbal::EpochRecord| r.method["history_mean.audio"].as_f64().unwrap();
    assert!(hm(train[2]) > hm(train[1]) && hm(train[1]) > hm(train[0]));
    let s = out.summary.unwrap();
    assert!(s.test.fusion_acc > 0.4, "{}", s.test.fusion_acc);
}

#[test]
fn three_modalities_have_three_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "qmf", 1, 2, &["dataset.third_modality=true"]);
    let recs = common::read_metrics(&out.run_dir);
    let r = recs.iter().find(|r| r.split == "train").unwrap();
    let n = r
        .method
        .keys()
        .filter(|k| k.starts_with("confidence."))
        .count();
    assert_eq!(n, 3, "{:?}", r.method);
    let shares: f64 = r
        .method
        .iter()
        .filter(|(k, _)| k.starts_with("weight_share."))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    // The per-sample histories are method state: a resume without them would rank differently.
    common::assert_resume_matches(&["method.name=qmf".into()], 5, 4, 2, "qmf");
    common::assert_resume_matches(
        &["method.name=qmf".into(), "method.lambda=5.0".into()],
        3,
        3,
        1,
        "qmf lambda 5",
    );
}

#[test]
fn saved_state_round_trips_and_bad_state_is_an_error() {
    let mut rng = SeededRng::new(0);
    let model = common::tiny_mlp_net(2, &FusionConfig::Sum, &mut rng);
    let batch = common::audio_label_batch(2, 3, &mut rng);
    let mut m = Qmf::new(QmfConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 2);
    m.epoch_indices(3, &mut ctx).unwrap();
    let out = m.forward(&model, &batch, &mut ctx).unwrap();
    m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let s = m.state();
    let mut r = Qmf::new(QmfConfig::default()).unwrap();
    r.load_state(&s).unwrap();
    assert_eq!(r.history(1), m.history(1));
    assert!(r.history(0).unwrap().values.iter().all(|v| *v > 0.0));
    let e = r
        .load_state(&serde_json::json!({"histories": 3}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("qmf"), "{e}");
}
