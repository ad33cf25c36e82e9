//! UCF-101: RGB frames and TV-L1 optical flow (u, v) as two modalities.
//!
//! Modalities: `rgb` `[3, T, S, S]` (ImageNet-normalised) and `flow` `[2, T, S, S]`, the u and
//! v flow images of the same time steps as two channels, each `(p/255 − flow_mean)/flow_std`.
//! The `T` time steps are segment positions (see [`crate::vision::segment_indices`]) drawn once
//! per sample and applied to both modalities' frame lists, so RGB and flow stay aligned even
//! when the flow folders hold one frame fewer. Training: `RandomResizedCrop` + flip per RGB
//! frame; one crop + flip per flow time step shared by u and v; a flip mirrors the flow field,
//! so u is negated (`p → 255 − p`). Evaluation: resize to `S × S`.
//!
//! Layout under `root` (folder names are options):
//! ```text
//! ucfTrainTestlist/classInd.txt          "1 ApplyEyeMakeup" (1-based)
//! ucfTrainTestlist/trainlist01.txt        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
//! ucfTrainTestlist/testlist01.txt         "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
//! rgb/v_ApplyEyeMakeup_g08_c01/*.jpg      (or rgb/ApplyEyeMakeup/v_.../)
//! flow/u/v_ApplyEyeMakeup_g08_c01/*.jpg   (flow/v/... the same)
//! ```
//! `split` = 1, 2 or 3 picks the official list pair; `classes` (names) restricts the data to a
//! subset (e.g. ARM's UCF-51), relabelled in `classInd.txt` order. Validation: a stratified
//! `val_fraction` of the training list (by video: clips of one group `gNN` can fall on both
//! sides, as in the papers that carve one).

use super::{
    check_fraction, check_root, lines, parallel_get, read_text, resolve_workers, stratified_split,
    AugState, FrameDir, OnMissing, SkipLog,
};
use crate::dataset::{Dataset, Sample, Splits};
use crate::vision::{
    crop_resize, decode_gray, decode_rgb, normalize, segment_indices, ImageTransform,
    IMAGENET_MEAN, IMAGENET_STD,
};
use modbal_core::{ModbalError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of `ucf101`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ucf101Config {
    pub root: PathBuf,
    /// Official split 1, 2 or 3.
    pub split: usize,
    pub frames: usize,
    pub image_size: usize,
    pub augment: bool,
    pub crop_scale: [f64; 2],
    pub crop_ratio: [f64; 2],
    pub hflip: bool,
    pub flow_mean: f32,
    pub flow_std: f32,
    /// Class subset (names); empty: all classes of `classInd.txt`.
    pub classes: Vec<String>,
    pub split_dir: String,
    pub rgb_dir: String,
    pub flow_u_dir: String,
    pub flow_v_dir: String,
    pub val_fraction: f64,
    pub split_seed: u64,
    pub on_missing: OnMissing,
    pub workers: usize,
}

impl Default for Ucf101Config {
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            split: 1,
            frames: 3,
            image_size: 224,
            augment: true,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: true,
            flow_mean: 0.5,
            flow_std: 0.226,
            classes: Vec::new(),
            split_dir: "ucfTrainTestlist".into(),
            rgb_dir: "rgb".into(),
            flow_u_dir: "flow/u".into(),
            flow_v_dir: "flow/v".into(),
            val_fraction: 0.1,
            split_seed: 0,
            on_missing: OnMissing::Error,
            workers: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct Video {
    name: String,
    label: u32,
    rgb: FrameDir,
    u: FrameDir,
    v: FrameDir,
}

fn video_dir(base: &Path, class: &str, video: &str) -> PathBuf {
    let flat = base.join(video);
    if flat.is_dir() {
        flat
    } else {
        let nested = base.join(class).join(video);
        if nested.is_dir() {
            nested
        } else {
            flat
        }
    }
}

impl Ucf101Config {
    #[allow(clippy::type_complexity)]
    pub fn build_splits(
        &self,
    ) -> Result<(Arc<Ucf101Dataset>, Arc<Ucf101Dataset>, Arc<Ucf101Dataset>)> {
        check_root("ucf101", &self.root)?;
        check_fraction(self.val_fraction)?;
        if !(1..=3).contains(&self.split) || self.frames == 0 || self.flow_std <= 0.0 {
            return Err(ModbalError::Config(format!(
                "dataset.split must be 1, 2 or 3, dataset.frames > 0, dataset.flow_std > 0 (got {}, {}, {})",
                self.split, self.frames, self.flow_std
            )));
        }
        let transform = ImageTransform {
            size: self.image_size,
            random_crop: self.augment,
            scale: self.crop_scale,
            ratio: self.crop_ratio,
            hflip: self.augment && self.hflip,
        };
        transform.validate("dataset")?;
        let sd = self.root.join(&self.split_dir);
        let ci = sd.join("classInd.txt");
        let mut all = Vec::new();
        for (ln, l) in lines(&read_text(&ci, "class index")?) {
            let mut it = l.split_whitespace();
            match (it.next().and_then(|x| x.parse::<usize>().ok()), it.next()) {
                (Some(_), Some(name)) => all.push(name.to_string()),
                _ => {
                    return Err(ModbalError::Data(format!(
                        "{} line {ln}: expected \"<index> <ClassName>\", got {l:?}",
                        ci.display()
                    )))
                }
            }
        }
        let classes: Vec<String> = if self.classes.is_empty() {
            all.clone()
        } else {
            for c in &self.classes {
                if !all.contains(c) {
                    return Err(ModbalError::Config(format!(
                        "dataset.classes: {c:?} is not in {}",
                        ci.display()
                    )));
                }
            }
            all.iter()
                .filter(|c| self.classes.contains(c))
                .cloned()
                .collect()
        };
        let read_list = |file: PathBuf| -> Result<(Vec<Video>, SkipLog)> {
            let text = read_text(&file, "split list")?;
            let mut log = SkipLog::default();
            let mut out = Vec::new();
            for (ln, l) in lines(&text) {
                let path = l.split_whitespace().next().unwrap_or("");
                let Some((class, fname)) = path.rsplit_once('/') else {
                    return Err(ModbalError::Data(format!(
                        "{} line {ln}: expected \"ClassName/v_..._gNN_cNN.avi [label]\", got {l:?}",
                        file.display()
                    )));
                };
                let class = class.rsplit('/').next().unwrap_or(class);
                if !all.iter().any(|c| c == class) {
                    return Err(ModbalError::Data(format!(
                        "{} line {ln}: class {class:?} is not in {}",
                        file.display(),
                        ci.display()
                    )));
                }
                let Some(label) = classes.iter().position(|c| c == class) else {
                    continue; // outside the requested subset
                };
                let name = fname.rsplit_once('.').map(|x| x.0).unwrap_or(fname);
                let open = |dir: &str| FrameDir::open(video_dir(&self.root.join(dir), class, name));
                let opened = open(&self.rgb_dir).and_then(|rgb| {
                    let u = open(&self.flow_u_dir)?;
                    let v = open(&self.flow_v_dir)?;
                    if u.len() != v.len() {
                        return Err(format!(
                            "flow folders {} ({} frames) and {} ({} frames) differ in length",
                            u.dir.display(),
                            u.len(),
                            v.dir.display(),
                            v.len()
                        ));
                    }
                    Ok((rgb, u, v))
                });
                match opened {
                    Ok((rgb, u, v)) => out.push(Video {
                        name: name.to_string(),
                        label: label as u32,
                        rgb,
                        u,
                        v,
                    }),
                    Err(m) => log.handle(
                        self.on_missing,
                        format!("{m} (video {name}, {} line {ln})", file.display()),
                    )?,
                }
            }
            Ok((out, log))
        };
        let (train_all, train_log) = read_list(sd.join(format!("trainlist0{}.txt", self.split)))?;
        let (test, test_log) = read_list(sd.join(format!("testlist0{}.txt", self.split)))?;
        train_log.warn("ucf101", "train");
        test_log.warn("ucf101", "test");
        let labels: Vec<u32> = train_all.iter().map(|v| v.label).collect();
        let (tr, va) = stratified_split(&labels, classes.len(), self.val_fraction, self.split_seed);
        let pick =
            |ix: &[usize]| -> Vec<Video> { ix.iter().map(|&i| train_all[i].clone()).collect() };
        let s = self.image_size;
        let make = |videos: Vec<Video>, split: &str, train: bool, skipped: Vec<String>| {
            Arc::new(Ucf101Dataset {
                split: split.into(),
                modalities: vec!["rgb".into(), "flow".into()],
                shapes: vec![vec![3, self.frames, s, s], vec![2, self.frames, s, s]],
                classes: classes.clone(),
                videos,
                frames: self.frames,
                transform: transform.clone(),
                flow_mean: self.flow_mean,
                flow_std: self.flow_std,
                train,
                aug: AugState::default(),
                workers: resolve_workers(self.workers),
                skipped,
            })
        };
        Ok((
            make(pick(&tr), "train", true, train_log.entries),
            make(pick(&va), "val", false, Vec::new()),
            make(test, "test", false, test_log.entries),
        ))
    }

    pub fn build(&self) -> Result<Splits> {
        let (train, val, test) = self.build_splits()?;
        Ok(Splits { train, val, test })
    }
}

/// One UCF-101 split (see the [module docs](self)).
pub struct Ucf101Dataset {
    split: String,
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
    classes: Vec<String>,
    videos: Vec<Video>,
    frames: usize,
    transform: ImageTransform,
    flow_mean: f32,
    flow_std: f32,
    train: bool,
    aug: AugState,
    workers: usize,
    skipped: Vec<String>,
}

impl Ucf101Dataset {
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
    pub fn video_name(&self, i: usize) -> &str {
        &self.videos[i].name
    }

    fn load(&self, i: usize) -> Result<Sample> {
        let vid = &self.videos[i];
        let mut rng = self.train.then(|| self.aug.rng(i));
        // The same segment positions for both modalities: draw them with a copy of the stream.
        let mut rng_flow = rng.clone();
        let ri = segment_indices(vid.rgb.len(), self.frames, rng.as_mut());
        let fi = segment_indices(vid.u.len(), self.frames, rng_flow.as_mut());
        let (t_n, s) = (self.frames, self.transform.size);
        let plane = s * s;
        let mut rgb = vec![0.0f32; 3 * t_n * plane];
        let mut flow = vec![0.0f32; 2 * t_n * plane];
        for t in 0..t_n {
            let img = decode_rgb(&vid.rgb.path(ri[t]))?;
            let (b, flip) = self.transform.draw(img.width, img.height, rng.as_mut());
            let mut out = crop_resize(&img, b, s, s, flip);
            normalize(&mut out, &IMAGENET_MEAN, &IMAGENET_STD);
            for c in 0..3 {
                rgb[(c * t_n + t) * plane..(c * t_n + t + 1) * plane]
                    .copy_from_slice(&out[c * plane..(c + 1) * plane]);
            }
            let u = decode_gray(&vid.u.path(fi[t]))?;
            let v = decode_gray(&vid.v.path(fi[t]))?;
            if (u.width, u.height) != (v.width, v.height) {
                return Err(ModbalError::Data(format!(
                    "{} is {}×{} but {} is {}×{}",
                    vid.u.path(fi[t]).display(),
                    u.width,
                    u.height,
                    vid.v.path(fi[t]).display(),
                    v.width,
                    v.height
                )));
            }
            let (b, flip) = self.transform.draw(u.width, u.height, rng.as_mut());
            for (c, img) in [u, v].iter().enumerate() {
                let out = crop_resize(img, b, s, s, flip);
                let dst = &mut flow[(c * t_n + t) * plane..(c * t_n + t + 1) * plane];
                for (d, &x) in dst.iter_mut().zip(&out) {
                    // A mirrored flow field has the opposite horizontal component.
                    let x = if flip && c == 0 { 1.0 - x } else { x };
                    *d = (x - self.flow_mean) / self.flow_std;
                }
            }
        }
        Ok(Sample {
            inputs: vec![rgb, flow],
            label: vid.label,
        })
    }
}

impl Dataset for Ucf101Dataset {
    fn len(&self) -> usize {
        self.videos.len()
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
            self.videos.len(),
            || self.load(i),
            || {
                format!(
                    "ucf101 {} sample {i} (video {})",
                    self.split, self.videos[i].name
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
