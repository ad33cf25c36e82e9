//! The modality-imbalance signature on a built-in benchmark.
//!
//! Trains `concat` (joint), and each modality alone, with the same seed and settings, then
//! prints each modality's accuracy alone next to its head-slice accuracy inside joint training.
//!
//! ```text
//! cargo run --release --example imbalance -- synth-vec   # ~10 s
//! cargo run --release --example imbalance -- synth-av    # ~4 min on 2 cores
//! ```
//!
//! Expected on `synth-vec` (seed 0, defaults): visual alone ≈ 0.72 on val, visual slice inside
//! concat ≈ 0.51, concat fusion ≈ 0.94 (numbers in datasets/README.md).

use modbal::{train, MethodConfig, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dataset = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "synth-vec".into());
    let out = std::env::temp_dir().join("modbal-imbalance");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let joint = train(&base, &opts)?.summary.expect("full run");
    println!(
        "dataset {dataset}: concat fusion val {:.3}, test {:.3}",
        joint.val.fusion_acc, joint.test.fusion_acc
    );
    println!(
        "{:<10} {:>12} {:>22}",
        "modality", "alone (val)", "slice in concat (val)"
    );
    for (name, slice) in &joint.val.modality_acc {
        let mut cfg = base.clone();
        cfg.method = MethodConfig::unimodal(name);
        let alone = train(&cfg, &opts)?.summary.expect("full run");
        println!("{name:<10} {:>12.3} {:>22.3}", alone.val.fusion_acc, slice);
    }
    Ok(())
}
