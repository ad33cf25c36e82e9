//! Data-parallel runs (`train.world_size > 1`): one rank per thread of this process, each with
//! its own copy of the data, model and method, joined by a [`Collective`].
//!
//! * On the CPU the ranks share a [`LocalCollective`] (the in-process stand-in that CI uses to
//!   test the sharding and the all-reduce arithmetic).
//! * On CUDA (`train.device = "cuda:N"`, a `--features cuda,nccl` build) rank r trains on GPU
//!   `N + r` and joins an NCCL group (`modbal_train::distributed::NcclCollective`); NCCL allows
//!   one communicator per thread, so one process drives all the GPUs of a machine.
//!
//! Rank 0 writes the run directory; the other ranks write scratch directories under the system
//! temp dir that are removed at the end (their files would be copies: the replicas are equal).
//! Resuming restores every rank from rank 0's checkpoint, with the world size the run's
//! `config.toml` records.

use crate::config::RunConfig;
use crate::registry::Registry;
use modbal_core::{ModbalError, Result};
use modbal_train::distributed::{Collective, LocalCollective};
use modbal_train::{DeviceConfig, RunOutcome, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a rank enters its run.
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// A new run based at this directory (rank 0; [`modbal_train::Learner::fit`]).
    Fit(&'a Path),
    /// Resume the run in this directory.
    Resume(&'a Path),
}

/// Scratch run directories of the ranks other than 0, removed when dropped.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Copy the files of a run directory (not its lock) to `to`, for a rank that resumes from rank
/// 0's checkpoint but writes elsewhere.
fn copy_run(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| ModbalError::io("creating", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| ModbalError::io("reading", from, e))?;
    for e in entries {
        let e = e.map_err(|e| ModbalError::io("reading", from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") {
            continue;
        }
        if src.is_dir() {
            copy_run(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| ModbalError::io("copying", &src, e))?;
        }
    }
    Ok(())
}

/// The group's collectives, one per rank, made inside each rank's thread (NCCL's join blocks
/// until every rank arrives).
type MakeCollective = dyn Fn(usize, &candle_core::Device) -> Result<Arc<dyn Collective>> + Sync;

fn group(cfg: &RunConfig, id_dir: &Path) -> Result<Box<MakeCollective>> {
    let world = cfg.train.world_size;
    match cfg.train.device {
        DeviceConfig::Cpu => {
            let members = std::sync::Mutex::new(
                LocalCollective::group(world)
                    .into_iter()
                    .map(Some)
                    .collect::<Vec<_>>(),
            );
            Ok(Box::new(move |rank, _| {
                let c = members.lock().unwrap_or_else(|e| e.into_inner())[rank]
                    .take()
                    .ok_or_else(|| ModbalError::Config(format!("rank {rank} joined twice")))?;
                Ok(Arc::new(c) as Arc<dyn Collective>)
            }))
        }
        DeviceConfig::Cuda(_) => nccl_group(world, id_dir),
    }
}

#[cfg(feature = "nccl")]
fn nccl_group(world: usize, id_dir: &Path) -> Result<Box<MakeCollective>> {
    use modbal_train::distributed::NcclCollective;
    let id_file = id_dir.join(format!(
        "modbal-nccl-{}-{}.id",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    Ok(Box::new(move |rank, dev| {
        let c = NcclCollective::new(
            dev,
            rank,
            world,
            &id_file,
            std::time::Duration::from_secs(120),
        )?;
        Ok(Arc::new(c) as Arc<dyn Collective>)
    }))
}

#[cfg(not(feature = "nccl"))]
fn nccl_group(world: usize, _: &Path) -> Result<Box<MakeCollective>> {
    Err(ModbalError::Config(format!(
        "train.world_size = {world} on CUDA needs NCCL: build with `--features cuda,nccl` \
         (docs/cuda.md)"
    )))
}

/// Train (or resume) `cfg` with `cfg.train.world_size` ranks; rank 0's outcome.
pub(crate) fn run_parallel(
    reg: &Registry,
    cfg: &RunConfig,
    opts: &TrainOptions,
    entry: Entry<'_>,
) -> Result<RunOutcome> {
    let world = cfg.train.world_size;
    if let DeviceConfig::Cuda(first) = cfg.train.device {
        // Every rank's GPU must open before any rank joins NCCL (whose join cannot time out).
        for r in 0..world {
            DeviceConfig::Cuda(first + r).open()?;
        }
    }
    let tmp = std::env::temp_dir();
    let make = group(cfg, &tmp)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let scratch = Scratch(
        (1..world)
            .map(|r| tmp.join(format!("modbal-rank{r}-{}-{stamp}", std::process::id())))
            .collect(),
    );
    let results: Vec<Result<RunOutcome>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let (make, scratch) = (&make, &scratch);
                std::thread::Builder::new()
                    .name(format!("modbal-rank{rank}"))
                    .spawn_scoped(sc, move || -> Result<RunOutcome> {
                        let mut rcfg = cfg.clone();
                        if let DeviceConfig::Cuda(first) = cfg.train.device {
                            rcfg.train.device = DeviceConfig::Cuda(first + rank);
                        }
                        // On the CPU the rank takes its member first, so that a rank failing
                        // to build drops it and its peers fail at once instead of waiting.
                        let early = match cfg.train.device {
                            DeviceConfig::Cpu => Some(make(rank, &candle_core::Device::Cpu)?),
                            DeviceConfig::Cuda(_) => None,
                        };
                        let (rcfg, learner) = reg.learner(&rcfg)?;
                        // The device the rank's model was built on (opened once by `learner`).
                        let device = learner
                            .model()
                            .params()
                            .all()
                            .first()
                            .map_or(candle_core::Device::Cpu, |(_, v)| v.device().clone());
                        let c = match early {
                            Some(c) => c,
                            None => make(rank, &device)?,
                        };
                        let learner = learner.with_collective(c);
                        let mut o = opts.clone();
                        if rank > 0 {
                            o.quiet = true;
                            o.progress = false;
                            o.run_dir = Some(scratch.0[rank - 1].clone());
                        }
                        match entry {
                            Entry::Fit(base) => learner.fit(base, &rcfg.to_toml_string()?, &o),
                            Entry::Resume(dir) if rank == 0 => learner.resume(dir, &o),
                            Entry::Resume(dir) => {
                                let mine = &scratch.0[rank - 1];
                                copy_run(dir, mine)?;
                                learner.resume(mine, &o)
                            }
                        }
                    })
                    .map_err(|e| ModbalError::Data(format!("cannot start rank {rank}: {e}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(ModbalError::Data("a rank's thread panicked".into()))),
                Err(e) => Err(e),
            })
            .collect()
    });
    // The first error in rank order names the root cause when one rank failed on its own (the
    // others then fail with "a peer left" from the collective); rank 0's outcome otherwise.
    let mut outcome = None;
    let mut errors = Vec::new();
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(o) if rank == 0 => outcome = Some(o),
            Ok(_) => {}
            Err(e) => errors.push((rank, e.to_string())),
        }
    }
    // Ranks failing alike (a config error) are reported once.
    let errors: Vec<String> = if errors.len() == world && errors.iter().all(|e| e.1 == errors[0].1)
    {
        vec![format!("every rank: {}", errors[0].1)]
    } else {
        errors
            .iter()
            .map(|(r, e)| format!("rank {r}: {e}"))
            .collect()
    };
    match (outcome, errors.is_empty()) {
        (Some(o), true) => Ok(o),
        _ => Err(ModbalError::Data(format!(
            "data-parallel run of {world} ranks failed: {}",
            errors.join("; ")
        ))),
    }
}
