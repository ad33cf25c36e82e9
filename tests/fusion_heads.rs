//! The fusion heads through the run: `model.fusion` selection (accepted and refused
//! combinations, with the message), the method × head support table of `docs/fusion.md`, the
//! per-modality logits of the FiLM / gated / BLOCK nets against `model.head` on masked
//! features, and the plain fusion baselines `block`, `film`, `gated`, `mmtm` trained end to end
//! on synth-av (finite, falling loss; same seed ⇒ same metrics).
//!
//! The heads' equations against naive loops, BLOCK's signed square root at 0 and every head
//! parameter's gradient are in `crates/modbal-encoders/tests/fusion_heads.rs`.

mod common;

use modbal::core::MultimodalModel;
use modbal::encoders::{FusionConfig, UnimodalLogits};
use modbal::tensors::SeededRng;
use modbal::{Registry, RunConfig};
use std::collections::BTreeMap;

/// The support table of `docs/fusion.md` (heads each method accepts as `model.fusion`).
fn support_table() -> BTreeMap<&'static str, &'static [&'static str]> {
    const ALL: &[&str] = &["concat", "sum", "mmtm", "film", "gated", "block"];
    const LATE: &[&str] = &["concat", "sum", "film", "gated", "block"];
    const ADD: &[&str] = &["concat", "sum", "mmtm"];
    const ADDL: &[&str] = &["concat", "sum"];
    BTreeMap::from([
        ("concat", &["concat"][..]),
        ("sum", &["sum"][..]),
        ("unimodal", &["concat"][..]),
        ("block", &["block"][..]),
        ("film", &["film"][..]),
        ("gated", &["gated"][..]),
        ("mmtm", &["mmtm"][..]),
        ("greedy", &["mmtm"][..]),
        ("mla", &["sum"][..]),
        ("lfm", &["sum"][..]),
        ("udi", &["sum"][..]),
        ("dgl", &["concat"][..]),
        ("mmcosine", &["concat"][..]),
        ("reconboost", &["sum"][..]),
        ("tmc", &["sum"][..]),
        ("qmf", &["sum"][..]),
        ("eau", LATE),
        ("ogm-ge", ADD),
        ("inforeg", ADD),
        ("ibml", ADD),
        ("g-blending", ADD),
        ("opm", ADDL),
        ("opm-ge", ADDL),
        ("arl", ADDL),
        ("arm", ADDL),
        ("cal", LATE),
        ("cml", LATE),
        ("agm", LATE),
        ("sample-valuation", LATE),
        ("modality-valuation", LATE),
        ("pmr", ALL),
        ("mmpareto", ALL),
        ("dnr", ALL),
    ])
}

fn fusion(kind: &str) -> FusionConfig {
    match kind {
        "concat" => FusionConfig::Concat,
        "sum" => FusionConfig::Sum,
        "mmtm" => FusionConfig::mmtm(),
        "film" => FusionConfig::film(),
        "gated" => FusionConfig::gated(),
        "block" => FusionConfig::block(),
        k => panic!("{k}"),
    }
}

/// Every built-in method's check agrees with the documented table (methods added later
/// without a row default to their own head only), and a refusal names the method, the head
/// and the supported heads.
#[test]
fn method_head_support_matches_the_docs_table() {
    let table = support_table();
    let reg = Registry::builtin();
    for m in common::method_names() {
        let plan = reg.method(&m, &toml::Table::new()).unwrap();
        let own = plan.fusion_head().kind();
        let want: Vec<&str> = match table.get(m.as_str()) {
            Some(w) => w.to_vec(),
            None => vec![own],
        };
        assert!(want.contains(&own), "{m}: its own head {own} is refused");
        for kind in modbal::encoders::FUSION_KINDS {
            let r = plan.check_fusion(&fusion(kind));
            assert_eq!(r.is_ok(), want.contains(&kind), "{m} × {kind}: {r:?}");
            if let Err(e) = r {
                let e = e.to_string();
                assert!(
                    e.contains(&format!("method {m}:"))
                        && e.contains(&format!("{kind:?}"))
                        && e.contains(&format!("supported heads: {}", want.join(", "))),
                    "{e}"
                );
            }
        }
    }
}

fn vec_cfg(out: &std::path::Path, sets: &[&str]) -> Result<RunConfig, String> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    common::small_vec(out, 3, 1)
        .with_overrides(&sets)
        .map_err(|e| e.to_string())
}

#[test]
fn model_fusion_is_checked_against_the_method() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Refused, with the method, the head and the supported heads.
    let e = vec_cfg(d, &["method.name=ogm-ge", "model.fusion.kind=film"]).unwrap_err();
    assert!(
        e.contains("method ogm-ge")
            && e.contains("\"film\"")
            && e.contains("supported heads: concat, sum, mmtm")
            && e.contains("additive"),
        "{e}"
    );
    let e = vec_cfg(d, &["method.name=opm", "model.fusion.kind=mmtm"]).unwrap_err();
    assert!(
        e.contains("method opm") && e.contains("model.encode"),
        "{e}"
    );
    // The default: the method's own kind only.
    let e = vec_cfg(d, &["method.name=concat", "model.fusion.kind=sum"]).unwrap_err();
    assert!(
        e.contains("method concat") && e.contains("supported heads: concat"),
        "{e}"
    );
    // Accepted: the method's own kind with other options, and a supported head.
    let c = vec_cfg(
        d,
        &[
            "method.name=film",
            "model.fusion.kind=film",
            "model.fusion.condition=1",
        ],
    )
    .unwrap();
    assert_eq!(c.model.fusion, Some(FusionConfig::Film { condition: 1 }));
    let c = vec_cfg(d, &["method.name=cal", "model.fusion.kind=block"]).unwrap();
    assert_eq!(c.model.fusion, Some(FusionConfig::block()));
    let text = c.to_toml_string().unwrap();
    assert!(
        text.contains("[model.fusion]") && text.contains("kind = \"block\""),
        "{text}"
    );
    // A reloaded config keeps it; a dataset switch keeps it too (only the encoders go).
    let again = RunConfig::from_toml_value(toml::from_str(&text).unwrap()).unwrap();
    assert_eq!(again.model.fusion, c.model.fusion);
    let c2 = c.with_overrides(&["dataset.name=synth-av".into()]).unwrap();
    assert_eq!(c2.model.fusion, Some(FusionConfig::block()));
    // Absent: nothing recorded (configs as before).
    let plain = vec_cfg(d, &["method.name=cal"]).unwrap();
    assert!(plain.model.fusion.is_none());
    assert!(!plain.to_toml_string().unwrap().contains("fusion"));
    // Bad options of the head.
    let e = vec_cfg(
        d,
        &[
            "method.name=cal",
            "model.fusion.kind=film",
            "model.fusion.rank=2",
        ],
    )
    .unwrap_err();
    assert!(
        e.contains("`rank` is not an option of kind \"film\""),
        "{e}"
    );
    let e = vec_cfg(
        d,
        &[
            "method.name=cal",
            "model.fusion.kind=gated",
            "model.fusion.gate=2",
        ],
    )
    .unwrap_err();
    assert!(e.contains("gate = 2"), "{e}");
}

/// The head `model.fusion` names is the one the run builds (parameter names), and the run
/// trains.
#[test]
fn model_fusion_builds_that_head_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "cal",
            &[
                "model.fusion.kind=block",
                "model.fusion.mm_dim=16",
                "model.fusion.chunks=4",
                "model.fusion.rank=2",
            ],
            "head.merge_linears1.3.weight",
        ),
        ("agm", &["model.fusion.kind=film"], "head.fc_out.weight"),
        ("pmr", &["model.fusion.kind=gated"], "head.fc_y.weight"),
        ("ogm-ge", &["model.fusion.kind=sum"], "head.visual.weight"),
        (
            "mmpareto",
            &["model.fusion.kind=mmtm"],
            "fusion.mmtm.0.squeeze.weight",
        ),
    ];
    for (method, sets, param) in cases {
        let mut all = vec![format!("method.name={method}")];
        all.extend(sets.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let cfg = vec_cfg(dir.path(), &all).unwrap();
        let (_, learner) = Registry::builtin().learner(&cfg).unwrap();
        let names: Vec<String> = learner
            .model()
            .params()
            .trainable()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().any(|n| n == param), "{method}: {names:?}");
        let out = common::train(&cfg);
        let last = out.history.last().unwrap();
        assert!(last.loss.is_finite(), "{method} {sets:?}");
    }
}

/// FiLM, gated and BLOCK nets: `per_modality_logits[m]` is `model.head` on the features with
/// every other modality zeroed (computed here independently of the head's own code path), and
/// the fused logits are `model.head` on all of them.
#[test]
fn zero_others_logits_equal_the_head_on_masked_features() {
    let small_block = FusionConfig::Block {
        mm_dim: 12,
        chunks: 3,
        rank: 4,
    };
    for f in [
        FusionConfig::film(),
        FusionConfig::Film { condition: 1 },
        FusionConfig::gated(),
        FusionConfig::Gated {
            gate: 1,
            dim: Some(5),
        },
        small_block,
    ] {
        let mut rng = SeededRng::new(2);
        let net = common::tiny_mlp_net(2, &f, &mut rng);
        assert_eq!(f.unimodal_logits(), UnimodalLogits::ZeroOthers);
        let batch = common::audio_label_batch(2, 6, &mut rng);
        let out = net.forward_t(&batch.inputs, false).unwrap();
        for m in 0..2 {
            let keep: Vec<bool> = (0..2).map(|k| k == m).collect();
            let masked = common::mask_features(&out.features, &keep);
            let (z, _) = net.head(&masked).unwrap();
            assert_eq!(
                common::v64(&out.per_modality_logits[m]),
                common::v64(&z),
                "{f:?} modality {m}"
            );
        }
        let (z, _) = net.head(&out.features).unwrap();
        assert_eq!(common::v64(&out.fused_logits), common::v64(&z), "{f:?}");
    }
}

fn av_cfg(out: &std::path::Path, method: &str, seed: u64, name: &str) -> RunConfig {
    let mut sets = vec![
        "dataset.name=synth-av".to_string(),
        "dataset.train=128".into(),
        "dataset.val=64".into(),
        "dataset.test=64".into(),
        "train.epochs=2".into(),
        format!("seed={seed}"),
        format!("method.name={method}"),
        format!("name={name:?}"),
        format!("out_dir={:?}", out.display().to_string()),
    ];
    if method == "block" {
        // Smaller than the official 1600/20/15 to keep the test short.
        sets.extend(["method.mm_dim=160".into(), "method.chunks=8".into()]);
    }
    RunConfig::default().with_overrides(&sets).unwrap()
}

#[test]
fn plain_fusion_baselines_train_on_synth_av() {
    let dir = tempfile::tempdir().unwrap();
    for m in ["block", "film", "gated", "mmtm"] {
        let out = common::train(&av_cfg(dir.path(), m, 4, m));
        let train: Vec<f64> = out
            .history
            .iter()
            .filter(|r| r.split == "train")
            .map(|r| r.loss)
            .collect();
        assert_eq!(train.len(), 2, "{m}");
        assert!(train.iter().all(|l| l.is_finite()), "{m}: {train:?}");
        assert!(
            train[1] < train[0],
            "{m}: training loss did not fall {train:?}"
        );
        let s = out.summary.as_ref().unwrap();
        assert!(s.test.fusion_acc.is_finite(), "{m}");
        assert_eq!(s.test.modality_acc.len(), 2, "{m}");
        let cfg_text = std::fs::read_to_string(out.run_dir.join("config.toml")).unwrap();
        assert!(cfg_text.contains(&format!("name = \"{m}\"")), "{cfg_text}");
    }
    // Same seed ⇒ the same metrics, byte for byte.
    let read =
        |name: &str| std::fs::read_to_string(dir.path().join(name).join("metrics.jsonl")).unwrap();
    common::train(&av_cfg(dir.path(), "block", 4, "block-again"));
    assert_eq!(read("block"), read("block-again"));
}

#[test]
fn plain_fusion_methods_options_and_errors() {
    let reg = Registry::builtin();
    let opts = |m: &str| {
        reg.method(m, &toml::Table::new())
            .unwrap()
            .options()
            .unwrap()
    };
    assert_eq!(opts("film")["condition"].as_integer(), Some(0));
    assert_eq!(opts("gated")["gate"].as_integer(), Some(0));
    assert!(!opts("gated").contains_key("dim"));
    let b = opts("block");
    assert_eq!(
        (
            b["mm_dim"].as_integer(),
            b["chunks"].as_integer(),
            b["rank"].as_integer()
        ),
        (Some(1600), Some(20), Some(15))
    );
    assert_eq!(opts("mmtm")["ratio"].as_integer(), Some(4));
    assert_eq!(
        reg.method("block", &toml::Table::new())
            .unwrap()
            .fusion_head(),
        FusionConfig::block()
    );
    let e = common::option_error("block", "chunks", toml::Value::Integer(0));
    assert!(e.contains("method block") && e.contains("chunks"), "{e}");
    let e = common::option_error("film", "condition", toml::Value::Integer(5));
    assert!(e.contains("condition = 5"), "{e}");
    // Three modalities: a clear error when the model is built.
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 1, 1)
        .with_overrides(&[
            "method.name=film".into(),
            "dataset.third_modality=true".into(),
        ])
        .unwrap();
    let e = modbal::train(&cfg, &common::quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("film fusion fuses exactly 2 modalities"), "{e}");
}
