//! Loaders of the field's real benchmarks.
//!
//! | name | modalities (per-sample shape) | module |
//! |---|---|---|
//! | `crema-d`, `kinetics-sounds`, `ave`, `vggsound` | `audio` `[1, F, T_a]` (a `.npy` spectrogram), `visual` `[3, T, S, S]` (T frames) | [`av`] |
//! | `ucf101` | `rgb` `[3, T, S, S]`, `flow` `[2, T, S, S]` (u, v) | [`ucf101`] |
//! | `nyu-depth` | `rgb` `[3, S, S]`, `depth` `[1, S, S]` | [`nyu`] |
//! | `cgmnist` | `gray` `[1, 28, 28]`, `color` `[3, 28, 28]` | [`cgmnist`] |
//!
//! Shared conventions:
//! * **Files are checked when the splits are built** (every listed clip's audio header and frame
//!   folder): a missing root, split file, audio file or frame folder, or a spectrogram of the
//!   wrong shape is an error naming the file — or, with `on_missing = "skip"`, the clip is
//!   dropped, counted in a warning on stderr and listed by `skipped()`. Problems only visible
//!   when a file is decoded (a corrupt JPEG) are errors naming the file at that point: the
//!   DataLoader stops, the trainer keeps the completed epochs' metrics and checkpoints, and
//!   `modbal resume` continues once the file is fixed.
//! * **Validation**: a dataset's own validation list when it has one (AVE), otherwise a
//!   stratified `val_fraction` (default 0.1) of train, chosen by [`stratified_split`] with
//!   `split_seed`: the same files give the same split on every machine. The test split is never
//!   used for selection.
//! * **Randomness** (frame positions, crops, flips) only on the training split, from a
//!   generator seeded by `(run seed, epoch, sample index)` ([`AugState`]); validation and test
//!   are deterministic (segment centres, whole-frame resize).
//! * **Parallel decoding**: `workers` threads decode the samples of a batch (0: as many as the
//!   machine has cores); the batch does not depend on `workers`.

pub mod av;
pub mod cgmnist;
pub mod fixtures;
pub mod nyu;
pub mod ucf101;

use crate::dataset::Sample;
use modbal_core::{ModbalError, Result};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which on-disk layout to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `prepared` if `<root>/splits/` exists, else `legacy`.
    #[default]
    Auto,
    /// What `modbal prepare` writes: `classes.txt`, `splits/<split>.csv`, `audio/`, `visual/`.
    Prepared,
    /// The OGM-GE / BalanceMM family's split lists and folders (see each loader).
    Legacy,
}

/// What to do with a listed sample whose files are missing or malformed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMissing {
    /// Stop with an error naming the file (default).
    #[default]
    Error,
    /// Drop the sample, warn on stderr with the count, list it in `skipped()`.
    Skip,
}

/// splitmix64 over a list of words: a well-mixed seed for a sample (defined in modbal-tensors,
/// shared with the encoders' per-epoch dropout seeds).
pub use modbal_tensors::rng::derive_seed;

/// The augmentation state of a training split: run seed and epoch, set by
/// [`crate::Dataset::set_epoch`]; sample `i`'s generator is seeded by `(seed, epoch, i)`.
#[derive(Debug, Default)]
pub struct AugState {
    seed: AtomicU64,
    epoch: AtomicU64,
}

impl AugState {
    pub fn set(&self, seed: u64, epoch: usize) {
        self.seed.store(seed, Ordering::SeqCst);
        self.epoch.store(epoch as u64, Ordering::SeqCst);
    }
    /// The generator of sample `index` in the current epoch.
    pub fn rng(&self, index: usize) -> SeededRng {
        SeededRng::new(derive_seed(&[
            self.seed.load(Ordering::SeqCst),
            self.epoch.load(Ordering::SeqCst),
            index as u64,
        ]))
    }
}

/// `0` → the machine's core count.
pub fn resolve_workers(workers: usize) -> usize {
    if workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        workers
    }
}

/// `get(i)` for every id on up to `workers` threads, in the order of `ids`; the first error in
/// id order is returned.
pub fn parallel_get<F>(ids: &[usize], workers: usize, get: F) -> Result<Vec<Sample>>
where
    F: Fn(usize) -> Result<Sample> + Sync,
{
    let w = workers.max(1).min(ids.len().max(1));
    if w <= 1 {
        return ids.iter().map(|&i| get(i)).collect();
    }
    let chunk = ids.len().div_ceil(w);
    let parts: Vec<Vec<Result<Sample>>> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|c| {
                let get = &get;
                s.spawn(move || c.iter().map(|&i| get(i)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(ModbalError::Data("a decoding thread panicked".into()))]
                })
            })
            .collect()
    });
    parts.into_iter().flatten().collect()
}

/// Stratified, deterministic hold-out: per class (in index order) a seeded shuffle of its
/// samples, the first `min(round(fraction·n_c), n_c − 1)` go to validation. Returns
/// `(train, val)` index lists, each ascending.
pub fn stratified_split(
    labels: &[u32],
    num_classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &y) in labels.iter().enumerate() {
        by_class[y as usize].push(i);
    }
    let mut val = Vec::new();
    for (c, mut ix) in by_class.into_iter().enumerate() {
        if ix.is_empty() {
            continue;
        }
        let k = ((fraction * ix.len() as f64).round() as usize).min(ix.len() - 1);
        SeededRng::new(derive_seed(&[seed, c as u64])).shuffle(&mut ix);
        val.extend_from_slice(&ix[..k]);
    }
    val.sort_unstable();
    let mut is_val = vec![false; labels.len()];
    for &i in &val {
        is_val[i] = true;
    }
    let train = (0..labels.len()).filter(|&i| !is_val[i]).collect();
    (train, val)
}

/// Checks `val_fraction`.
pub(crate) fn check_fraction(f: f64) -> Result<()> {
    if !(f > 0.0 && f < 1.0) {
        return Err(ModbalError::Config(format!(
            "dataset.val_fraction must be in (0, 1), got {f}"
        )));
    }
    Ok(())
}

/// `dataset.root` must be set and exist.
pub(crate) fn check_root(name: &str, root: &Path) -> Result<()> {
    if root.as_os_str().is_empty() {
        return Err(ModbalError::Config(format!(
            "dataset {name}: dataset.root is not set (--set dataset.root=DIR; datasets/{name}/README.md describes the layout)"
        )));
    }
    if !root.is_dir() {
        return Err(ModbalError::Data(format!(
            "dataset {name}: root {} does not exist or is not a directory",
            root.display()
        )));
    }
    Ok(())
}

/// Read a text file that must exist (`what`: "split file", "class list"...).
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    if !path.is_file() {
        return Err(ModbalError::Data(format!(
            "{what} {} does not exist",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))
}

/// Split one CSV line into fields (double quotes group, `""` is a quote).
pub fn parse_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out.into_iter().map(|f| f.trim().to_string()).collect()
}

/// Non-empty, trimmed lines with their 1-based line numbers (a UTF-8 BOM is dropped).
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

/// Image files (`.jpg`, `.jpeg`, `.png`) of a frame folder, in frame order: by the last run of
/// digits in the name (`00001.jpg`, `frame_00003.jpg`, `img_12.png`), then by name.
pub fn list_frames(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| ModbalError::io("listing", dir, e))?;
    let mut names: Vec<String> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| ModbalError::io("listing", dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png") {
            names.push(name);
        }
    }
    names.sort_by_key(|n| (frame_number(n), n.clone()));
    Ok(names)
}

fn frame_number(name: &str) -> u64 {
    let stem = name.rsplit_once('.').map(|x| x.0).unwrap_or(name);
    let digits: String = stem
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(u64::MAX)
}

/// A folder of frames of one clip, listed when the splits are built.
#[derive(Clone, Debug)]
pub struct FrameDir {
    pub dir: PathBuf,
    pub names: Vec<String>,
}

impl FrameDir {
    /// List `dir`; an error names it when it is missing or holds no frame.
    pub fn open(dir: PathBuf) -> std::result::Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!("frame folder {} does not exist", dir.display()));
        }
        let names = list_frames(&dir).map_err(|e| e.to_string())?;
        if names.is_empty() {
            return Err(format!(
                "frame folder {} holds no .jpg/.jpeg/.png frame",
                dir.display()
            ));
        }
        Ok(Self { dir, names })
    }
    pub fn path(&self, k: usize) -> PathBuf {
        self.dir.join(&self.names[k])
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Collects skipped samples of one split and reports them once.
#[derive(Clone, Debug, Default)]
pub struct SkipLog {
    pub entries: Vec<String>,
}

impl SkipLog {
    /// `Err` with the message when `on_missing = error`, else remember it.
    pub fn handle(&mut self, on: OnMissing, msg: String) -> Result<()> {
        match on {
            OnMissing::Error => Err(ModbalError::Data(format!(
                "{msg} (set dataset.on_missing = \"skip\" to drop such samples)"
            ))),
            OnMissing::Skip => {
                self.entries.push(msg);
                Ok(())
            }
        }
    }
    pub fn warn(&self, dataset: &str, split: &str) {
        if !self.entries.is_empty() {
            eprintln!(
                "warning: {dataset} {split}: skipped {} sample(s) with missing or malformed files; first: {}",
                self.entries.len(),
                self.entries[0]
            );
        }
    }
}

/// Read an audio spectrogram `.npy` as `f32`, checking it has `want` elements in a 2-D
/// `[F, T]` (or `[1, F, T]`) shape equal to `shape`.
pub(crate) fn read_spectrogram(path: &Path, shape: &[usize; 2]) -> Result<Vec<f32>> {
    let a = crate::npy::read_npy(path)?;
    let got = spectrogram_shape(&a.shape);
    if got != Some(*shape) {
        return Err(ModbalError::Data(format!(
            "{}: spectrogram of shape {:?}, expected {:?} (every clip of a dataset must have the same shape)",
            path.display(),
            a.shape,
            shape
        )));
    }
    Ok(a.data.into_iter().map(|v| v as f32).collect())
}

/// `[F, T]` or `[1, F, T]` → `[F, T]`.
pub(crate) fn spectrogram_shape(s: &[usize]) -> Option<[usize; 2]> {
    match s {
        [f, t] => Some([*f, *t]),
        [1, f, t] => Some([*f, *t]),
        _ => None,
    }
}

/// Map a label string to its id: a class name, or an integer index.
pub(crate) fn label_id(classes: &[String], label: &str) -> Option<u32> {
    classes
        .iter()
        .position(|c| c == label)
        .map(|i| i as u32)
        .or_else(|| {
            label
                .parse::<usize>()
                .ok()
                .filter(|&i| i < classes.len())
                .map(|i| i as u32)
        })
}

/// Sample `i` of a file-backed split: an index check, then `load`, whose error is prefixed with
/// `describe()` (dataset, split, sample and the clip or file it came from).
pub(crate) fn get_checked(
    i: usize,
    len: usize,
    load: impl FnOnce() -> Result<Sample>,
    describe: impl FnOnce() -> String,
) -> Result<Sample> {
    if i >= len {
        return Err(ModbalError::Data(format!(
            "sample index {i} out of range (len {len})"
        )));
    }
    load().map_err(|e| ModbalError::Data(format!("{}: {e}", describe())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_counts_follow_the_closed_form() {
        // class c has 10·(c+1) samples; val gets round(0.1·n_c) of each.
        let mut labels = Vec::new();
        for c in 0..4u32 {
            labels.extend(std::iter::repeat_n(c, 10 * (c as usize + 1)));
        }
        let (tr, va) = stratified_split(&labels, 4, 0.1, 5);
        for c in 0..4u32 {
            let n_val = va.iter().filter(|&&i| labels[i] == c).count();
            assert_eq!(n_val, c as usize + 1);
        }
        assert_eq!(tr.len() + va.len(), labels.len());
        assert_eq!(stratified_split(&labels, 4, 0.1, 5).1, va);
        assert_ne!(stratified_split(&labels, 4, 0.1, 6).1, va);
    }

    #[test]
    fn csv_quotes_and_frame_order() {
        assert_eq!(
            parse_csv_line(r#"abc,12,"dog, barking",train"#),
            vec!["abc", "12", "dog, barking", "train"]
        );
        assert_eq!(frame_number("frame_00012.jpg"), 12);
        assert_eq!(frame_number("00003.jpg"), 3);
        assert_eq!(frame_number("img.png"), u64::MAX);
    }

    #[test]
    fn parallel_get_keeps_order_and_first_error() {
        let f = |i: usize| {
            if i == 7 || i == 9 {
                Err(ModbalError::Data(format!("bad {i}")))
            } else {
                Ok(Sample {
                    inputs: vec![vec![i as f32]],
                    label: 0,
                })
            }
        };
        let ids: Vec<usize> = (0..6).rev().collect();
        let a = parallel_get(&ids, 3, f).unwrap();
        assert_eq!(
            a.iter().map(|s| s.inputs[0][0]).collect::<Vec<_>>(),
            vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
        );
        let e = parallel_get(&[1, 9, 2, 7], 4, f).unwrap_err().to_string();
        assert!(e.contains("bad 9"), "{e}");
    }
}
