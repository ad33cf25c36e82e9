//! CAL (Contribution-Guided Asymmetric Learning) next to the concat baseline, same seed and
//! settings. Extra arguments are `--set`-style overrides (`KEY=VALUE`), applied to both runs.
//!
//! ```text
//! cargo run --release --example cal                        # synth-vec, 12 epochs, ~10 s
//! cargo run --release --example cal -- method.gradient='"none"' method.lambda_m=0
//! cargo run --release --example cal -- dataset.name=synth-av   # small CNNs, minutes
//! ```
//!
//! Expected on `synth-vec` (seed 0, defaults, T = 30; see docs/methods/cal.md): CAL test fusion
//! accuracy 0.970 vs concat 0.968; visual slice 0.758 vs 0.538; last epoch φ = (0.71, 0.20),
//! W = (0.071, 0.030), a = (0.770, 0.230) for (audio, visual). With `method.temperature=1` (the
//! value before the sweep of docs/results/cal-temperature-sweep.md) a stays at ≈ (0.51, 0.49).

use modbal::{train, MethodConfig, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sets = vec![
        "dataset.name=synth-vec".to_string(),
        format!(
            "out_dir={:?}",
            std::env::temp_dir()
                .join("modbal-cal")
                .display()
                .to_string()
        ),
    ];
    sets.extend(std::env::args().skip(1));
    let (method_sets, run_sets): (Vec<String>, Vec<String>) =
        sets.into_iter().partition(|s| s.starts_with("method."));
    let base = RunConfig::default().with_overrides(&run_sets)?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut cal = base.clone();
    cal.method = MethodConfig::from_name("cal")?;
    let cal = cal.with_overrides(&method_sets)?;
    let out = train(&cal, &opts)?;
    let s = out.summary.expect("full run");
    let mut concat = base.clone();
    concat.method = MethodConfig::from_name("concat")?;
    let c = train(&concat, &opts)?.summary.expect("full run");
    println!(
        "{}: cal test fusion {:.4} (val {:.4}) | concat test fusion {:.4} (val {:.4})",
        s.dataset, s.test.fusion_acc, s.val.fusion_acc, c.test.fusion_acc, c.val.fusion_acc
    );
    for (m, acc) in &s.test.modality_acc {
        println!(
            "  {m:<8} slice acc: cal {acc:.4}, concat {:.4}",
            c.test.modality_acc[m]
        );
    }
    if let Some(last) = out.history.iter().rev().find(|r| r.split == "train") {
        for key in ["phi", "R", "W", "a", "det_con"] {
            if let Some(v) = last.method.get(key) {
                println!("  last epoch {key:<8} {v}");
            }
        }
    }
    println!("run directory: {}", out.run_dir.display());
    Ok(())
}
