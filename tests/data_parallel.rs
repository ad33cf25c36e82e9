//! Data-parallel training on the CPU stand-in (`train.world_size`, ranks as threads joined by
//! `LocalCollective`): the equivalence that defines it, resume, and the errors.
//!
//! The reference is closed-form, not another implementation: with a mean loss, the average of N
//! ranks' mean gradients over equal shards of B samples IS the mean gradient over the N·B
//! samples, so N ranks of batch B must train like one process with batch N·B (SGD, no
//! BatchNorm: synth-vec's MLP encoders), up to f32 reassociation.

mod common;
use common::*;
use modbal::RunConfig;

fn vec_cfg(out: &std::path::Path, name: &str, batch: usize, world: usize) -> RunConfig {
    // 480 training samples: a multiple of every world size used, so no shard is padded.
    small_vec(out, 4, 3)
        .with_overrides(&[
            format!("name={name:?}"),
            format!("train.batch_size={batch}"),
            format!("train.world_size={world}"),
        ])
        .unwrap()
}

#[test]
fn n_ranks_of_batch_b_train_like_one_run_of_batch_n_b() {
    let out = tempfile::tempdir().unwrap();
    let one = train(&vec_cfg(out.path(), "one", 32, 1));
    let two = train(&vec_cfg(out.path(), "two", 16, 2));
    let four = train(&vec_cfg(out.path(), "four", 8, 4));
    // Without the all-reduce each rank would follow its own shard: the check below must be able
    // to fail, so also train one rank alone on batch 16 (half the data per step).
    let half = train(&vec_cfg(out.path(), "half", 16, 1));
    let val = |o: &modbal::RunOutcome| -> Vec<(f64, f64)> {
        o.history
            .iter()
            .filter(|r| r.split == "val")
            .map(|r| (r.loss, r.fusion_acc))
            .collect()
    };
    let reference = val(&one);
    assert_eq!(reference.len(), 3);
    for (name, run) in [("2 ranks × 16", &two), ("4 ranks × 8", &four)] {
        for (e, (a, b)) in reference.iter().zip(val(run)).enumerate() {
            assert!(
                (a.0 - b.0).abs() <= 1e-4 * a.0.abs().max(1.0),
                "{name}, epoch {e}: val loss {} vs {} (batch 32)",
                b.0,
                a.0
            );
            // One validation sample of 160 may flip at a tie-close margin.
            assert!(
                (a.1 - b.1).abs() <= 1.0 / 160.0 + 1e-12,
                "{name}, epoch {e}"
            );
        }
        let (s1, s2) = (one.summary.as_ref().unwrap(), run.summary.as_ref().unwrap());
        assert!(
            (s1.test.loss - s2.test.loss).abs() <= 1e-4,
            "{name}: test loss"
        );
    }
    let h = val(&half);
    assert!(
        reference
            .iter()
            .zip(&h)
            .any(|(a, b)| (a.0 - b.0).abs() > 1e-3),
        "batch 16 alone should train differently from batch 32: {reference:?} vs {h:?}"
    );
    // Rank 0 wrote the run directory, with the world size in config.toml; nothing else.
    let cfg = std::fs::read_to_string(out.path().join("two").join("config.toml")).unwrap();
    assert!(cfg.contains("world_size = 2"), "{cfg}");
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn a_data_parallel_run_resumes_to_the_uninterrupted_metrics() {
    let out = tempfile::tempdir().unwrap();
    let full = train(&vec_cfg(out.path(), "full", 16, 2));
    let cfg = vec_cfg(out.path(), "cut", 16, 2);
    let cut = modbal::train(&cfg, &stop_after(1)).unwrap();
    assert!(cut.summary.is_none());
    let resumed = modbal::resume(&cut.run_dir, &quiet()).unwrap();
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&resumed.run_dir), read(&full.run_dir));
    let test = resumed.summary.unwrap().test;
    assert_eq!(test.fusion_acc, full.summary.unwrap().test.fusion_acc);
    // The selected model re-evaluated (no ranks needed) gives the summary's test metrics.
    let again = modbal::evaluate_test(&resumed.run_dir, None).unwrap();
    assert_eq!(again, test);
    // Training a world-size-2 config without ranks is refused, naming the mismatch.
    let (_, learner) = modbal::Registry::builtin().learner(&cfg).unwrap();
    let e = learner
        .fit(&out.path().join("x"), "", &quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.world_size is 2"), "{e}");
}

#[test]
fn data_parallel_errors_name_the_culprit() {
    let (code, _, err) = modbal_cli(&["train", "--dataset", "synth-vec", "--devices", "0,2"]);
    assert_ne!(code, 0);
    assert!(err.contains("consecutive"), "{err}");
    // Ranks failing alike are reported once, with the cause.
    let (code, _, err) = modbal_cli(&["train", "--world-size", "2", "--dataset", "crema-d"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("2 ranks") && err.contains("every rank") && err.contains("dataset.root"),
        "{err}"
    );
    let (code, _, err) = modbal_cli(&["train", "--world-size", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("train.world_size"), "{err}");
    let (code, _, err) = modbal_cli(&["train", "--devices", "0,1", "--epochs", "1"]);
    if !cfg!(feature = "cuda") {
        // A CPU build: how to build with CUDA.
        assert_ne!(code, 0);
        assert!(err.contains("--features cuda"), "{err}");
    } else if !cfg!(feature = "nccl") {
        assert_ne!(code, 0);
        assert!(err.contains("--features cuda,nccl"), "{err}");
    }
}
