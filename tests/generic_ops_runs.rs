//! Every built-in method trains through the device-generic op paths — the code a GPU runs
//! (`modbal_tensors::ops::force_generic`, `MODBAL_GENERIC_OPS=1`) — and agrees with the same run
//! through the fast CPU kernels.
//!
//! The two paths compute the same functions in a different floating-point order (candle's
//! convolution and formula ops against modbal's fused kernels; per op they agree to ~1e-7
//! relative in f32, `crates/modbal-tensors/tests/generic.rs`), so the runs drift apart slowly.
//! Measured on this setting (x86-64 AVX-512, 2026-12-06): validation losses agree to 1.5e-4
//! relative at most (ARM; 7e-8 for most methods), accuracies exactly. Tolerance: 5e-3 relative
//! and 2 validation samples of 96, a margin for other CPUs' kernel choices.
//!
//! Setting: synth-av (small CNN encoders: convolution, max-pool, global pooling, linear, the
//! fused cross-entropy; the Gaussian MI of CAL and the CLUB of UDI), 192/96/96 samples,
//! 2 epochs (UDI 3, one per stage), seed 5.

mod common;
use modbal::tensors::ops::{force_generic, generic_path_count};
use modbal::RunConfig;

fn cfg(out: &std::path::Path, method: &str, name: &str) -> RunConfig {
    let mut sets = vec![
        "dataset.name=\"synth-av\"".to_string(),
        "dataset.train=192".into(),
        "dataset.val=96".into(),
        "dataset.test=96".into(),
        "seed=5".into(),
        format!("train.epochs={}", if method == "udi" { 3 } else { 2 }),
        format!("method.name={method:?}"),
        format!("name={name:?}"),
        format!("out_dir={:?}", out.display().to_string()),
    ];
    if method == "unimodal" {
        sets.push("method.modality=\"audio\"".into());
    }
    RunConfig::default().with_overrides(&sets).unwrap()
}

#[test]
fn every_method_trains_through_the_generic_paths_like_the_fast_ones() {
    let out = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let mut bad = Vec::new();
    for m in common::method_names() {
        let fast = {
            let _g = force_generic(false);
            common::train(&cfg(out.path(), &m, &format!("{m}-fast")))
        };
        let before = generic_path_count();
        let generic = {
            let _g = force_generic(true);
            modbal::train(
                &cfg(out.path(), &m, &format!("{m}-generic")),
                &common::quiet(),
            )
            .unwrap_or_else(|e| panic!("{m} through the generic paths: {e}"))
        };
        let used = generic_path_count() - before;
        assert!(used > 0, "{m}: the forced run took no generic path");
        let (mut dl, mut da) = (0f64, 0f64);
        for (a, b) in fast.history.iter().zip(&generic.history) {
            if a.split != "val" {
                continue;
            }
            dl = dl.max((a.loss - b.loss).abs() / a.loss.abs().max(1.0));
            da = da.max((a.fusion_acc - b.fusion_acc).abs());
            for (k, x) in &a.modality_acc {
                da = da.max((x - b.modality_acc[k]).abs());
            }
        }
        assert_eq!(fast.history.len(), generic.history.len(), "{m}");
        report.push(format!(
            "{m}: val loss {dl:.2e}, accuracy {da:.4} ({used} generic ops)"
        ));
        if dl > 5e-3 || da > 2.0 / 96.0 + 1e-12 {
            bad.push(m.clone());
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        bad.is_empty(),
        "outside tolerance: {bad:?}\n{}",
        report.join("\n")
    );
}
