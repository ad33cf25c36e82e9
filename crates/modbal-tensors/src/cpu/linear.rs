//! Fully connected layer kernels: the forward `x Wᵀ + b` (+ ReLU) as one gemm call onto the bias,
//! the input and weight gradients, and the bias gradient (column sums).

use super::matmul::{mm, Par};
use super::simd::Float;

/// Threads for an `m × n` product of `flops` multiply-adds: split along the wider side above a
/// size where threads pay off, one thread below.
fn dense_par(flops: usize, m: usize, n: usize) -> Par {
    let threads = rayon::current_num_threads();
    if threads > 1 && flops >= 1 << 17 {
        if n >= m {
            Par::SplitN(threads)
        } else {
            Par::SplitM(threads)
        }
    } else {
        Par::One
    }
}

/// `y [n, o] = x [n, k] · wᵀ + b` (`w [o, k]`, optional `b [o]`), then `max(y, 0)` with `relu`.
/// The bias is written first and the product accumulated onto it, the ReLU applied in place.
pub(crate) fn linear_fwd<T: Float>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    (n, k, o): (usize, usize, usize),
    relu: bool,
) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; n * o];
    if let Some(b) = b {
        for row in y.chunks_exact_mut(o) {
            row.copy_from_slice(b);
        }
    }
    if n > 0 && o > 0 {
        // SAFETY: x is [n, k] row-major (col stride 1, row stride k); wᵀ is read from w [o, k]
        // (element (kk, j) at j·k + kk); y is a fresh [n, o] buffer.
        unsafe {
            mm(
                n,
                o,
                k,
                (y.as_mut_ptr(), 1, o),
                b.is_some(),
                x.as_ptr(),
                1,
                k,
                w.as_ptr(),
                k,
                1,
                dense_par(n * k * o, n, o),
            );
        }
    }
    if relu {
        for v in y.iter_mut() {
            // NaN maps to 0, as candle's `relu`.
            *v = if *v > zero { *v } else { zero };
        }
    }
    y
}

/// Input gradient of a fully connected layer: `g [n, o] · w [o, k]` → `[n, k]`.
pub(crate) fn linear_bwd_input<T: Float>(
    g: &[T],
    w: &[T],
    (n, k, o): (usize, usize, usize),
) -> Vec<T> {
    let mut gx = vec![T::from_f64(0.0); n * k];
    if n > 0 && k > 0 {
        // SAFETY: g [n, o] and w [o, k] row-major, gx a fresh [n, k] buffer.
        unsafe {
            mm(
                n,
                k,
                o,
                (gx.as_mut_ptr(), 1, k),
                false,
                g.as_ptr(),
                1,
                o,
                w.as_ptr(),
                1,
                k,
                dense_par(n * k * o, n, k),
            );
        }
    }
    gx
}

/// Weight gradient of a fully connected layer: `gᵀ [o, n] · x [n, k]` → `[o, k]`.
pub(crate) fn linear_bwd_weight<T: Float>(
    g: &[T],
    x: &[T],
    (n, k, o): (usize, usize, usize),
) -> Vec<T> {
    let mut gw = vec![T::from_f64(0.0); o * k];
    if o > 0 && k > 0 {
        // SAFETY: gᵀ is read from g [n, o] (element (j, i) at i·o + j), x is [n, k] row-major,
        // gw a fresh [o, k] buffer.
        unsafe {
            mm(
                o,
                k,
                n,
                (gw.as_mut_ptr(), 1, k),
                false,
                g.as_ptr(),
                o,
                1,
                x.as_ptr(),
                1,
                k,
                dense_par(n * k * o, o, k),
            );
        }
    }
    gw
}

/// Column sums of `g [n, o]` → `[o]` (bias gradient), rows added in order.
pub(crate) fn col_sums<T: Float>(g: &[T], o: usize) -> Vec<T> {
    let mut s = vec![T::from_f64(0.0); o];
    if o > 0 {
        for row in g.chunks_exact(o) {
            for (d, &v) in s.iter_mut().zip(row) {
                *d += v;
            }
        }
    }
    s
}
