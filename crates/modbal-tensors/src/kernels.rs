//! CPU kernels behind the fused training ops of [`crate::ops`]: convolution forward and both
//! backward passes as im2col / col2im + `gemm` calls, batch-norm statistics and backward sums,
//! per-channel sums and the global average pool.
//!
//! # Convolution layout
//! Samples are processed in groups of `nb` (so that a group has at least [`MIN_COLS`] output
//! positions). For a group, im2col writes the "K-major" matrix `C [K, nb·Ho·Wo]`
//! (`K = C_in·kh·kw`, row `(c, ky, kx)`, column `(sample, oy, ox)`); each row is a shifted,
//! strided copy of one input plane, built with contiguous copies when the stride is 1. Then
//!
//! * forward: `Y_g [O, nb·HW] = W [O, K] · C` (written straight into the `[B, O, Ho, Wo]` output
//!   when `nb = 1`, else scattered from a scratch buffer),
//! * input gradient: `G_C [K, nb·HW] = Wᵀ · G_Y`, then col2im adds each row back into its plane,
//! * weight gradient: `G_W [O, K] += G_Y · Cᵀ`, accumulated over groups in a fixed number of
//!   partial sums (the result does not depend on the thread count).
//!
//! A 1×1 convolution with stride 1 and no padding needs no im2col (`C` is the input itself).
//! Groups run in parallel (single-threaded gemm calls, one scratch buffer per task) when there
//! are enough of them, else one after the other with the gemm crate's own parallelism.

use crate::window::Window;
use gemm::Parallelism;
use rayon::prelude::*;

/// Defines `fn name<T: Float>(args) -> ret` whose body is compiled three times: for AVX-512
/// (`x86-64-v4`), for AVX2 + FMA (`x86-64-v3`) and for the build's baseline (SSE2 on x86-64),
/// and picks the best one the running CPU has (`is_x86_feature_detected!`, cached by std).
/// The release build targets the baseline so that the binaries run on any x86-64; without
/// this, the element-wise loops below compile to SSE2 code (scalar for the f64 reductions).
/// Use it for the sequential inner loop of a kernel (one plane, one chunk): closures handed to
/// rayon are separate functions and would not inherit the features.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$T: Float>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4<$T: Float>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3<$T: Float>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features v4 is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features v3 is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Element types of the kernels (f32, f64).
pub(crate) trait Float:
    candle_core::WithDType
    + Send
    + Sync
    + Copy
    + PartialOrd
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Sub<Output = Self>
    + 'static
{
}
impl Float for f32 {}
impl Float for f64 {}

/// Minimum number of output columns of one group's matrix product.
pub(crate) const MIN_COLS: usize = 256;
/// Number of partial sums of the weight gradient (fixed: results independent of threads).
const WGRAD_PARTS: usize = 8;

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub ho: usize,
    pub wo: usize,
    pub win: Window,
}

impl ConvShape {
    fn k(&self) -> usize {
        self.c * self.win.kh * self.win.kw
    }
    fn hw(&self) -> usize {
        self.ho * self.wo
    }
    fn identity(&self) -> bool {
        let w = &self.win;
        w.kh == 1 && w.kw == 1 && w.sh == 1 && w.sw == 1 && w.ph == 0 && w.pw == 0
    }
    /// Samples per group.
    fn nb(&self) -> usize {
        MIN_COLS.div_ceil(self.hw().max(1)).clamp(1, self.b.max(1))
    }
    fn groups(&self) -> usize {
        self.b.div_ceil(self.nb())
    }
    /// `(first sample, samples)` of group `g`.
    fn group(&self, g: usize) -> (usize, usize) {
        let nb = self.nb();
        (g * nb, nb.min(self.b - g * nb))
    }
    /// Parallel over groups (single-threaded gemm calls; `0`) or not (each product split over
    /// the returned number of threads).
    fn plan(&self, tasks: usize) -> (bool, usize) {
        let threads = rayon::current_num_threads();
        if threads <= 1 {
            (false, 1)
        } else if tasks >= 2 * threads {
            (true, 1)
        } else {
            (false, threads)
        }
    }
}

/// Range of output columns `ox` whose input column `ox·s + off` lies in `0..w`.
#[inline]
fn valid_range(wo: usize, w: usize, s: usize, off: isize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let end = w as isize - off; // ox·s < end
    let hi = if end <= 0 { 0 } else { (end + s - 1) / s };
    let lo = (lo as usize).min(wo);
    let hi = (hi as usize).clamp(lo, wo);
    (lo, hi)
}

/// im2col of samples `b0..b0+nbg` into `dst [K, nbg·HW]`.
fn im2col_group<T: Float>(x: &[T], s: &ConvShape, b0: usize, nbg: usize, dst: &mut [T]) {
    let (hw, win, zero) = (s.hw(), &s.win, T::from_f64(0.0));
    let ld = nbg * hw;
    for j in 0..nbg {
        let xb = &x[(b0 + j) * s.c * s.h * s.w..][..s.c * s.h * s.w];
        for ci in 0..s.c {
            let plane = &xb[ci * s.h * s.w..][..s.h * s.w];
            for ky in 0..win.kh {
                for kx in 0..win.kw {
                    let row = (ci * win.kh + ky) * win.kw + kx;
                    let d = &mut dst[row * ld + j * hw..][..hw];
                    let off = (kx * win.dw) as isize - win.pw as isize;
                    let (lo, hi) = valid_range(s.wo, s.w, win.sw, off);
                    if win.sw == 1 && win.sh == 1 && s.wo == s.w && lo < hi {
                        // Same-size output ("same" padding, stride 1): the valid rows of this
                        // tap are ONE contiguous shifted copy of the plane (destination and
                        // source advance by the same `w` per row); the cells that wrapped around
                        // a row end are then reset to the zero padding. For narrow planes this
                        // replaces one short copy per output row.
                        let (oy0, oy1) =
                            valid_range(s.ho, s.h, 1, (ky * win.dh) as isize - win.ph as isize);
                        let w = s.w;
                        if oy0 < oy1 {
                            let iy0 =
                                (oy0 as isize + (ky * win.dh) as isize - win.ph as isize) as usize;
                            let (da, db) = (oy0 * w + lo, (oy1 - 1) * w + hi);
                            let sa = (iy0 * w + lo) as isize + off;
                            d[da..db].copy_from_slice(&plane[sa as usize..sa as usize + (db - da)]);
                        }
                        for v in &mut d[..oy0 * w] {
                            *v = zero;
                        }
                        for v in &mut d[oy1 * w..] {
                            *v = zero;
                        }
                        for drow in d[oy0 * w..oy1 * w].chunks_exact_mut(w) {
                            for v in &mut drow[..lo] {
                                *v = zero;
                            }
                            for v in &mut drow[hi..] {
                                *v = zero;
                            }
                        }
                        continue;
                    }
                    for oy in 0..s.ho {
                        let drow = &mut d[oy * s.wo..][..s.wo];
                        let iy = (oy * win.sh + ky * win.dh) as isize - win.ph as isize;
                        if iy < 0 || iy as usize >= s.h {
                            drow.fill(zero);
                            continue;
                        }
                        let src = &plane[iy as usize * s.w..][..s.w];
                        // the borders are 0-2 cells wide: no memset call for them
                        for v in &mut drow[..lo] {
                            *v = zero;
                        }
                        for v in &mut drow[hi..] {
                            *v = zero;
                        }
                        if win.sw == 1 {
                            let a = (lo as isize + off) as usize;
                            drow[lo..hi].copy_from_slice(&src[a..a + (hi - lo)]);
                        } else {
                            for (ox, v) in drow[lo..hi].iter_mut().enumerate() {
                                *v = src[(((ox + lo) * win.sw) as isize + off) as usize];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds `cols [K, nbg·HW]` back into the planes of `gx` (the `nbg` samples of the group,
/// `[nbg, C, H, W]`).
fn col2im_group<T: Float>(cols: &[T], s: &ConvShape, nbg: usize, gx: &mut [T]) {
    let (hw, win) = (s.hw(), &s.win);
    let ld = nbg * hw;
    for j in 0..nbg {
        let gb = &mut gx[j * s.c * s.h * s.w..][..s.c * s.h * s.w];
        for ci in 0..s.c {
            let plane = &mut gb[ci * s.h * s.w..][..s.h * s.w];
            for ky in 0..win.kh {
                for kx in 0..win.kw {
                    let row = (ci * win.kh + ky) * win.kw + kx;
                    let src = &cols[row * ld + j * hw..][..hw];
                    let off = (kx * win.dw) as isize - win.pw as isize;
                    let (lo, hi) = valid_range(s.wo, s.w, win.sw, off);
                    for oy in 0..s.ho {
                        let iy = (oy * win.sh + ky * win.dh) as isize - win.ph as isize;
                        if iy < 0 || iy as usize >= s.h {
                            continue;
                        }
                        let srow = &src[oy * s.wo..][..s.wo];
                        let drow = &mut plane[iy as usize * s.w..][..s.w];
                        if win.sw == 1 {
                            let a = (lo as isize + off) as usize;
                            for (d, &v) in drow[a..a + (hi - lo)].iter_mut().zip(&srow[lo..hi]) {
                                *d += v;
                            }
                        } else {
                            for ox in lo..hi {
                                drow[((ox * win.sw) as isize + off) as usize] += srow[ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

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
}

/// One product `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`: pointers (as addresses, so that the
/// tasks of a split product can share it) and (column, row) strides; dst has column stride 1.
#[derive(Clone, Copy)]
struct Prod {
    m: usize,
    n: usize,
    k: usize,
    dst: usize,
    dst_rs: usize,
    accumulate: bool,
    lhs: (usize, usize, usize),
    rhs: (usize, usize, usize),
}

impl Prod {
    /// Columns `a..b` of the output (element offsets scaled by `size_of::<T>()`).
    fn cols(mut self, a: usize, b: usize, elem: usize) -> Self {
        self.n = b - a;
        self.dst += a * elem;
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
                1,
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

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]` with explicit (column, row) strides, computed as
/// `par` says (blocks of a multiple of 16 rows or columns, the micro-kernel's width).
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn mm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
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
        dst: dst as usize,
        dst_rs,
        accumulate,
        lhs: (lhs as usize, lhs_cs, lhs_rs),
        rhs: (rhs as usize, rhs_cs, rhs_rs),
    };
    let (threads, along_n) = match par {
        Par::One => (1, true),
        Par::SplitN(t) => (t, true),
        Par::SplitM(t) => (t, false),
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

/// Copies the `[nbg, O, HW]` slab `src` into `dst [O, nbg·HW]` (or back with `to_nchw`).
fn regroup<T: Float>(src: &[T], dst: &mut [T], o: usize, hw: usize, nbg: usize, to_nchw: bool) {
    let ld = nbg * hw;
    for j in 0..nbg {
        for oi in 0..o {
            let a = (j * o + oi) * hw;
            let g = oi * ld + j * hw;
            if to_nchw {
                dst[a..a + hw].copy_from_slice(&src[g..g + hw]);
            } else {
                dst[g..g + hw].copy_from_slice(&src[a..a + hw]);
            }
        }
    }
}

/// Runs `f(group, chunk of out)` over the groups, in parallel with a per-task scratch buffer
/// or one after the other.
fn for_groups<T: Float, F>(out: &mut [T], per_group: usize, parallel: bool, scratch: usize, f: F)
where
    F: Fn(usize, &mut [T], &mut Vec<T>) + Sync + Send,
{
    let zero = T::from_f64(0.0);
    if parallel {
        out.par_chunks_mut(per_group)
            .enumerate()
            .for_each_init(|| vec![zero; scratch], |buf, (g, chunk)| f(g, chunk, buf));
    } else {
        let mut buf = vec![zero; scratch];
        for (g, chunk) in out.chunks_mut(per_group).enumerate() {
            f(g, chunk, &mut buf);
        }
    }
}

/// Convolution forward: `x [B, C, H, W]`, `w [O, K]`, optional bias `[O]` → `[B, O, Ho, Wo]`.
pub(crate) fn conv_fwd<T: Float>(x: &[T], wt: &[T], bias: Option<&[T]>, s: &ConvShape) -> Vec<T> {
    let (k, hw, o, nb) = (s.k(), s.hw(), s.o, s.nb());
    let mut y = vec![T::from_f64(0.0); s.b * o * hw];
    if y.is_empty() {
        return y;
    }
    let (parallel, par) = s.plan(s.groups());
    let direct = s.identity() && nb == 1;
    let scratch = (if direct { 0 } else { k * nb * hw }) + (if nb > 1 { o * nb * hw } else { 0 });
    for_groups(&mut y, nb * o * hw, parallel, scratch, |g, yg, buf| {
        let (b0, nbg) = s.group(g);
        let ld = nbg * hw;
        let (cols_buf, out_buf) = buf.split_at_mut(if direct { 0 } else { k * nb * hw });
        let cols: &[T] = if direct {
            &x[b0 * s.c * s.h * s.w..][..k * hw]
        } else {
            im2col_group(x, s, b0, nbg, &mut cols_buf[..k * ld]);
            &cols_buf[..k * ld]
        };
        if nbg == 1 {
            if let Some(bv) = bias {
                for (oi, row) in yg.chunks_mut(hw).enumerate() {
                    row.fill(bv[oi]);
                }
            }
            // SAFETY: yg is [O, HW], wt [O, K], cols [K, HW]; all in bounds.
            unsafe {
                mm(
                    o,
                    hw,
                    k,
                    yg.as_mut_ptr(),
                    hw,
                    bias.is_some(),
                    wt.as_ptr(),
                    1,
                    k,
                    cols.as_ptr(),
                    1,
                    ld,
                    Par::SplitN(par),
                )
            };
        } else {
            let ob = &mut out_buf[..o * ld];
            // SAFETY: ob is [O, ld], wt [O, K], cols [K, ld].
            unsafe {
                mm(
                    o,
                    ld,
                    k,
                    ob.as_mut_ptr(),
                    ld,
                    false,
                    wt.as_ptr(),
                    1,
                    k,
                    cols.as_ptr(),
                    1,
                    ld,
                    Par::SplitN(par),
                )
            };
            regroup(ob, yg, o, hw, nbg, true);
            if let Some(bv) = bias {
                for (r, row) in yg.chunks_mut(hw).enumerate() {
                    let v = bv[r % o];
                    for e in row {
                        *e += v;
                    }
                }
            }
        }
    });
    y
}

/// Input gradient of the convolution: `gy [B, O, Ho, Wo]`, `w [O, K]` → `[B, C, H, W]`.
pub(crate) fn conv_bwd_input<T: Float>(gy: &[T], wt: &[T], s: &ConvShape) -> Vec<T> {
    let (k, hw, o, nb) = (s.k(), s.hw(), s.o, s.nb());
    let plane = s.c * s.h * s.w;
    let mut gx = vec![T::from_f64(0.0); s.b * plane];
    if gx.is_empty() || hw == 0 {
        return gx;
    }
    let (parallel, par) = s.plan(s.groups());
    let direct = s.identity() && nb == 1;
    let scratch = (if direct { 0 } else { k * nb * hw }) + (if nb > 1 { o * nb * hw } else { 0 });
    for_groups(&mut gx, nb * plane, parallel, scratch, |g, gxg, buf| {
        let (b0, nbg) = s.group(g);
        let ld = nbg * hw;
        let (cols_buf, gy_buf) = buf.split_at_mut(if direct { 0 } else { k * nb * hw });
        let gyg: &[T] = if nbg == 1 {
            &gy[b0 * o * hw..][..o * hw]
        } else {
            regroup(
                &gy[b0 * o * hw..][..nbg * o * hw],
                &mut gy_buf[..o * ld],
                o,
                hw,
                nbg,
                false,
            );
            &gy_buf[..o * ld]
        };
        let (dst, accumulate) = if direct {
            (&mut gxg[..], false)
        } else {
            (&mut cols_buf[..k * ld], false)
        };
        // SAFETY: dst is [K, ld]; Wᵀ is read from wt [O, K] with column stride K; gyg is [O, ld].
        unsafe {
            mm(
                k,
                ld,
                o,
                dst.as_mut_ptr(),
                ld,
                accumulate,
                wt.as_ptr(),
                k,
                1,
                gyg.as_ptr(),
                1,
                ld,
                Par::SplitN(par),
            )
        };
        if !direct {
            col2im_group(&cols_buf[..k * ld], s, nbg, gxg);
        }
    });
    gx
}

/// Weight gradient of the convolution: `x [B, C, H, W]`, `gy [B, O, Ho, Wo]` → `[O, K]`.
///
/// Per group, `G_Wᵀ [K, O] += C [K, ld] · G_Yᵀ [ld, O]` with `G_Y` transposed into a scratch
/// buffer first: both factors of `G_Y · Cᵀ` have the summed (spatial) index contiguous, a
/// layout for which the gemm crate runs several times slower than for this one.
pub(crate) fn conv_bwd_weight<T: Float>(x: &[T], gy: &[T], s: &ConvShape) -> Vec<T> {
    let (k, hw, o, nb) = (s.k(), s.hw(), s.o, s.nb());
    let zero = T::from_f64(0.0);
    let groups = s.groups();
    let parts = groups.clamp(1, WGRAD_PARTS);
    if hw == 0 || s.b == 0 {
        return vec![zero; o * k];
    }
    let direct = s.identity() && nb == 1;
    let (parallel, par) = s.plan(parts);
    let per_part = groups.div_ceil(parts);
    let cols_len = if direct { 0 } else { k * nb * hw };
    let scratch = cols_len + o * nb * hw;
    let mut acc = vec![zero; parts * o * k];
    for_groups(&mut acc, o * k, parallel, scratch, |p, accp, buf| {
        for g in p * per_part..((p + 1) * per_part).min(groups) {
            let (b0, nbg) = s.group(g);
            let ld = nbg * hw;
            let (cols_buf, gyt) = buf.split_at_mut(cols_len);
            let cols: &[T] = if direct {
                &x[b0 * s.c * s.h * s.w..][..k * hw]
            } else {
                im2col_group(x, s, b0, nbg, &mut cols_buf[..k * ld]);
                &cols_buf[..k * ld]
            };
            // G_Yᵀ [ld, O]: row (j, p) holds gy[b0 + j, :, p].
            let gyt = &mut gyt[..ld * o];
            let src = &gy[b0 * o * hw..][..nbg * o * hw];
            for j in 0..nbg {
                for oi in 0..o {
                    let srow = &src[(j * o + oi) * hw..][..hw];
                    for (pi, &v) in srow.iter().enumerate() {
                        gyt[(j * hw + pi) * o + oi] = v;
                    }
                }
            }
            // SAFETY: accp is [K, O]; cols [K, ld]; gyt [ld, O].
            unsafe {
                mm(
                    k,
                    o,
                    ld,
                    accp.as_mut_ptr(),
                    o,
                    true,
                    cols.as_ptr(),
                    1,
                    ld,
                    gyt.as_ptr(),
                    1,
                    o,
                    Par::SplitM(par),
                )
            };
        }
    });
    let (first, rest) = acc.split_at_mut(o * k);
    for part in rest.chunks(o * k) {
        for (a, &v) in first.iter_mut().zip(part) {
            *a += v;
        }
    }
    // [K, O] → [O, K].
    let mut out = vec![zero; o * k];
    transpose_into(first, k, o, &mut out);
    out
}

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]` (row-major), in 32 × 32 tiles so that the
/// strided side stays in cache (an element-by-element transpose of a 4608 × 512 weight
/// gradient misses the cache on almost every write); tile rows in parallel.
pub(crate) fn transpose_into<T: Float>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 32;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    // Parallel over bands of TILE destination rows (= source columns): disjoint writes.
    dst[..rows * cols]
        .par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, d)| {
            let c0 = band * TILE;
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
        });
}

/// Number of independent f64 accumulators of the reductions below: the sums of a plane are
/// split over `LANES` partial sums (element `i` into lane `i % LANES`), which the compiler keeps
/// in vector registers; a single running sum would be bound by the latency of one addition per
/// element. The lanes are added up in a fixed order, so results do not depend on threads.
const LANES: usize = 16;

/// Sum of the lanes in a fixed pairwise order.
#[inline(always)]
fn fold_lanes(acc: &[f64; LANES]) -> f64 {
    let mut a = *acc;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            a[i] += a[i + n];
        }
    }
    a[0]
}

/// `Σ x` in f64 lanes.
#[inline(always)]
fn lane_sum<T: Float>(x: &[T], acc: &mut [f64; LANES]) {
    let mut it = x.chunks_exact(LANES);
    for ch in &mut it {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v.to_f64();
        }
    }
    for (a, v) in acc.iter_mut().zip(it.remainder()) {
        *a += v.to_f64();
    }
}

/// `Σ (x − m)²` in f64 lanes.
#[inline(always)]
fn lane_sq_dev<T: Float>(x: &[T], m: f64, acc: &mut [f64; LANES]) {
    let mut it = x.chunks_exact(LANES);
    for ch in &mut it {
        for (a, v) in acc.iter_mut().zip(ch) {
            let d = v.to_f64() - m;
            *a += d * d;
        }
    }
    for (a, v) in acc.iter_mut().zip(it.remainder()) {
        let d = v.to_f64() - m;
        *a += d * d;
    }
}

/// `(Σ g, Σ g·(x − m))` in f64 lanes, with `g = gy·[y > 0]` when `y` is given.
#[inline(always)]
fn lane_bn_sums<T: Float>(
    x: &[T],
    gy: &[T],
    y: Option<&[T]>,
    m: f64,
    sg: &mut [f64; LANES],
    sgx: &mut [f64; LANES],
) {
    let zero = T::from_f64(0.0);
    let n = x.len();
    let full = n - n % LANES;
    match y {
        Some(y) => {
            let y = &y[..n];
            for i in (0..full).step_by(LANES) {
                let (xc, gc, yc) = (&x[i..i + LANES], &gy[i..i + LANES], &y[i..i + LANES]);
                for l in 0..LANES {
                    // branch-free mask: the ReLU pattern is unpredictable
                    let g = if yc[l] > zero { gc[l].to_f64() } else { 0.0 };
                    sg[l] += g;
                    sgx[l] += g * (xc[l].to_f64() - m);
                }
            }
            for i in full..n {
                let g = if y[i] > zero { gy[i].to_f64() } else { 0.0 };
                sg[i - full] += g;
                sgx[i - full] += g * (x[i].to_f64() - m);
            }
        }
        None => {
            for i in (0..full).step_by(LANES) {
                let (xc, gc) = (&x[i..i + LANES], &gy[i..i + LANES]);
                for l in 0..LANES {
                    let g = gc[l].to_f64();
                    sg[l] += g;
                    sgx[l] += g * (xc[l].to_f64() - m);
                }
            }
            for i in full..n {
                let g = gy[i].to_f64();
                sg[i - full] += g;
                sgx[i - full] += g * (x[i].to_f64() - m);
            }
        }
    }
}

/// Per-channel sums of `x [B, C, HW]` (accumulated in f64).
pub(crate) fn channel_sums<T: Float>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ci| channel_sum(x, b, c, hw, ci))
        .collect()
}

simd_fn! {
    /// `Σ x[:, ci, :]` of `x [B, C, HW]`.
    fn channel_sum<T>(x: &[T], b: usize, c: usize, hw: usize, ci: usize) -> f64 {
        let mut acc = [0.0; LANES];
        for bi in 0..b {
            lane_sum(&x[(bi * c + ci) * hw..][..hw], &mut acc);
        }
        fold_lanes(&acc)
    }
}

simd_fn! {
    /// Mean and biased variance of channel `ci` of `x [B, C, HW]` (two passes).
    fn channel_stat<T>(x: &[T], b: usize, c: usize, hw: usize, ci: usize) -> (f64, f64) {
        let n = (b * hw) as f64;
        let mut acc = [0.0; LANES];
        for bi in 0..b {
            lane_sum(&x[(bi * c + ci) * hw..][..hw], &mut acc);
        }
        let mean = fold_lanes(&acc) / n;
        let mut q = [0.0; LANES];
        for bi in 0..b {
            lane_sq_dev(&x[(bi * c + ci) * hw..][..hw], mean, &mut q);
        }
        (mean, fold_lanes(&q) / n)
    }
}

/// [`channel_sums`] in the element type.
pub(crate) fn channel_sums_as<T: Float>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<T> {
    channel_sums(x, b, c, hw)
        .into_iter()
        .map(T::from_f64)
        .collect()
}

/// Per-channel mean and biased variance of `x [B, C, HW]` (two passes, f64).
pub(crate) fn channel_stats<T: Float>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ci| channel_stat(x, b, c, hw, ci))
        .collect()
}

/// `y = x·a_c + s_c` per channel (then `max(y, 0)` with `relu`), `x [B, C, HW]`.
pub(crate) fn channel_affine<T: Float>(
    x: &[T],
    c: usize,
    hw: usize,
    a: &[T],
    s: &[T],
    relu: bool,
) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; x.len()];
    if hw == 0 {
        return y;
    }
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| affine_plane(yp, xp, a[p % c], s[p % c], relu));
    y
}

simd_fn! {
    /// `y = x·a + s` (then `max(y, 0)` with `relu`) over one plane.
    fn affine_plane<T>(yp: &mut [T], xp: &[T], ac: T, sc: T, relu: bool) {
        let zero = T::from_f64(0.0);
        if relu {
            for (o, &v) in yp.iter_mut().zip(xp) {
                let r = v * ac + sc;
                *o = if r > zero { r } else { zero };
            }
        } else {
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * ac + sc;
            }
        }
    }
}

/// Batch-norm backward sums per channel: `(Σ g, Σ g·x̂)` with `x̂ = (x − mean)·invstd` and
/// `g = gy` (or `gy·[y > 0]` when `y` is the ReLU output).
pub(crate) fn bn_bwd_sums<T: Float>(
    x: &[T],
    gy: &[T],
    y: Option<&[T]>,
    dims: (usize, usize, usize),
    stats: &[(f64, f64)],
) -> Vec<(f64, f64)> {
    (0..dims.1)
        .into_par_iter()
        .map(|ci| bn_channel_sums(x, gy, y, dims, ci, stats[ci]))
        .collect()
}

simd_fn! {
    /// [`bn_bwd_sums`] of channel `ci`.
    fn bn_channel_sums<T>(
        x: &[T],
        gy: &[T],
        y: Option<&[T]>,
        dims: (usize, usize, usize),
        ci: usize,
        stat: (f64, f64),
    ) -> (f64, f64) {
        let (b, c, hw) = dims;
        let (mean, invstd) = stat;
        let (mut sg, mut sgx) = ([0.0; LANES], [0.0; LANES]);
        for bi in 0..b {
            let o = (bi * c + ci) * hw;
            let yp = y.map(|y| &y[o..o + hw]);
            lane_bn_sums(&x[o..o + hw], &gy[o..o + hw], yp, mean, &mut sg, &mut sgx);
        }
        (fold_lanes(&sg), fold_lanes(&sgx) * invstd)
    }
}

/// Batch-norm input gradient: `gx = w·invstd·(g − Σg/N − x̂·Σg·x̂/N)` per channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_bwd_input<T: Float>(
    x: &[T],
    gy: &[T],
    y: Option<&[T]>,
    dims: (usize, usize, usize),
    stats: &[(f64, f64)],
    weight: &[T],
    sums: &[(f64, f64)],
) -> Vec<T> {
    let (b, c, hw) = dims;
    let zero = T::from_f64(0.0);
    let n = (b * hw) as f64;
    let mut gx = vec![zero; x.len()];
    if hw == 0 {
        return gx;
    }
    gx.par_chunks_mut(hw).enumerate().for_each(|(p, gp)| {
        let ci = p % c;
        let (mean, invstd) = stats[ci];
        let (sg, sgx) = sums[ci];
        // gx = k·g − k·Σg/N − k·x̂·Σgx̂/N with x̂ = (x − mean)·invstd:
        //    = k·g + (x·u + v),  u = −k·invstd·Σgx̂/N,  v = −k·Σg/N + k·mean·invstd·Σgx̂/N.
        let kk = weight[ci].to_f64() * invstd;
        let u = -kk * invstd * sgx / n;
        let v = -kk * sg / n - mean * u;
        let (kt, ut, vt) = (T::from_f64(kk), T::from_f64(u), T::from_f64(v));
        let o = p * hw;
        let yp = y.map(|y| &y[o..o + hw]);
        bn_input_plane(gp, &x[o..o + hw], &gy[o..o + hw], yp, (kt, ut, vt));
    });
    gx
}

simd_fn! {
    /// `gx = k·g + x·u + v` over one plane, `g = gy` or `gy·[y > 0]`.
    fn bn_input_plane<T>(gp: &mut [T], xp: &[T], gyp: &[T], y: Option<&[T]>, kuv: (T, T, T)) {
        let (kt, ut, vt) = kuv;
        let zero = T::from_f64(0.0);
        match y {
            Some(y) => {
                for (((d, &xv), &gv), &yv) in gp.iter_mut().zip(xp).zip(gyp).zip(y) {
                    let g = if yv > zero { gv } else { zero };
                    *d = kt * g + xv * ut + vt;
                }
            }
            None => {
                for ((d, &xv), &gv) in gp.iter_mut().zip(xp).zip(gyp) {
                    *d = kt * gv + xv * ut + vt;
                }
            }
        }
    }
}

/// `max(a + b, 0)` element-wise.
pub(crate) fn add_relu_fwd<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; a.len()];
    y.par_chunks_mut(1 << 14)
        .zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14)))
        .for_each(|(yc, (ac, bc))| add_relu_chunk(yc, ac, bc));
    y
}

simd_fn! {
    /// `max(a + b, 0)` over one chunk.
    fn add_relu_chunk<T>(yc: &mut [T], ac: &[T], bc: &[T]) {
        let zero = T::from_f64(0.0);
        for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
            let r = u + v;
            *o = if r > zero { r } else { zero };
        }
    }
}

/// `y = max(y, 0)` in place.
pub(crate) fn relu_in_place<T: Float>(y: &mut [T]) {
    y.par_chunks_mut(1 << 14).for_each(relu_chunk);
}

simd_fn! {
    /// `max(y, 0)` over one chunk, in place (NaN stays NaN, as PyTorch's ReLU).
    fn relu_chunk<T>(y: &mut [T]) {
        let zero = T::from_f64(0.0);
        for v in y.iter_mut() {
            // `v < 0` is false for NaN: NaN propagates
            *v = if *v < zero { zero } else { *v };
        }
    }
}

/// `g·[y > 0]` element-wise (ReLU backward from the output, as PyTorch).
pub(crate) fn relu_mask<T: Float>(g: &[T], y: &[T]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut out = vec![zero; g.len()];
    out.par_chunks_mut(1 << 14)
        .zip(g.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
        .for_each(|(oc, (gc, yc))| relu_mask_chunk(oc, gc, yc));
    out
}

simd_fn! {
    /// `g·[y > 0]` over one chunk.
    fn relu_mask_chunk<T>(oc: &mut [T], gc: &[T], yc: &[T]) {
        let zero = T::from_f64(0.0);
        for ((o, &gv), &yv) in oc.iter_mut().zip(gc).zip(yc) {
            *o = if yv > zero { gv } else { zero };
        }
    }
}

simd_fn! {
    /// Max-pooling of one `[h, w]` plane with the 2×2 / stride-2 window into `o`, `a`
    /// (`[ho, wo]`, arg-max as flat index into the plane), branch-free, with the scan order of
    /// the general loop (row-major, first maximum wins, NaN wins).
    pub(crate) fn max_pool_2x2_plane<T>(plane: &[T], w: usize, o: &mut [T], a: &mut [u32], wo: usize) {
        // Selects and `pool_better`'s bitwise test: no branches, so that the compiler vectorises
        // the loop (the ReLU'd inputs make a branchy maximum mispredict constantly).
        let (w32, wo2) = (w as u32, 2 * wo);
        for (oy, (orow, arow)) in o.chunks_exact_mut(wo).zip(a.chunks_exact_mut(wo)).enumerate() {
            let r0 = &plane[2 * oy * w..][..wo2];
            let r1 = &plane[(2 * oy + 1) * w..][..wo2];
            let base = (2 * oy * w) as u32;
            for ox in 0..wo {
                let (p00, p01, p10, p11) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
                let i0 = base + 2 * ox as u32;
                let (mut bv, mut bi) = (p00, i0);
                let t = pool_better(p01, bv);
                bv = if t { p01 } else { bv };
                bi = if t { i0 + 1 } else { bi };
                let t = pool_better(p10, bv);
                bv = if t { p10 } else { bv };
                bi = if t { i0 + w32 } else { bi };
                let t = pool_better(p11, bv);
                bv = if t { p11 } else { bv };
                bi = if t { i0 + w32 + 1 } else { bi };
                orow[ox] = bv;
                arow[ox] = bi;
            }
        }
    }
}

/// Whether `v` replaces the running maximum `bv` of a pooling window: strictly greater (the
/// first maximum wins ties), or NaN over a non-NaN (NaN propagates, as PyTorch's max-pool).
/// Bitwise `|` / `&`, no short-circuit: branch-free.
#[allow(clippy::eq_op)]
#[inline(always)]
fn pool_better<T: Float>(v: T, bv: T) -> bool {
    (v > bv) | ((v != v) & (bv == bv))
}

/// Index range `lo..hi` of the window taps `k` whose input coordinate `o·s + k·d − p` lies in
/// `0..n` (`kn` taps).
#[inline(always)]
fn tap_range(o: usize, s: usize, d: usize, p: usize, n: usize, kn: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize; // coordinate of tap 0
    let d = d as isize;
    let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
    let hi = (n as isize - start + d - 1)
        .div_euclid(d)
        .clamp(0, kn as isize);
    (lo.min(kn as isize) as usize, hi.max(lo) as usize)
}

simd_fn! {
    /// Max-pooling of one `[h, w]` plane with any window (padding never wins, dilation) into
    /// `o`, `a` (`[ho, wo]`, arg-max as flat index into the plane): row-major scan, first maximum
    /// wins, NaN wins; the taps outside the input are skipped by range, not tested one by one.
    pub(crate) fn max_pool_plane<T>(plane: &[T], h: usize, w: usize, win: &Window, o: &mut [T], a: &mut [u32], wo: usize) {
        for (oy, (orow, arow)) in o.chunks_exact_mut(wo).zip(a.chunks_exact_mut(wo)).enumerate() {
            let (ky0, ky1) = tap_range(oy, win.sh, win.dh, win.ph, h, win.kh);
            let iy0 = oy * win.sh + ky0 * win.dh - win.ph;
            for (ox, (ov, av)) in orow.iter_mut().zip(arow.iter_mut()).enumerate() {
                let (kx0, kx1) = tap_range(ox, win.sw, win.dw, win.pw, w, win.kw);
                let ix0 = ox * win.sw + kx0 * win.dw - win.pw;
                let mut bi = iy0 * w + ix0;
                let mut bv = plane[bi];
                for ky in ky0..ky1 {
                    let row = (iy0 + (ky - ky0) * win.dh) * w;
                    for kx in kx0..kx1 {
                        let idx = row + ix0 + (kx - kx0) * win.dw;
                        let v = plane[idx];
                        let t = pool_better(v, bv);
                        bv = if t { v } else { bv };
                        bi = if t { idx } else { bi };
                    }
                }
                *ov = bv;
                *av = bi as u32;
            }
        }
    }
}

simd_fn! {
    /// Whether every value is finite: `x − x` is 0 exactly for finite `x` (NaN for ±∞ and NaN);
    /// the test is branch-free within chunks of 1024 so that it vectorises.
    #[allow(clippy::eq_op)]
    pub(crate) fn all_finite<T>(v: &[T]) -> bool {
        let zero = T::from_f64(0.0);
        v.chunks(1024).all(|c| c.iter().fold(true, |ok, &x| ok & ((x - x) == zero)))
    }
}

simd_fn! {
    /// SGD momentum buffer in place: `d = g (+ wd·p)`; `b ← d` on the first step, else
    /// `b ← μ·b + damp·d` (PyTorch's order of operations).
    pub(crate) fn sgd_momentum<T>(buf: &mut [T], g: &[T], p: &[T], m: T, damp: T, wd: Option<T>, first: bool) {
        match (wd, first) {
            (Some(w), true) => buf.iter_mut().zip(g).zip(p).for_each(|((b, &gv), &pv)| *b = gv + pv * w),
            (None, true) => buf.copy_from_slice(&g[..buf.len()]),
            (Some(w), false) => buf
                .iter_mut()
                .zip(g)
                .zip(p)
                .for_each(|((b, &gv), &pv)| *b = *b * m + (gv + pv * w) * damp),
            (None, false) => buf.iter_mut().zip(g).for_each(|(b, &gv)| *b = *b * m + gv * damp),
        }
    }
}

/// Which update direction [`sgd_step`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SgdDirection {
    /// `d = g (+ wd·p)` (no momentum buffer).
    Gradient,
    /// `d + μ·b` (Nesterov).
    Nesterov,
    /// `b` (heavy-ball momentum).
    Buffer,
}

simd_fn! {
    /// SGD parameter update in place: `p ← p − lr·u` with `u` as [`SgdDirection`] says.
    pub(crate) fn sgd_step<T>(p: &mut [T], g: &[T], buf: &[T], lr: T, m: T, wd: Option<T>, dir: SgdDirection) {
        let d = |gv: T, pv: T| match wd {
            Some(w) => gv + pv * w,
            None => gv,
        };
        match dir {
            SgdDirection::Gradient => p.iter_mut().zip(g).for_each(|(pv, &gv)| *pv -= d(gv, *pv) * lr),
            SgdDirection::Nesterov => p
                .iter_mut()
                .zip(g)
                .zip(buf)
                .for_each(|((pv, &gv), &bv)| *pv -= (d(gv, *pv) + bv * m) * lr),
            SgdDirection::Buffer => p.iter_mut().zip(buf).for_each(|(pv, &bv)| *pv -= bv * lr),
        }
    }
}

/// Mean of every `hw`-long plane.
pub(crate) fn plane_means<T: Float>(x: &[T], hw: usize) -> Vec<T> {
    x.par_chunks(hw)
        .map(|p| T::from_f64(channel_sum(p, 1, 1, p.len(), 0) / hw as f64))
        .collect()
}

/// Spreads `g[p]/hw` over plane `p` (backward of [`plane_means`]).
pub(crate) fn plane_spread<T: Float>(g: &[T], hw: usize) -> Vec<T> {
    let mut out = vec![T::from_f64(0.0); g.len() * hw];
    let inv = 1.0 / hw as f64;
    out.par_chunks_mut(hw)
        .zip(g.par_iter())
        .for_each(|(p, &v)| p.fill(T::from_f64(v.to_f64() * inv)));
    out
}

// ---------------------------------------------------------------------------------------------
// fully connected layer and softmax cross-entropy
// ---------------------------------------------------------------------------------------------

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
                y.as_mut_ptr(),
                o,
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
                gx.as_mut_ptr(),
                k,
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
                gw.as_mut_ptr(),
                k,
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

/// `(max, log Σ exp(z − max))` of one row, in f64.
fn row_lse<T: Float>(z: &[T]) -> (f64, f64) {
    let m = z
        .iter()
        .map(|v| v.to_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = z.iter().map(|v| (v.to_f64() - m).exp()).sum();
    (m, s.ln())
}

/// Mean over the rows of `z [n, c]` of `log Σ_j exp(z_ij) − z_{i, y_i}` (f64 accumulation).
pub(crate) fn softmax_ce_fwd<T: Float>(z: &[T], labels: &[usize], c: usize) -> f64 {
    let n = labels.len();
    let total: f64 = z
        .chunks_exact(c)
        .zip(labels)
        .map(|(row, &y)| {
            let (m, lse) = row_lse(row);
            m + lse - row[y].to_f64()
        })
        .sum();
    total / n as f64
}

/// Gradient of [`softmax_ce_fwd`] times `g`: `g·(softmax(z_i) − onehot(y_i))/n` → `[n, c]`.
pub(crate) fn softmax_ce_bwd<T: Float>(z: &[T], labels: &[usize], c: usize, g: f64) -> Vec<T> {
    let n = labels.len();
    let scale = g / n as f64;
    let mut out = vec![T::from_f64(0.0); z.len()];
    for ((orow, row), &y) in out.chunks_exact_mut(c).zip(z.chunks_exact(c)).zip(labels) {
        let (m, lse) = row_lse(row);
        for (j, (d, v)) in orow.iter_mut().zip(row).enumerate() {
            let p = (v.to_f64() - m - lse).exp();
            let t = if j == y { p - 1.0 } else { p };
            *d = T::from_f64(scale * t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    /// `all_finite` against `f64::is_finite` / `f32::is_finite` on every kind of value, at
    /// positions inside and across its 1024-value chunks.
    #[test]
    fn all_finite_agrees_with_is_finite() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for at in [0usize, 5, 1023, 1024, 2999] {
                let mut v = vec![1.5f64; 3000];
                v[at] = bad;
                assert!(!super::all_finite(&v), "{bad} at {at}");
                let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                assert!(!super::all_finite(&v32), "f32 {bad} at {at}");
            }
        }
        let ok = [
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            -1e300,
        ];
        assert!(ok.iter().all(|x| x.is_finite()) && super::all_finite(&ok));
        assert!(super::all_finite(&[f32::MAX, f32::MIN, 1e-45f32]));
        assert!(super::all_finite::<f64>(&[]));
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for wo in 0..6 {
            for w in 1..7 {
                for s in 1..4 {
                    for off in -4isize..5 {
                        let want: Vec<usize> = (0..wo)
                            .filter(|&ox| {
                                let ix = (ox * s) as isize + off;
                                ix >= 0 && (ix as usize) < w
                            })
                            .collect();
                        let (lo, hi) = valid_range(wo, w, s, off);
                        let got: Vec<usize> = (lo..hi).collect();
                        assert_eq!(got, want, "wo {wo} w {w} s {s} off {off}");
                    }
                }
            }
        }
    }
}
