//! Finding run directories and loading them ([`find_runs`], [`load_run`], [`load_runs`]), and the
//! variant of each run ([`assign_variants`]).

use modbal_core::{ModbalError, Result};
use modbal_train::{EpochRecord, Summary};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders never searched for runs: what a run writes beside its metrics, and report outputs.
pub const SKIPPED_DIRS: [&str; 3] = ["checkpoints", "plots", "tensorboard"];

/// The file that marks a folder as a report output (never searched for runs).
pub const REPORT_MARKER: &str = "report.html";

/// Config keys that never make a variant: they differ between the seeds of one experiment.
pub const NOT_VARIANT_KEYS: [&str; 3] = ["seed", "name", "out_dir"];

/// How far a run got.
#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    /// `summary.json` is present: the run trained all its epochs and was tested.
    Finished,
    /// No `summary.json`: stopped (killed, crashed, or still training) after `epochs_done` of
    /// `epochs` epochs (`epochs` is `None` when the config does not say).
    Interrupted {
        epochs_done: usize,
        epochs: Option<usize>,
    },
    /// A file of the run could not be read or parsed; the reason names the file (and line).
    Unreadable(String),
}

impl RunStatus {
    /// The status column's text: `finished`, `interrupted (3/12 epochs)`, `unreadable: …`.
    pub fn label(&self) -> String {
        match self {
            RunStatus::Finished => "finished".into(),
            RunStatus::Interrupted {
                epochs_done,
                epochs: Some(e),
            } => format!("interrupted ({epochs_done}/{e} epochs)"),
            RunStatus::Interrupted {
                epochs_done,
                epochs: None,
            } => format!("interrupted ({epochs_done} epochs)"),
            RunStatus::Unreadable(why) => format!("unreadable: {why}"),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, RunStatus::Finished)
    }
}

/// One run directory, loaded.
#[derive(Clone, Debug)]
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// Display name: the directory's name (its path below the searched folder when two runs
    /// share a name).
    pub name: String,
    /// `dataset.name` of the config (`summary.json`'s when finished); `?` when unreadable.
    pub dataset: String,
    /// `method.name` of the config; `?` when unreadable.
    pub method: String,
    /// Top-level `seed` of the config.
    pub seed: Option<u64>,
    /// The config keys (`key=value, …`) that set this run apart from the other runs of its
    /// dataset and method (see [`assign_variants`]); empty when none.
    pub variant: String,
    pub status: RunStatus,
    /// `train.epochs` of the config.
    pub epochs: Option<usize>,
    /// The lines of `metrics.jsonl` in file order.
    pub records: Vec<EpochRecord>,
    /// `summary.json`, present when finished.
    pub summary: Option<Summary>,
    /// Sum of the `seconds` of `timing.jsonl` (`None` without that file).
    pub wall_seconds: Option<f64>,
    /// The config flattened to dotted keys (`method.alpha` → `0.5`), values as compact text.
    pub config: BTreeMap<String, String>,
}

impl Run {
    /// Number of distinct epochs with a train or val record.
    pub fn epochs_done(&self) -> usize {
        self.records
            .iter()
            .map(|r| r.epoch)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The records of one split (`train` or `val`), in file order.
    pub fn split<'a>(&'a self, split: &'a str) -> impl Iterator<Item = &'a EpochRecord> + 'a {
        self.records.iter().filter(move |r| r.split == split)
    }
}

fn is_run_dir(dir: &Path) -> bool {
    dir.join("config.toml").is_file() && dir.join("metrics.jsonl").is_file()
}

fn is_skipped(dir: &Path) -> bool {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    SKIPPED_DIRS.contains(&name.as_str()) || dir.join(REPORT_MARKER).is_file()
}

/// The run directories under `paths` (a run directory is a folder holding `config.toml` and
/// `metrics.jsonl`): each path is a run directory or a folder searched recursively, skipping
/// [`SKIPPED_DIRS`], folders holding a `report.html` (report outputs), and the folders in
/// `exclude`. Sorted, without duplicates. A path that does not exist, or holds no run, is an
/// error naming it.
pub fn find_runs(paths: &[PathBuf], exclude: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let mut out = BTreeSet::new();
    for p in paths {
        if !p.exists() {
            return Err(ModbalError::Config(format!(
                "run path {} does not exist",
                p.display()
            )));
        }
        let before = out.len();
        walk(p, &exclude, &mut out)?;
        if out.len() == before {
            return Err(ModbalError::Config(format!(
                "{} holds no run directory (a folder with config.toml and metrics.jsonl)",
                p.display()
            )));
        }
    }
    Ok(out.into_iter().collect())
}

fn walk(dir: &Path, exclude: &[PathBuf], out: &mut BTreeSet<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    if let Ok(c) = std::fs::canonicalize(dir) {
        if exclude.contains(&c) {
            return Ok(());
        }
    }
    if is_run_dir(dir) {
        out.insert(dir.to_path_buf());
        return Ok(());
    }
    let rd = std::fs::read_dir(dir).map_err(|e| ModbalError::io("listing", dir, e))?;
    let mut subs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !is_skipped(p))
        .collect();
    subs.sort();
    for s in subs {
        walk(&s, exclude, out)?;
    }
    Ok(())
}

fn read(path: &Path) -> std::result::Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Flatten a TOML table into dotted keys; values as compact text (strings unquoted).
pub fn flatten_toml(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => flatten_toml(&key, sub, out),
            other => {
                out.insert(key, toml_text(other));
            }
        }
    }
}

fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(toml_text).collect();
            format!("[{}]", parts.join(","))
        }
        toml::Value::Table(t) => {
            let mut m = BTreeMap::new();
            flatten_toml("", t, &mut m);
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

/// Load one run directory. Never fails: a file that cannot be read or parsed makes the run
/// [`RunStatus::Unreadable`], with a reason naming the file and, for JSONL files, the line.
/// A missing `summary.json` makes it [`RunStatus::Interrupted`].
///
/// Exception to line-by-line strictness: a last line of `metrics.jsonl`/`timing.jsonl` that
/// has no newline and does not parse is the half-written line of a killed run; it is dropped.
pub fn load_run(dir: &Path) -> Run {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut run = Run {
        dir: dir.to_path_buf(),
        name,
        dataset: "?".into(),
        method: "?".into(),
        seed: None,
        variant: String::new(),
        status: RunStatus::Unreadable(String::new()),
        epochs: None,
        records: vec![],
        summary: None,
        wall_seconds: None,
        config: BTreeMap::new(),
    };
    if let Err(why) = fill(&mut run) {
        run.status = RunStatus::Unreadable(why);
    }
    run
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> std::result::Result<Vec<T>, String> {
    let text = read(path)?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(line) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == lines.len() && !complete => {} // half-written last line of a kill
            Err(e) => return Err(format!("{} line {}: {e}", path.display(), i + 1)),
        }
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct Timing {
    seconds: f64,
}

fn fill(run: &mut Run) -> std::result::Result<(), String> {
    let cfg_path = run.dir.join("config.toml");
    let cfg: toml::Table = read(&cfg_path)?
        .parse()
        .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    flatten_toml("", &cfg, &mut run.config);
    if let Some(d) = run.config.get("dataset.name") {
        run.dataset = d.clone();
    }
    if let Some(m) = run.config.get("method.name") {
        run.method = m.clone();
    }
    run.seed = cfg
        .get("seed")
        .and_then(|v| v.as_integer())
        .map(|s| s as u64);
    run.epochs = run
        .config
        .get("train.epochs")
        .and_then(|e| e.parse::<usize>().ok());
    run.records = jsonl(&run.dir.join("metrics.jsonl"))?;
    let timing = run.dir.join("timing.jsonl");
    if timing.is_file() {
        let t: Vec<Timing> = jsonl(&timing)?;
        run.wall_seconds = Some(t.iter().map(|t| t.seconds).sum());
    }
    let sp = run.dir.join("summary.json");
    if sp.is_file() {
        let s: Summary =
            serde_json::from_str(&read(&sp)?).map_err(|e| format!("{}: {e}", sp.display()))?;
        run.dataset = s.dataset.clone();
        run.method = s.method.clone();
        run.epochs = Some(s.epochs);
        run.summary = Some(s);
        run.status = RunStatus::Finished;
    } else {
        run.status = RunStatus::Interrupted {
            epochs_done: run.epochs_done(),
            epochs: run.epochs,
        };
    }
    Ok(())
}

/// Find (see [`find_runs`]) and load (see [`load_run`]) the runs under `paths`, give them
/// unique names and their variants ([`assign_variants`]).
pub fn load_runs(paths: &[PathBuf], exclude: &[PathBuf]) -> Result<Vec<Run>> {
    let dirs = find_runs(paths, exclude)?;
    let mut runs: Vec<Run> = dirs.iter().map(|d| load_run(d)).collect();
    // Two runs with one name (e.g. two sweeps side by side): name them by their paths below
    // the longest common ancestor.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *names.entry(r.name.clone()).or_default() += 1;
    }
    if names.values().any(|&n| n > 1) {
        let common = common_ancestor(&dirs);
        for r in runs.iter_mut() {
            if names[&r.name] > 1 {
                if let Ok(rel) = r.dir.strip_prefix(&common) {
                    r.name = rel.display().to_string();
                }
            }
        }
    }
    assign_variants(&mut runs);
    Ok(runs)
}

fn common_ancestor(dirs: &[PathBuf]) -> PathBuf {
    let mut it = dirs.iter();
    let Some(first) = it.next() else {
        return PathBuf::new();
    };
    let mut common = first.parent().map(Path::to_path_buf).unwrap_or_default();
    for d in it {
        while !d.starts_with(&common) {
            if !common.pop() {
                return PathBuf::new();
            }
        }
    }
    common
}

/// Set each run's [`Run::variant`]: among the readable runs of one (dataset, method), the config
/// keys (other than [`NOT_VARIANT_KEYS`]) whose values differ, as `key=value, …`. Keys present in
/// only some of the runs (e.g. `model.encoders.audio.*` of a unimodal audio run beside a visual
/// one) are left out when the keys present in all runs already tell the same runs apart; an
/// absent key reads `key=∅`.
pub fn assign_variants(runs: &mut [Run]) {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, r) in runs.iter().enumerate() {
        if !matches!(r.status, RunStatus::Unreadable(_)) {
            groups
                .entry((r.dataset.clone(), r.method.clone()))
                .or_default()
                .push(i);
        }
    }
    for idx in groups.values() {
        let keys: BTreeSet<&String> = idx
            .iter()
            .flat_map(|&i| runs[i].config.keys())
            .filter(|k| !NOT_VARIANT_KEYS.contains(&k.as_str()))
            .collect();
        let differing: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                let vals: BTreeSet<Option<&String>> =
                    idx.iter().map(|&i| runs[i].config.get(*k)).collect();
                vals.len() > 1
            })
            .cloned()
            .collect();
        let everywhere: Vec<String> = differing
            .iter()
            .filter(|k| idx.iter().all(|&i| runs[i].config.contains_key(*k)))
            .cloned()
            .collect();
        let partition = |ks: &[String]| -> BTreeSet<Vec<Option<String>>> {
            idx.iter()
                .map(|&i| ks.iter().map(|k| runs[i].config.get(k).cloned()).collect())
                .collect()
        };
        let chosen = if partition(&everywhere).len() == partition(&differing).len() {
            everywhere
        } else {
            differing
        };
        for &i in idx {
            let v: Vec<String> = chosen
                .iter()
                .map(|k| match runs[i].config.get(k) {
                    Some(v) => format!("{k}={v}"),
                    None => format!("{k}=∅"),
                })
                .collect();
            runs[i].variant = v.join(", ");
        }
    }
}
