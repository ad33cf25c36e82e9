//! BERT: forward against PyTorch/transformers, gradients of every parameter, seeded dropout,
//! WordPiece ids against `transformers.BertTokenizer`, weight resolution (explicit directory,
//! a Hugging Face cache laid out by the test, env variables) and clear errors.
//!
//! References: `tests/fixtures/make_fixtures.py` (transformers 5.23, PyTorch 2.15 CPU):
//! ```python
//! cfg = BertConfig(vocab_size=43, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
//!                  intermediate_size=32, max_position_embeddings=32, hidden_act="gelu")
//! model = BertModel(cfg).eval()            # LayerNorm weights perturbed by 0.1·randn
//! enc = BertTokenizer("vocab.txt", do_lower_case=True)(SENTS, max_length=12,
//!                                                      padding="max_length", truncation=True)
//! out = model(input_ids=ids[:3], attention_mask=mask[:3])   # last_hidden_state, pooler_output
//! ```

use candle_core::{DType, Device, Tensor};
use modbal_encoders::bert::{BertConfig, BertEncoder, BertModel, BertPooling};
use modbal_encoders::{Encoder, EncoderConfig, WeightsSource, WordPieceTokenizer};
use modbal_tensors::{ParamStore, SeededRng};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_tiny")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
        .unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn build(store: &ParamStore, pooling: BertPooling, seed: u64) -> BertEncoder {
    let cfg = BertConfig::from_file(&fixtures().join("config.json")).unwrap();
    let pb = store
        .root(DType::F32, &Device::Cpu)
        .pp("encoder")
        .pp("text");
    let mut rng = SeededRng::new(seed);
    BertEncoder::new(&pb, &cfg, pooling, &[12], &mut rng).unwrap()
}

#[test]
fn forward_matches_transformers() {
    let r = reference();
    let store = ParamStore::new();
    let enc = build(&store, BertPooling::Pooler, 0);
    let report = enc
        .model()
        .load_safetensors(&fixtures().join("model.safetensors"))
        .unwrap();
    assert_eq!(report.ignored, vec!["cls.predictions.bias".to_string()]);
    assert_eq!(report.loaded.len(), store.all().len());

    let n = r["forward_rows"].as_u64().unwrap() as usize;
    let ids: Vec<u32> = rows(&r["input_ids"])[..n].concat();
    let mask: Vec<u32> = rows(&r["attention_mask"])[..n].concat();
    let dev = Device::Cpu;
    let ids_t = Tensor::from_vec(ids.clone(), (n, 12), &dev).unwrap();
    let mask_t = Tensor::from_vec(mask, (n, 12), &dev).unwrap();
    let hidden = enc.model().forward(&ids_t, &mask_t, false).unwrap();
    let got: Vec<f32> = hidden.flatten_all().unwrap().to_vec1().unwrap();
    let err_h = max_abs_diff(&got, &floats(&r["last_hidden_state"]));
    let pooled = enc.model().pool(&hidden).unwrap();
    let err_p = max_abs_diff(
        &pooled.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&r["pooler_output"]),
    );
    eprintln!("bert vs transformers: max |Δ| last_hidden_state {err_h:.2e}, pooler {err_p:.2e}");
    assert!(err_h < 1e-4, "last hidden state differs by {err_h}");
    assert!(err_p < 1e-4, "pooler output differs by {err_p}");

    // The Encoder path: float ids, mask derived from the padding id.
    let x = ids_t.to_dtype(DType::F32).unwrap();
    let feats = enc.forward_t(&x, false).unwrap();
    assert_eq!(feats.dims(), &[n, 16]);
    let err_e = max_abs_diff(
        &feats.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&r["pooler_output"]),
    );
    assert!(err_e < 1e-4, "encoder pooler output differs by {err_e}");
}

#[test]
fn every_parameter_gets_a_gradient_and_dropout_is_seeded() {
    for pooling in [BertPooling::Pooler, BertPooling::Cls, BertPooling::Mean] {
        let store = ParamStore::new();
        let enc = build(&store, pooling, 3);
        let ids: Vec<f32> = vec![2., 5., 7., 9., 3., 0., 2., 31., 26., 3., 0., 0.];
        let x = Tensor::from_vec(ids, (2, 6), &Device::Cpu).unwrap();
        let y = enc.forward_t(&x, true).unwrap();
        let w = Tensor::from_vec(
            (0..y.elem_count())
                .map(|i| ((i as f32) * 0.37).sin())
                .collect::<Vec<_>>(),
            y.dims(),
            &Device::Cpu,
        )
        .unwrap();
        let loss = (y * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let trainable = store.trainable();
        for (name, var) in &trainable {
            if pooling != BertPooling::Pooler && name.contains("pooler") {
                continue; // unused by this pooling
            }
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{pooling:?}: no gradient for {name}"));
            let a: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(
                a.is_finite() && a > 0.0,
                "{pooling:?}: gradient of {name} is {a}"
            );
        }
        if pooling == BertPooling::Pooler {
            assert_eq!(trainable.len(), 5 + 2 * 16 + 2);
        }
    }
    // Dropout: active in training mode only, reproducible from the build seed.
    let x = Tensor::from_vec(vec![2f32, 5., 7., 9., 3., 0.], (1, 6), &Device::Cpu).unwrap();
    let out = |seed: u64, train: bool, twice: bool| -> Vec<f32> {
        let store = ParamStore::new();
        let enc = build(&store, BertPooling::Cls, seed);
        if twice {
            enc.forward_t(&x, train).unwrap();
        }
        enc.forward_t(&x, train)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(
        out(1, true, false),
        out(1, true, false),
        "same seed, same masks"
    );
    assert_ne!(
        out(1, true, false),
        out(1, true, true),
        "masks change between passes"
    );
    assert_ne!(
        out(1, true, false),
        out(1, false, false),
        "dropout active in training"
    );
    assert_eq!(
        out(1, false, false),
        out(1, false, true),
        "evaluation is deterministic"
    );
}

#[test]
fn tokeniser_ids_match_transformers() {
    let r = reference();
    let sents: Vec<String> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let want_ids = rows(&r["input_ids"]);
    let want_mask = rows(&r["attention_mask"]);
    for file in ["vocab.txt", "tokenizer.json"] {
        let tok = WordPieceTokenizer::from_file(&fixtures().join(file), true, 12).unwrap();
        assert_eq!(tok.pad_id(), 0);
        assert_eq!(tok.vocab_size(), 43);
        for (i, s) in sents.iter().enumerate() {
            let e = tok.encode(s).unwrap();
            assert_eq!(e.ids, want_ids[i], "{file}: ids of {s:?}");
            assert_eq!(e.mask, want_mask[i], "{file}: mask of {s:?}");
        }
    }
    let tok = WordPieceTokenizer::from_file(&fixtures().join("vocab.txt"), true, 32).unwrap();
    assert_eq!(
        tok.tokens("The dogs played").unwrap(),
        ["the", "dog", "##s", "play", "##ed"]
    );
}

fn lay_out_cache(root: &Path, repo_dir: &str, commit: &str) {
    let snap = root.join(repo_dir).join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join(repo_dir).join("refs")).unwrap();
    std::fs::write(root.join(repo_dir).join("refs/main"), commit).unwrap();
    for f in ["config.json", "model.safetensors", "vocab.txt"] {
        std::fs::copy(fixtures().join(f), snap.join(f)).unwrap();
    }
}

#[test]
fn weights_resolution_from_cache_dir_env_and_explicit_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("home/hub");
    lay_out_cache(&cache, "models--tiny-org--tiny-bert", "0123abcd");
    let src = WeightsSource::new("tiny-org/tiny-bert", None);
    let p = src.resolve_in("model.safetensors", &cache).unwrap();
    assert!(p.ends_with("models--tiny-org--tiny-bert/snapshots/0123abcd/model.safetensors"));
    // A commit hash as revision (no ref file needed).
    let mut pinned = src.clone();
    pinned.revision = "0123abcd".into();
    assert!(pinned.resolve_in("config.json", &cache).is_ok());

    // Environment: HF_HUB_CACHE, then HF_HOME/hub; HF_HUB_OFFLINE=1 changes nothing (no network).
    // (The only test of this binary that touches these variables.)
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_HUB_CACHE", &cache);
    assert_eq!(modbal_encoders::hf_cache_dir(), cache);
    assert!(src.resolve("vocab.txt").is_ok());
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", tmp.path().join("home"));
    assert_eq!(modbal_encoders::hf_cache_dir(), cache);
    let cfg = EncoderConfig::Bert {
        repo: "tiny-org/tiny-bert".into(),
        revision: "main".into(),
        weights: None,
        pretrained: true,
        pooling: BertPooling::Pooler,
    };
    assert_eq!(cfg.out_dim(&[12]).unwrap(), 16);
    let store = ParamStore::new();
    let enc = cfg
        .build(
            &store.root(DType::F32, &Device::Cpu),
            &[12],
            &mut SeededRng::new(0),
        )
        .unwrap();
    let r = reference();
    let ids: Vec<f32> = rows(&r["input_ids"])[0].iter().map(|&v| v as f32).collect();
    let y = enc
        .forward_t(
            &Tensor::from_vec(ids, (1, 12), &Device::Cpu).unwrap(),
            false,
        )
        .unwrap();
    let err = max_abs_diff(
        &y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&r["pooler_output"])[..16],
    );
    assert!(
        err < 1e-4,
        "weights from the cache: pooler differs by {err}"
    );

    // Explicit directory first; missing everywhere → an error naming both places.
    let explicit = WeightsSource::new("nobody/absent", Some(fixtures()));
    assert_eq!(
        explicit.resolve("config.json").unwrap(),
        fixtures().join("config.json")
    );
    let err = explicit
        .resolve("pytorch_model.bin")
        .unwrap_err()
        .to_string();
    assert!(err.contains(&fixtures().display().to_string()), "{err}");
    assert!(err.contains(&cache.display().to_string()), "{err}");
    assert!(
        err.contains("nobody/absent") && err.contains("--weights"),
        "{err}"
    );
    std::env::remove_var("HF_HOME");
    std::env::remove_var("HF_HUB_OFFLINE");
}

#[test]
fn malformed_inputs_give_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_cfg = tmp.path().join("config.json");
    std::fs::write(&bad_cfg, "{ \"hidden_size\": 16 ").unwrap();
    let e = BertConfig::from_file(&bad_cfg).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("malformed"), "{e}");
    std::fs::write(
        &bad_cfg,
        r#"{"vocab_size": 10, "hidden_size": 15, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8}"#,
    )
    .unwrap();
    let e = BertConfig::from_file(&bad_cfg).unwrap_err().to_string();
    assert!(e.contains("num_attention_heads"), "{e}");

    let store = ParamStore::new();
    let enc = build(&store, BertPooling::Pooler, 0);
    let garbage = tmp.path().join("model.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let e = enc
        .model()
        .load_safetensors(&garbage)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&garbage.display().to_string()), "{e}");

    // A checkpoint without the pooler: the error names the file and the parameter.
    let full =
        candle_core::safetensors::load(fixtures().join("model.safetensors"), &Device::Cpu).unwrap();
    let partial: std::collections::HashMap<String, Tensor> = full
        .into_iter()
        .filter(|(k, _)| !k.contains("pooler.dense.bias"))
        .collect();
    let p = tmp.path().join("partial.safetensors");
    candle_core::safetensors::save(&partial, &p).unwrap();
    let e = enc.model().load_safetensors(&p).unwrap_err().to_string();
    assert!(
        e.contains("partial.safetensors") && e.contains("pooler.dense.bias"),
        "{e}"
    );
    assert_eq!(
        BertModel::map_hf_name("bert.encoder.layer.0.output.LayerNorm.gamma").as_deref(),
        Some("encoder.layer.0.output.LayerNorm.weight")
    );

    let e = WordPieceTokenizer::from_file(&tmp.path().join("vocab.txt"), true, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vocab.txt"), "{e}");
    // Token ids outside the vocabulary are rejected with the position.
    let x = Tensor::from_vec(vec![2f32, 99., 3.], (1, 3), &Device::Cpu).unwrap();
    let e = enc.forward_t(&x, false).unwrap_err().to_string();
    assert!(e.contains("99"), "{e}");
}
