//! The serde [`EncoderConfig`] that builds every encoder kind (each a [`crate::Encoder`]).
//!
//! An encoder maps one modality's mini-batch to a feature matrix. Encoders are built from a
//! per-sample input shape (no batch axis) and draw every initial weight from the caller's
//! [`SeededRng`], in construction order: the same seed gives bit-identical parameters.
//!
//! # Shapes
//! | kind | per-sample input | forward input | output |
//! |---|---|---|---|
//! | [`EncoderConfig::Mlp`] | `[D]` or any `[d1, d2, ...]` with `Πdi = D` | `[B, D]` or `[B, d1, d2, ...]` | `[B, hidden.last()]` (`[B, D]` if no hidden layer) |
//! | [`EncoderConfig::Conv4`] | `[C, H, W]`, `H, W ≥ 8` | `[B, C, H', W']` | `[B, channels[3]]` |
//! | [`EncoderConfig::SmallCnn`] | `[C, H, W]` | `[B, C, H', W']` | `[B, channels.last()]` |
//! | [`EncoderConfig::ResNet18`], `frames_pooling = false` | `[C, H, W]` | `[B, C, H', W']` | `[B, 512]` |
//! | [`EncoderConfig::ResNet18`], `frames_pooling = true` | `[C, T, H, W]` | `[B, C, T', H', W']` | `[B, 512]` |
//! | [`EncoderConfig::ResNet18Pretrained`] | as `ResNet18` | as `ResNet18` | `[B, 512]` |
//! | [`EncoderConfig::Bert`] | `[L]` token ids (floats, `[PAD]` = 0) | `[B, L]` | `[B, hidden_size]` |
//! | [`EncoderConfig::BiGru`] | `[L]` GloVe ids (with `glove`) or `[L, D]` vectors | `[B, L]` / `[B, L, D]` | `[B, H]` (mean) or `[B, 2H]` (last) |
//! | [`EncoderConfig::SeqTransformer`] | `[T, F]` | `[B, T', F]` | `[B, d_model]` |
//!
//! The convolutional encoders end in a global average pool, so the spatial size (and the number
//! of frames) at forward time may differ from the build shape; the rank and the channel count
//! may not. Every shape error names the expected and the actual shape.

use crate::bert::BertPooling;
use crate::conv4::Conv4Encoder;
use crate::encoder::Encoder;
use crate::error::{config_err, Result};
use crate::gru::GruPooling;
use crate::mlp::MlpEncoder;
use crate::pretrained::WeightsSource;
use crate::resnet::ResNet18Encoder;
use crate::seq_transformer::SeqTransformerConfig;
use crate::small_cnn::SmallCnnEncoder;
use modbal_tensors::{ParamBuilder, SeededRng};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which encoder to build, with its hyper-parameters.
///
/// Serialised with a `kind` tag (unknown keys are rejected):
/// ```toml
/// kind = "conv4"
/// channels = [32, 64, 128, 256]   # default
/// ```
/// `kind` is one of `"mlp"`, `"conv4"`, `"resnet18"`, `"small_cnn"`, `"bert"`,
/// `"resnet18_pretrained"`, `"bigru"`, `"seq_transformer"`; every other field has the default
/// documented on it and may be left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    /// Multi-layer perceptron: `Linear + ReLU` per hidden layer on the flattened input.
    Mlp {
        /// Widths of the hidden layers. Default `[256]`. Empty: the encoder only flattens
        /// (`out_dim = D`).
        #[serde(default = "default_mlp_hidden")]
        hidden: Vec<usize>,
    },
    /// The Colored-and-Gray-MNIST 4-conv encoder (PMR / AGM code): 4 × (conv3x3 pad 1 → BN →
    /// ReLU), 2×2/2 max-pool after each of the first three, then a global average pool.
    Conv4 {
        /// Output channels of the four convolutions. Default `[32, 64, 128, 256]`.
        #[serde(default = "default_conv4_channels")]
        channels: [usize; 4],
    },
    /// torchvision's ResNet18 layout (BasicBlock, layers `[2, 2, 2, 2]`, 64…512 channels),
    /// input channels taken from the input shape; OGM-GE's audio and visual encoder.
    #[serde(rename = "resnet18")]
    ResNet18 {
        /// `true`: the input is a `T`-frame clip `[C, T, H, W]`, encoded frame by frame and
        /// averaged over frames and space (OGM-GE's `adaptive_avg_pool3d`). `false`: the input
        /// is one image `[C, H, W]`. Default `false`.
        #[serde(default)]
        frames_pooling: bool,
    },
    /// A light CNN for the built-in synthetic benchmark: per entry conv3x3 pad 1 → BN → ReLU →
    /// 2×2/2 max-pool (skipped once the spatial size is below 2), then a global average pool.
    SmallCnn {
        /// Output channels of the convolutions. Default `[32, 64]`; must not be empty.
        #[serde(default = "default_small_cnn_channels")]
        channels: Vec<usize>,
    },
    /// A trainable BERT ([`crate::bert`]) on token ids `[L]` (padding id from `config.json`),
    /// `config.json` and `model.safetensors` resolved from `weights` or the local Hugging Face
    /// cache ([`crate::pretrained`]). Output `[B, hidden_size]`.
    Bert {
        /// Hub repository. Default `bert-base-uncased`.
        #[serde(default = "default_bert_repo")]
        repo: String,
        /// Revision in the local cache. Default `main`.
        #[serde(default = "crate::pretrained::default_revision")]
        revision: String,
        /// Directory with `config.json` and `model.safetensors` (searched before the cache).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights: Option<PathBuf>,
        /// Load the weights (`true`, default) or keep the random initialisation.
        #[serde(default = "default_true")]
        pretrained: bool,
        /// Feature pooling. Default `pooler`.
        #[serde(default)]
        pooling: BertPooling,
    },
    /// [`EncoderConfig::ResNet18`] with ImageNet weights ([`crate::resnet_pretrained`]): stem
    /// adapted to 1 channel (sum of the RGB filters) or 2+ (mean, replicated).
    #[serde(rename = "resnet18_pretrained")]
    ResNet18Pretrained {
        /// As in [`EncoderConfig::ResNet18`]. Default `false`.
        #[serde(default)]
        frames_pooling: bool,
        /// Hub repository. Default `timm/resnet18.tv_in1k` (torchvision's weights).
        #[serde(default = "default_resnet18_repo")]
        repo: String,
        /// Revision in the local cache. Default `main`.
        #[serde(default = "crate::pretrained::default_revision")]
        revision: String,
        /// Directory with `model.safetensors` (searched before the cache).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights: Option<PathBuf>,
    },
    /// IBML's text encoder: (GloVe embeddings +) bidirectional GRU ([`crate::gru`]). With
    /// `glove`, input token ids `[L]` (ids of [`crate::glove::GloveTable`]); without, embedded
    /// vectors `[L, D]`.
    #[serde(rename = "bigru")]
    BiGru {
        /// A `glove.*.txt` file. Default none (embedded input).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        glove: Option<PathBuf>,
        /// Keep the first `max_words` GloVe words (0 = all). Default 0.
        #[serde(default)]
        max_words: usize,
        /// Train the embedding table (default `false`: frozen, as IBML intends).
        #[serde(default)]
        trainable_embeddings: bool,
        /// GRU width per direction. Default 512 (IBML).
        #[serde(default = "default_gru_hidden")]
        hidden: usize,
        /// Default `mean` (IBML).
        #[serde(default)]
        pooling: GruPooling,
    },
    /// The MulT-style sequence Transformer of CMU-MOSEI ([`crate::seq_transformer`]) on
    /// `[T, F]` sequences; output `[B, d_model]` (last time step).
    SeqTransformer {
        /// Hyper-parameters; every field defaults to MulT's value.
        #[serde(default)]
        transformer: SeqTransformerConfig,
    },
}

/// Default hub repository of [`EncoderConfig::Bert`]: `bert-base-uncased`.
pub fn default_bert_repo() -> String {
    "bert-base-uncased".into()
}

/// Default hub repository of [`EncoderConfig::ResNet18Pretrained`].
pub fn default_resnet18_repo() -> String {
    crate::resnet_pretrained::DEFAULT_RESNET18_REPO.into()
}

/// Default GRU width of [`EncoderConfig::BiGru`]: 512 (IBML's `embed_size`).
pub fn default_gru_hidden() -> usize {
    512
}

fn default_true() -> bool {
    true
}

/// Default hidden widths of [`EncoderConfig::Mlp`]: `[256]`.
pub fn default_mlp_hidden() -> Vec<usize> {
    vec![256]
}

/// Default channels of [`EncoderConfig::Conv4`]: `[32, 64, 128, 256]`.
pub fn default_conv4_channels() -> [usize; 4] {
    [32, 64, 128, 256]
}

/// Default channels of [`EncoderConfig::SmallCnn`]: `[32, 64]`.
pub fn default_small_cnn_channels() -> Vec<usize> {
    vec![32, 64]
}

impl EncoderConfig {
    /// `Mlp` with the default hidden widths.
    pub fn mlp() -> Self {
        EncoderConfig::Mlp {
            hidden: default_mlp_hidden(),
        }
    }
    /// `Conv4` with the default channels.
    pub fn conv4() -> Self {
        EncoderConfig::Conv4 {
            channels: default_conv4_channels(),
        }
    }
    /// `ResNet18` for images (`frames_pooling = false`) or `T`-frame clips (`true`).
    pub fn resnet18(frames_pooling: bool) -> Self {
        EncoderConfig::ResNet18 { frames_pooling }
    }
    /// `SmallCnn` with the default channels.
    pub fn small_cnn() -> Self {
        EncoderConfig::SmallCnn {
            channels: default_small_cnn_channels(),
        }
    }

    /// Every `kind` tag, in declaration order.
    pub const KINDS: &'static [&'static str] = &[
        "mlp",
        "conv4",
        "resnet18",
        "small_cnn",
        "bert",
        "resnet18_pretrained",
        "bigru",
        "seq_transformer",
    ];

    /// The serde tag of this kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EncoderConfig::Mlp { .. } => "mlp",
            EncoderConfig::Conv4 { .. } => "conv4",
            EncoderConfig::ResNet18 { .. } => "resnet18",
            EncoderConfig::SmallCnn { .. } => "small_cnn",
            EncoderConfig::Bert { .. } => "bert",
            EncoderConfig::ResNet18Pretrained { .. } => "resnet18_pretrained",
            EncoderConfig::BiGru { .. } => "bigru",
            EncoderConfig::SeqTransformer { .. } => "seq_transformer",
        }
    }

    /// Check the hyper-parameters against a per-sample input shape (no batch axis) and return
    /// the output feature dimension.
    pub fn validate(&self, input_shape: &[usize]) -> Result<usize> {
        let kind = self.kind();
        if input_shape.contains(&0) {
            return config_err(format!(
                "{kind} encoder: input shape {input_shape:?} has a zero-sized axis"
            ));
        }
        match self {
            EncoderConfig::Mlp { hidden } => {
                if input_shape.is_empty() {
                    return config_err("mlp encoder: the input shape is empty (expected [D] or [d1, d2, ...])");
                }
                if let Some(i) = hidden.iter().position(|&h| h == 0) {
                    return config_err(format!("mlp encoder: hidden[{i}] is 0 in {hidden:?}"));
                }
                Ok(hidden
                    .last()
                    .copied()
                    .unwrap_or_else(|| input_shape.iter().product()))
            }
            EncoderConfig::Conv4 { channels } => {
                if let Some(i) = channels.iter().position(|&c| c == 0) {
                    return config_err(format!("conv4 encoder: channels[{i}] is 0 in {channels:?}"));
                }
                match input_shape {
                    [_, h, w] if *h >= 8 && *w >= 8 => Ok(channels[3]),
                    [_, _, _] => config_err(format!(
                        "conv4 encoder needs H, W >= 8 (three 2x2 max-pools), got input shape {input_shape:?}"
                    )),
                    _ => config_err(format!(
                        "conv4 encoder expects a per-sample input shape [C, H, W], got {input_shape:?}"
                    )),
                }
            }
            EncoderConfig::SmallCnn { channels } => {
                if channels.is_empty() {
                    return config_err("small_cnn encoder: channels is empty");
                }
                if let Some(i) = channels.iter().position(|&c| c == 0) {
                    return config_err(format!(
                        "small_cnn encoder: channels[{i}] is 0 in {channels:?}"
                    ));
                }
                if input_shape.len() != 3 {
                    return config_err(format!(
                        "small_cnn encoder expects a per-sample input shape [C, H, W], got {input_shape:?}"
                    ));
                }
                Ok(*channels.last().expect("checked non-empty"))
            }
            EncoderConfig::ResNet18 { frames_pooling } => match (frames_pooling, input_shape.len()) {
                (false, 3) | (true, 4) => Ok(crate::resnet::RESNET18_OUT_DIM),
                (false, _) => config_err(format!(
                    "resnet18 encoder with frames_pooling = false expects a per-sample input shape [C, H, W], got {input_shape:?} (set frames_pooling = true for [C, T, H, W] clips)"
                )),
                (true, _) => config_err(format!(
                    "resnet18 encoder with frames_pooling = true expects a per-sample input shape [C, T, H, W], got {input_shape:?}"
                )),
            },
            EncoderConfig::ResNet18Pretrained { frames_pooling, .. } => EncoderConfig::ResNet18 {
                frames_pooling: *frames_pooling,
            }
            .validate(input_shape),
            EncoderConfig::Bert {
                repo,
                revision,
                weights,
                ..
            } => {
                let source = WeightsSource {
                    repo: repo.clone(),
                    revision: revision.clone(),
                    weights: weights.clone(),
                };
                let cfg = crate::bert::BertConfig::from_file(&source.resolve("config.json")?)?;
                crate::bert::check_text_shape(input_shape, cfg.max_position_embeddings)?;
                Ok(cfg.hidden_size)
            }
            EncoderConfig::BiGru {
                glove,
                hidden,
                pooling,
                ..
            } => {
                if *hidden == 0 {
                    return config_err("bigru encoder: hidden is 0");
                }
                match (glove.is_some(), input_shape.len()) {
                    (true, 1) | (false, 2) => {}
                    (true, _) => {
                        return config_err(format!(
                            "bigru encoder with a GloVe file expects token ids [L], got {input_shape:?}"
                        ))
                    }
                    (false, _) => {
                        return config_err(format!(
                            "bigru encoder without a GloVe file expects embedded input [L, D], got {input_shape:?}"
                        ))
                    }
                }
                Ok(match pooling {
                    GruPooling::Mean => *hidden,
                    GruPooling::Last => 2 * hidden,
                })
            }
            EncoderConfig::SeqTransformer { transformer } => transformer.validate(input_shape),
        }
    }

    /// Output feature dimension for `input_shape` (validates like [`EncoderConfig::validate`]).
    pub fn out_dim(&self, input_shape: &[usize]) -> Result<usize> {
        self.validate(input_shape)
    }

    /// Build the encoder: parameters are registered under `pb`'s prefix and drawn from `rng` in
    /// construction order. `input_shape` is the per-sample shape (no batch axis).
    pub fn build(
        &self,
        pb: &ParamBuilder,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Box<dyn Encoder>> {
        Ok(match self {
            EncoderConfig::Mlp { hidden } => {
                Box::new(MlpEncoder::new(pb, input_shape, hidden, rng)?)
            }
            EncoderConfig::Conv4 { channels } => {
                Box::new(Conv4Encoder::new(pb, input_shape, *channels, rng)?)
            }
            EncoderConfig::ResNet18 { frames_pooling } => {
                Box::new(ResNet18Encoder::new(pb, input_shape, *frames_pooling, rng)?)
            }
            EncoderConfig::SmallCnn { channels } => {
                Box::new(SmallCnnEncoder::new(pb, input_shape, channels, rng)?)
            }
            EncoderConfig::Bert {
                repo,
                revision,
                weights,
                pretrained,
                pooling,
            } => {
                let source = WeightsSource {
                    repo: repo.clone(),
                    revision: revision.clone(),
                    weights: weights.clone(),
                };
                Box::new(crate::bert::BertEncoder::from_source(
                    pb,
                    &source,
                    *pretrained,
                    *pooling,
                    input_shape,
                    rng,
                )?)
            }
            EncoderConfig::ResNet18Pretrained {
                frames_pooling,
                repo,
                revision,
                weights,
            } => {
                let source = WeightsSource {
                    repo: repo.clone(),
                    revision: revision.clone(),
                    weights: weights.clone(),
                };
                Box::new(crate::resnet_pretrained::pretrained_resnet18(
                    pb,
                    input_shape,
                    *frames_pooling,
                    &source,
                    rng,
                )?)
            }
            EncoderConfig::BiGru {
                glove,
                max_words,
                trainable_embeddings,
                hidden,
                pooling,
            } => {
                self.validate(input_shape)?;
                let table = match glove {
                    Some(p) => Some(crate::glove::GloveTable::from_file(p, *max_words)?),
                    None => None,
                };
                Box::new(crate::gru::BiGruEncoder::new(
                    pb,
                    input_shape,
                    table.as_ref(),
                    *trainable_embeddings,
                    *hidden,
                    *pooling,
                    rng,
                )?)
            }
            EncoderConfig::SeqTransformer { transformer } => {
                Box::new(crate::seq_transformer::SeqTransformerEncoder::new(
                    pb,
                    input_shape,
                    transformer,
                    rng,
                )?)
            }
        })
    }
}
