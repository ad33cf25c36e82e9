//! Configuration serde, validation, determinism of the initial weights and shape errors.

mod common;

use candle_core::{DType, Device};
use common::{randn, to_vec};
use modbal_core::MultimodalModel;
use modbal_encoders::{
    EncoderConfig, EncoderError, FusionConfig, ModalitySpec, ModelConfig, MultimodalNet,
};
use modbal_tensors::{ParamStore, SeededRng};

fn specs() -> Vec<ModalitySpec> {
    vec![
        ModalitySpec::new("audio", EncoderConfig::small_cnn(), &[1, 20, 16]),
        ModalitySpec::new("visual", EncoderConfig::conv4(), &[3, 28, 28]),
        ModalitySpec::new("text", EncoderConfig::mlp(), &[12]),
    ]
}

fn net(seed: u64, fusion: FusionConfig) -> MultimodalNet {
    MultimodalNet::new(
        &specs(),
        &fusion,
        7,
        &mut SeededRng::new(seed),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn same_seed_same_parameters_different_seed_different() {
    for fusion in [FusionConfig::Concat, FusionConfig::Sum] {
        let a = net(7, fusion).params().snapshot().unwrap();
        let b = net(7, fusion).params().snapshot().unwrap();
        let c = net(8, fusion).params().snapshot().unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, t) in &a {
            assert_eq!(
                to_vec(t),
                to_vec(&b[name]),
                "{name} differs under the same seed"
            );
            let randomly_initialised = name.ends_with("weight") && !name.contains(".bn");
            if randomly_initialised {
                assert_ne!(
                    to_vec(t),
                    to_vec(&c[name]),
                    "{name} equal under different seeds"
                );
            }
        }
    }
}

#[test]
fn parameter_groups_and_head_layout() {
    let n = net(0, FusionConfig::Concat);
    let names: Vec<String> = n.params().all().into_iter().map(|(k, _)| k).collect();
    assert!(names
        .iter()
        .all(|k| k.starts_with("encoder.") || k.starts_with("head.")));
    for m in 0..3 {
        assert!(!n
            .params()
            .trainable_with_prefix(&n.encoder_prefix(m))
            .is_empty());
    }
    let head: Vec<String> = n
        .params()
        .trainable_with_prefix("head")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(head, ["head.fc.bias", "head.fc.weight"]);
    assert_eq!(n.feature_dims(), [64, 256, 256]);
    assert_eq!(
        n.params().trainable_with_prefix("head.fc.weight")[0]
            .1
            .dims(),
        &[7, 576]
    );
    assert!(names.contains(&"encoder.visual.bn4.running_var".to_string()));
    assert!(names.contains(&"encoder.audio.blocks.1.conv.weight".to_string()));
    assert!(names.contains(&"encoder.text.layers.0.weight".to_string()));

    let s = net(0, FusionConfig::Sum);
    let head: Vec<String> = s
        .params()
        .trainable_with_prefix("head")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        head,
        [
            "head.audio.bias",
            "head.audio.weight",
            "head.text.bias",
            "head.text.weight",
            "head.visual.bias",
            "head.visual.weight"
        ]
    );
}

#[test]
fn bad_input_shapes_are_errors_naming_the_shape() {
    let n = net(0, FusionConfig::Concat);
    let mut rng = SeededRng::new(0);
    // conv4 built for [3, 28, 28] given 1 channel.
    let err = n
        .encode(1, &randn(&mut rng, &[2, 1, 28, 28]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[B, 3, H, W]") && err.contains("[2, 1, 28, 28]") && err.contains("visual"),
        "{err}"
    );
    // conv4 on a too small image.
    let err = n
        .encode(1, &randn(&mut rng, &[2, 3, 6, 28]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[2, 3, 6, 28]") && err.contains(">= 8"),
        "{err}"
    );
    // small CNN given a rank-3 tensor.
    let err = n
        .encode(0, &randn(&mut rng, &[2, 20, 16]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[B, 1, H, W]") && err.contains("[2, 20, 16]"),
        "{err}"
    );
    // mlp given the wrong width.
    let err = n
        .encode(2, &randn(&mut rng, &[2, 13]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[B, 12]") && err.contains("[2, 13]"), "{err}");
    // f64 input.
    let x64 = randn(&mut rng, &[2, 12]).to_dtype(DType::F64).unwrap();
    let err = n.encode(2, &x64, false).unwrap_err().to_string();
    assert!(err.contains("F64") && err.contains("[2, 12]"), "{err}");
    // modality index out of range.
    let err = n
        .encode(3, &randn(&mut rng, &[2, 12]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    // wrong number of inputs (the trait's default forward).
    let err = n
        .forward_t(&[randn(&mut rng, &[2, 12])], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 modalities"), "{err}");

    // ResNet18 clip encoder given a 4-D image batch, image encoder given a clip.
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    let video = EncoderConfig::resnet18(true)
        .build(&pb.pp("v"), &[3, 2, 16, 16], &mut rng)
        .unwrap();
    let err = video
        .forward_t(&randn(&mut rng, &[2, 3, 16, 16]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[B, 3, T, H, W]") && err.contains("[2, 3, 16, 16]"),
        "{err}"
    );
    let image = EncoderConfig::resnet18(false)
        .build(&pb.pp("i"), &[1, 16, 16], &mut rng)
        .unwrap();
    let err = image
        .forward_t(&randn(&mut rng, &[2, 1, 2, 16, 16]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[B, 1, H, W]") && err.contains("[2, 1, 2, 16, 16]"),
        "{err}"
    );
    // Mlp accepts both the flat and the structured form of its input.
    let mlp = EncoderConfig::Mlp { hidden: vec![4] }
        .build(&pb.pp("m"), &[2, 3], &mut rng)
        .unwrap();
    assert_eq!(
        mlp.forward_t(&randn(&mut rng, &[5, 6]), false)
            .unwrap()
            .dims(),
        &[5, 4]
    );
    assert_eq!(
        mlp.forward_t(&randn(&mut rng, &[5, 2, 3]), false)
            .unwrap()
            .dims(),
        &[5, 4]
    );
    let err = mlp
        .forward_t(&randn(&mut rng, &[5, 3, 2]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[B, 6] or [B, 2, 3]") && err.contains("[5, 3, 2]"),
        "{err}"
    );
}

#[test]
fn invalid_configurations_are_rejected_before_any_weight_is_drawn() {
    let cases: Vec<(EncoderConfig, Vec<usize>, &str)> = vec![
        (EncoderConfig::conv4(), vec![1, 4, 28], "[1, 4, 28]"),
        (EncoderConfig::conv4(), vec![28, 28], "[C, H, W]"),
        (
            EncoderConfig::Conv4 {
                channels: [8, 0, 8, 8],
            },
            vec![1, 28, 28],
            "channels[1]",
        ),
        (
            EncoderConfig::resnet18(true),
            vec![3, 224, 224],
            "[C, T, H, W]",
        ),
        (
            EncoderConfig::resnet18(false),
            vec![3, 2, 224, 224],
            "frames_pooling = true",
        ),
        (
            EncoderConfig::SmallCnn { channels: vec![] },
            vec![1, 8, 8],
            "empty",
        ),
        (
            EncoderConfig::Mlp { hidden: vec![4, 0] },
            vec![3],
            "hidden[1]",
        ),
        (EncoderConfig::mlp(), vec![], "empty"),
        (EncoderConfig::mlp(), vec![3, 0], "zero-sized"),
    ];
    for (cfg, shape, needle) in cases {
        let store = ParamStore::new();
        let err = cfg
            .build(
                &store.root(DType::F32, &Device::Cpu),
                &shape,
                &mut SeededRng::new(0),
            )
            .unwrap_err();
        assert!(matches!(err, EncoderError::Config(_)), "{cfg:?}: {err}");
        assert!(
            err.to_string().contains(needle),
            "{cfg:?} on {shape:?}: {err}"
        );
        assert!(
            store.is_empty(),
            "{cfg:?}: parameters registered before validation failed"
        );
    }
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(0);
    let one = |n: &str| ModalitySpec::new(n, EncoderConfig::mlp(), &[3]);
    let err = MultimodalNet::new(
        &[one("a"), one("a")],
        &FusionConfig::Concat,
        2,
        &mut rng,
        &dev,
    )
    .unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    let err =
        MultimodalNet::new(&[one("a.b")], &FusionConfig::Concat, 2, &mut rng, &dev).unwrap_err();
    assert!(err.to_string().contains("\"a.b\""), "{err}");
    let err = MultimodalNet::new(
        &[one("audio"), one("audio2")],
        &FusionConfig::Concat,
        2,
        &mut rng,
        &dev,
    )
    .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
    let err = MultimodalNet::new(&[], &FusionConfig::Concat, 2, &mut rng, &dev).unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
    let err = MultimodalNet::new(&[one("a")], &FusionConfig::Sum, 0, &mut rng, &dev).unwrap_err();
    assert!(err.to_string().contains("num_classes"), "{err}");
    let bad = ModalitySpec::new("img", EncoderConfig::conv4(), &[1, 4, 4]);
    let err =
        MultimodalNet::new(&[one("a"), bad], &FusionConfig::Sum, 2, &mut rng, &dev).unwrap_err();
    assert!(
        err.to_string().contains("\"img\"") && err.to_string().contains("[1, 4, 4]"),
        "{err}"
    );
    // Converts into the core error as a configuration error.
    let core: modbal_core::ModbalError = err.into();
    assert!(matches!(core, modbal_core::ModbalError::Config(_)));
}

#[test]
fn model_config_toml_with_defaults() {
    let text = r#"
        [fusion]
        kind = "sum"

        [encoders.audio]
        kind = "resnet18"

        [encoders.visual]
        kind = "resnet18"
        frames_pooling = true

        [encoders.gray]
        kind = "conv4"

        [encoders.colored]
        kind = "conv4"
        channels = [8, 16, 32, 64]

        [encoders.text]
        kind = "mlp"
        hidden = []

        [encoders.synthetic]
        kind = "small_cnn"
    "#;
    let cfg: ModelConfig = toml::from_str(text).unwrap();
    assert_eq!(cfg.fusion, FusionConfig::Sum);
    assert_eq!(
        cfg.encoders["audio"],
        EncoderConfig::ResNet18 {
            frames_pooling: false
        }
    );
    assert_eq!(
        cfg.encoders["visual"],
        EncoderConfig::ResNet18 {
            frames_pooling: true
        }
    );
    assert_eq!(
        cfg.encoders["gray"],
        EncoderConfig::Conv4 {
            channels: [32, 64, 128, 256]
        }
    );
    assert_eq!(
        cfg.encoders["colored"],
        EncoderConfig::Conv4 {
            channels: [8, 16, 32, 64]
        }
    );
    assert_eq!(cfg.encoders["text"], EncoderConfig::Mlp { hidden: vec![] });
    assert_eq!(
        cfg.encoders["synthetic"],
        EncoderConfig::SmallCnn {
            channels: vec![32, 64]
        }
    );
    // Round trip through TOML and JSON.
    let back: ModelConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let json = serde_json::to_string(&cfg.encoders["visual"]).unwrap();
    assert_eq!(json, r#"{"kind":"resnet18","frames_pooling":true}"#);
    assert_eq!(
        serde_json::to_string(&FusionConfig::Concat).unwrap(),
        r#"{"kind":"concat"}"#
    );
    // Fusion defaults to concat; an empty table is a valid (empty) config.
    let d: ModelConfig = toml::from_str("[encoders.a]\nkind = \"mlp\"\n").unwrap();
    assert_eq!(d.fusion, FusionConfig::Concat);
    assert_eq!(d.encoders["a"], EncoderConfig::Mlp { hidden: vec![256] });
}

#[test]
fn model_config_rejects_unknown_keys_and_mismatched_modalities() {
    for bad in [
        "[encoders.a]\nkind = \"mlp\"\nhiden = [3]\n",
        "[encoders.a]\nkind = \"resnet50\"\n",
        "[encoders.a]\nkind = \"conv4\"\nchannels = [1, 2, 3]\n",
        "[fusion]\nkind = \"concat\"\nextra = 1\n",
        "[fusion]\nkind = \"attention\"\n",
        "fussion = {kind = \"sum\"}\n",
    ] {
        assert!(
            toml::from_str::<ModelConfig>(bad).is_err(),
            "accepted {bad:?}"
        );
    }
    let cfg: ModelConfig =
        toml::from_str("[encoders.a]\nkind = \"mlp\"\n[encoders.c]\nkind = \"mlp\"\n").unwrap();
    let mods = vec!["a".to_string(), "b".to_string()];
    let err = cfg
        .build(
            &mods,
            &[vec![3], vec![3]],
            2,
            &mut SeededRng::new(0),
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing [\"b\"]") && err.contains("unknown [\"c\"]"),
        "{err}"
    );
    // The right modalities build, in the given order (not the map's order).
    let cfg: ModelConfig = toml::from_str(
        "[encoders.z]\nkind = \"mlp\"\nhidden = [4]\n[encoders.a]\nkind = \"mlp\"\nhidden = [5]\n",
    )
    .unwrap();
    let mods = vec!["z".to_string(), "a".to_string()];
    let net = cfg
        .build(
            &mods,
            &[vec![3], vec![2]],
            2,
            &mut SeededRng::new(0),
            &Device::Cpu,
        )
        .unwrap();
    assert_eq!(net.modalities(), mods.as_slice());
    assert_eq!(net.feature_dims(), [4, 5]);
}
