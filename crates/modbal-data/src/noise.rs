//! Input corruption for the robustness protocol (CAL §4.3, Tables 2-3, after QMF's protocol):
//! salt-and-pepper or Gaussian noise on chosen modalities of the test split ("generalisation")
//! or of the training and test splits ("learning ability").
//!
//! Two scales give ε its meaning (`noise.scale`, CLI `--noise-scale`), documented side by side
//! below and in `docs/robustness.md`:
//!
//! * `"modbal"` (default): every sample corrupted, ε a per-element probability (salt-pepper) or
//!   a std in units of the modality's σ (Gaussian) — one ε means the same thing on a
//!   spectrogram, an image or a feature vector.
//! * `"qmf"`: QMF's code (Zhang et al., ICML 2023, `QingyangZhang/QMF`), which CAL Tables 2-3
//!   follow, so that `--noise salt-pepper --noise-eps 5` is the tables' ε = 5: half the samples
//!   corrupted, ε in grey levels and image counts, and the text masked word by word.
//!
//! # Conventions of the default scale (`"modbal"`)
//!
//! For a corrupted modality m with clean-training statistics `lo_m = min`, `hi_m = max` and
//! `σ_m = std` (over every element of the training split's samples of m; see
//! [`ModalityStats::of`]):
//!
//! * **salt-pepper**, `0 ≤ ε ≤ 1`: each element independently, with probability ε/2 set to `lo_m`
//!   (pepper) and with probability ε/2 to `hi_m` (salt), else kept — the per-element *density*
//!   convention of MATLAB's `imnoise(I, 'salt & pepper', d)` and of QMF's `AddSaltPepperNoise`
//!   (`density`: d/2 → 0, d/2 → 255). The modality's own range plays the part of an 8-bit
//!   image's 0 and 255, so the convention works for spectrograms and feature vectors too. QMF
//!   draws one mask per pixel and repeats it over the colour channels; modbal draws per element.
//! * **gaussian**, `ε ≥ 0`: `x ← x + ε·σ_m·z`, `z ~ N(0, 1)` per element, not clipped. ε is in units
//!   of the modality's standard deviation, so one ε means the same signal-to-noise ratio on
//!   modalities of any scale. (QMF adds N(0, (10ε)²) grey levels on 0-255 and clips at 255.)
//!
//! Every sample is corrupted (QMF applies its noise to a random half of the images). With
//! `ε = 0` nothing changes, bit for bit.
//!
//! Text modalities (those whose dataset gives a [`crate::TextSource`], e.g. MVSA's token ids)
//! are left alone on this scale: adding numbers to token ids means nothing. With
//! `modalities = []` they are skipped; naming one is an error.
//!
//! **CAL's ε = 5 / ε = 10 are not these numbers**: they are the `"qmf"` scale's. With image
//! statistics like MVSA's normalisation constants (σ ≈ 0.12-0.14 of the range, 31-37 grey
//! levels), QMF's Gaussian ε = 5 / 10 is about this scale's ε ≈ 1.5 / 3, on the corrupted half
//! of the images.
//!
//! # The QMF scale (`"qmf"`)
//!
//! QMF's test-time transforms (paper-era code, commit `8c16860`, 2023,
//! `src/data/helpers.py` and `src/data/dataset.py`; the same code moved under
//! `text-image-classification/` in 2024) act on 8-bit images before normalisation. Here, with
//! `lo_c`, `hi_c` the clean training min and max of channel `c` of the modality (axis 0 of a
//! sample of rank ≥ 3, e.g. the RGB axis of `[3, H, W]`; one channel otherwise) and one grey
//! level `g_c = (hi_c − lo_c)/255` (exactly 1/255 of the pixel range when the data span it, as
//! ImageNet-normalised images do), each corrupted sample's modality:
//!
//! * is corrupted at all with probability [`QMF_APPLY_PROB`] = 0.5 (QMF's
//!   `RandomApply(..., p=0.5)`), independently per modality (NYUD2's `test.py` draws RGB and
//!   depth separately);
//! * **salt-pepper**: then, with probability `min(ε/10, 1)` (`AddSaltPepperNoise(density=0.1,
//!   p=ε/10)`; the 2025 rewrite at QMF's HEAD uses `ε/100`: `qmf_release = "2025"`), each
//!   position (pixel) is set on every channel to `lo_c` with probability 0.05 and to `hi_c` with
//!   probability 0.05 (density [`QMF_SP_DENSITY`] = 0.1: QMF's 0 and 255). So ε sets how many
//!   images are hit — ε = 5: 25 %, ε = 10: 50 % — not how hard;
//! * **gaussian**: `x_c ← clip(x_c + k·ε·g_c·z, lo_c, hi_c)` with one `z ~ N(0, 1)` per
//!   position shared by the channels (QMF draws an `(h, w, 1)` field and repeats it), `k =
//!   qmf_grey_per_eps`: 10 in QMF's MVSA / Food-101 code (std 10ε grey levels: ε = 5 → 50), 1 in
//!   its NYUD2 `test.py` (std ε grey levels);
//! * **text** (a modality with a [`crate::TextSource`]), whatever the kind: with probability 0.5
//!   the sample's text is masked: each space-separated word replaced by `_` with probability
//!   `min(0.1·ε, 1)` (ε = 10: every word), then encoded again (QMF's `JsonlDataset`).
//!
//! Where QMF's code differs and modbal does not follow it: QMF's Gaussian transform calls
//! `np.random.seed(0)` on every image, so every corrupted image of a size gets the *same* noise
//! field (here every sample has its own, from the sample seed below); QMF clips at 255 only and
//! casts negative values to `uint8` without clipping (a wrap-around on common platforms; here
//! both ends are clipped) and truncates to integers (here values stay continuous); QMF corrupts
//! after resizing to 256 and before the centre crop (here the loader's output is corrupted).
//! QMF's code has no train-time noise (CAL Table 3's train+test protocol is CAL's own) and no
//! salt-and-pepper for NYUD2. Details and line references: `docs/robustness.md`.
//!
//! # Determinism
//!
//! The noise of sample `i` of split `s`, modality `m` comes from its own ChaCha8 generator
//! ([`SeededRng`], never candle's RNG) seeded by `(seed, s, m, i)`: the corrupted test set is the
//! same for every method and every run seed given the noise `seed`, does not depend on batch
//! order or on which other modalities are loaded, and a training sample gets the same corruption
//! in every epoch (a fixed noisy copy of the data; QMF redraws per access).
//!
//! # Splits
//!
//! `on = "test"` (default) corrupts the test split only; `"train+test"` also the training split.
//! The validation split, on which models are selected, stays clean unless asked for with
//! `"val+test"` or `"train+val+test"`. The statistics always come from the clean training split.

use crate::dataset::{Dataset, Sample, Splits};
use modbal_core::{ModbalError, Result};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kind of corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseKind {
    /// Each element to the modality's min or max with probability ε/2 each.
    #[serde(rename = "salt-pepper")]
    SaltPepper,
    /// Additive N(0, (ε·σ_m)²) per element.
    #[serde(rename = "gaussian")]
    Gaussian,
}

/// Names accepted for [`NoiseKind`] (CLI `--noise`).
pub const NOISE_KINDS: &[&str] = &["salt-pepper", "gaussian"];

impl NoiseKind {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "salt-pepper" => Ok(Self::SaltPepper),
            "gaussian" => Ok(Self::Gaussian),
            _ => Err(ModbalError::Unknown {
                kind: "noise kind",
                name: name.into(),
                valid: NOISE_KINDS.join(", "),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::SaltPepper => "salt-pepper",
            Self::Gaussian => "gaussian",
        }
    }
}

/// Which splits are corrupted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseOn {
    /// The test split only (CAL Table 2, "generalisation").
    #[default]
    #[serde(rename = "test")]
    Test,
    /// Training and test splits (CAL Table 3, "learning ability").
    #[serde(rename = "train+test")]
    TrainTest,
    /// Validation and test splits (model selection on noisy data).
    #[serde(rename = "val+test")]
    ValTest,
    /// Every split.
    #[serde(rename = "train+val+test")]
    All,
}

/// Names accepted for [`NoiseOn`] (CLI `--noise-on`).
pub const NOISE_ON: &[&str] = &["test", "train+test", "val+test", "train+val+test"];

impl NoiseOn {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "test" => Ok(Self::Test),
            "train+test" => Ok(Self::TrainTest),
            "val+test" => Ok(Self::ValTest),
            "train+val+test" => Ok(Self::All),
            _ => Err(ModbalError::Unknown {
                kind: "noise split set (--noise-on)",
                name: name.into(),
                valid: NOISE_ON.join(", "),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::TrainTest => "train+test",
            Self::ValTest => "val+test",
            Self::All => "train+val+test",
        }
    }

    /// Whether split `split` (`"train"`, `"val"`, `"test"`) is corrupted.
    pub fn covers(&self, split: &str) -> bool {
        match split {
            "test" => true,
            "train" => matches!(self, Self::TrainTest | Self::All),
            "val" => matches!(self, Self::ValTest | Self::All),
            _ => false,
        }
    }
}

/// How ε is read (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseScale {
    /// Every sample; salt-pepper ε a per-element probability, Gaussian ε in units of σ_m.
    #[default]
    #[serde(rename = "modbal")]
    Modbal,
    /// QMF's code: half the samples, ε in grey levels / corrupted-image counts, text masked.
    #[serde(rename = "qmf")]
    Qmf,
}

/// Names accepted for [`NoiseScale`] (CLI `--noise-scale`).
pub const NOISE_SCALES: &[&str] = &["modbal", "qmf"];

impl NoiseScale {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "modbal" => Ok(Self::Modbal),
            "qmf" => Ok(Self::Qmf),
            _ => Err(ModbalError::Unknown {
                kind: "noise scale (--noise-scale)",
                name: name.into(),
                valid: NOISE_SCALES.join(", "),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Modbal => "modbal",
            Self::Qmf => "qmf",
        }
    }
}

/// Which release of QMF's code defines the salt-and-pepper image probability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QmfRelease {
    /// The code of the paper's time (commit 8c16860, 2023): `p = ε/10`.
    #[default]
    #[serde(rename = "2023")]
    Paper,
    /// The June 2025 rewrite (QMF's HEAD): `p = ε/100`.
    #[serde(rename = "2025")]
    Rewrite,
}

/// QMF scale: probability that a sample's modality is corrupted (QMF `RandomApply(p=0.5)`).
pub const QMF_APPLY_PROB: f64 = 0.5;
/// QMF scale: the salt-and-pepper density of a corrupted image (`AddSaltPepperNoise(density=0.1)`).
pub const QMF_SP_DENSITY: f64 = 0.1;
/// QMF scale: the probability that a sample's text is masked (QMF `JsonlDataset`).
pub const QMF_TEXT_MASK_PROB: f64 = 0.5;
/// QMF scale: per-ε probability that a word of a masked text becomes `_` (`0.1·ε`).
pub const QMF_WORD_MASK_PER_EPS: f64 = 0.1;
/// QMF scale: Gaussian std per ε in grey levels in QMF's MVSA / Food-101 code (`10·ε`).
pub const QMF_GREY_PER_EPS: f64 = 10.0;

fn default_seed() -> u64 {
    0
}

/// The `[noise]` table of a run configuration.
///
/// ```toml
/// [noise]
/// kind = "salt-pepper"    # or "gaussian"
/// eps = 0.1               # salt-pepper: per-element probability in [0, 1]; gaussian: std in σ_m
/// on = "test"             # "train+test", "val+test", "train+val+test"
/// modalities = []         # [] = every modality of the dataset
/// seed = 0                # noise seed (independent of the run seed)
/// scale = "modbal"        # or "qmf": ε as in QMF's code / CAL Tables 2-3 (then eps = 5, 10)
/// # qmf_release = "2023"  # qmf scale only: salt-pepper image probability ε/10 ("2025": ε/100)
/// # qmf_grey_per_eps = 10 # qmf scale only: Gaussian std in grey levels per ε (NYUD2 code: 1)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    pub kind: NoiseKind,
    pub eps: f64,
    #[serde(default)]
    pub on: NoiseOn,
    /// The corrupted modalities; empty: all of the dataset's.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Seed of the corruption (the same for every method and run seed).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How ε is read. Default: [`NoiseScale::Modbal`].
    #[serde(default)]
    pub scale: NoiseScale,
    /// `qmf` scale only: the release of QMF's code for salt-and-pepper (default "2023").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmf_release: Option<QmfRelease>,
    /// `qmf` scale only: Gaussian std in grey levels per unit of ε (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmf_grey_per_eps: Option<f64>,
}

impl NoiseConfig {
    pub fn new(kind: NoiseKind, eps: f64, on: NoiseOn) -> Self {
        Self {
            kind,
            eps,
            on,
            modalities: Vec::new(),
            seed: 0,
            scale: NoiseScale::Modbal,
            qmf_release: None,
            qmf_grey_per_eps: None,
        }
    }

    /// The same corruption on QMF's scale ([`NoiseScale::Qmf`], its defaults).
    pub fn qmf(kind: NoiseKind, eps: f64, on: NoiseOn) -> Self {
        Self {
            scale: NoiseScale::Qmf,
            ..Self::new(kind, eps, on)
        }
    }

    /// A short tag for run names: `gaussian0.5-test`, `salt-pepper0.1-train-test`,
    /// `qmf-salt-pepper5-test`.
    pub fn tag(&self) -> String {
        let scale = match self.scale {
            NoiseScale::Modbal => "",
            NoiseScale::Qmf => "qmf-",
        };
        let mut t = format!("{scale}{}{}-{}", self.kind.name(), self.eps, self.on.name());
        t = t.replace('+', "-");
        if !self.modalities.is_empty() {
            t.push('-');
            t.push_str(&self.modalities.join("-"));
        }
        t
    }

    /// Checks ε and the modality list (errors name the key).
    pub fn validate(&self) -> Result<()> {
        let e = self.eps;
        if !e.is_finite() || e < 0.0 {
            return Err(ModbalError::Config(format!(
                "noise.eps must be finite and >= 0, got {e}"
            )));
        }
        match self.scale {
            NoiseScale::Modbal => {
                if self.kind == NoiseKind::SaltPepper && e > 1.0 {
                    return Err(ModbalError::Config(format!(
                        "noise.eps is a per-element probability for salt-pepper noise and must \
                         be in [0, 1], got {e} (CAL's ε = 5 / 10 are QMF's scale: \
                         noise.scale = \"qmf\", --noise-scale qmf)"
                    )));
                }
                for (key, given) in [
                    ("qmf_release", self.qmf_release.is_some()),
                    ("qmf_grey_per_eps", self.qmf_grey_per_eps.is_some()),
                ] {
                    if given {
                        return Err(ModbalError::Config(format!(
                            "noise.{key} is an option of noise.scale = \"qmf\" only"
                        )));
                    }
                }
            }
            NoiseScale::Qmf => {
                if let Some(k) = self.qmf_grey_per_eps {
                    if !k.is_finite() || k <= 0.0 {
                        return Err(ModbalError::Config(format!(
                            "noise.qmf_grey_per_eps must be finite and > 0, got {k}"
                        )));
                    }
                }
            }
        }
        for (i, m) in self.modalities.iter().enumerate() {
            if m.is_empty() || self.modalities[..i].contains(m) {
                return Err(ModbalError::Config(format!(
                    "noise.modalities = {:?}: names must be non-empty and distinct",
                    self.modalities
                )));
            }
        }
        Ok(())
    }

    /// The corrupted modalities among `available` (all when none are named); unknown names are
    /// an error listing the valid ones.
    pub fn targets(&self, available: &[String]) -> Result<Vec<String>> {
        if self.modalities.is_empty() {
            return Ok(available.to_vec());
        }
        for m in &self.modalities {
            if !available.contains(m) {
                return Err(ModbalError::Unknown {
                    kind: "modality (noise.modalities / --noise-modality)",
                    name: m.clone(),
                    valid: available.join(", "),
                });
            }
        }
        Ok(self.modalities.clone())
    }

    /// [`NoiseConfig::targets`] for a dataset: on the `modbal` scale text modalities (with a
    /// [`crate::TextSource`]) are skipped when none are named and refused when named.
    fn dataset_targets(&self, train: &dyn Dataset) -> Result<Vec<String>> {
        let available = train.modalities();
        let named = self.targets(available)?;
        if self.scale == NoiseScale::Qmf {
            return Ok(named);
        }
        let is_text = |m: &String| {
            available
                .iter()
                .position(|a| a == m)
                .is_some_and(|i| train.text_source(i).is_some())
        };
        if !self.modalities.is_empty() {
            if let Some(m) = named.iter().find(|m| is_text(m)) {
                return Err(ModbalError::Config(format!(
                    "noise.modalities: {m:?} is a text modality; salt-pepper and gaussian noise on \
                     the \"modbal\" scale act on numbers, not words. Use noise.scale = \"qmf\" \
                     (--noise-scale qmf), which masks words as QMF does, or name other modalities"
                )));
            }
            return Ok(named);
        }
        let dense: Vec<String> = named.into_iter().filter(|m| !is_text(m)).collect();
        if dense.is_empty() {
            return Err(ModbalError::Config(format!(
                "noise: every modality of the dataset ({}) is text; the \"modbal\" scale does \
                 not corrupt text (noise.scale = \"qmf\" masks words)",
                available.join(", ")
            )));
        }
        Ok(dense)
    }

    /// The splits with the configured corruption: test (and train / val per `on`) wrapped in
    /// [`NoisyDataset`]s, statistics from the clean training split.
    pub fn apply(&self, splits: &Splits) -> Result<Splits> {
        self.validate()?;
        let targets = self.dataset_targets(splits.train.as_ref())?;
        let stats = ModalityStats::of(splits.train.as_ref())?;
        let wrap = |ds: &Arc<dyn Dataset>, split: &str| -> Arc<dyn Dataset> {
            if self.on.covers(split) {
                Arc::new(NoisyDataset::new(
                    ds.clone(),
                    self,
                    &targets,
                    &stats,
                    split_tag(split),
                ))
            } else {
                ds.clone()
            }
        };
        Ok(Splits {
            train: wrap(&splits.train, "train"),
            val: wrap(&splits.val, "val"),
            test: wrap(&splits.test, "test"),
        })
    }
}

fn split_tag(split: &str) -> u64 {
    match split {
        "train" => 0,
        "val" => 1,
        _ => 2,
    }
}

/// Clean statistics of one modality over the training split.
#[derive(Clone, Debug, PartialEq)]
pub struct ModalityStats {
    pub min: f32,
    pub max: f32,
    /// Population standard deviation over every element.
    pub std: f64,
    /// Per channel (axis 0 of a sample of rank ≥ 3, else one channel): min and max (the QMF
    /// scale's pepper and salt values, and its grey level `(max − min)/255`).
    pub channel_min: Vec<f32>,
    pub channel_max: Vec<f32>,
}

/// The channels of a sample of shape `shape` on the QMF scale: axis 0 of a sample of rank ≥ 3
/// (`[C, H, W]`, `[C, T, H, W]`, a spectrogram's `[1, F, T]`), else one channel.
pub fn channels(shape: &[usize]) -> usize {
    if shape.len() >= 3 {
        shape[0].max(1)
    } else {
        1
    }
}

/// At most this many training samples (evenly spaced) enter [`ModalityStats::of`].
pub const STATS_MAX_SAMPLES: usize = 4096;

impl ModalityStats {
    /// Per-modality min, max and std over the elements of the training samples `⌊k·n/s⌋`,
    /// `k < s = min(n, STATS_MAX_SAMPLES)` (every sample of the built-in benchmarks).
    pub fn of(train: &dyn Dataset) -> Result<Vec<Self>> {
        let n = train.len();
        let s = n.min(STATS_MAX_SAMPLES);
        let m = train.modalities().len();
        let mut lo = vec![f32::INFINITY; m];
        let mut hi = vec![f32::NEG_INFINITY; m];
        let mut sum = vec![0.0f64; m];
        let mut sq = vec![0.0f64; m];
        let mut count = vec![0usize; m];
        let chans: Vec<usize> = train.input_shapes().iter().map(|s| channels(s)).collect();
        let mut ch_lo: Vec<Vec<f32>> = chans.iter().map(|&c| vec![f32::INFINITY; c]).collect();
        let mut ch_hi: Vec<Vec<f32>> = chans.iter().map(|&c| vec![f32::NEG_INFINITY; c]).collect();
        for k in 0..s {
            let i = k * n / s;
            let sample = train.get(i)?;
            for (j, v) in sample.inputs.iter().enumerate() {
                let per = v.len() / chans[j];
                for (e, &x) in v.iter().enumerate() {
                    lo[j] = lo[j].min(x);
                    hi[j] = hi[j].max(x);
                    sum[j] += x as f64;
                    sq[j] += (x as f64) * (x as f64);
                    let c = (e / per.max(1)).min(chans[j] - 1);
                    ch_lo[j][c] = ch_lo[j][c].min(x);
                    ch_hi[j][c] = ch_hi[j][c].max(x);
                }
                count[j] += v.len();
            }
        }
        (0..m)
            .map(|j| {
                if count[j] == 0 {
                    return Err(ModbalError::Data(format!(
                        "noise: modality {:?} has no training values to take statistics from",
                        train.modalities()[j]
                    )));
                }
                let c = count[j] as f64;
                let mean = sum[j] / c;
                Ok(Self {
                    min: lo[j],
                    max: hi[j],
                    std: (sq[j] / c - mean * mean).max(0.0).sqrt(),
                    channel_min: ch_lo[j].clone(),
                    channel_max: ch_hi[j].clone(),
                })
            })
            .collect()
    }
}

/// FNV-1a of a name: a hash fixed by its definition (std's hasher may change between releases).
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the noise of sample `index` of split `split` (0 train, 1 val, 2 test), modality
/// `modality`, for noise seed `seed`.
pub fn sample_seed(seed: u64, split: u64, modality: &str, index: usize) -> u64 {
    let mut z = mix(seed ^ 0x6e6f_6973_655f_7631); // "noise_v1"
    z = mix(z ^ split.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = mix(z ^ fnv1a(modality));
    mix(z ^ (index as u64))
}

/// Corrupt `values` in place with `kind` at `eps`, drawing from `rng` (one uniform or one normal
/// per element, whatever ε is, so ε only scales or thresholds the same draws).
pub fn corrupt(
    values: &mut [f32],
    kind: NoiseKind,
    eps: f64,
    stats: &ModalityStats,
    rng: &mut SeededRng,
) {
    match kind {
        NoiseKind::SaltPepper => {
            for x in values.iter_mut() {
                let u = rng.uniform();
                if u < eps / 2.0 {
                    *x = stats.min;
                } else if u < eps {
                    *x = stats.max;
                }
            }
        }
        NoiseKind::Gaussian => {
            let scale = eps * stats.std;
            for x in values.iter_mut() {
                *x += (scale * rng.normal()) as f32;
            }
        }
    }
}

/// The QMF scale's options, resolved (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QmfParams {
    pub release: QmfRelease,
    /// Gaussian std in grey levels per unit of ε.
    pub grey_per_eps: f64,
}

impl QmfParams {
    fn of(cfg: &NoiseConfig) -> Self {
        Self {
            release: cfg.qmf_release.unwrap_or_default(),
            grey_per_eps: cfg.qmf_grey_per_eps.unwrap_or(QMF_GREY_PER_EPS),
        }
    }

    /// Probability that a sample's modality is corrupted under `kind` at `eps`.
    pub fn image_prob(&self, kind: NoiseKind, eps: f64) -> f64 {
        match kind {
            NoiseKind::Gaussian => QMF_APPLY_PROB,
            NoiseKind::SaltPepper => {
                let p = match self.release {
                    QmfRelease::Paper => eps / 10.0,
                    QmfRelease::Rewrite => eps / 100.0,
                };
                QMF_APPLY_PROB * p.min(1.0)
            }
        }
    }
}

/// Corrupt one sample's dense modality (`values`, per-sample shape `shape`) on the QMF scale,
/// drawing from `rng`: the apply draw, for salt-pepper the inner `p` draw, then one uniform
/// (salt-pepper) or one normal (Gaussian) per position, shared by the channels. Returns whether
/// the sample was corrupted.
pub fn corrupt_qmf(
    values: &mut [f32],
    shape: &[usize],
    kind: NoiseKind,
    eps: f64,
    stats: &ModalityStats,
    qmf: &QmfParams,
    rng: &mut SeededRng,
) -> bool {
    if rng.uniform() >= QMF_APPLY_PROB {
        return false;
    }
    let c = channels(shape).min(values.len().max(1));
    let per = values.len() / c;
    match kind {
        NoiseKind::SaltPepper => {
            let inner = match qmf.release {
                QmfRelease::Paper => eps / 10.0,
                QmfRelease::Rewrite => eps / 100.0,
            };
            if rng.uniform() >= inner {
                return false;
            }
            for p in 0..per {
                let u = rng.uniform();
                let to = if u < QMF_SP_DENSITY / 2.0 {
                    &stats.channel_min
                } else if u < QMF_SP_DENSITY {
                    &stats.channel_max
                } else {
                    continue;
                };
                for ch in 0..c {
                    values[ch * per + p] = to[ch];
                }
            }
        }
        NoiseKind::Gaussian => {
            let std = qmf.grey_per_eps * eps / 255.0;
            for p in 0..per {
                let z = rng.normal();
                for ch in 0..c {
                    let (lo, hi) = (stats.channel_min[ch], stats.channel_max[ch]);
                    let x = &mut values[ch * per + p];
                    let noisy = *x as f64 + std * (hi - lo) as f64 * z;
                    *x = (noisy as f32).clamp(lo, hi);
                }
            }
        }
    }
    true
}

/// QMF's text masking: with probability [`QMF_TEXT_MASK_PROB`] every space-separated word of
/// `text` becomes `_` with probability `min(0.1·ε, 1)`; `None` when the sample is not masked.
pub fn mask_words(text: &str, eps: f64, rng: &mut SeededRng) -> Option<String> {
    if rng.uniform() >= QMF_TEXT_MASK_PROB {
        return None;
    }
    let p = (QMF_WORD_MASK_PER_EPS * eps).min(1.0);
    let words: Vec<&str> = text
        .split(' ')
        .map(|w| if rng.uniform() < p { "_" } else { w })
        .collect();
    Some(words.join(" "))
}

/// What happens to one modality of a [`NoisyDataset`].
#[derive(Clone)]
enum Target {
    Clean,
    Dense(ModalityStats),
    Text(Arc<dyn crate::TextSource>),
}

/// A split whose chosen modalities are corrupted on access (see the [module docs](self)).
pub struct NoisyDataset {
    inner: Arc<dyn Dataset>,
    kind: NoiseKind,
    eps: f64,
    seed: u64,
    split: u64,
    /// `Some` on the QMF scale.
    qmf: Option<QmfParams>,
    /// Per modality of `inner`.
    targets: Vec<Target>,
}

impl NoisyDataset {
    /// `targets` must be modalities of `inner`; `stats` are per modality of `inner`, in order.
    /// On the QMF scale a target with a [`crate::TextSource`] is masked word by word.
    pub fn new(
        inner: Arc<dyn Dataset>,
        cfg: &NoiseConfig,
        targets: &[String],
        stats: &[ModalityStats],
        split: u64,
    ) -> Self {
        let qmf = (cfg.scale == NoiseScale::Qmf).then(|| QmfParams::of(cfg));
        let targets = inner
            .modalities()
            .iter()
            .zip(stats)
            .enumerate()
            .map(|(i, (m, s))| {
                if !targets.contains(m) {
                    return Target::Clean;
                }
                match (qmf.is_some(), inner.text_source(i)) {
                    (true, Some(src)) => Target::Text(src),
                    _ => Target::Dense(s.clone()),
                }
            })
            .collect();
        Self {
            inner,
            kind: cfg.kind,
            eps: cfg.eps,
            seed: cfg.seed,
            split,
            qmf,
            targets,
        }
    }
}

impl Dataset for NoisyDataset {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn modalities(&self) -> &[String] {
        self.inner.modalities()
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        self.inner.input_shapes()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let mut s = self.inner.get(i)?;
        self.corrupt_sample(&mut s, i)?;
        Ok(s)
    }
    // Pass-throughs: the inner loader's parallel decoding and per-epoch augmentation seeds.
    fn get_many(&self, ids: &[usize]) -> Result<Vec<Sample>> {
        let mut out = self.inner.get_many(ids)?;
        for (s, &i) in out.iter_mut().zip(ids) {
            self.corrupt_sample(s, i)?;
        }
        Ok(out)
    }
    fn set_epoch(&self, seed: u64, epoch: usize) {
        self.inner.set_epoch(seed, epoch)
    }
    fn text_source(&self, m: usize) -> Option<Arc<dyn crate::TextSource>> {
        self.inner.text_source(m)
    }
}

impl NoisyDataset {
    /// Corrupts the chosen modalities of sample `i` with its own generator (see [`sample_seed`]).
    fn corrupt_sample(&self, s: &mut Sample, i: usize) -> Result<()> {
        let shapes = self.inner.input_shapes();
        for (m, ((v, t), name)) in s
            .inputs
            .iter_mut()
            .zip(&self.targets)
            .zip(self.inner.modalities())
            .enumerate()
        {
            let rng = || SeededRng::new(sample_seed(self.seed, self.split, name, i));
            match (t, &self.qmf) {
                (Target::Clean, _) => {}
                (Target::Dense(stats), None) => {
                    corrupt(v, self.kind, self.eps, stats, &mut rng());
                }
                (Target::Dense(stats), Some(q)) => {
                    corrupt_qmf(v, &shapes[m], self.kind, self.eps, stats, q, &mut rng());
                }
                (Target::Text(src), _) => {
                    if let Some(masked) = mask_words(&src.text(i)?, self.eps, &mut rng()) {
                        let enc = src.encode(&masked)?;
                        if enc.len() != v.len() {
                            return Err(ModbalError::Data(format!(
                                "noise: the masked text of sample {i} of modality {name:?} \
                                 encodes to {} values, the modality has {}",
                                enc.len(),
                                v.len()
                            )));
                        }
                        *v = enc;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_split_modality_index_and_seed() {
        let a = sample_seed(0, 2, "audio", 5);
        assert_eq!(a, sample_seed(0, 2, "audio", 5));
        for b in [
            sample_seed(1, 2, "audio", 5),
            sample_seed(0, 0, "audio", 5),
            sample_seed(0, 2, "visual", 5),
            sample_seed(0, 2, "audio", 6),
        ] {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn bad_values_are_named() {
        let sp = |eps| NoiseConfig::new(NoiseKind::SaltPepper, eps, NoiseOn::Test);
        assert!(sp(0.0).validate().is_ok() && sp(1.0).validate().is_ok());
        assert!(sp(1.5)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("[0, 1]"));
        assert!(sp(-0.1)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("noise.eps"));
        let g = NoiseConfig::new(NoiseKind::Gaussian, 3.0, NoiseOn::Test);
        assert!(g.validate().is_ok());
        let e = g
            .targets(&["audio".into(), "visual".into()])
            .map(|t| t.len())
            .unwrap();
        assert_eq!(e, 2);
        let mut g = g;
        g.modalities = vec!["depth".into()];
        let e = g
            .targets(&["audio".into(), "visual".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("depth") && e.contains("audio, visual"), "{e}");
        assert!(NoiseKind::from_name("speckle").is_err());
        assert!(NoiseOn::from_name("val").is_err());
        assert!(NoiseOn::TrainTest.covers("train") && !NoiseOn::TrainTest.covers("val"));
        assert!(!NoiseOn::Test.covers("val") && NoiseOn::Test.covers("test"));
    }

    fn stats3() -> ModalityStats {
        // Three channels with different ranges (as ImageNet-normalised RGB).
        ModalityStats {
            min: -2.0,
            max: 2.5,
            std: 1.0,
            channel_min: vec![-2.0, -1.0, 0.0],
            channel_max: vec![2.0, 2.5, 1.0],
        }
    }

    /// A `[3, 4, 4]` sample at mid-range of every channel.
    fn mid_sample() -> Vec<f32> {
        let s = stats3();
        (0..48)
            .map(|e| {
                let c = e / 16;
                (s.channel_min[c] + s.channel_max[c]) / 2.0
            })
            .collect()
    }

    // Binomial(n, p) count within 5 standard deviations of n·p.
    fn assert_binomial(count: usize, n: usize, p: f64, what: &str) {
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (count as f64 - mean).abs() <= 5.0 * sd + 1e-9,
            "{what}: {count} of {n}, expected {mean} ± {sd}"
        );
    }

    // QMF `RandomApply(p=0.5)` + `AddSaltPepperNoise(density=0.1, p=ε/10)` (2023) or `ε/100`
    // (2025): the share of corrupted samples is 0.5·min(ε/10, 1); a corrupted sample's positions
    // are pepper (every channel at its min) or salt (every channel at its max) together, with
    // density 0.1.
    #[test]
    fn qmf_salt_pepper_hits_a_share_of_samples_and_whole_pixels() {
        let st = stats3();
        let shape = [3, 4, 4];
        for (release, eps, p_img) in [
            (QmfRelease::Paper, 5.0, 0.25),
            (QmfRelease::Paper, 10.0, 0.5),
            (QmfRelease::Paper, 20.0, 0.5),
            (QmfRelease::Rewrite, 10.0, 0.05),
        ] {
            let q = QmfParams {
                release,
                grey_per_eps: 10.0,
            };
            assert_eq!(q.image_prob(NoiseKind::SaltPepper, eps), p_img);
            let n = 4000;
            let (mut hit, mut pixels, mut specks) = (0, 0, 0);
            for i in 0..n {
                let mut v = mid_sample();
                let mut rng = SeededRng::new(sample_seed(3, 2, "image", i));
                let changed = corrupt_qmf(
                    &mut v,
                    &shape,
                    NoiseKind::SaltPepper,
                    eps,
                    &st,
                    &q,
                    &mut rng,
                );
                if !changed {
                    assert_eq!(v, mid_sample());
                    continue;
                }
                hit += 1;
                for p in 0..16 {
                    let px: Vec<f32> = (0..3).map(|c| v[c * 16 + p]).collect();
                    let pepper: Vec<f32> = st.channel_min.clone();
                    let salt: Vec<f32> = st.channel_max.clone();
                    let clean: Vec<f32> = (0..3).map(|c| mid_sample()[c * 16 + p]).collect();
                    assert!(
                        px == pepper || px == salt || px == clean,
                        "pixel {p}: {px:?} is neither whole pepper, whole salt nor clean"
                    );
                    pixels += 1;
                    specks += usize::from(px != clean);
                }
            }
            assert_binomial(
                hit,
                n,
                p_img,
                &format!("{release:?} ε={eps}: corrupted samples"),
            );
            if hit > 0 {
                assert_binomial(specks, pixels, QMF_SP_DENSITY, "salt-pepper density");
            }
        }
    }

    // QMF Gaussian: `RandomApply(p=0.5)` of N(0, (10ε)²) grey levels, one field shared by the
    // channels, clipped to the channel range. With g_c = (hi_c − lo_c)/255 the unclipped shift of
    // channel c is 10ε·g_c·z: (x'_c − x_c)/(hi_c − lo_c) is the same for every channel, and its
    // std over unclipped positions is 10ε/255.
    #[test]
    fn qmf_gaussian_is_grey_levels_shared_by_channels_and_clipped() {
        let st = stats3();
        let shape = [3, 4, 4];
        let eps = 5.0;
        let q = QmfParams {
            release: QmfRelease::Paper,
            grey_per_eps: 10.0,
        };
        let clean = mid_sample();
        let (mut hit, mut sq, mut count) = (0, 0.0f64, 0usize);
        let n = 2000;
        for i in 0..n {
            let mut v = clean.clone();
            let mut rng = SeededRng::new(sample_seed(0, 2, "image", i));
            if !corrupt_qmf(&mut v, &shape, NoiseKind::Gaussian, eps, &st, &q, &mut rng) {
                assert_eq!(v, clean);
                continue;
            }
            hit += 1;
            for p in 0..16 {
                let rel: Vec<f64> = (0..3)
                    .map(|c| {
                        let r = (st.channel_max[c] - st.channel_min[c]) as f64;
                        (v[c * 16 + p] - clean[c * 16 + p]) as f64 / r
                    })
                    .collect();
                for c in 0..3 {
                    let x = v[c * 16 + p];
                    assert!(x >= st.channel_min[c] && x <= st.channel_max[c], "clipped");
                }
                // Mid-range start: |shift| < half the range is never clipped.
                if rel.iter().all(|r| r.abs() < 0.499) {
                    assert!(
                        (rel[0] - rel[1]).abs() < 1e-5 && (rel[0] - rel[2]).abs() < 1e-5,
                        "one field for every channel: {rel:?}"
                    );
                    sq += rel[0] * rel[0];
                    count += 1;
                }
            }
        }
        assert_binomial(hit, n, QMF_APPLY_PROB, "corrupted samples");
        // 50/255 ≈ 0.196 of the range: |z| < 2.54 is unclipped (98.9 % of draws); the truncated
        // normal's std is 0.9758 of the untruncated one (closed form: 1 − 2·t·φ(t)/(2Φ(t) − 1)
        // with t = 0.499/0.196 = 2.5449).
        let t: f64 = 0.499 / (50.0 / 255.0);
        let phi = (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let big_phi = 0.5 * (1.0 + erf(t / 2f64.sqrt()));
        let trunc = (1.0 - 2.0 * t * phi / (2.0 * big_phi - 1.0)).sqrt();
        let sd = (sq / count as f64).sqrt();
        let want = 50.0 / 255.0 * trunc;
        assert!((sd - want).abs() < 0.02 * want, "std {sd}, want {want}");
    }

    /// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
        let y = 1.0
            - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736)
                * t
                + 0.254_829_592)
                * t
                * (-x * x).exp();
        y.copysign(x)
    }

    // QMF's text masking: half the texts masked; in a masked text each word becomes `_` with
    // probability 0.1·ε (ε = 10: every word); spaces are kept.
    #[test]
    fn qmf_text_masking_rates() {
        let text = "one two three four five six seven eight nine ten";
        let n = 3000;
        let (mut masked, mut words, mut gone) = (0, 0, 0);
        for i in 0..n {
            let mut rng = SeededRng::new(sample_seed(1, 2, "text", i));
            if let Some(t) = mask_words(text, 4.0, &mut rng) {
                masked += 1;
                let w: Vec<&str> = t.split(' ').collect();
                assert_eq!(w.len(), 10, "{t}");
                for (a, b) in w.iter().zip(text.split(' ')) {
                    assert!(*a == b || *a == "_", "{t}");
                    words += 1;
                    gone += usize::from(*a == "_");
                }
            }
        }
        assert_binomial(masked, n, QMF_TEXT_MASK_PROB, "masked texts");
        assert_binomial(gone, words, 0.4, "masked words at ε = 4");
        let mut rng = SeededRng::new(7);
        let all = (0..20)
            .find_map(|_| mask_words(text, 10.0, &mut rng))
            .unwrap();
        assert_eq!(all, "_ _ _ _ _ _ _ _ _ _");
    }

    #[test]
    fn qmf_options_belong_to_the_qmf_scale() {
        let mut c = NoiseConfig::new(NoiseKind::SaltPepper, 5.0, NoiseOn::Test);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--noise-scale qmf"), "{e}");
        c.scale = NoiseScale::Qmf;
        assert!(c.validate().is_ok());
        assert_eq!(c.tag(), "qmf-salt-pepper5-test");
        c.qmf_grey_per_eps = Some(0.0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("qmf_grey_per_eps"));
        let mut m = NoiseConfig::new(NoiseKind::Gaussian, 1.0, NoiseOn::Test);
        m.qmf_release = Some(QmfRelease::Rewrite);
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("noise.qmf_release") && e.contains("\"qmf\""),
            "{e}"
        );
        assert!(NoiseScale::from_name("cal").is_err());
        assert_eq!(channels(&[3, 8, 8]), 3);
        assert_eq!(channels(&[1, 257, 188]), 1);
        assert_eq!(channels(&[64]), 1);
        assert_eq!(channels(&[16, 300]), 1);
    }
}
