//! `modbal report` in a real browser: a 3-method × 2-seed sweep of synth-vec (3 epochs, 2
//! parallel jobs, `modbal sweep`), reported by `modbal report`, and loaded by headless Chromium (`/usr/bin/chromium`, or
//! `$MODBAL_CHROMIUM`):
//!
//! 1. `--dump-dom`: the page's script ran (`<body data-status="ok">`) and `window.onerror`
//!    recorded nothing (no `data-errors`);
//! 2. `--enable-logging=stderr --v=0`: no console message (the page logs none; an uncaught
//!    error would show as a `CONSOLE` line);
//! 3. `--screenshot`: the run colours of the plots cover many pixels, and the colours of the
//!    layers that start hidden (the report's default for a section with more runs than
//!    `max_default_layers`) are absent.
//!
//! Without Chromium the training and report part runs, then the test prints `skipped: chromium
//! not found …` and passes, unless `MODBAL_REQUIRE_TOOLS=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn chromium() -> Option<PathBuf> {
    let p = std::env::var_os("MODBAL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    p.is_file().then_some(p)
}

const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// Run Chromium on `page` with `extra` flags and a fresh profile; returns (stdout, stderr).
fn browse(chrome: &Path, page: &Path, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chrome)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({}): {stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Pixels of `png` within a max-channel distance of 12 of `c`.
fn count(img: &image::RgbImage, c: (u8, u8, u8)) -> usize {
    img.pixels()
        .filter(|p| {
            let d = |a: u8, b: u8| (a as i32 - b as i32).abs();
            d(p[0], c.0).max(d(p[1], c.1)).max(d(p[2], c.2)) <= 12
        })
        .count()
}

#[test]
fn report_page_runs_its_script_and_shows_the_runs_in_chromium() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // The acceptance grid: a 3-method × 2-seed sweep on synth-vec with 2 parallel jobs,
    // through the real binary.
    let bin = env!("CARGO_BIN_EXE_modbal");
    let sweep = Command::new(bin)
        .args([
            "sweep",
            "--datasets",
            "synth-vec",
            "--methods",
            "concat,ogm-ge,cal",
            "--seeds",
            "0,1",
            "--epochs",
            "3",
            "--jobs",
            "2",
            "--threads",
            "2",
            "--no-progress",
            "--set",
            "dataset.train=480",
            "--set",
            "dataset.val=160",
            "--set",
            "dataset.test=160",
            "--out",
        ])
        .arg(&runs)
        .output()
        .unwrap();
    assert!(
        sweep.status.success(),
        "{}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    let trained = t0.elapsed();
    // The CLI's report (default --out: <path>/report).
    let report = Command::new(bin).arg("report").arg(&runs).output().unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let page = runs.join("report/report.html");
    assert!(page.is_file());
    for f in ["runs.csv", "summary.csv", "report.md"] {
        assert!(runs.join("report").join(f).is_file(), "{f}");
    }
    // The same runs through the library, with the seed-1 layers hidden at the start.
    let loaded =
        modbal_report::load_runs(std::slice::from_ref(&runs), &[runs.join("report")]).unwrap();
    assert_eq!(loaded.len(), 6);
    let opts = modbal_report::ReportOptions {
        max_default_layers: 3,
        ..Default::default()
    };
    let out2 = tmp.path().join("report2");
    modbal_report::write_report(&loaded, &out2, &opts).unwrap();
    let page2 = out2.join("report.html");

    // Without a browser, the CLI and library part above is all that runs.
    let Some(chrome) = chromium() else {
        if std::env::var("MODBAL_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!(
                "chromium not found (/usr/bin/chromium or $MODBAL_CHROMIUM; install: apt-get install chromium)"
            );
        }
        eprintln!("skipped: chromium not found (install: apt-get install chromium)");
        return;
    };
    // (1) The DOM after the scripts ran.
    for p in [&page, &page2] {
        let (dom, _) = browse(&chrome, p, &["--dump-dom".into()]);
        assert!(
            dom.contains("data-status=\"ok\""),
            "script did not finish: {}",
            &dom[..dom.len().min(600)]
        );
        assert!(!dom.contains("data-errors"), "page errors: {dom}");
    }
    // (2) Console messages.
    let (_, log) = browse(
        &chrome,
        &page,
        &[
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            "--dump-dom".into(),
        ],
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    // (3) Screenshots: every run shown (page), seed 0 only (page2). Runs are sorted by method,
    // then seed: colour 0 cal-s0, 1 cal-s1, 2 concat-s0, 3 concat-s1, 4 ogm-ge-s0, 5 ogm-ge-s1.
    let shot = |p: &Path, name: &str| -> image::RgbImage {
        let png = tmp.path().join(name);
        browse(
            &chrome,
            p,
            &[
                format!("--screenshot={}", png.display()),
                "--window-size=1280,1800".into(),
            ],
        );
        image::open(&png)
            .expect("decoding the screenshot")
            .to_rgb8()
    };
    let colours: Vec<(u8, u8, u8)> = (0..6).map(modbal_report::run_colour).collect();
    let all = shot(&page, "all.png");
    let n_all: Vec<usize> = colours.iter().map(|&c| count(&all, c)).collect();
    eprintln!("pixels per run colour, all shown: {n_all:?}");
    for (i, n) in n_all.iter().enumerate() {
        assert!(
            *n >= 400,
            "run {i}: only {n} pixels of its colour {:?}",
            colours[i]
        );
    }
    let some = shot(&page2, "seed0.png");
    let n_some: Vec<usize> = colours.iter().map(|&c| count(&some, c)).collect();
    eprintln!("pixels per run colour, seed 1 hidden: {n_some:?}");
    for i in [0, 2, 4] {
        assert!(n_some[i] >= 400, "shown run {i}: {n_some:?}");
    }
    for i in [1, 3, 5] {
        assert!(n_some[i] < 40, "hidden run {i} still drawn: {n_some:?}");
    }
    eprintln!(
        "report_browser: training {:.1}s, total {:.1}s",
        trained.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
