//! `modbal sweep`: a grid of runs as parallel local jobs, a Slurm job array (`--slurm`), the
//! collection of its runs (`--collect`) and one cell (`--cell`, what every job executes). The
//! grid, manifest, statuses and Slurm script are in [`crate::sweep`]; `docs/sweep.md` is the
//! guide.

use super::{build_config, TrainArgs};
use crate::config::RunConfig;
use crate::registry::Registry;
use crate::sweep::{
    axis_tag, collect, is_busy, shell_quote, Cell, CellStatus, Grid, Manifest, SlurmOptions,
    SLURM_SCRIPT,
};
use anyhow::{bail, Context, Result};
use clap::Parser;
use modbal_train::TrainOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Exit status of `--collect` when some cells are not finished (after printing the table).
pub(crate) const EXIT_UNFINISHED: i32 = 3;

/// `modbal sweep` arguments.
#[derive(clap::Args)]
pub(crate) struct SweepArgs {
    /// A grid file (TOML: methods, seeds, datasets, presets, epochs, set, [axes]; docs/sweep.md).
    /// The flags below replace its lists and add to its --set.
    #[arg(long, value_name = "FILE")]
    grid: Option<PathBuf>,
    /// Methods, comma-separated: a name, `all` (every registered method), `unimodal` (once per
    /// modality of each dataset) or `unimodal:MODALITY`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    methods: Vec<String>,
    /// Run seeds, comma-separated (default 0).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    seeds: Vec<u64>,
    /// Datasets, comma-separated (as `modbal train --dataset`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    datasets: Vec<String>,
    /// Paper presets, comma-separated (as `modbal train --preset`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    presets: Vec<String>,
    /// Epochs of every run.
    #[arg(long)]
    epochs: Option<usize>,
    /// A config override for every run (KEY=VALUE), or an axis of the grid with several values
    /// (KEY=V1,V2,...: one run per value; commas inside [], {} or quotes do not split).
    /// Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE[,VALUE...]")]
    sets: Vec<String>,
    /// The sweep folder: manifest.json, logs/ and one run directory per cell. Running the same
    /// command again skips finished cells and resumes interrupted ones.
    #[arg(long, default_value = "runs/sweep", value_name = "DIR")]
    out: PathBuf,
    /// Parallel local jobs (child processes).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// CPU threads shared by the jobs (each gets threads / jobs; default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// List the cells (name and `modbal train` command) and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Plain event lines instead of the progress view.
    #[arg(long)]
    no_progress: bool,
    /// Write a Slurm job-array script (OUT/sweep.sbatch, one task per cell) and the manifest
    /// instead of running; submit it with sbatch, gather with --collect.
    #[arg(long)]
    slurm: bool,
    /// Slurm: job name.
    #[arg(long, default_value = "modbal-sweep", value_name = "NAME")]
    job_name: String,
    /// Slurm: partition.
    #[arg(long, value_name = "NAME")]
    partition: Option<String>,
    /// Slurm: account.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,
    /// Slurm: quality of service.
    #[arg(long, value_name = "NAME")]
    qos: Option<String>,
    /// Slurm: wall-clock limit per cell, e.g. 04:00:00.
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Slurm: CPU cores per cell (its threads).
    #[arg(long, default_value_t = 4, value_name = "N")]
    cpus_per_task: usize,
    /// Slurm: memory per cell, e.g. 16G.
    #[arg(long, value_name = "SIZE")]
    mem: Option<String>,
    /// Slurm: generic resources per cell, e.g. gpu:1 (with --set train.device=cuda).
    #[arg(long, value_name = "GRES")]
    gres: Option<String>,
    /// Slurm: at most N cells at once (--array=...%N).
    #[arg(long, value_name = "N")]
    max_parallel: Option<usize>,
    /// Slurm: a further #SBATCH option, e.g. --sbatch constraint=a100 (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION")]
    sbatch: Vec<String>,
    /// Gather the sweep in DIR (local or Slurm): every cell's status and test accuracy,
    /// DIR/collected.json, the array indices to resubmit. Exit status 3: some cells unfinished.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["slurm", "dry_run", "cell"])]
    collect: Option<PathBuf>,
    /// Run one cell of the sweep in --out (what each local job and Slurm array task executes).
    #[arg(long, value_name = "INDEX")]
    cell: Option<usize>,
    /// The program the jobs run (default: this one; a program built on `modbal::cli::main`
    /// runs its own registry).
    #[arg(long, value_name = "PATH", hide = true)]
    exe: Option<PathBuf>,
}

/// `modbal train`'s flags parsed from a cell's arguments.
#[derive(Parser)]
#[command(name = "modbal train", no_binary_name = true)]
struct TrainCli {
    #[command(flatten)]
    args: TrainArgs,
}

pub(crate) fn run(reg: &Registry, a: &SweepArgs) -> Result<()> {
    if let Some(dir) = &a.collect {
        return run_collect(dir);
    }
    if let Some(i) = a.cell {
        return run_cell(reg, &a.out, i);
    }
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let grid = grid_of(a)?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let cells = plan(reg, &grid)?;
    if a.dry_run {
        for c in &cells {
            let run_dir = a.out.join(&c.name);
            let status = match cell_config(reg, c, &a.out)
                .and_then(|cfg| check_same_run(reg, &run_dir, &cfg))
            {
                Ok(()) => CellStatus::of(&run_dir).word().to_string(),
                Err(e) => format!("CONFLICT: {e:#}"),
            };
            println!(
                "{:>4}  {:<40} [{status}] modbal train {} --out {} --name {}",
                c.index,
                c.name,
                c.args
                    .iter()
                    .map(|s| quote_arg(s))
                    .collect::<Vec<_>>()
                    .join(" "),
                a.out.display(),
                c.name
            );
        }
        println!("{} cells", cells.len());
        return Ok(());
    }
    // Each existing run directory must hold this cell's run.
    for c in &cells {
        let cfg = cell_config(reg, c, &a.out)?;
        check_same_run(reg, &a.out.join(&c.name), &cfg)?;
    }
    std::fs::create_dir_all(a.out.join("logs"))
        .with_context(|| format!("creating {}", a.out.join("logs").display()))?;
    let dir = a
        .out
        .canonicalize()
        .with_context(|| format!("resolving {}", a.out.display()))?;
    let manifest = Manifest {
        version: Manifest::VERSION,
        cwd,
        grid,
        cells,
    };
    manifest.save(&dir)?;
    let exe = match &a.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().context("locating this program")?,
    };
    if a.slurm {
        let o = SlurmOptions {
            job_name: a.job_name.clone(),
            partition: a.partition.clone(),
            account: a.account.clone(),
            qos: a.qos.clone(),
            time: a.time.clone(),
            cpus_per_task: a.cpus_per_task,
            mem: a.mem.clone(),
            gres: a.gres.clone(),
            max_parallel: a.max_parallel,
            extra: a.sbatch.clone(),
        };
        let script = o.script(&dir, &exe, &manifest.cwd, manifest.cells.len())?;
        let path = dir.join(SLURM_SCRIPT);
        crate::sweep::write_atomic(&path, &script)?;
        println!(
            "wrote {} ({} array tasks, one per cell) and {}",
            path.display(),
            manifest.cells.len(),
            dir.join(crate::sweep::MANIFEST).display()
        );
        println!(
            "submit:  sbatch {}",
            shell_quote(&path.display().to_string())
        );
        println!(
            "gather:  {} sweep --collect {}",
            exe.display(),
            shell_quote(&dir.display().to_string())
        );
        return Ok(());
    }
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    run_local(&manifest, &dir, &exe, a.jobs, threads, a.no_progress)
}

/// The grid of the file (if any) with the flags on top.
fn grid_of(a: &SweepArgs) -> Result<Grid> {
    let mut g = match &a.grid {
        Some(p) => Grid::from_file(p)?,
        None => Grid::default(),
    };
    if !a.methods.is_empty() {
        g.methods = a.methods.clone();
    }
    if !a.seeds.is_empty() {
        g.seeds = a.seeds.clone();
    }
    if !a.datasets.is_empty() {
        g.datasets = a.datasets.clone();
    }
    if !a.presets.is_empty() {
        g.presets = a.presets.clone();
    }
    if a.epochs.is_some() {
        g.epochs = a.epochs;
    }
    for s in &a.sets {
        g.add_set(s)?;
    }
    if g.seeds.is_empty() {
        g.seeds = vec![0];
    }
    g.methods.retain(|m| !m.trim().is_empty());
    g.check()?;
    Ok(g)
}

fn quote_arg(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=".contains(c))
    {
        s.to_string()
    } else {
        shell_quote(s)
    }
}

/// The cells of a grid: protocols (presets, then datasets) × methods (× modalities for
/// `unimodal`) × axis combinations × seeds, each checked by building its config.
fn plan(reg: &Registry, g: &Grid) -> Result<Vec<Cell>> {
    let mut methods = Vec::new();
    for m in &g.methods {
        if m == "all" {
            methods.extend(reg.method_names().iter().map(|s| s.to_string()));
        } else {
            methods.push(m.clone());
        }
    }
    let protocols: Vec<(String, bool)> = g
        .presets
        .iter()
        .map(|p| (p.clone(), true))
        .chain(g.datasets.iter().map(|d| (d.clone(), false)))
        .collect();
    let mut cells: Vec<Cell> = Vec::new();
    for (proto, is_preset) in &protocols {
        for method in &methods {
            let (name, modalities) = match method.split_once(':') {
                Some(("unimodal", modality)) => {
                    ("unimodal".to_string(), vec![Some(modality.to_string())])
                }
                Some(_) => {
                    bail!("method {method:?}: only `unimodal:MODALITY` takes a modality after ':'")
                }
                None if method == "unimodal" => {
                    // The dataset's modalities (a unimodal config keeps only its own).
                    let args = base_args(proto, *is_preset, "concat", None, g, 0, &[]);
                    let cfg = parse_cell(reg, &args)
                        .with_context(|| format!("the sweep's cell {proto} × unimodal"))?;
                    let mods = reg
                        .load_splits(&cfg)
                        .with_context(|| format!("loading {proto} to list its modalities"))?
                        .train
                        .modalities()
                        .to_vec();
                    ("unimodal".to_string(), mods.into_iter().map(Some).collect())
                }
                None => (method.clone(), vec![None]),
            };
            for modality in &modalities {
                for combo in g.axis_combinations() {
                    for &seed in &g.seeds {
                        let args = base_args(
                            proto,
                            *is_preset,
                            &name,
                            modality.as_deref(),
                            g,
                            seed,
                            &combo,
                        );
                        let cfg = parse_cell(reg, &args).with_context(|| {
                            format!("the sweep's cell modbal train {}", args.join(" "))
                        })?;
                        let mut cell_name = if *is_preset {
                            proto.replace('/', "-")
                        } else {
                            proto.clone()
                        };
                        cell_name.push('-');
                        cell_name.push_str(&name);
                        if let Some(m) = modality {
                            cell_name.push('-');
                            cell_name.push_str(m);
                        }
                        for (k, v) in &combo {
                            cell_name.push('-');
                            cell_name.push_str(&axis_tag(k, v));
                        }
                        cell_name.push_str(&format!("-s{seed}"));
                        if let Some(n) = &cfg.noise {
                            cell_name.push('-');
                            cell_name.push_str(&n.tag());
                        }
                        if let Some(other) = cells.iter().find(|c| c.name == cell_name) {
                            bail!(
                                "two cells of the sweep would share the run directory {cell_name:?}: \
                                 `{}` and `{}` (give axis values that differ after the key's last \
                                 component and the value are made a file name)",
                                other.args.join(" "),
                                args.join(" ")
                            );
                        }
                        cells.push(Cell {
                            index: cells.len(),
                            name: cell_name,
                            protocol: proto.clone(),
                            method: name.clone(),
                            modality: modality.clone(),
                            seed,
                            axes: combo.clone(),
                            args,
                            epochs: cfg.train.epochs,
                        });
                    }
                }
            }
        }
    }
    Ok(cells)
}

/// A cell's `modbal train` arguments.
fn base_args(
    proto: &str,
    is_preset: bool,
    method: &str,
    modality: Option<&str>,
    g: &Grid,
    seed: u64,
    combo: &[(String, String)],
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        if is_preset { "--preset" } else { "--dataset" }.into(),
        proto.into(),
        "--method".into(),
        method.into(),
    ];
    if let Some(m) = modality {
        v.extend(["--modality".into(), m.into()]);
    }
    v.extend(["--seed".into(), seed.to_string()]);
    if let Some(e) = g.epochs {
        v.extend(["--epochs".into(), e.to_string()]);
    }
    for s in &g.set {
        v.extend(["--set".into(), s.clone()]);
    }
    for (k, val) in combo {
        v.extend(["--set".into(), format!("{k}={val}")]);
    }
    v
}

/// The config of `modbal train ARGS` (the same flags, the same order of application).
fn parse_cell(reg: &Registry, args: &[String]) -> Result<RunConfig> {
    let cli = TrainCli::try_parse_from(args).map_err(|e| anyhow::anyhow!("{e}"))?;
    build_config(reg, &cli.args)
}

/// A cell's config, placed in the sweep folder under the cell's name.
fn cell_config(reg: &Registry, c: &Cell, dir: &Path) -> Result<RunConfig> {
    let mut cfg =
        parse_cell(reg, &c.args).with_context(|| format!("cell {} ({})", c.index, c.name))?;
    cfg.out_dir = dir.to_path_buf();
    cfg.name = c.name.clone();
    Ok(cfg)
}

/// An existing run directory must hold the run `cfg` asks for (what a finished or interrupted
/// cell is compared on): same seed, dataset, method, the requested method and dataset options,
/// training config and noise.
fn check_same_run(reg: &Registry, run_dir: &Path, cfg: &RunConfig) -> Result<()> {
    let p = run_dir.join("config.toml");
    if !p.exists() {
        return Ok(());
    }
    let mut old = RunConfig::from_file_in(reg, &p)
        .with_context(|| format!("reading the existing run {}", run_dir.display()))?;
    // Whether event files are written changes no result.
    old.train.tensorboard = cfg.train.tensorboard;
    let subset = |new: &toml::Table, old: &toml::Table| {
        new.iter()
            .find(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} = {v} (the run has {:?})", old.get(k)))
    };
    let diff = if old.seed != cfg.seed {
        Some(format!("seed {} (the run has {})", cfg.seed, old.seed))
    } else if old.dataset.name != cfg.dataset.name {
        Some(format!(
            "dataset {} (the run has {})",
            cfg.dataset.name, old.dataset.name
        ))
    } else if old.method.name != cfg.method.name {
        Some(format!(
            "method {} (the run has {})",
            cfg.method.name, old.method.name
        ))
    } else if let Some(d) = first_difference(&toml_of(&cfg.train)?, &toml_of(&old.train)?) {
        Some(format!("train.{d}"))
    } else if old.noise != cfg.noise {
        Some(format!(
            "noise {} (the run has {})",
            cfg.noise
                .as_ref()
                .map(|n| n.tag())
                .unwrap_or_else(|| "none".into()),
            old.noise
                .as_ref()
                .map(|n| n.tag())
                .unwrap_or_else(|| "none".into())
        ))
    } else if let Some(d) = subset(&cfg.method.options, &old.method.options) {
        Some(format!("method.{d}"))
    } else {
        subset(&cfg.dataset.options, &old.dataset.options).map(|d| format!("dataset.{d}"))
    };
    if let Some(d) = diff {
        bail!(
            "{} holds a run with another configuration than this sweep's cell ({d}); remove it \
             or choose another --out",
            run_dir.display()
        );
    }
    Ok(())
}

fn toml_of<T: serde::Serialize>(v: &T) -> Result<toml::Value> {
    Ok(toml::Value::try_from(v)?)
}

/// The first dotted key whose value differs between two TOML values, with both values.
fn first_difference(new: &toml::Value, old: &toml::Value) -> Option<String> {
    match (new, old) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) => first_difference(x, y).map(|d| {
                    if d.starts_with(' ') {
                        format!("{k}{d}")
                    } else {
                        format!("{k}.{d}")
                    }
                }),
                (x, y) => Some(format!(
                    "{k} = {} (the run has {})",
                    x.map(|v| v.to_string()).unwrap_or_else(|| "unset".into()),
                    y.map(|v| v.to_string()).unwrap_or_else(|| "unset".into())
                )),
            })
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!(" = {a} (the run has {b})")),
    }
}

/// `modbal sweep --cell I --out DIR`: finished → nothing; interrupted → resume; otherwise train
/// from the start, in exactly the cell's directory.
fn run_cell(reg: &Registry, dir: &Path, index: usize) -> Result<()> {
    let m = Manifest::load(dir)?;
    let c = m.cell(index)?;
    let cfg = cell_config(reg, c, dir)?;
    let run_dir = dir.join(&c.name);
    check_same_run(reg, &run_dir, &cfg)?;
    let opts = TrainOptions {
        progress: false,
        ..Default::default()
    };
    eprintln!(
        "cell {index} {}: modbal train {}",
        c.name,
        c.args
            .iter()
            .map(|s| quote_arg(s))
            .collect::<Vec<_>>()
            .join(" ")
    );
    match CellStatus::of(&run_dir) {
        CellStatus::Finished => {
            eprintln!("{}: finished already (summary.json)", run_dir.display());
            return Ok(());
        }
        CellStatus::Interrupted { epochs_done } => {
            eprintln!("resuming {} after epoch {epochs_done}", run_dir.display());
            reg.resume(&run_dir, &opts)
                .with_context(|| format!("resuming {}", run_dir.display()))?;
        }
        CellStatus::Started | CellStatus::NotStarted => {
            if run_dir.exists() {
                if is_busy(&run_dir) {
                    bail!(
                        "{} is in use by another process (run.lock is held)",
                        run_dir.display()
                    );
                }
                // Stopped before its first checkpoint: nothing to keep.
                std::fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("removing {}", run_dir.display()))?;
            }
            let opts = TrainOptions {
                run_dir: Some(run_dir.clone()),
                ..opts
            };
            reg.train(&cfg, &opts).context("training failed")?;
        }
    }
    Ok(())
}

/// One running job.
struct Job {
    cell: usize,
    child: Child,
    started: Instant,
}

/// Run the manifest's unfinished cells with `jobs` child processes of `exe`.
fn run_local(
    m: &Manifest,
    dir: &Path,
    exe: &Path,
    jobs: usize,
    threads: usize,
    no_progress: bool,
) -> Result<()> {
    let per_job = (threads / jobs).max(1);
    let mut queue: Vec<usize> = Vec::new();
    let (mut done, mut skipped_busy) = (0usize, Vec::new());
    for c in &m.cells {
        let rd = dir.join(&c.name);
        match CellStatus::of(&rd) {
            CellStatus::Finished => done += 1,
            _ if is_busy(&rd) => skipped_busy.push(c.index),
            _ => queue.push(c.index),
        }
    }
    let total = m.cells.len();
    let view = Progress::new(
        total,
        !no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    view.line(&format!(
        "sweep {}: {total} cells, {done} finished already, {} to run, {jobs} job(s) × {per_job} thread(s)",
        dir.display(),
        queue.len()
    ));
    for &i in &skipped_busy {
        view.line(&format!(
            "skipping {}: its run directory is in use by another process",
            m.cells[i].name
        ));
    }
    view.set_done(done);
    queue.reverse(); // pop from the end = manifest order
    let mut running: Vec<Job> = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs {
            let Some(i) = queue.pop() else { break };
            let c = &m.cells[i];
            let log_path = dir.join("logs").join(format!("{}.log", c.name));
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let _ = writeln!(
                log,
                "== modbal sweep --cell {i} ({} thread(s), unix time {})",
                per_job,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            );
            let mut cmd = Command::new(exe);
            end_with_parent(&mut cmd);
            let child = cmd
                .args(["sweep", "--cell", &i.to_string(), "--out"])
                .arg(dir)
                .current_dir(&m.cwd)
                .env("RAYON_NUM_THREADS", per_job.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("opening the log")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            view.line(&format!("started  {}", c.name));
            running.push(Job {
                cell: i,
                child,
                started: Instant::now(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut k = 0;
        while k < running.len() {
            let status = running[k].child.try_wait().context("waiting for a job")?;
            match status {
                None => k += 1,
                Some(st) => {
                    let job = running.swap_remove(k);
                    let c = &m.cells[job.cell];
                    let rd = dir.join(&c.name);
                    let secs = job.started.elapsed().as_secs_f64();
                    if st.success() && CellStatus::of(&rd) == CellStatus::Finished {
                        done += 1;
                        view.set_done(done);
                        let acc = crate::sweep::collect_one(&rd)
                            .map(|a| format!("test fusion acc {a:.4}"))
                            .unwrap_or_default();
                        view.line(&format!("finished {} ({secs:.1} s) {acc}", c.name));
                    } else {
                        let log = dir.join("logs").join(format!("{}.log", c.name));
                        let why = last_lines(&log, 3);
                        view.line(&format!(
                            "FAILED   {} ({st}); log {}:\n{why}",
                            c.name,
                            log.display()
                        ));
                        failed.push((job.cell, log.display().to_string()));
                    }
                }
            }
        }
        let live: Vec<String> = running
            .iter()
            .map(|j| {
                let c = &m.cells[j.cell];
                format!(
                    "{} {}/{}",
                    c.name,
                    crate::sweep::epochs_done(&dir.join(&c.name)),
                    c.epochs
                )
            })
            .collect();
        view.set_running(&live, failed.len());
    }
    view.finish();
    println!(
        "sweep {}: {done} of {total} cells finished{}",
        dir.display(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", failed.len())
        }
    );
    println!(
        "report:  modbal report {}",
        shell_quote(&dir.display().to_string())
    );
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(i, log)| format!("{} (log {log})", m.cells[*i].name))
            .collect();
        bail!(
            "{} cell(s) failed: {}; the others are kept, and running the same command again \
             retries the failed ones",
            failed.len(),
            list.join(", ")
        );
    }
    if !skipped_busy.is_empty() {
        bail!(
            "{} cell(s) were in use by another process and skipped; run the same command again \
             once it has ended",
            skipped_busy.len()
        );
    }
    Ok(())
}

/// On Linux, a job ends when the sweep does (SIGTERM on the parent's death), also when only
/// the sweep's own process is killed; elsewhere Ctrl-C reaches the jobs through the process
/// group.
fn end_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it runs in
        // the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sweep's one progress view: a bar of finished cells and a line of the running jobs'
/// epochs on a terminal, plain event lines otherwise.
struct Progress {
    bars: Option<(
        indicatif::MultiProgress,
        indicatif::ProgressBar,
        indicatif::ProgressBar,
    )>,
}

impl Progress {
    fn new(total: usize, terminal: bool) -> Self {
        if !terminal {
            return Self { bars: None };
        }
        let mp = indicatif::MultiProgress::new();
        let main = mp.add(indicatif::ProgressBar::new(total as u64));
        main.set_style(
            indicatif::ProgressStyle::with_template(
                "sweep [{bar:30}] {pos}/{len} cells finished  {elapsed_precise}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let running = mp.add(indicatif::ProgressBar::new_spinner());
        Self {
            bars: Some((mp, main, running)),
        }
    }

    fn line(&self, s: &str) {
        match &self.bars {
            Some((mp, _, _)) => {
                let _ = mp.println(s);
            }
            None => eprintln!("{s}"),
        }
    }

    fn set_done(&self, n: usize) {
        if let Some((_, main, _)) = &self.bars {
            main.set_position(n as u64);
        }
    }

    fn set_running(&self, live: &[String], failed: usize) {
        if let Some((_, main, running)) = &self.bars {
            main.set_message(if failed > 0 {
                format!("{failed} failed")
            } else {
                String::new()
            });
            running.set_message(format!("running: {}", live.join(" · ")));
            running.tick();
        }
    }

    fn finish(&self) {
        if let Some((_, main, running)) = &self.bars {
            running.finish_and_clear();
            main.finish_and_clear();
        }
    }
}

/// `modbal sweep --collect DIR`.
fn run_collect(dir: &Path) -> Result<()> {
    let rows = collect(dir)?;
    println!(
        "{:>5}  {:<44} {:<12} {:>7} {:>9}",
        "cell", "run", "status", "epochs", "test_acc"
    );
    for r in &rows {
        let epochs = match &r.status {
            CellStatus::Finished => format!("{}/{}", r.epochs, r.epochs),
            CellStatus::Interrupted { epochs_done } => format!("{epochs_done}/{}", r.epochs),
            _ => format!("0/{}", r.epochs),
        };
        println!(
            "{:>5}  {:<44} {:<12} {:>7} {:>9}",
            r.index,
            r.name,
            r.status.word(),
            epochs,
            r.test_fusion_acc
                .map(|a| format!("{a:.4}"))
                .unwrap_or_else(|| "-".into())
        );
        if let Some(e) = &r.error {
            println!("       {e}");
        }
    }
    let unfinished: Vec<String> = rows
        .iter()
        .filter(|r| r.status != CellStatus::Finished)
        .map(|r| r.index.to_string())
        .collect();
    let finished = rows.len() - unfinished.len();
    println!(
        "{finished} of {} cells finished; wrote {}",
        rows.len(),
        dir.join(crate::sweep::COLLECTED).display()
    );
    if finished > 0 {
        println!(
            "report:   modbal report {}",
            shell_quote(&dir.display().to_string())
        );
    }
    if !unfinished.is_empty() {
        let script = dir.join(SLURM_SCRIPT);
        if script.exists() {
            println!(
                "resubmit the unfinished cells: sbatch --array={} {}",
                unfinished.join(","),
                shell_quote(&script.display().to_string())
            );
        } else {
            println!("run the same `modbal sweep` command again to finish them");
        }
        std::process::exit(EXIT_UNFINISHED);
    }
    Ok(())
}
