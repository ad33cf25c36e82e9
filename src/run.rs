//! Composition: a [`RunConfig`] → data, model and method → the generic loop
//! ([`modbal_train::Learner`]).
//!
//! [`Registry::train`] parses and checks the config once, loads the dataset, applies the
//! robustness noise, fills the defaults that depend on the data (encoders, `unimodal`'s
//! modality) into the config that `config.toml` records, builds the model (initial weights
//! from [`modbal_train::init_rng`]) and the method (once), and hands them to the learner. The
//! plain functions ([`train`], [`resume`], [`evaluate_test`], [`load_splits`]) do the same with
//! the built-in names.

use crate::config::{builtin, RunConfig};
use crate::registry::{generic_encoder, DatasetPlan, EncoderChoice, Registry};
use candle_core::Device;
use modbal_core::{ModbalError, Result};
use modbal_data::noise::{NoiseConfig, NoiseOn};
use modbal_data::Splits;
use modbal_encoders::{EncoderConfig, EncoderError, MultimodalNet};
use modbal_methods::MethodPlan;
use modbal_train::{init_rng, Learner, RunOutcome, SplitMetrics, TrainOptions};
use std::path::Path;

/// Train a new run of `cfg` (built-in names).
pub fn train(cfg: &RunConfig, opts: &TrainOptions) -> Result<RunOutcome> {
    builtin().train(cfg, opts)
}

/// Continue the interrupted run in `run_dir` (built-in names).
pub fn resume(run_dir: &Path, opts: &TrainOptions) -> Result<RunOutcome> {
    builtin().resume(run_dir, opts)
}

/// Evaluate the selected model of a finished run on its test split, corrupted as `noise` says
/// (built-in names; see [`Registry::evaluate_test`]).
pub fn evaluate_test(run_dir: &Path, noise: Option<&NoiseConfig>) -> Result<SplitMetrics> {
    builtin().evaluate_test(run_dir, noise)
}

/// The splits a run of `cfg` trains, validates and tests on (built-in names; see
/// [`Registry::load_splits`]).
pub fn load_splits(cfg: &RunConfig) -> Result<Splits> {
    builtin().load_splits(cfg)
}

/// Runs a one-rank training loop: on the CPU, when the process asked for it
/// (`modbal_tensors::threads::run_loops_in_pool`, which the `modbal` binary does), on a worker
/// thread of rayon's global pool, whose threads compute the matrix products and kernels. The
/// work each kernel splits over the threads is then started from a worker, not handed over from
/// the main thread (which sleeps until the pool wakes it again), and the other workers stay
/// awake between kernels (docs/benchmarks.md). Elsewhere `f` runs on the calling thread.
fn on_cpu_pool<R: Send>(cfg: &RunConfig, f: impl FnOnce() -> R + Send) -> R {
    if cfg.train.device == modbal_train::DeviceConfig::Cpu
        && modbal_tensors::threads::loops_in_pool()
    {
        modbal_tensors::threads::in_pool(f)
    } else {
        f()
    }
}

/// A run config made concrete: the resolved config, its data and its method's plan.
struct Prepared {
    cfg: RunConfig,
    splits: Splits,
    method: Box<dyn MethodPlan>,
}

impl Registry {
    /// Train a new run of `cfg` and write its run directory (`out_dir/<run name>`, or
    /// `opts.run_dir`).
    pub fn train(&self, cfg: &RunConfig, opts: &TrainOptions) -> Result<RunOutcome> {
        if cfg.train.world_size > 1 {
            let base = cfg.out_dir.join(cfg.run_name());
            return crate::parallel::run_parallel(
                self,
                cfg,
                opts,
                crate::parallel::Entry::Fit(&base),
            );
        }
        let (cfg, learner) = self.learner(cfg)?;
        let base = cfg.out_dir.join(cfg.run_name());
        let toml = cfg.to_toml_string()?;
        on_cpu_pool(&cfg, || learner.fit(&base, &toml, opts))
    }

    /// Continue an interrupted run from `run_dir/checkpoints/last` (its `config.toml` is read
    /// with this registry's names).
    pub fn resume(&self, run_dir: &Path, opts: &TrainOptions) -> Result<RunOutcome> {
        let config = run_dir.join("config.toml");
        if run_dir.is_dir() && !config.exists() && !run_dir.join("checkpoints").exists() {
            return Err(ModbalError::Config(format!(
                "nothing was checkpointed in {} (it has no config.toml: the run stopped while \
                 starting); start it again with the same command and --name (the directory is \
                 reused)",
                run_dir.display()
            )));
        }
        let cfg = RunConfig::from_file_in(self, &config)?;
        if cfg.train.world_size > 1 {
            return crate::parallel::run_parallel(
                self,
                &cfg,
                opts,
                crate::parallel::Entry::Resume(run_dir),
            );
        }
        let (_, learner) = self.learner(&cfg)?;
        on_cpu_pool(&cfg, || learner.resume(run_dir, opts))
    }

    /// Evaluate the selected (best-validation) model of a finished run, `run_dir/checkpoints/best`,
    /// on the run's test split corrupted as `noise` says (`None`: clean).
    ///
    /// This is the robustness protocol's "noise on the test set only" (CAL Table 2) without
    /// retraining: with `noise.on = "test"` training and validation see clean data, so a run
    /// trained with that noise selects the same model and reports these test metrics (tested).
    /// `noise.on` must therefore be `"test"`; corrupting the training split needs a new run.
    pub fn evaluate_test(
        &self,
        run_dir: &Path,
        noise: Option<&NoiseConfig>,
    ) -> Result<SplitMetrics> {
        let mut cfg = RunConfig::from_file_in(self, &run_dir.join("config.toml"))?;
        if let Some(n) = noise {
            if n.on != NoiseOn::Test {
                return Err(ModbalError::Config(format!(
                    "evaluate_test corrupts the test split only (noise.on = \"test\"), got noise.on \
                     = {:?}: noise on other splits changes training and needs a new run",
                    n.on.name()
                )));
            }
        }
        cfg.noise = noise.cloned();
        let (_, learner) = self.learner(&cfg)?;
        learner.test_checkpoint(run_dir)
    }

    /// The splits a run of `cfg` trains, validates and tests on: the dataset's, corrupted as
    /// `cfg.noise` says, restricted to (and ordered as) the method's modalities.
    pub fn load_splits(&self, cfg: &RunConfig) -> Result<Splits> {
        Ok(self.prepare(cfg)?.splits)
    }

    /// `cfg` resolved (what `config.toml` records) and its learner: data, model and method
    /// built once.
    pub fn learner(&self, cfg: &RunConfig) -> Result<(RunConfig, Learner)> {
        let Prepared {
            cfg,
            splits,
            method,
        } = self.prepare(cfg)?;
        // Opened once: the model's weights live there and the loop trains there.
        let device = cfg.train.device.open()?;
        let modalities: Vec<(String, Vec<usize>)> = splits
            .train
            .modalities()
            .iter()
            .cloned()
            .zip(splits.train.input_shapes().iter().cloned())
            .collect();
        let model = self
            .build_model(
                &cfg,
                &modalities,
                method.as_ref(),
                splits.train.num_classes(),
                &device,
            )
            .map_err(|e| ModbalError::Config(format!("building the model: {e}")))?;
        let learner = Learner::new(
            Box::new(model),
            method.instantiate()?,
            splits,
            cfg.train.clone(),
            cfg.seed,
        )?
        .with_dataset_name(cfg.dataset.name.clone())
        .with_noise(cfg.noise.clone());
        Ok((cfg, learner))
    }

    /// The model of a resolved config: every modality's encoder (built-in or registered) and
    /// the fusion head (`model.fusion`, else the method's), initial weights from
    /// `init_rng(cfg.seed)`.
    fn build_model(
        &self,
        cfg: &RunConfig,
        modalities: &[(String, Vec<usize>)],
        method: &dyn MethodPlan,
        num_classes: usize,
        device: &Device,
    ) -> Result<MultimodalNet> {
        enum Part {
            Builtin(EncoderConfig),
            Custom(Box<dyn crate::registry::EncoderPlan>),
        }
        // Parse and check every encoder before drawing any weight.
        let mut parts = Vec::with_capacity(modalities.len());
        for (m, shape) in modalities {
            let part = match &cfg.model.encoders[m] {
                EncoderChoice::Builtin(e) => {
                    e.validate(shape).map_err(|e| match e {
                        EncoderError::Config(msg) => {
                            ModbalError::Config(format!("modality {m:?}: {msg}"))
                        }
                        other => ModbalError::Config(other.to_string()),
                    })?;
                    Part::Builtin(e.clone())
                }
                EncoderChoice::Custom { kind, options } => {
                    let p = self.encoder(kind, options)?;
                    p.check_shape(shape)
                        .map_err(|e| ModbalError::Config(format!("modality {m:?}: {e}")))?;
                    Part::Custom(p)
                }
            };
            parts.push(part);
        }
        let mut rng = init_rng(cfg.seed);
        let mut build = |i: usize,
                         pb: &modbal_tensors::ParamBuilder,
                         rng: &mut modbal_tensors::SeededRng|
         -> modbal_encoders::Result<Box<dyn modbal_encoders::Encoder>> {
            match &parts[i] {
                Part::Builtin(e) => e.build(pb, &modalities[i].1, rng),
                Part::Custom(p) => p
                    .build_encoder(pb, &modalities[i].1, rng)
                    .map_err(|e| EncoderError::Config(e.to_string())),
            }
        };
        // `model.fusion` (checked against the method in `prepare`) or the method's own head.
        let fusion = cfg.model.fusion.unwrap_or_else(|| method.fusion_head());
        Ok(MultimodalNet::with_encoders(
            modalities,
            &mut build,
            &fusion,
            num_classes,
            &mut rng,
            device,
        )?)
    }

    /// Parse and check `cfg` once, load and corrupt the data, fill the data-dependent defaults.
    fn prepare(&self, cfg: &RunConfig) -> Result<Prepared> {
        let mut cfg = cfg.clone();
        cfg.train.check()?;
        if let Some(n) = &cfg.noise {
            n.validate()?;
        }
        let mut method = self.method(&cfg.method.name, &cfg.method.options)?;
        if let Some(f) = &cfg.model.fusion {
            method.check_fusion(f)?;
        }
        let dataset = self.dataset(&cfg.dataset.name, &cfg.dataset.options)?;
        cfg.dataset.options = dataset.options()?;
        let all = dataset.load_splits()?;
        all.validate()?;
        // Robustness protocol: corrupt the chosen splits before any modality selection, so every
        // method sees the same corrupted samples of a modality.
        let all = match &cfg.noise {
            Some(n) => n.apply(&all)?,
            None => all,
        };
        method.fit_to_data(all.train.modalities());
        cfg.method.options = method.options()?;
        let mods = method_modalities(method.required_modalities(), &all)?;
        self.resolve_encoders(&mut cfg, dataset.as_ref(), &all, &mods)?;
        let splits = if mods.as_slice() == all.train.modalities() {
            all
        } else {
            all.select(&mods)?
        };
        Ok(Prepared {
            cfg,
            splits,
            method,
        })
    }

    /// Fill the encoders the config does not name (the dataset's defaults, else the generic
    /// rule) for the modalities the method trains; drop the others; parse registered kinds.
    fn resolve_encoders(
        &self,
        cfg: &mut RunConfig,
        dataset: &dyn DatasetPlan,
        all: &Splits,
        mods: &[String],
    ) -> Result<()> {
        let names = all.train.modalities();
        for name in cfg.model.encoders.keys() {
            if !names.contains(name) {
                return Err(ModbalError::Config(format!(
                    "model.encoders.{name}: the dataset has no modality {name:?} (it has {})",
                    names.join(", ")
                )));
            }
        }
        for (name, shape) in names.iter().zip(all.train.input_shapes()) {
            if mods.contains(name) {
                if !cfg.model.encoders.contains_key(name) {
                    let e = dataset
                        .encoder_for(name, shape)
                        .unwrap_or_else(|| generic_encoder(name, shape).into());
                    check_default_weights(&cfg.dataset.name, name, &e)?;
                    cfg.model.encoders.insert(name.clone(), e);
                }
            } else {
                cfg.model.encoders.remove(name);
            }
        }
        for (m, e) in cfg.model.encoders.iter_mut() {
            if let EncoderChoice::Custom { kind, options } = e {
                *options = self
                    .encoder(kind, options)
                    .and_then(|p| p.options())
                    .map_err(|e| ModbalError::Config(format!("model.encoders.{m}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// The modalities a method trains on (all of the dataset's unless the method names some;
/// an empty name means the dataset's first modality).
fn method_modalities(required: Option<Vec<String>>, splits: &Splits) -> Result<Vec<String>> {
    let all = splits.train.modalities().to_vec();
    match required {
        None => Ok(all),
        Some(names) => names
            .iter()
            .map(|m| {
                if m.is_empty() {
                    Ok(all[0].clone())
                } else if all.contains(m) {
                    Ok(m.clone())
                } else {
                    Err(ModbalError::Unknown {
                        kind: "modality",
                        name: m.clone(),
                        valid: all.join(", "),
                    })
                }
            })
            .collect(),
    }
}

/// A default BERT text encoder whose weights cannot be found: a clear error with the ways out
/// (asked-for encoders report missing weights when they are built).
fn check_default_weights(dataset: &str, modality: &str, e: &EncoderChoice) -> Result<()> {
    if let EncoderChoice::Builtin(EncoderConfig::Bert {
        repo,
        revision,
        weights,
        pretrained: true,
        ..
    }) = e
    {
        let src = modbal_encoders::pretrained::WeightsSource {
            repo: repo.clone(),
            revision: revision.clone(),
            weights: weights.clone(),
        };
        if let Err(err) = src
            .resolve("config.json")
            .and_then(|_| src.resolve("model.safetensors"))
        {
            return Err(ModbalError::Config(format!(
                "model.encoders.{modality}: dataset {dataset:?} with dataset.text.kind = \"wordpiece\" defaults to kind = \"bert\" ({repo}), whose pretrained weights are missing. Set model.encoders.{modality}.weights=DIR (config.json + model.safetensors), or model.encoders.{modality}.pretrained=false, or use dataset.text.kind=glove_vectors (default encoder bigru). {err}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_encoders_follow_the_encoding() {
        let mut t = toml::Table::new();
        t.insert("root".into(), "/data/mvsa".into());
        let mut text = toml::Table::new();
        text.insert("kind".into(), "glove_ids".into());
        text.insert("glove".into(), "g.txt".into());
        t.insert("text".into(), text.into());
        let d = builtin().dataset("mvsa", &t).unwrap();
        match d.encoder_for("text", &[64]) {
            Some(EncoderChoice::Builtin(EncoderConfig::BiGru { glove, .. })) => {
                assert_eq!(glove, Some("g.txt".into()))
            }
            e => panic!("{e:?}"),
        }
        assert!(d.encoder_for("image", &[3, 224, 224]).is_none());
        assert_eq!(
            generic_encoder("image", &[3, 224, 224]),
            EncoderConfig::resnet18(false)
        );
        // A default BERT without weights: a clear error naming the way out.
        let bert = EncoderConfig::Bert {
            repo: "modbal-test/no-such-repo".into(),
            revision: "main".into(),
            weights: Some(std::env::temp_dir().join("modbal-no-weights-here")),
            pretrained: true,
            pooling: Default::default(),
        };
        let e = check_default_weights("mvsa", "text", &bert.into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.encoders.text.weights") && e.contains("glove_vectors"),
            "{e}"
        );
    }
}
