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
//! exits with [`EXIT_SKIPPED`]. A bad clip never stops the run: headers are checked before
//! decoding (`modbal_audio::header`), sizes derived from them are bounded, and a panic while
//! preparing one clip (a decoder bug on a malformed file) is caught and recorded as that clip's
//! skip reason (such panics print nothing; their message is the reason).
//!
//! # Crash safety
//!
//! Every file is written under a temporary name (`.<name>.tmp-<pid>`, frame folders as
//! `.<id>.tmp-<pid>/`), flushed to disk (`fsync`), renamed into place, and the folder is synced,
//! so a killed run leaves no half-written array, split list or manifest. The next run removes the
//! temporaries a killed run left ([`PrepareReport::cleaned`]; on Linux only those whose process
//! is gone, so a run still writing to the same folder keeps its own), reuses every complete clip
//! (audio array of the exact expected size and frame folder present) and computes only the rest:
//! its outputs equal those of an uninterrupted run. For tests, `MODBAL_PREPARE_CRASH_AT=N`
//! aborts the process at its N-th durable step (a temporary written, a rename, a leftover
//! removed; numbered in order with `--jobs 1`). Only one prepare writes an output folder at a
//! time: it holds an OS lock on `<out>/.prepare.lock` (released when the process ends, also by a
//! kill); a second one is refused with an error.
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
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
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
    /// Temporary files and folders left by an interrupted run, removed by this one.
    pub cleaned: usize,
}

enum Outcome {
    Prepared,
    Reused,
    Skipped(Skipped),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + '_ {
    move |e| PrepareError::io(path, e)
}

/// The environment variable of the crash-test hook (see the crate docs).
pub const CRASH_AT_ENV: &str = "MODBAL_PREPARE_CRASH_AT";

/// A durable step: with `MODBAL_PREPARE_CRASH_AT=N`, the N-th call aborts the process (no
/// destructors, no cleanup: what a `kill -9` at this point leaves).
fn crash_point() {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok()?.trim().parse().ok());
    if let Some(at) = *at {
        if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == at {
            std::process::abort();
        }
    }
}

/// The temporary name of `name` (in the same folder): `.<name>.tmp-<pid>`.
fn tmp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", std::process::id())
}

/// The process id in a temporary name of [`tmp_name`] (any process).
fn tmp_pid(name: &str) -> Option<u32> {
    let (_, pid) = name.rsplit_once(".tmp-")?;
    if !name.starts_with('.') || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` runs (Linux: `/proc/<pid>`; elsewhere every other process counts as
/// gone, so a concurrent run there is not protected).
fn process_alive(pid: u32) -> bool {
    pid == std::process::id()
        || (Path::new("/proc/self").exists() && Path::new("/proc").join(pid.to_string()).exists())
}

/// Whether a folder entry is a temporary left by a process that is gone.
fn is_leftover(name: &str) -> bool {
    tmp_pid(name).is_some_and(|pid| !process_alive(pid))
}

/// `bytes` into a new file at `path`, flushed to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Flushes a folder's entries (renames, new files) to disk; a no-op where folders cannot be
/// opened as files.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Flushes every file of `dir` (frames hard-linked, copied or written by ffmpeg) and `dir`.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsync and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(tmp_name(&path.file_name().unwrap().to_string_lossy()));
    if let Err(e) = write_synced(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(PrepareError::io(&tmp, e));
    }
    crash_point();
    std::fs::rename(&tmp, path).map_err(io(path))?;
    crash_point();
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(io(dir))
}

/// Removes what an interrupted run left in `out` (temporaries of [`tmp_name`] whose process is
/// gone); the count.
fn clean_leftovers(out: &Path) -> Result<usize> {
    let mut n = 0;
    for d in [
        out.to_path_buf(),
        out.join("audio"),
        out.join("visual"),
        out.join("splits"),
    ] {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PrepareError::io(&d, e)),
        };
        for e in rd {
            let e = e.map_err(io(&d))?;
            if !is_leftover(&e.file_name().to_string_lossy()) {
                continue;
            }
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io(&p))?;
            n += 1;
            crash_point();
        }
    }
    Ok(n)
}

thread_local! {
    /// Set while this thread prepares a clip: a panic then is that clip's skip reason, not a
    /// message on stderr.
    static IN_CLIP: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that is silent for panics inside a clip's preparation (their
/// message becomes the clip's skip reason) and defers to the previous hook otherwise.
fn quiet_clip_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CLIP.with(Cell::get) {
                prev(info)
            }
        }));
    });
}

/// Runs `f`, the preparation of `item` into `out`; a panic in it becomes the clip's skip reason
/// (its temporaries removed) instead of the end of the run.
fn isolated(out: &Path, item: &Item, f: impl FnOnce() -> Outcome) -> Outcome {
    IN_CLIP.with(|c| c.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_CLIP.with(|c| c.set(false));
    r.unwrap_or_else(|payload| {
        let _ = std::fs::remove_dir_all(out.join("visual").join(tmp_name(&item.id)));
        let _ = std::fs::remove_file(
            out.join("audio")
                .join(tmp_name(&format!("{}.npy", item.id))),
        );
        let file = match &item.audio {
            AudioSource::File(p) | AudioSource::Video(p) => Some(p.display().to_string()),
            AudioSource::Missing(_) => None,
        };
        Outcome::Skipped(Skipped {
            id: item.id.clone(),
            split: Some(item.split),
            file,
            reason: format!(
                "internal error while preparing this clip (panic: {}); please report it with the file",
                modbal_audio::decode::panic_message(payload.as_ref())
            ),
        })
    })
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
        // Visual first (cheap checks), into a temporary folder.
        let vdst = self.visual_path(&item.id);
        let vtmp = self.out.join("visual").join(tmp_name(&item.id));
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
            let r = r.and_then(|()| {
                sync_tree(&vtmp).map_err(|e| (vtmp.clone(), format!("cannot write: {e}")))
            });
            if let Err((file, reason)) = r {
                let _ = std::fs::remove_dir_all(&vtmp);
                return skip(Some(&file), reason);
            }
            crash_point();
        }
        // Audio.
        let audio = match &item.audio {
            AudioSource::File(p) => decode_file(p).map_err(|e| (p.clone(), e.to_string())),
            AudioSource::Video(v) => self.video_audio(v),
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
            .join(tmp_name(&format!("{}.npy", item.id)));
        let bytes = npy_bytes(&feature.shape, &feature.data);
        // Audio first, then the frame folder: a frame folder in place implies its audio array.
        let res = write_synced(&atmp, &bytes)
            .and_then(|_| {
                crash_point();
                std::fs::rename(&atmp, &adst)
            })
            .map_err(|e| (adst.clone(), e))
            .and_then(|_| {
                crash_point();
                if visual_done {
                    Ok(())
                } else {
                    std::fs::rename(&vtmp, &vdst).map_err(|e| (vdst.clone(), e))?;
                    crash_point();
                    Ok(())
                }
            })
            .and_then(|_| {
                for d in [self.out.join("audio"), self.out.join("visual")] {
                    sync_dir(&d).map_err(|e| (d.clone(), e))?;
                }
                Ok(())
            });
        if let Err((p, e)) = res {
            let _ = std::fs::remove_file(&atmp);
            let _ = std::fs::remove_dir_all(&vtmp);
            return skip(Some(&p), format!("cannot write: {e}"));
        }
        Outcome::Prepared
    }

    /// [`Ctx::process`], with a panic caught and recorded as the clip's skip reason.
    fn process_isolated(&self, item: &Item) -> Outcome {
        isolated(self.out, item, || self.process(item))
    }

    fn video_audio(
        &self,
        video: &Path,
    ) -> std::result::Result<modbal_audio::Audio, (PathBuf, String)> {
        if let Some(ff) = self.ffmpeg {
            let name = video.file_stem().unwrap_or_default().to_string_lossy();
            let wav = self
                .out
                .join("audio")
                .join(tmp_name(&format!("{name}.wav")));
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
/// Lock `out/.prepare.lock` for this process, or say that another prepare is writing there.
fn lock_out(out: &Path) -> Result<std::fs::File> {
    let p = out.join(".prepare.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .map_err(io(&p))?;
    // A child forked by another thread may hold a copy of a descriptor for a moment: retry for
    // up to two seconds before calling the folder busy.
    let mut tries = 0;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(PrepareError::Usage(format!(
                    "{} is being prepared by another modbal process: wait for it to finish or \
                     use another --out",
                    out.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(PrepareError::io(&p, e)),
        }
    }
}

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
    // One prepare per output folder: an OS lock held until this function returns (released by
    // the OS if the process dies), so two runs never write or clean the same folder.
    let _lock = lock_out(&opts.out)?;
    let cleaned = clean_leftovers(&opts.out)?;
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
    quiet_clip_panics();
    let outcomes: Vec<Outcome> = pool.install(|| {
        scan.items
            .par_iter()
            .map(|item| {
                let o = ctx.process_isolated(item);
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
        cleaned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recognised_by_name_and_process() {
        let pid = std::process::id();
        assert_eq!(tmp_pid(&tmp_name("manifest.json")), Some(pid));
        assert_eq!(tmp_pid(".1001_DFA_ANG_XX.tmp-4242"), Some(4242));
        // this process's own temporaries are not leftovers; a gone process's are
        assert!(!is_leftover(&tmp_name("manifest.json")));
        assert!(is_leftover(&format!(".a.npy.tmp-{}", u32::MAX)));
        for keep in [
            "manifest.json",
            ".hidden",
            ".a.npy.tmp-",
            ".a.npy.tmp-12x",
            "a.tmp-12",
            ".notes",
        ] {
            assert_eq!(tmp_pid(keep), None, "{keep}");
        }
    }

    #[test]
    fn a_panic_while_preparing_a_clip_is_its_skip_reason() {
        let out = tempfile::tempdir().unwrap();
        let item = Item {
            id: "clip".into(),
            label: "A".into(),
            split: Split::Train,
            audio: AudioSource::File("raw/clip.wav".into()),
            visual: VisualSource::Frames("raw/clip".into()),
        };
        let vtmp = out.path().join("visual").join(tmp_name("clip"));
        std::fs::create_dir_all(&vtmp).unwrap();
        quiet_clip_panics();
        let o = isolated(out.path(), &item, || panic!("boom in a decoder"));
        let Outcome::Skipped(s) = o else {
            panic!("not skipped")
        };
        assert_eq!(
            (s.id.as_str(), s.file.as_deref()),
            ("clip", Some("raw/clip.wav"))
        );
        assert!(
            s.reason.contains("panic: boom in a decoder"),
            "{}",
            s.reason
        );
        assert!(!vtmp.exists(), "the clip's temporaries are removed");
        // the flag is reset: later panics on this thread reach the previous hook again
        assert!(!IN_CLIP.with(Cell::get));
        assert!(matches!(
            isolated(out.path(), &item, || Outcome::Reused),
            Outcome::Reused
        ));
    }

    #[test]
    fn clean_leftovers_removes_only_temporaries() {
        let out = tempfile::tempdir().unwrap();
        let o = out.path();
        let gone = u32::MAX; // above every pid_max
        for d in ["audio", &format!("visual/.x.tmp-{gone}"), "splits"] {
            std::fs::create_dir_all(o.join(d)).unwrap();
        }
        let mine = tmp_name("classes.txt");
        for f in [
            format!(".manifest.json.tmp-{gone}"),
            format!("audio/.x.npy.tmp-{gone}"),
            format!("visual/.x.tmp-{gone}/00001.jpg"),
            format!("splits/.train.csv.tmp-{gone}"),
            "manifest.json".into(),
            "audio/x.npy".into(),
            ".notes".into(),
            mine.clone(),
        ] {
            std::fs::write(o.join(f), b"").unwrap();
        }
        assert_eq!(clean_leftovers(o).unwrap(), 4);
        for kept in ["manifest.json", "audio/x.npy", ".notes", &mine] {
            assert!(o.join(kept).exists(), "{kept}");
        }
        assert!(!o.join(format!("visual/.x.tmp-{gone}")).exists());
        assert_eq!(clean_leftovers(o).unwrap(), 0);
    }
}
