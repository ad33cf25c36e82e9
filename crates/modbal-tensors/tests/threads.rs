//! Training loops on the pool (`threads::in_pool`) and the workers kept awake between kernels
//! (`threads::keep_warm`, on with `threads::run_loops_in_pool`).

use candle_core::{DType, Device, Tensor};
use modbal_tensors::ops::{
    conv2d, conv_algorithm, force_generic, generic_forced, generic_path_count, set_conv_algorithm,
    ConvAlgorithm, ConvGeometry,
};
use modbal_tensors::threads::{in_pool, run_loops_in_pool, set_num_threads, warm_jobs};
use std::time::{Duration, Instant};

fn input(dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (0.37 * i as f32).sin()).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn conv(x: &Tensor, w: &Tensor) -> Vec<f32> {
    let g = ConvGeometry {
        padding: (1, 1),
        ..ConvGeometry::default()
    };
    conv2d(x, w, g)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn in_pool_runs_on_a_worker_and_carries_the_generic_switch() {
    set_num_threads(2);
    let here = rayon::current_thread_index();
    assert_eq!(here, None, "the test thread is not a worker");
    let (outer, inner) = in_pool(|| {
        let outer = rayon::current_thread_index();
        // Called on a worker: runs right there.
        (outer, in_pool(rayon::current_thread_index))
    });
    assert!(outer.is_some(), "in_pool did not run on a worker");
    assert_eq!(outer, inner, "a nested in_pool moved to another thread");

    let (x, w) = (input(&[2, 3, 9, 8]), input(&[4, 3, 3, 3]));
    let fast = conv(&x, &w);
    let _g = force_generic(true);
    let before = generic_path_count();
    let (forced, generic) = in_pool(|| (generic_forced(), conv(&x, &w)));
    assert!(forced, "force_generic(true) did not reach the worker");
    assert!(
        generic_path_count() > before,
        "the worker's generic ops were not counted for the caller"
    );
    for (a, b) in fast.iter().zip(&generic) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

/// The caller's `set_conv_algorithm` reaches the worker that runs the loop (so that
/// `MODBAL_CONV_ALGORITHM`-like choices made in code hold for `modbal train`'s pool loop), and
/// the worker's own setting is restored afterwards.
#[test]
fn in_pool_carries_the_conv_algorithm() {
    set_num_threads(2);
    for algo in [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd] {
        let _a = set_conv_algorithm(algo);
        let (inside, worker) = in_pool(|| (conv_algorithm(), rayon::current_thread_index()));
        assert_eq!(
            inside, algo,
            "set_conv_algorithm({algo:?}) did not reach the worker"
        );
        assert!(worker.is_some(), "in_pool did not run on a worker");
    }
    // Outside any override, a worker sees the process default again (the override was lent to
    // the worker for the call only).
    let pool_default = rayon::broadcast(|_| conv_algorithm());
    let here = conv_algorithm();
    assert!(
        pool_default.iter().all(|&a| a == here),
        "{pool_default:?} vs {here:?}"
    );
}

#[test]
fn keep_warm_jobs_start_with_parallel_kernels_and_end_when_idle() {
    if set_num_threads(2) < 2 {
        eprintln!("skipped: rayon's pool has one thread");
        return;
    }
    // Large enough that the convolution splits its groups over the pool.
    let (x, w) = (input(&[8, 8, 32, 32]), input(&[16, 8, 3, 3]));
    let plain = conv(&x, &w);
    assert_eq!(warm_jobs(), 0, "keep-warm jobs without run_loops_in_pool");
    run_loops_in_pool(true);
    // The driver may pick a keep-warm job up itself (it then ends at once), so look after
    // each of several kernels.
    let (warm, ys) = in_pool(|| {
        let mut warm = 0;
        let mut ys = Vec::new();
        for _ in 0..20 {
            ys.push(conv(&x, &w));
            warm = warm.max(warm_jobs());
        }
        (warm, ys)
    });
    assert!(
        warm >= 1,
        "no keep-warm job after parallel kernels on the pool"
    );
    for y in ys {
        assert_eq!(plain, y, "kept-warm workers changed the result");
    }
    // They end on their own once no work comes.
    let t = Instant::now();
    while warm_jobs() > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(warm_jobs(), 0, "keep-warm jobs still alive after 5 s idle");
    run_loops_in_pool(false);
}
