//! A user's own method, dataset and encoder on modbal's loop, without editing modbal.
//!
//! * [`AuxCe`] (`--method aux-ce`): joint training plus an auxiliary cross-entropy on every
//!   modality's own logits, `L = CE(z_fused, y) + w · Σ_m CE(z_m, y)`, so that the weak
//!   modality's encoder is trained by its own loss too; logs each modality's auxiliary loss.
//! * [`Quadrants`] (`--dataset quadrants`): four classes on two 2-D modalities; `strong` tells
//!   the first bit of the label with a large margin, `weak` the second with a small one, so
//!   that only fusion can name all four classes and the strong modality learns first.
//! * [`TanhMlp`] (`kind = "tanh-mlp"`): a one-hidden-layer tanh network, the default encoder of
//!   both modalities of `quadrants`.
//!
//! [`registry`] adds the three to modbal's built-in ones.

use modbal::candle::Tensor;
use modbal::core::{Batch, LossTerms, Method, MultimodalModel, MultimodalOutput, RunContext};
use modbal::data::{Dataset, Sample, Splits};
use modbal::encoders::Encoder;
use modbal::tensors::{cross_entropy, Linear, ParamBuilder, SeededRng};
use modbal::{DatasetSpec, EncoderChoice, EncoderSpec, MethodParams, Registry};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// modbal's registry with `aux-ce`, `quadrants` and `tanh-mlp` added.
pub fn registry() -> Registry {
    Registry::builtin()
        .with_method::<AuxCeConfig>("aux-ce")
        .with_dataset::<QuadrantsConfig>("quadrants")
        .with_encoder::<TanhMlpConfig>("tanh-mlp")
}

// ------------------------------------------------------------------------------------ method

/// Options of `aux-ce` (`--set method.weight=0.5`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuxCeConfig {
    /// Weight `w` of the auxiliary unimodal losses, ≥ 0.
    pub weight: f64,
}

impl Default for AuxCeConfig {
    fn default() -> Self {
        Self { weight: 1.0 }
    }
}

impl MethodParams for AuxCeConfig {
    fn check(&self) -> modbal::core::Result<()> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(modbal::core::ModbalError::Config(format!(
                "method aux-ce: weight must be finite and >= 0, got {}",
                self.weight
            )));
        }
        Ok(())
    }
    fn build(&self) -> modbal::core::Result<Box<dyn Method>> {
        Ok(Box::new(AuxCe {
            weight: self.weight,
        }))
    }
}

/// The method: only the loss hook differs from plain joint training.
pub struct AuxCe {
    weight: f64,
}

impl Method for AuxCe {
    fn name(&self) -> &str {
        "aux-ce"
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> modbal::core::Result<LossTerms> {
        let mut terms = LossTerms::single(cross_entropy(&out.fused_logits, &batch.labels)?);
        for (m, z) in out.per_modality_logits.iter().enumerate() {
            let ce = cross_entropy(z, &batch.labels)?;
            terms.total = (&terms.total + (&ce * self.weight)?)?;
            // Logged per epoch as `method.loss.aux.<modality>` in metrics.jsonl.
            terms
                .parts
                .insert(format!("aux.{}", model.modalities()[m]), ce.detach());
        }
        Ok(terms)
    }
}

// ----------------------------------------------------------------------------------- dataset

/// Options of `quadrants` (`--set dataset.weak_margin=0.5`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuadrantsConfig {
    /// Samples per split.
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Distance of the class means from 0 along the informative axis, in units of the N(0, 1)
    /// noise: large for `strong`, small for `weak`.
    pub strong_margin: f64,
    pub weak_margin: f64,
    /// Seed of the data (independent of the run seed).
    pub data_seed: u64,
}

impl Default for QuadrantsConfig {
    fn default() -> Self {
        Self {
            train: 800,
            val: 200,
            test: 200,
            strong_margin: 2.5,
            weak_margin: 1.0,
            data_seed: 11,
        }
    }
}

impl DatasetSpec for QuadrantsConfig {
    fn check(&self) -> modbal::core::Result<()> {
        if self.train == 0 || self.val == 0 || self.test == 0 {
            return Err(modbal::core::ModbalError::Config(
                "dataset.train, dataset.val and dataset.test must be > 0".into(),
            ));
        }
        Ok(())
    }
    fn load(&self) -> modbal::core::Result<Splits> {
        let split =
            |tag: u64, n: usize| -> Arc<dyn Dataset> { Arc::new(Quadrants::new(self, tag, n)) };
        Ok(Splits {
            train: split(0, self.train),
            val: split(1, self.val),
            test: split(2, self.test),
        })
    }
    fn default_encoder(&self, _modality: &str, _shape: &[usize]) -> Option<EncoderChoice> {
        Some(EncoderChoice::Custom {
            kind: "tanh-mlp".into(),
            options: Default::default(),
        })
    }
}

/// One split of `quadrants`, generated in memory from the data seed.
pub struct Quadrants {
    samples: Vec<Sample>,
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
}

impl Quadrants {
    fn new(cfg: &QuadrantsConfig, split: u64, n: usize) -> Self {
        let mut rng = SeededRng::new(cfg.data_seed.wrapping_mul(31).wrapping_add(split));
        let samples = (0..n)
            .map(|i| {
                let label = (i % 4) as u32;
                let sign = |bit: u32| if bit == 1 { 1.0 } else { -1.0 };
                // strong: first bit of the label on axis 0; weak: second bit on axis 0.
                let strong = vec![
                    (sign(label & 1) * cfg.strong_margin + rng.normal()) as f32,
                    rng.normal() as f32,
                ];
                let weak = vec![
                    (sign(label >> 1) * cfg.weak_margin + rng.normal()) as f32,
                    rng.normal() as f32,
                ];
                Sample {
                    inputs: vec![strong, weak],
                    label,
                }
            })
            .collect();
        Self {
            samples,
            modalities: vec!["strong".into(), "weak".into()],
            shapes: vec![vec![2], vec![2]],
        }
    }
}

impl Dataset for Quadrants {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn modalities(&self) -> &[String] {
        &self.modalities
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        4
    }
    fn get(&self, i: usize) -> modbal::core::Result<Sample> {
        self.samples.get(i).cloned().ok_or_else(|| {
            modbal::core::ModbalError::Data(format!("quadrants: no sample {i} of {}", self.len()))
        })
    }
}

// ----------------------------------------------------------------------------------- encoder

/// Options of the `tanh-mlp` encoder (`--set model.encoders.weak.hidden=8`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TanhMlpConfig {
    /// Width of the hidden (and output) layer, ≥ 1.
    pub hidden: usize,
}

impl Default for TanhMlpConfig {
    fn default() -> Self {
        Self { hidden: 16 }
    }
}

impl EncoderSpec for TanhMlpConfig {
    fn check(&self, input_shape: &[usize]) -> modbal::core::Result<()> {
        if self.hidden == 0 || input_shape.len() != 1 {
            return Err(modbal::core::ModbalError::Config(format!(
                "tanh-mlp needs hidden >= 1 and vector inputs [D], got hidden {} and {input_shape:?}",
                self.hidden
            )));
        }
        Ok(())
    }
    fn build(
        &self,
        pb: &ParamBuilder,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> modbal::core::Result<Box<dyn Encoder>> {
        Ok(Box::new(TanhMlp {
            layer: Linear::new(&pb.pp("fc"), input_shape[0], self.hidden, rng)?,
            input_shape: input_shape.to_vec(),
            hidden: self.hidden,
        }))
    }
}

/// `tanh(W x + b)`.
#[derive(Debug)]
pub struct TanhMlp {
    layer: Linear,
    input_shape: Vec<usize>,
    hidden: usize,
}

impl Encoder for TanhMlp {
    fn forward_t(&self, x: &Tensor, _train: bool) -> modbal::candle::Result<Tensor> {
        self.layer.forward(x)?.tanh()
    }
    fn out_dim(&self) -> usize {
        self.hidden
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "tanh-mlp"
    }
}
