//! ResNet18 geometry, frame pooling and parameter layout.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{randn, to_vec};
use modbal_encoders::{Encoder, ResNet18Encoder, RESNET18_OUT_DIM};
use modbal_tensors::{ParamStore, SeededRng};

fn build(input_shape: &[usize], frames: bool, seed: u64) -> (ResNet18Encoder, ParamStore) {
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu).pp("enc");
    let enc = ResNet18Encoder::new(&pb, input_shape, frames, &mut SeededRng::new(seed)).unwrap();
    (enc, store)
}

/// Closed form of every stride-2 stage (conv7x7/2 pad 3, max-pool 3x3/2 pad 1, conv3x3/2 pad 1,
/// conv1x1/2 pad 0): `n → ⌊(n − 1)/2⌋ + 1`, applied five times.
fn final_size(mut n: usize) -> usize {
    for _ in 0..5 {
        n = (n - 1) / 2 + 1;
    }
    n
}

#[test]
fn spectrogram_257x188_gives_9x6_maps_and_512_features() {
    let (enc, _) = build(&[1, 257, 188], false, 0);
    let x = randn(&mut SeededRng::new(1), &[2, 1, 257, 188]);
    let fm = enc.feature_map(&x, false).unwrap();
    assert_eq!((final_size(257), final_size(188)), (9, 6));
    assert_eq!(fm.dims(), &[2, 512, 9, 6]);
    let f = enc.forward_t(&x, false).unwrap();
    assert_eq!(f.dims(), &[2, RESNET18_OUT_DIM]);
    assert_eq!(enc.out_dim(), 512);
    // forward = global average of the feature map, up to the rounding of two summation orders
    // of the 9·6 values: at most 9·6·ε·max|fm| (the error bound of a sum of n terms, n·ε·Σ|v|/n).
    let gap = fm.mean((2, 3)).unwrap();
    let diff = (f - gap).unwrap().abs().unwrap().max_all().unwrap();
    let scale = fm
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let bound = 54.0 * f32::EPSILON * scale;
    let diff = diff.to_scalar::<f32>().unwrap();
    assert!(
        diff <= bound,
        "|forward - mean of the feature map| {diff} > {bound}"
    );
}

#[test]
fn odd_and_tiny_sizes_with_any_channel_count() {
    // (channels, H, W): flow (2 channels), odd sizes, a 1x1 input.
    for (c, h, w) in [(2, 37, 51), (1, 15, 9), (3, 33, 17), (3, 1, 1), (1, 8, 63)] {
        let (enc, _) = build(&[c, h, w], false, 0);
        let x = randn(&mut SeededRng::new(2), &[2, c, h, w]);
        let fm = enc.feature_map(&x, false).unwrap();
        assert_eq!(
            fm.dims(),
            &[2, 512, final_size(h), final_size(w)],
            "{c}x{h}x{w}"
        );
        // Training mode too (BatchNorm on batch statistics).
        let f = enc.forward_t(&x, true).unwrap();
        assert_eq!(f.dims(), &[2, 512], "{c}x{h}x{w}");
        assert!(to_vec(&f).iter().all(|v| v.is_finite()), "{c}x{h}x{w}");
    }
}

#[test]
fn frame_pooling_is_the_mean_of_per_frame_feature_maps() {
    let (b, c, t, h, w) = (2, 3, 3, 32, 40);
    let (enc, _) = build(&[c, t, h, w], true, 5);
    let x = randn(&mut SeededRng::new(6), &[b, c, t, h, w]);
    // Evaluation mode: frames do not interact through BatchNorm statistics.
    let pooled = enc.forward_t(&x, false).unwrap();
    assert_eq!(pooled.dims(), &[b, 512]);
    // By hand: feature map of every frame t ([B, 512, h', w']), mean over t, then over space.
    let maps: Vec<Tensor> = (0..t)
        .map(|i| {
            let frame = x.narrow(2, i, 1).unwrap().squeeze(2).unwrap();
            enc.feature_map(&frame, false).unwrap()
        })
        .collect();
    let mean_map = (Tensor::stack(&maps, 0).unwrap().sum(0).unwrap() / t as f64).unwrap();
    let expect = mean_map.mean((2, 3)).unwrap();
    let (got, expect) = (to_vec(&pooled), to_vec(&expect));
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert!(
            (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "feature {i}: {g} vs {e}"
        );
    }
    // A single frame reduces to the image network.
    let (enc1, _) = build(&[c, 1, h, w], true, 5);
    let (img, _) = build(&[c, h, w], false, 5);
    let x1 = x.narrow(2, 0, 1).unwrap();
    let a = to_vec(&enc1.forward_t(&x1, false).unwrap());
    let b_ = to_vec(&img.forward_t(&x1.squeeze(2).unwrap(), false).unwrap());
    assert_eq!(a, b_);
}

#[test]
fn torchvision_parameter_layout_and_count() {
    let (_, store) = build(&[3, 64, 64], false, 0);
    let names: Vec<String> = store.trainable().into_iter().map(|(n, _)| n).collect();
    for n in [
        "enc.conv1.weight",
        "enc.bn1.weight",
        "enc.layer1.0.conv1.weight",
        "enc.layer1.1.bn2.bias",
        "enc.layer2.0.downsample.0.weight",
        "enc.layer2.0.downsample.1.weight",
        "enc.layer4.1.conv2.weight",
    ] {
        assert!(names.contains(&n.to_string()), "missing {n}");
    }
    assert!(!names
        .iter()
        .any(|n| n.starts_with("enc.layer1.0.downsample")));
    // PyTorch 2.x / torchvision: sum(p.numel() for n, p in resnet18().named_parameters()
    // if not n.startswith("fc")) == 11_689_512 - 513_000 == 11_176_512
    assert_eq!(store.num_trainable(), 11_176_512);
    // 1 input channel: conv1 has 64·1·49 instead of 64·3·49 weights.
    let (_, store1) = build(&[1, 64, 64], false, 0);
    assert_eq!(store1.num_trainable(), 11_176_512 - 2 * 64 * 49);
    // Running statistics are buffers: 20 BatchNorms × 2.
    assert_eq!(store.buffers().len(), 40);
}
