//! OGM-GE against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example ogm_ge -- synth-vec        # ~1 s on 2 cores
//! cargo run --release --example ogm_ge -- synth-vec alpha=0.1 form=\"continuous\"
//! cargo run --release --example ogm_ge -- synth-vec schedule_epochs=0   # window literal
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `ogm-ge` (see `docs/methods/ogm-ge.md`).
//! Prints, per epoch, the mean ρ and k of each modality, then test accuracies (fusion and each
//! head slice) of concat and OGM-GE. Expected on `synth-vec` (seed 0, defaults, 12 epochs; eq 10,
//! the official window 0-50 of 100 scaled to epochs 0-5): concat test fusion 0.968 with the visual
//! slice at 0.538; OGM-GE fusion 0.965 with the visual slice at 0.608 (ρ_audio 1.40 → 1.85 → 1.58,
//! k_audio 0.24 → 0.10 → 0.16 in epochs 0-5, then 1); see `docs/methods/ogm-ge.md`.

use modbal::{train, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().cloned().unwrap_or_else(|| "synth-vec".into());
    let out = std::env::temp_dir().join("modbal-example-ogm-ge");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut sets = vec!["method.name=ogm-ge".to_string()];
    sets.extend(args.iter().skip(1).map(|kv| format!("method.{kv}")));
    let ogm = train(&base.with_overrides(&sets)?, &opts)?;
    for r in ogm.history.iter().filter(|r| r.split == "train") {
        println!(
            "epoch {:>2}: rho {}  k {}",
            r.epoch,
            r.method
                .get("rho")
                .map(|v| v.to_string())
                .unwrap_or_default(),
            r.method.get("k").map(|v| v.to_string()).unwrap_or_default()
        );
    }
    let concat = train(&base, &opts)?;
    for (name, run) in [("concat", &concat), ("ogm-ge", &ogm)] {
        let s = run.summary.as_ref().expect("full run");
        println!(
            "{name:<7} test fusion {:.3}  slices {:?}  discrepancy {:?}",
            s.test.fusion_acc, s.test.modality_acc, s.test.discrepancy_ratio
        );
    }
    Ok(())
}
