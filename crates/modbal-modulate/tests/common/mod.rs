//! Helpers shared by the integration tests: a small two-modality `MultimodalNet` with real
//! gradients, and bit-level snapshots of gradient stores.
#![allow(dead_code)]

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use modbal_core::{MultimodalModel, MultimodalOutput};
use modbal_encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal_tensors::{cross_entropy, SeededRng};
use std::collections::BTreeMap;

pub const AUDIO: &str = "encoder.audio";
pub const VISUAL: &str = "encoder.visual";
pub const HEAD: &str = "head";

/// A tensor from f64 values (stored as f32).
pub fn t32(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape.to_vec(), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

pub fn vec_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// A small net: audio = small CNN on 1×8×8 (conv kernels + BatchNorm), visual = small CNN on
/// 3×8×8, concat head, 3 classes.
pub fn small_net(seed: u64) -> MultimodalNet {
    let cnn = EncoderConfig::SmallCnn {
        channels: vec![4, 8],
    };
    MultimodalNet::new(
        &[
            ModalitySpec::new("audio", cnn.clone(), &[1, 8, 8]),
            ModalitySpec::new("visual", cnn, &[3, 8, 8]),
        ],
        &FusionConfig::Concat,
        3,
        &mut SeededRng::new(seed),
        &Device::Cpu,
    )
    .unwrap()
}

pub fn small_inputs(seed: u64, b: usize) -> (Vec<Tensor>, Tensor) {
    let mut rng = SeededRng::new(seed);
    let a = rng
        .randn(vec![b, 1, 8, 8], 0.0, 1.0, DType::F32, &Device::Cpu)
        .unwrap();
    let v = rng
        .randn(vec![b, 3, 8, 8], 0.0, 1.0, DType::F32, &Device::Cpu)
        .unwrap();
    let y: Vec<u32> = (0..b).map(|i| (i % 3) as u32).collect();
    (vec![a, v], Tensor::from_vec(y, b, &Device::Cpu).unwrap())
}

/// Forward in train mode; returns the outputs.
pub fn forward(net: &MultimodalNet, inputs: &[Tensor]) -> MultimodalOutput {
    net.forward_t(inputs, true).unwrap()
}

/// Real gradients of the fused cross-entropy.
pub fn fused_grads(net: &MultimodalNet, seed: u64) -> GradStore {
    let (x, y) = small_inputs(seed, 6);
    let out = forward(net, &x);
    cross_entropy(&out.fused_logits, &y)
        .unwrap()
        .backward()
        .unwrap()
}

/// Bit patterns of every trainable variable's gradient (None if absent), by name.
pub fn snapshot(grads: &GradStore, params: &[(String, Var)]) -> BTreeMap<String, Option<Vec<u32>>> {
    params
        .iter()
        .map(|(n, v)| {
            let bits = grads.get(v.as_tensor()).map(|g| {
                g.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            });
            (n.clone(), bits)
        })
        .collect()
}

/// Asserts that every variable NOT in one of `groups` has a bit-identical gradient entry, and
/// returns the names in the groups whose entries changed.
pub fn assert_outside_untouched(
    before: &BTreeMap<String, Option<Vec<u32>>>,
    after: &BTreeMap<String, Option<Vec<u32>>>,
    groups: &[&str],
    what: &str,
) -> Vec<String> {
    let mut changed = Vec::new();
    for (name, b) in before {
        let inside = groups
            .iter()
            .any(|g| modbal_tensors::params::in_group(name, g));
        let a = &after[name];
        if inside {
            if a != b {
                changed.push(name.clone());
            }
        } else {
            assert_eq!(
                a, b,
                "{what}: gradient of {name} (outside {groups:?}) changed"
            );
        }
    }
    changed
}
