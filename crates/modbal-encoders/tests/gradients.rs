//! Every trainable parameter of every encoder kind, under both fusion heads, receives a finite,
//! non-zero gradient from the fused cross-entropy in training mode (candle silently drops the
//! gradients of some ops, so this is checked for each parameter by name).

mod common;

use candle_core::Device;
use common::{assert_every_param_gets_gradient, randn};
use modbal_core::MultimodalModel;
use modbal_encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal_tensors::SeededRng;
use std::time::Instant;

const HEADS: [FusionConfig; 2] = [FusionConfig::Concat, FusionConfig::Sum];

fn check(specs: &[ModalitySpec], batch: usize, num_classes: usize, seed: u64) {
    for fusion in HEADS {
        let mut rng = SeededRng::new(seed);
        let net = MultimodalNet::new(specs, &fusion, num_classes, &mut rng, &Device::Cpu).unwrap();
        let inputs: Vec<_> = specs
            .iter()
            .map(|s| {
                let mut shape = vec![batch];
                shape.extend(&s.input_shape);
                randn(&mut rng, &shape)
            })
            .collect();
        let what = format!(
            "{:?} with {fusion:?} head",
            specs
                .iter()
                .map(|s| (s.name.as_str(), s.encoder.kind(), &s.input_shape))
                .collect::<Vec<_>>()
        );
        let t0 = Instant::now();
        assert_every_param_gets_gradient(&net, &inputs, &what);
        eprintln!(
            "{what}: forward+backward {:.2} s ({} trainable tensors)",
            t0.elapsed().as_secs_f64(),
            net.params().trainable().len()
        );
    }
}

#[test]
fn conv4_gray_and_colored_mnist() {
    check(
        &[
            ModalitySpec::new("gray", EncoderConfig::conv4(), &[1, 28, 28]),
            ModalitySpec::new("colored", EncoderConfig::conv4(), &[3, 28, 28]),
        ],
        4,
        10,
        1,
    );
}

#[test]
fn mlp_flat_and_multidim_and_small_cnn() {
    check(
        &[
            ModalitySpec::new(
                "text",
                EncoderConfig::Mlp {
                    hidden: vec![64, 32],
                },
                &[20],
            ),
            // [2, 5, 3] is flattened to 30 features.
            ModalitySpec::new("tab", EncoderConfig::mlp(), &[2, 5, 3]),
            // 12 -> 6 -> 3 -> 1, the last block skips its pool (1x1).
            ModalitySpec::new(
                "image",
                EncoderConfig::SmallCnn {
                    channels: vec![8, 16, 16, 24],
                },
                &[3, 12, 12],
            ),
        ],
        4,
        5,
        2,
    );
}

#[test]
fn small_cnn_default_unimodal() {
    check(
        &[ModalitySpec::new(
            "image",
            EncoderConfig::small_cnn(),
            &[2, 16, 20],
        )],
        3,
        4,
        3,
    );
}

#[test]
fn resnet18_audio_spectrogram_and_video_frames() {
    // The OGM-GE setup: audio 1×257×188 spectrogram, visual T = 2 frames of 3×224×224.
    check(
        &[
            ModalitySpec::new("audio", EncoderConfig::resnet18(false), &[1, 257, 188]),
            ModalitySpec::new("visual", EncoderConfig::resnet18(true), &[3, 2, 224, 224]),
        ],
        2,
        6,
        4,
    );
}

/// Negative control: the checker must notice parameters cut from the graph.
#[test]
#[should_panic(expected = "received no gradient")]
fn checker_detects_a_detached_encoder() {
    struct Detached(MultimodalNet);
    impl MultimodalModel for Detached {
        fn modalities(&self) -> &[String] {
            self.0.modalities()
        }
        fn num_classes(&self) -> usize {
            self.0.num_classes()
        }
        fn params(&self) -> &modbal_tensors::ParamStore {
            self.0.params()
        }
        fn encode(
            &self,
            m: usize,
            x: &candle_core::Tensor,
            train: bool,
        ) -> candle_core::Result<candle_core::Tensor> {
            Ok(self.0.encode(m, x, train)?.detach())
        }
        fn head(
            &self,
            f: &[candle_core::Tensor],
        ) -> candle_core::Result<(candle_core::Tensor, Vec<candle_core::Tensor>)> {
            self.0.head(f)
        }
    }
    let mut rng = SeededRng::new(0);
    let net = MultimodalNet::new(
        &[ModalitySpec::new("v", EncoderConfig::mlp(), &[6])],
        &FusionConfig::Concat,
        3,
        &mut rng,
        &Device::Cpu,
    )
    .unwrap();
    let x = randn(&mut rng, &[4, 6]);
    assert_every_param_gets_gradient(&Detached(net), &[x], "detached");
}
