//! One switch for the CPU thread count.
//!
//! candle's CPU kernels run on rayon's global pool and size the `gemm` crate's parallelism
//! (`gemm::Parallelism::Rayon(n)`) from the `RAYON_NUM_THREADS` environment variable, read on
//! every matrix product; modbal's own kernels use `rayon::current_num_threads()`. Both are set
//! here, so call [`set_num_threads`] once, before the first tensor operation.

/// Uses `n` threads (at least 1) for candle's and modbal's CPU kernels: sets
/// `RAYON_NUM_THREADS` (read by candle's matrix product) and builds rayon's global pool with `n`
/// threads. Returns the number of threads rayon's global pool ends up with: if the pool was
/// already started (by an earlier operation) it keeps its size, and the value tells the caller.
pub fn set_num_threads(n: usize) -> usize {
    let n = n.max(1);
    // The process sets it before starting any other thread of its own; candle reads the
    // variable (never writes it).
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    rayon::current_num_threads()
}

/// Threads of rayon's global pool (what [`set_num_threads`] set, or rayon's default).
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Runs candle's own element-wise CPU kernels (the additions of its backward pass, unary and
/// binary ops) on the calling thread, unless the user set `CANDLE_NUM_THREADS`.
///
/// candle 0.11 splits large element-wise ops over a separate barrier pool of
/// `CANDLE_NUM_THREADS − 1` worker threads (default: `RAYON_NUM_THREADS`) whose threads and
/// caller spin while they wait. Next to rayon's pool, which runs the matrix products and
/// modbal's kernels, those spinning threads take cores away from the real work: on 2 cores, in
/// profiles of `modbal bench step`, 5-10 % of the samples were spent spinning there, and with one
/// thread every reference workload ran as fast or faster (docs/benchmarks.md). Call it before
/// the first tensor operation; the `modbal` binary does. Returns the value in effect.
pub fn serial_candle_elementwise() -> String {
    match std::env::var("CANDLE_NUM_THREADS") {
        Ok(v) => v,
        Err(_) => {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
            "1".to_string()
        }
    }
}
