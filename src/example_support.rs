//! What the per-method example binaries share: train one method next to plain `concat` with the
//! same seed and settings, print chosen per-epoch mechanism quantities, then both test results.

use crate::{train, RunConfig, TrainOptions};

/// Runs `method` on the dataset named by the first command-line argument (default `synth-vec`),
/// with every further `key=value` argument passed as a `[method]` option; prints, per training
/// epoch, the logged quantities `show` (keys of `metrics.jsonl` → `method`), then the test
/// fusion accuracy, per-modality accuracies and discrepancy ratio of concat and of the method.
pub fn compare_with_concat(method: &str, show: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    // The `modbal` binary's speed settings (see README, Benchmarks).
    modbal_tensors::apply_speed_defaults();
    modbal_tensors::threads::run_loops_in_pool(modbal_tensors::threads::pool_loop_wanted());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().cloned().unwrap_or_else(|| "synth-vec".into());
    let out = std::env::temp_dir().join(format!("modbal-example-{method}"));
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut sets = vec![format!("method.name={method}")];
    sets.extend(args.iter().skip(1).map(|kv| format!("method.{kv}")));
    let run = train(&base.with_overrides(&sets)?, &opts)?;
    for r in run.history.iter().filter(|r| r.split == "train") {
        let line: Vec<String> = show
            .iter()
            .map(|k| {
                let v = r.method.get(*k).map(|v| v.to_string()).unwrap_or_default();
                format!("{k} {v}")
            })
            .collect();
        println!("epoch {:>2}: {}", r.epoch, line.join("  "));
    }
    let concat = train(&base, &opts)?;
    for (name, r) in [("concat", &concat), (method, &run)] {
        let s = r.summary.as_ref().expect("a full run has a summary");
        println!(
            "{name:<9} test fusion {:.3}  modalities {:?}  discrepancy {:?}",
            s.test.fusion_acc, s.test.modality_acc, s.test.discrepancy_ratio
        );
    }
    Ok(())
}
