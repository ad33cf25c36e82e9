//! The choice between an op's fast CPU kernel and its device-generic path ([`use_fast_cpu`]),
//! the switch that forces the generic path on the CPU ([`force_generic`], `MODBAL_GENERIC_OPS`),
//! and small building blocks of the generic paths.

use candle_core::backend::BackendStorage;
use candle_core::{DType, Layout, Result, Shape, Tensor};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// The environment variable that, set to `1` (or `true`), makes every thread of the process take
/// the generic paths (read once, at the first dispatch).
pub const GENERIC_OPS_ENV: &str = "MODBAL_GENERIC_OPS";

thread_local! {
    /// This thread's override of the process-wide default (`None`: the default).
    static FORCED: Cell<Option<bool>> = const { Cell::new(None) };
    /// How many dispatch decisions of this thread chose the generic path.
    static GENERIC_COUNT: Cell<u64> = const { Cell::new(0) };
    /// This thread's override of the convolution algorithm (`None`: `MODBAL_CONV_ALGORITHM`).
    static CONV_ALGO: Cell<Option<ConvAlgorithm>> = const { Cell::new(None) };
    /// How many convolution passes of this thread ran as Winograd F(2×2, 3×3).
    static WINOGRAD_COUNT: Cell<u64> = const { Cell::new(0) };
}

/// The environment variable that sets the process-wide [`ConvAlgorithm`]: `auto` (the default),
/// `im2col` or `winograd` (read once, at the first convolution).
pub const CONV_ALGORITHM_ENV: &str = "MODBAL_CONV_ALGORITHM";

/// How the CPU kernels compute the forward pass and both gradients of a 3 × 3 convolution with
/// stride 1 and dilation 1 (every other convolution is im2col + gemm). The results agree to
/// rounding (a few ulps of the terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd F(2×2, 3×3) when both sides have at least 32 channels and the output plane is
    /// at least 5 × 5 (where it measured faster), else im2col + gemm.
    Auto,
    /// Always im2col + gemm.
    Im2col,
    /// Winograd F(2×2, 3×3) for every 3 × 3 stride-1 convolution, whatever its channels.
    Winograd,
}

fn env_conv_algorithm() -> ConvAlgorithm {
    static DEFAULT: OnceLock<ConvAlgorithm> = OnceLock::new();
    *DEFAULT.get_or_init(|| match std::env::var(CONV_ALGORITHM_ENV) {
        Err(_) => ConvAlgorithm::Auto,
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => ConvAlgorithm::Auto,
            "im2col" => ConvAlgorithm::Im2col,
            "winograd" => ConvAlgorithm::Winograd,
            other => {
                eprintln!(
                    "warning: {CONV_ALGORITHM_ENV}={other:?} is not auto, im2col or winograd; using auto"
                );
                ConvAlgorithm::Auto
            }
        },
    })
}

/// Restores the calling thread's previous [`set_conv_algorithm`] when dropped.
#[must_use = "the override ends when the guard is dropped"]
pub struct ConvAlgorithmGuard {
    previous: Option<ConvAlgorithm>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ConvAlgorithmGuard {
    fn drop(&mut self) {
        CONV_ALGO.with(|f| f.set(self.previous));
    }
}

/// Sets the convolution algorithm of the calling thread while the returned guard lives,
/// overriding `MODBAL_CONV_ALGORITHM` (per thread, as [`force_generic`]).
pub fn set_conv_algorithm(algorithm: ConvAlgorithm) -> ConvAlgorithmGuard {
    let previous = CONV_ALGO.with(|f| f.replace(Some(algorithm)));
    ConvAlgorithmGuard {
        previous,
        _not_send: PhantomData,
    }
}

/// The calling thread's convolution algorithm.
pub fn conv_algorithm() -> ConvAlgorithm {
    CONV_ALGO
        .with(|f| f.get())
        .unwrap_or_else(env_conv_algorithm)
}

/// How many convolution passes (forward, input or weight gradient) called on this thread ran
/// as Winograd F(2×2, 3×3) (a diagnostic, as [`generic_path_count`]).
pub fn winograd_count() -> u64 {
    WINOGRAD_COUNT.with(|c| c.get())
}

pub(crate) fn count_winograd() {
    WINOGRAD_COUNT.with(|c| c.set(c.get() + 1));
}

fn env_default() -> bool {
    static DEFAULT: OnceLock<bool> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var(GENERIC_OPS_ENV)
            .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
            .unwrap_or(false)
    })
}

/// Restores the calling thread's previous setting of [`force_generic`] when dropped (on that
/// thread: the guard is not `Send`).
#[must_use = "the override ends when the guard is dropped"]
pub struct GenericGuard {
    previous: Option<bool>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for GenericGuard {
    fn drop(&mut self) {
        FORCED.with(|f| f.set(self.previous));
    }
}

/// Forces (`true`) or forbids (`false`) the device-generic paths of this module's ops on the
/// calling thread while the returned guard lives, overriding `MODBAL_GENERIC_OPS`. The setting
/// is per thread (tests run in parallel threads); an op decides on the thread that calls it.
pub fn force_generic(on: bool) -> GenericGuard {
    let previous = FORCED.with(|f| f.replace(Some(on)));
    GenericGuard {
        previous,
        _not_send: PhantomData,
    }
}

/// Whether the calling thread currently takes the generic paths even on the CPU.
pub fn generic_forced() -> bool {
    FORCED.with(|f| f.get()).unwrap_or_else(env_default)
}

/// Whether an op over `tensors` runs its fast CPU kernel: all on the CPU, all f32 or all f64
/// (one dtype), and the generic paths not forced. Every op of this module dispatches on it; a
/// `false` is counted (see [`generic_path_count`]).
pub fn use_fast_cpu(tensors: &[&Tensor]) -> bool {
    let dtype = tensors.first().map(|t| t.dtype());
    let fast = !generic_forced()
        && matches!(dtype, Some(DType::F32 | DType::F64))
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && Some(t.dtype()) == dtype);
    if !fast {
        GENERIC_COUNT.with(|c| c.set(c.get() + 1));
    }
    fast
}

/// Runs `f` with the calling thread's [`force_generic`] and [`set_conv_algorithm`] settings and
/// adds the generic paths it took to the caller's [`generic_path_count`] (for work handed to
/// another thread: `threads::in_pool`). `f` gets the settings and returns its result with its
/// count.
pub(crate) fn carried<R: Send>(
    run: impl FnOnce(Box<dyn FnOnce() -> (R, u64) + Send + '_>) -> (R, u64),
    f: impl FnOnce() -> R + Send,
) -> R {
    let forced = FORCED.with(|c| c.get());
    let algo = CONV_ALGO.with(|c| c.get());
    let (r, used) = run(Box::new(move || {
        let previous = FORCED.with(|c| c.replace(forced));
        let previous_algo = CONV_ALGO.with(|c| c.replace(algo));
        let before = generic_path_count();
        let r = f();
        let used = generic_path_count() - before;
        FORCED.with(|c| c.set(previous));
        CONV_ALGO.with(|c| c.set(previous_algo));
        (r, used)
    }));
    GENERIC_COUNT.with(|c| c.set(c.get() + used));
    r
}

/// How many times ops called on this thread took their generic path (a diagnostic: tests use it
/// to check that [`force_generic`] switches paths).
pub fn generic_path_count() -> u64 {
    GENERIC_COUNT.with(|c| c.get())
}

/// A copy of a storage in a fresh contiguous buffer, on any backend (the forward pass of the
/// generic ops' gradient hooks).
pub(super) fn copy_storage<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    Ok((s.affine(l, 1.0, 0.0)?, l.shape().clone()))
}

/// `max(x, 0)` whose gradient is `g·[x > 0]`, as the fused kernels (candle's `relu` passes the
/// gradient at 0 too).
pub(super) fn strict_relu(x: &Tensor) -> Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &x.zeros_like()?)
}
