//! modbal's building blocks on your own tensors, without the training loop: an estimator
//! (Gaussian mutual information), a contribution metric (OGM-GE's per-modality scores and
//! discrepancy ratio) and a gradient modulator (OGM-GE's coefficients applied to a `GradStore`).
//!
//! ```sh
//! cargo run --release --example building_blocks
//! ```
//!
//! Each number is printed next to its closed form; the program exits with an error if one
//! disagrees (the test `tests/examples_run.rs` runs it).

use modbal::candle::{DType, Device, Tensor, Var};
use modbal::contrib::ogm::ogm_scores;
use modbal::info::gaussian::{gaussian_mi, GaussianConfig};
use modbal::modulate::{OgmGe, OgmGeConfig, OgmScope};
use modbal::tensors::SeededRng;

fn check(what: &str, got: f64, want: f64, tol: f64) -> Result<(), String> {
    println!("{what:<46} {got:>10.6}   closed form {want:>10.6}");
    if (got - want).abs() <= tol {
        Ok(())
    } else {
        Err(format!(
            "{what}: {got} differs from {want} by more than {tol}"
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(2026);

    // 1. Estimator. Features of two "modalities", 4 dimensions each, correlated coordinate by
    //    coordinate with r = 0.6: I(X; Y) = −(d/2)·ln(1 − r²) nats for jointly Gaussian data.
    let (n, d, r) = (20_000usize, 4usize, 0.6f64);
    let mut xs = Vec::with_capacity(n * d);
    let mut ys = Vec::with_capacity(n * d);
    for _ in 0..n * d {
        let (a, b) = (rng.normal(), rng.normal());
        xs.push(a);
        ys.push(r * a + (1.0 - r * r).sqrt() * b);
    }
    let x = Tensor::from_vec(xs, (n, d), &dev)?;
    let y = Tensor::from_vec(ys, (n, d), &dev)?;
    let exact = GaussianConfig {
        ridge: 0.0,
        shrinkage: 0.0,
    };
    let mi = gaussian_mi(&x, &y, &exact)?.to_scalar::<f64>()?;
    let want = -(d as f64) / 2.0 * (1.0 - r * r).ln();
    check("Gaussian MI of the two feature sets (nats)", mi, want, 0.03)?;

    // 2. Contribution metric. Per-modality logits of a batch of 2 samples, 2 classes, labels
    //    [0, 1]: audio gives the label probability 0.75 on both, visual 0.5 (chance).
    let ln3 = 3f64.ln();
    let audio = Tensor::new(&[[ln3, 0.0], [0.0, ln3]], &dev)?;
    let visual = Tensor::zeros((2, 2), DType::F64, &dev)?;
    let report = ogm_scores(&[audio, visual], &[0, 1])?;
    // OGM-GE eq 9: s_m = Σ_i softmax(z_m,i)[y_i]; the discrepancy max/min is 1 when balanced.
    check("OGM score of audio (eq 9)", report.scores[0], 1.5, 1e-12)?;
    check("OGM score of visual (eq 9)", report.scores[1], 1.0, 1e-12)?;
    check(
        "discrepancy ratio s_audio / s_visual",
        report.discrepancy,
        1.5,
        1e-12,
    )?;

    // 3. Gradient modulator. OGM-GE eq 10 with α = 0.8 on those scores: audio (ρ = 1.5 > 1) has
    //    its encoder's gradients scaled by k = 1 − tanh(α·ρ); visual keeps k = 1.
    //    (The default scope modulates 4-D convolution kernels only, as the official code; these
    //    encoders are single linear layers, so every encoder parameter is in scope.)
    let ogm = OgmGe::new(OgmGeConfig {
        ge: false,
        scope: OgmScope::AllEncoder,
        ..Default::default()
    })?;
    let w_audio = Var::from_tensor(&Tensor::ones((3, 2), DType::F32, &dev)?)?;
    let w_visual = Var::from_tensor(&Tensor::ones((3, 2), DType::F32, &dev)?)?;
    // A loss whose gradient is 1 for every weight of both encoders.
    let loss = (w_audio.as_tensor().sum_all()? + w_visual.as_tensor().sum_all()?)?;
    let mut grads = loss.backward()?;
    let params = vec![
        ("encoder.audio.fc.weight".to_string(), w_audio.clone()),
        ("encoder.visual.fc.weight".to_string(), w_visual.clone()),
    ];
    let groups = ["encoder.audio".to_string(), "encoder.visual".to_string()];
    let applied = ogm.apply(&mut grads, &params, &groups, &report.scores, 0, &mut rng)?;
    let k_audio = 1.0 - (0.8f64 * 1.5).tanh();
    check(
        "OGM-GE coefficient of audio (eq 10)",
        applied.coefficients[0],
        k_audio,
        1e-12,
    )?;
    let g = |v: &Var| -> Result<f64, Box<dyn std::error::Error>> {
        let t = grads.get(v.as_tensor()).ok_or("no gradient")?;
        Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
    };
    check(
        "audio weight gradient after modulation",
        g(&w_audio)?,
        k_audio,
        1e-6,
    )?;
    check(
        "visual weight gradient after modulation",
        g(&w_visual)?,
        1.0,
        1e-6,
    )?;
    println!("all building blocks agree with their closed forms");
    Ok(())
}
