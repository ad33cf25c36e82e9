//! The results tables of `docs/results/`: every method × seeds on a built-in benchmark
//! (`just table-synth`), and the robustness table of CAL §4.3 (`just table-robust`).
//!
//! Usage and options: `cargo run --release --example table_synth -- --help` (the text is
//! [`USAGE`] below).
//!
//! Finished runs are reused (their `summary.json`), interrupted ones resumed, so an interrupted
//! table continues where it stopped; a run directory whose config differs from the requested one
//! is an error (choose another `--out`). Everything is selected on validation; test metrics are
//! those of the selected epoch. Full tables take hours on 2 CPU cores (synth-av: ~80 s per
//! 12-epoch concat run, more for the methods with extra passes).

use modbal::data::noise::{NoiseConfig, NoiseKind, NoiseOn, NoiseScale};
use modbal::{evaluate_test, resume, train, RunConfig, SplitMetrics, Summary, TrainOptions};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// One run of a table row: (seed, run directory, summary).
type SeedRun = (u64, PathBuf, Summary);
/// Robust table cell lists: clean accuracies, then one list per noise setting.
type RobustRow = (Vec<f64>, Vec<Vec<f64>>);

struct Opts {
    table: String,
    epochs: usize,
    seeds: Vec<u64>,
    methods: Option<Vec<String>>,
    dataset: String,
    out: PathBuf,
    doc: Option<PathBuf>,
    sets: Vec<String>,
    salt_pepper: Option<Vec<f64>>,
    gaussian: Option<Vec<f64>>,
    protocols: Vec<NoiseOn>,
    noise_modalities: Vec<String>,
    scale: NoiseScale,
}

impl Opts {
    /// The salt-pepper ε of the robust table (default per scale).
    fn salt_pepper(&self) -> Vec<f64> {
        self.salt_pepper
            .clone()
            .unwrap_or_else(|| match self.scale {
                NoiseScale::Modbal => vec![0.05, 0.1, 0.2],
                NoiseScale::Qmf => vec![5.0, 10.0],
            })
    }
    /// The Gaussian ε of the robust table (default per scale).
    fn gaussian(&self) -> Vec<f64> {
        self.gaussian.clone().unwrap_or_else(|| match self.scale {
            NoiseScale::Modbal => vec![0.5, 1.5, 3.0],
            NoiseScale::Qmf => vec![5.0, 10.0],
        })
    }
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Res<Vec<T>> {
    s.split([',', ' '])
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse()
                .map_err(|_| format!("{what}: cannot parse {x:?}").into())
        })
        .collect()
}

/// What `--help` prints.
const USAGE: &str = "\
cargo run --release --example table_synth -- synth  [options]   # docs/results/synth-av.md
cargo run --release --example table_synth -- robust [options]   # docs/results/synth-av-robust.md

options (defaults):
  --epochs 12              epochs per run (the README's 12)
  --seeds 0,1,2            run seeds
  --methods all            synth: every name of modbal::Registry::builtin() (unimodal once
                           per modality); robust: concat,cal (--scale qmf: concat,tmc,qmf,eau,cal)
  --dataset synth-av
  --out runs/tables        run directories go to <out>/<table>-e<epochs>/
  --doc PATH               the Markdown written (default docs/results/<dataset>[-robust].md);
                           plots are copied next to it, into plots/
  --set KEY=VALUE          a config override for every run (repeatable)
  robust only:
  --scale modbal               how ε is read (crates/modbal-data/src/noise.rs): modbal, or qmf
                               (QMF's code, CAL Tables 2-3: defaults ε = 5,10 for both kinds;
                               the doc defaults to docs/results/<dataset>-robust-qmf.md)
  --salt-pepper 0.05,0.1,0.2   salt-pepper ε (modbal scale: per-element probability)
  --gaussian 0.5,1.5,3         Gaussian ε (modbal scale: std in units of the modality's std)
  --protocols test,train+test  noise on the test split only (CAL Table 2: evaluated on each
                               clean run's selected model) and/or on train and test (Table 3:
                               one run per setting)
  --noise-modality NAME        corrupt only this modality (repeatable; default all)
";

fn parse_args() -> Res<Opts> {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let mut args = std::env::args().skip(1);
    let table = args.next().unwrap_or_else(|| "synth".into());
    if table != "synth" && table != "robust" {
        return Err(format!(
            "first argument must be `synth` or `robust`, got {table:?} (see --help)"
        )
        .into());
    }
    let mut o = Opts {
        table,
        epochs: 12,
        seeds: vec![0, 1, 2],
        methods: None,
        dataset: "synth-av".into(),
        out: PathBuf::from("runs/tables"),
        doc: None,
        sets: Vec::new(),
        salt_pepper: None,
        gaussian: None,
        protocols: vec![NoiseOn::Test, NoiseOn::TrainTest],
        noise_modalities: Vec::new(),
        scale: NoiseScale::Modbal,
    };
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--epochs" => o.epochs = val()?.parse()?,
            "--seeds" => o.seeds = list(&val()?, "--seeds")?,
            "--methods" => {
                let v = val()?;
                if !v.trim().is_empty() && v.trim() != "all" {
                    o.methods = Some(list(&v, "--methods")?);
                }
            }
            "--dataset" => o.dataset = val()?,
            "--out" => o.out = val()?.into(),
            "--doc" => o.doc = Some(val()?.into()),
            "--set" => o.sets.push(val()?),
            "--salt-pepper" => o.salt_pepper = Some(list(&val()?, "--salt-pepper")?),
            "--gaussian" => o.gaussian = Some(list(&val()?, "--gaussian")?),
            "--scale" => o.scale = NoiseScale::from_name(&val()?)?,
            "--protocols" => {
                o.protocols = list::<String>(&val()?, "--protocols")?
                    .iter()
                    .map(|p| NoiseOn::from_name(p))
                    .collect::<Result<_, _>>()?
            }
            "--noise-modality" => o.noise_modalities.push(val()?),
            _ => return Err(format!("unknown option {flag:?} (see the file's header)").into()),
        }
    }
    if o.seeds.is_empty() {
        return Err("--seeds: at least one seed".into());
    }
    Ok(o)
}

/// The run of `cfg` in `<out_dir>/<run name>`: reused when finished, resumed when interrupted,
/// trained otherwise.
fn run(cfg: &RunConfig) -> Res<(PathBuf, Summary)> {
    let dir = cfg.out_dir.join(cfg.run_name());
    if dir.join("config.toml").exists() {
        let old = RunConfig::from_file(&dir.join("config.toml"))?;
        if old.seed != cfg.seed
            || old.dataset != cfg.dataset
            || old.train != cfg.train
            || old.noise != cfg.noise
            || old.method.name != cfg.method.name
        {
            return Err(format!(
                "{} holds a run with another configuration; remove it or choose another --out",
                dir.display()
            )
            .into());
        }
    }
    let quiet = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let summary = if dir.join("summary.json").exists() {
        eprintln!("  reusing {}", dir.display());
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?
    } else if dir.join("checkpoints/last/state.json").exists() {
        eprintln!("  resuming {}", dir.display());
        resume(&dir, &quiet)?
            .summary
            .ok_or("resumed run did not finish")?
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?; // started, but no epoch finished
        }
        eprintln!("  training {}", dir.display());
        let opts = TrainOptions {
            run_dir: Some(dir.clone()),
            ..quiet
        };
        train(cfg, &opts)?.summary.ok_or("run did not finish")?
    };
    Ok((dir, summary))
}

fn wall_seconds(dir: &Path) -> f64 {
    std::fs::read_to_string(dir.join("timing.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seconds"].as_f64())
        .sum()
}

/// `mean ± std` (sample standard deviation; a single value alone).
fn mean_std(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() == 1 {
        return format!("{m:.digits$}");
    }
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    format!("{m:.digits$} ± {sd:.digits$}")
}

fn base_config(o: &Opts, table: &str) -> Res<RunConfig> {
    let out = o.out.join(format!("{table}-e{}", o.epochs));
    let mut sets = vec![
        format!("dataset.name={}", o.dataset),
        format!("train.epochs={}", o.epochs),
        format!("out_dir={:?}", out.display().to_string()),
    ];
    sets.extend(o.sets.iter().cloned());
    Ok(RunConfig::default().with_overrides(&sets)?)
}

fn header(o: &Opts, what: &str) -> String {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|x| x.status.success())
        .map(|x| String::from_utf8_lossy(&x.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let seeds: Vec<String> = o.seeds.iter().map(|s| s.to_string()).collect();
    let mut cmd = format!(
        "cargo run --release --example table_synth -- {} --epochs {} --seeds {} --dataset {}",
        o.table,
        o.epochs,
        seeds.join(","),
        o.dataset
    );
    if let Some(m) = &o.methods {
        let _ = write!(cmd, " --methods {}", m.join(","));
    }
    if o.table == "robust" {
        let nums = |v: &[f64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let on: Vec<&str> = o.protocols.iter().map(|p| p.name()).collect();
        let _ = write!(
            cmd,
            " --scale {} --salt-pepper {} --gaussian {} --protocols {}",
            o.scale.name(),
            nums(&o.salt_pepper()),
            nums(&o.gaussian()),
            on.join(",")
        );
        for m in &o.noise_modalities {
            let _ = write!(cmd, " --noise-modality {m}");
        }
    }
    for s in &o.sets {
        let _ = write!(cmd, " --set {s}");
    }
    format!(
        "{what}\n\nGenerated by `{cmd}` (git {rev}, {} threads). Every number is a **test** metric \
         of the epoch selected on **validation** fusion accuracy (the test split is never used \
         for selection), mean ± sample standard deviation over the seeds; methods run with their \
         documented defaults (`docs/methods/`). Reported as measured, including methods that do \
         not beat `concat` here.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )
}

fn write_doc(path: &Path, body: &str) -> Res<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, body)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The rows of the synth table: (label, method config) for every registered method, `unimodal`
/// once per modality of the dataset.
fn synth_rows(o: &Opts, base: &RunConfig) -> Res<Vec<(String, RunConfig)>> {
    let names: Vec<String> = match &o.methods {
        Some(m) => m.clone(),
        None => modbal::Registry::builtin()
            .method_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let modalities = modbal::load_splits(base)?.train.modalities().to_vec();
    let mut rows = Vec::new();
    for name in names {
        if name == "unimodal" {
            for m in &modalities {
                let cfg = base.with_overrides(&[
                    "method.name=unimodal".into(),
                    format!("method.modality={m:?}"),
                    format!("name=\"{}-unimodal-{m}\"", base.dataset.name()),
                ])?;
                rows.push((format!("unimodal ({m})"), cfg));
            }
        } else {
            rows.push((
                name.clone(),
                base.with_overrides(&[format!("method.name={name}")])?,
            ));
        }
    }
    Ok(rows)
}

fn synth(o: &Opts) -> Res<()> {
    let base = base_config(o, "synth")?;
    let doc = o
        .doc
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/{}.md", o.dataset)));
    let plot_dir = doc.parent().unwrap_or(Path::new(".")).join("plots");
    let rows = synth_rows(o, &base)?;
    // label -> per seed (run dir, summary)
    let mut results: Vec<(String, Vec<SeedRun>)> = Vec::new();
    for (label, cfg) in &rows {
        let mut per = Vec::new();
        for &seed in &o.seeds {
            eprintln!("{label}, seed {seed}");
            let mut c = cfg.clone();
            c.seed = seed;
            if !c.name.is_empty() {
                c.name = format!("{}-s{seed}", cfg.name);
            }
            let (dir, s) = run(&c)?;
            per.push((seed, dir, s));
        }
        results.push((label.clone(), per));
    }
    let mods: Vec<String> = {
        let mut m: Vec<String> = results
            .iter()
            .flat_map(|(_, p)| {
                p.iter()
                    .flat_map(|(_, _, s)| s.test.modality_acc.keys().cloned())
            })
            .collect();
        m.sort();
        m.dedup();
        m
    };
    let mut md = header(o, &format!("# Results: every method on `{}`", o.dataset));
    md.push_str(
        "\nColumns: fusion accuracy of the validation-selected model; fusion accuracy of the \
         model after the last epoch (no selection); each modality's own accuracy inside the model (its head \
         slice / unimodal logits, `modality_acc`); macro F1; discrepancy ratio (max/min over \
         modalities of Σ softmax(z_m)[y]; 1 = balanced); the selected epoch; wall-clock seconds \
         of training per run (`timing.jsonl`).\n\n",
    );
    let mut head = "| method | fusion acc | fusion acc, last epoch |".to_string();
    let mut rule = "|---|---|---|".to_string();
    for m in &mods {
        let _ = write!(head, " {m} acc |");
        rule.push_str("---|");
    }
    head.push_str(" macro F1 | disc. ratio | best epoch | s / run |\n");
    rule.push_str("---|---|---|---|\n");
    md.push_str(&head);
    md.push_str(&rule);
    let col = |per: &[SeedRun], f: &dyn Fn(&SplitMetrics) -> Option<f64>| {
        per.iter()
            .filter_map(|(_, _, s)| f(&s.test))
            .collect::<Vec<f64>>()
    };
    for (label, per) in &results {
        let last: Vec<f64> = per.iter().map(|(_, _, s)| s.test_last.fusion_acc).collect();
        let _ = write!(
            md,
            "| {label} | {} | {} |",
            mean_std(&col(per, &|t| Some(t.fusion_acc)), 4),
            mean_std(&last, 4)
        );
        for m in &mods {
            let _ = write!(
                md,
                " {} |",
                mean_std(&col(per, &|t| t.modality_acc.get(m).copied()), 4)
            );
        }
        let best: Vec<f64> = per
            .iter()
            .map(|(_, _, s)| (s.best_epoch + 1) as f64)
            .collect();
        let secs: Vec<f64> = per.iter().map(|(_, d, _)| wall_seconds(d)).collect();
        let _ = writeln!(
            md,
            " {} | {} | {} | {} |",
            mean_std(&col(per, &|t| Some(t.macro_f1)), 4),
            mean_std(&col(per, &|t| t.discrepancy_ratio), 3),
            mean_std(&best, 1),
            mean_std(&secs, 0)
        );
    }
    md.push_str("\n## Per seed\n\n| method | seed | fusion acc |");
    for m in &mods {
        let _ = write!(md, " {m} acc |");
    }
    md.push_str(" best epoch | run directory |\n|---|---|---|");
    for _ in &mods {
        md.push_str("---|");
    }
    md.push_str("---|---|\n");
    for (label, per) in &results {
        for (seed, dir, s) in per {
            let _ = write!(md, "| {label} | {seed} | {:.4} |", s.test.fusion_acc);
            for m in &mods {
                match s.test.modality_acc.get(m) {
                    Some(a) => {
                        let _ = write!(md, " {a:.4} |");
                    }
                    None => md.push_str(" – |"),
                }
            }
            let _ = writeln!(
                md,
                " {} of {} | `{}` |",
                s.best_epoch + 1,
                s.epochs,
                dir.display()
            );
        }
    }
    // Plots of the first seed, copied next to the document.
    let _ = writeln!(
        md,
        "\n## Plots (seed {})\n\nLearning curves (fusion and per-modality accuracy, train dashed, \
         val solid), loss, and the method's own per-epoch quantities (`metrics.jsonl` → \
         `method`, one panel per quantity), copied from each run's `plots/`.\n\n\
         | method | accuracy | loss | mechanism |\n|---|---|---|---|",
        o.seeds[0]
    );
    std::fs::create_dir_all(&plot_dir)?;
    for (label, per) in &results {
        let (_, dir, _) = &per[0];
        let slug: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_matches('-')
            .replace("--", "-");
        let mut cells = Vec::new();
        for f in ["accuracy", "loss", "method"] {
            let src = dir.join("plots").join(format!("{f}.svg"));
            if src.exists() {
                let name = format!("{}-{slug}-{f}.svg", o.dataset);
                std::fs::copy(&src, plot_dir.join(&name))?;
                cells.push(format!("[{f}](plots/{name})"));
            } else {
                cells.push("–".into());
            }
        }
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    write_doc(&doc, &md)
}

fn robust(o: &Opts) -> Res<()> {
    let base = base_config(o, "robust")?;
    let suffix = match o.scale {
        NoiseScale::Modbal => "",
        NoiseScale::Qmf => "-qmf",
    };
    let doc = o
        .doc
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/{}-robust{suffix}.md", o.dataset)));
    let methods = o.methods.clone().unwrap_or_else(|| {
        let names: &[&str] = match o.scale {
            NoiseScale::Modbal => &["concat", "cal"],
            NoiseScale::Qmf => &["concat", "tmc", "qmf", "eau", "cal"],
        };
        names.iter().map(|m| m.to_string()).collect()
    });
    let mut settings: Vec<(NoiseKind, f64)> = Vec::new();
    settings.extend(o.salt_pepper().iter().map(|&e| (NoiseKind::SaltPepper, e)));
    settings.extend(o.gaussian().iter().map(|&e| (NoiseKind::Gaussian, e)));
    let noise = |kind, eps, on| {
        let mut n = NoiseConfig::new(kind, eps, on);
        n.modalities = o.noise_modalities.clone();
        n.scale = o.scale;
        n
    };
    // (protocol, method) -> clean + one accuracy list per setting
    let mut table: BTreeMap<(usize, String), RobustRow> = BTreeMap::new();
    for m in &methods {
        let cfg = base.with_overrides(&[format!("method.name={m}")])?;
        for &seed in &o.seeds {
            let mut c = cfg.clone();
            c.seed = seed;
            eprintln!("{m}, seed {seed}, clean");
            let (dir, clean) = run(&c)?;
            for (pi, &on) in o.protocols.iter().enumerate() {
                let e = table
                    .entry((pi, m.clone()))
                    .or_insert_with(|| (Vec::new(), vec![Vec::new(); settings.len()]));
                e.0.push(clean.test.fusion_acc);
                for (si, &(kind, eps)) in settings.iter().enumerate() {
                    let n = noise(kind, eps, on);
                    let acc = if on == NoiseOn::Test {
                        // Clean training: the clean run's selected model on the noisy test split.
                        evaluate_test(&dir, Some(&n))?.fusion_acc
                    } else {
                        eprintln!("{m}, seed {seed}, {} {eps} on {}", kind.name(), on.name());
                        let mut cn = c.clone();
                        cn.noise = Some(n);
                        run(&cn)?.1.test.fusion_acc
                    };
                    e.1[si].push(acc);
                }
            }
        }
    }
    let mut md = header(
        o,
        &format!("# Robustness on `{}` (CAL §4.3 protocol)", o.dataset),
    );
    let mods = if o.noise_modalities.is_empty() {
        "every modality".to_string()
    } else {
        o.noise_modalities.join(", ")
    };
    match o.scale {
        NoiseScale::Modbal => {
            let _ = writeln!(
                md,
                "\nTest fusion accuracy under input noise on {mods} (noise seed 0). ε conventions \
                 (`crates/modbal-data/src/noise.rs`, scale `modbal`): salt-pepper ε = \
                 per-element probability of being set to the modality's training min or max \
                 (half each); Gaussian ε = standard deviation of the added noise in units of the \
                 modality's training standard deviation. These are **not** the ε = 5 / 10 of CAL \
                 Tables 2-3 (QMF's severity scale: `--scale qmf`, \
                 `docs/results/<dataset>-robust-qmf.md`). Model selection always uses the clean \
                 validation split."
            );
        }
        NoiseScale::Qmf => {
            let _ = writeln!(
                md,
                "\nTest fusion accuracy under input noise on {mods} (noise seed 0), ε on QMF's \
                 scale as CAL Tables 2-3 (`crates/modbal-data/src/noise.rs`, scale `qmf`; \
                 `docs/robustness.md`): each sample's modality is corrupted with probability \
                 0.5; salt-pepper: then with probability min(ε/10, 1) (QMF's 2023 code), with \
                 density 0.1 per position (every channel to its training min or max: QMF's 0 \
                 and 255); Gaussian: std 10·ε grey levels (a grey level = 1/255 of the channel's \
                 training range), one field shared by the channels, clipped to the range. \
                 Model selection always uses the clean validation split."
            );
        }
    }
    for (pi, on) in o.protocols.iter().enumerate() {
        let title = match on {
            NoiseOn::Test => {
                "Noise on the test split only (CAL Table 2, generalisation): the \
                              clean run's selected model evaluated on corrupted test data"
            }
            NoiseOn::TrainTest => {
                "Noise on the training and test splits (CAL Table 3, \
                                   learning ability): one run per setting"
            }
            _ => "Noise on the validation and test splits",
        };
        let _ = writeln!(md, "\n## {title}\n");
        let mut head = "| method | clean |".to_string();
        let mut rule = "|---|---|".to_string();
        for (kind, eps) in &settings {
            let _ = write!(head, " {} ε={eps} |", kind.name());
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for m in &methods {
            let (clean, accs) = &table[&(pi, m.clone())];
            let _ = write!(md, "| {m} | {} |", mean_std(clean, 4));
            for a in accs {
                let _ = write!(md, " {} |", mean_std(a, 4));
            }
            md.push('\n');
        }
    }
    write_doc(&doc, &md)
}

fn main() -> Res<()> {
    let o = parse_args()?;
    match o.table.as_str() {
        "synth" => synth(&o),
        _ => robust(&o),
    }
}
