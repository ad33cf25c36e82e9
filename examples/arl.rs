//! ARL against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example arl -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example arl -- synth-vec start_epoch=2 gamma=3.0 temperature=4.0
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `arl` (see `docs/methods/arl.md`).
//! Prints, per epoch, the coefficients w and the gradient scale per modality, then the test accuracies (fusion and each
//! modality) of concat and ARL. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/arl.md`.

use modbal::train::{train, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().cloned().unwrap_or_else(|| "synth-vec".into());
    let out = std::env::temp_dir().join("modbal-example-arl");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut sets = vec!["method.name=arl".to_string()];
    sets.extend(args.iter().skip(1).map(|kv| format!("method.{kv}")));
    let run = train(&base.with_overrides(&sets)?, &opts)?;
    for r in run.history.iter().filter(|r| r.split == "train") {
        let show = |k: &str| r.method.get(k).map(|v| v.to_string()).unwrap_or_default();
        println!(
            "epoch {:>2}: w {}  scale {}  gamma {}",
            r.epoch,
            show("w"),
            show("scale"),
            show("gamma")
        );
    }
    let concat = train(&base, &opts)?;
    for (name, r) in [("concat", &concat), ("arl", &run)] {
        let s = r.summary.as_ref().expect("full run");
        println!(
            "{name:<9} test fusion {:.3}  modalities {:?}  discrepancy {:?}",
            s.test.fusion_acc, s.test.modality_acc, s.test.discrepancy_ratio
        );
    }
    Ok(())
}
