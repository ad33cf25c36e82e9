//! Tiny on-disk datasets in every supported layout, for tests and the loader benchmark.
//!
//! The contents are chosen so that loaders can be checked against closed forms: frame `k`
//! (0-based) of every clip is a constant image of value [`frame_value`]`(k)` in every channel,
//! and the first element of each spectrogram is the clip's label.

use crate::npy::write_npy;
use modbal_core::{ModbalError, Result};
use modbal_tensors::SeededRng;
use std::path::Path;

/// Pixel value (0–255) of frame `k` of every fixture clip.
pub fn frame_value(k: usize) -> u8 {
    (20 + 40 * k).min(255) as u8
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| ModbalError::io("creating", p, e))
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).map_err(|e| ModbalError::io("writing", p, e))
}

/// Write a `width × height` image (RGB if `channels == 3`, grey if 1) of pixels `px(x, y, c)`.
pub fn write_image(
    path: &Path,
    width: u32,
    height: u32,
    channels: usize,
    px: impl Fn(u32, u32, usize) -> u8,
) -> Result<()> {
    let res = if channels == 3 {
        image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([px(x, y, 0), px(x, y, 1), px(x, y, 2)])
        })
        .save(path)
    } else {
        image::GrayImage::from_fn(width, height, |x, y| image::Luma([px(x, y, 0)])).save(path)
    };
    res.map_err(|e| ModbalError::Data(format!("{}: cannot write image: {e}", path.display())))
}

/// Shape of an audio-visual fixture.
#[derive(Clone, Debug)]
pub struct AvFixture {
    pub classes: Vec<String>,
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Spectrogram `[F, T]`.
    pub spec: [usize; 2],
    pub frames_per_clip: usize,
    pub frame_size: (u32, u32),
    /// JPEG frames (else PNG, lossless).
    pub jpeg: bool,
    /// Add a spatial pattern to the frames (so crops and flips change the pixels); without it
    /// every frame is the constant [`frame_value`]`(k)`.
    pub texture: bool,
    pub seed: u64,
}

impl Default for AvFixture {
    fn default() -> Self {
        Self {
            classes: ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            train_per_class: 4,
            test_per_class: 2,
            spec: [16, 12],
            frames_per_clip: 5,
            frame_size: (24, 20),
            jpeg: false,
            texture: false,
            seed: 0,
        }
    }
}

impl AvFixture {
    fn clips(&self) -> Vec<(String, usize, &'static str)> {
        let mut out = Vec::new();
        for (c, _) in self.classes.iter().enumerate() {
            for i in 0..self.train_per_class {
                out.push((format!("tr{c}_{i}"), c, "train"));
            }
            for i in 0..self.test_per_class {
                out.push((format!("te{c}_{i}"), c, "test"));
            }
        }
        out
    }

    fn write_clip(
        &self,
        audio: &Path,
        frames: &Path,
        id: &str,
        label: usize,
        frame_name: &dyn Fn(usize) -> String,
    ) -> Result<()> {
        let mut rng = SeededRng::new(super::derive_seed(&[
            self.seed,
            label as u64,
            id.len() as u64,
        ]));
        let n = self.spec[0] * self.spec[1];
        let mut spec: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        spec[0] = label as f32;
        write_npy(&audio.join(format!("{id}.npy")), &self.spec, &spec)?;
        let dir = frames.join(id);
        mkdir(&dir)?;
        for k in 0..self.frames_per_clip {
            let v = frame_value(k);
            let ext = if self.jpeg { "jpg" } else { "png" };
            let p = dir.join(format!("{}.{ext}", frame_name(k)));
            let tex = self.texture;
            write_image(&p, self.frame_size.0, self.frame_size.1, 3, |x, y, c| {
                if tex {
                    (v / 2).wrapping_add(((x * 7 + y * 3) as usize + 50 * c) as u8 % 100)
                } else {
                    v
                }
            })?;
        }
        Ok(())
    }

    /// The layout `modbal prepare` writes: `classes.txt`, `splits/{train,test}.csv`,
    /// `audio/<id>.npy`, `visual/<id>/00001.jpg…`.
    pub fn write_prepared(&self, root: &Path) -> Result<()> {
        for d in ["splits", "audio", "visual"] {
            mkdir(&root.join(d))?;
        }
        write(&root.join("classes.txt"), &(self.classes.join("\n") + "\n"))?;
        write(&root.join("manifest.json"), "{\"dataset\": \"fixture\"}\n")?;
        let mut train = String::from("id,label\n");
        let mut test = String::from("id,label\n");
        for (id, c, split) in self.clips() {
            let line = format!("{id},{}\n", self.classes[c]);
            if split == "train" {
                train.push_str(&line);
            } else {
                test.push_str(&line);
            }
            self.write_clip(&root.join("audio"), &root.join("visual"), &id, c, &|k| {
                format!("{:05}", k + 1)
            })?;
        }
        write(&root.join("splits/train.csv"), &train)?;
        write(&root.join("splits/test.csv"), &test)
    }

    /// OGM-GE's CREMA-D layout: `train.csv` / `test.csv` rows `clip,LABEL` (no header),
    /// `audio/<clip>.npy`, `Image-01-FPS/<clip>/frame_0000{k}.jpg`.
    pub fn write_legacy_cremad(&self, root: &Path) -> Result<()> {
        mkdir(&root.join("audio"))?;
        mkdir(&root.join("Image-01-FPS"))?;
        let (mut train, mut test) = (String::new(), String::new());
        for (id, c, split) in self.clips() {
            let line = format!("{id},{}\n", self.classes[c]);
            if split == "train" {
                train.push_str(&line);
            } else {
                test.push_str(&line);
            }
            self.write_clip(
                &root.join("audio"),
                &root.join("Image-01-FPS"),
                &id,
                c,
                &|k| format!("frame_{k:05}"),
            )?;
        }
        write(&root.join("train.csv"), &train)?;
        write(&root.join("test.csv"), &test)
    }

    /// AVE's layout: `trainSet.txt` / `testSet.txt` rows `Category&VideoID&good&0&10`.
    pub fn write_legacy_ave(&self, root: &Path) -> Result<()> {
        mkdir(&root.join("audio"))?;
        mkdir(&root.join("visual"))?;
        let (mut train, mut test) = (String::new(), String::new());
        for (id, c, split) in self.clips() {
            let line = format!("{}&{id}&good&0&10\n", self.classes[c]);
            if split == "train" {
                train.push_str(&line);
            } else {
                test.push_str(&line);
            }
            self.write_clip(&root.join("audio"), &root.join("visual"), &id, c, &|k| {
                format!("{:05}", k + 1)
            })?;
        }
        write(&root.join("trainSet.txt"), &train)?;
        write(&root.join("testSet.txt"), &test)
    }

    /// VGGSound's `vggsound.csv` (`ytid,start,label,split`), clips `<ytid>_<start:06>`.
    pub fn write_legacy_vggsound(&self, root: &Path) -> Result<()> {
        mkdir(&root.join("audio"))?;
        mkdir(&root.join("visual"))?;
        let mut csv = String::new();
        for (id, c, split) in self.clips() {
            let start = 30;
            csv.push_str(&format!(
                "{id},{start},\"{}, loud\",{split}\n",
                self.classes[c]
            ));
            self.write_clip(
                &root.join("audio"),
                &root.join("visual"),
                &format!("{id}_{start:06}"),
                c,
                &|k| format!("{:05}", k + 1),
            )?;
        }
        write(&root.join("vggsound.csv"), &csv)
    }
}

/// Four MNIST IDX files of `n_train` / `n_test` synthetic 28×28 "digits": class `y` is a
/// bright 6×6 square at a class-specific place plus faint noise; labels cycle 0..9.
pub fn write_mnist(root: &Path, n_train: usize, n_test: usize, seed: u64) -> Result<()> {
    mkdir(root)?;
    let mut rng = SeededRng::new(seed);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut img = Vec::with_capacity(16 + n * 784);
        for w in [0x0803u32, n as u32, 28, 28] {
            img.extend(w.to_be_bytes());
        }
        let mut lab = Vec::with_capacity(8 + n);
        for w in [0x0801u32, n as u32] {
            lab.extend(w.to_be_bytes());
        }
        for i in 0..n {
            let y = i % 10;
            let (oy, ox) = (2 + (y / 5) * 14, 2 + (y % 5) * 5);
            for r in 0..28 {
                for c in 0..28 {
                    let on = r >= oy && r < oy + 6 && c >= ox && c < ox + 5;
                    let noise = (rng.uniform() * 30.0) as u8;
                    img.push(if on { 200 + noise / 2 } else { noise });
                }
            }
            lab.push(y as u8);
        }
        let ip = root.join(format!("{prefix}-images-idx3-ubyte"));
        let lp = root.join(format!("{prefix}-labels-idx1-ubyte"));
        std::fs::write(&ip, img).map_err(|e| ModbalError::io("writing", &ip, e))?;
        std::fs::write(&lp, lab).map_err(|e| ModbalError::io("writing", &lp, e))?;
    }
    Ok(())
}

/// A UCF-101 tree with `classes` classes, `train`/`test` videos per class, `rgb_frames` RGB
/// frames and `rgb_frames − 1` flow frames per video; flow u frame `k` has value
/// `frame_value(k)`, v frame `k` value `255 − frame_value(k)`.
pub fn write_ucf101(
    root: &Path,
    classes: usize,
    train: usize,
    test: usize,
    rgb_frames: usize,
) -> Result<()> {
    let sd = root.join("ucfTrainTestlist");
    mkdir(&sd)?;
    let names: Vec<String> = (0..classes).map(|c| format!("Action{c}")).collect();
    let ci: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}\n", i + 1))
        .collect();
    write(&sd.join("classInd.txt"), &ci)?;
    let (mut tl, mut te) = (String::new(), String::new());
    for (c, n) in names.iter().enumerate() {
        for g in 0..train + test {
            let vid = format!("v_{n}_g{:02}_c01", g + 1);
            if g < train {
                tl.push_str(&format!("{n}/{vid}.avi {}\n", c + 1));
            } else {
                te.push_str(&format!("{n}/{vid}.avi\n"));
            }
            for (dir, count, ch) in [
                ("rgb", rgb_frames, 3),
                ("flow/u", rgb_frames - 1, 1),
                ("flow/v", rgb_frames - 1, 1),
            ] {
                let d = root.join(dir).join(&vid);
                mkdir(&d)?;
                for k in 0..count {
                    let v = if dir == "flow/v" {
                        255 - frame_value(k)
                    } else {
                        frame_value(k)
                    };
                    write_image(
                        &d.join(format!("frame{:06}.jpg", k + 1)),
                        20,
                        16,
                        ch,
                        |_, _, _| v,
                    )?;
                }
            }
        }
    }
    write(&sd.join("trainlist01.txt"), &tl)?;
    write(&sd.join("testlist01.txt"), &te)
}

/// An NYU Depth v2 tree in the list layout (`train.txt`, `test.txt`: `rgb depth label`), with
/// RGB value `10·(label+1)` and 16-bit depth `1000·(label+1)` mm.
pub fn write_nyu(root: &Path, classes: &[&str], train: usize, test: usize) -> Result<()> {
    mkdir(&root.join("rgb"))?;
    mkdir(&root.join("depth"))?;
    let (mut tl, mut te) = (String::new(), String::new());
    for (c, name) in classes.iter().enumerate() {
        for i in 0..train + test {
            let id = format!("{name}_{i:04}");
            let rgb = format!("rgb/{id}.jpg");
            let depth = format!("depth/{id}.png");
            let v = (10 * (c + 1)) as u8;
            write_image(&root.join(&rgb), 32, 24, 3, |_, _, _| v)?;
            let d = (1000 * (c + 1)) as u16;
            image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(32, 24, |_, _| {
                image::Luma([d])
            })
            .save(root.join(&depth))
            .map_err(|e| ModbalError::Data(format!("{depth}: {e}")))?;
            let line = format!("{rgb} {depth} {name}\n");
            if i < train {
                tl.push_str(&line);
            } else {
                te.push_str(&line);
            }
        }
    }
    write(&root.join("train.txt"), &tl)?;
    write(&root.join("test.txt"), &te)
}
