//! Reading the raw layouts: which clips exist, their class and split, and where their audio and
//! frames (or videos) are. Nothing here decodes media; problems found while listing (a clip name
//! that does not parse, a duplicate id, a missing file) become skipped items, never silence.

use crate::csv::{read_rows, Row};
use crate::error::{PrepareError, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The datasets `modbal prepare` knows.
pub const DATASET_NAMES: &[&str] = &["crema-d", "kinetics-sounds", "ave", "vggsound"];

/// A split of the prepared dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
    /// `train`, `test`, `val` / `valid` / `validation` (case-insensitive).
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "test" | "testing" => Some(Split::Test),
            "val" | "valid" | "validation" => Some(Split::Val),
            _ => None,
        }
    }
}

/// Where a clip's audio comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AudioSource {
    File(PathBuf),
    /// The audio track of a video file.
    Video(PathBuf),
    Missing(String),
}

/// Where a clip's frames come from.
#[derive(Clone, Debug, PartialEq)]
pub enum VisualSource {
    /// A folder of pre-extracted 1 fps JPEG frames.
    Frames(PathBuf),
    /// A video to extract 1 fps frames from (ffmpeg).
    Video(PathBuf),
    Missing(String),
}

/// One clip to prepare.
#[derive(Clone, Debug)]
pub struct Item {
    pub id: String,
    pub label: String,
    pub split: Split,
    pub audio: AudioSource,
    pub visual: VisualSource,
}

/// A clip that was not prepared, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// The file at fault (or the one that was looked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub reason: String,
}

/// What a raw directory holds.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Class names; index = label id.
    pub classes: Vec<String>,
    pub items: Vec<Item>,
    /// Clips dropped while listing (bad names, duplicates, unknown split).
    pub problems: Vec<Skipped>,
    /// How the splits were obtained (written to the manifest).
    pub split_source: String,
    /// Media present in the raw folder but in no split list (not prepared; counted in the manifest).
    pub unlisted: Vec<String>,
}

const AUDIO_EXT: &[&str] = &["wav", "flac", "mp3", "m4a", "ogg", "aac"];
const VIDEO_EXT: &[&str] = &["mp4", "flv", "mkv", "webm", "avi", "mov"];

/// Lazily built listings of candidate folders: `stem → file` per extension class, and sub-folders.
#[derive(Default)]
struct DirIndex {
    cache: HashMap<PathBuf, Listing>,
}

#[derive(Default, Clone)]
struct Listing {
    audio: HashMap<String, PathBuf>,
    video: HashMap<String, PathBuf>,
    dirs: HashMap<String, PathBuf>,
    /// Folders named like audio files (`X.wav/`), by stem: reported, never decoded.
    audio_dirs: HashMap<String, PathBuf>,
    /// Folders named like videos (`X.mp4/`), by stem.
    video_dirs: HashMap<String, PathBuf>,
}

fn rank(ext: &str, list: &[&str]) -> Option<usize> {
    list.iter().position(|e| e.eq_ignore_ascii_case(ext))
}

impl DirIndex {
    fn listing(&mut self, dir: &Path) -> &Listing {
        self.cache.entry(dir.to_path_buf()).or_insert_with(|| {
            let mut l = Listing::default();
            let Ok(rd) = std::fs::read_dir(dir) else {
                return l;
            };
            let mut best: HashMap<String, (usize, PathBuf)> = HashMap::new();
            let mut bestv: HashMap<String, (usize, PathBuf)> = HashMap::new();
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    if let (Some(stem), Some(ext)) = (p.file_stem(), p.extension()) {
                        let (stem, ext) = (stem.to_string_lossy(), ext.to_string_lossy());
                        if rank(&ext, AUDIO_EXT).is_some() {
                            l.audio_dirs.insert(stem.to_string(), p.clone());
                        } else if rank(&ext, VIDEO_EXT).is_some() {
                            l.video_dirs.insert(stem.to_string(), p.clone());
                        }
                    }
                    l.dirs.insert(name, p);
                    continue;
                }
                let (Some(stem), Some(ext)) = (
                    p.file_stem().map(|s| s.to_string_lossy().to_string()),
                    p.extension().map(|s| s.to_string_lossy().to_string()),
                ) else {
                    continue;
                };
                if let Some(r) = rank(&ext, AUDIO_EXT) {
                    if best.get(&stem).is_none_or(|(b, _)| r < *b) {
                        best.insert(stem, (r, p));
                    }
                } else if let Some(r) = rank(&ext, VIDEO_EXT) {
                    if bestv.get(&stem).is_none_or(|(b, _)| r < *b) {
                        bestv.insert(stem, (r, p));
                    }
                }
            }
            l.audio = best.into_iter().map(|(k, (_, p))| (k, p)).collect();
            l.video = bestv.into_iter().map(|(k, (_, p))| (k, p)).collect();
            l
        })
    }
}

/// Folder names searched under the raw root (each also as `<name>/<split>/`).
#[derive(Clone, Copy, Debug)]
pub struct MediaDirs {
    pub audio: &'static [&'static str],
    pub frames: &'static [&'static str],
    pub video: &'static [&'static str],
}

/// Locates media for a clip whose file stem is one of `candidates` (first match wins).
struct Locator<'a> {
    raw: &'a Path,
    dirs: MediaDirs,
    index: DirIndex,
}

impl<'a> Locator<'a> {
    fn new(raw: &'a Path, dirs: MediaDirs) -> Self {
        Locator {
            raw,
            dirs,
            index: DirIndex::default(),
        }
    }

    fn folders(&self, names: &[&str], split: Split) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for n in names {
            let d = self.raw.join(n);
            v.push(d.join(split.as_str()));
            if split == Split::Val {
                v.push(d.join("validation"));
            }
            v.push(d);
        }
        v
    }

    /// (chosen id, audio, visual).
    fn locate(
        &mut self,
        candidates: &[String],
        split: Split,
    ) -> (String, AudioSource, VisualSource) {
        let afolders = self.folders(self.dirs.audio, split);
        let ffolders = self.folders(self.dirs.frames, split);
        let vfolders = self.folders(self.dirs.video, split);
        for id in candidates {
            let audio = afolders
                .iter()
                .find_map(|d| self.index.listing(d).audio.get(id).cloned());
            let frames = ffolders
                .iter()
                .find_map(|d| self.index.listing(d).dirs.get(id).cloned());
            let video = vfolders
                .iter()
                .find_map(|d| self.index.listing(d).video.get(id).cloned());
            // A folder named like the media file (`X.wav/`) is reported as what it is.
            let media_dir = afolders
                .iter()
                .find_map(|d| self.index.listing(d).audio_dirs.get(id).cloned())
                .map(|p| format!("{} is a directory, not an audio file", p.display()))
                .or_else(|| {
                    vfolders
                        .iter()
                        .find_map(|d| self.index.listing(d).video_dirs.get(id).cloned())
                        .map(|p| format!("{} is a directory, not a video file", p.display()))
                });
            if audio.is_none() && frames.is_none() && video.is_none() && media_dir.is_none() {
                continue;
            }
            let a = match (audio, &video, media_dir) {
                (Some(p), _, _) => AudioSource::File(p),
                (None, Some(v), _) => AudioSource::Video(v.clone()),
                (None, None, Some(why)) => AudioSource::Missing(why),
                (None, None, None) => {
                    AudioSource::Missing(self.missing("audio", id, self.dirs.audio, AUDIO_EXT))
                }
            };
            let v = match (frames, video) {
                (Some(d), _) => VisualSource::Frames(d),
                (None, Some(v)) => VisualSource::Video(v),
                (None, None) => VisualSource::Missing(format!(
                    "missing frames: no folder {id}/ under {} and no video",
                    self.names(self.dirs.frames)
                )),
            };
            return (id.clone(), a, v);
        }
        let id = candidates[0].clone();
        let reason = self.missing("audio and video", &id, self.dirs.audio, AUDIO_EXT);
        (
            id,
            AudioSource::Missing(reason.clone()),
            VisualSource::Missing(reason),
        )
    }

    fn names(&self, dirs: &[&str]) -> String {
        dirs.iter()
            .map(|d| self.raw.join(d).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn missing(&self, what: &str, id: &str, dirs: &[&str], ext: &[&str]) -> String {
        format!(
            "missing {what}: no {id}.{{{}}} under {}",
            ext.join(","),
            self.names(dirs)
        )
    }

    /// Every stem with audio or video in the top-level media folders (for unlisted counts / CREMA-D).
    fn all_stems(&mut self) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for d in self.dirs.audio.iter().chain(self.dirs.video) {
            let l = self.index.listing(&self.raw.join(d)).clone();
            s.extend(l.audio.keys().cloned());
            s.extend(l.video.keys().cloned());
            s.extend(l.audio_dirs.keys().cloned());
            s.extend(l.video_dirs.keys().cloned());
        }
        s
    }
}

fn need_dir(raw: &Path) -> Result<()> {
    if !raw.is_dir() {
        return Err(PrepareError::layout(
            raw,
            None,
            "raw data directory not found",
        ));
    }
    Ok(())
}

fn first_existing(raw: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| raw.join(n)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// CREMA-D

/// OGM-GE's class order (their `class_dict`).
pub const CREMA_D_CLASSES: &[&str] = &["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"];

const CREMA_D_DIRS: MediaDirs = MediaDirs {
    audio: &["AudioWAV", "audio", "AudioMP3"],
    frames: &["Image-01-FPS", "frames", "visual"],
    video: &["VideoFlash", "VideoMP4", "video", "videos"],
};

/// `1001_DFA_ANG_XX` → (actor 1001, emotion ANG).
pub fn crema_d_clip(name: &str) -> Option<(u32, &str)> {
    let parts: Vec<&str> = name.split('_').collect();
    if parts.len() != 4 || parts[0].len() != 4 || parts[2].len() != 3 {
        return None;
    }
    let actor = parts[0].parse().ok()?;
    CREMA_D_CLASSES
        .contains(&parts[2])
        .then_some((actor, parts[2]))
}

/// Test actors of the actor-disjoint split: every 10th actor in sorted order (index ≡ 9 mod 10).
pub fn crema_d_test_actor(rank: usize) -> bool {
    rank % 10 == 9
}

pub fn scan_crema_d(raw: &Path) -> Result<Scan> {
    need_dir(raw)?;
    let mut loc = Locator::new(raw, CREMA_D_DIRS);
    let mut scan = Scan {
        classes: CREMA_D_CLASSES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let train = first_existing(raw, &["train.csv"]);
    let test = first_existing(raw, &["test.csv"]);
    let mut listed: Vec<(String, String, Split)> = Vec::new();
    if let (Some(train), Some(test)) = (train, test) {
        let mut files = vec![(train, Split::Train), (test, Split::Test)];
        if let Some(v) = first_existing(raw, &["val.csv", "valid.csv"]) {
            files.push((v, Split::Val));
        }
        scan.split_source = format!(
            "split lists {} (rows `clip,EMOTION`, OGM-GE format)",
            files
                .iter()
                .map(|(p, _)| p.file_name().unwrap().to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (path, split) in files {
            for Row { line, fields } in read_rows(&path, ',')? {
                if fields.len() != 2 {
                    return Err(PrepareError::layout(
                        &path,
                        Some(line),
                        format!("expected 2 fields `clip,EMOTION`, got {}", fields.len()),
                    ));
                }
                if line == 1
                    && !CREMA_D_CLASSES.contains(&fields[1].as_str())
                    && fields[0].eq_ignore_ascii_case("clip")
                {
                    continue; // header
                }
                if !CREMA_D_CLASSES.contains(&fields[1].as_str()) {
                    return Err(PrepareError::layout(
                        &path,
                        Some(line),
                        format!(
                            "unknown emotion {:?}; expected one of {}",
                            fields[1],
                            CREMA_D_CLASSES.join(" ")
                        ),
                    ));
                }
                listed.push((fields[0].clone(), fields[1].clone(), split));
            }
        }
    } else {
        let stems = loc.all_stems();
        if stems.is_empty() {
            return Err(PrepareError::layout(
                raw,
                None,
                format!(
                    "no CREMA-D audio or video found (looked in {})",
                    loc.names(CREMA_D_DIRS.audio)
                ),
            ));
        }
        let mut actors = BTreeSet::new();
        let mut parsed = Vec::new();
        for s in stems {
            match crema_d_clip(&s) {
                Some((a, e)) => {
                    actors.insert(a);
                    parsed.push((s.clone(), e.to_string(), a));
                }
                None => scan.problems.push(Skipped {
                    id: s,
                    split: None,
                    file: None,
                    reason:
                        "clip name is not ActorID_Sentence_Emotion_Level with a CREMA-D emotion"
                            .into(),
                }),
            }
        }
        let actors: Vec<u32> = actors.into_iter().collect();
        let test_actors: BTreeSet<u32> = actors
            .iter()
            .enumerate()
            .filter(|(i, _)| crema_d_test_actor(*i))
            .map(|(_, a)| *a)
            .collect();
        scan.split_source = format!(
            "actor-disjoint split (no train.csv/test.csv in the raw folder): test actors = every 10th actor in sorted order ({:?}), train = the other {}",
            test_actors,
            actors.len() - test_actors.len()
        );
        if test_actors.is_empty() {
            // Said on stderr and in manifest.json: the loader then refuses the tree with the
            // same explanation.
            let why = format!(
                "only {} actor(s) in {}: the actor-disjoint split holds out every 10th actor, so \
                 there is NO test split; put the official train.csv/test.csv in the raw folder \
                 or prepare the full dataset (91 actors)",
                actors.len(),
                raw.display()
            );
            eprintln!("warning: {why}");
            scan.split_source.push_str(&format!(" — WARNING: {why}"));
        }
        for (s, e, a) in parsed {
            let split = if test_actors.contains(&a) {
                Split::Test
            } else {
                Split::Train
            };
            listed.push((s, e, split));
        }
    }
    let mut seen = BTreeSet::new();
    for (clip, label, split) in listed {
        if !seen.insert(clip.clone()) {
            scan.problems.push(Skipped {
                id: clip,
                split: Some(split),
                file: None,
                reason: "listed more than once; the first listing is kept".into(),
            });
            continue;
        }
        let (id, audio, visual) = loc.locate(std::slice::from_ref(&clip), split);
        scan.items.push(Item {
            id,
            label,
            split,
            audio,
            visual,
        });
    }
    scan.unlisted = loc
        .all_stems()
        .into_iter()
        .filter(|s| !seen.contains(s))
        .collect();
    Ok(scan)
}

// ---------------------------------------------------------------------------------------------
// Kinetics-Sounds and VGGSound

const AV_CSV_DIRS: MediaDirs = MediaDirs {
    audio: &["audio", "audios", "wav"],
    frames: &["frames", "visual", "Image-01-FPS"],
    video: &["video", "videos"],
};

fn col(header: &[String], names: &[&str]) -> Option<usize> {
    header
        .iter()
        .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
}

/// Clip-id candidates for a YouTube segment: `{id}_{start:06}_{end:06}`, `{id}_{start:06}`,
/// `{id}_{start}`, `{id}`.
fn yt_candidates(ytid: &str, start: Option<&str>, end: Option<&str>) -> Vec<String> {
    let num = |s: &str| s.trim().parse::<f64>().ok().map(|v| v as i64);
    let mut c = Vec::new();
    if let (Some(s), Some(e)) = (start.and_then(num), end.and_then(num)) {
        c.push(format!("{ytid}_{s:06}_{e:06}"));
    }
    if let Some(s) = start {
        if let Some(v) = num(s) {
            c.push(format!("{ytid}_{v:06}"));
        }
        c.push(format!("{ytid}_{}", s.trim()));
    }
    c.push(ytid.to_string());
    c.dedup();
    c
}

fn sorted_classes(labels: impl Iterator<Item = String>) -> Vec<String> {
    let set: BTreeSet<String> = labels.collect();
    let mut v: Vec<String> = set.into_iter().collect();
    if v.iter().all(|s| s.parse::<i64>().is_ok()) {
        v.sort_by_key(|s| s.parse::<i64>().unwrap());
    }
    v
}

/// Kinetics-Sounds / VGGSound (see `datasets/<name>/README.md` for the accepted files).
pub fn scan_av_csv(raw: &Path, dataset: &str) -> Result<Scan> {
    need_dir(raw)?;
    let mut loc = Locator::new(raw, AV_CSV_DIRS);
    let mut scan = Scan::default();
    // (candidates, label, split)
    let mut listed: Vec<(Vec<String>, String, Split, PathBuf, usize)> = Vec::new();
    let single = first_existing(
        raw,
        &[
            "vggsound.csv",
            "kinetics-sounds.csv",
            "kinetics_sounds.csv",
            "ks.csv",
            "annotations.csv",
        ],
    );
    if let Some(path) = single {
        let rows = read_rows(&path, ',')?;
        let Some(first) = rows.first() else {
            return Err(PrepareError::layout(&path, None, "empty annotation file"));
        };
        let header = col(&first.fields, &["youtube_id", "ytid", "youtubeid"]).is_some();
        let (id_c, start_c, end_c, label_c, split_c) = if header {
            let h = &first.fields;
            (
                col(h, &["youtube_id", "ytid", "youtubeid"]).unwrap(),
                col(h, &["time_start", "start_seconds", "start", "start_time"]),
                col(h, &["time_end", "end_seconds", "end", "end_time"]),
                col(h, &["label", "class", "category"]).ok_or_else(|| {
                    PrepareError::layout(&path, Some(first.line), "header has no label column")
                })?,
                col(h, &["split", "subset"]).ok_or_else(|| {
                    PrepareError::layout(&path, Some(first.line), "header has no split column")
                })?,
            )
        } else {
            (0, Some(1), None, 2, 3)
        };
        scan.split_source = format!(
            "{} ({})",
            path.display(),
            if header {
                "header-named columns"
            } else {
                "columns youtube_id,start,label,split"
            }
        );
        let width = if header { first.fields.len() } else { 4 };
        for r in rows.iter().skip(header as usize) {
            if r.fields.len() != width {
                return Err(PrepareError::layout(
                    &path,
                    Some(r.line),
                    format!(
                        "expected {width} fields, got {} (ragged row)",
                        r.fields.len()
                    ),
                ));
            }
            let f = &r.fields;
            let Some(split) = Split::parse(&f[split_c]) else {
                scan.problems.push(Skipped {
                    id: f[id_c].clone(),
                    split: None,
                    file: Some(format!("{}:{}", path.display(), r.line)),
                    reason: format!("unknown split {:?}", f[split_c]),
                });
                continue;
            };
            let cands = yt_candidates(
                &f[id_c],
                start_c.map(|c| f[c].as_str()),
                end_c.map(|c| f[c].as_str()),
            );
            listed.push((cands, f[label_c].clone(), split, path.clone(), r.line));
        }
    } else {
        let mut found = false;
        for (split, names) in [
            (
                Split::Train,
                &["train.csv", "train.txt", "my_train.txt"][..],
            ),
            (
                Split::Val,
                &["val.csv", "val.txt", "my_val.txt", "valid.csv"][..],
            ),
            (Split::Test, &["test.csv", "test.txt", "my_test.txt"][..]),
        ] {
            let Some(path) = first_existing(raw, names) else {
                continue;
            };
            found = true;
            scan.split_source.push_str(&format!("{} ", path.display()));
            for r in read_rows(&path, ',')? {
                let fields = if r.fields.len() == 1 {
                    r.fields[0].split_whitespace().map(str::to_string).collect()
                } else {
                    r.fields.clone()
                };
                if fields.len() < 2 {
                    return Err(PrepareError::layout(
                        &path,
                        Some(r.line),
                        "expected `clip_id,...,label` (at least 2 fields)",
                    ));
                }
                if r.line == 1
                    && (fields[0].eq_ignore_ascii_case("id")
                        || fields[0].eq_ignore_ascii_case("clip"))
                {
                    continue;
                }
                let id = fields[0]
                    .trim_end_matches(".mp4")
                    .trim_end_matches(".wav")
                    .to_string();
                listed.push((
                    vec![id],
                    fields.last().unwrap().clone(),
                    split,
                    path.clone(),
                    r.line,
                ));
            }
        }
        if !found {
            return Err(PrepareError::layout(raw, None, format!(
                "no {dataset} annotation found: expected vggsound.csv / kinetics-sounds.csv / annotations.csv (youtube_id,start,label,split) or per-split lists train.csv + test.csv (clip_id,...,label)"
            )));
        }
        scan.split_source = format!(
            "per-split lists {}(first field clip id, last field label)",
            scan.split_source
        );
    }
    scan.classes = sorted_classes(listed.iter().map(|l| l.1.clone()));
    let mut seen = BTreeSet::new();
    for (cands, label, split, path, line) in listed {
        let (id, audio, visual) = loc.locate(&cands, split);
        if !seen.insert(id.clone()) {
            scan.problems.push(Skipped {
                id,
                split: Some(split),
                file: Some(format!("{}:{line}", path.display())),
                reason: "listed more than once; the first listing is kept".into(),
            });
            continue;
        }
        scan.items.push(Item {
            id,
            label,
            split,
            audio,
            visual,
        });
    }
    scan.unlisted = loc
        .all_stems()
        .into_iter()
        .filter(|s| !seen.contains(s))
        .collect();
    Ok(scan)
}

// ---------------------------------------------------------------------------------------------
// AVE

const AVE_DIRS: MediaDirs = MediaDirs {
    audio: &["audio", "Audios", "AVE_audio"],
    frames: &["frames", "visual", "Image-01-FPS"],
    video: &["AVE", "video", "videos"],
};

/// AVE: `Annotations.txt` + `trainSet.txt` / `testSet.txt` / `valSet.txt`, fields separated by
/// `&`: `Category&VideoID&Quality&StartTime&EndTime`.
pub fn scan_ave(raw: &Path) -> Result<Scan> {
    need_dir(raw)?;
    let root = if raw.join("Annotations.txt").is_file() || raw.join("trainSet.txt").is_file() {
        raw.to_path_buf()
    } else if raw.join("AVE_Dataset").is_dir() {
        raw.join("AVE_Dataset")
    } else {
        raw.to_path_buf()
    };
    let mut loc = Locator::new(&root, AVE_DIRS);
    let mut scan = Scan::default();
    let read = |path: &Path| -> Result<Vec<(String, String, usize)>> {
        let mut v = Vec::new();
        for r in read_rows(path, '&')? {
            if r.fields.len() < 2 {
                return Err(PrepareError::layout(
                    path,
                    Some(r.line),
                    "expected `Category&VideoID&Quality&StartTime&EndTime`",
                ));
            }
            if r.fields[1].eq_ignore_ascii_case("VideoID") {
                continue;
            }
            v.push((r.fields[0].clone(), r.fields[1].clone(), r.line));
        }
        Ok(v)
    };
    let ann = root.join("Annotations.txt");
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if ann.is_file() {
        for (c, id, _) in read(&ann)? {
            labels.insert(id, c);
        }
    }
    let mut listed = Vec::new();
    for (split, name) in [
        (Split::Train, "trainSet.txt"),
        (Split::Val, "valSet.txt"),
        (Split::Test, "testSet.txt"),
    ] {
        let p = root.join(name);
        if p.is_file() {
            for (c, id, line) in read(&p)? {
                listed.push((id, c, split, p.clone(), line));
            }
        }
    }
    if listed.is_empty() {
        return Err(PrepareError::layout(
            &root,
            None,
            "no AVE split lists (trainSet.txt, testSet.txt, valSet.txt) found",
        ));
    }
    scan.split_source = format!(
        "{}: trainSet.txt / valSet.txt / testSet.txt",
        root.display()
    );
    scan.classes = sorted_classes(
        labels
            .values()
            .cloned()
            .chain(listed.iter().map(|l| l.1.clone())),
    );
    let mut seen = BTreeSet::new();
    for (id, c, split, path, line) in listed {
        if !seen.insert(id.clone()) {
            scan.problems.push(Skipped {
                id,
                split: Some(split),
                file: Some(format!("{}:{line}", path.display())),
                reason: "listed more than once; the first listing is kept".into(),
            });
            continue;
        }
        let (id, audio, visual) = loc.locate(std::slice::from_ref(&id), split);
        scan.items.push(Item {
            id,
            label: c,
            split,
            audio,
            visual,
        });
    }
    scan.unlisted = loc
        .all_stems()
        .into_iter()
        .filter(|s| !seen.contains(s))
        .collect();
    Ok(scan)
}

/// Dispatches on the dataset name.
pub fn scan(dataset: &str, raw: &Path) -> Result<Scan> {
    match dataset {
        "crema-d" => scan_crema_d(raw),
        "kinetics-sounds" | "vggsound" => scan_av_csv(raw, dataset),
        "ave" => scan_ave(raw),
        other => Err(PrepareError::Usage(format!(
            "unknown dataset {other:?}; valid choices: {}",
            DATASET_NAMES.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crema_d_names_and_candidates() {
        assert_eq!(crema_d_clip("1001_DFA_ANG_XX"), Some((1001, "ANG")));
        assert_eq!(crema_d_clip("1001_DFA_XYZ_XX"), None);
        assert_eq!(crema_d_clip("readme"), None);
        assert_eq!(
            yt_candidates("abc", Some("30"), Some("40")),
            vec!["abc_000030_000040", "abc_000030", "abc_30", "abc"]
        );
        assert_eq!(Split::parse("Validation"), Some(Split::Val));
        assert_eq!(
            sorted_classes(["10", "2", "1"].iter().map(|s| s.to_string())),
            vec!["1", "2", "10"]
        );
    }
}
