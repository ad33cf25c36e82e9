//! Paper-protocol presets: `--preset <paper>/<dataset>` loads the protocol a paper trained with
//! (optimizer, learning rate, schedule, batch, epochs, frames, the method's hyper-parameters),
//! every value annotated with where it comes from.
//!
//! A preset is a list of `key = value` settings applied like `--set` (dotted keys of
//! [`crate::RunConfig`]), after `--config` and before `--set`, so a user's `--set` always wins. With
//! `--method` naming another method than the preset's, the preset's `method.*` keys are skipped
//! and the rest of the protocol (data, optimizer, schedule) is kept: every method of a table
//! trains under the same protocol. `config.toml` records the preset's name (`preset = "…"`).
//!
//! Values the paper does not give are marked "paper silent" with the choice made and its reason;
//! nothing here was tuned, and nothing was chosen by looking at a test split.
//!
//! `modbal presets` lists them, `modbal presets NAME` shows one.

use modbal_core::{ModbalError, Result};

/// One setting of a preset: a dotted config key, its value (TOML literal) and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresetValue {
    pub key: &'static str,
    pub value: &'static str,
    pub source: &'static str,
}

/// A paper's training protocol on one dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// `<paper>/<dataset>`.
    pub name: &'static str,
    /// The paper (short reference).
    pub paper: &'static str,
    /// What the user must do besides the preset (prepare recipe, `dataset.root`).
    pub notes: &'static str,
    pub values: &'static [PresetValue],
}

const fn v(key: &'static str, value: &'static str, source: &'static str) -> PresetValue {
    PresetValue { key, value, source }
}

// Shared facts, restated once per preset (each preset must read on its own).
const OGM_PAPER: &str = "Peng et al., Balanced Multimodal Learning via On-the-fly Gradient Modulation, CVPR 2022 (OGM-GE)";
const UDI_PAPER: &str =
    "UDI: Unidirectional Dynamic Interaction for imbalanced multimodal learning (../shared/papers/udi-*.txt)";
const VALUATION_PAPER: &str =
    "Wei et al., Enhancing Multimodal Cooperation via Sample-level Modality Valuation, CVPR 2024";
const CAL_PAPER: &str = "CAL: Contribution-Guided Asymmetric Learning (../shared/papers/cal-*.txt)";
const ARM_PAPER: &str =
    "ARM: Asymmetric Reinforcing against Multimodal Representation Bias, AAAI 2025 (../shared/papers/arm-*.txt)";
const OPM_PAPER: &str = "Wei, Hu, Du & Wen, On-the-fly Modulation for Balanced Multimodal Learning, TPAMI 2024 (OPM; official code GeWu-Lab/BML_TPAMI2024)";
const IBML_PAPER: &str =
    "IBML: Information-Balanced Multimodal Learning, TPAMI (../shared/papers/ibml-*.txt)";
const INFOREG_PAPER: &str = "Huang, Wei, Yang & Hu, Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition, CVPR 2025 (InfoReg; official code GeWu-Lab/InfoReg_CVPR2025)";
const CML_PAPER: &str = "Ma et al., Calibrating Multimodal Learning, ICML 2023 (CML; official code QingyangZhang/CML; UDI Table 1 row via BalanceBenchmark)";
const DGL_PAPER: &str = "Wei, Luo & Luo, Boosting Multimodal Learning via Disentangled Gradient Learning, ICCV 2025 (DGL; IBML ref. [32]; official code shicaiwei123/ICCV2025-GDL)";
const RECONBOOST_PAPER: &str = "Hua, Xu, Bao, Yang & Huang, ReconBoost: Boosting Can Achieve Modality Reconcilement, ICML 2024 (official code huacong/ReconBoost; UDI Table 1 row via BalanceBenchmark)";
const AGM_PAPER: &str = "Li et al., Boosting Multi-modal Model Performance with Adaptive Gradient Modulation, ICCV 2023 (AGM; official code lihongcs/AGM; UDI Table 1 row)";
const DNR_PAPER: &str = "Wei, Li, Feng & Hu, Diagnosing and Re-learning for Balanced Multimodal Learning, ECCV 2024 (D&R; official code GeWu-Lab/Diagnosing_Relearning_ECCV2024)";
const GBLEND_PAPER: &str = "Wang, Tran & Feiszli, What Makes Training Multi-modal Classification Networks Hard?, CVPR 2020 (Gradient-Blending; no official code; UDI Table 1 row via BalanceBenchmark)";
const LFM_PAPER: &str = "Yang, Wan, Jiang & Xu, Facilitating Multimodal Classification via Dynamically Learning Modality Gap, NeurIPS 2024 (LFM; official code njustkmg/NeurIPS24-LFM)";
const GREEDY_PAPER: &str = "Wu, Jastrzębski, Cho & Geras, Characterizing and overcoming the greedy nature of learning in multi-modal deep neural networks, ICML 2022 (Greedy; official code nyukat/greedy_multimodal_learning; UDI Table 1 row)";
const TMC_PAPER: &str = "Han, Zhang, Fu & Zhou, Trusted Multi-View Classification, ICLR 2021 (TMC; official code hanmenghan/TMC; CAL Tables 2-3 row)";
const QMF_PAPER: &str = "Zhang, Wu, Zhang, Hu, Fu, Zhou & Peng, Provable Dynamic Fusion for Low-Quality Multimodal Data, ICML 2023 (QMF; official code QingyangZhang/QMF; CAL Tables 2-3 and ARM Tables 1-2 rows)";
const EAU_PAPER: &str = "Gao, Jiang, Xu, Shen, Li & Shen, Embracing Unimodal Aleatoric Uncertainty for Robust Multimodal Fusion, CVPR 2024 (EAU; official URMF code as preserved in Knightrider16/EAURMF@17d012d; CAL Tables 2-3 rows)";
const MMCOSINE_PAPER: &str = "Xu et al., MMCosine: Multi-Modal Cosine Loss Towards Balanced Audio-Visual Fine-Grained Learning, ICASSP 2023 (official code GeWu-Lab/MMCosine_ICASSP23)";

const BLOCK_PAPER: &str = "Ben-Younes, Cadene, Thome & Cord, BLOCK: Bilinear Superdiagonal Fusion for Visual Question Answering and Visual Relationship Detection, AAAI 2019 (official code Cadene/block.bootstrap.pytorch; CAL Table 1 row \"Block\")";
const FILM_PAPER: &str = "Perez, Strub, de Vries, Dumoulin & Courville, FiLM: Visual Reasoning with a General Conditioning Layer, AAAI 2018 (as OGM-GE's fusion_modules.py FiLM; ARM Table 2 row \"FiLM\")";
const GATED_PAPER: &str = "Kiela, Grave, Joulin & Mikolov, Efficient Large-Scale Multi-Modal Classification, AAAI 2018 (gated fusion as OGM-GE's fusion_modules.py GatedFusion; ARM Table 2 row \"BiGated\")";

/// Every preset modbal ships.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "ogm-ge/crema-d",
        paper: OGM_PAPER,
        notes: "prepare with `modbal prepare crema-d --recipe ogm-ge` (257×188 log-STFT); \
                --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset"),
            v("dataset.frames", "1", "official code: one 1 fps frame per clip for CREMA-D (`fps = 1`)"),
            v("method.name", "\"ogm-ge\"", "the paper's method"),
            v("method.alpha", "0.8", "official README: alpha 0.8 for CREMA-D"),
            v("train.epochs", "100", "official main.py: 100 epochs"),
            v("train.batch_size", "64", "official main.py: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "official main.py: SGD"),
            v("train.optimizer.lr", "0.001", "official main.py: learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "official main.py: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "official main.py: weight decay 1e-4"),
            v("train.schedule.schedule.kind", "\"step\"", "official main.py: StepLR"),
            v("train.schedule.schedule.step_size", "70", "official main.py: StepLR step 70"),
            v("train.schedule.schedule.gamma", "0.1", "official main.py: StepLR gamma 0.1"),
        ],
    },
    Preset {
        name: "udi/crema-d",
        paper: UDI_PAPER,
        notes: "the paper uses 257×299 spectrograms, which no prepare recipe writes: the \
                closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); \
                --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"udi\"", "the paper's method"),
            v("train.epochs", "100", "paper silent on epochs; 100 as the OGM-GE CREMA-D protocol (official main.py) the field's CREMA-D numbers follow; UDI splits them over its stages"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "udi/kinetics-sounds",
        paper: UDI_PAPER,
        notes: "the paper uses 257×1004 spectrograms (`modbal prepare kinetics-sounds --recipe ave` \
                writes 257×1004); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"udi\"", "the paper's method"),
            v("train.epochs", "100", "paper silent on epochs; 100 as the OGM-GE protocol (official main.py)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "udi/cgmnist",
        paper: UDI_PAPER,
        notes: "the four MNIST IDX files; --set dataset.root=DIR. The dataset's defaults are \
                the Kim et al. colouring PMR and UDI use (datasets/cgmnist/README.md)",
        values: &[
            v("dataset.name", "\"cgmnist\"", "the dataset of the preset"),
            v("method.name", "\"udi\"", "the paper's method"),
            v("train.epochs", "100", "paper silent on epochs; 100 as the OGM-GE protocol (official main.py)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "paper silent for CGMNIST (A.6 gives 1e-2 for the audio-visual sets, 1e-3 for Food-101 and UCF-101); 1e-3, the lower of the two, as PMR's CGMNIST setting"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "cal/ave",
        paper: CAL_PAPER,
        notes: "prepare with `modbal prepare ave --recipe ave` (257×1004); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ave\"", "the dataset of the preset"),
            v("method.name", "\"cal\"", "the paper's method"),
            v("method.gamma", "0.2", "CAL §4.1: smoothing coefficient 0.2"),
            v("method.window", "5", "CAL §4.1: window size K = 5"),
            v("method.lambda_potential", "0.5", "CAL §4.1: dynamic potential parameter 0.5"),
            v("method.lambda_compression", "2.0", "CAL §4.1: compression ratio parameter 2"),
            v("method.lambda_m", "0.1", "CAL §4.1: compression parameter 0.1"),
            v("train.epochs", "100", "paper silent on epochs (\"follows the standard settings of ARL and QMF\"); 100 as the OGM-GE protocol"),
            v("train.batch_size", "64", "CAL §4.1: mini-batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "CAL §4.1: SGD for the image modality"),
            v("train.optimizer.lr", "0.001", "CAL §4.1: initial learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "CAL §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "CAL §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "cal/crema-d",
        paper: CAL_PAPER,
        notes: "prepare with `modbal prepare crema-d --recipe ogm-ge`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset"),
            v("method.name", "\"cal\"", "the paper's method"),
            v("train.epochs", "100", "paper silent on epochs; 100 as the OGM-GE protocol"),
            v("train.batch_size", "64", "CAL §4.1: mini-batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "CAL §4.1: SGD"),
            v("train.optimizer.lr", "0.001", "CAL §4.1: initial learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "CAL §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "CAL §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "arm/kinetics-sounds",
        paper: ARM_PAPER,
        notes: "prepare with `modbal prepare kinetics-sounds --recipe fbank` (1024×128, the \
                field's KS features); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset"),
            v("dataset.frames", "3", "paper silent; 3 frames of 1 fps, the KS convention of the field (reference-implementations.md)"),
            v("method.name", "\"arm\"", "the paper's method"),
            v("train.epochs", "80", "ARM App. B: 80 epochs on KS"),
            v("train.batch_size", "64", "ARM App. B: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "ARM App. B: SGD"),
            v("train.optimizer.lr", "0.001", "ARM App. B: learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "ARM App. B: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0005", "ARM App. B: weight decay 5e-4"),
        ],
    },
    Preset {
        name: "sample-valuation/kinetics-sounds",
        paper: VALUATION_PAPER,
        notes: "the official code's own protocol (its loader reads only Kinetics-Sounds; ARM's \
                Table 1 reports the method on KS: 65.33); prepare with `modbal prepare \
                kinetics-sounds`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (official sample_level.py --dataset KineticSound)"),
            v("dataset.frames", "3", "official dataloader.py: 3 frames of 1 fps (the OGM-GE KS loader)"),
            v("method.name", "\"sample-valuation\"", "the paper's sample-level method (official sample_level.py)"),
            v("method.warm_up_epochs", "5", "official sample_level.py: --warmup 5"),
            v("method.schedule_epochs", "60", "official sample_level.py: --epochs 60"),
            v("train.epochs", "60", "official sample_level.py: --epochs 60"),
            v("train.batch_size", "64", "official sample_level.py: --batch_size 64"),
            v("train.optimizer.kind", "\"adamw\"", "official sample_level.py: --optimizer adam (betas 0.9, 0.999, eps 1e-8); modbal has no coupled-L2 Adam, AdamW is the closest"),
            v("train.optimizer.lr", "0.00005", "official sample_level.py: --learning_rate 5e-5"),
            v("train.optimizer.weight_decay", "0.0001", "official sample_level.py: Adam weight_decay 1e-4 (coupled L2 there, decoupled in AdamW)"),
            v("train.schedule.schedule.kind", "\"step\"", "official sample_level.py: StepLR"),
            v("train.schedule.schedule.step_size", "30", "official sample_level.py: --lr_decay_step 30"),
            v("train.schedule.schedule.gamma", "0.1", "official sample_level.py: --lr_decay_ratio 0.1"),
        ],
    },
    Preset {
        name: "modality-valuation/kinetics-sounds",
        paper: VALUATION_PAPER,
        notes: "the official code's own protocol (modality_level.py; ARM's Table 1 reports the \
                method on KS: 65.10, UDI's Table 1: 68.01); prepare with `modbal prepare \
                kinetics-sounds`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (official modality_level.py --dataset KineticSound)"),
            v("dataset.frames", "3", "official dataloader.py: 3 frames of 1 fps (the OGM-GE KS loader)"),
            v("method.name", "\"modality-valuation\"", "the paper's modality-level method (official modality_level.py)"),
            v("method.warm_up_epochs", "5", "official modality_level.py: --warmup 5"),
            v("method.schedule_epochs", "60", "official modality_level.py: --epochs 60"),
            v("method.part_ratio", "0.2", "official modality_level.py: --part_ratio 0.2"),
            v("method.alpha", "1.0", "official modality_level.py: --alpha 1"),
            v("train.epochs", "60", "official modality_level.py: --epochs 60"),
            v("train.batch_size", "64", "official modality_level.py: --batch_size 64"),
            v("train.optimizer.kind", "\"adamw\"", "official modality_level.py: --optimizer adam (betas 0.9, 0.999, eps 1e-8); modbal has no coupled-L2 Adam, AdamW is the closest"),
            v("train.optimizer.lr", "0.00005", "official modality_level.py: --learning_rate 5e-5"),
            v("train.optimizer.weight_decay", "0.0001", "official modality_level.py: Adam weight_decay 1e-4 (coupled L2 there, decoupled in AdamW)"),
            v("train.schedule.schedule.kind", "\"step\"", "official modality_level.py: StepLR"),
            v("train.schedule.schedule.step_size", "30", "official modality_level.py: --lr_decay_step 30"),
            v("train.schedule.schedule.gamma", "0.1", "official modality_level.py: --lr_decay_ratio 0.1"),
        ],
    },
    Preset {
        name: "modality-valuation/crema-d",
        paper: VALUATION_PAPER,
        notes: "UDI Table 1's protocol for its Modality-valuation row (UDI A.6; UDI reports ACC 75.85) with the official method defaults and concatenation head (UDI A.6's sum head for two-modality sets is not offered); the paper's 257×299 spectrograms have no prepare recipe, the closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports Modality-valuation on it)"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"modality-valuation\"", "UDI Table 1: Modality-valuation (Wei et al. 2024)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "modality-valuation/cgmnist",
        paper: VALUATION_PAPER,
        notes: "UDI Table 1's protocol for its Modality-valuation row (UDI A.6; UDI reports ACC 68.56) with the official method defaults and concatenation head (UDI A.6's sum head for two-modality sets is not offered); the four MNIST IDX files; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"cgmnist\"", "the dataset of the preset (UDI Table 1 reports Modality-valuation on it)"),
            v("method.name", "\"modality-valuation\"", "UDI Table 1: Modality-valuation (Wei et al. 2024)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6 silent for CGMNIST (1e-2 audio-visual, 1e-3 Food-101/UCF-101); 1e-3 as the udi/cgmnist preset"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "modality-valuation/ucf101",
        paper: VALUATION_PAPER,
        notes: "UDI Table 1's protocol for its Modality-valuation row (UDI A.6; UDI reports ACC 85.25) with the official method defaults and concatenation head (UDI A.6's sum head for two-modality sets is not offered); RGB + optical flow; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ucf101\"", "the dataset of the preset (UDI Table 1 reports Modality-valuation on it)"),
            v("dataset.frames", "3", "UDI A.6: 3 RGB frames and 3 flow frames uniformly sampled"),
            v("method.name", "\"modality-valuation\"", "UDI Table 1: Modality-valuation (Wei et al. 2024)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6: learning rate 1e-3 for Food-101 and UCF-101"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "ibml/crema-d",
        paper: IBML_PAPER,
        notes: "prepare with `modbal prepare crema-d --recipe ogm-ge`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset"),
            v("dataset.frames", "3", "IBML §4.1: three randomly selected frames per video, following OGM-GE"),
            v("method.name", "\"ibml\"", "the paper's method"),
            v("train.epochs", "100", "official code (QinYang79/IBML): 100 epochs (reference-implementations.md)"),
            v("train.batch_size", "64", "paper silent; 64, the OGM-GE protocol IBML follows (§4.1 \"Following [2]\")"),
            v("train.optimizer.kind", "\"sgd\"", "IBML §4.1: SGD"),
            v("train.optimizer.lr", "0.001", "paper silent on the rate (§4.1: \"a warmup strategy with a larger learning rate\"); official code (QinYang79/IBML): base 1e-3, which the method's warm-up raises to its 1e-2 peak (docs/methods/ibml.md)"),
            v("train.optimizer.momentum", "0.9", "IBML §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "IBML §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "mmcosine/crema-d",
        paper: MMCOSINE_PAPER,
        notes: "prepare with `modbal prepare crema-d --recipe ogm-ge`; --set dataset.root=DIR. \
                IBML's Table 2 column (MMCosine on CREMA-D) is `--preset ibml/crema-d --method mmcosine`",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset"),
            v("dataset.frames", "1", "official dataset.py (AVDataset_CD): pick_num = 1 frame per clip"),
            v("method.name", "\"mmcosine\"", "the paper's method"),
            v("method.scale", "10.0", "official README command for CREMA-D: --scaling 10 (also the argparse default)"),
            v("train.epochs", "200", "official main_CD.py: --epochs 200"),
            v("train.batch_size", "32", "official main_CD.py: --batch_size 32"),
            v("train.optimizer.kind", "\"sgd\"", "official main_CD.py: --optimizer sgd"),
            v("train.optimizer.lr", "0.001", "official main_CD.py: --learning_rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "official main_CD.py: SGD momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "official main_CD.py: SGD weight decay 1e-4"),
            v("train.schedule.schedule.kind", "\"step\"", "official main_CD.py: StepLR"),
            v("train.schedule.schedule.step_size", "100", "official main_CD.py: --lr_decay_step 100"),
            v("train.schedule.schedule.gamma", "0.1", "official main_CD.py: --lr_decay_ratio 0.1"),
        ],
    },
    Preset {
        name: "inforeg/crema-d",
        paper: INFOREG_PAPER,
        notes: "the official code's own protocol and hard-coded audio-dominant choices; prepare \
                with `modbal prepare crema-d --recipe ogm-ge` (the official spectrogram: n_fft \
                512, hop 353); --set dataset.root=DIR. IBML's Table 2 column (InfoReg on \
                CREMA-D) is `--preset ibml/crema-d --method inforeg`",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (official main.py --dataset CREMAD)"),
            v("dataset.frames", "3", "official main.py: --fps 3 frames sampled per clip (CramedDataset)"),
            v("method.name", "\"inforeg\"", "the paper's method (official --modulation Ours)"),
            v("method.beta", "0.95", "official train_epoch: beta = 0.95·exp(tanh(s_a − s_v)) on the audio encoder"),
            v("method.beta_modality", "{ visual = 0.1 }", "official train_epoch: beta2 = 0.1·exp(tanh(s_v − s_a)) on the visual encoder"),
            v("method.threshold", "0.05", "official train_epoch: regulation while k > 0.05"),
            v("method.history", "10", "official: trace lists of ten zeros, means of the last 10"),
            v("method.window_trace", "\"audio\"", "official train_epoch: k from audio_trace_list only"),
            v("train.epochs", "50", "official main.py: --epochs 50"),
            v("train.batch_size", "64", "official main.py: --batch_size 64"),
            v("train.optimizer.kind", "\"sgd\"", "official main.py: optim.SGD"),
            v("train.optimizer.lr", "0.002", "official main.py: --learning_rate 0.002"),
            v("train.optimizer.momentum", "0.9", "official main.py: SGD momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "official main.py: SGD weight_decay 1e-4"),
            v("train.schedule.schedule.kind", "\"step\"", "official main.py: StepLR"),
            v("train.schedule.schedule.step_size", "30", "official main.py: --lr_decay_step 30"),
            v("train.schedule.schedule.gamma", "0.1", "official main.py: --lr_decay_ratio 0.1"),
        ],
    },
    Preset {
        name: "opm/kinetics-sounds",
        paper: OPM_PAPER,
        notes: "the official code's own protocol (its loader reads only Kinetics-Sounds); prepare \
                with `modbal prepare kinetics-sounds`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (official config.py: KineticSound)"),
            v("dataset.frames", "3", "official config.py: use_video_frames = 3, fps = 1"),
            v("method.name", "\"opm\"", "the paper's method (official scripts/train_opm.sh)"),
            v("method.q_base", "0.5", "official train_opm.sh: --q_base 0.5"),
            v("method.lambda", "0.5", "official train_opm.sh: --lam 0.5"),
            v("method.p_exe", "0.7", "official train_opm.sh: --p_exe 0.7"),
            v("train.epochs", "100", "official config.py: epochs = 100"),
            v("train.batch_size", "32", "official config.py: batch_size = 32"),
            v("train.optimizer.kind", "\"adamw\"", "official main.py: torch.optim.AdamW"),
            v("train.optimizer.lr", "0.00005", "official config.py: learning_rate = 5e-5"),
            v("train.optimizer.weight_decay", "0.01", "official main.py: AdamW weight_decay 0.01"),
            v("train.schedule.schedule.kind", "\"step\"", "official main.py: StepLR"),
            v("train.schedule.schedule.step_size", "40", "official config.py: lr_decay_step = 40"),
            v("train.schedule.schedule.gamma", "0.1", "official config.py: lr_decay_ratio = 0.1"),
        ],
    },
    Preset {
        name: "opm/crema-d",
        paper: OPM_PAPER,
        notes: "UDI Table 1's protocol for its OPM row (UDI A.6) with the official OPM \
                hyper-parameters; the paper's 257×299 spectrograms have no prepare recipe, the \
                closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports OPM on it)"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"opm\"", "UDI Table 1: OPM (Wei et al. 2025a)"),
            v("method.q_base", "0.5", "official train_opm.sh (UDI silent)"),
            v("method.lambda", "0.5", "official train_opm.sh (UDI silent)"),
            v("method.p_exe", "0.7", "official train_opm.sh (UDI silent)"),
            v("train.epochs", "100", "UDI silent on epochs; official config.py: 100"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "opm/cgmnist",
        paper: OPM_PAPER,
        notes: "UDI Table 1's protocol for its OPM row (UDI A.6) with the official OPM \
                hyper-parameters; the four MNIST IDX files; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"cgmnist\"", "the dataset of the preset (UDI Table 1 reports OPM on it)"),
            v("method.name", "\"opm\"", "UDI Table 1: OPM (Wei et al. 2025a)"),
            v("method.q_base", "0.5", "official train_opm.sh (UDI silent)"),
            v("method.lambda", "0.5", "official train_opm.sh (UDI silent)"),
            v("method.p_exe", "0.7", "official train_opm.sh (UDI silent)"),
            v("train.epochs", "100", "UDI silent on epochs; official config.py: 100"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI silent for CGMNIST (A.6: 1e-2 audio-visual, 1e-3 Food-101/UCF-101); 1e-3 as the udi/cgmnist preset"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "cml/crema-d",
        paper: CML_PAPER,
        notes: "UDI Table 1's protocol for its CML row (UDI A.6); the paper's 257×299 spectrograms have no prepare recipe, the closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports CML on it)"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"cml\"", "UDI Table 1: CML (Ma et al. 2023)"),
            v("method.lambda", "0.1", "UDI silent; BalanceBenchmark trainer_config.yaml CML lam 0.1 and official README --beta 10 (÷100)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "cml/kinetics-sounds",
        paper: CML_PAPER,
        notes: "UDI Table 1's protocol for its CML row (UDI A.6); 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports CML on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"cml\"", "UDI Table 1: CML (Ma et al. 2023)"),
            v("method.lambda", "0.1", "UDI silent; BalanceBenchmark trainer_config.yaml CML lam 0.1 and official README --beta 10 (÷100)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "cml/ucf101",
        paper: CML_PAPER,
        notes: "UDI Table 1's protocol for its CML row (UDI A.6): RGB + optical flow, ResNet18 each; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ucf101\"", "the dataset of the preset (UDI Table 1 reports CML on it)"),
            v("dataset.frames", "3", "UDI A.6: 3 RGB frames and 3 flow frames uniformly sampled"),
            v("method.name", "\"cml\"", "UDI Table 1: CML (Ma et al. 2023)"),
            v("method.lambda", "0.1", "UDI silent; BalanceBenchmark trainer_config.yaml CML lam 0.1 and official README --beta 10 (÷100)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6: learning rate 1e-3 for Food-101 and UCF-101"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "dgl/crema-d",
        paper: DGL_PAPER,
        notes: "the official code's CREMA-D protocol (cramed_dgl.sh); prepare with `modbal prepare \
                crema-d --recipe ogm-ge`; --set dataset.root=DIR. IBML's Table 2 column (DGL on \
                CREMA-D) is `--preset ibml/crema-d --method dgl`",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (IBML Table 2 reports DGL on it)"),
            v("dataset.frames", "1", "official main_dgl.py: --fps 1 frame per clip"),
            v("method.name", "\"dgl\"", "the paper's method"),
            v("method.alpha", "4.0", "official cramed_dgl.sh: --alpha 4 (its other run: 5)"),
            v("train.epochs", "100", "official main_dgl.py: --epochs 100"),
            v("train.batch_size", "64", "official main_dgl.py: --batch_size 64"),
            v("train.optimizer.kind", "\"sgd\"", "official main_dgl.py: optim.SGD"),
            v("train.optimizer.lr", "0.002", "official cramed_dgl.sh: --learning_rate 0.002 (argparse default 0.001)"),
            v("train.optimizer.momentum", "0.9", "official main_dgl.py: SGD momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "official main_dgl.py: SGD weight_decay 1e-4"),
            v("train.schedule.schedule.kind", "\"multi_step\"", "official main_dgl.py: MultiStepLR"),
            v("train.schedule.schedule.milestones", "[70]", "official main_dgl.py: --lr_decay_step 70 (its scheduler steps at the start of each epoch, so the decay lands one epoch earlier there: docs/methods/dgl.md)"),
            v("train.schedule.schedule.gamma", "0.1", "official main_dgl.py: --lr_decay_ratio 0.1"),
            v("train.clip_grad_norm", "40.0", "official main_dgl.py: clip_grad_norm_(model.parameters(), 40) on the summed gradients"),
        ],
    },
    Preset {
        name: "reconboost/crema-d",
        paper: RECONBOOST_PAPER,
        notes: "the official README's CREMA-D command: 100 stages of 4 boost + 4 rectification epochs (the shipped \
                checkpoint is stage 99). The official runs start from pretrained unimodal encoders (OGM-GE-trained), \
                which modbal does not ship: set encoder weights yourself or train from scratch (docs/methods/reconboost.md); \
                prepare with `modbal prepare crema-d --recipe ogm-ge`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports ReconBoost on it)"),
            v("method.name", "\"reconboost\"", "the paper's method"),
            v("method.w1", "5.0", "official README CREMA-D: --weight1 5"),
            v("method.w2", "1.0", "official README CREMA-D: --weight2 1"),
            v("method.alpha", "0.5", "official README: --alpha 0.5"),
            v("method.boost_epochs", "4", "official README: --epochs_per_stage 4"),
            v("method.rectify_epochs", "4", "official README: --correct_epoch 4"),
            v("train.epochs", "800", "100 stages × (4 + 4) epochs: the shipped CREMA-D checkpoint is stage 99"),
            v("train.batch_size", "64", "official README: --batch_size 64"),
            v("train.optimizer.kind", "\"sgd\"", "official train.py: optim.SGD for both phases"),
            v("train.optimizer.lr", "0.01", "official README: --m_lr 0.01 (phase 1) and --e_lr 0.01 (phase 2)"),
            v("train.optimizer.momentum", "0.9", "official train.py: SGD momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0005", "official train.py: SGD weight_decay 5e-4"),
            v("train.schedule.schedule.kind", "\"step\"", "official train.py: lr × 0.1 every 30 stages on CREMA-D"),
            v("train.schedule.schedule.step_size", "240", "30 stages × 8 epochs"),
            v("train.schedule.schedule.gamma", "0.1", "official train.py: × 0.1"),
        ],
    },
    Preset {
        name: "reconboost/kinetics-sounds",
        paper: RECONBOOST_PAPER,
        notes: "UDI Table 1's protocol for its ReconBoost row (UDI A.6, BalanceBenchmark's port: 1 + 1 epochs per \
                stage); 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports ReconBoost on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"reconboost\"", "UDI Table 1: ReconBoost (Hua et al. 2024)"),
            v("method.w1", "5.0", "BalanceBenchmark trainer_config.yaml ReconBoost weight1 5"),
            v("method.w2", "1.0", "BalanceBenchmark trainer_config.yaml ReconBoost weight2 1"),
            v("method.boost_epochs", "1", "BalanceBenchmark trainer_config.yaml ReconBoost T_epochs 1"),
            v("method.rectify_epochs", "1", "BalanceBenchmark: T_epochs 1 for the rectification too"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "agm/crema-d",
        paper: AGM_PAPER,
        notes: "UDI Table 1's protocol for its AGM row (UDI A.6; UDI reports 71.59% ACC); the paper's 257×299 spectrograms have no prepare recipe, the closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports AGM on it)"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"agm\"", "UDI Table 1: AGM (Li et al. 2023)"),
            v("method.alpha", "1.5", "UDI silent; the authors' CREMA-D value (official repository, issue #3)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "agm/kinetics-sounds",
        paper: AGM_PAPER,
        notes: "UDI Table 1's protocol for its AGM row (UDI A.6; UDI reports 66.62% ACC); 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports AGM on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"agm\"", "UDI Table 1: AGM (Li et al. 2023)"),
            v("method.alpha", "1.5", "UDI silent; the authors' CREMA-D value (official repository, issue #3)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "agm/ucf101",
        paper: AGM_PAPER,
        notes: "UDI Table 1's protocol for its AGM row (UDI A.6; UDI reports 81.70% ACC); RGB + optical flow, ResNet18 each; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ucf101\"", "the dataset of the preset (UDI Table 1 reports AGM on it)"),
            v("dataset.frames", "3", "UDI A.6: 3 RGB frames and 3 flow frames uniformly sampled"),
            v("method.name", "\"agm\"", "UDI Table 1: AGM (Li et al. 2023)"),
            v("method.alpha", "1.5", "UDI silent; the authors' CREMA-D value (official repository, issue #3)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6: learning rate 1e-3 for Food-101 and UCF-101"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "agm/cgmnist",
        paper: AGM_PAPER,
        notes: "UDI Table 1's protocol for its AGM row (UDI A.6; UDI reports 67.64% ACC); the four MNIST IDX files; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"cgmnist\"", "the dataset of the preset (UDI Table 1 reports AGM on it)"),
            v("method.name", "\"agm\"", "UDI Table 1: AGM (Li et al. 2023)"),
            v("method.alpha", "1.5", "UDI silent; the authors' CREMA-D value (official repository, issue #3)"),
            v("method.head", "\"sum\"", "UDI A.6: summation fusion for two-modality datasets"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI silent for CGMNIST (A.6: 1e-2 audio-visual, 1e-3 Food-101/UCF-101); 1e-3 as the udi/cgmnist preset"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "dnr/crema-d",
        paper: DNR_PAPER,
        notes: "the official code's own protocol (script/ours.sh); prepare with `modbal prepare \
                crema-d --recipe ogm-ge`; --set dataset.root=DIR. The official model selection \
                on test is not followed (modbal selects on validation)",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (official ours.sh --dataset CREMAD)"),
            v("dataset.frames", "2", "official AVDataset_CD: pick_num = 2 frames per clip"),
            v("method.name", "\"dnr\"", "the paper's method (official ours.py)"),
            v("method.lambda", "3.0", "official ours.sh: --move_lambda 3"),
            v("method.reinit_every", "20", "official ours.sh: --reinit_epoch 20"),
            v("method.reinit_num", "3", "official ours.sh: --reinit_num 3"),
            v("method.schedule_epochs", "90", "official ours.sh: --epochs 90"),
            v("train.epochs", "90", "official ours.sh: --epochs 90"),
            v("train.batch_size", "64", "official ours.py: --batch_size 64"),
            v("train.optimizer.kind", "\"sgd\"", "official ours.py: --optimizer sgd"),
            v("train.optimizer.lr", "0.002", "official ours.py: --learning_rate 0.002 (no scheduler is built: lr_decay_* unused)"),
            v("train.optimizer.momentum", "0.9", "official ours.py: SGD momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "official ours.py: SGD weight_decay 1e-4"),
        ],
    },
    Preset {
        name: "dnr/kinetics-sounds",
        paper: DNR_PAPER,
        notes: "UDI Table 1's protocol for its Relearning row (UDI A.6), with the official D&R \
                options and concat head (UDI A.6 uses summation fusion; dnr keeps the official \
                concat head); 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe \
                ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports Relearning on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"dnr\"", "UDI Table 1: Relearning (Wei et al. 2025b)"),
            v("method.lambda", "3.0", "UDI silent; official ours.sh --move_lambda 3"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol); the diagnoses scale to 22, 44, 67"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "dnr/ucf101",
        paper: DNR_PAPER,
        notes: "UDI Table 1's protocol for its Relearning row (UDI A.6): RGB + optical flow, \
                ResNet18 each, concat head (the official D&R head); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ucf101\"", "the dataset of the preset (UDI Table 1 reports Relearning on it)"),
            v("dataset.frames", "3", "UDI A.6: 3 RGB frames and 3 flow frames uniformly sampled"),
            v("method.name", "\"dnr\"", "UDI Table 1: Relearning (Wei et al. 2025b)"),
            v("method.lambda", "3.0", "UDI silent; official ours.sh --move_lambda 3"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6: learning rate 1e-3 for Food-101 and UCF-101"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "dnr/ave",
        paper: DNR_PAPER,
        notes: "CAL Table 1's protocol for its D&R row (CAL §4.1); prepare with `modbal prepare \
                ave --recipe ave` (257×1004); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ave\"", "the dataset of the preset (CAL Table 1 reports D&R on it)"),
            v("method.name", "\"dnr\"", "CAL Table 1: D&R [wei2024diagnosing]"),
            v("method.lambda", "3.0", "CAL silent; official ours.sh --move_lambda 3"),
            v("train.epochs", "100", "CAL silent on epochs; 100 as the cal/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "CAL §4.1: mini-batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "CAL §4.1: SGD"),
            v("train.optimizer.lr", "0.001", "CAL §4.1: initial learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "CAL §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "CAL §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "g-blending/crema-d",
        paper: GBLEND_PAPER,
        notes: "UDI Table 1's protocol for its GBlending row (UDI A.6; UDI reports 71.59% ACC); concat head (the per-modality heads are its weight slices); the paper's 257×299 spectrograms have no prepare recipe, the closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports GBlending on it)"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"g-blending\"", "UDI Table 1: GBlending (Wang et al. 2020)"),
            v("method.mode", "\"online\"", "UDI silent; BalanceBenchmark trainer_config.yaml GBlending method online"),
            v("method.super_epoch", "10", "UDI silent; BalanceBenchmark trainer_config.yaml GBlending super_epoch 10"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "g-blending/kinetics-sounds",
        paper: GBLEND_PAPER,
        notes: "UDI Table 1's protocol for its GBlending row (UDI A.6; UDI reports 68.82% ACC); concat head (the per-modality heads are its weight slices); 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports GBlending on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"g-blending\"", "UDI Table 1: GBlending (Wang et al. 2020)"),
            v("method.mode", "\"online\"", "UDI silent; BalanceBenchmark trainer_config.yaml GBlending method online"),
            v("method.super_epoch", "10", "UDI silent; BalanceBenchmark trainer_config.yaml GBlending super_epoch 10"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "g-blending/ucf101",
        paper: GBLEND_PAPER,
        notes: "UDI Table 1's protocol for its GBlending row (UDI A.6; UDI reports 85.01% ACC); concat head (the per-modality heads are its weight slices); RGB + optical flow, ResNet18 each; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ucf101\"", "the dataset of the preset (UDI Table 1 reports GBlending on it)"),
            v("dataset.frames", "3", "UDI A.6: 3 RGB frames and 3 flow frames uniformly sampled"),
            v("method.name", "\"g-blending\"", "UDI Table 1: GBlending (Wang et al. 2020)"),
            v("method.mode", "\"online\"", "UDI silent; BalanceBenchmark trainer_config.yaml GBlending method online"),
            v("method.super_epoch", "10", "UDI silent; BalanceBenchmark trainer_config.yaml GBlending super_epoch 10"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6: learning rate 1e-3 for Food-101 and UCF-101"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "lfm/crema-d",
        paper: LFM_PAPER,
        notes: "the official code's own protocol (data/crema.json, Crema_epoch.py); prepare with \
                `modbal prepare crema-d --recipe ogm-ge`; --set dataset.root=DIR. UDI Table 1's \
                LFM column on CREMA-D is `--preset udi/crema-d --method lfm`",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (official Crema_epoch.py)"),
            v("dataset.frames", "1", "official crema.json: fps 1"),
            v("method.name", "\"lfm\"", "the paper's method (official Crema_epoch.py)"),
            v("method.strategy", "\"fitted\"", "official Crema_epoch.py: getAlpha_Learnable_Fitted(epoch)"),
            v("method.schedule_epochs", "200", "official crema.json: epoch_dict 200"),
            v("train.epochs", "200", "official crema.json: epoch_dict 200"),
            v("train.batch_size", "64", "official crema.json: batch_size 64"),
            v("train.optimizer.kind", "\"sgd\"", "official Crema_epoch.py: optim.SGD"),
            v("train.optimizer.lr", "0.01", "official crema.json: lr 1e-2"),
            v("train.optimizer.momentum", "0.9", "official crema.json: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "official crema.json: wc 1e-4"),
            v("train.schedule.schedule.kind", "\"step\"", "official Crema_epoch.py: StepLR"),
            v("train.schedule.schedule.step_size", "70", "official crema.json: lr_scheduler.patience 70"),
            v("train.schedule.schedule.gamma", "0.1", "official Crema_epoch.py: StepLR(..., 0.1)"),
        ],
    },
    Preset {
        name: "lfm/kinetics-sounds",
        paper: LFM_PAPER,
        notes: "UDI Table 1's protocol for its LFM row (UDI A.6) with the official LFM \
                defaults (fitted schedule, sum head); 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports LFM on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"lfm\"", "UDI Table 1: LFM (Yang et al. 2024)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (the fitted schedule scales its 200 epochs to them)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "lfm/cgmnist",
        paper: LFM_PAPER,
        notes: "UDI Table 1's protocol for its LFM row (UDI A.6) with the official LFM \
                defaults (fitted schedule, sum head); the four MNIST IDX files; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"cgmnist\"", "the dataset of the preset (UDI Table 1 reports LFM on it)"),
            v("method.name", "\"lfm\"", "UDI Table 1: LFM (Yang et al. 2024)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (the fitted schedule scales its 200 epochs to them)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI silent for CGMNIST (A.6: 1e-2 audio-visual, 1e-3 Food-101/UCF-101); 1e-3 as the udi/cgmnist preset"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "lfm/ucf101",
        paper: LFM_PAPER,
        notes: "UDI Table 1's protocol for its LFM row (UDI A.6) with the official LFM \
                defaults (fitted schedule, sum head); RGB + optical flow, ResNet18 each; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ucf101\"", "the dataset of the preset (UDI Table 1 reports LFM on it)"),
            v("dataset.frames", "3", "UDI A.6: 3 RGB frames and 3 flow frames uniformly sampled"),
            v("method.name", "\"lfm\"", "UDI Table 1: LFM (Yang et al. 2024)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (the fitted schedule scales its 200 epochs to them)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.001", "UDI A.6: learning rate 1e-3 for Food-101 and UCF-101"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "greedy/crema-d",
        paper: GREEDY_PAPER,
        notes: "UDI Table 1's protocol for its Greedy row (UDI A.6; UDI reports ACC 66.48) with the official method defaults (the official code has only ModelNet40); ResNet-18 encoders staged for the MMTM blocks after layer2-4; the paper's 257×299 spectrograms have no prepare recipe, the closest is `modbal prepare crema-d --recipe ogm-ge` (257×188); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (UDI Table 1 reports Greedy on it)"),
            v("dataset.frames", "2", "UDI A.6: 1 fps, uniform selection of 2 frames"),
            v("method.name", "\"greedy\"", "UDI Table 1: Greedy (Wu et al. 2022)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "greedy/kinetics-sounds",
        paper: GREEDY_PAPER,
        notes: "UDI Table 1's protocol for its Greedy row (UDI A.6; UDI reports ACC 66.82; ARM's Table 1: 59.86) with the official method defaults; ResNet-18 encoders staged for the MMTM blocks after layer2-4; the paper uses 257×1004 spectrograms (`modbal prepare kinetics-sounds --recipe ave` writes 257×1004); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (UDI Table 1 reports Greedy on it)"),
            v("dataset.frames", "3", "UDI A.6: 1 fps, uniform sampling of 3 frames per clip"),
            v("method.name", "\"greedy\"", "UDI Table 1: Greedy (Wu et al. 2022)"),
            v("train.epochs", "100", "UDI silent on epochs; 100 as the udi/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "UDI A.6: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "UDI A.6: SGD"),
            v("train.optimizer.lr", "0.01", "UDI A.6: learning rate 1e-2 for CREMA-D and Kinetics-Sounds"),
            v("train.optimizer.momentum", "0.9", "UDI A.6: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "UDI A.6: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "block/crema-d",
        paper: BLOCK_PAPER,
        notes: "CAL Table 1's protocol (CAL §4.1) for its Block row; prepare with `modbal prepare crema-d --recipe ogm-ge`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"crema-d\"", "the dataset of the preset (CAL Table 1 reports Block on it: 61.92%)"),
            v("method.name", "\"block\"", "CAL Table 1: Block [ben2019block]"),
            v("method.mm_dim", "1600", "CAL silent; official Block(mm_dim=1600)"),
            v("method.chunks", "20", "CAL silent; official Block(chunks=20)"),
            v("method.rank", "15", "CAL silent; official Block(rank=15)"),
            v("train.epochs", "100", "CAL silent on epochs; 100 as the cal/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "CAL §4.1: mini-batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "CAL §4.1: SGD"),
            v("train.optimizer.lr", "0.001", "CAL §4.1: initial learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "CAL §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "CAL §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "block/kinetics-sounds",
        paper: BLOCK_PAPER,
        notes: "CAL Table 1's protocol (CAL §4.1) for its Block row; 257×1004 spectrograms: `modbal prepare kinetics-sounds --recipe ave`; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (CAL Table 1 reports Block on it: 66.57%)"),
            v("dataset.frames", "3", "CAL silent; 3 frames of 1 fps, the KS convention of the field (as arm/kinetics-sounds)"),
            v("method.name", "\"block\"", "CAL Table 1: Block [ben2019block]"),
            v("method.mm_dim", "1600", "CAL silent; official Block(mm_dim=1600)"),
            v("method.chunks", "20", "CAL silent; official Block(chunks=20)"),
            v("method.rank", "15", "CAL silent; official Block(rank=15)"),
            v("train.epochs", "100", "CAL silent on epochs; 100 as the cal/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "CAL §4.1: mini-batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "CAL §4.1: SGD"),
            v("train.optimizer.lr", "0.001", "CAL §4.1: initial learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "CAL §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "CAL §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "block/ave",
        paper: BLOCK_PAPER,
        notes: "CAL Table 1's protocol (CAL §4.1) for its Block row; prepare with `modbal prepare ave --recipe ave` (257×1004); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"ave\"", "the dataset of the preset (CAL Table 1 reports Block on it: 67.24%)"),
            v("method.name", "\"block\"", "CAL Table 1: Block [ben2019block]"),
            v("method.mm_dim", "1600", "CAL silent; official Block(mm_dim=1600)"),
            v("method.chunks", "20", "CAL silent; official Block(chunks=20)"),
            v("method.rank", "15", "CAL silent; official Block(rank=15)"),
            v("train.epochs", "100", "CAL silent on epochs; 100 as the cal/* presets (OGM-GE protocol)"),
            v("train.batch_size", "64", "CAL §4.1: mini-batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "CAL §4.1: SGD"),
            v("train.optimizer.lr", "0.001", "CAL §4.1: initial learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "CAL §4.1: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0001", "CAL §4.1: weight decay 1e-4"),
        ],
    },
    Preset {
        name: "film/kinetics-sounds",
        paper: FILM_PAPER,
        notes: "ARM Table 2's protocol (ARM App. B) for its FiLM row; prepare with `modbal \
                prepare kinetics-sounds --recipe fbank` (1024×128, as arm/kinetics-sounds); \
                --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (ARM Table 2 reports FiLM on it: 59.33%)"),
            v("dataset.frames", "3", "ARM silent; 3 frames of 1 fps, the KS convention of the field (as arm/kinetics-sounds)"),
            v("method.name", "\"film\"", "ARM Table 2: FiLM (AAAI 2018)"),
            v("method.condition", "0", "ARM silent; OGM-GE's FiLM(x_film=True), which ARM's code reuses: audio conditions visual"),
            v("train.epochs", "80", "ARM App. B: 80 epochs on KS"),
            v("train.batch_size", "64", "ARM App. B: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "ARM App. B: SGD"),
            v("train.optimizer.lr", "0.001", "ARM App. B: learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "ARM App. B: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0005", "ARM App. B: weight decay 5e-4"),
        ],
    },
    Preset {
        name: "gated/kinetics-sounds",
        paper: GATED_PAPER,
        notes: "ARM Table 2's protocol (ARM App. B) for its BiGated row; prepare with `modbal \
                prepare kinetics-sounds --recipe fbank` (1024×128, as arm/kinetics-sounds); \
                --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (ARM Table 2 reports BiGated on it: 60.79%)"),
            v("dataset.frames", "3", "ARM silent; 3 frames of 1 fps, the KS convention of the field (as arm/kinetics-sounds)"),
            v("method.name", "\"gated\"", "ARM Table 2: BiGated (AAAI 2018)"),
            v("method.gate", "0", "ARM silent; OGM-GE's GatedFusion(x_gate=True): audio gates visual"),
            v("train.epochs", "80", "ARM App. B: 80 epochs on KS"),
            v("train.batch_size", "64", "ARM App. B: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "ARM App. B: SGD"),
            v("train.optimizer.lr", "0.001", "ARM App. B: learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "ARM App. B: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0005", "ARM App. B: weight decay 5e-4"),
        ],
    },
    Preset {
        name: "tmc/mvsa",
        paper: TMC_PAPER,
        notes: "the TMC baseline as QMF's text-image code trains it (train_tmc.py, \
                shells/batch_train_tmc.sh; CAL Table 2 reports TMC 74.87 clean on MVSA-Single); \
                the 40-step gradient accumulation, ReduceLROnPlateau and encoder freezing are \
                not reproduced; --set dataset.root=DIR and a text encoding (dataset.text.*)",
        values: &[
            v("dataset.name", "\"mvsa\"", "the dataset of the preset (CAL Tables 2-3: MVSA-Single)"),
            v("method.name", "\"tmc\"", "CAL Tables 2-3: TMC (Han et al.)"),
            v("method.annealing_epochs", "10", "QMF's train_tmc.py: --annealing_epoch 10"),
            v("method.epoch_count", "\"from_zero\"", "QMF's train_tmc.py counts epochs from 0"),
            v("train.epochs", "100", "QMF's shells/batch_train_tmc.sh: --max_epochs 100"),
            v("train.batch_size", "16", "QMF's shells/batch_train_tmc.sh: --batch_sz 16"),
            v("train.optimizer.kind", "\"adamw\"", "QMF's train_tmc.py: optim.Adam (tmc is not in its BERT-optimizer list; AdamW with weight decay 0)"),
            v("train.optimizer.lr", "5e-5", "QMF's shells/batch_train_tmc.sh: --lr 5e-05"),
            v("train.optimizer.weight_decay", "0.0", "QMF's train_tmc.py: Adam without weight decay"),
        ],
    },
    Preset {
        name: "tmc/nyu-depth",
        paper: TMC_PAPER,
        notes: "the TPAMI folder's train_TMC_nyud2.py protocol (CAL Table 2 reports TMC 71.01 clean); \
                the official 500 epochs with ReduceLROnPlateau(0.3, patience 10), early stopping \
                (patience 20) and 3-step gradient accumulation have no modbal equivalent: \
                constant lr, batch 32; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"nyu-depth\"", "the dataset of the preset (CAL Tables 2-3 report TMC on it)"),
            v("method.name", "\"tmc\"", "CAL Tables 2-3: TMC (Han et al.)"),
            v("method.annealing_epochs", "10", "official train_TMC_nyud2.py: --annealing_epoch 10"),
            v("method.epoch_count", "\"from_zero\"", "official train_TMC_nyud2.py: i_epoch counts from 0"),
            v("train.epochs", "500", "official train_TMC_nyud2.py: --max_epochs 500"),
            v("train.batch_size", "32", "official train_TMC_nyud2.py: --batch_sz 32"),
            v("train.optimizer.kind", "\"adamw\"", "official train_TMC_nyud2.py: Adam (coupled L2); modbal has no coupled-L2 Adam, AdamW is the closest"),
            v("train.optimizer.lr", "0.0001", "official train_TMC_nyud2.py: --lr 1e-4"),
            v("train.optimizer.weight_decay", "0.00001", "official train_TMC_nyud2.py: weight_decay 1e-5"),
        ],
    },
    Preset {
        name: "qmf/mvsa",
        paper: QMF_PAPER,
        notes: "QMF's text-image protocol at the paper's time (commit 8c16860, shells and \
                train_qmf.py; CAL Table 2 reports QMF 78.07 clean on MVSA-Single); the official \
                BERT text encoder, gradient accumulation, ReduceLROnPlateau and early stopping \
                are not reproduced (choose the text encoding and its encoder yourself); \
                --set dataset.root=DIR and a text encoding (dataset.text.*)",
        values: &[
            v("dataset.name", "\"mvsa\"", "the dataset of the preset (CAL Tables 2-3: MVSA-Single)"),
            v("method.name", "\"qmf\"", "CAL Tables 2-3: QMF (Zhang et al.)"),
            v("train.epochs", "100", "QMF 8c16860 shells: --max_epochs 100"),
            v("train.batch_size", "16", "QMF 8c16860 shells: --batch_sz 16"),
            v("train.optimizer.kind", "\"adamw\"", "QMF 8c16860 train_qmf.py: optim.Adam for the late-fusion model (AdamW with weight decay 0)"),
            v("train.optimizer.lr", "5e-5", "QMF 8c16860 shells: --lr 5e-05"),
            v("train.optimizer.weight_decay", "0.0", "QMF 8c16860 train_qmf.py: Adam without weight decay"),
        ],
    },
    Preset {
        name: "qmf/nyu-depth",
        paper: QMF_PAPER,
        notes: "the official RGB-D train_QMF_nyud2.py protocol (CAL Table 2 reports QMF 70.06 clean); \
                the official 500 epochs with ReduceLROnPlateau(0.3, patience 10), early stopping \
                (patience 20) and 3-step gradient accumulation have no modbal equivalent: \
                constant lr; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"nyu-depth\"", "the dataset of the preset (CAL Tables 2-3 report QMF on it)"),
            v("method.name", "\"qmf\"", "CAL Tables 2-3: QMF (Zhang et al.)"),
            v("method.lambda", "0.1", "official train_QMF_nyud2.py: --lamb 0.1"),
            v("method.detach_weights", "false", "official RGB-D models/QMF.py: depth_out*depth_conf + rgb_out*rgb_conf, no detach"),
            v("method.history_update", "\"after\"", "official train_QMF_nyud2.py: rank_loss before correctness_update"),
            v("train.epochs", "500", "official train_QMF_nyud2.py: --max_epochs 500"),
            v("train.batch_size", "256", "official train_QMF_nyud2.py: --batch_sz 256"),
            v("train.optimizer.kind", "\"adamw\"", "official train_QMF_nyud2.py: Adam (coupled L2); modbal has no coupled-L2 Adam, AdamW is the closest"),
            v("train.optimizer.lr", "0.0001", "official train_QMF_nyud2.py: --lr 1e-4"),
            v("train.optimizer.weight_decay", "0.00001", "official train_QMF_nyud2.py: weight_decay 1e-5"),
        ],
    },
    Preset {
        name: "qmf/kinetics-sounds",
        paper: QMF_PAPER,
        notes: "ARM Table 1-2's protocol for its QMF row (ARM App. B; ARM reports 63.78) with QMF's \
                official text-image defaults; prepare with `modbal prepare kinetics-sounds --recipe \
                fbank` as the arm/kinetics-sounds preset; --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"kinetics-sounds\"", "the dataset of the preset (ARM Tables 1-2 report QMF on it)"),
            v("dataset.frames", "3", "as arm/kinetics-sounds: 3 frames of 1 fps, the KS convention of the field"),
            v("method.name", "\"qmf\"", "ARM Tables 1-2: QMF (Zhang et al. 2023)"),
            v("train.epochs", "80", "ARM App. B: 80 epochs on KS"),
            v("train.batch_size", "64", "ARM App. B: batch size 64"),
            v("train.optimizer.kind", "\"sgd\"", "ARM App. B: SGD"),
            v("train.optimizer.lr", "0.001", "ARM App. B: learning rate 1e-3"),
            v("train.optimizer.momentum", "0.9", "ARM App. B: momentum 0.9"),
            v("train.optimizer.weight_decay", "0.0005", "ARM App. B: weight decay 5e-4"),
        ],
    },
    Preset {
        name: "eau/mvsa",
        paper: EAU_PAPER,
        notes: "CAL Tables 2-3 report EAU on MVSA-Single (clean 79.15); the official URMF train.py protocol with the method defaults; the official code accumulates gradients over 40 batches of 8 and halves the lr on a validation plateau (patience 2), which modbal does not do (one step per batch, constant lr); --set dataset.root=DIR and a text encoding (dataset.text.*)",
        values: &[
            v("dataset.name", "\"mvsa\"", "the dataset of the preset (CAL Tables 2-3: MVSA-Single)"),
            v("method.name", "\"eau\"", "CAL Tables 2-3: EAU (Gao et al. 2024)"),
            v("train.epochs", "100", "official train.py: --max_epochs 100"),
            v("train.batch_size", "8", "official train.py: --batch_sz 8"),
            v("train.optimizer.kind", "\"adamw\"", "official train.py: optim.Adam (AdamW with weight decay 0)"),
            v("train.optimizer.lr", "5e-5", "official train.py: --lr 5e-05"),
            v("train.optimizer.weight_decay", "0.0", "official train.py: Adam without weight decay"),
        ],
    },
    Preset {
        name: "eau/nyu-depth",
        paper: EAU_PAPER,
        notes: "CAL Tables 2-3 report EAU on NYU Depth v2 (clean 72.05); EAU's NYU code is unreleased (the official README: other datasets after review), so the MVSA protocol of the official train.py is kept (paper silent); --set dataset.root=DIR",
        values: &[
            v("dataset.name", "\"nyu-depth\"", "the dataset of the preset (CAL Tables 2-3: NYU Depth v2)"),
            v("method.name", "\"eau\"", "CAL Tables 2-3: EAU (Gao et al. 2024)"),
            v("train.epochs", "100", "official train.py (MVSA): --max_epochs 100; NYU code unreleased"),
            v("train.batch_size", "8", "official train.py (MVSA): --batch_sz 8; NYU code unreleased"),
            v("train.optimizer.kind", "\"adamw\"", "official train.py: optim.Adam (AdamW with weight decay 0)"),
            v("train.optimizer.lr", "5e-5", "official train.py (MVSA): --lr 5e-05; NYU code unreleased"),
            v("train.optimizer.weight_decay", "0.0", "official train.py: Adam without weight decay"),
        ],
    },
];

/// The built-in preset called `name` (errors list the valid names; a [`crate::Registry`] also has
/// the presets registered with it: [`crate::Registry::preset`]).
pub fn find(name: &str) -> Result<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ModbalError::Unknown {
            kind: "preset",
            name: name.into(),
            valid: PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl Preset {
    /// The preset's method (its `method.name` value, unquoted).
    pub fn method(&self) -> Option<&'static str> {
        self.value("method.name")
    }

    /// The preset's dataset (its `dataset.name` value, unquoted).
    pub fn dataset(&self) -> Option<&'static str> {
        self.value("dataset.name")
    }

    fn value(&self, key: &str) -> Option<&'static str> {
        self.values
            .iter()
            .find(|x| x.key == key)
            .map(|x| x.value.trim_matches('"'))
    }

    /// A human-readable listing: every value with its source.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}\n  paper: {}\n  notes: {}\n",
            self.name, self.paper, self.notes
        );
        let w = self
            .values
            .iter()
            .map(|x| x.key.len() + x.value.len())
            .max()
            .unwrap_or(0);
        for x in self.values {
            let kv = format!("{} = {}", x.key, x.value);
            s.push_str(&format!("  {kv:<width$}  # {}\n", x.source, width = w + 3));
        }
        s
    }
}
