//! IBML TCM (eq 15-16): probabilities, selection of previously-correct samples of the
//! over-optimised modality only, the noise scale, the other modalities untouched, seeding.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use modbal_core::Batch;
use modbal_modulate::*;
use modbal_tensors::SeededRng;

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// A batch of `b` samples: audio [b, 2, 3] ~ N(1, 3²), visual [b, 5] ~ N(0, 1).
fn batch(b: usize, seed: u64) -> Batch {
    let mut rng = SeededRng::new(seed);
    let a = rng
        .randn(vec![b, 2, 3], 1.0, 3.0, DType::F32, &Device::Cpu)
        .unwrap();
    let v = rng
        .randn(vec![b, 5], 0.0, 1.0, DType::F32, &Device::Cpu)
        .unwrap();
    let y: Vec<u32> = (0..b).map(|i| (i % 4) as u32).collect();
    Batch {
        inputs: vec![a, v],
        labels: Tensor::from_vec(y, b, &Device::Cpu).unwrap(),
        sample_ids: (0..b).map(|i| 1000 + i).collect(),
    }
}

fn tcm(noise: TcmNoise) -> Tcm {
    Tcm::new(TcmConfig {
        noise,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn probabilities_eq16() {
    let t = tcm(TcmNoise::SharedDraw);
    // ρ̃ = [3, 1]: ā = 2·3/4 = 1.5 and 2·1/4 = 0.5 → p = [min(1.5, 10)/10, 0] = [0.15, 0].
    let (a, p) = t.probabilities(&[3.0, 1.0]).unwrap();
    assert_close(&a, &[1.5, 0.5], 1e-12, "strength");
    assert_close(&p, &[0.15, 0.0], 1e-12, "p");
    // M = 3, ρ̃ = [30, 1, 1]: ā_0 = 3·30/32 = 2.8125 → p = 0.28125.
    let (_, p) = t.probabilities(&[30.0, 1.0, 1.0]).unwrap();
    assert_close(&p, &[0.28125, 0.0, 0.0], 1e-12, "p3");
    // λ caps the probability: λ = 1.5, ā = 2·100/100 = 2 → min(2, 1.5)/1.5 = 1.
    let capped = Tcm::new(TcmConfig {
        lambda: 1.5,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        capped.probabilities(&[100.0, 0.0]).unwrap().1,
        vec![1.0, 0.0]
    );
    // Equal strengths: nobody is over-optimised (strict inequality); Σρ̃ = 0: nothing.
    assert_eq!(t.probabilities(&[2.0, 2.0]).unwrap().1, vec![0.0, 0.0]);
    assert_eq!(t.probabilities(&[0.0, 0.0]).unwrap().1, vec![0.0, 0.0]);
    assert!(matches!(
        t.probabilities(&[f64::NAN, 1.0]),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        Tcm::new(TcmConfig {
            lambda: 0.5,
            ..Default::default()
        }),
        Err(ModulateError::Param(_))
    ));
}

#[test]
fn selects_previously_correct_samples_of_the_over_optimised_modality_with_probability_p() {
    // B = 4000; audio previously correct on even positions (2000 samples), visual on all.
    // ρ̃ = [3, 1] → only audio is over-optimised, p = 0.15. The number of perturbed samples is
    // Binomial(2000, 0.15): mean 300, sd √(2000·0.15·0.85) = 15.97; accept ±4 sd.
    let b = 4000;
    for noise in [TcmNoise::SharedDraw, TcmNoise::PerSample] {
        let original = batch(b, 1);
        let mut bt = original.clone();
        let correct = vec![
            (0..b).map(|i| i % 2 == 0).collect::<Vec<_>>(),
            vec![true; b],
        ];
        let report = tcm(noise)
            .apply(&mut bt, &[3.0, 1.0], &correct, 5, &mut SeededRng::new(7))
            .unwrap();
        assert!(report.active);
        let sel = &report.perturbed[0];
        assert!(
            report.perturbed[1].is_empty(),
            "visual is not over-optimised"
        );
        assert!(
            sel.iter().all(|i| i % 2 == 0),
            "only previously-correct samples"
        );
        let n = sel.len() as f64;
        assert!((n - 300.0).abs() < 4.0 * 15.97, "{noise:?}: {n} perturbed");
        assert_eq!(
            report.perturbed_sample_ids[0],
            sel.iter().map(|i| 1000 + i).collect::<Vec<_>>()
        );
        // Visual input, labels and ids bit-identical.
        assert_eq!(bits(&bt.inputs[1]), bits(&original.inputs[1]));
        assert_eq!(
            bt.labels.to_vec1::<u32>().unwrap(),
            original.labels.to_vec1::<u32>().unwrap()
        );
        assert_eq!(bt.sample_ids, original.sample_ids);
        // Audio: unselected rows bit-identical, selected rows changed.
        let (new_a, old_a) = (bits(&bt.inputs[0]), bits(&original.inputs[0]));
        for i in 0..b {
            let same = new_a[i * 6..(i + 1) * 6] == old_a[i * 6..(i + 1) * 6];
            assert_eq!(same, !sel.contains(&i), "row {i}");
        }
        // Noise scale: σ = unbiased std of the whole audio batch ≈ 3 (drawn from N(1, 3²)).
        let xs = vec_f64(&original.inputs[0]);
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt();
        assert!((report.noise_std[0] - sd).abs() < 1e-9);
        assert!((sd - 3.0).abs() < 0.1);
        let new = vec_f64(&bt.inputs[0]);
        let diffs: Vec<Vec<f64>> = sel
            .iter()
            .map(|&i| (0..6).map(|j| new[i * 6 + j] - xs[i * 6 + j]).collect())
            .collect();
        match noise {
            TcmNoise::SharedDraw => {
                // One draw shared by every selected sample.
                for d in &diffs[1..] {
                    assert_close(d, &diffs[0], 1e-5, "shared noise");
                }
            }
            TcmNoise::PerSample => {
                // ~1800 independent N(0, σ²) values: std within 5 % (s.e. ≈ 1.7 %), mean ≈ 0.
                let all: Vec<f64> = diffs.concat();
                let k = all.len() as f64;
                let mu = all.iter().sum::<f64>() / k;
                let s = (all.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / (k - 1.0)).sqrt();
                assert!((s / sd - 1.0).abs() < 0.05, "noise std {s} vs {sd}");
                assert!(mu.abs() < 0.3, "noise mean {mu}");
            }
        }
    }
}

#[test]
fn reproducible_per_seed_and_inactive_outside_the_window() {
    let correct = vec![vec![true; 64], vec![true; 64]];
    let run = |seed: u64, epoch: usize| {
        let mut bt = batch(64, 2);
        let r = tcm(TcmNoise::SharedDraw)
            .apply(
                &mut bt,
                &[1.0, 4.0],
                &correct,
                epoch,
                &mut SeededRng::new(seed),
            )
            .unwrap();
        (r, bits(&bt.inputs[1]))
    };
    let (r1, x1) = run(3, 10);
    let (r2, x2) = run(3, 10);
    assert_eq!(r1, r2);
    assert_eq!(x1, x2);
    let (r3, _) = run(4, 10);
    assert_ne!(r1.perturbed, r3.perturbed);
    // ā_v = 2·4/5 = 1.6 → p = 0.16; visual only.
    assert_close(&r1.probabilities, &[0.0, 0.16], 1e-12, "p");
    // Default window [1, 90): epochs 0 and 90 do nothing and draw nothing.
    for epoch in [0, 90] {
        let mut rng = SeededRng::new(3);
        let mut bt = batch(64, 2);
        let before = bits(&bt.inputs[1]);
        let r = tcm(TcmNoise::SharedDraw)
            .apply(&mut bt, &[1.0, 4.0], &correct, epoch, &mut rng)
            .unwrap();
        assert!(!r.active && r.num_perturbed() == 0);
        assert_eq!(bits(&bt.inputs[1]), before);
        assert_eq!(
            rng.uniform(),
            SeededRng::new(3).uniform(),
            "no draw outside the window"
        );
    }
    // Mask lengths must match the batch.
    let mut bt = batch(64, 2);
    assert!(matches!(
        tcm(TcmNoise::SharedDraw).apply(
            &mut bt,
            &[1.0, 4.0],
            &[vec![true; 63], vec![true; 64]],
            5,
            &mut SeededRng::new(0)
        ),
        Err(ModulateError::Input(_))
    ));
    let c: TcmConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, TcmConfig::default());
    assert_eq!(c.window, ModulationWindow { start: 1, end: 90 });
}
