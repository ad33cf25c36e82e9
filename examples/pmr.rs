//! PMR against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example pmr -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example pmr -- synth-vec alpha=1.0 momentum=0.5
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `pmr` (see `docs/methods/pmr.md`).
//! Prints, per epoch, ρ, which modality got the prototype CE and the prototype spread, then the test accuracies (fusion and each
//! modality) of concat and PMR. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/pmr.md`.

use modbal::train::{train, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().cloned().unwrap_or_else(|| "synth-vec".into());
    let out = std::env::temp_dir().join("modbal-example-pmr");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut sets = vec!["method.name=pmr".to_string()];
    sets.extend(args.iter().skip(1).map(|kv| format!("method.{kv}")));
    let run = train(&base.with_overrides(&sets)?, &opts)?;
    for r in run.history.iter().filter(|r| r.split == "train") {
        let show = |k: &str| r.method.get(k).map(|v| v.to_string()).unwrap_or_default();
        println!(
            "epoch {:>2}: rho {}  pce {}  proto.spread {}",
            r.epoch,
            show("rho"),
            show("pce"),
            show("proto.spread")
        );
    }
    let concat = train(&base, &opts)?;
    for (name, r) in [("concat", &concat), ("pmr", &run)] {
        let s = r.summary.as_ref().expect("full run");
        println!(
            "{name:<9} test fusion {:.3}  modalities {:?}  discrepancy {:?}",
            s.test.fusion_acc, s.test.modality_acc, s.test.discrepancy_ratio
        );
    }
    Ok(())
}
