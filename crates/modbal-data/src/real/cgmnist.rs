//! CGMNIST (Colored-and-Gray MNIST), built from the four MNIST IDX files.
//!
//! Each sample pairs two views of a digit of class `y`:
//! * `gray` `[1, 28, 28]`: the MNIST digit, pixel / 255 (no further normalisation);
//! * `color` `[3, 28, 28]`: a digit with its strokes painted in colour `k`:
//!   `x[c] = pixel / 255 · palette[k][c]` (black background), where
//!   - **training** (and the validation split carved from it): `k = y` with probability
//!     `color_correlation` (ρ), otherwise `k` uniform over the 10 colours, so
//!     `P(k = y) = ρ + (1 − ρ)/10` — colour is a shortcut for the label;
//!   - **test**: `k` uniform over the 10 colours, independent of the label (`P(k = y) = 1/10`):
//!     a model that relies on colour fails there;
//!   - **validation** (`validation`): `"ood"` (default) colours the held-out training digits as
//!     the test split is ("OOD validation", as WILDS), so selection does not reward the
//!     shortcut; `"iid"` colours them as training;
//!   - per-sample jitter: each colour component + N(0, `color_std`²), clipped to `[0, 1]`;
//!     default `color_std = √0.03` (Kim et al.'s colour-jitter variance 0.03, the variant PMR
//!     and UDI train on).
//!
//! `pairing = "same"` (default) paints the same MNIST image as the gray view;
//! `"shuffled"` paints another image of the same class from the same file, chosen per sample.
//! The palette ([`PALETTE`]): red, green, blue, yellow, magenta, cyan, orange, purple, white,
//! brown. Everything random is seeded by `(data_seed, split, index)`, so the data do not depend on
//! the run seed or on the validation split. Defaults: Kim et al.'s coloured MNIST as PMR and UDI
//! build it — ρ = 1.0 (each training class has its own colour, test colours random), colour
//! jitter variance 0.03, the same digit in both views — with OOD validation.
//!
//! Files in `root`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (a `.` instead of the last `-` is
//! accepted; gzip files must be unpacked first). Validation: a stratified `val_fraction` of the
//! 60 000 training digits. The IDX headers are checked against the files: `16 + n·rows·cols`
//! (checked arithmetic) must be the image file's length and `8 + n` the label file's.

use super::{check_fraction, check_root, derive_seed, stratified_split};
use crate::dataset::{Dataset, Sample, Splits};
use modbal_core::{ModbalError, Result};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Variance of the colour jitter of Kim et al.'s coloured MNIST as PMR and UDI use it
/// (`σ² = 0.03`); the default `color_std` is its square root.
pub const KIM_COLOR_VAR: f64 = 0.03;

/// The 10 colours (RGB in `[0, 1]`), index = colour class.
pub const PALETTE: [[f32; 3]; 10] = [
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],
    [0.0, 0.0, 1.0],
    [1.0, 1.0, 0.0],
    [1.0, 0.0, 1.0],
    [0.0, 1.0, 1.0],
    [1.0, 0.5, 0.0],
    [0.5, 0.0, 1.0],
    [1.0, 1.0, 1.0],
    [0.6, 0.4, 0.2],
];

/// How the coloured view is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pairing {
    #[default]
    Same,
    Shuffled,
}

/// Options of `cgmnist`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CgmnistConfig {
    /// Folder with the four IDX files (required).
    pub root: PathBuf,
    /// ρ: probability that a training digit gets its class colour.
    pub color_correlation: f64,
    /// Standard deviation of the per-sample colour jitter.
    pub color_std: f64,
    pub pairing: Pairing,
    /// Colours of the validation split: `"ood"` (default: as the test split, independent of
    /// the label) or `"iid"` (as training, which rewards the colour shortcut).
    pub validation: crate::dataset::ValidationShift,
    pub val_fraction: f64,
    pub split_seed: u64,
    pub data_seed: u64,
    /// Use only the first N training / test digits (0: all).
    pub limit_train: usize,
    pub limit_test: usize,
}

impl Default for CgmnistConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            color_correlation: 1.0,
            color_std: KIM_COLOR_VAR.sqrt(),
            pairing: Pairing::Same,
            validation: Default::default(),
            val_fraction: 0.1,
            split_seed: 0,
            data_seed: 0,
            limit_train: 0,
            limit_test: 0,
        }
    }
}

/// Digits of one IDX pair.
#[derive(Debug)]
pub struct Idx {
    pub rows: usize,
    pub cols: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn find_idx(root: &Path, base: &str) -> Result<PathBuf> {
    // "train-images-idx3-ubyte" or "train-images.idx3-ubyte"
    let alt = base.replacen("-idx", ".idx", 1);
    for cand in [base.to_string(), alt] {
        let p = root.join(&cand);
        if p.is_file() {
            return Ok(p);
        }
    }
    let gz = root.join(format!("{base}.gz"));
    if gz.is_file() {
        return Err(ModbalError::Data(format!(
            "{} is gzip-compressed: unpack it first (gunzip -k {})",
            gz.display(),
            gz.display()
        )));
    }
    Err(ModbalError::Data(format!(
        "MNIST file {} does not exist",
        root.join(base).display()
    )))
}

/// Read an IDX image file (`0x00000803`, u8, `[n, rows, cols]`) and its label file
/// (`0x00000801`, u8, `[n]`).
pub fn read_idx_pair(images: &Path, labels: &Path) -> Result<Idx> {
    let ib = std::fs::read(images).map_err(|e| ModbalError::io("reading", images, e))?;
    let lb = std::fs::read(labels).map_err(|e| ModbalError::io("reading", labels, e))?;
    parse_idx_pair(&ib, &lb, images, labels)
}

/// [`read_idx_pair`] on the files' bytes (`images`, `labels`: the names used in errors).
///
/// Nothing in the headers is trusted: `n · rows · cols` is computed with checked arithmetic
/// and must equal the image bytes present (`16 + n·rows·cols` = the file length), the label
/// file must hold exactly `8 + n` bytes, and `n` must be at least 1 — so a header whose sizes
/// overflow (or wrap to 0) is an error naming them.
pub fn parse_idx_pair(ib: &[u8], lb: &[u8], images: &Path, labels: &Path) -> Result<Idx> {
    let bad = |p: &Path, m: String| ModbalError::Data(format!("{}: {m}", p.display()));
    // A gzip file under the plain IDX name (the MNIST mirrors ship .gz): say so, not "bad magic".
    for (p, b) in [(images, ib), (labels, lb)] {
        if b.starts_with(&[0x1f, 0x8b]) {
            return Err(bad(
                p,
                format!(
                    "is gzip-compressed although its name has no .gz: unpack it \
                     (gunzip -c {} > unpacked && mv unpacked {})",
                    p.display(),
                    p.display()
                ),
            ));
        }
    }
    if ib.len() < 16 || be_u32(ib, 0) != 0x0803 {
        return Err(bad(
            images,
            format!(
                "bad IDX magic {:#010x}, expected 0x00000803 (idx3-ubyte images)",
                if ib.len() >= 4 { be_u32(ib, 0) } else { 0 }
            ),
        ));
    }
    if lb.len() < 8 || be_u32(lb, 0) != 0x0801 {
        return Err(bad(
            labels,
            format!(
                "bad IDX magic {:#010x}, expected 0x00000801 (idx1-ubyte labels)",
                if lb.len() >= 4 { be_u32(lb, 0) } else { 0 }
            ),
        ));
    }
    let (n, rows, cols) = (
        be_u32(ib, 4) as usize,
        be_u32(ib, 8) as usize,
        be_u32(ib, 12) as usize,
    );
    if rows < 8 || cols < 8 {
        return Err(bad(images, format!("images of {rows}×{cols}, need ≥ 8×8")));
    }
    if n == 0 {
        return Err(bad(images, "the header says 0 images".into()));
    }
    let need = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .and_then(|v| v.checked_add(16));
    match need {
        None => {
            return Err(bad(
                images,
                format!(
                    "header says {n} images of {rows}×{cols}: more bytes than this machine can \
                     address (corrupt header?); file has {}",
                    ib.len()
                ),
            ))
        }
        Some(need) if ib.len() < need => {
            return Err(bad(
                images,
                format!(
                    "truncated: {n} images of {rows}×{cols} need {need} bytes, file has {}",
                    ib.len()
                ),
            ))
        }
        Some(need) if ib.len() > need => {
            return Err(bad(
                images,
                format!(
                    "header says {n} images of {rows}×{cols} ({need} bytes), but the file has {} \
                     (header and data disagree)",
                    ib.len()
                ),
            ))
        }
        Some(_) => {}
    }
    let nl = be_u32(lb, 4) as usize;
    if nl != n || lb.len() != 8 + n {
        return Err(bad(
            labels,
            format!(
                "{nl} labels ({} bytes) for {n} images in {}",
                lb.len(),
                images.display()
            ),
        ));
    }
    let labels_v = lb[8..].to_vec();
    if let Some(j) = labels_v.iter().position(|&y| y > 9) {
        return Err(bad(
            labels,
            format!("label {} at {j} is not a digit", labels_v[j]),
        ));
    }
    Ok(Idx {
        rows,
        cols,
        images: ib[16..].to_vec(),
        labels: labels_v,
    })
}

/// The colour of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Painted {
    /// Colour class `k` (index into [`PALETTE`]).
    pub color_class: usize,
    pub color: [f32; 3],
    /// Index (in the same file) of the digit painted.
    pub source: usize,
}

impl CgmnistConfig {
    fn paint(&self, d: &Idx, by_class: &[Vec<usize>], split: u64, i: usize, test: bool) -> Painted {
        let mut rng = SeededRng::new(derive_seed(&[self.data_seed, split, i as u64]));
        let y = d.labels[i] as usize;
        let k = if !test && rng.uniform() < self.color_correlation {
            y
        } else {
            rng.below(10)
        };
        let mut color = PALETTE[k];
        if self.color_std > 0.0 {
            for c in &mut color {
                *c = (*c as f64 + self.color_std * rng.normal()).clamp(0.0, 1.0) as f32;
            }
        }
        let source = match self.pairing {
            Pairing::Same => i,
            Pairing::Shuffled => {
                let cands = &by_class[y];
                cands[rng.below(cands.len())]
            }
        };
        Painted {
            color_class: k,
            color,
            source,
        }
    }

    fn load_file(&self, images: &str, labels: &str, limit: usize) -> Result<Idx> {
        let mut d = read_idx_pair(
            &find_idx(&self.root, images)?,
            &find_idx(&self.root, labels)?,
        )?;
        if limit > 0 && limit < d.labels.len() {
            d.labels.truncate(limit);
            d.images.truncate(limit * d.rows * d.cols);
        }
        Ok(d)
    }

    fn dataset(&self, d: Arc<Idx>, split: u64, test: bool, idx: Vec<usize>) -> CgmnistDataset {
        // "shuffled" pairing draws the painted digit from this split only.
        let mut by_class = vec![Vec::new(); 10];
        for &i in &idx {
            by_class[d.labels[i] as usize].push(i);
        }
        let painted = idx
            .iter()
            .map(|&i| self.paint(&d, &by_class, split, i, test))
            .collect();
        CgmnistDataset {
            shapes: vec![vec![1, d.rows, d.cols], vec![3, d.rows, d.cols]],
            modalities: vec!["gray".into(), "color".into()],
            data: d,
            idx,
            painted,
        }
    }

    /// The three splits as their concrete type (train, val, test).
    pub fn build_splits(&self) -> Result<(CgmnistDataset, CgmnistDataset, CgmnistDataset)> {
        check_root("cgmnist", &self.root)?;
        check_fraction(self.val_fraction)?;
        if !(0.0..=1.0).contains(&self.color_correlation)
            || self.color_std.is_nan()
            || self.color_std < 0.0
        {
            return Err(ModbalError::Config(format!(
                "dataset.color_correlation must be in [0, 1] and dataset.color_std >= 0, got {} and {}",
                self.color_correlation, self.color_std
            )));
        }
        let train = Arc::new(self.load_file(
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            self.limit_train,
        )?);
        let test = Arc::new(self.load_file(
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
            self.limit_test,
        )?);
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(ModbalError::Data(format!(
                "MNIST train images are {}×{}, test images {}×{}",
                train.rows, train.cols, test.rows, test.cols
            )));
        }
        let labels: Vec<u32> = train.labels.iter().map(|&y| y as u32).collect();
        let (tr, va) = stratified_split(&labels, 10, self.val_fraction, self.split_seed);
        let n_test = test.labels.len();
        // OOD validation: held-out training digits coloured as the test split is.
        let val_as_test = self.validation == crate::dataset::ValidationShift::Ood;
        Ok((
            self.dataset(train.clone(), 0, false, tr),
            self.dataset(train, 0, val_as_test, va),
            self.dataset(test, 1, true, (0..n_test).collect()),
        ))
    }

    pub fn build(&self) -> Result<Splits> {
        let (train, val, test) = self.build_splits()?;
        Ok(Splits {
            train: Arc::new(train),
            val: Arc::new(val),
            test: Arc::new(test),
        })
    }
}

/// One CGMNIST split (see the [module docs](self)).
pub struct CgmnistDataset {
    data: Arc<Idx>,
    idx: Vec<usize>,
    painted: Vec<Painted>,
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
}

impl CgmnistDataset {
    /// The colour sample `i` was painted with.
    pub fn painted(&self, i: usize) -> Painted {
        self.painted[i]
    }
    /// The label of sample `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.data.labels[self.idx[i]] as u32
    }
}

impl Dataset for CgmnistDataset {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn modalities(&self) -> &[String] {
        &self.modalities
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn get(&self, i: usize) -> Result<Sample> {
        if i >= self.idx.len() {
            return Err(ModbalError::Data(format!(
                "sample index {i} out of range (len {})",
                self.idx.len()
            )));
        }
        let d = &self.data;
        let px = d.rows * d.cols;
        let j = self.idx[i];
        let gray: Vec<f32> = d.images[j * px..(j + 1) * px]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        let p = self.painted[i];
        let src = &d.images[p.source * px..(p.source + 1) * px];
        let mut color = Vec::with_capacity(3 * px);
        for c in 0..3 {
            color.extend(src.iter().map(|&v| v as f32 / 255.0 * p.color[c]));
        }
        Ok(Sample {
            inputs: vec![gray, color],
            label: d.labels[j] as u32,
        })
    }
}
