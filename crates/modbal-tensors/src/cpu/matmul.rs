//! Matrix products of the kernels as direct `gemm` calls, split over threads by blocks of the
//! output ([`Par`], [`mm`]), and a cache-friendly tiled transpose ([`transpose_into`]).

use super::simd::Float;
use gemm::Parallelism;
use rayon::prelude::*;

/// How one matrix product uses the threads.
///
/// The gemm crate's own parallelism (`Parallelism::Rayon`) leaves one of two cores idle for
/// some of the convolution and linear-layer shapes (on the 2-core benchmark machine, the 64 ×
/// 392 × 288 forward product of conv4's second block took as long with two threads as with
/// one). Cutting the output into one block of columns (`SplitN`) or rows (`SplitM`) per thread,
/// each computed by a single-threaded gemm call, was up to 1.8× faster on such shapes and about
/// even elsewhere (`cargo run --release -p modbal-tensors --example gemm_split`); on the
/// `mlp-pair` step it took the median from 10.9 to 9.3 ms. Which side to cut is the caller's
/// choice: the forward and input-gradient products of a convolution along their columns, its
/// weight gradient along its rows, a linear layer's products along their wider side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Par {
    /// One single-threaded call.
    One,
    /// Column blocks, one per thread.
    SplitN(usize),
    /// Row blocks, one per thread.
    SplitM(usize),
    /// Blocks of the wider side (columns when `n ≥ m`), one per thread. A convolution's
    /// products take this: the input gradient `Wᵀ·G` of a 512-channel 4 × 4 layer (4608 × 256 ×
    /// 512) took 15.4 ms cut along its 256 columns and 7.2 ms along its 4608 rows at 2 threads,
    /// and the wider side was the faster one (or within 5 %) on every shape of the
    /// `gemm_split` example.
    Split(usize),
}

/// One product `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`: pointers (as addresses, so that the
/// tasks of a split product can share it) and (column, row) strides.
#[derive(Clone, Copy)]
struct Prod {
    m: usize,
    n: usize,
    k: usize,
    dst: usize,
    dst_cs: usize,
    dst_rs: usize,
    accumulate: bool,
    lhs: (usize, usize, usize),
    rhs: (usize, usize, usize),
}

impl Prod {
    /// Columns `a..b` of the output (element offsets scaled by `size_of::<T>()`).
    fn cols(mut self, a: usize, b: usize, elem: usize) -> Self {
        self.n = b - a;
        self.dst += a * self.dst_cs * elem;
        self.rhs.0 += a * self.rhs.1 * elem;
        self
    }
    /// Rows `a..b` of the output.
    fn rows(mut self, a: usize, b: usize, elem: usize) -> Self {
        self.m = b - a;
        self.dst += a * self.dst_rs * elem;
        self.lhs.0 += a * self.lhs.2 * elem;
        self
    }
    /// One single-threaded gemm call.
    ///
    /// # Safety
    /// The operands are in bounds for these strides and `dst` is disjoint from them and from
    /// every other task's block.
    unsafe fn run<T: Float>(self) {
        let one = T::from_f64(1.0);
        let alpha = if self.accumulate {
            one
        } else {
            T::from_f64(0.0)
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst as *mut T,
                self.dst_cs as isize,
                self.dst_rs as isize,
                self.accumulate,
                self.lhs.0 as *const T,
                self.lhs.1 as isize,
                self.lhs.2 as isize,
                self.rhs.0 as *const T,
                self.rhs.1 as isize,
                self.rhs.2 as isize,
                alpha,
                one,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]` with explicit (column, row) strides, `dst` given
/// as (pointer, column stride, row stride) (`(p, 1, n)`: row-major; `(p, m, 1)`: the product
/// written transposed, column-major, the gemm crate's own layout), computed as `par` says
/// (blocks of a multiple of 16 rows or columns, the micro-kernel's width).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn mm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut T, usize, usize),
    accumulate: bool,
    lhs: *const T,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const T,
    rhs_cs: usize,
    rhs_rs: usize,
    par: Par,
) {
    let prod = Prod {
        m,
        n,
        k,
        dst: dst.0 as usize,
        dst_cs: dst.1,
        dst_rs: dst.2,
        accumulate,
        lhs: (lhs as usize, lhs_cs, lhs_rs),
        rhs: (rhs as usize, rhs_cs, rhs_rs),
    };
    let (threads, along_n) = match par {
        Par::One => (1, true),
        Par::SplitN(t) => (t, true),
        Par::SplitM(t) => (t, false),
        Par::Split(t) => (t, n >= m),
    };
    let len = if along_n { n } else { m };
    let block = len.div_ceil(threads.max(1)).next_multiple_of(16);
    let parts = len.div_ceil(block.max(1));
    if parts <= 1 {
        // SAFETY: forwarded from the caller.
        unsafe { prod.run::<T>() };
        return;
    }
    let elem = std::mem::size_of::<T>();
    crate::threads::keep_warm();
    (0..parts).into_par_iter().for_each(|p| {
        let (a, b) = (p * block, ((p + 1) * block).min(len));
        let part = if along_n {
            prod.cols(a, b, elem)
        } else {
            prod.rows(a, b, elem)
        };
        // SAFETY: block p of the output (columns or rows a..b) is written by this task only;
        // the operands are the caller's, offset to the same block.
        unsafe { part.run::<T>() };
    });
}

/// Side of the square tiles of [`transpose_into`].
const TILE: usize = 32;

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]` (row-major), in 32 × 32 tiles so that the
/// strided side stays in cache (an element-by-element transpose of a 4608 × 512 weight
/// gradient misses the cache on almost every write); tile rows in parallel.
pub(crate) fn transpose_into<T: Float>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    // Parallel over bands of TILE destination rows (= source columns): disjoint writes.
    crate::threads::keep_warm();
    dst[..rows * cols]
        .par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, d)| transpose_band(src, rows, cols, band * TILE, d));
}

/// Destination rows `c0..c0 + d.len() / rows` (source columns) of the transpose, tile by tile.
#[inline]
fn transpose_band<T: Float>(src: &[T], rows: usize, cols: usize, c0: usize, d: &mut [T]) {
    let cw = TILE.min(cols - c0);
    for r0 in (0..rows).step_by(TILE) {
        let rh = TILE.min(rows - r0);
        for c in 0..cw {
            let drow = &mut d[c * rows + r0..][..rh];
            for (r, v) in drow.iter_mut().enumerate() {
                *v = src[(r0 + r) * cols + c0 + c];
            }
        }
    }
}
