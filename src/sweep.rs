//! Sweeps: a grid of runs — methods × seeds × datasets or presets × the values of any `--set`
//! key — run by parallel local jobs (`modbal sweep`) or as a Slurm job array
//! (`modbal sweep --slurm`, gathered with `modbal sweep --collect`). `docs/sweep.md` has the
//! user's guide.
//!
//! A sweep lives in one folder:
//!
//! ```text
//! <out>/manifest.json     the grid and its cells: name, `modbal train` arguments, epochs
//! <out>/<cell name>/      each cell's run directory (a normal run: config.toml, metrics.jsonl…)
//! <out>/logs/<cell>.log   what each local job printed (Slurm: logs/slurm-<job>_<task>.out)
//! <out>/sweep.sbatch      with --slurm: the job-array script, one array task per cell
//! <out>/collected.json    written by --collect: every cell's status
//! ```
//!
//! A cell is run by `modbal sweep --cell I --out <out>` (what the local jobs and the Slurm
//! array tasks execute): finished cells (`summary.json`) are skipped, interrupted ones
//! (a checkpoint) resumed, others trained from the start in exactly their directory. The run
//! directories sit directly in the folder, so `modbal report <out>` reports them all.
//!
//! This module holds the parts that do not train: the grid ([`Grid`]), the manifest
//! ([`Manifest`], [`Cell`]), a cell's status on disk ([`CellStatus`]), the Slurm script
//! ([`SlurmOptions::script`]) and the collection ([`collect`]). The CLI (`src/cli/sweep.rs`)
//! turns a grid into cells with the same flags as `modbal train` and runs them.

use modbal_core::{ModbalError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file name of a sweep's manifest.
pub const MANIFEST: &str = "manifest.json";
/// The file name of the Slurm job-array script.
pub const SLURM_SCRIPT: &str = "sweep.sbatch";
/// The file name `--collect` writes.
pub const COLLECTED: &str = "collected.json";

/// A grid of runs, from the command line or a TOML file (`modbal sweep --grid FILE`):
///
/// ```toml
/// methods = ["concat", "ogm-ge", "cal"]   # "all": every registered method; "unimodal": once
///                                        # per modality; "unimodal:audio": that modality
/// seeds = [0, 1]
/// datasets = ["synth-vec"]               # and/or presets = ["udi/crema-d"]
/// epochs = 5                             # optional
/// set = ["dataset.train=600"]            # --set for every cell
/// [axes]                                 # keys with several values: one cell per value
/// "train.optimizer.lr" = [0.01, 0.05]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grid {
    pub methods: Vec<String>,
    pub seeds: Vec<u64>,
    pub datasets: Vec<String>,
    pub presets: Vec<String>,
    pub epochs: Option<usize>,
    /// `--set KEY=VALUE` for every cell.
    pub set: Vec<String>,
    /// `KEY → values`: the grid's extra axes (TOML values; on the command line each value is
    /// read as `--set` reads one: a TOML literal, else a string).
    pub axes: BTreeMap<String, Vec<toml::Value>>,
}

impl Grid {
    /// Read a grid file (errors name the file and the key).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
        toml::from_str(&text)
            .map_err(|e| ModbalError::Config(format!("grid file {}: {e}", path.display())))
    }

    /// Add `--set KEY=V1,V2,...` from the command line: one value is a fixed override, several
    /// (split at top-level commas, not inside brackets, braces or quotes) an axis.
    pub fn add_set(&mut self, raw: &str) -> Result<()> {
        let Some((key, values)) = raw.split_once('=') else {
            return Err(ModbalError::Config(format!(
                "--set {raw:?}: expected KEY=VALUE (or KEY=V1,V2,... for several values)"
            )));
        };
        let key = key.trim();
        let values = split_top_level(values);
        if key.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
            return Err(ModbalError::Config(format!(
                "--set {raw:?}: empty key or value"
            )));
        }
        if values.len() == 1 {
            self.set.push(format!("{key}={}", values[0]));
        } else {
            let vals = values
                .iter()
                .map(|v| crate::config::parse_value(v.trim()))
                .collect();
            if self.axes.insert(key.to_string(), vals).is_some() {
                return Err(ModbalError::Config(format!(
                    "--set {key}: given twice with several values"
                )));
            }
        }
        Ok(())
    }

    /// The axes as `(key, [raw --set values])`, in key order.
    pub fn axis_values(&self) -> Vec<(String, Vec<String>)> {
        self.axes
            .iter()
            .map(|(k, vs)| (k.clone(), vs.iter().map(raw_value).collect()))
            .collect()
    }

    /// Every combination of the axes' values (one empty combination without axes), the first
    /// axis varying slowest.
    pub fn axis_combinations(&self) -> Vec<Vec<(String, String)>> {
        let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, vs) in self.axis_values() {
            out = out
                .into_iter()
                .flat_map(|c| {
                    let k = k.clone();
                    vs.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((k.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        out
    }

    /// Checks what the grid must have: at least one method, seed and dataset or preset.
    pub fn check(&self) -> Result<()> {
        if self.methods.is_empty() {
            return Err(ModbalError::Config(
                "the sweep has no method: give --methods (or `methods` in the grid file)".into(),
            ));
        }
        if self.seeds.is_empty() {
            return Err(ModbalError::Config(
                "the sweep has no seed: give --seeds (or `seeds` in the grid file)".into(),
            ));
        }
        if self.datasets.is_empty() && self.presets.is_empty() {
            return Err(ModbalError::Config(
                "the sweep has no dataset: give --datasets or --presets".into(),
            ));
        }
        for (k, vs) in &self.axes {
            if vs.is_empty() {
                return Err(ModbalError::Config(format!("axis {k:?} has no value")));
            }
        }
        Ok(())
    }
}

/// An axis value as `--set` takes it: its TOML literal (floats in Rust's shortest form, which
/// TOML reads back: `0.05`, `1e30`).
fn raw_value(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if f.is_finite() => format!("{f:?}"),
        other => other.to_string(),
    }
}

/// Split at commas that are not inside `[]`, `{}` or quotes.
pub fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// A short, file-name-safe tag of one axis value: the key's last component and the value
/// (`train.optimizer.lr=0.05` → `lr0.05`).
pub fn axis_tag(key: &str, value: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    let v: String = value
        .trim_matches(|c| c == '"' || c == '\'')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{last}{v}")
}

/// One cell of a sweep: one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Its position in the manifest (the Slurm array task id).
    pub index: usize,
    /// The run directory's name inside the sweep folder.
    pub name: String,
    /// The dataset, or the preset (`udi/crema-d`).
    pub protocol: String,
    pub method: String,
    /// The modality of a `unimodal` cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    pub seed: u64,
    /// The grid axes' values of this cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub axes: Vec<(String, String)>,
    /// The `modbal train` arguments of this cell (without `--out` and `--name`): the cell is
    /// exactly `modbal train ARGS --out <sweep folder> --name NAME`.
    pub args: Vec<String>,
    /// Epochs of the run (for progress).
    pub epochs: usize,
}

/// `manifest.json`: the grid and its cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The working directory the cells' relative paths (a dataset root, a config) are read
    /// from.
    pub cwd: PathBuf,
    pub grid: Grid,
    pub cells: Vec<Cell>,
}

impl Manifest {
    pub const VERSION: u32 = 1;

    /// Read `<dir>/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST);
        if !p.exists() {
            return Err(ModbalError::Config(format!(
                "{} is not a sweep folder (it has no {MANIFEST}; `modbal sweep --out {}` makes one)",
                dir.display(),
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| ModbalError::io("reading", &p, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| ModbalError::Data(format!("{}: {e}", p.display())))?;
        if m.version != Self::VERSION {
            return Err(ModbalError::Data(format!(
                "{}: manifest version {} (this modbal reads {})",
                p.display(),
                m.version,
                Self::VERSION
            )));
        }
        Ok(m)
    }

    /// Write `<dir>/manifest.json` (whole, through a temporary file).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModbalError::io("creating", dir, e))?;
        let text =
            serde_json::to_string_pretty(self).map_err(|e| ModbalError::Serde(e.to_string()))?;
        write_atomic(&dir.join(MANIFEST), &text)
    }

    /// The cell with this index (the Slurm array task id), with a clear error otherwise.
    pub fn cell(&self, index: usize) -> Result<&Cell> {
        self.cells.get(index).ok_or_else(|| {
            ModbalError::Config(format!(
                "cell {index}: the sweep has {} cells (0..={})",
                self.cells.len(),
                self.cells.len().saturating_sub(1)
            ))
        })
    }
}

/// Write a file whole: a temporary file next to it, then a rename.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| ModbalError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ModbalError::io("renaming", &tmp, e))
}

/// Where a cell's run stands on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CellStatus {
    /// `summary.json` exists.
    Finished,
    /// A complete checkpoint exists (`modbal_train::is_resumable`): `epochs_done` epochs are in
    /// `metrics.jsonl`; resumable.
    Interrupted { epochs_done: usize },
    /// The directory exists without a complete checkpoint (stopped during its first epoch or
    /// while writing its first checkpoint, or running its first epoch now): started again from
    /// scratch.
    Started,
    /// No directory yet.
    NotStarted,
}

impl CellStatus {
    /// The status of the run directory `dir`.
    pub fn of(dir: &Path) -> Self {
        if dir.join("summary.json").exists() {
            CellStatus::Finished
        } else if modbal_train::is_resumable(dir) {
            CellStatus::Interrupted {
                epochs_done: epochs_done(dir),
            }
        } else if dir.is_dir() {
            CellStatus::Started
        } else {
            CellStatus::NotStarted
        }
    }

    /// One word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            CellStatus::Finished => "finished",
            CellStatus::Interrupted { .. } => "interrupted",
            CellStatus::Started => "started",
            CellStatus::NotStarted => "not started",
        }
    }
}

/// Epochs finished in a run directory: the validation lines of `metrics.jsonl`.
pub fn epochs_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"split\":\"val\""))
                .count()
        })
        .unwrap_or(0)
}

/// Whether another process holds the run directory's lock (`run.lock`, an OS file lock
/// released when its holder ends, also by a kill).
pub fn is_busy(dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("run.lock"))
    else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(_) => false,
    }
}

/// The resources of a Slurm job array (`modbal sweep --slurm`); `None` leaves the cluster's
/// default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlurmOptions {
    pub job_name: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Wall-clock limit per cell (`--time`, e.g. `04:00:00`).
    pub time: Option<String>,
    /// CPU cores per cell (`--cpus-per-task`; the cell's threads).
    pub cpus_per_task: usize,
    /// Memory per cell (`--mem`, e.g. `16G`).
    pub mem: Option<String>,
    /// Generic resources (`--gres`, e.g. `gpu:1`).
    pub gres: Option<String>,
    /// At most this many cells at once (`--array=0-N%K`).
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` options, verbatim (`--constraint=a100`).
    pub extra: Vec<String>,
}

/// Quote a string for bash (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl SlurmOptions {
    /// The job-array script: one array task per cell of a sweep of `cells` cells in `dir`,
    /// each running `EXE sweep --cell $SLURM_ARRAY_TASK_ID --out DIR` from `cwd` (`dir`, `exe`
    /// and `cwd` absolute). Errors for an option value that would break the script.
    pub fn script(&self, dir: &Path, exe: &Path, cwd: &Path, cells: usize) -> Result<String> {
        if cells == 0 {
            return Err(ModbalError::Config("the sweep has no cell".into()));
        }
        let mut directives = vec![
            format!("--job-name={}", self.job_name),
            format!(
                "--array=0-{}{}",
                cells - 1,
                self.max_parallel
                    .map(|k| format!("%{k}"))
                    .unwrap_or_default()
            ),
            format!("--output={}/logs/slurm-%A_%a.out", dir.display()),
            format!("--cpus-per-task={}", self.cpus_per_task.max(1)),
        ];
        let opt = |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("--{name}={v}"));
        directives.extend(
            [
                opt("partition", &self.partition),
                opt("account", &self.account),
                opt("qos", &self.qos),
                opt("time", &self.time),
                opt("mem", &self.mem),
                opt("gres", &self.gres),
            ]
            .into_iter()
            .flatten(),
        );
        for e in &self.extra {
            let e = e.trim();
            directives.push(if e.starts_with('-') {
                e.to_string()
            } else {
                format!("--{e}")
            });
        }
        for d in &directives {
            // #SBATCH lines are not parsed by a shell: no quoting, no whitespace inside a value.
            if d.contains(['\n', '\r']) || d.split_whitespace().count() != 1 {
                return Err(ModbalError::Config(format!(
                    "slurm option {d:?}: one word without spaces or newlines (the folder and \
                     the options end up in #SBATCH lines)"
                )));
            }
        }
        let mut s = String::from("#!/bin/bash\n");
        s.push_str(
            "# A modbal sweep as a Slurm job array: one array task per cell of manifest.json.\n",
        );
        for d in &directives {
            s.push_str(&format!("#SBATCH {d}\n"));
        }
        s.push_str(&format!(
            "\n# Written by `modbal sweep --slurm`. Submit: sbatch {script}\n\
             # Gather: {exe} sweep --collect {dir}\n\
             # Rerun some cells only: sbatch --array=I,J,... {script}\n\
             # A task skips a finished cell and resumes an interrupted one, so resubmitting is safe.\n\
             set -euo pipefail\n\
             cd {cwd}\n\
             export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n\
             MODBAL=${{MODBAL:-{exe}}}\n\
             exec \"$MODBAL\" sweep --cell \"$SLURM_ARRAY_TASK_ID\" --out {dirq}\n",
            script = shell_quote(&dir.join(SLURM_SCRIPT).display().to_string()),
            exe = shell_quote(&exe.display().to_string()),
            dir = shell_quote(&dir.display().to_string()),
            dirq = shell_quote(&dir.display().to_string()),
            cwd = shell_quote(&cwd.display().to_string()),
        ));
        Ok(s)
    }
}

/// One line of [`collect`]: a cell and where its run stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collected {
    pub index: usize,
    pub name: String,
    pub run_dir: PathBuf,
    #[serde(flatten)]
    pub status: CellStatus,
    pub epochs: usize,
    /// Test fusion accuracy of the validation-selected model (finished cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fusion_acc: Option<f64>,
    /// The last line of the cell's log that reads like an error (unfinished cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every cell of the sweep in `dir` with its status; writes `<dir>/collected.json`.
pub fn collect(dir: &Path) -> Result<Vec<Collected>> {
    let m = Manifest::load(dir)?;
    let mut out = Vec::with_capacity(m.cells.len());
    for c in &m.cells {
        let run_dir = dir.join(&c.name);
        let status = CellStatus::of(&run_dir);
        let test_fusion_acc = if status == CellStatus::Finished {
            Some(read_summary(&run_dir)?.test.fusion_acc)
        } else {
            None
        };
        let error = if status == CellStatus::Finished {
            None
        } else {
            last_error(dir, c)
        };
        out.push(Collected {
            index: c.index,
            name: c.name.clone(),
            run_dir,
            status,
            epochs: c.epochs,
            test_fusion_acc,
            error,
        });
    }
    let text = serde_json::to_string_pretty(&out).map_err(|e| ModbalError::Serde(e.to_string()))?;
    write_atomic(&dir.join(COLLECTED), &text)?;
    Ok(out)
}

/// A finished run's `summary.json`.
fn read_summary(run_dir: &Path) -> Result<modbal_train::Summary> {
    let p = run_dir.join("summary.json");
    let t = std::fs::read_to_string(&p).map_err(|e| ModbalError::io("reading", &p, e))?;
    serde_json::from_str(&t).map_err(|e| ModbalError::Data(format!("{}: {e}", p.display())))
}

/// The test fusion accuracy of a finished run (`None` when it has no readable summary).
pub fn collect_one(run_dir: &Path) -> Option<f64> {
    read_summary(run_dir).ok().map(|s| s.test.fusion_acc)
}

/// The last `error:` line of a cell's logs (local `logs/<name>.log`, Slurm
/// `logs/slurm-*_<index>.out`).
fn last_error(dir: &Path, c: &Cell) -> Option<String> {
    let logs = dir.join("logs");
    let mut files = vec![logs.join(format!("{}.log", c.name))];
    if let Ok(rd) = std::fs::read_dir(&logs) {
        let suffix = format!("_{}.out", c.index);
        let mut slurm: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("slurm-") && n.ends_with(&suffix))
            })
            .collect();
        slurm.sort();
        files.extend(slurm);
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| l.starts_with("error:") || l.contains("panicked at"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_split_into_fixed_values_and_axes() {
        let mut g = Grid::default();
        g.add_set("train.epochs=3").unwrap();
        g.add_set("train.optimizer.lr=0.01,0.05").unwrap();
        g.add_set("model.sizes=[1,2],[3]").unwrap();
        g.add_set("method.kind=\"a,b\"").unwrap();
        assert_eq!(g.set, ["train.epochs=3", "method.kind=\"a,b\""]);
        assert_eq!(
            g.axis_values(),
            [
                (
                    "model.sizes".to_string(),
                    vec!["[1, 2]".into(), "[3]".into()]
                ),
                (
                    "train.optimizer.lr".to_string(),
                    vec!["0.01".into(), "0.05".into()]
                ),
            ]
        );
        // 2 × 2 combinations, first axis slowest.
        let c = g.axis_combinations();
        assert_eq!(c.len(), 4);
        assert_eq!(c[1][0].1, "[1, 2]");
        assert_eq!(c[1][1].1, "0.05");
        assert_eq!(c[2][0].1, "[3]");
        // A bare word is a string, as `--set` reads it.
        g.add_set("train.optimizer.kind=sgd,adamw").unwrap();
        assert_eq!(g.axis_values()[1].1, ["\"sgd\"", "\"adamw\""]);
        g.add_set("train.optimizer.momentum=1e30,2.5e-7,1.0")
            .unwrap();
        assert_eq!(g.axis_values()[3].1, ["1e30", "2.5e-7", "1.0"]);
        // The same key twice with several values is an error.
        assert!(g.add_set("train.optimizer.lr=1,2").is_err());
        assert!(g.add_set("novalue").is_err());
        assert!(g.add_set("k=1,").is_err());
    }

    #[test]
    fn grid_files_parse_and_name_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(
            &p,
            "methods = [\"concat\"]\nseeds = [0, 1]\ndatasets = [\"synth-vec\"]\n\
             [axes]\n\"train.optimizer.lr\" = [0.01, 0.05]\n\"train.optimizer.kind\" = [\"sgd\"]\n",
        )
        .unwrap();
        let g = Grid::from_file(&p).unwrap();
        g.check().unwrap();
        assert_eq!(
            g.axis_values()[1],
            (
                "train.optimizer.lr".into(),
                vec!["0.01".into(), "0.05".into()]
            )
        );
        // A TOML string stays a TOML string literal for --set.
        assert_eq!(g.axis_values()[0].1, ["\"sgd\""]);
        std::fs::write(&p, "method = [\"concat\"]\n").unwrap();
        let e = Grid::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("g.toml") && e.contains("method"), "{e}");
        assert!(Grid::default().check().is_err());
    }

    #[test]
    fn axis_tags_are_file_names() {
        assert_eq!(axis_tag("train.optimizer.lr", "0.05"), "lr0.05");
        assert_eq!(axis_tag("train.optimizer.kind", "\"adamw\""), "kindadamw");
        assert_eq!(axis_tag("x", "[1, 2]"), "x_1__2_");
    }

    #[test]
    fn slurm_script_has_its_directives_before_any_command() {
        let o = SlurmOptions {
            job_name: "modbal-sweep".into(),
            time: Some("01:00:00".into()),
            cpus_per_task: 4,
            gres: Some("gpu:1".into()),
            max_parallel: Some(2),
            extra: vec!["constraint=a100".into()],
            ..Default::default()
        };
        let s = o
            .script(
                Path::new("/data/sweep"),
                Path::new("/bin/modbal"),
                Path::new("/home/u"),
                6,
            )
            .unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#!/bin/bash");
        // sbatch stops reading #SBATCH at the first line that is not a comment.
        let first_cmd = lines
            .iter()
            .position(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap();
        let directives: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect();
        assert!(lines
            .iter()
            .skip(first_cmd)
            .all(|l| !l.starts_with("#SBATCH")));
        for d in [
            "--array=0-5%2",
            "--cpus-per-task=4",
            "--time=01:00:00",
            "--gres=gpu:1",
            "--constraint=a100",
        ] {
            assert!(directives.contains(&d), "{d} missing in {directives:?}");
        }
        assert!(s.contains("--out '/data/sweep'"));
        assert!(s.contains("cd '/home/u'"));
        // A folder with a space cannot go into an #SBATCH line; no cell, no array.
        assert!(o
            .script(Path::new("/a b"), Path::new("/b"), Path::new("/c"), 1)
            .is_err());
        assert!(o
            .script(Path::new("/a"), Path::new("/b"), Path::new("/c"), 0)
            .is_err());
        let bad = SlurmOptions {
            partition: Some("gpu\n#SBATCH --x".into()),
            ..o.clone()
        };
        assert!(bad
            .script(Path::new("/a"), Path::new("/b"), Path::new("/c"), 1)
            .is_err());
    }

    #[test]
    fn status_reads_the_run_directory() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("run");
        assert_eq!(CellStatus::of(&r), CellStatus::NotStarted);
        std::fs::create_dir_all(&r).unwrap();
        assert_eq!(CellStatus::of(&r), CellStatus::Started);
        // A checkpoint folder that is not complete is nothing to resume.
        std::fs::create_dir_all(r.join("checkpoints/last.tmp")).unwrap();
        std::fs::write(r.join("checkpoints/last.tmp/model.safetensors"), "partial").unwrap();
        assert_eq!(CellStatus::of(&r), CellStatus::Started);
        // (A checkpoint of a modbal version without checksums: state.json alone.)
        std::fs::create_dir_all(r.join("checkpoints/last")).unwrap();
        std::fs::write(r.join("checkpoints/last/state.json"), "{}").unwrap();
        std::fs::write(
            r.join("metrics.jsonl"),
            "{\"epoch\":0,\"split\":\"train\"}\n{\"epoch\":0,\"split\":\"val\"}\n",
        )
        .unwrap();
        assert_eq!(
            CellStatus::of(&r),
            CellStatus::Interrupted { epochs_done: 1 }
        );
        std::fs::write(r.join("summary.json"), "{}").unwrap();
        assert_eq!(CellStatus::of(&r), CellStatus::Finished);
    }
}
