//! UDI (Unidirectional Dynamic Interaction) next to the `concat` baseline, same seed and data.
//!
//! ```text
//! cargo run --release --example udi                 # synth-vec, 12 epochs (4/4/4), ~10 s
//! cargo run --release --example udi -- synth-vec 12 anchor=\"visual\" controller=false
//! ```
//!
//! Extra `key=value` arguments are UDI options (`docs/methods/udi.md`). Expected on `synth-vec`
//! (seed 0, defaults, 12 epochs = 4/4/4): anchor `audio` (val 0.80 vs visual 0.71); test fusion
//! accuracy 0.967 for UDI (best epoch 11, in the follower stage: only its epochs are selectable)
//! vs 0.968 for concat. With `js_reduction=\"sum\"` (eq 5 as printed) the consistency term
//! pulls the follower onto the weaker audio predictions (see docs/methods/udi.md).

use modbal::{train, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dataset = args.next().unwrap_or_else(|| "synth-vec".into());
    let epochs = args.next().unwrap_or_else(|| "12".into());
    let out = std::env::temp_dir().join("modbal-udi");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("train.epochs={epochs}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let mut sets = vec!["method.name=udi".to_string()];
    sets.extend(args.map(|a| format!("method.{a}")));
    let udi_cfg = base.with_overrides(&sets)?;
    let concat_cfg = base.with_overrides(&["method.name=concat".to_string()])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let udi = train(&udi_cfg, &opts)?;
    let concat = train(&concat_cfg, &opts)?;
    for rec in udi.history.iter().filter(|r| r.split == "train") {
        let m = &rec.method;
        println!(
            "epoch {:>2} {:<16} anchor {:<7} alpha_con {:<8} alpha_com {:<8} js {:<10} club {}",
            rec.epoch + 1,
            rec.stage,
            m.get("anchor").map(|v| v.to_string()).unwrap_or("-".into()),
            fmt(m.get("alpha_con")),
            fmt(m.get("alpha_com")),
            fmt(m.get("js")),
            fmt(m.get("club")),
        );
    }
    let (u, c) = (
        udi.summary.expect("full run"),
        concat.summary.expect("full run"),
    );
    let best_stage = udi
        .history
        .iter()
        .find(|r| r.epoch == u.best_epoch)
        .map(|r| r.stage.as_str())
        .unwrap_or("?");
    println!(
        "test fusion accuracy: udi {:.3} (best epoch {}, {best_stage}), concat {:.3}; udi per \
         modality {:?}",
        u.test.fusion_acc,
        u.best_epoch + 1,
        c.test.fusion_acc,
        u.test.modality_acc
    );
    println!(
        "run directories: {} and {}",
        udi.run_dir.display(),
        concat.run_dir.display()
    );
    Ok(())
}

fn fmt(v: Option<&serde_json::Value>) -> String {
    v.and_then(|v| v.as_f64())
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "-".into())
}
