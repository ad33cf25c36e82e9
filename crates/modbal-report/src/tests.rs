//! Unit tests on run directories written here in the real formats (`config.toml`,
//! `metrics.jsonl` lines serialised from [`EpochRecord`], `summary.json` from [`Summary`],
//! `timing.jsonl`).

use super::*;
use modbal_train::{EpochRecord, SplitMetrics, Summary};
use std::collections::BTreeMap;

fn metrics(acc: f64, mods: &[(&str, f64)]) -> SplitMetrics {
    SplitMetrics {
        loss: 1.0 - acc,
        fusion_acc: acc,
        modality_acc: mods.iter().map(|(m, a)| (m.to_string(), *a)).collect(),
        macro_f1: acc - 0.01,
        discrepancy_ratio: Some(1.5),
    }
}

struct Fixture<'a> {
    dataset: &'a str,
    method: &'a str,
    seed: u64,
    /// Extra TOML lines inside `[method]`.
    method_extra: &'a str,
    epochs: usize,
    /// Epochs with records (== epochs for a finished run).
    done: usize,
    finished: bool,
    test_acc: f64,
    seconds: f64,
}

impl Default for Fixture<'_> {
    fn default() -> Self {
        Self {
            dataset: "synth-vec",
            method: "concat",
            seed: 0,
            method_extra: "",
            epochs: 3,
            done: 3,
            finished: true,
            test_acc: 0.5,
            seconds: 1.25,
        }
    }
}

fn write_run(dir: &Path, f: &Fixture) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = format!(
        "name = \"\"\nseed = {}\nout_dir = \"runs\"\n\n[dataset]\nname = \"{}\"\ntrain = 480\n\n\
         [method]\nname = \"{}\"\n{}\n[train]\nepochs = {}\nbatch_size = 64\n",
        f.seed, f.dataset, f.method, f.method_extra, f.epochs
    );
    std::fs::write(dir.join("config.toml"), cfg).unwrap();
    let mods = [("audio", 0.4), ("visual", 0.3)];
    let mut lines = String::new();
    let mut timing = String::new();
    for e in 0..f.done {
        for split in ["train", "val"] {
            let m = metrics(0.3 + 0.1 * e as f64, &mods);
            let mut method = serde_json::Map::new();
            if split == "train" {
                method = serde_json::json!({
                    "k": {"audio": 0.5 + e as f64, "visual": 1.0},
                    "loss.fused": 0.7,
                    "stage": "fusion",
                })
                .as_object()
                .unwrap()
                .clone();
            }
            let r = EpochRecord {
                epoch: e,
                stage: "train".into(),
                split: split.into(),
                loss: m.loss,
                fusion_acc: m.fusion_acc,
                modality_acc: m.modality_acc.clone(),
                macro_f1: m.macro_f1,
                discrepancy_ratio: m.discrepancy_ratio,
                lr: 0.01,
                method,
                noise: None,
            };
            lines.push_str(&serde_json::to_string(&r).unwrap());
            lines.push('\n');
        }
        timing.push_str(&format!("{{\"epoch\":{e},\"seconds\":{}}}\n", f.seconds));
    }
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    std::fs::write(dir.join("timing.jsonl"), timing).unwrap();
    if f.finished {
        let s = Summary {
            run: dir.file_name().unwrap().to_string_lossy().into_owned(),
            method: f.method.into(),
            dataset: f.dataset.into(),
            seed: f.seed,
            epochs: f.epochs,
            best_epoch: f.epochs - 1,
            selected_on: "val.fusion_acc".into(),
            val: metrics(f.test_acc, &mods),
            test: metrics(f.test_acc, &[("audio", f.test_acc - 0.2), ("visual", 0.25)]),
            test_last: metrics(f.test_acc, &mods),
            test_curve: None,
            noise: None,
        };
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&s).unwrap(),
        )
        .unwrap();
    }
}

/// Three finished concat seeds with test accuracies 0.5, 0.6, 0.9.
fn three_seeds(root: &Path) -> [f64; 3] {
    let accs = [0.5, 0.6, 0.9];
    for (s, &a) in accs.iter().enumerate() {
        write_run(
            &root.join(format!("synth-vec-concat-s{s}")),
            &Fixture {
                seed: s as u64,
                test_acc: a,
                ..Default::default()
            },
        );
    }
    accs
}

fn col(t: &RunsTable, name: &str) -> usize {
    t.columns.iter().position(|c| c == name).unwrap()
}

#[test]
fn summary_mean_and_sample_std_match_the_closed_form() {
    let tmp = tempfile::tempdir().unwrap();
    let accs = three_seeds(tmp.path());
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    assert_eq!(runs.len(), 3);
    let all: Vec<&Run> = runs.iter().collect();
    let t = RunsTable::new(&all);
    let s = SummaryTable::new(&t);
    assert_eq!(s.rows.len(), 1);
    assert_eq!(s.rows[0].n, 3);
    // Closed form: mean = Σx/n, sample variance = (Σx² − (Σx)²/n)/(n − 1).
    let n = accs.len() as f64;
    let sum: f64 = accs.iter().sum();
    let sum2: f64 = accs.iter().map(|x| x * x).sum();
    let mean = sum / n;
    let std = ((sum2 - sum * sum / n) / (n - 1.0)).sqrt();
    let st = s.rows[0].stats[col(&t, "test_fusion_acc")].unwrap();
    assert!((st.mean - mean).abs() < 1e-12, "{} vs {mean}", st.mean);
    assert!((st.std.unwrap() - std).abs() < 1e-12);
    // (2/3 and 0.2081665999 by hand: √(0.0433…))
    assert!((std - 0.208_166_599_946_613_3).abs() < 1e-12);
    // wall time = Σ timing.jsonl seconds = 3 × 1.25; identical over seeds ⇒ std 0.
    let w = s.rows[0].stats[col(&t, "wall_seconds")].unwrap();
    assert_eq!((w.mean, w.std), (3.75, Some(0.0)));
    // The selected epoch is best_epoch + 1.
    assert_eq!(t.rows[0].values[col(&t, "selected_epoch")], Some(3.0));
    // Markdown shows mean ± std with 4 decimals.
    let md = markdown(&runs, &ReportOptions::default());
    assert!(md.contains("0.6667 ± 0.2082"), "{md}");
    assert!(md.contains("| concat |  | 3 |"), "{md}");
    assert!(md.contains("validation"), "{md}");
    // summary.csv holds the plain numbers.
    let csv = s.to_csv();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let i = header
        .iter()
        .position(|h| *h == "test_fusion_acc_mean")
        .unwrap();
    assert!((row[i].parse::<f64>().unwrap() - mean).abs() < 1e-15);
    assert!((row[i + 1].parse::<f64>().unwrap() - std).abs() < 1e-15);
}

#[test]
fn one_seed_has_no_std() {
    assert_eq!(
        MeanStd::of(&[0.25]),
        Some(MeanStd {
            n: 1,
            mean: 0.25,
            std: None
        })
    );
    assert_eq!(MeanStd::of(&[]), None);
}

#[test]
fn variants_are_the_differing_config_keys() {
    let tmp = tempfile::tempdir().unwrap();
    for (alpha, seed) in [("0.5", 0), ("0.5", 1), ("1.0", 0), ("1.0", 1)] {
        write_run(
            &tmp.path().join(format!("ogm-a{alpha}-s{seed}")),
            &Fixture {
                method: "ogm-ge",
                seed,
                method_extra: &format!("alpha = {alpha}\nwindow = 3\n"),
                ..Default::default()
            },
        );
    }
    // Unimodal audio vs visual: the encoder tables differ too, but method.modality alone tells
    // the runs apart, so the variant is that key only.
    for m in ["audio", "visual"] {
        write_run(
            &tmp.path().join(format!("uni-{m}")),
            &Fixture {
                method: "unimodal",
                method_extra: &format!(
                    "modality = \"{m}\"\n\n[model.encoders.{m}]\nkind = \"mlp\"\n"
                ),
                ..Default::default()
            },
        );
    }
    // A lone run of a third method: no variant.
    write_run(
        &tmp.path().join("cal-s0"),
        &Fixture {
            method: "cal",
            ..Default::default()
        },
    );
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    let v: BTreeMap<&str, &str> = runs
        .iter()
        .map(|r| (r.name.as_str(), r.variant.as_str()))
        .collect();
    assert_eq!(v["ogm-a0.5-s0"], "method.alpha=0.5");
    assert_eq!(v["ogm-a0.5-s1"], "method.alpha=0.5");
    assert_eq!(v["ogm-a1.0-s1"], "method.alpha=1");
    assert_eq!(v["uni-audio"], "method.modality=audio");
    assert_eq!(v["uni-visual"], "method.modality=visual");
    assert_eq!(v["cal-s0"], "");
    let all: Vec<&Run> = runs.iter().collect();
    let s = SummaryTable::new(&RunsTable::new(&all));
    let groups: Vec<(&str, &str, usize)> = s
        .rows
        .iter()
        .map(|r| (r.method.as_str(), r.variant.as_str(), r.n))
        .collect();
    assert_eq!(
        groups,
        [
            ("cal", "", 1),
            ("ogm-ge", "method.alpha=0.5", 2),
            ("ogm-ge", "method.alpha=1", 2),
            ("unimodal", "method.modality=audio", 1),
            ("unimodal", "method.modality=visual", 1),
        ]
    );
}

#[test]
fn absent_keys_appear_when_they_alone_tell_runs_apart() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(&tmp.path().join("a"), &Fixture::default());
    write_run(
        &tmp.path().join("b"),
        &Fixture {
            method_extra: "extra = 2\n",
            ..Default::default()
        },
    );
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    assert_eq!(runs[0].variant, "method.extra=∅");
    assert_eq!(runs[1].variant, "method.extra=2");
}

/// RFC 4180 §2.6–2.7: fields with commas, quotes or line breaks are quoted, quotes doubled.
#[test]
fn csv_quoting_follows_rfc_4180() {
    assert_eq!(csv_field("plain"), "plain");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    assert_eq!(csv_field("cr\r"), "\"cr\r\"");
    assert_eq!(
        csv_line(&["x".into(), "y,z".into(), "".into()]),
        "x,\"y,z\",\r\n"
    );
    // A variant of two keys holds a comma: its cell in runs.csv is quoted.
    let tmp = tempfile::tempdir().unwrap();
    for (i, extra) in ["a = 1\nb = 1\n", "a = 2\nb = 2\n"].iter().enumerate() {
        write_run(
            &tmp.path().join(format!("r{i}")),
            &Fixture {
                method_extra: extra,
                ..Default::default()
            },
        );
    }
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    let all: Vec<&Run> = runs.iter().collect();
    let csv = RunsTable::new(&all).to_csv();
    assert!(csv.contains(",\"method.a=1, method.b=1\","), "{csv}");
    assert!(csv.ends_with("\r\n"));
    let header_fields = csv.lines().next().unwrap().split(',').count();
    // Outside the quoted variant, one comma per field boundary.
    let row = csv
        .lines()
        .nth(1)
        .unwrap()
        .replace("\"method.a=1, method.b=1\"", "V");
    assert_eq!(row.trim_end().split(',').count(), header_fields);
}

#[test]
fn interrupted_runs_are_listed_as_such_and_left_out_of_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    three_seeds(tmp.path());
    write_run(
        &tmp.path().join("synth-vec-concat-s3"),
        &Fixture {
            seed: 3,
            done: 2,
            finished: false,
            ..Default::default()
        },
    );
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    let r = runs
        .iter()
        .find(|r| r.name == "synth-vec-concat-s3")
        .unwrap();
    assert_eq!(
        r.status,
        RunStatus::Interrupted {
            epochs_done: 2,
            epochs: Some(3)
        }
    );
    assert_eq!(r.status.label(), "interrupted (2/3 epochs)");
    let all: Vec<&Run> = runs.iter().collect();
    let t = RunsTable::new(&all);
    let row = t
        .rows
        .iter()
        .find(|r| r.run == "synth-vec-concat-s3")
        .unwrap();
    assert_eq!(row.values[col(&t, "test_fusion_acc")], None);
    assert_eq!(row.values[col(&t, "wall_seconds")], Some(2.5));
    assert!(t
        .to_csv()
        .contains("synth-vec-concat-s3,synth-vec,concat,,3,interrupted (2/3 epochs),3,,,"));
    let s = SummaryTable::new(&t);
    assert_eq!(s.rows[0].n, 3);
    // Its curves are still plotted.
    let html = html_page(&runs, &ReportOptions::default()).unwrap();
    assert_eq!(
        html.matches("data-run=\"r0-3\"").count(),
        1 + 3 + 2,
        "legend + curves + mechanism (k, loss)"
    );
}

#[test]
fn missing_paths_and_empty_folders_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-runs");
    let e = find_runs(std::slice::from_ref(&missing), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-runs") && e.contains("does not exist"),
        "{e}"
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    let e = find_runs(std::slice::from_ref(&empty), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty") && e.contains("holds no run"), "{e}");
}

#[test]
fn search_skips_checkpoints_plots_tensorboard_and_report_folders() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(&tmp.path().join("sweep/a"), &Fixture::default());
    for skipped in ["checkpoints", "plots", "tensorboard"] {
        write_run(
            &tmp.path().join("sweep").join(skipped).join("x"),
            &Fixture::default(),
        );
    }
    write_run(&tmp.path().join("sweep/old-report/x"), &Fixture::default());
    std::fs::write(tmp.path().join("sweep/old-report/report.html"), "").unwrap();
    write_run(&tmp.path().join("sweep/out/x"), &Fixture::default());
    let found = find_runs(&[tmp.path().to_path_buf()], &[tmp.path().join("sweep/out")]).unwrap();
    assert_eq!(found, [tmp.path().join("sweep/a")]);
}

#[test]
fn corrupt_lines_make_the_run_unreadable_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    write_run(&dir, &Fixture::default());
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"epoch\": oops}";
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    let r = load_run(&dir);
    match &r.status {
        RunStatus::Unreadable(why) => {
            assert!(why.contains("metrics.jsonl line 3"), "{why}")
        }
        s => panic!("expected unreadable, got {s:?}"),
    }
    // Listed, not fatal: the report still writes, the summary leaves it out.
    write_run(&tmp.path().join("good"), &Fixture::default());
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    let out = tmp.path().join("report");
    write_report(&runs, &out, &ReportOptions::default()).unwrap();
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert!(csv.contains("unreadable: "), "{csv}");
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 2, "{summary}");
    // A corrupt summary.json is named too.
    let dir2 = tmp.path().join("bad-summary");
    write_run(&dir2, &Fixture::default());
    std::fs::write(dir2.join("summary.json"), "{\"run\": 1").unwrap();
    match load_run(&dir2).status {
        RunStatus::Unreadable(why) => assert!(why.contains("summary.json"), "{why}"),
        s => panic!("expected unreadable, got {s:?}"),
    }
}

#[test]
fn a_half_written_last_line_of_a_killed_run_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("killed");
    write_run(
        &dir,
        &Fixture {
            finished: false,
            done: 2,
            ..Default::default()
        },
    );
    let mut text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.push_str("{\"epoch\":2,\"stage\":\"tr");
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    let r = load_run(&dir);
    assert_eq!(r.status.label(), "interrupted (2/3 epochs)");
    assert_eq!(r.records.len(), 4);
}

#[test]
fn html_is_self_contained_and_scripted() {
    let tmp = tempfile::tempdir().unwrap();
    three_seeds(tmp.path());
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    let out = tmp.path().join("report");
    let w = write_report(&runs, &out, &ReportOptions::default()).unwrap();
    let names: Vec<String> = w
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["runs.csv", "summary.csv", "report.md", "report.html"]
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for bad in [
        "src=\"http",
        "href=\"http",
        "<link",
        "@import",
        "url(http",
        "src='http",
    ] {
        assert!(
            !html.to_lowercase().contains(bad),
            "report.html contains {bad}"
        );
    }
    assert!(html.contains("document.body.dataset.status=\"ok\""));
    assert!(html.contains("window.onerror"));
    // Plots: 3 curves + mechanism groups k and loss (the string `stage` is not plotted); each
    // with a base and one layer per run.
    assert_eq!(html.matches("<svg class=\"base\"").count(), 5);
    assert_eq!(html.matches("<svg class=\"layer\"").count(), 5 * 3);
    assert!(html.contains("Mechanism: concat"));
    assert!(
        html.contains("● k.audio"),
        "keys of a group told apart by markers"
    );
    // A layer and the base have one pixel mapping: the same size and viewBox.
    let vb = format!("viewBox=\"0 0 {} {}\"", PLOT_SIZE.0, PLOT_SIZE.1);
    assert_eq!(html.matches(&vb).count(), 5 * 4);
    // Run colours in the legend.
    let c = run_colour(1);
    assert!(html.contains(&format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)));
}

#[test]
fn large_sections_start_with_the_first_seed_of_each_group_shown() {
    let tmp = tempfile::tempdir().unwrap();
    three_seeds(tmp.path());
    let runs = load_runs(&[tmp.path().to_path_buf()], &[]).unwrap();
    let opts = ReportOptions {
        max_default_layers: 2,
        ..Default::default()
    };
    let html = html_page(&runs, &opts).unwrap();
    assert!(html.contains("data-run=\"r0-0\" data-colour=\"#1f77b4\" checked"));
    assert!(html.contains("data-run=\"r0-1\" data-colour=\"#ff7f0e\">"));
}

#[test]
fn method_values_flatten_and_group_by_first_component() {
    let v = serde_json::json!({
        "scale": {"audio": 1.0, "visual": 2.0},
        "loss.audio": 0.5,
        "nested": {"a": {"b": 3}},
        "stage": "fusion",
        "flag": true,
    });
    let mut out = BTreeMap::new();
    plots::flatten_method("", v.as_object().unwrap(), &mut out);
    let keys: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        ["loss.audio", "nested.a.b", "scale.audio", "scale.visual"]
    );
    assert_eq!(plots::key_group("scale.audio"), "scale");
    assert_eq!(plots::key_group("gamma"), "gamma");
}

#[test]
fn repeated_seeds_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    three_seeds(&tmp.path().join("a"));
    three_seeds(&tmp.path().join("b"));
    let runs = load_runs(&[tmp.path().join("a"), tmp.path().join("b")], &[]).unwrap();
    assert_eq!(runs.len(), 6);
    // Same names in two folders: named by their paths below the common folder.
    assert!(runs
        .iter()
        .any(|r| r.name == format!("a{}synth-vec-concat-s0", std::path::MAIN_SEPARATOR)));
    let w = duplicate_seeds(&runs);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].starts_with("synth-vec concat (no variant): seed 0 appears 2 times"),
        "{w:?}"
    );
    assert!(duplicate_seeds(&runs[..3]).is_empty());
}
