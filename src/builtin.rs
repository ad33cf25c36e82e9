//! modbal's own entries of the [`Registry`]: every method, dataset and preset by name, and the
//! default encoder of each dataset's modalities.

use crate::registry::{DatasetSpec, EncoderChoice, Registry};
use modbal_core::Result;
use modbal_data::real::{av, cgmnist::CgmnistConfig, nyu::NyuDepthConfig, ucf101::Ucf101Config};
use modbal_data::{Splits, SynthAvConfig, SynthShiftConfig, SynthVecConfig};
use modbal_encoders::EncoderConfig;
use modbal_methods::{
    agm, arl, arm, cal, cml, dgl, dnr, eau, g_blending, greedy, ibml, inforeg, lfm, mla, mmcosine,
    mmpareto, ogm_ge, opm, plain, pmr, reconboost, udi, valuation,
};
use modbal_text::{CmuMoseiConfig, Food101Config, MvsaConfig, TextEncoding};

impl Registry {
    /// modbal's methods, datasets and presets.
    pub fn builtin() -> Self {
        register(Self::empty())
    }
}

/// `reg` with modbal's methods, datasets and presets added.
fn register(reg: Registry) -> Registry {
    let reg = reg
        .with_method::<plain::ConcatConfig>("concat")
        .with_method::<plain::SumConfig>("sum")
        .with_method::<plain::UnimodalConfig>("unimodal")
        .with_method::<cal::CalMethodConfig>("cal")
        .with_method::<arm::ArmConfig>("arm")
        .with_method::<ibml::IbmlMethodConfig>("ibml")
        .with_method::<udi::UdiConfig>("udi")
        .with_method::<ogm_ge::OgmGeMethodConfig>("ogm-ge")
        .with_method::<opm::OpmConfig>("opm")
        .with_method::<opm::OpmGeConfig>("opm-ge")
        .with_method::<mmpareto::MmParetoMethodConfig>("mmpareto")
        .with_method::<pmr::PmrConfig>("pmr")
        .with_method::<mla::MlaConfig>("mla")
        .with_method::<arl::ArlConfig>("arl")
        .with_method::<mmcosine::MmCosineConfig>("mmcosine")
        .with_method::<inforeg::InfoRegConfig>("inforeg")
        .with_method::<cml::CmlConfig>("cml")
        .with_method::<dgl::DglConfig>("dgl")
        .with_method::<reconboost::ReconBoostConfig>("reconboost")
        .with_method::<agm::AgmConfig>("agm")
        .with_method::<dnr::DnrConfig>("dnr")
        .with_method::<valuation::SampleValuationConfig>("sample-valuation")
        .with_method::<valuation::ModalityValuationConfig>("modality-valuation")
        .with_method::<g_blending::GBlendingConfig>("g-blending")
        .with_method::<lfm::LfmConfig>("lfm")
        .with_method::<greedy::GreedyConfig>("greedy")
        .with_method::<plain::BlockConfig>("block")
        .with_method::<plain::FilmConfig>("film")
        .with_method::<plain::GatedConfig>("gated")
        .with_method::<plain::MmtmConfig>("mmtm")
        .with_method::<modbal_methods::tmc::TmcConfig>("tmc")
        .with_method::<modbal_methods::qmf::QmfConfig>("qmf")
        .with_method::<eau::EauConfig>("eau");
    let reg = reg
        .with_dataset::<SynthAvConfig>("synth-av")
        .with_dataset::<SynthVecConfig>("synth-vec")
        .with_dataset::<SynthShiftConfig>("synth-shift")
        .with_dataset::<av::CremaDConfig>("crema-d")
        .with_dataset::<av::KineticsSoundsConfig>("kinetics-sounds")
        .with_dataset::<av::AveConfig>("ave")
        .with_dataset::<av::VggSoundConfig>("vggsound")
        .with_dataset::<Ucf101Config>("ucf101")
        .with_dataset::<NyuDepthConfig>("nyu-depth")
        .with_dataset::<CgmnistConfig>("cgmnist")
        .with_dataset::<Food101Config>("food101")
        .with_dataset::<MvsaConfig>("mvsa")
        .with_dataset::<CmuMoseiConfig>("cmu-mosei");
    crate::presets::PRESETS
        .iter()
        .fold(reg, |reg, p| reg.with_preset(*p))
}

/// The small CNN both synthetic image benchmarks use for their `[C, H, W]` modalities.
fn small_cnn(shape: &[usize]) -> Option<EncoderChoice> {
    (shape.len() == 3).then(|| {
        EncoderConfig::SmallCnn {
            channels: vec![16, 32, 64],
        }
        .into()
    })
}

impl DatasetSpec for SynthAvConfig {
    fn load(&self) -> Result<Splits> {
        self.build()
    }
    fn default_encoder(&self, _modality: &str, shape: &[usize]) -> Option<EncoderChoice> {
        small_cnn(shape)
    }
}

impl DatasetSpec for SynthShiftConfig {
    fn load(&self) -> Result<Splits> {
        self.build()
    }
    /// The shift benchmark's two views: the same small CNN for both.
    fn default_encoder(&self, _modality: &str, shape: &[usize]) -> Option<EncoderChoice> {
        small_cnn(shape)
    }
}

impl DatasetSpec for SynthVecConfig {
    fn load(&self) -> Result<Splits> {
        self.build()
    }
    fn default_encoder(&self, _modality: &str, _shape: &[usize]) -> Option<EncoderChoice> {
        Some(
            EncoderConfig::Mlp {
                hidden: vec![64, 64],
            }
            .into(),
        )
    }
}

impl DatasetSpec for CgmnistConfig {
    fn load(&self) -> Result<Splits> {
        self.build()
    }
    /// PMR / AGM's 4-conv digit encoder for both CGMNIST views.
    fn default_encoder(&self, _modality: &str, shape: &[usize]) -> Option<EncoderChoice> {
        (shape.len() == 3).then(|| EncoderConfig::conv4().into())
    }
}

/// Real audio-visual, RGB-flow and RGB-depth data: the generic rule (ResNet18, with T-frame
/// pooling for clips; `crate::registry::generic_encoder`).
macro_rules! generic_default {
    ($($t:ty),*) => {$(
        impl DatasetSpec for $t {
            fn load(&self) -> Result<Splits> {
                self.build()
            }
        }
    )*};
}
generic_default!(
    av::CremaDConfig,
    av::KineticsSoundsConfig,
    av::AveConfig,
    av::VggSoundConfig,
    Ucf101Config,
    NyuDepthConfig
);

const ROOT_HINT: &str = "--set dataset.root=DIR (see datasets/<name>/README.md for the layout)";
const TEXT_HINT: &str = "e.g. --set dataset.text.kind=glove_vectors --set dataset.text.glove=FILE \
     (or kind = \"wordpiece\" with tokenizer = FILE, or \"glove_ids\"); see datasets/<name>/README.md";

/// The encoder of an image–text dataset's `text` modality follows the text encoding (images get
/// the generic ResNet18 from scratch: `resnet18_pretrained` must be asked for, it needs weights).
fn text_encoder(enc: &TextEncoding, modality: &str) -> Option<EncoderChoice> {
    if modality != "text" {
        return None;
    }
    Some(
        match enc {
            // WordPiece ids only make sense to BERT (pretrained weights required).
            TextEncoding::Wordpiece { .. } => EncoderConfig::Bert {
                repo: modbal_encoders::encoder_config::default_bert_repo(),
                revision: modbal_encoders::pretrained::default_revision(),
                weights: None,
                pretrained: true,
                pooling: Default::default(),
            },
            // IBML's text encoder: GloVe (same file and vocabulary) + BiGRU.
            TextEncoding::GloveIds {
                glove, max_words, ..
            } => EncoderConfig::BiGru {
                glove: Some(glove.clone()),
                max_words: *max_words,
                trainable_embeddings: false,
                hidden: modbal_encoders::encoder_config::default_gru_hidden(),
                pooling: Default::default(),
            },
            TextEncoding::GloveVectors { .. } => EncoderConfig::BiGru {
                glove: None,
                max_words: 0,
                trainable_embeddings: false,
                hidden: modbal_encoders::encoder_config::default_gru_hidden(),
                pooling: Default::default(),
            },
        }
        .into(),
    )
}

impl DatasetSpec for Food101Config {
    fn required() -> &'static [(&'static str, &'static str)] {
        &[("root", ROOT_HINT), ("text", TEXT_HINT)]
    }
    fn load(&self) -> Result<Splits> {
        modbal_text::Food101::splits(self)
    }
    fn default_encoder(&self, modality: &str, _shape: &[usize]) -> Option<EncoderChoice> {
        text_encoder(&self.text, modality)
    }
}

impl DatasetSpec for MvsaConfig {
    fn required() -> &'static [(&'static str, &'static str)] {
        &[("root", ROOT_HINT), ("text", TEXT_HINT)]
    }
    fn load(&self) -> Result<Splits> {
        modbal_text::MvsaSingle::splits(self)
    }
    fn default_encoder(&self, modality: &str, _shape: &[usize]) -> Option<EncoderChoice> {
        text_encoder(&self.text, modality)
    }
}

impl DatasetSpec for CmuMoseiConfig {
    fn required() -> &'static [(&'static str, &'static str)] {
        &[(
            "path",
            "--set dataset.path=FILE (a MulT-style pickle, e.g. mosei_senti_data.pkl, or its directory)",
        )]
    }
    /// CMU-MOSEI's `[T, F]` sequences: the generic rule gives MulT's Transformer per modality.
    fn load(&self) -> Result<Splits> {
        modbal_text::CmuMosei::splits(self)
    }
}
