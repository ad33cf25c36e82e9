//! im2col + gemm against Winograd F(2×2, 3×3) on the 3 × 3 stride-1 layers of the benchmark
//! encoders (conv4-pair, ResNet18, the synth-av CNN): forward pass alone, and forward plus
//! backward (input and weight gradients; the weight gradient is the same im2col product in both).
//! The evidence behind `ConvAlgorithm::Auto`.
//!
//! ```sh
//! cargo run --release -p modbal-tensors --example conv_algorithms [-- THREADS [ALGORITHM]]
//! ```
//! With `ALGORITHM` (`im2col` or `winograd`) only that one is timed (for a profiler).
//! Prints the fastest of 15 runs per variant (after one warm-up run) and the ratio
//! Winograd / im2col.

use candle_core::{Device, Result, Tensor, Var};
use modbal_tensors::ops::{conv2d, set_conv_algorithm, ConvAlgorithm, ConvGeometry};
use std::time::Instant;

fn min_ms(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::new();
    for _ in 0..15 {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[0])
}

fn main() -> Result<()> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    modbal_tensors::alloc::retain_freed_memory();
    modbal_tensors::threads::set_num_threads(threads);
    modbal_tensors::threads::in_pool(run)
}

fn run() -> Result<()> {
    let only = match std::env::args().nth(2).as_deref() {
        Some("im2col") => Some(ConvAlgorithm::Im2col),
        Some("winograd") => Some(ConvAlgorithm::Winograd),
        _ => None,
    };
    // (name, batch, in channels, out channels, plane)
    let layers: &[(&str, usize, usize, usize, usize)] = &[
        ("conv4 b2", 64, 32, 64, 14),
        ("conv4 b3", 64, 64, 128, 7),
        ("conv4 b4", 64, 128, 256, 3),
        ("synth-av 16-32", 64, 16, 32, 16),
        ("synth-av 32-64", 64, 32, 64, 8),
        ("resnet l1 (a)", 16, 64, 64, 32),
        ("resnet l1 (v)", 16, 64, 64, 28),
        ("resnet l2", 16, 128, 128, 16),
        ("resnet l3", 16, 256, 256, 8),
        ("resnet l4", 16, 512, 512, 4),
    ];
    let g = ConvGeometry {
        stride: (1, 1),
        padding: (1, 1),
        dilation: (1, 1),
    };
    println!(
        "{:<16} {:>10} {:>10} {:>6} {:>12} {:>12} {:>6}",
        "layer", "fwd im2col", "fwd wino", "ratio", "f+b im2col", "f+b wino", "ratio"
    );
    for &(name, b, c, o, p) in layers {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c, p, p), &dev)?)?;
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (o, c, 3, 3), &dev)? * 0.05)?)?;
        let r = Tensor::randn(0f32, 1.0, (b, o, p, p), &dev)?;
        let mut row = Vec::new();
        for algo in [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd] {
            if only.is_some_and(|o| o != algo) {
                row.push((f64::NAN, f64::NAN));
                continue;
            }
            let _a = set_conv_algorithm(algo);
            let fwd = min_ms(|| conv2d(x.as_tensor(), w.as_tensor(), g).map(|_| ()))?;
            let both = min_ms(|| {
                let y = conv2d(x.as_tensor(), w.as_tensor(), g)?;
                let loss = (y * &r)?.sum_all()?;
                loss.backward().map(|_| ())
            })?;
            row.push((fwd, both));
        }
        println!(
            "{:<16} {:>10.2} {:>10.2} {:>6.2} {:>12.2} {:>12.2} {:>6.2}",
            name,
            row[0].0,
            row[1].0,
            row[1].0 / row[0].0,
            row[0].1,
            row[1].1,
            row[1].1 / row[0].1
        );
    }
    Ok(())
}
