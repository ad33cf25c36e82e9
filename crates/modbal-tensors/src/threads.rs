//! One switch for the CPU thread count.
//!
//! candle's CPU kernels run on rayon's global pool and size the `gemm` crate's parallelism
//! (`gemm::Parallelism::Rayon(n)`) from the `RAYON_NUM_THREADS` environment variable, read on
//! every matrix product; modbal's own kernels use `rayon::current_num_threads()`. Both are set
//! here, so call [`set_num_threads`] once, before the first tensor operation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
        .stack_size(WORKER_STACK)
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

/// Stack size of the global pool's threads: a main thread's (8 MiB), since [`in_pool`] runs
/// whole training loops there (rayon's default is 2 MiB).
const WORKER_STACK: usize = 8 << 20;

/// Runs `f` on a worker thread of rayon's global pool (built with rayon's default size if no
/// [`set_num_threads`] came first) and returns its result; a panic in `f` resumes here.
///
/// Kernels that split their work over the pool (`par_iter`) from a worker push the other
/// threads' parts to the worker's own queue and compute their share at once; called from a
/// thread outside the pool they hand the whole job over to the pool instead and sleep until it
/// is done, a handover and wake-up per kernel. Training loops run here for that reason
/// (`modbal train`, `modbal bench step`).
///
/// Do not call it from code that blocks on other threads doing the same (the ranks of a
/// data-parallel CPU run wait for each other), since the pool's threads would all be waiting.
///
/// The calling thread's `ops::force_generic` setting holds for `f` too, and the generic paths
/// `f` takes count in the caller's `ops::generic_path_count`. Called on a thread of the pool,
/// it runs `f` right there.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
    crate::ops::dispatch::carried(|g| rayon::scope(|_| g()), f)
}

/// Whether training loops run on the pool ([`in_pool`]); set by the `modbal` binary
/// ([`run_loops_in_pool`]), off in library use (so that tests running several loops at once on
/// their own threads keep doing so).
static LOOPS_IN_POOL: AtomicBool = AtomicBool::new(false);
/// Keep-warm jobs alive ([`keep_warm`]).
static WARM: AtomicUsize = AtomicUsize::new(0);
/// How long a keep-warm job waits for work before it ends.
const WARM_IDLE: Duration = Duration::from_millis(2);

/// Makes one-rank training loops run on a worker of rayon's pool ([`in_pool`]) whose other
/// workers stay awake between kernels (`keep_warm`). For processes that run one training
/// loop at a time (the `modbal` binary, the examples); off by default.
pub fn run_loops_in_pool(on: bool) {
    LOOPS_IN_POOL.store(on, Ordering::Relaxed);
}

/// The environment variable that, set to `0` (or `false`), keeps the `modbal` binary's training
/// loop on its main thread and the pool's workers asleep between kernels (for machines shared
/// with other jobs, where the idle spinning of `keep_warm` takes CPU time from them).
pub const POOL_LOOP_ENV: &str = "MODBAL_POOL_LOOP";

/// What the binaries pass to [`run_loops_in_pool`]: on unless [`POOL_LOOP_ENV`] says `0`/`false`.
pub fn pool_loop_wanted() -> bool {
    !matches!(
        std::env::var(POOL_LOOP_ENV).as_deref().map(str::trim),
        Ok("0" | "false" | "FALSE" | "no")
    )
}

/// Whether [`run_loops_in_pool`] is on.
pub fn loops_in_pool() -> bool {
    LOOPS_IN_POOL.load(Ordering::Relaxed)
}

/// Keeps the pool's other workers awake for [`WARM_IDLE`] after the last parallel work, as
/// OpenMP's workers spin between parallel regions: called by the kernels before they split
/// work over the pool, from a loop on the pool ([`run_loops_in_pool`]).
///
/// rayon puts an idle worker to sleep after a few microseconds, and every parallel kernel then
/// first wakes it (a futex call and a context switch, tens of microseconds on a virtual machine)
/// while the calling worker starts alone. A keep-warm job occupies each other worker and runs
/// whatever parallel work appears (`rayon::yield_now`) until none came for `WARM_IDLE`.
pub(crate) fn keep_warm() {
    if !loops_in_pool() {
        return;
    }
    let Some(me) = rayon::current_thread_index() else {
        return;
    };
    let others = rayon::current_num_threads().saturating_sub(1);
    while WARM.load(Ordering::Relaxed) < others {
        WARM.fetch_add(1, Ordering::Relaxed);
        rayon::spawn(move || warm_loop(me));
    }
}

/// Keep-warm jobs alive now (a diagnostic for tests).
pub fn warm_jobs() -> usize {
    WARM.load(Ordering::Relaxed)
}

fn warm_loop(driver: usize) {
    // The driver itself may pick the job up while it waits; it has its own work to return to.
    if rayon::current_thread_index() != Some(driver) {
        let mut last = Instant::now();
        let mut idle = 0u32;
        loop {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => idle = 0,
                Some(rayon::Yield::Idle) => {
                    // The clock is read once per 64 idle rounds (it is a system call on some
                    // virtual machines).
                    if idle == 0 {
                        last = Instant::now();
                    } else if idle.is_multiple_of(64) && last.elapsed() > WARM_IDLE {
                        break;
                    }
                    idle = idle.wrapping_add(1);
                    std::hint::spin_loop();
                }
                None => break,
            }
        }
    }
    WARM.fetch_sub(1, Ordering::Relaxed);
}
