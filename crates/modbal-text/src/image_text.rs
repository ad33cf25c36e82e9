//! Image–text classification benchmarks: UPMC Food-101 and MVSA-Single.
//!
//! Both yield two modalities, `image` `[3, S, S]` (ImageNet mean/std; training:
//! `RandomResizedCrop(S)` + horizontal flip drawn per sample from `(seed, epoch, index)`;
//! evaluation: resize to `S × S`, as IBML/QMF) and `text` (see [`TextEncoding`]).
//!
//! # Food-101 (UPMC Food-101, Wang et al. 2015) — [`Food101`]
//! * `texts/train_titles.csv`, `texts/test_titles.csv`: one row per sample, no header or a
//!   header naming `text`, `label` and `image`/`image_path`. Without a header, the image is the
//!   field ending in `.jpg`/`.jpeg`/`.png`, the label the remaining field that names a
//!   directory `images/<phase>/<label>/` (else the remaining field without spaces, last one
//!   first), the text the other field. This reads both the original release
//!   (`image,text,label`) and re-exports with `text,label,image_path`.
//! * `images/{train,test}/<label>/<file>` (a path with `/` is taken relative to `images/<phase>`
//!   or, failing that, to the root).
//! * Classes: the sorted labels of the training file (101). Validation: `dev.jsonl`-free, a
//!   stratified `val_fraction` (default 0.1) of train, deterministic (`split_seed`).
//! * The QMF/IBML jsonl layout (`{train,dev,test}.jsonl` with `text`, `img`, `label`) is read
//!   instead when `train.jsonl` exists.
//!
//! # MVSA-Single (Niu et al., MMM'16) — [`MvsaSingle`]
//! * **jsonl layout** (QMF / IBML's release, the standard split **1555 / 518 / 519**):
//!   `{train,dev,test}.jsonl`, rows `{"text", "img", "label"}`, `img` relative to the root.
//! * **raw layout** (the original release): `data/<id>.jpg`, `data/<id>.txt` (any encoding;
//!   invalid UTF-8 is replaced) and `labelResultAll.txt` (`ID<TAB>text_label,image_label`).
//!   A pair's label: equal labels → that label; one `neutral` → the other; `positive` vs
//!   `negative` → dropped (the rule of the MVSA literature). The kept samples are shuffled
//!   with `split_seed` and cut 60 / 20 / 20 % (`⌊0.6N⌋`, `⌊0.2N⌋`, the rest) — the ratios
//!   of the standard split (2592 samples → 1555 / 518 / 519); other counts of kept samples give
//!   other split sizes (the README explains).
//! * Classes: `negative = 0`, `positive = 1`, `neutral = 2` (IBML's `class_dict`).

use crate::text::{TextEncoder, TextEncoding};
use modbal_core::{ModbalError, Result};
use modbal_data::real::{
    parallel_get, parse_csv_line, resolve_workers, stratified_split, AugState,
};
use modbal_data::vision::{
    crop_resize, decode_rgb, normalize, ImageTransform, IMAGENET_MEAN, IMAGENET_STD,
};
use modbal_data::{Dataset, Sample, Splits, TextSource};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One image–text sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTextItem {
    pub image: PathBuf,
    pub text: String,
    pub label: u32,
}

/// An image–text split (Food-101, MVSA); see the [module docs](self).
pub struct ImageTextDataset {
    name: String,
    items: Vec<ImageTextItem>,
    text: TextEncoder,
    transform: ImageTransform,
    train: bool,
    aug: AugState,
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
    num_classes: usize,
    workers: usize,
}

impl std::fmt::Debug for ImageTextDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImageTextDataset {{ {}: {} samples }}",
            self.name,
            self.items.len()
        )
    }
}

impl ImageTextDataset {
    /// A split from explicit items. `train` enables the random crop + flip.
    pub fn new(
        name: impl Into<String>,
        items: Vec<ImageTextItem>,
        text: TextEncoder,
        image_size: usize,
        train: bool,
        num_classes: usize,
        workers: usize,
    ) -> Result<Self> {
        let transform = ImageTransform {
            size: image_size,
            random_crop: true,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: true,
        };
        transform.validate("image-text dataset")?;
        let name = name.into();
        if let Some(it) = items.iter().find(|it| it.label as usize >= num_classes) {
            return Err(ModbalError::Data(format!(
                "{name}: label {} of {} out of range for {num_classes} classes",
                it.label,
                it.image.display()
            )));
        }
        let shapes = vec![vec![3, image_size, image_size], text.shape()];
        Ok(Self {
            name,
            items,
            text,
            transform,
            train,
            aug: AugState::default(),
            modalities: vec!["image".into(), "text".into()],
            shapes,
            num_classes,
            workers: resolve_workers(workers),
        })
    }

    pub fn items(&self) -> &[ImageTextItem] {
        &self.items
    }

    fn load(&self, i: usize) -> Result<Sample> {
        let it = &self.items[i];
        let img = decode_rgb(&it.image)?;
        let mut rng: Option<SeededRng> = self.train.then(|| self.aug.rng(i));
        let (b, flip) = self.transform.draw(img.width, img.height, rng.as_mut());
        let s = self.transform.size;
        let mut chw = crop_resize(&img, b, s, s, flip);
        normalize(&mut chw, &IMAGENET_MEAN, &IMAGENET_STD);
        Ok(Sample {
            inputs: vec![chw, self.text.encode(&it.text)?],
            label: it.label,
        })
    }
}

impl Dataset for ImageTextDataset {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn modalities(&self) -> &[String] {
        &self.modalities
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn get(&self, i: usize) -> Result<Sample> {
        if i >= self.items.len() {
            return Err(ModbalError::Data(format!(
                "{}: sample index {i} out of range (len {})",
                self.name,
                self.items.len()
            )));
        }
        self.load(i).map_err(|e| {
            ModbalError::Data(format!(
                "{} sample {i} ({}): {e}",
                self.name,
                self.items[i].image.display()
            ))
        })
    }
    fn get_many(&self, ids: &[usize]) -> Result<Vec<Sample>> {
        parallel_get(ids, self.workers, |i| self.get(i))
    }
    fn set_epoch(&self, seed: u64, epoch: usize) {
        self.aug.set(seed, epoch)
    }
    /// The `text` modality (index 1): the items' raw text and this dataset's encoding, for QMF's
    /// word masking (`modbal_data::noise`, scale `qmf`).
    fn text_source(&self, m: usize) -> Option<Arc<dyn TextSource>> {
        (m == 1).then(|| {
            Arc::new(ItemTexts {
                name: self.name.clone(),
                texts: self.items.iter().map(|it| it.text.clone()).collect(),
                encoder: self.text.clone(),
            }) as Arc<dyn TextSource>
        })
    }
}

/// The raw texts of an [`ImageTextDataset`] with its encoder.
struct ItemTexts {
    name: String,
    texts: Vec<String>,
    encoder: TextEncoder,
}

impl TextSource for ItemTexts {
    fn text(&self, i: usize) -> Result<String> {
        self.texts.get(i).cloned().ok_or_else(|| {
            ModbalError::Data(format!(
                "{}: text of sample {i} out of range (len {})",
                self.name,
                self.texts.len()
            ))
        })
    }
    fn encode(&self, text: &str) -> Result<Vec<f32>> {
        self.encoder.encode(text)
    }
}

fn default_image_size() -> usize {
    224
}
fn default_val_fraction() -> f64 {
    0.1
}

fn read(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| ModbalError::Data(format!("{what} {}: cannot read ({e})", path.display())))?;
    Ok(String::from_utf8_lossy(&bytes)
        .trim_start_matches('\u{feff}')
        .to_string())
}

/// `{train,dev,test}.jsonl` rows `{"text", "img", "label"}` with labels mapped by `class_of`.
fn read_jsonl(
    path: &Path,
    root: &Path,
    class_of: &mut dyn FnMut(&str) -> Option<u32>,
) -> Result<Vec<ImageTextItem>> {
    let text = read(path, "split file")?;
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            ModbalError::Data(format!(
                "{} line {}: invalid JSON ({e})",
                path.display(),
                ln + 1
            ))
        })?;
        let field = |k: &str| -> Result<String> {
            match &v[k] {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                _ => Err(ModbalError::Data(format!(
                    "{} line {}: missing string field {k:?}",
                    path.display(),
                    ln + 1
                ))),
            }
        };
        let label = field("label")?;
        let y = class_of(&label).ok_or_else(|| {
            ModbalError::Data(format!(
                "{} line {}: unknown label {label:?}",
                path.display(),
                ln + 1
            ))
        })?;
        out.push(ImageTextItem {
            image: root.join(field("img")?),
            text: field("text")?,
            label: y,
        });
    }
    if out.is_empty() {
        return Err(ModbalError::Data(format!("{}: no samples", path.display())));
    }
    Ok(out)
}

fn check_root(name: &str, root: &Path) -> Result<()> {
    if root.as_os_str().is_empty() {
        return Err(ModbalError::Config(format!(
            "{name}: dataset.root is not set (see datasets/{name}/README.md)"
        )));
    }
    if !root.is_dir() {
        return Err(ModbalError::Data(format!(
            "{name}: root {} is not a directory (see datasets/{name}/README.md)",
            root.display()
        )));
    }
    Ok(())
}

/// Options of [`Food101`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Food101Config {
    pub root: PathBuf,
    pub text: TextEncoding,
    /// Default 224.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Share of train held out for validation (no dev split in the CSV layout). Default 0.1.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    #[serde(default)]
    pub split_seed: u64,
    /// Decoding threads (0 = all cores). Default 0.
    #[serde(default)]
    pub workers: usize,
}

impl Food101Config {
    pub fn new(root: impl Into<PathBuf>, text: TextEncoding) -> Self {
        Self {
            root: root.into(),
            text,
            image_size: default_image_size(),
            val_fraction: default_val_fraction(),
            split_seed: 0,
            workers: 0,
        }
    }
}

/// UPMC Food-101; see the [module docs](self).
#[derive(Debug)]
pub struct Food101;

struct CsvRow {
    image: String,
    text: String,
    label: String,
    line: usize,
}

fn food_rows(path: &Path, images: &Path) -> Result<Vec<CsvRow>> {
    let text = read(path, "Food-101 titles file")?;
    let mut rows = Vec::new();
    let mut header: Option<(usize, usize, usize)> = None;
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f = parse_csv_line(line);
        if rows.is_empty() && header.is_none() && ln == 0 {
            let low: Vec<String> = f.iter().map(|s| s.to_lowercase()).collect();
            let pos = |names: &[&str]| low.iter().position(|h| names.contains(&h.as_str()));
            if let (Some(t), Some(l), Some(i)) = (
                pos(&["text", "title"]),
                pos(&["label", "class"]),
                pos(&["image", "image_path", "img", "image_file"]),
            ) {
                header = Some((i, t, l));
                continue;
            }
        }
        let bad = |m: &str| {
            ModbalError::Data(format!("{} line {}: {m}: {line:?}", path.display(), ln + 1))
        };
        if f.len() < 3 {
            return Err(bad("expected 3 fields (image, text, label)"));
        }
        let (image, text, label) = if let Some((i, t, l)) = header {
            let g = |k: usize| f.get(k).cloned().ok_or_else(|| bad("missing field"));
            (g(i)?, g(t)?, g(l)?)
        } else {
            let is_img = |s: &str| {
                let s = s.to_lowercase();
                s.ends_with(".jpg") || s.ends_with(".jpeg") || s.ends_with(".png")
            };
            let Some(ii) = f.iter().position(|s| is_img(s)) else {
                return Err(bad("no field is an image file name (.jpg/.jpeg/.png)"));
            };
            let rest: Vec<usize> = (0..f.len()).filter(|&k| k != ii).collect();
            let li = rest
                .iter()
                .copied()
                .find(|&k| !f[k].is_empty() && images.join(&f[k]).is_dir())
                .or_else(|| {
                    rest.iter()
                        .rev()
                        .copied()
                        .find(|&k| !f[k].contains(' ') && !f[k].is_empty())
                })
                .ok_or_else(|| bad("no field looks like a class label"))?;
            let text: Vec<&str> = rest
                .iter()
                .filter(|&&k| k != li)
                .map(|&k| f[k].as_str())
                .collect();
            (f[ii].clone(), text.join(","), f[li].clone())
        };
        rows.push(CsvRow {
            image,
            text,
            label,
            line: ln + 1,
        });
    }
    if rows.is_empty() {
        return Err(ModbalError::Data(format!("{}: no samples", path.display())));
    }
    Ok(rows)
}

impl Food101 {
    /// Train / validation / test splits; see the [module docs](self).
    pub fn splits(cfg: &Food101Config) -> Result<Splits> {
        check_root("food101", &cfg.root)?;
        if !(cfg.val_fraction > 0.0 && cfg.val_fraction < 1.0) {
            return Err(ModbalError::Config(format!(
                "food101: val_fraction {} must be in (0, 1)",
                cfg.val_fraction
            )));
        }
        let text = cfg.text.load()?;
        let root = &cfg.root;
        let mk = |name: &str,
                  items: Vec<ImageTextItem>,
                  train: bool,
                  classes: usize|
         -> Result<Arc<dyn Dataset>> {
            Ok(Arc::new(ImageTextDataset::new(
                format!("food101 {name}"),
                items,
                text.clone(),
                cfg.image_size,
                train,
                classes,
                cfg.workers,
            )?))
        };
        if root.join("train.jsonl").is_file() {
            let mut classes: Vec<String> = Vec::new();
            for f in ["train.jsonl", "dev.jsonl", "test.jsonl"] {
                let mut add = |l: &str| {
                    if !classes.iter().any(|c| c == l) {
                        classes.push(l.to_string());
                    }
                    Some(0)
                };
                read_jsonl(&root.join(f), root, &mut add)?;
            }
            classes.sort();
            let mut class_of = |l: &str| classes.iter().position(|c| c == l).map(|p| p as u32);
            let n = classes.len();
            let tr = read_jsonl(&root.join("train.jsonl"), root, &mut class_of)?;
            let dv = read_jsonl(&root.join("dev.jsonl"), root, &mut class_of)?;
            let te = read_jsonl(&root.join("test.jsonl"), root, &mut class_of)?;
            let s = Splits {
                train: mk("train", tr, true, n)?,
                val: mk("val", dv, false, n)?,
                test: mk("test", te, false, n)?,
            };
            s.validate()?;
            return Ok(s);
        }
        let load = |phase: &str| -> Result<Vec<CsvRow>> {
            let p = root.join("texts").join(format!("{phase}_titles.csv"));
            if !p.is_file() {
                return Err(ModbalError::Data(format!(
                    "food101: {} not found (expected texts/{{train,test}}_titles.csv + images/ or {{train,dev,test}}.jsonl under the root; see datasets/food101/README.md)",
                    p.display()
                )));
            }
            food_rows(&p, &root.join("images").join(phase))
        };
        let train_rows = load("train")?;
        let test_rows = load("test")?;
        let mut classes: Vec<String> = train_rows.iter().map(|r| r.label.clone()).collect();
        classes.sort();
        classes.dedup();
        let items = |phase: &str, rows: Vec<CsvRow>| -> Result<Vec<ImageTextItem>> {
            let dir = root.join("images").join(phase);
            rows.into_iter()
                .map(|r| {
                    let y = classes.binary_search(&r.label).map_err(|_| {
                        ModbalError::Data(format!(
                            "food101 texts/{phase}_titles.csv line {}: label {:?} does not occur in train",
                            r.line, r.label
                        ))
                    })?;
                    let image = if r.image.contains('/') {
                        let p = dir.join(&r.image);
                        if p.is_file() { p } else { root.join(&r.image) }
                    } else {
                        dir.join(&r.label).join(&r.image)
                    };
                    Ok(ImageTextItem { image, text: r.text, label: y as u32 })
                })
                .collect()
        };
        let n = classes.len();
        let train_all = items("train", train_rows)?;
        let test = items("test", test_rows)?;
        let labels: Vec<u32> = train_all.iter().map(|it| it.label).collect();
        let (tr, va) = stratified_split(&labels, n, cfg.val_fraction, cfg.split_seed);
        let pick = |ix: &[usize]| ix.iter().map(|&i| train_all[i].clone()).collect::<Vec<_>>();
        let s = Splits {
            train: mk("train", pick(&tr), true, n)?,
            val: mk("val", pick(&va), false, n)?,
            test: mk("test", test, false, n)?,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Options of [`MvsaSingle`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MvsaConfig {
    pub root: PathBuf,
    pub text: TextEncoding,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Seed of the 60/20/20 split of the raw layout. Default 0.
    #[serde(default)]
    pub split_seed: u64,
    #[serde(default)]
    pub workers: usize,
}

impl MvsaConfig {
    pub fn new(root: impl Into<PathBuf>, text: TextEncoding) -> Self {
        Self {
            root: root.into(),
            text,
            image_size: default_image_size(),
            split_seed: 0,
            workers: 0,
        }
    }
}

/// MVSA-Single; see the [module docs](self).
#[derive(Debug)]
pub struct MvsaSingle;

/// MVSA's classes in label-id order.
pub const MVSA_CLASSES: [&str; 3] = ["negative", "positive", "neutral"];

fn mvsa_class(l: &str) -> Option<u32> {
    MVSA_CLASSES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(l.trim()))
        .map(|p| p as u32)
}

impl MvsaSingle {
    /// Merge a text label and an image label (`None`: conflicting positive/negative pair).
    pub fn merge_labels(text: &str, image: &str) -> Option<&'static str> {
        let (t, i) = (mvsa_class(text)?, mvsa_class(image)?);
        let c = match (t, i) {
            (a, b) if a == b => a,
            (2, b) => b,
            (a, 2) => a,
            _ => return None,
        };
        Some(MVSA_CLASSES[c as usize])
    }

    /// Train / validation / test splits; see the [module docs](self).
    pub fn splits(cfg: &MvsaConfig) -> Result<Splits> {
        check_root("mvsa", &cfg.root)?;
        let root = &cfg.root;
        let text = cfg.text.load()?;
        let mk = |name: &str, items: Vec<ImageTextItem>, train: bool| -> Result<Arc<dyn Dataset>> {
            Ok(Arc::new(ImageTextDataset::new(
                format!("mvsa {name}"),
                items,
                text.clone(),
                cfg.image_size,
                train,
                3,
                cfg.workers,
            )?))
        };
        let (tr, dv, te) = if root.join("train.jsonl").is_file() {
            let mut c = mvsa_class;
            (
                read_jsonl(&root.join("train.jsonl"), root, &mut c)?,
                read_jsonl(&root.join("dev.jsonl"), root, &mut c)?,
                read_jsonl(&root.join("test.jsonl"), root, &mut c)?,
            )
        } else {
            let mut items = Self::raw_items(root)?;
            SeededRng::new(cfg.split_seed).shuffle(&mut items);
            let n = items.len();
            let (a, b) = (n * 6 / 10, n * 2 / 10);
            let te = items.split_off(a + b);
            let dv = items.split_off(a);
            (items, dv, te)
        };
        let s = Splits {
            train: mk("train", tr, true)?,
            val: mk("val", dv, false)?,
            test: mk("test", te, false)?,
        };
        s.validate()?;
        Ok(s)
    }

    /// The raw release's samples (merged labels, conflicts dropped), in label-file order.
    pub fn raw_items(root: &Path) -> Result<Vec<ImageTextItem>> {
        let lf = root.join("labelResultAll.txt");
        if !lf.is_file() {
            return Err(ModbalError::Data(format!(
                "mvsa: neither {} nor {} exists (see datasets/mvsa/README.md)",
                root.join("train.jsonl").display(),
                lf.display()
            )));
        }
        let text = read(&lf, "MVSA label file")?;
        let mut out = Vec::new();
        for (ln, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (ln == 0 && line.to_lowercase().starts_with("id")) {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(labels)) = (parts.next(), parts.next()) else {
                return Err(ModbalError::Data(format!(
                    "{} line {}: expected `ID<TAB>text_label,image_label`, got {line:?}",
                    lf.display(),
                    ln + 1
                )));
            };
            let Some((tl, il)) = labels.split_once(',') else {
                return Err(ModbalError::Data(format!(
                    "{} line {}: expected `text_label,image_label`, got {labels:?}",
                    lf.display(),
                    ln + 1
                )));
            };
            if mvsa_class(tl).is_none() || mvsa_class(il).is_none() {
                return Err(ModbalError::Data(format!(
                    "{} line {}: unknown label in {labels:?} (negative, neutral, positive)",
                    lf.display(),
                    ln + 1
                )));
            }
            let Some(label) = Self::merge_labels(tl, il) else {
                continue;
            };
            let txt = root.join("data").join(format!("{id}.txt"));
            out.push(ImageTextItem {
                image: root.join("data").join(format!("{id}.jpg")),
                text: read(&txt, "MVSA text")?.trim().to_string(),
                label: mvsa_class(label).expect("merged label is a class"),
            });
        }
        Ok(out)
    }
}
