//! The `modbal` binary runs its training loop on a worker of rayon's pool with the other
//! workers kept awake between kernels (`modbal_tensors::threads::run_loops_in_pool`,
//! docs/benchmarks.md); library callers run it on their own thread. Where the loop runs must not
//! change a single number: the binary's `metrics.jsonl` is compared byte for byte with the same
//! run trained in this process.

mod common;

use modbal::RunConfig;

/// The default `modbal train` (synth-av, concat: two BN small-CNN encoders, so convolutions,
/// batch norm, pooling and linear layers all split work over the pool) for 2 epochs.
#[test]
fn binary_loop_on_the_pool_gives_the_library_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, _, err) = common::modbal_cli(&[
        "train",
        "--epochs",
        "2",
        "--seed",
        "3",
        "--out",
        out,
        "--name",
        "bin",
        "--quiet",
        "--no-tensorboard",
    ]);
    assert_eq!(code, 0, "modbal train failed: {err}");
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
    let (bin, lib) = (read("bin"), read("lib"));
    assert_eq!(bin.lines().count(), lib.lines().count());
    assert!(bin.lines().count() >= 2, "metrics.jsonl too short: {bin}");
    assert_eq!(bin, lib, "the loop on the pool changed the metrics");
}
