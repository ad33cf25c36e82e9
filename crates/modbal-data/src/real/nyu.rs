//! NYU Depth v2 scene classification: aligned RGB and depth images.
//!
//! Modalities: `rgb` `[3, S, S]` (ImageNet-normalised) and `depth` `[1, S, S]`: a 16-bit PNG in
//! millimetres divided by `max_depth_mm` (default 10 000) and clipped to `[0, 1]`, or an 8-bit
//! image / 255, then `(d − depth_mean)/depth_std` (defaults 0.5, 0.5: `[0, 1] → [−1, 1]`).
//! Training: one `RandomResizedCrop` + flip drawn per sample and applied to both images (they
//! are pixel-aligned; a depth map of another resolution gets the proportionally scaled box);
//! evaluation: resize to `S × S`.
//!
//! Layouts under `root`:
//! * **prepared**: `classes.txt` (line index = label id), `splits/{train,test}.csv` (+ optional
//!   `val.csv`) with header `id,label`, `rgb/<id>.{png,jpg}`, `depth/<id>.png`;
//! * **list** (`train.txt`, `test.txt`, as RGB-D scene-recognition code ships them): rows
//!   `<rgb path> <depth path> <label>` (whitespace or comma separated, paths relative to `root`,
//!   label a class name or an integer id); classes from `classes.txt` if present, else the
//!   sorted names (or `0..=max` for integer labels).
//!
//! The benchmark used by CAL / QMF is the 10-class scene split (bedroom, kitchen, living room,
//! bathroom, dining room, office, home office, classroom, bookstore, others; 795 train / 654
//! test of the 1 449 labelled pairs): `datasets/nyu-depth/README.md` describes how to lay it
//! out. Validation: `val.csv` if present, else a stratified `val_fraction` of train.

use super::{
    check_fraction, check_root, label_id, lines, parallel_get, parse_csv_line, read_text,
    resolve_workers, stratified_split, AugState, OnMissing, SkipLog,
};
use crate::dataset::{Dataset, Sample, Splits};
use crate::vision::{
    crop_resize, decode_depth, decode_rgb, normalize, CropBox, ImageTransform, IMAGENET_MEAN,
    IMAGENET_STD,
};
use modbal_core::{ModbalError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of `nyu-depth`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NyuDepthConfig {
    pub root: PathBuf,
    pub image_size: usize,
    pub augment: bool,
    pub crop_scale: [f64; 2],
    pub crop_ratio: [f64; 2],
    pub hflip: bool,
    pub max_depth_mm: f32,
    pub depth_mean: f32,
    pub depth_std: f32,
    pub val_fraction: f64,
    pub split_seed: u64,
    pub on_missing: OnMissing,
    pub workers: usize,
}

impl Default for NyuDepthConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            image_size: 224,
            augment: true,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: true,
            max_depth_mm: 10_000.0,
            depth_mean: 0.5,
            depth_std: 0.5,
            val_fraction: 0.1,
            split_seed: 0,
            on_missing: OnMissing::Error,
            workers: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct Pair {
    id: String,
    label: u32,
    rgb: PathBuf,
    depth: PathBuf,
}

struct RawRow {
    id: String,
    rgb: PathBuf,
    depth: PathBuf,
    label: String,
    where_: String,
}

fn find_image(dir: &Path, id: &str) -> PathBuf {
    for ext in ["png", "jpg", "jpeg"] {
        let p = dir.join(format!("{id}.{ext}"));
        if p.is_file() {
            return p;
        }
    }
    dir.join(format!("{id}.png"))
}

impl NyuDepthConfig {
    fn prepared_rows(&self, file: &Path) -> Result<Vec<RawRow>> {
        let text = read_text(file, "split file")?;
        let mut out = Vec::new();
        for (ln, l) in lines(&text) {
            let f = parse_csv_line(l);
            if ln == 1 && f.first().map(String::as_str) == Some("id") {
                continue;
            }
            if f.len() < 2 {
                return Err(ModbalError::Data(format!(
                    "{} line {ln}: expected id,label, got {l:?}",
                    file.display()
                )));
            }
            out.push(RawRow {
                rgb: find_image(&self.root.join("rgb"), &f[0]),
                depth: find_image(&self.root.join("depth"), &f[0]),
                id: f[0].clone(),
                label: f[1].clone(),
                where_: format!("{} line {ln}", file.display()),
            });
        }
        Ok(out)
    }

    fn list_rows(&self, file: &Path) -> Result<Vec<RawRow>> {
        let text = read_text(file, "split list")?;
        let mut out = Vec::new();
        for (ln, l) in lines(&text) {
            let f: Vec<&str> = l
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .collect();
            if f.len() < 3 {
                return Err(ModbalError::Data(format!(
                    "{} line {ln}: expected \"<rgb path> <depth path> <label>\", got {l:?}",
                    file.display()
                )));
            }
            out.push(RawRow {
                id: f[0].to_string(),
                rgb: self.root.join(f[0]),
                depth: self.root.join(f[1]),
                label: f[2..].join(" "),
                where_: format!("{} line {ln}", file.display()),
            });
        }
        Ok(out)
    }

    #[allow(clippy::type_complexity)]
    pub fn build_splits(&self) -> Result<(Arc<NyuDataset>, Arc<NyuDataset>, Arc<NyuDataset>)> {
        check_root("nyu-depth", &self.root)?;
        check_fraction(self.val_fraction)?;
        if self.max_depth_mm <= 0.0 || self.depth_std <= 0.0 {
            return Err(ModbalError::Config(
                "dataset.max_depth_mm and dataset.depth_std must be > 0".into(),
            ));
        }
        let transform = ImageTransform {
            size: self.image_size,
            random_crop: self.augment,
            scale: self.crop_scale,
            ratio: self.crop_ratio,
            hflip: self.augment && self.hflip,
        };
        transform.validate("dataset")?;
        let sp = self.root.join("splits");
        let (train, val, test) = if sp.is_dir() {
            let v = sp.join("val.csv");
            (
                self.prepared_rows(&sp.join("train.csv"))?,
                if v.is_file() {
                    Some(self.prepared_rows(&v)?)
                } else {
                    None
                },
                self.prepared_rows(&sp.join("test.csv"))?,
            )
        } else {
            let v = self.root.join("val.txt");
            (
                self.list_rows(&self.root.join("train.txt"))?,
                if v.is_file() {
                    Some(self.list_rows(&v)?)
                } else {
                    None
                },
                self.list_rows(&self.root.join("test.txt"))?,
            )
        };
        let cls = self.root.join("classes.txt");
        let classes: Vec<String> = if cls.is_file() {
            lines(&read_text(&cls, "class list")?)
                .map(|(_, l)| l.to_string())
                .collect()
        } else {
            let all = train.iter().chain(&test).map(|r| r.label.clone());
            let ints: Option<Vec<usize>> = all.clone().map(|l| l.parse().ok()).collect();
            match ints {
                Some(v) => (0..=v.into_iter().max().unwrap_or(0))
                    .map(|i| i.to_string())
                    .collect(),
                None => {
                    let mut v: Vec<String> = all.collect();
                    v.sort();
                    v.dedup();
                    v
                }
            }
        };
        if classes.len() < 2 {
            return Err(ModbalError::Data(format!(
                "nyu-depth: {} class(es) found in {}; need at least 2",
                classes.len(),
                self.root.display()
            )));
        }
        let resolve = |rows: Vec<RawRow>, split: &str| -> Result<(Vec<Pair>, SkipLog)> {
            let mut log = SkipLog::default();
            let mut out = Vec::new();
            for r in rows {
                let label = label_id(&classes, &r.label).ok_or_else(|| {
                    ModbalError::Data(format!(
                        "{}: unknown class {:?} (classes: {})",
                        r.where_,
                        r.label,
                        classes.join(", ")
                    ))
                })?;
                let missing = [&r.rgb, &r.depth].into_iter().find(|p| !p.is_file());
                if let Some(p) = missing {
                    log.handle(
                        self.on_missing,
                        format!("image {} does not exist ({})", p.display(), r.where_),
                    )?;
                    continue;
                }
                out.push(Pair {
                    id: r.id,
                    label,
                    rgb: r.rgb,
                    depth: r.depth,
                });
            }
            log.warn("nyu-depth", split);
            Ok((out, log))
        };
        let (train_all, train_log) = resolve(train, "train")?;
        let (test, test_log) = resolve(test, "test")?;
        let (train, val) = match val {
            Some(v) => (train_all, resolve(v, "val")?.0),
            None => {
                let labels: Vec<u32> = train_all.iter().map(|p| p.label).collect();
                let (tr, va) =
                    stratified_split(&labels, classes.len(), self.val_fraction, self.split_seed);
                let pick = |ix: &[usize]| -> Vec<Pair> {
                    ix.iter().map(|&i| train_all[i].clone()).collect()
                };
                (pick(&tr), pick(&va))
            }
        };
        let s = self.image_size;
        let make = |pairs: Vec<Pair>, split: &str, train: bool, skipped: Vec<String>| {
            Arc::new(NyuDataset {
                split: split.into(),
                modalities: vec!["rgb".into(), "depth".into()],
                shapes: vec![vec![3, s, s], vec![1, s, s]],
                classes: classes.clone(),
                pairs,
                transform: transform.clone(),
                cfg: self.clone(),
                train,
                aug: AugState::default(),
                workers: resolve_workers(self.workers),
                skipped,
            })
        };
        Ok((
            make(train, "train", true, train_log.entries),
            make(val, "val", false, Vec::new()),
            make(test, "test", false, test_log.entries),
        ))
    }

    pub fn build(&self) -> Result<Splits> {
        let (train, val, test) = self.build_splits()?;
        Ok(Splits { train, val, test })
    }
}

/// One NYU Depth v2 split (see the [module docs](self)).
pub struct NyuDataset {
    split: String,
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
    classes: Vec<String>,
    pairs: Vec<Pair>,
    transform: ImageTransform,
    cfg: NyuDepthConfig,
    train: bool,
    aug: AugState,
    workers: usize,
    skipped: Vec<String>,
}

impl NyuDataset {
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn load(&self, i: usize) -> Result<Sample> {
        let p = &self.pairs[i];
        let rgb_img = decode_rgb(&p.rgb)?;
        let d_img = decode_depth(&p.depth, self.cfg.max_depth_mm)?;
        let mut rng = self.train.then(|| self.aug.rng(i));
        let (b, flip) = self
            .transform
            .draw(rgb_img.width, rgb_img.height, rng.as_mut());
        let s = self.transform.size;
        let mut rgb = crop_resize(&rgb_img, b, s, s, flip);
        normalize(&mut rgb, &IMAGENET_MEAN, &IMAGENET_STD);
        let db = if (d_img.width, d_img.height) == (rgb_img.width, rgb_img.height) {
            b
        } else {
            let sx = d_img.width as f64 / rgb_img.width as f64;
            let sy = d_img.height as f64 / rgb_img.height as f64;
            let x = ((b.x as f64 * sx) as usize).min(d_img.width - 1);
            let y = ((b.y as f64 * sy) as usize).min(d_img.height - 1);
            CropBox {
                x,
                y,
                width: ((b.width as f64 * sx).round() as usize).clamp(1, d_img.width - x),
                height: ((b.height as f64 * sy).round() as usize).clamp(1, d_img.height - y),
            }
        };
        let mut depth = crop_resize(&d_img, db, s, s, flip);
        normalize(&mut depth, &[self.cfg.depth_mean], &[self.cfg.depth_std]);
        Ok(Sample {
            inputs: vec![rgb, depth],
            label: p.label,
        })
    }
}

impl Dataset for NyuDataset {
    fn len(&self) -> usize {
        self.pairs.len()
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
            self.pairs.len(),
            || self.load(i),
            || format!("nyu-depth {} sample {i} ({})", self.split, self.pairs[i].id),
        )
    }
    fn get_many(&self, ids: &[usize]) -> Result<Vec<Sample>> {
        parallel_get(ids, self.workers, |i| self.get(i))
    }
    fn set_epoch(&self, seed: u64, epoch: usize) {
        self.aug.set(seed, epoch)
    }
}
