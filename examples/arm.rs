//! ARM (AAAI'25) next to concat on a built-in benchmark, with ARM's per-epoch mechanism.
//!
//! ```text
//! cargo run --release --example arm                      # synth-vec, 12 epochs
//! cargo run --release --example arm -- synth-av 12 0     # dataset, epochs, seed
//! ```
//!
//! The warm-up is the paper's 10 of 80 epochs scaled to the run (`round(10 · E / 80)`: 2 of 12).
//! Prints, per epoch, the FW in use (eq 13), the training-set φ^CMI per modality (eq 11), the
//! DSR histogram (samples with 0, 1, 2, … extra copies, eq 18), the epoch length relative to
//! the training split and the validation accuracy; then the test accuracy of ARM and of concat
//! with the same seed and settings. See `docs/methods/arm.md` ("Observed") for the numbers this
//! prints on synth-vec.

use modbal::{train, MethodConfig, RunConfig, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dataset = args.first().cloned().unwrap_or_else(|| "synth-vec".into());
    let epochs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(12);
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let out = std::env::temp_dir().join("modbal-arm-example");
    let base = RunConfig::default().with_overrides(&[
        format!("dataset.name={dataset}"),
        format!("train.epochs={epochs}"),
        format!("seed={seed}"),
        format!("out_dir={:?}", out.display().to_string()),
    ])?;
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let arm_cfg = base.with_overrides(&["method.name=arm".into()])?;
    let arm = train(&arm_cfg, &opts)?;
    let val: Vec<_> = arm.history.iter().filter(|r| r.split == "val").collect();
    let warm_up = arm
        .history
        .first()
        .and_then(|r| r.method.get("warm_up_epochs_run"))
        .map(|w| w.to_string())
        .unwrap_or_else(|| "?".into());
    println!("warm-up: {warm_up} of {epochs} epochs");
    println!(
        "epoch  fw(audio/visual)  phi_cmi_train(audio/visual)  dsr.copies_hist  epoch_len  val_acc"
    );
    for (r, v) in arm.history.iter().filter(|r| r.split == "train").zip(val) {
        let g = |k: &str| r.method.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
        let hist = r
            .method
            .get("dsr.copies_hist")
            .map(|h| h.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>5}  {:>6.3}/{:<6.3}    {:>8.4}/{:<8.4}             {hist:<16} {:>8.3}x  {:.3}",
            r.epoch,
            g("fw.audio"),
            g("fw.visual"),
            g("miv_train.phi_cmi.audio"),
            g("miv_train.phi_cmi.visual"),
            g("dsr.epoch_len_ratio"),
            v.fusion_acc
        );
    }
    let mut concat_cfg = base.clone();
    concat_cfg.method = MethodConfig::from_name("concat")?;
    let concat = train(&concat_cfg, &opts)?;
    for (name, o) in [("arm", &arm), ("concat", &concat)] {
        let s = o.summary.as_ref().expect("full run");
        let mods: Vec<String> = s
            .test
            .modality_acc
            .iter()
            .map(|(k, v)| format!("{k} slice {v:.3}"))
            .collect();
        println!(
            "{name:<7} test fusion acc {:.3} ({}), best epoch {}",
            s.test.fusion_acc,
            mods.join(", "),
            s.best_epoch + 1
        );
    }
    Ok(())
}
