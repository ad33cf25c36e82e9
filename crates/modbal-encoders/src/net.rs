//! [`MultimodalNet`]: one encoder per modality and a fusion head, implementing
//! [`modbal_core::MultimodalModel`].
//!
//! Parameters live in the net's own [`ParamStore`]: modality `m`'s encoder under
//! `encoder.<name>`, the head under `head`. Initial weights are drawn from the caller's
//! [`SeededRng`] in construction order: the encoders in modality order, then the head. A net with
//! a single modality is the unimodal baseline (its head maps only that modality).
//!
//! # Shapes
//! `inputs[m]: [B, ...input_shape_m]` → `features[m]: [B, D_m]` → fused logits `[B, C]` and
//! per-modality logits `[B, C]` (see [`crate::fusion`]).

use crate::encoder::Encoder;
use crate::encoder_config::EncoderConfig;
use crate::error::{config_err, EncoderError, Result};
use crate::fusion::{FusionConfig, FusionHead};
use crate::mmtm::MmtmBlock;
use candle_core::{DType, Device, Tensor};
use modbal_core::{FusionControl, MultimodalModel, MultimodalOutput};
use modbal_tensors::{ParamBuilder, ParamStore, SeededRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One modality of a [`MultimodalNet`]: its name, encoder and per-sample input shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModalitySpec {
    /// Modality name (non-empty, no `.`, not a prefix of another modality's name): parameter
    /// group `encoder.<name>`.
    pub name: String,
    pub encoder: EncoderConfig,
    /// Per-sample input shape, no batch axis (e.g. `[1, 257, 188]`, `[3, 3, 224, 224]`).
    pub input_shape: Vec<usize>,
}

impl ModalitySpec {
    pub fn new(name: impl Into<String>, encoder: EncoderConfig, input_shape: &[usize]) -> Self {
        Self {
            name: name.into(),
            encoder,
            input_shape: input_shape.to_vec(),
        }
    }
}

/// Serde convenience: the encoder of every modality (by name) and the fusion head.
///
/// ```toml
/// [model.fusion]          # default: concat
/// kind = "concat"
///
/// [model.encoders.audio]  # 1×257×188 spectrogram
/// kind = "resnet18"
///
/// [model.encoders.visual] # 3×T×224×224 frames
/// kind = "resnet18"
/// frames_pooling = true
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Encoder per modality name. Default: empty (every modality must be listed).
    #[serde(default)]
    pub encoders: BTreeMap<String, EncoderConfig>,
    /// Fusion head. Default: [`FusionConfig::Concat`].
    #[serde(default)]
    pub fusion: FusionConfig,
}

impl ModelConfig {
    /// The [`ModalitySpec`]s for `modalities` (in that order, which is the data's input order)
    /// with their per-sample `input_shapes`. Errors name missing and unknown modalities.
    pub fn specs(
        &self,
        modalities: &[String],
        input_shapes: &[Vec<usize>],
    ) -> Result<Vec<ModalitySpec>> {
        if modalities.len() != input_shapes.len() {
            return config_err(format!(
                "{} modalities {modalities:?} but {} input shapes {input_shapes:?}",
                modalities.len(),
                input_shapes.len()
            ));
        }
        let missing: Vec<&String> = modalities
            .iter()
            .filter(|m| !self.encoders.contains_key(*m))
            .collect();
        let extra: Vec<&String> = self
            .encoders
            .keys()
            .filter(|k| !modalities.contains(k))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            return config_err(format!(
                "model.encoders must name exactly the modalities {modalities:?}: missing {missing:?}, unknown {extra:?}"
            ));
        }
        Ok(modalities
            .iter()
            .zip(input_shapes)
            .map(|(m, s)| ModalitySpec::new(m.clone(), self.encoders[m].clone(), s))
            .collect())
    }

    /// Build the [`MultimodalNet`] (see [`MultimodalNet::new`]).
    pub fn build(
        &self,
        modalities: &[String],
        input_shapes: &[Vec<usize>],
        num_classes: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<MultimodalNet> {
        let specs = self.specs(modalities, input_shapes)?;
        MultimodalNet::new(&specs, &self.fusion, num_classes, rng, device)
    }
}

/// What [`MultimodalNet::with_encoders`] calls to build modality `m`'s encoder under a
/// parameter builder, drawing its initial weights from the generator.
pub type BuildEncoder<'a> =
    dyn FnMut(usize, &ParamBuilder, &mut SeededRng) -> Result<Box<dyn Encoder>> + 'a;

/// A late-fusion classifier; see the [module docs](self).
#[derive(Debug)]
pub struct MultimodalNet {
    modalities: Vec<String>,
    encoders: Vec<Box<dyn Encoder>>,
    head: Box<dyn FusionHead>,
    /// MMTM blocks (fusion `mmtm` only) and the stage after which each runs.
    mmtm: Vec<(usize, MmtmBlock)>,
    fusion: FusionConfig,
    num_classes: usize,
    params: ParamStore,
    device: Device,
}

impl MultimodalNet {
    /// Build every encoder (in `specs` order) and the head, in f32 on `device`.
    ///
    /// Errors: no modality, an empty / dotted / repeated modality name, a name that is a prefix
    /// of another (parameter groups are string prefixes), `num_classes == 0`, or
    /// an encoder configuration that does not fit its input shape.
    pub fn new(
        specs: &[ModalitySpec],
        fusion: &FusionConfig,
        num_classes: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Self> {
        let modalities: Vec<(String, Vec<usize>)> = specs
            .iter()
            .map(|s| (s.name.clone(), s.input_shape.clone()))
            .collect();
        check_modalities(&modalities, num_classes)?;
        // Validate everything before drawing any weight.
        for s in specs {
            s.encoder.validate(&s.input_shape).map_err(|e| match e {
                EncoderError::Config(msg) => {
                    EncoderError::Config(format!("modality {:?}: {msg}", s.name))
                }
                other => other,
            })?;
        }
        Self::with_encoders(
            &modalities,
            &mut |m, pb, rng| specs[m].encoder.build(pb, &specs[m].input_shape, rng),
            fusion,
            num_classes,
            rng,
            device,
        )
    }

    /// Like [`MultimodalNet::new`], with encoders built by the caller: `build(m, pb, rng)` makes
    /// the encoder of modality `m` (any [`Encoder`], e.g. a user's own network) with its
    /// parameters under `pb` (`encoder.<name>`) and its initial weights from `rng`. Encoders are
    /// built in modality order, then the head.
    pub fn with_encoders(
        modalities: &[(String, Vec<usize>)],
        build: &mut BuildEncoder<'_>,
        fusion: &FusionConfig,
        num_classes: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Self> {
        check_modalities(modalities, num_classes)?;
        let params = ParamStore::new();
        let root = params.root(DType::F32, device);
        let mut encoders = Vec::with_capacity(modalities.len());
        for (m, (name, shape)) in modalities.iter().enumerate() {
            let enc = build(m, &root.pp("encoder").pp(name), rng)?;
            if enc.input_shape() != shape.as_slice() {
                return config_err(format!(
                    "modality {name:?}: the encoder was built for input {:?}, the data have {shape:?}",
                    enc.input_shape()
                ));
            }
            encoders.push(enc);
        }
        let names: Vec<String> = modalities.iter().map(|(n, _)| n.clone()).collect();
        let dims: Vec<usize> = encoders.iter().map(|e| e.out_dim()).collect();
        let head = fusion.build(&root.pp("head"), &names, &dims, num_classes, rng)?;
        let mmtm = match fusion {
            FusionConfig::Mmtm { ratio } => build_mmtm(
                &root.pp("fusion").pp("mmtm"),
                &names,
                &encoders,
                *ratio,
                rng,
            )?,
            _ => Vec::new(),
        };
        Ok(Self {
            modalities: names,
            encoders,
            head,
            mmtm,
            fusion: *fusion,
            num_classes,
            params,
            device: device.clone(),
        })
    }

    /// The unimodal baseline: one modality, its encoder and a linear head.
    pub fn unimodal(
        spec: ModalitySpec,
        fusion: &FusionConfig,
        num_classes: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Self> {
        Self::new(&[spec], fusion, num_classes, rng, device)
    }

    /// Encoder of modality `m` (panics if `m` is out of range).
    pub fn encoder(&self, m: usize) -> &dyn Encoder {
        self.encoders[m].as_ref()
    }
    /// The fusion head.
    pub fn fusion_head(&self) -> &dyn FusionHead {
        self.head.as_ref()
    }
    /// The fusion head's configuration.
    pub fn fusion_config(&self) -> FusionConfig {
        self.fusion
    }
    /// Feature dimension `D_m` of every modality.
    pub fn feature_dims(&self) -> Vec<usize> {
        self.encoders.iter().map(|e| e.out_dim()).collect()
    }
    /// Index of the modality called `name`.
    pub fn modality_index(&self, name: &str) -> Option<usize> {
        self.modalities.iter().position(|m| m == name)
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One input per modality, else an error naming both counts.
    fn check_input_count(&self, inputs: &[Tensor]) -> candle_core::Result<()> {
        if inputs.len() != self.modalities.len() {
            candle_core::bail!(
                "model has {} modalities ({:?}) but the batch has {} inputs",
                self.modalities.len(),
                self.modalities,
                inputs.len()
            );
        }
        Ok(())
    }
    /// The MMTM blocks (fusion `mmtm`; else empty) with the encoder stage each follows.
    pub fn mmtm_blocks(&self) -> &[(usize, MmtmBlock)] {
        &self.mmtm
    }

    /// The staged forward of an MMTM net: every encoder stage by stage, the MMTM block after
    /// its stage, then each encoder's pool and the head.
    fn forward_staged(
        &self,
        inputs: &[Tensor],
        train: bool,
        control: &FusionControl,
    ) -> candle_core::Result<MultimodalOutput> {
        self.check_input_count(inputs)?;
        if !control.constant_excitation.is_empty()
            && control.constant_excitation.len() != self.modalities.len()
        {
            candle_core::bail!(
                "fusion control: {} constant-excitation flags for modalities {:?}",
                control.constant_excitation.len(),
                self.modalities
            );
        }
        let named = |m: usize, e: candle_core::Error| {
            candle_core::Error::Msg(format!("encoder of modality {:?}: {e}", self.modalities[m]))
        };
        let mut hs = inputs.to_vec();
        let mut blocks = self.mmtm.iter().peekable();
        for k in 0..self.encoders[0].num_stages() {
            hs = hs
                .iter()
                .enumerate()
                .map(|(m, h)| {
                    self.encoders[m]
                        .forward_stage(k, h, train)
                        .map_err(|e| named(m, e))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            while let Some((_, block)) = blocks.next_if(|(s, _)| *s == k) {
                hs = block.forward(&hs, train, &control.constant_excitation)?;
            }
        }
        let features = hs
            .iter()
            .enumerate()
            .map(|(m, h)| self.encoders[m].pool(h).map_err(|e| named(m, e)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (fused_logits, per_modality_logits) = self.head.forward(&features)?;
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
    }
}

/// The MMTM blocks of an `mmtm` net under `pb` (`fusion.mmtm`): one after every encoder stage
/// but the first (greedy: after ResNet stages 2, 3, 4 of 4), after the only stage of one-stage
/// encoders. Every encoder must have the same number of stages.
fn build_mmtm(
    pb: &ParamBuilder,
    names: &[String],
    encoders: &[Box<dyn Encoder>],
    ratio: usize,
    rng: &mut SeededRng,
) -> Result<Vec<(usize, MmtmBlock)>> {
    let stages: Vec<usize> = encoders.iter().map(|e| e.num_stages()).collect();
    if stages.iter().any(|&s| s != stages[0]) {
        let list: Vec<String> = names
            .iter()
            .zip(encoders.iter().zip(&stages))
            .map(|(n, (e, s))| format!("{n} ({}: {s})", e.kind()))
            .collect();
        return config_err(format!(
            "fusion mmtm needs encoders with the same number of stages, got {}",
            list.join(", ")
        ));
    }
    let n = stages[0];
    if n == 0 {
        return config_err("fusion mmtm: the encoders have no stage");
    }
    let positions: Vec<usize> = if n == 1 { vec![0] } else { (1..n).collect() };
    positions
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let channels: Vec<usize> = encoders.iter().map(|e| e.stage_channels(k)).collect();
            let block = MmtmBlock::new(&pb.pp(i.to_string()), names, &channels, ratio, rng)
                .map_err(|e| match e {
                    EncoderError::Config(msg) => {
                        EncoderError::Config(format!("mmtm block {i} (after stage {k}): {msg}"))
                    }
                    other => other,
                })?;
            Ok((k, block))
        })
        .collect()
}

impl MultimodalModel for MultimodalNet {
    fn modalities(&self) -> &[String] {
        &self.modalities
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn set_epoch(&self, seed: u64, epoch: usize) {
        for (m, enc) in self.encoders.iter().enumerate() {
            enc.set_epoch_seed(epoch_seed(seed, epoch, m));
        }
    }
    fn encode(&self, m: usize, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !self.mmtm.is_empty() {
            candle_core::bail!(
                "a net with fusion \"mmtm\" cannot encode modality {m} alone: its encoders \
                 exchange information through the MMTM blocks between stages (use forward_t)"
            );
        }
        let Some(enc) = self.encoders.get(m) else {
            candle_core::bail!(
                "modality index {m} out of range for modalities {:?}",
                self.modalities
            );
        };
        enc.forward_t(x, train).map_err(|e| {
            candle_core::Error::Msg(format!("encoder of modality {:?}: {e}", self.modalities[m]))
        })
    }
    fn head(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        self.head.forward(features)
    }
    fn forward_t(&self, inputs: &[Tensor], train: bool) -> candle_core::Result<MultimodalOutput> {
        self.forward_controlled(inputs, train, &FusionControl::default())
    }
    fn forward_controlled(
        &self,
        inputs: &[Tensor],
        train: bool,
        control: &FusionControl,
    ) -> candle_core::Result<MultimodalOutput> {
        if !self.mmtm.is_empty() {
            return self.forward_staged(inputs, train, control);
        }
        if !control.is_regular() {
            candle_core::bail!(
                "a net with fusion {:?} has no intermediate fusion blocks: a constant \
                 excitation needs fusion \"mmtm\"",
                self.fusion.kind()
            );
        }
        // The late-fusion forward (the trait's default `forward_t`).
        self.check_input_count(inputs)?;
        let features = inputs
            .iter()
            .enumerate()
            .map(|(m, x)| self.encode(m, x, train))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (fused_logits, per_modality_logits) = self.head(&features)?;
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
    }
    fn fusion_prefix(&self) -> Option<String> {
        (!self.mmtm.is_empty()).then(|| "fusion".to_string())
    }
}

/// The checks of [`MultimodalNet::new`] on the modality names and the class count.
fn check_modalities(modalities: &[(String, Vec<usize>)], num_classes: usize) -> Result<()> {
    if modalities.is_empty() {
        return config_err("a model needs at least one modality");
    }
    for (i, (name, _)) in modalities.iter().enumerate() {
        if name.is_empty() || name.contains('.') {
            return config_err(format!(
                "modality name {name:?} must be non-empty and contain no '.'"
            ));
        }
        if modalities[..i].iter().any(|(o, _)| o == name) {
            return config_err(format!("modality {name:?} listed twice"));
        }
        // `ParamStore::trainable_with_prefix` matches plain string prefixes, so the group
        // `encoder.audio` would also take `encoder.audio2`'s parameters.
        if let Some((o, _)) = modalities
            .iter()
            .find(|(o, _)| o != name && o.starts_with(name.as_str()))
        {
            return config_err(format!(
                "modality name {name:?} is a prefix of {o:?}: their parameter groups would overlap"
            ));
        }
    }
    if num_classes == 0 {
        return config_err("num_classes is 0");
    }
    Ok(())
}

/// Seed of encoder `m`'s random draws in training epoch `epoch` of a run with seed `seed`
/// (tagged so that it differs from the data loaders' `(seed, epoch, sample)` seeds).
pub fn epoch_seed(seed: u64, epoch: usize, m: usize) -> u64 {
    const DROPOUT: u64 = 0x6472_6f70_6f75_7431; // "dropout1"
    modbal_tensors::rng::derive_seed(&[DROPOUT, seed, epoch as u64, m as u64])
}
