//! The MulT-style sequence Transformer (CMU-MOSEI): shapes, causality (the last step's
//! feature depends on every step, an early step's on no later one), seeded dropout, gradients
//! of every parameter, config errors.

use candle_core::{DType, Device, Tensor};
use modbal_encoders::seq_transformer::sinusoidal_positions;
use modbal_encoders::{Encoder, EncoderConfig, SeqTransformerConfig, SeqTransformerEncoder};
use modbal_tensors::{ParamStore, SeededRng};

fn input(b: usize, t: usize, f: usize, shift: f64) -> Tensor {
    let v: Vec<f32> = (0..b * t * f)
        .map(|i| ((i as f64) * 0.37 + shift).sin() as f32)
        .collect();
    Tensor::from_vec(v, (b, t, f), &Device::Cpu).unwrap()
}

#[test]
fn positions_shapes_causality_and_gradients() {
    // fairseq's table: position 1, d = 4 → [sin(1), sin(1e-4), cos(1), cos(1e-4)].
    let pe = sinusoidal_positions(1, 4);
    let want = [1f64.sin(), 1e-4f64.sin(), 1f64.cos(), 1e-4f64.cos()];
    for (a, b) in pe.iter().zip(want) {
        assert!((*a as f64 - b).abs() < 1e-6, "{pe:?}");
    }
    for kernel in [1usize, 3] {
        let cfg = SeqTransformerConfig {
            kernel,
            ..Default::default()
        };
        let store = ParamStore::new();
        let pb = store
            .root(DType::F32, &Device::Cpu)
            .pp("encoder")
            .pp("audio");
        let enc = SeqTransformerEncoder::new(&pb, &[6, 74], &cfg, &mut SeededRng::new(0)).unwrap();
        assert_eq!(enc.out_dim(), 30);
        let x = input(3, 6, 74, 0.0);
        let y = enc.forward_t(&x, false).unwrap();
        assert_eq!(y.dims(), &[3, 30]);
        // Causal: changing the last step changes only the last step's output.
        let all = enc.forward_all(&x, false).unwrap();
        let x2 = Tensor::cat(&[x.narrow(1, 0, 5).unwrap(), input(3, 1, 74, 5.0)], 1).unwrap();
        let all2 = enc.forward_all(&x2, false).unwrap();
        let d = (all - all2).unwrap().abs().unwrap();
        let early: f32 = d
            .narrow(1, 0, 5 - kernel / 2)
            .unwrap()
            .max_keepdim(1)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let last: f32 = d
            .narrow(1, 5, 1)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            early == 0.0 && last > 1e-4,
            "kernel {kernel}: early {early}, last {last}"
        );
        // Every parameter receives a gradient in training mode.
        let y = enc.forward_t(&x, true).unwrap();
        let w = Tensor::from_vec(
            (0..y.elem_count())
                .map(|i| ((i as f32) * 0.53).sin())
                .collect::<Vec<_>>(),
            y.dims(),
            &Device::Cpu,
        )
        .unwrap();
        let grads = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let trainable = store.trainable();
        assert_eq!(trainable.len(), 1 + 5 * 12 + 2); // proj, 12 per layer, final LN
        for (name, var) in trainable {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let a: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(a.is_finite() && a > 0.0, "gradient of {name} is {a}");
        }
    }
    // Dropout only in training mode; evaluation deterministic.
    let store = ParamStore::new();
    let enc = SeqTransformerEncoder::new(
        &store.root(DType::F32, &Device::Cpu),
        &[4, 5],
        &SeqTransformerConfig::default(),
        &mut SeededRng::new(1),
    )
    .unwrap();
    let x = input(2, 4, 5, 1.0);
    let v = |t: bool| -> Vec<f32> {
        enc.forward_t(&x, t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(v(false), v(false));
    assert_ne!(v(true), v(true));
}

#[test]
fn config_round_trip_and_errors() {
    let cfg: EncoderConfig =
        toml::from_str("kind = \"seq_transformer\"\n[transformer]\nd_model = 40\nnum_heads = 4\n")
            .unwrap();
    assert_eq!(cfg.out_dim(&[50, 35]).unwrap(), 40);
    assert!(cfg.out_dim(&[50]).is_err());
    let bad: EncoderConfig =
        toml::from_str("kind = \"seq_transformer\"\n[transformer]\nd_model = 30\nnum_heads = 4\n")
            .unwrap();
    let e = bad.out_dim(&[50, 35]).unwrap_err().to_string();
    assert!(e.contains("num_heads"), "{e}");
    assert!(toml::from_str::<EncoderConfig>(
        "kind = \"seq_transformer\"\n[transformer]\nlayerz = 3\n"
    )
    .is_err());
    let store = ParamStore::new();
    let enc = cfg
        .build(
            &store.root(DType::F32, &Device::Cpu),
            &[50, 35],
            &mut SeededRng::new(0),
        )
        .unwrap();
    let e = enc
        .forward_t(&input(2, 50, 34, 0.0), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("35") && e.contains("34"), "{e}");
}

/// `MultimodalModel::set_epoch` (called by the trainer before each training epoch) re-seeds the
/// dropout masks from (run seed, epoch, modality): the same (seed, epoch) gives the same masks
/// whatever ran before (what a resumed run needs), another epoch or seed other masks.
#[test]
fn set_epoch_reseeds_dropout_by_seed_and_epoch() {
    use modbal_core::MultimodalModel;
    use modbal_encoders::{FusionConfig, ModalitySpec, MultimodalNet};
    let spec = ModalitySpec::new(
        "audio",
        EncoderConfig::SeqTransformer {
            transformer: SeqTransformerConfig::default(),
        },
        &[6, 74],
    );
    let net = MultimodalNet::new(
        &[spec],
        &FusionConfig::Concat,
        3,
        &mut SeededRng::new(1),
        &Device::Cpu,
    )
    .unwrap();
    let x = input(2, 6, 74, 0.0);
    let run = || -> Vec<f32> {
        net.encode(0, &x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    net.set_epoch(5, 2);
    let a = run();
    let next = run();
    assert_ne!(a, next, "dropout is active: consecutive masks differ");
    net.set_epoch(5, 2);
    assert_eq!(run(), a, "same seed and epoch, same masks");
    net.set_epoch(5, 3);
    assert_ne!(run(), a, "another epoch");
    net.set_epoch(6, 2);
    assert_ne!(run(), a, "another run seed");
}
