//! Is the data loader the bottleneck of a training step on CREMA-D-shaped data?
//!
//! ```sh
//! just bench-loader                       # = cargo run --release --example bench_loader
//! cargo run --release --example bench_loader -- --clips 96 --batch 16 --workers 0 --steps 2
//! ```
//!
//! 1. Writes a CREMA-D-shaped tree in the prepared layout to a temporary folder: `--clips`
//!    clips, each a 257×188 f32 spectrogram (`.npy`) and 3 textured 224×224 JPEG frames.
//! 2. Loads it with the `crema-d` loader (T = 3 frames, RandomResizedCrop 224 + flip, ImageNet
//!    normalisation — the training transform) through the prefetching `DataLoader`, and reports
//!    samples/s with 1 decoding thread and with `--workers` (0: one per core).
//! 3. Times one training step at the same batch size: ResNet18 on the `[1, 257, 188]`
//!    spectrogram + ResNet18 with frame pooling on the `[3, 3, 224, 224]` clip, concat head,
//!    cross-entropy, backward, SGD update (median of `--steps` after one warm-up step).
//! 4. Prints both as samples/s and says whether the loader is the bottleneck: the prefetch
//!    thread hides loading while `batch / loader rate < step time`.

use modbal::core::MultimodalModel;
use modbal::data::real::av::CremaDConfig;
use modbal::data::real::fixtures::AvFixture;
use modbal::data::{DataLoader, Dataset};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::tensors::{cross_entropy, Optimizer, SeededRng, Sgd, SgdConfig};
use std::sync::Arc;
use std::time::Instant;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} expects a number, got {v}"))
        })
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let clips = arg(&args, "--clips", 96).max(6);
    let batch = arg(&args, "--batch", 16).max(1);
    let workers = modbal::data::real::resolve_workers(arg(&args, "--workers", 0));
    let steps = arg(&args, "--steps", 2).max(1);

    let dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    AvFixture {
        train_per_class: clips.div_ceil(6),
        test_per_class: 1,
        spec: [257, 188],
        frames_per_clip: 3,
        frame_size: (224, 224),
        jpeg: true,
        texture: true,
        ..Default::default()
    }
    .write_prepared(dir.path())?;
    println!(
        "fixture: {} clips (257×188 spectrogram + 3 JPEG frames 224×224 each) written in {:.1}s",
        clips.div_ceil(6) * 6 + 6,
        t0.elapsed().as_secs_f64()
    );

    let load = |w: usize| -> anyhow::Result<(f64, Arc<dyn Dataset>)> {
        let (train, _, _) = CremaDConfig {
            root: dir.path().to_path_buf(),
            frames: 3,
            image_size: 224,
            val_fraction: 0.01,
            workers: w,
            ..Default::default()
        }
        .build_splits()?;
        train.set_epoch(0, 0);
        let ds: Arc<dyn Dataset> = train;
        let n = ds.len();
        let t = Instant::now();
        for b in DataLoader::new(ds.clone(), (0..n).collect(), batch, 2)? {
            b?;
        }
        Ok((n as f64 / t.elapsed().as_secs_f64(), ds))
    };
    let (rate1, _) = load(1)?;
    let (rate_w, ds) = load(workers)?;
    println!("loader, 1 decoding thread:   {rate1:8.1} samples/s");
    println!("loader, {workers} decoding thread(s): {rate_w:8.1} samples/s");

    // One training step at the same batch size.
    let mut rng = SeededRng::new(0);
    let specs = vec![
        ModalitySpec::new("audio", EncoderConfig::resnet18(false), &[1, 257, 188]),
        ModalitySpec::new("visual", EncoderConfig::resnet18(true), &[3, 3, 224, 224]),
    ];
    let model = MultimodalNet::new(
        &specs,
        &FusionConfig::Concat,
        6,
        &mut rng,
        &candle_core::Device::Cpu,
    )?;
    let mut opt = Sgd::new(
        model.params().trainable(),
        SgdConfig {
            lr: 1e-3,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-4,
        },
    );
    let b = modbal::data::loader::make_batch(
        ds.as_ref(),
        &(0..batch.min(ds.len())).collect::<Vec<_>>(),
    )?;
    let mut times = Vec::new();
    for s in 0..=steps {
        let t = Instant::now();
        let out = model.forward_t(&b.inputs, true)?;
        let loss = cross_entropy(&out.fused_logits, &b.labels)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        if s > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let step = times[times.len() / 2];
    let step_rate = b.len() as f64 / step;
    println!(
        "training step (ResNet18 audio + ResNet18 3-frame visual, batch {}): {step:.2}s = {step_rate:.1} samples/s",
        b.len()
    );
    let per_batch = b.len() as f64 / rate_w;
    if per_batch < step {
        println!(
            "loader is NOT the bottleneck: a batch loads in {per_batch:.2}s on the prefetch thread while a step takes {step:.2}s ({:.1}× headroom)",
            step / per_batch
        );
    } else {
        println!(
            "loader IS the bottleneck: a batch loads in {per_batch:.2}s, a step takes {step:.2}s (raise dataset.workers or use fewer/smaller frames)"
        );
    }
    Ok(())
}
