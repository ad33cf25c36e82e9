//! # modbal-encoders: modality encoders, fusion heads and the late-fusion model
//!
//! | item | what |
//! |---|---|
//! | [`Encoder`], [`EncoderConfig`] | encoder trait and the serde config that builds every kind |
//! | [`MlpEncoder`] | `Linear + ReLU` stack on flattened vectors |
//! | [`Conv4Encoder`] | the Colored-and-Gray-MNIST 4-conv encoder |
//! | [`ResNet18Encoder`] | torchvision-layout ResNet18, any input channels and H×W, optional `T`-frame pooling (OGM-GE) |
//! | [`SmallCnnEncoder`] | light CNN for the synthetic benchmark |
//! | [`BertEncoder`], [`WordPieceTokenizer`] | trainable BERT loading Hugging Face safetensors; WordPiece from `tokenizer.json` / `vocab.txt` |
//! | [`resnet_pretrained`] | ImageNet ResNet18 weights (torchvision / timm names), stem adapted to 1 or 2 channels |
//! | [`BiGruEncoder`], [`GloveTable`] | IBML's GloVe + bidirectional GRU text encoder |
//! | [`SeqTransformerEncoder`] | MulT-style 1-D conv + Transformer sequence encoder (CMU-MOSEI) |
//! | [`WeightsSource`] | pretrained files from `--weights DIR` or the local Hugging Face cache (offline) |
//! | [`FusionHead`], [`FusionConfig`] | concat head (weight-slice per-modality logits), sum head, MMTM; FiLM, gated and BLOCK heads ([`fusion_heads`]) |
//! | [`MultimodalNet`], [`ModalitySpec`], [`ModelConfig`] | encoders + head as a [`modbal_core::MultimodalModel`] |
//!
//! Everything is built through a [`modbal_tensors::ParamBuilder`] and draws its initial weights
//! from a [`modbal_tensors::SeededRng`] in construction order (same seed ⇒ same parameters):
//! Linear weights Xavier-normal, conv weights Kaiming-normal (fan-out), BatchNorm ones/zeros,
//! biases zero. Every convolution followed by BatchNorm has no bias (it could not learn).
//!
//! # Shapes
//! * encoder: `[B, ...per-sample input shape] → [B, D]` (table in [`encoder`])
//! * fusion head: `features[m]: [B, D_m] → (fused [B, C], per-modality [B, C] each)`
//! * [`MultimodalNet`]: `inputs[m] → MultimodalOutput { fused_logits, per_modality_logits, features }`
//!
//! # Example
//!
//! ```
//! use modbal_core::MultimodalModel;
//! use modbal_encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
//! use modbal_tensors::SeededRng;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = candle_core::Device::Cpu;
//! let net = MultimodalNet::new(
//!     &[
//!         ModalitySpec::new("gray", EncoderConfig::conv4(), &[1, 28, 28]),
//!         ModalitySpec::new("colored", EncoderConfig::conv4(), &[3, 28, 28]),
//!     ],
//!     &FusionConfig::Concat,
//!     10,
//!     &mut SeededRng::new(0),
//!     &device,
//! )?;
//! let x = [
//!     candle_core::Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &device)?,
//!     candle_core::Tensor::zeros((2, 3, 28, 28), candle_core::DType::F32, &device)?,
//! ];
//! let out = net.forward_t(&x, false)?;
//! assert_eq!(out.fused_logits.dims(), &[2, 10]);
//! assert_eq!(out.features[1].dims(), &[2, 256]);
//! # Ok(())
//! # }
//! ```

mod blocks;
pub mod conv4;
pub mod encoder;
pub mod encoder_config;
pub mod error;
pub mod fusion;
pub mod fusion_heads;
pub mod mlp;
pub mod mmtm;
pub mod net;
pub mod resnet;
pub mod small_cnn;
// Text, sequence and pretrained encoders (issue 8).
pub mod bert;
pub mod glove;
pub mod gru;
pub mod pretrained;
pub mod resnet_pretrained;
pub mod seq_transformer;
pub mod seqnn;
pub mod wordpiece;

pub use bert::{BertConfig, BertEncoder, BertModel, BertPooling};
pub use conv4::Conv4Encoder;
pub use encoder::Encoder;
pub use encoder_config::{
    default_conv4_channels, default_mlp_hidden, default_small_cnn_channels, EncoderConfig,
};
pub use error::{EncoderError, Result};
pub use fusion::{ConcatHead, FusionConfig, FusionHead, SumHead, FUSION_KINDS};
pub use fusion_heads::{BlockHead, FilmHead, GatedHead, UnimodalLogits};
pub use glove::GloveTable;
pub use gru::{BiGruEncoder, GruPooling};
pub use mlp::MlpEncoder;
pub use mmtm::MmtmBlock;
pub use net::{ModalitySpec, ModelConfig, MultimodalNet};
pub use pretrained::{hf_cache_dir, WeightsSource};
pub use resnet::{ResNet18Encoder, RESNET18_OUT_DIM};
pub use seq_transformer::{SeqTransformerConfig, SeqTransformerEncoder};
pub use small_cnn::SmallCnnEncoder;
pub use wordpiece::WordPieceTokenizer;
