//! Audio-visual clip datasets: CREMA-D, Kinetics-Sounds, AVE and VGGSound.
//!
//! Modalities: `audio` `[1, F, T_a]`, a spectrogram read from a `.npy` file (shape taken from the
//! first training clip; every clip must match), and `visual` `[3, T, S, S]`, `T = frames`
//! frames sampled from the clip's 1-fps frame folder (see [`crate::vision`]: segment centres
//! for validation/test, a random frame of each segment for training), each
//! `RandomResizedCrop(S)` + horizontal flip for training or resized to `S × S` otherwise, then
//! ImageNet-normalised. The audio array is used as stored (its recipe normalised it).
//!
//! # Layouts
//! **prepared** (`modbal prepare`): `classes.txt` (line index = label id),
//! `splits/{train,test}.csv` (+ optional `val.csv`) with header `id,label` (label = class name
//! or index), `audio/<id>.npy`, `visual/<id>/<00001..>.jpg`.
//!
//! **legacy** (the OGM-GE / PMR / BalanceMM repositories), paths relative to `root`:
//! * split lists `train_list`, `test_list` (+ `val_list` if that file exists), in one of
//!   `list_format`:
//!   - `clip-label`: CSV rows `clip,LABEL` (CREMA-D's `train.csv`: `1001_DFA_ANG_XX,ANG`), a
//!     header row `id,label` / `clip,label` is skipped;
//!   - `label-clip`: `&`-separated rows `Category&VideoID&...` (AVE's `trainSet.txt`);
//!   - `vggsound`: `vggsound.csv` rows `youtube_id,start_seconds,label,train|test` (one file for
//!     both splits); the clip id is the first of `{id}_{start:06}`, `{id}_{start}`, `{id}` whose
//!     audio file exists;
//!   - `auto`: `&` in the first row → `label-clip`; four fields ending in `train`/`test` →
//!     `vggsound`; else `clip-label`.
//! * spectrograms `audio_dir/<clip>.npy` (2-D `[F, T]` or `[1, F, T]`, f4/f8),
//! * frames `visual_dir/<clip>/` — any `.jpg`/`.jpeg`/`.png` names, ordered by their number
//!   (`00001.jpg`, `frame_00001.jpg`); OGM-GE's folder is `visual_dir = "Image-01-FPS"`.
//! * class order: `classes` if set, else the dataset's fixed order (CREMA-D: NEU HAP SAD FEA DIS
//!   ANG, as OGM-GE), else `classes.txt` in `root` if present, else the sorted labels of the
//!   train and test lists.
//!
//! Not supported: `.wav` audio (run `modbal prepare`), `.pkl` / `.pt` pickles (convert them to
//! `.npy` with `np.save`), video files (extract frames with `modbal prepare`).

use super::{
    check_fraction, check_root, label_id, lines, parallel_get, parse_csv_line, read_spectrogram,
    read_text, resolve_workers, spectrogram_shape, stratified_split, AugState, FrameDir, Layout,
    OnMissing, SkipLog,
};
use crate::dataset::{Dataset, Sample, Splits};
use crate::npy::read_npy_header;
use crate::vision::{
    crop_resize, decode_rgb, normalize, segment_indices, ImageTransform, IMAGENET_MEAN,
    IMAGENET_STD,
};
use modbal_core::{ModbalError, Result};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Row format of a legacy split list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListFormat {
    #[default]
    Auto,
    ClipLabel,
    LabelClip,
    Vggsound,
}

/// Per-dataset defaults of [`AvConfig`].
pub trait AvKind: Clone + std::fmt::Debug + PartialEq + Default + Send + Sync + 'static {
    const NAME: &'static str;
    /// Default `T` (frames per clip).
    const FRAMES: usize;
    const TRAIN_LIST: &'static str;
    const TEST_LIST: &'static str;
    const VAL_LIST: &'static str;
    const FORMAT: ListFormat;
    /// A fixed class order (legacy layout), empty if taken from the data.
    const CLASSES: &'static [&'static str];
}

/// CREMA-D: 6 emotions, 1 frame by default (OGM-GE's `--fps 1`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CremaD;
impl AvKind for CremaD {
    const NAME: &'static str = "crema-d";
    const FRAMES: usize = 1;
    const TRAIN_LIST: &'static str = "train.csv";
    const TEST_LIST: &'static str = "test.csv";
    const VAL_LIST: &'static str = "val.csv";
    const FORMAT: ListFormat = ListFormat::ClipLabel;
    const CLASSES: &'static [&'static str] = &["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"];
}

/// Kinetics-Sounds: 31 (or 32/34, depending on the list) classes, 3 frames.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KineticsSounds;
impl AvKind for KineticsSounds {
    const NAME: &'static str = "kinetics-sounds";
    const FRAMES: usize = 3;
    const TRAIN_LIST: &'static str = "train.csv";
    const TEST_LIST: &'static str = "test.csv";
    const VAL_LIST: &'static str = "val.csv";
    const FORMAT: ListFormat = ListFormat::Auto;
    const CLASSES: &'static [&'static str] = &[];
}

/// AVE: 28 event classes, 4 frames (PMR), its own validation list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ave;
impl AvKind for Ave {
    const NAME: &'static str = "ave";
    const FRAMES: usize = 4;
    const TRAIN_LIST: &'static str = "trainSet.txt";
    const TEST_LIST: &'static str = "testSet.txt";
    const VAL_LIST: &'static str = "valSet.txt";
    const FORMAT: ListFormat = ListFormat::LabelClip;
    const CLASSES: &'static [&'static str] = &[];
}

/// VGGSound: 309/310 classes from `vggsound.csv`, 3 frames.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VggSound;
impl AvKind for VggSound {
    const NAME: &'static str = "vggsound";
    const FRAMES: usize = 3;
    const TRAIN_LIST: &'static str = "vggsound.csv";
    const TEST_LIST: &'static str = "vggsound.csv";
    const VAL_LIST: &'static str = "";
    const FORMAT: ListFormat = ListFormat::Vggsound;
    const CLASSES: &'static [&'static str] = &[];
}

/// Options of the audio-visual datasets (`[dataset] name = "crema-d"`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, bound = "")]
pub struct AvConfig<K: AvKind> {
    /// Dataset folder (required).
    pub root: PathBuf,
    pub layout: Layout,
    /// Frames per clip `T`.
    pub frames: usize,
    /// Frame side `S` after crop / resize. Default 224.
    pub image_size: usize,
    /// Random crop + flip on training clips (false: resize like evaluation).
    pub augment: bool,
    /// `RandomResizedCrop` area fraction range. Default `[0.08, 1.0]`.
    pub crop_scale: [f64; 2],
    /// `RandomResizedCrop` aspect-ratio range. Default `[0.75, 1.3333]`.
    pub crop_ratio: [f64; 2],
    pub hflip: bool,
    /// One crop / flip for all frames of a clip (TSN) instead of one per frame (OGM-GE).
    pub clip_consistent_crop: bool,
    /// Held-out fraction of train when the layout has no validation list.
    pub val_fraction: f64,
    pub split_seed: u64,
    pub on_missing: OnMissing,
    /// Decoding threads per batch (0: one per core).
    pub workers: usize,
    /// Legacy layout: split lists, their format, folders, class order.
    pub train_list: String,
    pub test_list: String,
    pub val_list: String,
    pub list_format: ListFormat,
    pub audio_dir: String,
    pub visual_dir: String,
    pub classes: Vec<String>,
    #[serde(skip)]
    pub kind: PhantomData<K>,
}

impl<K: AvKind> Default for AvConfig<K> {
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            layout: Layout::Auto,
            frames: K::FRAMES,
            image_size: 224,
            augment: true,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: true,
            clip_consistent_crop: false,
            val_fraction: 0.1,
            split_seed: 0,
            on_missing: OnMissing::Error,
            workers: 0,
            train_list: K::TRAIN_LIST.into(),
            test_list: K::TEST_LIST.into(),
            val_list: K::VAL_LIST.into(),
            list_format: K::FORMAT,
            audio_dir: "audio".into(),
            visual_dir: "visual".into(),
            classes: Vec::new(),
            kind: PhantomData,
        }
    }
}

pub type CremaDConfig = AvConfig<CremaD>;
pub type KineticsSoundsConfig = AvConfig<KineticsSounds>;
pub type AveConfig = AvConfig<Ave>;
pub type VggSoundConfig = AvConfig<VggSound>;

/// One listed clip: id, label string, 1-based line of its list.
struct Row {
    id: String,
    label: String,
    file: PathBuf,
    line: usize,
}

#[derive(Clone, Debug)]
struct Clip {
    id: String,
    label: u32,
    audio: PathBuf,
    frames: FrameDir,
}

fn detect_format(text: &str) -> ListFormat {
    match lines(text).next() {
        Some((_, l)) if l.contains('&') => ListFormat::LabelClip,
        Some((_, l)) => {
            let f = parse_csv_line(l);
            if f.len() == 4 && (f[3] == "train" || f[3] == "test") {
                ListFormat::Vggsound
            } else {
                ListFormat::ClipLabel
            }
        }
        None => ListFormat::ClipLabel,
    }
}

impl<K: AvKind> AvConfig<K> {
    fn transform(&self) -> ImageTransform {
        ImageTransform {
            size: self.image_size,
            random_crop: self.augment,
            scale: self.crop_scale,
            ratio: self.crop_ratio,
            hflip: self.augment && self.hflip,
        }
    }

    fn prepared(&self) -> bool {
        match self.layout {
            Layout::Prepared => true,
            Layout::Legacy => false,
            Layout::Auto => self.root.join("splits").is_dir(),
        }
    }

    /// Rows of a legacy list (`split`: which rows of a vggsound file).
    fn legacy_rows(&self, file: &Path, split: &str) -> Result<Vec<Row>> {
        let text = read_text(file, "split list")?;
        let fmt = match self.list_format {
            ListFormat::Auto => detect_format(&text),
            f => f,
        };
        let mut rows = Vec::new();
        for (ln, l) in lines(&text) {
            let bad = |what: &str| {
                ModbalError::Data(format!(
                    "{} line {ln}: {what} (list_format {fmt:?}): {l:?}",
                    file.display()
                ))
            };
            match fmt {
                ListFormat::LabelClip => {
                    let f: Vec<&str> = l.split('&').map(str::trim).collect();
                    if f.len() < 2 {
                        return Err(bad("expected Category&VideoID&..."));
                    }
                    if ln == 1 && f[0].eq_ignore_ascii_case("category") {
                        continue;
                    }
                    rows.push(Row {
                        id: f[1].into(),
                        label: f[0].into(),
                        file: file.into(),
                        line: ln,
                    });
                }
                ListFormat::Vggsound => {
                    let f = parse_csv_line(l);
                    if f.len() < 4 {
                        return Err(bad("expected youtube_id,start,label,split"));
                    }
                    if f[3] != split {
                        continue;
                    }
                    let start = f[1].parse::<u64>().ok();
                    let mut cands = Vec::new();
                    if let Some(s) = start {
                        cands.push(format!("{}_{s:06}", f[0]));
                    }
                    cands.push(format!("{}_{}", f[0], f[1]));
                    cands.push(f[0].clone());
                    let adir = self.root.join(&self.audio_dir);
                    let id = cands
                        .iter()
                        .find(|c| adir.join(format!("{c}.npy")).is_file())
                        .unwrap_or(&cands[0])
                        .clone();
                    rows.push(Row {
                        id,
                        label: f[2].clone(),
                        file: file.into(),
                        line: ln,
                    });
                }
                ListFormat::ClipLabel | ListFormat::Auto => {
                    let f = parse_csv_line(l);
                    if f.len() < 2 {
                        return Err(bad("expected clip,LABEL"));
                    }
                    if ln == 1
                        && ["id", "clip", "name"].contains(&f[0].to_ascii_lowercase().as_str())
                    {
                        continue;
                    }
                    rows.push(Row {
                        id: f[0].clone(),
                        label: f[1].clone(),
                        file: file.into(),
                        line: ln,
                    });
                }
            }
        }
        Ok(rows)
    }

    fn prepared_rows(&self, file: &Path) -> Result<Vec<Row>> {
        let text = read_text(file, "split file")?;
        let mut rows = Vec::new();
        for (ln, l) in lines(&text) {
            let f = parse_csv_line(l);
            if ln == 1 && f.first().map(String::as_str) == Some("id") {
                continue;
            }
            if f.len() < 2 || f[0].is_empty() {
                return Err(ModbalError::Data(format!(
                    "{} line {ln}: expected id,label, got {l:?}",
                    file.display()
                )));
            }
            rows.push(Row {
                id: f[0].clone(),
                label: f[1].clone(),
                file: file.into(),
                line: ln,
            });
        }
        Ok(rows)
    }

    /// Build the three splits.
    pub fn build(&self) -> Result<Splits> {
        let (train, val, test) = self.build_splits()?;
        Ok(Splits { train, val, test })
    }

    /// The three splits as their concrete type (train, val, test).
    #[allow(clippy::type_complexity)]
    pub fn build_splits(&self) -> Result<(Arc<AvDataset>, Arc<AvDataset>, Arc<AvDataset>)> {
        let name = K::NAME;
        check_root(name, &self.root)?;
        check_fraction(self.val_fraction)?;
        if self.frames == 0 {
            return Err(ModbalError::Config("dataset.frames must be > 0".into()));
        }
        let transform = self.transform();
        transform.validate("dataset")?;
        let prepared = self.prepared();
        let (classes, train_rows, val_rows, test_rows, audio_dir, visual_dir) = if prepared {
            let cls = self.root.join("classes.txt");
            let classes: Vec<String> = lines(&read_text(&cls, "class list")?)
                .map(|(_, l)| l.to_string())
                .collect();
            let sp = self.root.join("splits");
            let val = sp.join("val.csv");
            let train = self.prepared_rows(&sp.join("train.csv"))?;
            let test_file = sp.join("test.csv");
            if !test_file.is_file() {
                return Err(ModbalError::Data(format!(
                    "split file {} does not exist{}",
                    test_file.display(),
                    no_test_hint::<K>(&train)
                )));
            }
            (
                classes,
                train,
                if val.is_file() {
                    Some(self.prepared_rows(&val)?)
                } else {
                    None
                },
                self.prepared_rows(&test_file)?,
                self.root.join("audio"),
                self.root.join("visual"),
            )
        } else {
            let train = self.legacy_rows(&self.root.join(&self.train_list), "train")?;
            let test = self.legacy_rows(&self.root.join(&self.test_list), "test")?;
            let val_path = self.root.join(&self.val_list);
            let val = if !self.val_list.is_empty() && val_path.is_file() {
                Some(self.legacy_rows(&val_path, "val")?)
            } else {
                None
            };
            let classes: Vec<String> = if !self.classes.is_empty() {
                self.classes.clone()
            } else if !K::CLASSES.is_empty() {
                K::CLASSES.iter().map(|s| s.to_string()).collect()
            } else if self.root.join("classes.txt").is_file() {
                lines(&read_text(&self.root.join("classes.txt"), "class list")?)
                    .map(|(_, l)| l.to_string())
                    .collect()
            } else {
                let mut v: Vec<String> =
                    train.iter().chain(&test).map(|r| r.label.clone()).collect();
                v.sort();
                v.dedup();
                v
            };
            (
                classes,
                train,
                val,
                test,
                self.root.join(&self.audio_dir),
                self.root.join(&self.visual_dir),
            )
        };
        if classes.len() < 2 {
            return Err(ModbalError::Data(format!(
                "dataset {name}: {} class(es) found; need at least 2",
                classes.len()
            )));
        }
        // For the errors about empty splits: the split list of each split and its row count.
        let list_file = |split: &str| -> PathBuf {
            if prepared {
                self.root.join("splits").join(format!("{split}.csv"))
            } else {
                self.root.join(match split {
                    "train" => &self.train_list,
                    "val" => &self.val_list,
                    _ => &self.test_list,
                })
            }
        };
        let train_listed = (list_file("train"), train_rows.len());
        let test_listed = (list_file("test"), test_rows.len());
        let val_listed = val_rows.as_ref().map(|v| (list_file("val"), v.len()));
        // (The actor hint is about trees `modbal prepare` wrote.)
        let test_hint = if prepared {
            no_test_hint::<K>(&train_rows)
        } else {
            String::new()
        };
        let mut audio_shape: Option<[usize; 2]> = None;
        let mut resolve = |rows: Vec<Row>, split: &str| -> Result<(Vec<Clip>, SkipLog)> {
            let mut log = SkipLog::default();
            let mut clips = Vec::with_capacity(rows.len());
            for r in rows {
                let label = label_id(&classes, &r.label).ok_or_else(|| {
                    ModbalError::Data(format!(
                        "{} line {}: unknown class {:?} (classes: {})",
                        r.file.display(),
                        r.line,
                        r.label,
                        classes.join(", ")
                    ))
                })?;
                let audio = audio_dir.join(format!("{}.npy", r.id));
                let shape = if audio.is_file() {
                    match read_npy_header(&audio) {
                        Ok((_, s)) => match spectrogram_shape(&s) {
                            Some(s) => Ok(s),
                            None => Err(format!(
                                "{}: spectrogram of shape {s:?}, expected 2-D [F, T]",
                                audio.display()
                            )),
                        },
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    Err(format!(
                        "audio file {} of clip {:?} ({} line {}) does not exist",
                        audio.display(),
                        r.id,
                        r.file.display(),
                        r.line
                    ))
                };
                let shape = match shape {
                    Ok(s) => s,
                    Err(m) => {
                        log.handle(self.on_missing, m)?;
                        continue;
                    }
                };
                match audio_shape {
                    None => audio_shape = Some(shape),
                    Some(want) if want != shape => {
                        log.handle(
                            self.on_missing,
                            format!(
                                "{}: spectrogram of shape {shape:?}, expected {want:?} like the first clip (every clip must have the same shape)",
                                audio.display()
                            ),
                        )?;
                        continue;
                    }
                    _ => {}
                }
                let frames = match FrameDir::open(visual_dir.join(&r.id)) {
                    Ok(f) => f,
                    Err(m) => {
                        log.handle(
                            self.on_missing,
                            format!(
                                "{m} (clip {:?}, {} line {})",
                                r.id,
                                r.file.display(),
                                r.line
                            ),
                        )?;
                        continue;
                    }
                };
                clips.push(Clip {
                    id: r.id,
                    label,
                    audio,
                    frames,
                });
            }
            log.warn(name, split);
            Ok((clips, log))
        };
        let (train_all, mut train_log) = resolve(train_rows, "train")?;
        let (val_clips, val_log, train_clips) = match val_rows {
            Some(v) => {
                let (v, l) = resolve(v, "val")?;
                (v, l, train_all)
            }
            None => {
                let labels: Vec<u32> = train_all.iter().map(|c| c.label).collect();
                let (tr, va) =
                    stratified_split(&labels, classes.len(), self.val_fraction, self.split_seed);
                let pick = |ix: &[usize]| ix.iter().map(|&i| train_all[i].clone()).collect();
                (pick(&va), SkipLog::default(), pick(&tr))
            }
        };
        let (test_clips, test_log) = resolve(test_rows, "test")?;
        train_log.entries.extend(val_log.entries);
        let audio_shape = audio_shape.ok_or_else(|| {
            ModbalError::Data(format!("dataset {name}: no usable clip in the split lists"))
        })?;
        // An empty train or test split is an error naming why (an empty val split a warning),
        // not a run without a test split.
        let empty = |split: &str, (file, n): &(PathBuf, usize), hint: &str| {
            let what = if *n == 0 {
                format!("{} lists no clip", file.display())
            } else {
                format!(
                    "{} lists {n} clip(s), none of them usable (see the skipped-sample warning)",
                    file.display()
                )
            };
            ModbalError::Data(format!(
                "dataset {name}: the {split} split is empty: {what}{hint}"
            ))
        };
        if train_clips.is_empty() {
            return Err(empty("train", &train_listed, ""));
        }
        if test_clips.is_empty() {
            return Err(empty("test", &test_listed, &test_hint));
        }
        if val_clips.is_empty() {
            // A warning, not an error: the splits are still usable for loading the training
            // clips (examples/bench_loader.rs); training itself refuses an empty split.
            let why = match &val_listed {
                Some(l) => empty("val", l, "").to_string(),
                None => empty_val_reason(name, self.val_fraction, train_clips.len()),
            };
            eprintln!("warning: {why}");
        }
        let s = self.image_size;
        let shapes = vec![
            vec![1, audio_shape[0], audio_shape[1]],
            vec![3, self.frames, s, s],
        ];
        let make = |clips: Vec<Clip>, split: &str, train: bool, skipped: Vec<String>| {
            Arc::new(AvDataset {
                name,
                split: split.to_string(),
                modalities: vec!["audio".into(), "visual".into()],
                shapes: shapes.clone(),
                classes: classes.clone(),
                clips,
                audio_shape,
                frames: self.frames,
                transform: transform.clone(),
                train,
                consistent: self.clip_consistent_crop,
                aug: AugState::default(),
                workers: resolve_workers(self.workers),
                skipped,
            })
        };
        Ok((
            make(train_clips, "train", true, train_log.entries),
            make(val_clips, "val", false, Vec::new()),
            make(test_clips, "test", false, test_log.entries),
        ))
    }
}

/// Why the validation split carved from `train` clips is empty.
fn empty_val_reason(name: &str, fraction: f64, train: usize) -> String {
    format!(
        "dataset {name}: the val split is empty: val_fraction {fraction} of the {train} training \
         clips rounds to 0 clips in every class (at most n − 1 of a class's n clips are held \
         out); raise dataset.val_fraction or add clips"
    )
}

/// Why a dataset may have no test clips, appended to the error (empty for a reason-free case).
/// CREMA-D: `modbal prepare`'s actor-disjoint split (without split lists in the raw folder)
/// holds out every 10th actor in sorted order, so a tree of fewer than 10 actors has none; the
/// actor count is read from the training clip ids (`1001_DFA_ANG_XX` → actor 1001).
fn no_test_hint<K: AvKind>(train: &[Row]) -> String {
    if K::NAME != CremaD::NAME {
        return String::new();
    }
    let mut actors: Vec<u32> = train
        .iter()
        .filter_map(|r| r.id.split('_').next()?.parse().ok())
        .collect();
    actors.sort_unstable();
    actors.dedup();
    if actors.is_empty() || actors.len() >= 10 {
        return String::new();
    }
    format!(
        "; the training clips come from {} actor(s) ({actors:?}), and `modbal prepare` holds \
         out every 10th actor in sorted order for the test split, so a CREMA-D tree with fewer \
         than 10 actors has no test clips: add actors, or put train.csv/test.csv split lists in \
         the raw folder before preparing",
        actors.len()
    )
}

/// One split of an audio-visual dataset (see the [module docs](self)).
pub struct AvDataset {
    name: &'static str,
    split: String,
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
    classes: Vec<String>,
    clips: Vec<Clip>,
    audio_shape: [usize; 2],
    frames: usize,
    transform: ImageTransform,
    train: bool,
    consistent: bool,
    aug: AugState,
    workers: usize,
    skipped: Vec<String>,
}

impl AvDataset {
    /// Class names, index = label id.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    /// Clip id of sample `i`.
    pub fn clip_id(&self, i: usize) -> &str {
        &self.clips[i].id
    }
    /// Samples dropped under `on_missing = "skip"`, with the reason.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
    /// The frame indices (into the clip's sorted frame list) sample `i` uses now.
    pub fn frame_indices(&self, i: usize) -> Vec<usize> {
        let mut rng = self.train.then(|| self.aug.rng(i));
        segment_indices(self.clips[i].frames.len(), self.frames, rng.as_mut())
    }

    fn load(&self, i: usize) -> Result<Sample> {
        let clip = &self.clips[i];
        let audio = read_spectrogram(&clip.audio, &self.audio_shape)?;
        let mut rng = self.train.then(|| self.aug.rng(i));
        let idx = segment_indices(clip.frames.len(), self.frames, rng.as_mut());
        let (t_n, s) = (self.frames, self.transform.size);
        let plane = s * s;
        let mut visual = vec![0.0f32; 3 * t_n * plane];
        let mut shared = None;
        for (t, &k) in idx.iter().enumerate() {
            let img = decode_rgb(&clip.frames.path(k))?;
            let (b, flip) = match shared {
                Some((b, f, w, h)) if self.consistent && w == img.width && h == img.height => {
                    (b, f)
                }
                _ => {
                    let (b, f) = self.transform.draw(img.width, img.height, rng.as_mut());
                    shared = Some((b, f, img.width, img.height));
                    (b, f)
                }
            };
            let mut out = crop_resize(&img, b, s, s, flip);
            normalize(&mut out, &IMAGENET_MEAN, &IMAGENET_STD);
            for c in 0..3 {
                visual[(c * t_n + t) * plane..(c * t_n + t + 1) * plane]
                    .copy_from_slice(&out[c * plane..(c + 1) * plane]);
            }
        }
        Ok(Sample {
            inputs: vec![audio, visual],
            label: clip.label,
        })
    }
}

impl Dataset for AvDataset {
    fn len(&self) -> usize {
        self.clips.len()
    }
    fn modalities(&self) -> &[String] {
        &self.modalities
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        super::get_checked(
            i,
            self.clips.len(),
            || self.load(i),
            || {
                format!(
                    "{} {} sample {i} (clip {:?})",
                    self.name, self.split, self.clips[i].id
                )
            },
        )
    }
    fn get_many(&self, ids: &[usize]) -> Result<Vec<Sample>> {
        parallel_get(ids, self.workers, |i| self.get(i))
    }
    fn set_epoch(&self, seed: u64, epoch: usize) {
        self.aug.set(seed, epoch)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_empty_val_warning_names_the_fraction_and_the_count() {
        let w = super::empty_val_reason("crema-d", 0.01, 96);
        assert!(
            w.contains("val split is empty: val_fraction 0.01 of the 96 training clips"),
            "{w}"
        );
    }
}
