//! MLA against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example mla -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example mla -- synth-vec fusion=average projection=false
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `mla` (see `docs/methods/mla.md`).
//! Prints, per epoch, the projection residual, the gradient ratio and the fusion weights, then the test accuracies (fusion and each
//! modality) of concat and MLA. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/mla.md`.

use modbal::train::{train, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().cloned().unwrap_or_else(|| "synth-vec".into());
    let out = std::env::temp_dir().join("modbal-example-mla");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut sets = vec!["method.name=mla".to_string()];
    sets.extend(args.iter().skip(1).map(|kv| format!("method.{kv}")));
    let run = train(&base.with_overrides(&sets)?, &opts)?;
    for r in run.history.iter().filter(|r| r.split == "train") {
        let show = |k: &str| r.method.get(k).map(|v| v.to_string()).unwrap_or_default();
        println!(
            "epoch {:>2}: projection.residual {}  projection.grad_ratio {}  val_lambda {}",
            r.epoch,
            show("projection.residual"),
            show("projection.grad_ratio"),
            show("val_lambda")
        );
    }
    let concat = train(&base, &opts)?;
    for (name, r) in [("concat", &concat), ("mla", &run)] {
        let s = r.summary.as_ref().expect("full run");
        println!(
            "{name:<9} test fusion {:.3}  modalities {:?}  discrepancy {:?}",
            s.test.fusion_acc, s.test.modality_acc, s.test.discrepancy_ratio
        );
    }
    Ok(())
}
