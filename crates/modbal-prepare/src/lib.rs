//! # modbal-prepare: raw audio-visual datasets → the layout modbal's loaders read
//!
//! `modbal prepare <dataset> --raw DIR --out DIR [--recipe NAME] [--jobs N]` for `crema-d`,
//! `kinetics-sounds`, `ave` and `vggsound`. Output:
//!
//! ```text
//! <out>/manifest.json        dataset, recipe + parameters, tool versions, counts per split and class,
//!                            skipped clips with reasons, split source
//! <out>/classes.txt          one class name per line; line index = label id
//! <out>/splits/<split>.csv   header `id,label` (label = class name); train, test (+ val if the raw data has one)
//! <out>/audio/<id>.npy       f32, C order: [freq, time] for ogm-ge / ave, [time, mel] for fbank
//! <out>/visual/<id>/00001.jpg, 00002.jpg, ...   1 fps frames
//! ```
//!
//! Every clip is either prepared (listed in a split file) or reported in `manifest.json`
//! `skipped` with the file at fault and the reason; [`PrepareReport::skipped`] non-empty ⇒ the CLI
//! exits with [`EXIT_SKIPPED`]. Outputs are written to temporary names and renamed, so an
//! interrupted run leaves no half-written array; a re-run reuses every complete clip (audio array
//! of the exact expected size and frame folder present) and computes only the rest.
//!
//! # Example
//!
//! ```
//! use modbal_prepare::{default_recipe, prepare, PrepareOptions};
//!
//! // `modbal prepare crema-d --raw data/CREMA-D --out datasets/crema-d`
//! let opts = PrepareOptions {
//!     dataset: "crema-d".into(),
//!     raw: "data/CREMA-D".into(),
//!     out: "datasets/crema-d".into(),
//!     recipe: None, // the dataset's default recipe
//!     jobs: 0,      // all cores
//!     progress: false,
//! };
//! assert_eq!(default_recipe(&opts.dataset), "ogm-ge");
//! // With the raw download in place, `prepare(&opts)?` writes the layout above and returns
//! // what it prepared, reused and skipped. A wrong dataset name is refused before anything is
//! // read or written, with the valid names:
//! let typo = PrepareOptions { dataset: "cremad".into(), ..opts.clone() };
//! assert!(prepare(&typo).unwrap_err().to_string().contains("crema-d"));
//! ```

pub mod csv;
pub mod error;
pub mod layout;
pub mod media;

pub use error::{PrepareError, Result};
pub use layout::{Item, Scan, Skipped, Split, DATASET_NAMES};

use indicatif::{ProgressBar, ProgressStyle};
use layout::{AudioSource, VisualSource};
use modbal_audio::npy::{npy_bytes, npy_file_len};
use modbal_audio::{decode_file, Recipe};
use rayon::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Exit status of `modbal prepare` when it finished but skipped at least one clip
/// (0: everything prepared; 1: an error stopped it; 2: bad command line).
pub const EXIT_SKIPPED: i32 = 3;

/// The recipe used when `--recipe` is not given.
pub fn default_recipe(dataset: &str) -> &'static str {
    match dataset {
        "crema-d" => "ogm-ge",
        "ave" => "ave",
        _ => "fbank", // kinetics-sounds, vggsound: MMPareto / BalanceMM
    }
}

/// Options of [`prepare`].
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub dataset: String,
    pub raw: PathBuf,
    pub out: PathBuf,
    /// `None`: [`default_recipe`].
    pub recipe: Option<String>,
    /// Worker threads; 0 = all cores.
    pub jobs: usize,
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct PrepareReport {
    /// Clips in the splits after this run (prepared now + reused).
    pub total: usize,
    pub prepared: usize,
    pub reused: usize,
    pub skipped: Vec<Skipped>,
    pub manifest: PathBuf,
    pub seconds: f64,
}

enum Outcome {
    Prepared,
    Reused,
    Skipped(Skipped),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + '_ {
    move |e| PrepareError::io(path, e)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

struct Ctx<'a> {
    out: &'a Path,
    recipe: &'a Recipe,
    npy_len: u64,
    ffmpeg: Option<&'a Path>,
}

impl Ctx<'_> {
    fn audio_path(&self, id: &str) -> PathBuf {
        self.out.join("audio").join(format!("{id}.npy"))
    }
    fn visual_path(&self, id: &str) -> PathBuf {
        self.out.join("visual").join(id)
    }
    fn complete(&self, id: &str) -> bool {
        std::fs::metadata(self.audio_path(id)).is_ok_and(|m| m.len() == self.npy_len)
            && self.visual_path(id).is_dir()
    }

    fn process(&self, item: &Item) -> Outcome {
        let skip = |file: Option<&Path>, reason: String| {
            Outcome::Skipped(Skipped {
                id: item.id.clone(),
                split: Some(item.split),
                file: file.map(|p| p.display().to_string()),
                reason,
            })
        };
        if item.id.is_empty() || item.id.starts_with('.') || item.id.contains(['/', '\\']) {
            return skip(None, "clip id is not a plain file name".into());
        }
        match (&item.audio, &item.visual) {
            (AudioSource::Missing(r), _) => return skip(None, r.clone()),
            (_, VisualSource::Missing(r)) => return skip(None, r.clone()),
            _ => {}
        }
        if self.complete(&item.id) {
            return Outcome::Reused;
        }
        let tag = format!("tmp-{}", std::process::id());
        // Visual first (cheap checks), into a temporary folder.
        let vdst = self.visual_path(&item.id);
        let vtmp = self.out.join("visual").join(format!(".{}.{tag}", item.id));
        let _ = std::fs::remove_dir_all(&vtmp);
        let visual_done = vdst.is_dir();
        if !visual_done {
            if let Err(e) = std::fs::create_dir_all(&vtmp) {
                return skip(Some(&vtmp), format!("cannot create: {e}"));
            }
            let r = match &item.visual {
                VisualSource::Frames(dir) => media::list_frames(dir)
                    .map_err(|e| (dir.clone(), e))
                    .and_then(|frames| {
                        for f in &frames {
                            media::check_jpeg(f).map_err(|e| (f.clone(), e))?;
                        }
                        media::copy_frames(&frames, &vtmp).map_err(|e| (dir.clone(), e))
                    }),
                VisualSource::Video(v) => match self.ffmpeg {
                    Some(ff) => media::extract_frames(ff, v, &vtmp).map_err(|e| (v.clone(), e)),
                    None => Err((
                        v.clone(),
                        "ffmpeg not found on PATH (needed to extract frames)".into(),
                    )),
                },
                VisualSource::Missing(_) => unreachable!("handled above"),
            };
            if let Err((file, reason)) = r {
                let _ = std::fs::remove_dir_all(&vtmp);
                return skip(Some(&file), reason);
            }
        }
        // Audio.
        let audio = match &item.audio {
            AudioSource::File(p) => decode_file(p).map_err(|e| (p.clone(), e.to_string())),
            AudioSource::Video(v) => self.video_audio(v, &tag),
            AudioSource::Missing(_) => unreachable!("handled above"),
        };
        let feature = audio.and_then(|a| {
            self.recipe.compute(&a).map_err(|e| {
                let file = match &item.audio {
                    AudioSource::File(p) | AudioSource::Video(p) => p.clone(),
                    AudioSource::Missing(_) => PathBuf::new(),
                };
                (file, e.to_string())
            })
        });
        let feature = match feature {
            Ok(f) => f,
            Err((file, reason)) => {
                let _ = std::fs::remove_dir_all(&vtmp);
                return skip(Some(&file), reason);
            }
        };
        let adst = self.audio_path(&item.id);
        let atmp = self
            .out
            .join("audio")
            .join(format!(".{}.npy.{tag}", item.id));
        let bytes = npy_bytes(&feature.shape, &feature.data);
        let res = std::fs::write(&atmp, &bytes)
            .and_then(|_| std::fs::rename(&atmp, &adst))
            .map_err(|e| (adst.clone(), e))
            .and_then(|_| {
                if visual_done {
                    Ok(())
                } else {
                    std::fs::rename(&vtmp, &vdst).map_err(|e| (vdst.clone(), e))
                }
            });
        if let Err((p, e)) = res {
            let _ = std::fs::remove_file(&atmp);
            let _ = std::fs::remove_dir_all(&vtmp);
            return skip(Some(&p), format!("cannot write: {e}"));
        }
        Outcome::Prepared
    }

    fn video_audio(
        &self,
        video: &Path,
        tag: &str,
    ) -> std::result::Result<modbal_audio::Audio, (PathBuf, String)> {
        if let Some(ff) = self.ffmpeg {
            let name = video.file_stem().unwrap_or_default().to_string_lossy();
            let wav = self.out.join("audio").join(format!(".{name}.wav.{tag}"));
            let r = media::extract_audio(ff, video, &wav)
                .and_then(|_| decode_file(&wav).map_err(|e| e.to_string()))
                .map_err(|e| (video.to_path_buf(), e));
            let _ = std::fs::remove_file(&wav);
            r
        } else {
            decode_file(video).map_err(|e| {
                (video.to_path_buf(), format!("{e} (ffmpeg not found on PATH; with ffmpeg the audio track would be extracted by it)"))
            })
        }
    }
}

/// Runs `modbal prepare` (see the crate docs).
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    let start = Instant::now();
    if !DATASET_NAMES.contains(&opts.dataset.as_str()) {
        return Err(PrepareError::Usage(format!(
            "unknown dataset {:?}; valid choices: {}",
            opts.dataset,
            DATASET_NAMES.join(", ")
        )));
    }
    let recipe_name = opts
        .recipe
        .clone()
        .unwrap_or_else(|| default_recipe(&opts.dataset).to_string());
    let recipe = Recipe::from_name(&recipe_name).map_err(|e| PrepareError::Usage(e.to_string()))?;
    recipe.validate()?;
    let recipe_json = serde_json::to_value(&recipe).expect("recipe serialises");
    let manifest_path = opts.out.join("manifest.json");
    if manifest_path.is_file() {
        let old: serde_json::Value = std::fs::read_to_string(&manifest_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| {
                PrepareError::layout(
                    &manifest_path,
                    None,
                    "existing manifest is unreadable; remove it or use a new --out",
                )
            })?;
        if old["dataset"] != json!(opts.dataset) || old["recipe"] != recipe_json {
            return Err(PrepareError::Usage(format!(
                "{} was prepared as dataset {} with recipe {}; this run asks for {} with {}: use another --out",
                opts.out.display(),
                old["dataset"],
                old["recipe"]["name"],
                opts.dataset,
                recipe.name()
            )));
        }
    }
    let scan = layout::scan(&opts.dataset, &opts.raw)?;
    let ffmpeg = media::find_ffmpeg();
    let ctx_probe = Ctx {
        out: &opts.out,
        recipe: &recipe,
        npy_len: npy_file_len(&recipe.output_shape()),
        ffmpeg: ffmpeg.as_deref(),
    };
    if ffmpeg.is_none() {
        let need: Vec<&Item> = scan
            .items
            .iter()
            .filter(|i| {
                matches!(i.visual, VisualSource::Video(_)) && !ctx_probe.visual_path(&i.id).is_dir()
            })
            .collect();
        if let Some(first) = need.first() {
            let VisualSource::Video(v) = &first.visual else {
                unreachable!()
            };
            return Err(PrepareError::MissingTool(format!(
                "ffmpeg not found on PATH: it is needed to extract 1 fps frames from {} video(s), e.g. {}. \
                 Install ffmpeg, or put pre-extracted frame folders <id>/*.jpg under {}/frames/",
                need.len(),
                v.display(),
                opts.raw.display()
            )));
        }
    }
    for d in ["audio", "visual", "splits"] {
        let p = opts.out.join(d);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.jobs
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| PrepareError::Usage(format!("cannot start {jobs} worker threads: {e}")))?;
    let bar = if opts.progress {
        let b = ProgressBar::new(scan.items.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} clips, {per_sec}, eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_prefix(format!("prepare {}", opts.dataset));
        b
    } else {
        ProgressBar::hidden()
    };
    let ctx = ctx_probe;
    let outcomes: Vec<Outcome> = pool.install(|| {
        scan.items
            .par_iter()
            .map(|item| {
                let o = ctx.process(item);
                bar.inc(1);
                o
            })
            .collect()
    });
    bar.finish_and_clear();

    let mut skipped = scan.problems.clone();
    let (mut prepared, mut reused) = (0, 0);
    let mut by_split: BTreeMap<Split, Vec<&Item>> = BTreeMap::new();
    for (item, o) in scan.items.iter().zip(outcomes) {
        match o {
            Outcome::Prepared => prepared += 1,
            Outcome::Reused => reused += 1,
            Outcome::Skipped(s) => {
                skipped.push(s);
                continue;
            }
        }
        by_split.entry(item.split).or_default().push(item);
    }
    // Splits, classes, manifest.
    let mut counts = serde_json::Map::new();
    for split in [Split::Train, Split::Val, Split::Test] {
        // A split the raw data defines gets its file even when every clip of it was skipped.
        if !scan.items.iter().any(|i| i.split == split) {
            continue;
        }
        let items = by_split.entry(split).or_default();
        items.sort_by(|a, b| a.id.cmp(&b.id));
        let mut text = String::from("id,label\n");
        let mut per_class: BTreeMap<&str, usize> =
            scan.classes.iter().map(|c| (c.as_str(), 0)).collect();
        for it in items.iter() {
            let label = if it.label.contains([',', '"']) {
                format!("\"{}\"", it.label.replace('"', "\"\""))
            } else {
                it.label.clone()
            };
            text.push_str(&format!("{},{label}\n", it.id));
            *per_class.entry(&it.label).or_default() += 1;
        }
        write_atomic(
            &opts
                .out
                .join("splits")
                .join(format!("{}.csv", split.as_str())),
            text.as_bytes(),
        )?;
        let ordered: serde_json::Map<String, serde_json::Value> = scan
            .classes
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    json!(per_class.get(c.as_str()).copied().unwrap_or(0)),
                )
            })
            .collect();
        counts.insert(split.as_str().into(), serde_json::Value::Object(ordered));
    }
    write_atomic(
        &opts.out.join("classes.txt"),
        (scan.classes.join("\n") + "\n").as_bytes(),
    )?;
    let total = prepared + reused;
    let mut tools = modbal_audio::decoder_versions();
    tools["modbal-prepare"] = json!(env!("CARGO_PKG_VERSION"));
    tools["ffmpeg"] = json!(ffmpeg.as_deref().and_then(media::ffmpeg_version));
    let shape = recipe.output_shape();
    let manifest = json!({
        "dataset": opts.dataset,
        "raw": opts.raw.display().to_string(),
        "recipe": recipe_json,
        "audio": {
            "dtype": "float32",
            "order": "C",
            "shape": shape,
            "axes": recipe.axes(),
            "sample_rate": recipe.sample_rate(),
            "path": "audio/<id>.npy",
        },
        "visual": { "fps": 1, "path": "visual/<id>/<00001..>.jpg", "frames": "1-based, 5-digit, in time order" },
        "split_source": scan.split_source,
        "classes": scan.classes,
        "counts": counts,
        "total": total,
        "prepared_this_run": prepared,
        "reused": reused,
        "skipped_count": skipped.len(),
        "skipped": skipped,
        "unlisted_count": scan.unlisted.len(),
        "unlisted_examples": scan.unlisted.iter().take(20).collect::<Vec<_>>(),
        "tools": tools,
    });
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    write_atomic(&manifest_path, text.as_bytes())?;
    Ok(PrepareReport {
        total,
        prepared,
        reused,
        skipped,
        manifest: manifest_path,
        seconds: start.elapsed().as_secs_f64(),
    })
}
