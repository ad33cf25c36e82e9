//! Staged encoders (`forward_t == pool ∘ stage_{n−1} ∘ … ∘ stage_0`), the MMTM block against
//! its closed form, its running averages and constant excitation, and the `mmtm` fusion net.

mod common;

use candle_core::{Device, Tensor};
use common::{randn, to_vec};
use modbal_core::{FusionControl, MultimodalModel};
use modbal_encoders::mmtm::squeeze_width;
use modbal_encoders::{
    Encoder, EncoderConfig, FusionConfig, MmtmBlock, ModalitySpec, ModelConfig, MultimodalNet,
};
use modbal_tensors::{ParamStore, SeededRng};

fn build(cfg: &EncoderConfig, shape: &[usize], seed: u64) -> (ParamStore, Box<dyn Encoder>) {
    let store = ParamStore::new();
    let pb = store.root(candle_core::DType::F32, &Device::Cpu);
    let enc = cfg.build(&pb, shape, &mut SeededRng::new(seed)).unwrap();
    (store, enc)
}

fn staged(enc: &dyn Encoder, x: &Tensor, train: bool) -> Tensor {
    let mut h = x.clone();
    for k in 0..enc.num_stages() {
        h = enc.forward_stage(k, &h, train).unwrap();
        if h.rank() > 1 {
            assert_eq!(
                h.dim(1).unwrap(),
                enc.stage_channels(k),
                "stage {k} channels"
            );
        }
    }
    enc.pool(&h).unwrap()
}

#[test]
fn staged_forward_equals_forward_for_staged_encoders() {
    let cases = [
        (
            EncoderConfig::SmallCnn {
                channels: vec![4, 6, 8],
            },
            vec![2, 9, 8],
            3,
        ),
        (EncoderConfig::Mlp { hidden: vec![8, 6] }, vec![5], 2),
        (
            EncoderConfig::Conv4 {
                channels: [3, 4, 5, 6],
            },
            vec![2, 12, 9],
            4,
        ),
        (EncoderConfig::Mlp { hidden: vec![] }, vec![2, 3], 1),
        (
            EncoderConfig::ResNet18 {
                frames_pooling: false,
            },
            vec![1, 20, 17],
            4,
        ),
        (
            EncoderConfig::ResNet18 {
                frames_pooling: true,
            },
            vec![3, 2, 16, 16],
            4,
        ),
    ];
    for (cfg, shape, stages) in cases {
        let mut rng = SeededRng::new(1);
        let mut xs = vec![4];
        xs.extend(&shape);
        let x = randn(&mut rng, &xs);
        // Eval mode: the same encoder.
        let (_s, enc) = build(&cfg, &shape, 5);
        assert_eq!(enc.num_stages(), stages, "{cfg:?}");
        assert_eq!(
            to_vec(&enc.forward_t(&x, false).unwrap()),
            to_vec(&staged(enc.as_ref(), &x, false)),
            "{cfg:?} eval"
        );
        // Train mode (BatchNorm batch statistics, running statistics updated): two twins.
        let (sa, a) = build(&cfg, &shape, 5);
        let (sb, b) = build(&cfg, &shape, 5);
        assert_eq!(
            to_vec(&a.forward_t(&x, true).unwrap()),
            to_vec(&staged(b.as_ref(), &x, true)),
            "{cfg:?} train"
        );
        let (ta, tb) = (sa.snapshot().unwrap(), sb.snapshot().unwrap());
        for (k, t) in &ta {
            assert_eq!(to_vec(t), to_vec(&tb[k]), "{cfg:?}: buffer {k}");
        }
        assert!(enc.forward_stage(stages, &x, false).is_err());
    }
    // conv4's stage channels are its four convolutions' (MMTM after stages 1, 2, 3).
    let (_s, conv4) = build(&EncoderConfig::conv4(), &[1, 28, 28], 2);
    let ch: Vec<usize> = (0..4).map(|k| conv4.stage_channels(k)).collect();
    assert_eq!(ch, vec![32, 64, 128, 256]);
    // A one-stage encoder (default): stage 0 is forward_t, pool the identity.
    let gru = EncoderConfig::BiGru {
        glove: None,
        max_words: 0,
        trainable_embeddings: false,
        hidden: 3,
        pooling: Default::default(),
    };
    let (_s, enc) = build(&gru, &[4, 2], 2);
    assert_eq!(enc.num_stages(), 1);
    let x = randn(&mut SeededRng::new(3), &[2, 4, 2]);
    assert_eq!(
        to_vec(&enc.forward_t(&x, false).unwrap()),
        to_vec(&staged(enc.as_ref(), &x, false))
    );
    assert_eq!(enc.stage_channels(0), enc.out_dim());
}

fn block(channels: &[usize], ratio: usize) -> (ParamStore, MmtmBlock) {
    let store = ParamStore::new();
    let pb = store.root(candle_core::DType::F32, &Device::Cpu);
    let names = vec!["a".to_string(), "v".to_string()];
    let b = MmtmBlock::new(&pb, &names, channels, ratio, &mut SeededRng::new(0)).unwrap();
    (store, b)
}

fn set(store: &ParamStore, name: &str, v: &[f32]) {
    let all = store.all();
    let (_, var) = all.iter().find(|(n, _)| n == name).unwrap();
    let t = Tensor::from_vec(v.to_vec(), var.dims(), &Device::Cpu).unwrap();
    var.set(&t).unwrap();
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn mmtm_block_matches_closed_form() {
    // A: [1, 2, 2, 2] feature map, V: [1, 2] vector; width ⌊2·4/4⌋ = 2.
    assert_eq!(squeeze_width(&[2, 2], 4), 2);
    assert_eq!(squeeze_width(&[128, 128], 4), 128);
    let (store, b) = block(&[2, 2], 4);
    let ws = [0.5f32, -0.25, 0.1, 0.2, -0.3, 0.4, 0.05, -0.1];
    let bs = [0.1f32, -0.05];
    let wa = [0.7f32, -0.2, 0.3, 0.6];
    let ba = [0.0f32, 0.1];
    let wv = [-0.4f32, 0.9, 0.2, -0.5];
    let bv = [0.2f32, 0.0];
    set(&store, "squeeze.weight", &ws);
    set(&store, "squeeze.bias", &bs);
    set(&store, "excite.a.weight", &wa);
    set(&store, "excite.a.bias", &ba);
    set(&store, "excite.v.weight", &wv);
    set(&store, "excite.v.bias", &bv);
    let av = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.5];
    let a = Tensor::from_vec(av.to_vec(), (1, 2, 2, 2), &Device::Cpu).unwrap();
    let vv = [0.8f32, -1.2];
    let v = Tensor::from_vec(vv.to_vec(), (1, 2), &Device::Cpu).unwrap();
    // By hand: s_a = channel means, s = [s_a; v], u = ReLU(Ws s + bs), e = σ(W u + b).
    let s = [2.5f64, 0.5, 0.8, -1.2];
    let lin = |w: &[f32], bias: &[f32], x: &[f64], relu: bool| -> Vec<f64> {
        let n = x.len();
        (0..bias.len())
            .map(|i| {
                let z: f64 =
                    (0..n).map(|j| w[i * n + j] as f64 * x[j]).sum::<f64>() + bias[i] as f64;
                if relu {
                    z.max(0.0)
                } else {
                    z
                }
            })
            .collect()
    };
    let u = lin(&ws, &bs, &s, true);
    let ea: Vec<f64> = lin(&wa, &ba, &u, false).into_iter().map(sig).collect();
    let ev: Vec<f64> = lin(&wv, &bv, &u, false).into_iter().map(sig).collect();
    let out = b.forward(&[a, v], false, &[]).unwrap();
    let got_a = to_vec(&out[0]);
    for (i, g) in got_a.iter().enumerate() {
        let want = av[i] as f64 * ea[i / 4];
        assert!((*g as f64 - want).abs() < 1e-5, "A'[{i}] {g} vs {want}");
    }
    let got_v = to_vec(&out[1]);
    for i in 0..2 {
        let want = vv[i] as f64 * ev[i];
        assert!((got_v[i] as f64 - want).abs() < 1e-5, "V'[{i}]");
    }
    // Eval forwards leave the running averages alone.
    assert_eq!(b.count().unwrap(), 0.0);
}

#[test]
fn running_average_is_the_mean_of_batch_means_and_constant_excitation_uses_it() {
    let (_store, b) = block(&[3, 2], 2);
    let mut rng = SeededRng::new(4);
    let mut means: Vec<Vec<f32>> = Vec::new();
    for (i, bs) in [2usize, 5, 3].iter().enumerate() {
        let a = randn(&mut rng, &[*bs, 3, 2, 2]);
        let v = randn(&mut rng, &[*bs, 2]);
        let e = b.excitations(&[a.clone(), v.clone()]).unwrap();
        means.push(to_vec(&e[0].mean(0).unwrap()));
        b.forward(&[a, v], true, &[]).unwrap();
        assert_eq!(b.count().unwrap(), (i + 1) as f64);
    }
    let avg = to_vec(&b.running_average(0));
    for c in 0..3 {
        let want = (means[0][c] + means[1][c] + means[2][c]) / 3.0;
        assert!(
            (avg[c] - want).abs() < 1e-6,
            "channel {c}: {} vs {want}",
            avg[c]
        );
    }
    // Constant excitation for `a`: A' = A ⊙ ē_a for every sample, whatever V is.
    let a = randn(&mut rng, &[4, 3, 2, 2]);
    let v1 = randn(&mut rng, &[4, 2]);
    let v2 = randn(&mut rng, &[4, 2]);
    let o1 = b
        .forward(&[a.clone(), v1.clone()], false, &[true, false])
        .unwrap();
    let o2 = b.forward(&[a.clone(), v2], false, &[true, false]).unwrap();
    assert_eq!(to_vec(&o1[0]), to_vec(&o2[0]));
    let want = a
        .broadcast_mul(&b.running_average(0).reshape((1, 3, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(to_vec(&o1[0]), to_vec(&want));
    // ... and `v` is still computed from both.
    let o3 = b.forward(&[a, v1], false, &[]).unwrap();
    assert_eq!(to_vec(&o1[1]), to_vec(&o3[1]));
}

fn mmtm_net(encoders: [EncoderConfig; 2], shapes: [&[usize]; 2]) -> MultimodalNet {
    let specs = vec![
        ModalitySpec::new("audio", encoders[0].clone(), shapes[0]),
        ModalitySpec::new("visual", encoders[1].clone(), shapes[1]),
    ];
    MultimodalNet::new(
        &specs,
        &FusionConfig::Mmtm { ratio: 4 },
        3,
        &mut SeededRng::new(9),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn mmtm_net_blocks_names_errors_and_gradients() {
    let cnn = EncoderConfig::SmallCnn {
        channels: vec![4, 6, 8],
    };
    let net = mmtm_net([cnn.clone(), cnn.clone()], [&[1, 8, 8], &[3, 8, 8]]);
    // Blocks after stages 1 and 2 (not after the first), channels of those stages.
    let pos: Vec<usize> = net.mmtm_blocks().iter().map(|(k, _)| *k).collect();
    assert_eq!(pos, vec![1, 2]);
    assert_eq!(net.mmtm_blocks()[0].1.channels(), &[6, 6]);
    assert_eq!(net.fusion_prefix().as_deref(), Some("fusion"));
    let names: Vec<String> = net.params().all().into_iter().map(|(n, _)| n).collect();
    for n in [
        "fusion.mmtm.0.squeeze.weight",
        "fusion.mmtm.1.excite.audio.bias",
        "fusion.mmtm.1.excite.visual.weight",
        "fusion.mmtm.0.avg.audio",
        "fusion.mmtm.0.count",
        "head.audio.weight",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    let buffers: Vec<String> = net.params().buffers().into_iter().map(|(n, _)| n).collect();
    assert!(buffers.contains(&"fusion.mmtm.1.avg.visual".to_string()));
    let mut rng = SeededRng::new(2);
    let x = [
        randn(&mut rng, &[4, 1, 8, 8]),
        randn(&mut rng, &[4, 3, 8, 8]),
    ];
    // encode alone is an error; forward_t works; sum of branch logits.
    let err = net.encode(0, &x[0], false).unwrap_err().to_string();
    assert!(err.contains("mmtm"), "{err}");
    let out = net.forward_t(&x, false).unwrap();
    let sum = (&out.per_modality_logits[0] + &out.per_modality_logits[1]).unwrap();
    assert_eq!(to_vec(&out.fused_logits), to_vec(&sum));
    common::assert_every_param_gets_gradient(&net, &x, "mmtm small_cnn");
    // Wrong flag count.
    let ctl = FusionControl {
        constant_excitation: vec![true],
    };
    assert!(net.forward_controlled(&x, false, &ctl).is_err());
    // A late-fusion net refuses a constant excitation.
    let specs = vec![ModalitySpec::new("a", EncoderConfig::mlp(), &[4])];
    let late = MultimodalNet::new(
        &specs,
        &FusionConfig::Sum,
        2,
        &mut SeededRng::new(0),
        &Device::Cpu,
    )
    .unwrap();
    let ctl = FusionControl {
        constant_excitation: vec![true],
    };
    let xl = [randn(&mut rng, &[2, 4])];
    assert!(late.forward_controlled(&xl, false, &ctl).is_err());
    assert!(late.fusion_prefix().is_none());
    // Different stage counts: a clear error.
    let specs = vec![
        ModalitySpec::new("audio", cnn, &[1, 8, 8]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![5] }, &[4]),
    ];
    let err = MultimodalNet::new(
        &specs,
        &FusionConfig::Mmtm { ratio: 4 },
        3,
        &mut SeededRng::new(0),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("same number of stages"), "{err}");
    // MLP nets: one block after stage 1 (2 stages), one after the only stage (1 stage).
    let mlp2 = EncoderConfig::Mlp { hidden: vec![8, 6] };
    let net = mmtm_net([mlp2.clone(), mlp2], [&[4], &[5]]);
    assert_eq!(net.mmtm_blocks().len(), 1);
    assert_eq!(net.mmtm_blocks()[0].0, 1);
    let x = [randn(&mut rng, &[3, 4]), randn(&mut rng, &[3, 5])];
    common::assert_every_param_gets_gradient(&net, &x, "mmtm mlp");
    // ResNet-18 image + clip: blocks after stages 1, 2, 3 (layer2-4: 128, 256, 512 channels).
    let net = mmtm_net(
        [
            EncoderConfig::ResNet18 {
                frames_pooling: false,
            },
            EncoderConfig::ResNet18 {
                frames_pooling: true,
            },
        ],
        [&[1, 20, 16], &[3, 2, 16, 16]],
    );
    let pos: Vec<usize> = net.mmtm_blocks().iter().map(|(k, _)| *k).collect();
    assert_eq!(pos, vec![1, 2, 3]);
    assert_eq!(net.mmtm_blocks()[2].1.channels(), &[512, 512]);
    let xr = [
        randn(&mut rng, &[2, 1, 20, 16]),
        randn(&mut rng, &[2, 3, 2, 16, 16]),
    ];
    common::assert_every_param_gets_gradient(&net, &xr, "mmtm resnet18");
    let mlp1 = EncoderConfig::Mlp { hidden: vec![7] };
    let net = mmtm_net([mlp1.clone(), mlp1], [&[4], &[5]]);
    assert_eq!(net.mmtm_blocks()[0].0, 0);
    common::assert_every_param_gets_gradient(&net, &x, "mmtm mlp one stage");
}

#[test]
fn mmtm_fusion_config_serde() {
    let cfg: ModelConfig = toml::from_str("[fusion]\nkind = \"mmtm\"\n").unwrap();
    assert_eq!(cfg.fusion, FusionConfig::Mmtm { ratio: 4 });
    let cfg: ModelConfig = toml::from_str("[fusion]\nkind = \"mmtm\"\nratio = 8\n").unwrap();
    assert_eq!(cfg.fusion, FusionConfig::Mmtm { ratio: 8 });
    assert!(toml::from_str::<ModelConfig>("[fusion]\nkind = \"sum\"\nratio = 8\n").is_err());
    assert_eq!(
        serde_json::to_string(&FusionConfig::Mmtm { ratio: 2 }).unwrap(),
        r#"{"kind":"mmtm","ratio":2}"#
    );
    assert_eq!(
        serde_json::to_string(&FusionConfig::Sum).unwrap(),
        r#"{"kind":"sum"}"#
    );
    assert_eq!(FusionConfig::Mmtm { ratio: 4 }.kind(), "mmtm");
}
