//! GloVe + bidirectional GRU (IBML's text encoder): GloVe parsing and OOV handling, forward
//! against `torch.nn.GRU(bidirectional=True)` with the same weights on variable-length
//! (packed) sequences, gradients of every parameter, and errors naming the file.
//!
//! Reference (`tests/fixtures/make_fixtures.py`, PyTorch 2.15 CPU):
//! ```python
//! gru = torch.nn.GRU(6, 5, 1, batch_first=True, bidirectional=True)   # torch.manual_seed(1)
//! packed = pack_padded_sequence(emb[ids], lens, batch_first=True, enforce_sorted=False)
//! out, h_n = gru(packed); out, _ = pad_packed_sequence(out, batch_first=True, total_length=8)
//! avg = (out[:, :, :5] + out[:, :, 5:]) / 2                            # IBML TextEncoder
//! mean = stack([avg[i, :n].mean(0) for i, n in enumerate(lens)]); last = cat([h_n[0], h_n[1]], 1)
//! ```

use candle_core::{DType, Device, Tensor};
use modbal_encoders::glove::{word_tokenize, GloveTable, PAD_ID, UNK_ID};
use modbal_encoders::{BiGruEncoder, Encoder, EncoderConfig, GruPooling};
use modbal_tensors::{ParamStore, SeededRng};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn glove_reading_ids_and_oov() {
    let g = GloveTable::from_file(&fixture("glove_tiny.txt"), 0).unwrap();
    assert_eq!((g.dim(), g.vocab_size()), (6, 12));
    assert_eq!(g.id("the"), 2);
    assert_eq!(g.id("zebra"), UNK_ID);
    assert_eq!(g.word(PAD_ID), Some("[PAD]"));
    assert_eq!(&g.vectors()[..12], &[0.0; 12], "[PAD] and [UNK] are zero");
    assert_eq!(g.encode("The zebra sat.", 6), vec![2, UNK_ID, 4, 11, 0, 0]);
    let e = g.embed_text("the", 2).unwrap();
    assert_eq!(&e[..6], &g.vectors()[12..18]);
    assert_eq!(&e[6..], &[0.0; 6]);
    let top = GloveTable::vocab_only(&fixture("glove_tiny.txt"), 3).unwrap();
    assert_eq!((top.vocab_size(), top.id("on")), (5, UNK_ID));
    assert_eq!(
        word_tokenize("Don't stop, it's GOOD!"),
        ["do", "n't", "stop", ",", "it", "'s", "good", "!"]
    );
    assert_eq!(word_tokenize("   "), ["[UNK]"]);

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("glove.bad.txt");
    std::fs::write(&bad, "the 0.1 0.2 0.3\ncat 0.1 x 0.3\n").unwrap();
    let e = GloveTable::from_file(&bad, 0).unwrap_err().to_string();
    assert!(e.contains("glove.bad.txt") && e.contains("line 2"), "{e}");
    std::fs::write(&bad, "the 0.1 0.2 0.3\ncat 0.1\n").unwrap();
    let e = GloveTable::from_file(&bad, 0).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    let e = GloveTable::from_file(&tmp.path().join("absent.txt"), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.txt"), "{e}");
}

fn load_reference(store: &ParamStore, r: &serde_json::Value, hidden: usize) {
    for (name, var) in store.trainable() {
        let key = name.rsplit('.').next().unwrap();
        let v = floats(&r["params"][key]);
        var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    assert_eq!(store.trainable().len(), 8, "{hidden}");
}

#[test]
fn forward_matches_torch_gru_and_gradients_flow() {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("bigru_reference.json")).unwrap())
            .unwrap();
    let g = GloveTable::from_file(&fixture("glove_tiny.txt"), 0).unwrap();
    let texts: Vec<&str> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let l = r["max_len"].as_u64().unwrap() as usize;
    let ids: Vec<f32> = texts
        .iter()
        .flat_map(|t| g.encode(t, l))
        .map(|i| i as f32)
        .collect();
    let want_ids: Vec<f32> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(ids, want_ids, "GloVe ids");
    let x = Tensor::from_vec(ids, (texts.len(), l), &Device::Cpu).unwrap();
    let h = r["hidden"].as_u64().unwrap() as usize;
    let mut worst = 0f32;
    for (pooling, key) in [(GruPooling::Mean, "mean"), (GruPooling::Last, "last")] {
        let store = ParamStore::new();
        let pb = store.root(DType::F32, &Device::Cpu).pp("text");
        let enc = BiGruEncoder::new(
            &pb,
            &[l],
            Some(&g),
            false,
            h,
            pooling,
            &mut SeededRng::new(0),
        )
        .unwrap();
        load_reference(&store, &r, h);
        let y = enc.forward_t(&x, false).unwrap();
        let err = max_abs_diff(
            &y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &floats(&r[key]),
        );
        worst = worst.max(err);
        assert!(err < 1e-5, "{key}: max |Δ| {err}");
        let (outs, _, _) = enc.run(&x).unwrap();
        let err = max_abs_diff(
            &outs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &floats(&r["outputs"]),
        );
        worst = worst.max(err);
        assert!(err < 1e-5, "per-step outputs: max |Δ| {err}");
    }
    eprintln!("bigru vs torch.nn.GRU (packed): max |Δ| {worst:.2e}");

    // The same numbers from embedded input [B, L, D] (IBML looks GloVe up in the dataset).
    let emb: Vec<f32> = texts
        .iter()
        .flat_map(|t| g.embed_text(t, l).unwrap())
        .collect();
    let xe = Tensor::from_vec(emb, (texts.len(), l, 6), &Device::Cpu).unwrap();
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu).pp("text");
    let enc = BiGruEncoder::new(
        &pb,
        &[l, 6],
        None,
        false,
        h,
        GruPooling::Mean,
        &mut SeededRng::new(0),
    )
    .unwrap();
    load_reference(&store, &r, h);
    // "the zebra ate pizza": [UNK] vectors are zero but inside the sequence: still counted.
    let y = enc.forward_t(&xe, false).unwrap();
    let err = max_abs_diff(
        &y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&r["mean"]),
    );
    assert!(err < 1e-5, "embedded input: max |Δ| {err}");

    // Gradients: every GRU tensor and the trainable embedding table.
    let store = ParamStore::new();
    let cfg = EncoderConfig::BiGru {
        glove: Some(fixture("glove_tiny.txt")),
        max_words: 0,
        trainable_embeddings: true,
        hidden: 7,
        pooling: GruPooling::Last,
    };
    assert_eq!(cfg.out_dim(&[l]).unwrap(), 14);
    let enc = cfg
        .build(
            &store.root(DType::F32, &Device::Cpu).pp("text"),
            &[l],
            &mut SeededRng::new(2),
        )
        .unwrap();
    let y = enc.forward_t(&x, true).unwrap();
    let w = Tensor::from_vec(
        (0..y.elem_count())
            .map(|i| ((i as f32) * 0.61).cos())
            .collect::<Vec<_>>(),
        y.dims(),
        &Device::Cpu,
    )
    .unwrap();
    let grads = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
    let trainable = store.trainable();
    assert_eq!(trainable.len(), 9, "8 GRU tensors + embed.weight");
    for (name, var) in trainable {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let a: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(a.is_finite() && a > 0.0, "gradient of {name} is {a}");
    }
    // Bad inputs.
    assert!(cfg.out_dim(&[l, 6]).is_err());
    let e = enc
        .forward_t(
            &Tensor::from_vec(vec![2f32, 40.0], (1, 2), &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("40"), "{e}");
}
