//! `tmc` (Trusted Multi-view Classification, ICLR'21): the Dempster–Shafer combination, the
//! evidential loss with its annealed KL term, prediction from the combined opinion, resume,
//! three modalities and runs through the registry.
//!
//! Reference values are closed forms derived by hand below (ψ(n+1) = ψ(n) + 1/n, lnΓ(n) =
//! ln (n−1)!); the combination is also recomputed from its definition with plain f64 loops
//! (`ds_ref`: the double sum over `i ≠ j` of the official `bmm` − diagonal). No PyTorch here: the
//! official arithmetic is quoted as a snippet with the numbers it gives by hand.

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalOutput, RunContext};
use modbal::encoders::FusionConfig;
use modbal::methods::params::MethodParams;
use modbal::methods::tmc::{
    alpha_from_logits, ds_combine, ds_combine_two, evidential_loss, kl_to_uniform, uncertainty,
    EpochCount, Tmc, TmcConfig, TmcLoss,
};
use modbal::tensors::SeededRng;

fn t2(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn labels(y: &[u32]) -> Tensor {
    Tensor::from_vec(y.to_vec(), y.len(), &Device::Cpu).unwrap()
}

/// The reduced DS rule from its definition, one sample, plain f64 (independent of the crate).
fn ds_ref(a1: &[f64], a2: &[f64]) -> Vec<f64> {
    let k = a1.len() as f64;
    let (s1, s2): (f64, f64) = (a1.iter().sum(), a2.iter().sum());
    let b1: Vec<f64> = a1.iter().map(|a| (a - 1.0) / s1).collect();
    let b2: Vec<f64> = a2.iter().map(|a| (a - 1.0) / s2).collect();
    let (u1, u2) = (k / s1, k / s2);
    let mut c = 0.0;
    for (i, x) in b1.iter().enumerate() {
        for (j, y) in b2.iter().enumerate() {
            if i != j {
                c += x * y;
            }
        }
    }
    let u = u1 * u2 / (1.0 - c);
    let s = k / u;
    (0..a1.len())
        .map(|i| (b1[i] * b2[i] + b1[i] * u2 + b2[i] * u1) / (1.0 - c) * s + 1.0)
        .collect()
}

// ---- the combination ------------------------------------------------------------------------

/// Official arithmetic (`TMC ICLR/model.py`, `DS_Combin_two`), by hand:
/// ```python
/// a1, a2 = torch.tensor([[3., 1.]]), torch.tensor([[1., 2.]])
/// # b1 = [.5, 0], u1 = .5;  b2 = [0, 1/3], u2 = 2/3;  C = .5·(1/3) = 1/6
/// # b = [(.5·2/3)/(5/6), (1/3·.5)/(5/6)] = [.4, .2];  u = (1/3)/(5/6) = .4
/// # S = 2/.4 = 5;  e = b·S = [2, 1];  α = [3, 2]
/// ```
#[test]
fn two_view_example_by_hand() {
    let (a, c) = ds_combine_two(&t2(&[vec![3.0, 1.0]]), &t2(&[vec![1.0, 2.0]])).unwrap();
    common::assert_close(&common::v64(&a), &[3.0, 2.0], 1e-12);
    common::assert_close(&common::v64(&c), &[1.0 / 6.0], 1e-12);
    common::assert_close(&common::v64(&uncertainty(&a).unwrap()), &[0.4], 1e-12);
    // Belief masses plus uncertainty sum to one.
    let b: Vec<f64> = common::v64(&a).iter().map(|x| (x - 1.0) / 5.0).collect();
    assert!((b.iter().sum::<f64>() + 0.4 - 1.0).abs() < 1e-12);
}

#[test]
fn combination_matches_the_definition_and_is_commutative_and_associative() {
    let mut rng = SeededRng::new(11);
    let draw = |rng: &mut SeededRng| -> Vec<Vec<f64>> {
        (0..4)
            .map(|_| {
                (0..5)
                    .map(|_| 1.0 + 6.0 * rng.uniform())
                    .collect::<Vec<f64>>()
            })
            .collect()
    };
    let (x, y, z) = (draw(&mut rng), draw(&mut rng), draw(&mut rng));
    let (tx, ty, tz) = (t2(&x), t2(&y), t2(&z));
    let xy = ds_combine_two(&tx, &ty).unwrap().0;
    let want: Vec<f64> = x.iter().zip(&y).flat_map(|(a, b)| ds_ref(a, b)).collect();
    common::assert_close(&common::v64(&xy), &want, 1e-9);
    let yx = ds_combine_two(&ty, &tx).unwrap().0;
    common::assert_close(&common::v64(&xy), &common::v64(&yx), 1e-9);
    let left = ds_combine(&[tx.clone(), ty.clone(), tz.clone()]).unwrap().0;
    let right = ds_combine_two(&tx, &ds_combine_two(&ty, &tz).unwrap().0)
        .unwrap()
        .0;
    common::assert_close(&common::v64(&left), &common::v64(&right), 1e-9);
    // And ds_combine over three is the left fold.
    let fold = ds_combine_two(&xy, &tz).unwrap().0;
    common::assert_close(&common::v64(&left), &common::v64(&fold), 1e-12);
}

#[test]
fn combining_with_a_vacuous_opinion_is_the_identity() {
    // α = 1 (no evidence): b = 0, u = 1, C = 0 ⇒ the other opinion unchanged.
    let a = t2(&[vec![4.0, 1.5, 2.0]]);
    let vacuous = t2(&[vec![1.0, 1.0, 1.0]]);
    let (r, c) = ds_combine_two(&a, &vacuous).unwrap();
    common::assert_close(&common::v64(&r), &[4.0, 1.5, 2.0], 1e-12);
    common::assert_close(&common::v64(&c), &[0.0], 1e-15);
}

#[test]
fn one_view_is_an_error_naming_the_count() {
    let e = ds_combine(&[t2(&[vec![2.0, 1.0]])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least two") && e.contains('1'), "{e}");
    let e = ds_combine_two(&t2(&[vec![2.0, 1.0]]), &t2(&[vec![2.0, 1.0, 1.0]]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1, 2]") && e.contains("[1, 3]"), "{e}");
}

// ---- the loss -------------------------------------------------------------------------------

#[test]
fn evidential_loss_closed_forms() {
    let ln2 = 2f64.ln();
    // α = [3, 2], y = 0: ψ(5) − ψ(3) = 1/3 + 1/4; α̃ = [1, 2]:
    // KL(Dir(1,2) ‖ Dir(1,1)) = lnΓ(3) − 2 lnΓ(2) − lnΓ(1) + (2 − 1)(ψ(2) − ψ(3)) = ln 2 − 1/2.
    let a = t2(&[vec![3.0, 2.0], vec![1.0, 2.0], vec![3.0, 1.0]]);
    let kl = common::v64(&kl_to_uniform(&t2(&[vec![1.0, 2.0], vec![1.0, 1.0]])).unwrap());
    common::assert_close(&kl, &[ln2 - 0.5, 0.0], 1e-10);
    // Dir(2, 2, 2) vs Dir(1,1,1): lnΓ(6) − 3 lnΓ(2) − lnΓ(3) + 3·(ψ(2) − ψ(6)) = ln 60 − 137/20.
    let kl3 = common::v64(&kl_to_uniform(&t2(&[vec![2.0, 2.0, 2.0]])).unwrap())[0];
    assert!((kl3 - (60f64.ln() - 3.0 * (0.5 + 1.0 / 3.0 + 0.25 + 0.2))).abs() < 1e-10);
    let y = labels(&[0, 0, 0]);
    for coef in [0.0, 0.3, 1.0] {
        let l = common::v64(&evidential_loss(&a, &y, coef, TmcLoss::Digamma).unwrap());
        let want = [
            7.0 / 12.0 + coef * (ln2 - 0.5), // [3, 2]
            1.5 + coef * (ln2 - 0.5),        // [1, 2]: ψ(3) − ψ(1) = 1 + 1/2
            1.0 / 3.0,                       // [3, 1]: ψ(4) − ψ(3); α̃ = [1, 1]
        ];
        common::assert_close(&l, &want, 1e-10);
    }
    // Sum of squares: p = [.6, .4]; (1 − .6)² + .4² + (.24 + .24)/6 = .4.
    let l = common::v64(
        &evidential_loss(&t2(&[vec![3.0, 2.0]]), &labels(&[0]), 0.0, TmcLoss::Mse).unwrap(),
    );
    common::assert_close(&l, &[0.4], 1e-12);
}

#[test]
fn annealing_schedule() {
    let d = TmcConfig::default();
    assert_eq!(d.annealing_epochs, 50);
    assert!((d.annealing_coef(0, 6) - 1.0 / 50.0).abs() < 1e-15);
    assert!((d.annealing_coef(5, 6) - 6.0 / 50.0).abs() < 1e-15);
    assert_eq!(d.annealing_coef(49, 100), 1.0);
    assert_eq!(d.annealing_coef(80, 100), 1.0);
    let zero = TmcConfig {
        epoch_count: EpochCount::FromZero,
        annealing_epochs: 10,
        ..Default::default()
    };
    assert_eq!(zero.annealing_coef(0, 20), 0.0);
    assert!((zero.annealing_coef(4, 20) - 0.4).abs() < 1e-15);
    // Scaled: 50 of 500 official epochs in a 60-epoch run → 6.
    let scaled = TmcConfig {
        schedule_epochs: 500,
        ..Default::default()
    };
    assert_eq!(scaled.annealing_epochs_for(60), 6);
    assert!((scaled.annealing_coef(2, 60) - 0.5).abs() < 1e-15);
    // Never below one epoch.
    assert_eq!(scaled.annealing_epochs_for(4), 1);
}

/// The method's loss on a hand-built batch: views α¹ = [3, ~1], α² = [~1, 2] (softplus of
/// ln(e² − 1), ln(e − 1) and −40), label 0, at epoch 9 of the default schedule (λ = 10/50):
/// `L = 1/3 + (3/2 + λ(ln 2 − 1/2)) + (7/12 + λ(ln 2 − 1/2))`.
#[test]
fn method_loss_matches_the_closed_form_and_reaches_both_classifiers() {
    let mut rng = SeededRng::new(0);
    let model = common::tiny_mlp_net(2, &FusionConfig::Sum, &mut rng);
    let mut batch = common::audio_label_batch(2, 1, &mut rng);
    batch.labels = labels(&[0]);
    let e2 = (2f64.exp() - 1.0).ln();
    let e1 = (1f64.exp() - 1.0).ln();
    let out = MultimodalOutput {
        fused_logits: t2(&[vec![0.0, 0.0]]),
        per_modality_logits: vec![t2(&[vec![e2, -40.0]]), t2(&[vec![-40.0, e1]])],
        features: vec![],
    };
    common::assert_close(
        &common::v64(&alpha_from_logits(&out.per_modality_logits[0]).unwrap()),
        &[3.0, 1.0],
        1e-12,
    );
    let mut m = Tmc::new(TmcConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 100);
    ctx.epoch = 9;
    let l = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let lam = 0.2;
    let kl = 2f64.ln() - 0.5;
    let want = 1.0 / 3.0 + (1.5 + lam * kl) + (7.0 / 12.0 + lam * kl);
    let got = l
        .total
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    let part = |k: &str| {
        l.parts[k]
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    assert!((part("audio") - 1.0 / 3.0).abs() < 1e-9);
    assert!((part("combined") - (7.0 / 12.0 + lam * kl)).abs() < 1e-9);
    let log = ctx.log.take();
    assert!((log["annealing"].as_f64().unwrap() - 0.2).abs() < 1e-15);
    assert!((log["uncertainty.combined"].as_f64().unwrap() - 0.4).abs() < 1e-9);
    assert!((log["uncertainty.audio"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert!((log["conflict"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9);

    // Through the model: every modality's classifier gets a gradient.
    let out = m.forward(&model, &batch, &mut ctx).unwrap();
    let l = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    let g = l.total.backward().unwrap();
    for name in ["head.audio.weight", "head.visual.weight"] {
        let v = common::var(&model, name);
        let n = g
            .get(v.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(n.to_scalar::<f32>().unwrap() > 0.0, "{name}");
    }
}

#[test]
fn prediction_is_the_combined_opinion() {
    let mut rng = SeededRng::new(0);
    let model = common::tiny_mlp_net(2, &FusionConfig::Sum, &mut rng);
    let z1 = t2(&[vec![0.5, -1.0, 2.0], vec![-3.0, 1.0, 0.0]]);
    let z2 = t2(&[vec![1.5, 0.0, -2.0], vec![0.2, 0.1, 4.0]]);
    let out = MultimodalOutput {
        fused_logits: (&z1 + &z2).unwrap(),
        per_modality_logits: vec![z1.clone(), z2.clone()],
        features: vec![],
    };
    let m = Tmc::new(TmcConfig::default()).unwrap();
    let pred = m.predict(&model, &out).unwrap();
    let sp = |z: &Tensor| -> Vec<Vec<f64>> {
        common::rows(z)
            .iter()
            .map(|r| r.iter().map(|x| (1.0 + x.exp()).ln() + 1.0).collect())
            .collect()
    };
    let (a1, a2) = (sp(&z1), sp(&z2));
    let want: Vec<f64> = a1
        .iter()
        .zip(&a2)
        .flat_map(|(a, b)| ds_ref(a, b))
        .map(f64::ln)
        .collect();
    common::assert_close(&common::v64(&pred), &want, 1e-9);
    let per = m.predict_modalities(&model, &out).unwrap();
    let want1: Vec<f64> = a1.iter().flatten().map(|x| x.ln()).collect();
    common::assert_close(&common::v64(&per[0]), &want1, 1e-9);
}

// ---- options ---------------------------------------------------------------------------------

#[test]
fn bad_options_are_errors_naming_them() {
    let e = common::option_error("tmc", "annealing_epochs", toml::Value::Integer(0));
    assert!(e.contains("annealing_epochs"), "{e}");
    let e = common::option_error("tmc", "loss", toml::Value::String("l1".into()));
    assert!(e.contains("l1") || e.contains("loss"), "{e}");
    let e = common::option_error("tmc", "epoch_count", toml::Value::String("two".into()));
    assert!(e.contains("two") || e.contains("epoch_count"), "{e}");
    let e = common::option_error("tmc", "lambda_epochs", toml::Value::Integer(5));
    assert!(e.contains("lambda_epochs"), "{e}");
    let d = common::build_method("tmc", &toml::Table::new()).unwrap();
    assert_eq!(d.fusion, FusionConfig::Sum);
    assert_eq!(d.resolved["annealing_epochs"].as_integer(), Some(50));
    assert_eq!(d.resolved["loss"].as_str(), Some("digamma"));
    assert!(TmcConfig {
        annealing_epochs: 0,
        ..Default::default()
    }
    .check()
    .is_err());
}

// ---- end to end through the registry ---------------------------------------------------------

#[test]
fn run_learns_and_logs_the_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "tmc", 0, 3, &[]);
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for (i, r) in train.iter().enumerate() {
        let a = r.method["annealing"].as_f64().unwrap();
        assert!((a - (i + 1) as f64 / 50.0).abs() < 1e-12, "{a}");
        for k in [
            "uncertainty.audio",
            "uncertainty.visual",
            "uncertainty.combined",
        ] {
            let u = r.method[k].as_f64().unwrap();
            assert!(u > 0.0 && u <= 1.0, "{k}: {u}");
        }
        assert!(r.method["loss.combined"].as_f64().is_some());
    }
    // Fusing reduces uncertainty below either view's (u = u¹u²/(1 − C) with u^v < 1).
    let last = train[2];
    let uc = last.method["uncertainty.combined"].as_f64().unwrap();
    assert!(uc < last.method["uncertainty.audio"].as_f64().unwrap());
    // Evidence grows with training: the combined uncertainty falls.
    assert!(uc < train[0].method["uncertainty.combined"].as_f64().unwrap());
    let s = out.summary.unwrap();
    assert!(s.test.fusion_acc > 0.4, "{}", s.test.fusion_acc);
}

#[test]
fn three_modalities_combine_three_views() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "tmc", 1, 2, &["dataset.third_modality=true"]);
    let recs = common::read_metrics(&out.run_dir);
    let r = recs.iter().find(|r| r.split == "train").unwrap();
    let us: Vec<&String> = r
        .method
        .keys()
        .filter(|k| k.starts_with("uncertainty."))
        .collect();
    assert_eq!(us.len(), 4, "{:?}", r.method);
    let val = recs.iter().find(|r| r.split == "val").unwrap();
    assert_eq!(val.modality_acc.len(), 3);
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    common::assert_resume_matches(&["method.name=tmc".into()], 5, 4, 2, "tmc");
}

#[test]
fn batch_with_wrong_input_count_is_an_error() {
    let mut rng = SeededRng::new(0);
    let model = common::tiny_mlp_net(2, &FusionConfig::Sum, &mut rng);
    let b3 = common::audio_label_batch(3, 4, &mut rng);
    let batch = Batch {
        inputs: b3.inputs.clone(),
        labels: b3.labels.clone(),
        sample_ids: b3.sample_ids.clone(),
    };
    let zeros = t2(&vec![vec![0.0; 3]; 4]);
    let out = MultimodalOutput {
        fused_logits: zeros.clone(),
        per_modality_logits: vec![zeros.clone(), zeros],
        features: vec![],
    };
    let mut m = Tmc::new(TmcConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 2);
    let e = m
        .loss(&model, &batch, &out, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tmc"), "{e}");
}
