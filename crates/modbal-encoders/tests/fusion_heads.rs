//! FiLM, gated and BLOCK heads against naive loops written here (f64), their per-modality
//! ("zero the others") logits, BLOCK's chunking and signed square root (finite gradient at 0),
//! gradients of every head parameter, configuration errors, and MMTM on conv4.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{randn, to_vec};
use modbal_core::MultimodalModel;
use modbal_encoders::fusion_heads::{block_chunk_sizes, l2_normalize, signed_sqrt};
use modbal_encoders::{
    EncoderConfig, FusionConfig, FusionHead, ModalitySpec, ModelConfig, MultimodalNet,
    UnimodalLogits,
};
use modbal_tensors::{ParamStore, SeededRng};
use std::collections::BTreeMap;

const B: usize = 3;
const C: usize = 4;

type Params = BTreeMap<String, (Vec<f64>, Vec<usize>)>;

/// Build `cfg` for two modalities of widths `dims`, give every parameter random values (biases
/// start at zero), return the head and its parameters by name.
fn head(
    cfg: &FusionConfig,
    dims: &[usize],
    seed: u64,
) -> (ParamStore, Box<dyn FusionHead>, Params) {
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    let names: Vec<String> = (0..dims.len()).map(|i| format!("m{i}")).collect();
    let mut rng = SeededRng::new(seed);
    let h = cfg.build(&pb, &names, dims, C, &mut rng).unwrap();
    let params = store
        .trainable()
        .into_iter()
        .map(|(n, v)| {
            let t = randn(&mut rng, v.dims());
            v.set(&t).unwrap();
            let vals = to_vec(&t).iter().map(|&x| x as f64).collect();
            (n, (vals, v.dims().to_vec()))
        })
        .collect();
    (store, h, params)
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let d = t.dim(1).unwrap();
    to_vec(t)
        .chunks(d)
        .map(|r| r.iter().map(|&x| x as f64).collect())
        .collect()
}

/// `W x + b` for one sample, `W` row-major `[out, in]`.
fn lin(p: &Params, name: &str, x: &[f64]) -> Vec<f64> {
    let (w, dims) = &p[&format!("{name}.weight")];
    let (b, _) = &p[&format!("{name}.bias")];
    let (o, i) = (dims[0], dims[1]);
    assert_eq!(x.len(), i, "{name}");
    (0..o)
        .map(|r| b[r] + (0..i).map(|j| w[r * i + j] * x[j]).sum::<f64>())
        .collect()
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn assert_rows_close(got: &Tensor, want: &[Vec<f64>], what: &str) {
    let g = rows(got);
    assert_eq!(g.len(), want.len(), "{what}");
    for (gr, wr) in g.iter().zip(want) {
        assert_eq!(gr.len(), wr.len(), "{what}");
        for (a, b) in gr.iter().zip(wr) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}: {a} vs {b}"
            );
        }
    }
}

/// The head's fused logits and per-modality logits against `naive(f0, f1)` per sample, with the
/// per-modality logits computed as `naive` with the other modality's features set to zero.
fn check_head(
    cfg: &FusionConfig,
    dims: [usize; 2],
    naive: impl Fn(&Params, &[f64], &[f64]) -> Vec<f64>,
) {
    let (_s, h, p) = head(cfg, &dims, 11);
    let mut rng = SeededRng::new(5);
    let f = [
        randn(&mut rng, &[B, dims[0]]),
        randn(&mut rng, &[B, dims[1]]),
    ];
    let (fused, per) = h.forward(&f).unwrap();
    let (x0, x1) = (rows(&f[0]), rows(&f[1]));
    let z0 = vec![0.0; dims[0]];
    let z1 = vec![0.0; dims[1]];
    let want: Vec<Vec<f64>> = (0..B).map(|b| naive(&p, &x0[b], &x1[b])).collect();
    let want0: Vec<Vec<f64>> = (0..B).map(|b| naive(&p, &x0[b], &z1)).collect();
    let want1: Vec<Vec<f64>> = (0..B).map(|b| naive(&p, &z0, &x1[b])).collect();
    let what = format!("{cfg:?}");
    assert_rows_close(&fused, &want, &format!("{what} fused"));
    assert_rows_close(&per[0], &want0, &format!("{what} modality 0 alone"));
    assert_rows_close(&per[1], &want1, &format!("{what} modality 1 alone"));
    assert_eq!(h.unimodal_logits(), UnimodalLogits::ZeroOthers);
    assert_eq!(cfg.unimodal_logits(), UnimodalLogits::ZeroOthers);
    // No additive decomposition: the per-modality logits do not sum to the fused ones.
    let sum = (&per[0] + &per[1]).unwrap();
    let diff: f32 = to_vec(&(sum - &fused).unwrap())
        .iter()
        .map(|x| x.abs())
        .sum();
    assert!(diff > 1e-3, "{what}: unexpectedly additive");
}

#[test]
fn film_matches_its_equation_both_directions() {
    for condition in [0usize, 1] {
        // D_x ≠ D_y: γ, β have the conditioned modality's width.
        check_head(&FusionConfig::Film { condition }, [5, 3], |p, a, v| {
            let (x, y) = if condition == 0 { (a, v) } else { (v, a) };
            let gb = lin(p, "fc", x);
            let dy = y.len();
            assert_eq!(gb.len(), 2 * dy);
            let h: Vec<f64> = (0..dy).map(|j| gb[j] * y[j] + gb[dy + j]).collect();
            lin(p, "fc_out", &h)
        });
    }
    // Shapes of the parameters: fc [2·D_y, D_x], fc_out [C, D_y].
    let (_s, _h, p) = head(&FusionConfig::Film { condition: 1 }, &[5, 3], 1);
    assert_eq!(p["fc.weight"].1, vec![10, 3]);
    assert_eq!(p["fc_out.weight"].1, vec![C, 5]);
}

#[test]
fn gated_matches_its_equation_both_directions_and_dim() {
    for (gate, dim) in [(0usize, None), (1, None), (0, Some(6))] {
        check_head(&FusionConfig::Gated { gate, dim }, [5, 3], |p, a, v| {
            let hx = lin(p, "fc_x", a);
            let hy = lin(p, "fc_y", v);
            let (g, o) = if gate == 0 { (hx, hy) } else { (hy, hx) };
            let h: Vec<f64> = g.iter().zip(&o).map(|(g, o)| sig(*g) * o).collect();
            lin(p, "fc_out", &h)
        });
    }
    // Default H: the gated modality's width (gate 0 → D_1 = 3; gate 1 → D_0 = 5).
    let (_s, _h, p) = head(&FusionConfig::gated(), &[5, 3], 1);
    assert_eq!(p["fc_x.weight"].1, vec![3, 5]);
    let (_s, _h, p) = head(&FusionConfig::Gated { gate: 1, dim: None }, &[5, 3], 1);
    assert_eq!(p["fc_out.weight"].1, vec![C, 5]);
}

/// BLOCK written as a naive per-chunk loop (the official `Block.forward`, `before_cat`).
fn block_naive(p: &Params, a: &[f64], v: &[f64], sizes: &[usize], rank: usize) -> Vec<f64> {
    let x0 = lin(p, "linear0", a);
    let x1 = lin(p, "linear1", v);
    let mut z = Vec::new();
    let mut off = 0;
    for (k, &s) in sizes.iter().enumerate() {
        let m0 = lin(p, &format!("merge_linears0.{k}"), &x0[off..off + s]);
        let m1 = lin(p, &format!("merge_linears1.{k}"), &x1[off..off + s]);
        // view(B, rank, s).sum(1): element r·s + j belongs to output j.
        let mut u = vec![0.0; s];
        for r in 0..rank {
            for j in 0..s {
                u[j] += m0[r * s + j] * m1[r * s + j];
            }
        }
        let w: Vec<f64> = u
            .iter()
            .map(|&x| x.max(0.0).sqrt() - (-x).max(0.0).sqrt())
            .collect();
        let n = w.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        z.extend(w.iter().map(|x| x / n));
        off += s;
    }
    lin(p, "linear_out", &z)
}

#[test]
fn block_matches_a_naive_per_chunk_loop() {
    // mm_dim 7 in 3 chunks: sizes [3, 3, 1].
    let cfg = FusionConfig::Block {
        mm_dim: 7,
        chunks: 3,
        rank: 2,
    };
    check_head(&cfg, [5, 4], |p, a, v| block_naive(p, a, v, &[3, 3, 1], 2));
    let (_s, _h, p) = head(&cfg, &[5, 4], 1);
    assert_eq!(p["merge_linears0.0.weight"].1, vec![6, 3]);
    assert_eq!(p["merge_linears1.2.weight"].1, vec![2, 1]);
    assert_eq!(p["linear_out.weight"].1, vec![C, 7]);
    assert_eq!(p.len(), 2 * 2 + 2 * 3 * 2 + 2);
}

#[test]
fn block_chunk_sizes_follow_get_sizes_list() {
    // Values of the official get_sizes_list(dim, chunks), worked out by hand.
    assert_eq!(block_chunk_sizes(1600, 20).unwrap(), vec![80; 20]);
    assert_eq!(block_chunk_sizes(10, 4).unwrap(), vec![3, 3, 3, 1]);
    assert_eq!(block_chunk_sizes(7, 3).unwrap(), vec![3, 3, 1]);
    // ceil(5/4) = 2: [2, 2, 2, −1] → last = 2, n_miss = 3 → [2, 1, 1, 1].
    assert_eq!(block_chunk_sizes(5, 4).unwrap(), vec![2, 1, 1, 1]);
    assert_eq!(block_chunk_sizes(4, 4).unwrap(), vec![1, 1, 1, 1]);
    // More chunks than dimensions: the official assert fails; here an error.
    let e = block_chunk_sizes(3, 5).unwrap_err().to_string();
    assert!(e.contains("chunks"), "{e}");
    assert!(block_chunk_sizes(0, 1).is_err());
}

#[test]
fn signed_sqrt_gradient_is_finite_at_zero_and_the_closed_form_elsewhere() {
    let vals = [0.0f32, 4.0, -9.0, 0.0, 0.25, -0.01];
    let u = Var::from_vec(vals.to_vec(), vals.len(), &Device::Cpu).unwrap();
    let y = signed_sqrt(u.as_tensor()).unwrap();
    let want: Vec<f32> = vals.iter().map(|&x| x.signum() * x.abs().sqrt()).collect();
    let got = to_vec(&y);
    for ((g, w), x) in got.iter().zip(&want).zip(&vals) {
        assert!(
            (g - w).abs() < 1e-6 && (*x != 0.0 || *g == 0.0),
            "{x}: {g} vs {w}"
        );
    }
    let grads = y.sum_all().unwrap().backward().unwrap();
    let g = to_vec(grads.get(u.as_tensor()).unwrap());
    for (gi, &x) in g.iter().zip(&vals) {
        assert!(gi.is_finite(), "gradient at {x}: {gi}");
        let want = if x == 0.0 { 0.0 } else { 0.5 / x.abs().sqrt() };
        assert!(
            (gi - want).abs() <= 1e-5 * (1.0 + want),
            "d/du at {x}: {gi} vs {want}"
        );
    }
    // The naive composition (√relu(u) − √relu(−u)) gives NaN at 0 in candle: the reason for
    // signed_sqrt.
    let naive = (u.as_tensor().relu().unwrap().sqrt().unwrap()
        - u.as_tensor().neg().unwrap().relu().unwrap().sqrt().unwrap())
    .unwrap();
    let g = to_vec(
        naive
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(u.as_tensor())
            .unwrap(),
    );
    assert!(
        !g[0].is_finite(),
        "the naive form became finite at 0: {}",
        g[0]
    );
}

#[test]
fn l2_normalize_is_f_normalize_and_finite_on_zero_rows() {
    let v = Var::from_vec(vec![3.0f32, 4.0, 0.0, 0.0], (2, 2), &Device::Cpu).unwrap();
    let y = l2_normalize(v.as_tensor(), 1e-12).unwrap();
    assert_eq!(to_vec(&y), vec![0.6, 0.8, 0.0, 0.0]);
    // d/dv of Σ_j c_j·v_j/‖v‖ = (c − (c·w)w)/‖v‖, with c = (1, 2), w = (0.6, 0.8).
    let c = Tensor::new(&[[1.0f32, 2.0], [1.0, 2.0]], &Device::Cpu).unwrap();
    let g = (y * c).unwrap().sum_all().unwrap().backward().unwrap();
    let g = to_vec(g.get(v.as_tensor()).unwrap());
    let cw = 0.6 + 1.6;
    let want = [(1.0 - cw * 0.6) / 5.0, (2.0 - cw * 0.8) / 5.0];
    assert!(
        (g[0] - want[0]).abs() < 1e-6 && (g[1] - want[1]).abs() < 1e-6,
        "{g:?}"
    );
    assert!(g[2..].iter().all(|x| x.is_finite()), "{g:?}");
}

#[test]
fn block_gradients_are_finite_with_exact_zeros() {
    // Zero features and zero biases: every u is exactly 0 (and every chunk norm too).
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    let cfg = FusionConfig::Block {
        mm_dim: 6,
        chunks: 2,
        rank: 3,
    };
    let names = vec!["a".to_string(), "v".to_string()];
    let h = cfg
        .build(&pb, &names, &[4, 3], C, &mut SeededRng::new(2))
        .unwrap();
    let f = [
        Tensor::zeros((B, 4), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((B, 3), DType::F32, &Device::Cpu).unwrap(),
    ];
    let (z, per) = h.forward(&f).unwrap();
    let loss = (z.sum_all().unwrap() + per[0].sqr().unwrap().sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in store.trainable() {
        if let Some(g) = grads.get(v.as_tensor()) {
            assert!(to_vec(g).iter().all(|x| x.is_finite()), "{name}");
        }
    }
    // linear_out's bias still learns.
    let (_, b) = store
        .trainable()
        .into_iter()
        .find(|(n, _)| n == "linear_out.bias")
        .unwrap();
    assert!(to_vec(grads.get(b.as_tensor()).unwrap())
        .iter()
        .any(|&x| x != 0.0));
}

fn mlp_net(fusion: &FusionConfig, n: usize) -> MultimodalNet {
    let specs: Vec<ModalitySpec> = (0..n)
        .map(|i| {
            ModalitySpec::new(
                format!("m{i}"),
                EncoderConfig::Mlp { hidden: vec![6] },
                &[4 + i],
            )
        })
        .collect();
    MultimodalNet::new(&specs, fusion, C, &mut SeededRng::new(4), &Device::Cpu).unwrap()
}

#[test]
fn every_head_parameter_gets_a_gradient() {
    let small_block = FusionConfig::Block {
        mm_dim: 8,
        chunks: 2,
        rank: 3,
    };
    for fusion in [
        FusionConfig::film(),
        FusionConfig::Film { condition: 1 },
        FusionConfig::gated(),
        FusionConfig::Gated {
            gate: 1,
            dim: Some(5),
        },
        small_block,
    ] {
        let net = mlp_net(&fusion, 2);
        let mut rng = SeededRng::new(8);
        let x = [randn(&mut rng, &[6, 4]), randn(&mut rng, &[6, 5])];
        common::assert_every_param_gets_gradient(&net, &x, &format!("{fusion:?}"));
        let heads = net
            .params()
            .trainable()
            .iter()
            .filter(|(k, _)| k.starts_with("head."))
            .count();
        assert!(heads >= 4, "{fusion:?}: {heads} head parameters");
    }
}

#[test]
fn config_errors_name_the_problem() {
    let dev = Device::Cpu;
    // Three modalities.
    for fusion in [
        FusionConfig::film(),
        FusionConfig::gated(),
        FusionConfig::block(),
    ] {
        let specs: Vec<ModalitySpec> = (0..3)
            .map(|i| {
                ModalitySpec::new(format!("m{i}"), EncoderConfig::Mlp { hidden: vec![] }, &[2])
            })
            .collect();
        let e = MultimodalNet::new(&specs, &fusion, 2, &mut SeededRng::new(0), &dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(fusion.kind()) && e.contains("exactly 2 modalities") && e.contains("has 3"),
            "{e}"
        );
    }
    // Options out of range, at parse time.
    let parse = |s: &str| -> Result<FusionConfig, String> {
        toml::from_str::<ModelConfig>(&format!("[fusion]\n{s}"))
            .map(|c| c.fusion)
            .map_err(|e| e.to_string())
    };
    for (text, needle) in [
        ("kind = \"film\"\ncondition = 2", "condition = 2"),
        ("kind = \"gated\"\ngate = 3", "gate = 3"),
        ("kind = \"gated\"\ndim = 0", "dim must be >= 1"),
        ("kind = \"block\"\nrank = 0", "rank must be >= 1"),
        ("kind = \"block\"\nmm_dim = 4\nchunks = 9", "chunks"),
        (
            "kind = \"film\"\nrank = 3",
            "`rank` is not an option of kind \"film\"",
        ),
        (
            "kind = \"concat\"\ngate = 1",
            "`gate` is not an option of kind \"concat\"",
        ),
        (
            "kind = \"block\"\nratio = 2",
            "`ratio` is an option of kind \"mmtm\" only",
        ),
        ("kind = \"blok\"", "blok"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
    // Defaults and the serialised form.
    assert_eq!(parse("kind = \"block\"").unwrap(), FusionConfig::block());
    assert_eq!(
        FusionConfig::block(),
        FusionConfig::Block {
            mm_dim: 1600,
            chunks: 20,
            rank: 15
        }
    );
    assert_eq!(parse("kind = \"film\"").unwrap(), FusionConfig::film());
    assert_eq!(
        parse("kind = \"gated\"\ngate = 1\ndim = 7").unwrap(),
        FusionConfig::Gated {
            gate: 1,
            dim: Some(7)
        }
    );
    for f in [
        FusionConfig::Concat,
        FusionConfig::Sum,
        FusionConfig::mmtm(),
        FusionConfig::Film { condition: 1 },
        FusionConfig::gated(),
        FusionConfig::Gated {
            gate: 0,
            dim: Some(3),
        },
        FusionConfig::block(),
    ] {
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            serde_json::from_str::<FusionConfig>(&json).unwrap(),
            f,
            "{json}"
        );
    }
    assert_eq!(
        serde_json::to_string(&FusionConfig::film()).unwrap(),
        r#"{"kind":"film","condition":0}"#
    );
    assert_eq!(
        serde_json::to_string(&FusionConfig::block()).unwrap(),
        r#"{"kind":"block","mm_dim":1600,"chunks":20,"rank":15}"#
    );
    // Unchanged forms of the existing kinds.
    assert_eq!(
        serde_json::to_string(&FusionConfig::Concat).unwrap(),
        r#"{"kind":"concat"}"#
    );
    assert_eq!(
        serde_json::to_string(&FusionConfig::mmtm()).unwrap(),
        r#"{"kind":"mmtm","ratio":4}"#
    );
}

#[test]
fn unimodal_logit_kinds() {
    assert_eq!(
        FusionConfig::Concat.unimodal_logits(),
        UnimodalLogits::Decomposed
    );
    assert_eq!(FusionConfig::Sum.unimodal_logits(), UnimodalLogits::Branch);
    assert_eq!(
        FusionConfig::mmtm().unimodal_logits(),
        UnimodalLogits::Branch
    );
    for f in [
        FusionConfig::film(),
        FusionConfig::gated(),
        FusionConfig::block(),
    ] {
        assert_eq!(f.unimodal_logits(), UnimodalLogits::ZeroOthers);
        assert!(!f.unimodal_logits().is_additive());
        assert!(f.is_late());
    }
    assert!(!FusionConfig::mmtm().is_late());
    let net = mlp_net(&FusionConfig::Concat, 2);
    assert_eq!(
        net.fusion_head().unimodal_logits(),
        UnimodalLogits::Decomposed
    );
    let net = mlp_net(&FusionConfig::Sum, 2);
    assert_eq!(net.fusion_head().unimodal_logits(), UnimodalLogits::Branch);
}

#[test]
fn mmtm_on_conv4() {
    let conv4 = EncoderConfig::Conv4 {
        channels: [4, 6, 8, 10],
    };
    let specs = vec![
        ModalitySpec::new("gray", conv4.clone(), &[1, 16, 16]),
        ModalitySpec::new("colored", conv4, &[3, 16, 16]),
    ];
    let net = MultimodalNet::new(
        &specs,
        &FusionConfig::mmtm(),
        C,
        &mut SeededRng::new(3),
        &Device::Cpu,
    )
    .unwrap();
    // Blocks after stages 1, 2, 3 with those stages' channels.
    let pos: Vec<(usize, Vec<usize>)> = net
        .mmtm_blocks()
        .iter()
        .map(|(k, b)| (*k, b.channels().to_vec()))
        .collect();
    assert_eq!(
        pos,
        vec![(1, vec![6, 6]), (2, vec![8, 8]), (3, vec![10, 10])]
    );
    let mut rng = SeededRng::new(1);
    let x = [
        randn(&mut rng, &[4, 1, 16, 16]),
        randn(&mut rng, &[4, 3, 16, 16]),
    ];
    common::assert_every_param_gets_gradient(&net, &x, "mmtm conv4");
    let out = net.forward_t(&x, false).unwrap();
    assert_eq!(out.fused_logits.dims(), &[4, C]);
    // The branch logits sum to the fused logits.
    let s = (&out.per_modality_logits[0] + &out.per_modality_logits[1]).unwrap();
    let d: f32 = to_vec(&(s - &out.fused_logits).unwrap())
        .iter()
        .map(|x| x.abs())
        .sum();
    assert!(d < 1e-4);
}
