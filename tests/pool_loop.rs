//! The `modbal` binary runs its training loop on a worker of rayon's pool with the other
//! workers kept awake between kernels (`modbal_tensors::threads::run_loops_in_pool`,
//! docs/benchmarks.md); library callers run it on their own thread. Where the loop runs must not
//! change a single number: the binary's `metrics.jsonl` is compared byte for byte with the same
//! run trained in this process and with the binary run with the switch off (`MODBAL_POOL_LOOP=0`).

mod common;

use modbal::RunConfig;

/// The default `modbal train` (synth-av, concat: two BN small-CNN encoders, so convolutions,
/// batch norm, pooling and linear layers all split work over the pool) for 2 epochs.
#[test]
fn binary_loop_on_the_pool_gives_the_library_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let train = |name: &str, pool_loop: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modbal"))
            .args([
                "train", "--epochs", "2", "--seed", "3", "--out", out, "--name", name,
            ])
            .args(["--quiet", "--no-tensorboard"])
            .env("MODBAL_POOL_LOOP", pool_loop)
            .output()
            .expect("run modbal");
        assert!(
            out.status.success(),
            "modbal train ({name}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    train("bin", "1");
    // The switch that keeps the loop on the main thread.
    train("bin-main-thread", "0");
    assert!(
        !modbal::tensors::threads::loops_in_pool(),
        "library default changed: loops would run on the pool in tests"
    );
    let mut cfg = RunConfig {
        seed: 3,
        out_dir: dir.path().to_path_buf(),
        name: "lib".into(),
        ..Default::default()
    };
    cfg.train.epochs = 2;
    cfg.train.tensorboard = false;
    modbal::train(&cfg, &common::quiet()).unwrap();
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n).join("metrics.jsonl")).unwrap();
    let (bin, main_thread, lib) = (read("bin"), read("bin-main-thread"), read("lib"));
    assert!(bin.lines().count() >= 2, "metrics.jsonl too short: {bin}");
    assert_eq!(bin, lib, "the loop on the pool changed the metrics");
    assert_eq!(main_thread, lib, "MODBAL_POOL_LOOP=0 changed the metrics");
}
