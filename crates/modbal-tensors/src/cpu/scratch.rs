//! Per-thread scratch buffers reused across calls (im2col matrices, transposed gradients,
//! partial sums), so that a training step does not allocate and zero-fill them afresh in every
//! convolution.
//!
//! Each thread keeps a few buffers; [`with_scratch`] lends one (grown, and zero-filled, only
//! when it is too short) and takes it back afterwards. A kernel called while its thread already
//! lends one (a nested call) gets another buffer of the same thread. The contents are whatever
//! an earlier call left there: callers write every element before they read it.

use super::simd::Float;
use std::cell::RefCell;

/// Buffers kept per thread (more are freed when returned).
const KEEP: usize = 4;

thread_local! {
    /// Free buffers of this thread, as `f64` words (aligned for `f32` and `f64` alike).
    static FREE: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with a scratch slice of `len` elements of this thread (contents unspecified).
pub(crate) fn with_scratch<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let size = std::mem::size_of::<T>();
    debug_assert!(size == 4 || size == 8, "scratch holds f32 or f64");
    let words = (len * size).div_ceil(8);
    // The largest free buffer (a short one is grown; growing copies nothing worth keeping).
    let mut buf = FREE
        .with(|f| {
            let mut f = f.borrow_mut();
            let best = (0..f.len()).max_by_key(|&i| f[i].len());
            best.map(|i| f.swap_remove(i))
        })
        .unwrap_or_default();
    if buf.len() < words {
        buf = vec![0.0; words];
    }
    // SAFETY: `buf` holds at least `len · size` initialised bytes, aligned to 8; every bit
    // pattern is a valid f32 / f64 (`T` is one of them, checked above); the slice lives only
    // for the call and `buf` is not touched meanwhile.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) };
    let r = f(slice);
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        f.push(buf);
        if f.len() > KEEP {
            // Drop the smallest.
            if let Some(i) = (0..f.len()).min_by_key(|&i| f[i].len()) {
                f.swap_remove(i);
            }
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::with_scratch;

    #[test]
    fn nested_calls_get_distinct_buffers_and_sizes() {
        with_scratch::<f32, _>(10, |a| {
            a.fill(1.0);
            with_scratch::<f64, _>(7, |b| {
                assert_eq!(b.len(), 7);
                b.fill(2.0);
            });
            assert!(
                a.iter().all(|&v| v == 1.0),
                "the nested call wrote into the outer buffer"
            );
        });
        // A later, larger request works and sees an initialised buffer.
        with_scratch::<f32, _>(1000, |a| {
            assert_eq!(a.len(), 1000);
            assert!(a.iter().all(|v| v.is_finite() || v.is_nan()));
        });
    }
}
