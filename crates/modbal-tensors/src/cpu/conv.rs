//! Convolution forward and both backward passes as im2col / col2im + `gemm` calls, or, for
//! 3 × 3 stride-1 layers chosen by [`ConvAlgorithm`], as Winograd F(2×2, 3×3)
//! (`cpu::winograd`).
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
//! Groups run in parallel (single-threaded gemm calls, each task on its thread's reused scratch
//! buffer, `cpu::scratch`) when there are enough of them, else one after the other, each
//! product cut over the threads along its wider side and im2col, col2im and the regrouping
//! copies split over the threads too.

use super::matmul::{mm, transpose_into, Par};
use super::scratch::with_scratch;
use super::simd::Float;
use super::winograd::{self, Wino};
use crate::ops::dispatch::{conv_algorithm, count_winograd, ConvAlgorithm};
use crate::window::Window;
use rayon::prelude::*;

/// Minimum number of output columns of one group's matrix product.
pub(crate) const MIN_COLS: usize = 256;
/// Fewest input and output channels, and smallest output height and width, for which
/// `ConvAlgorithm::Auto` takes Winograd (`cargo run --release -p modbal-tensors --example
/// conv_algorithms`: faster from 32 channels on 7 × 7 planes and larger, slower with 16 input
/// channels or on 3 × 3 and 4 × 4 planes, where the transforms and the kernel's transform cost
/// more than the products save).
const WINOGRAD_MIN_CHANNELS: usize = 32;
const WINOGRAD_MIN_PLANE: usize = 5;
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
    /// Whether the forward pass and both gradients run as Winograd F(2×2, 3×3) (see
    /// [`ConvAlgorithm`]): a 3 × 3 kernel, stride 1, dilation 1, and (`Auto`) at least
    /// [`WINOGRAD_MIN_CHANNELS`] channels on both sides and an output plane of at least
    /// [`WINOGRAD_MIN_PLANE`] on both axes.
    fn winograd(&self) -> bool {
        let w = &self.win;
        let eligible = (w.kh, w.kw, w.sh, w.sw, w.dh, w.dw) == (3, 3, 1, 1, 1, 1);
        eligible
            && match conv_algorithm() {
                ConvAlgorithm::Im2col => false,
                ConvAlgorithm::Winograd => true,
                ConvAlgorithm::Auto => {
                    self.c.min(self.o) >= WINOGRAD_MIN_CHANNELS
                        && self.ho.min(self.wo) >= WINOGRAD_MIN_PLANE
                }
            }
    }
    /// The forward convolution as `cpu::winograd` describes it.
    fn wino(&self) -> Wino {
        Wino {
            b: self.b,
            c: self.c,
            h: self.h,
            w: self.w,
            a: self.o,
            ho: self.ho,
            wo: self.wo,
            ph: self.win.ph as isize,
            pw: self.win.pw as isize,
        }
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

/// im2col of samples `b0..b0+nbg` into `dst [K, nbg·HW]`, split over `threads` by blocks of
/// input channels (each block's rows are contiguous in `dst`).
fn im2col<T: Float>(x: &[T], s: &ConvShape, b0: usize, nbg: usize, dst: &mut [T], threads: usize) {
    let rows = s.win.kh * s.win.kw * nbg * s.hw();
    if threads <= 1 || s.c < 2 {
        im2col_group(x, s, b0, nbg, 0, s.c, dst);
        return;
    }
    let cc = s.c.div_ceil(4 * threads);
    crate::threads::keep_warm();
    dst[..s.c * rows]
        .par_chunks_mut(cc * rows)
        .enumerate()
        .for_each(|(i, d)| im2col_group(x, s, b0, nbg, i * cc, ((i + 1) * cc).min(s.c), d));
}

/// Output widths up to which im2col goes element by element ([`im2col_narrow`]).
const NARROW: usize = 8;

/// One tap's im2col row of one sample for a narrow output (`wo ≤ NARROW`), element by element:
/// on 4 × 4 planes the copies and zero fills of the general path are library calls on a few
/// elements each, which cost more than the elements.
fn im2col_narrow<T: Float>(plane: &[T], s: &ConvShape, t: &Tap, d: &mut [T]) {
    let zero = T::from_f64(0.0);
    let (sh, sw) = (s.win.sh, s.win.sw);
    for (oy, drow) in d[..s.ho * s.wo].chunks_exact_mut(s.wo).enumerate() {
        let row_ok = oy >= t.oy0 && oy < t.oy1;
        let iy = (oy * sh) as isize + t.iy;
        for (ox, v) in drow.iter_mut().enumerate() {
            *v = if row_ok && ox >= t.lo && ox < t.hi {
                plane[iy as usize * s.w + ((ox * sw) as isize + t.ix) as usize]
            } else {
                zero
            };
        }
    }
}

/// im2col of input channels `c0..c1` of samples `b0..b0+nbg` into their rows of
/// `dst [K, nbg·HW]` (`dst` starts at the row of channel `c0`).
fn im2col_group<T: Float>(
    x: &[T],
    s: &ConvShape,
    b0: usize,
    nbg: usize,
    c0: usize,
    c1: usize,
    dst: &mut [T],
) {
    let (hw, win, zero) = (s.hw(), &s.win, T::from_f64(0.0));
    let ld = nbg * hw;
    let narrow = s.wo <= NARROW;
    let taps = if narrow { taps(s) } else { Vec::new() };
    for j in 0..nbg {
        let xb = &x[(b0 + j) * s.c * s.h * s.w..][..s.c * s.h * s.w];
        for ci in c0..c1 {
            let plane = &xb[ci * s.h * s.w..][..s.h * s.w];
            for ky in 0..win.kh {
                for kx in 0..win.kw {
                    let row = ((ci - c0) * win.kh + ky) * win.kw + kx;
                    let d = &mut dst[row * ld + j * hw..][..hw];
                    if narrow {
                        im2col_narrow(plane, s, &taps[ky * win.kw + kx], d);
                        continue;
                    }
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
                    // Output rows whose input row is outside the plane: two runs, zeroed at once.
                    let (oy0, oy1) =
                        valid_range(s.ho, s.h, win.sh, (ky * win.dh) as isize - win.ph as isize);
                    d[..oy0 * s.wo].fill(zero);
                    d[oy1 * s.wo..].fill(zero);
                    for oy in oy0..oy1 {
                        let drow = &mut d[oy * s.wo..][..s.wo];
                        let iy = oy * win.sh + ky * win.dh - win.ph;
                        let src = &plane[iy * s.w..][..s.w];
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
                        } else if lo < hi {
                            let a = ((lo * win.sw) as isize + off) as usize;
                            let taps = src[a..].iter().step_by(win.sw);
                            for (v, &u) in drow[lo..hi].iter_mut().zip(taps) {
                                *v = u;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One kernel tap `(ky, kx)` of a convolution: the output rows `oy0..oy1` and columns `lo..hi`
/// whose input cell lies inside the plane, and the input offsets `(oy·sh + iy, ox·sw + ix)`.
#[derive(Clone, Copy)]
struct Tap {
    oy0: usize,
    oy1: usize,
    lo: usize,
    hi: usize,
    iy: isize,
    ix: isize,
}

/// The taps of `s`'s window, row-major (`ky·kw + kx`), computed once per call.
fn taps(s: &ConvShape) -> Vec<Tap> {
    let win = &s.win;
    let mut out = Vec::with_capacity(win.kh * win.kw);
    for ky in 0..win.kh {
        let iy = (ky * win.dh) as isize - win.ph as isize;
        let (oy0, oy1) = valid_range(s.ho, s.h, win.sh, iy);
        for kx in 0..win.kw {
            let ix = (kx * win.dw) as isize - win.pw as isize;
            let (lo, hi) = valid_range(s.wo, s.w, win.sw, ix);
            out.push(Tap {
                oy0,
                oy1,
                lo,
                hi,
                iy,
                ix,
            });
        }
    }
    out
}

/// Adds `cols [K, nbg·HW]` back into the planes of `gx` (the `nbg` samples of the group,
/// `[nbg, C, H, W]`), planes split over `threads`.
fn col2im_group<T: Float>(cols: &[T], s: &ConvShape, nbg: usize, gx: &mut [T], threads: usize) {
    let hw_in = s.h * s.w;
    let planes = &mut gx[..nbg * s.c * hw_in];
    let taps = taps(s);
    if threads <= 1 {
        for (p, plane) in planes.chunks_mut(hw_in).enumerate() {
            col2im_plane(cols, s, &taps, nbg, p / s.c, p % s.c, plane);
        }
    } else {
        crate::threads::keep_warm();
        planes
            .par_chunks_mut(hw_in)
            .with_min_len(s.c.div_ceil(4 * threads).max(1))
            .enumerate()
            .for_each(|(p, plane)| col2im_plane(cols, s, &taps, nbg, p / s.c, p % s.c, plane));
    }
}

/// Adds the rows of input channel `ci` of sample `j` of `cols [K, nbg·HW]` into its plane.
fn col2im_plane<T: Float>(
    cols: &[T],
    s: &ConvShape,
    taps: &[Tap],
    nbg: usize,
    j: usize,
    ci: usize,
    plane: &mut [T],
) {
    let (hw, win) = (s.hw(), &s.win);
    let ld = nbg * hw;
    let (sh, sw) = (win.sh, win.sw);
    for (t, tap) in taps.iter().enumerate() {
        let row = ci * taps.len() + t;
        let src = &cols[row * ld + j * hw..][..hw];
        let n = tap.hi - tap.lo;
        for oy in tap.oy0..tap.oy1 {
            let iy = ((oy * sh) as isize + tap.iy) as usize;
            let srow = &src[oy * s.wo + tap.lo..][..n];
            let drow = &mut plane[iy * s.w..][..s.w];
            let a = ((tap.lo * sw) as isize + tap.ix) as usize;
            if sw == 1 {
                for (d, &v) in drow[a..a + n].iter_mut().zip(srow) {
                    *d += v;
                }
            } else {
                for (d, &v) in drow[a..].iter_mut().step_by(sw).zip(srow) {
                    *d += v;
                }
            }
        }
    }
}

/// Copies the `[nbg, O, HW]` slab `src` into `dst [O, nbg·HW]` (or back with `to_nchw`), split
/// over `threads` by destination blocks (samples for `to_nchw`, else channel rows).
fn regroup<T: Float>(
    src: &[T],
    dst: &mut [T],
    o: usize,
    hw: usize,
    nbg: usize,
    to_nchw: bool,
    threads: usize,
) {
    let ld = nbg * hw;
    let dst = &mut dst[..o * ld];
    if to_nchw {
        // dst block j = sample j's [O, HW].
        let one = |j: usize, d: &mut [T]| {
            for (oi, row) in d.chunks_exact_mut(hw).enumerate() {
                row.copy_from_slice(&src[oi * ld + j * hw..][..hw]);
            }
        };
        if threads > 1 && nbg > 1 {
            crate::threads::keep_warm();
            dst.par_chunks_mut(o * hw)
                .enumerate()
                .for_each(|(j, d)| one(j, d));
        } else {
            dst.chunks_mut(o * hw)
                .enumerate()
                .for_each(|(j, d)| one(j, d));
        }
    } else {
        // dst row oi = channel oi of every sample.
        let one = |oi: usize, d: &mut [T]| {
            for (j, part) in d.chunks_exact_mut(hw).enumerate() {
                part.copy_from_slice(&src[(j * o + oi) * hw..][..hw]);
            }
        };
        if threads > 1 && o > 1 {
            crate::threads::keep_warm();
            dst.par_chunks_mut(ld)
                .with_min_len(o.div_ceil(4 * threads).max(1))
                .enumerate()
                .for_each(|(oi, d)| one(oi, d));
        } else {
            dst.chunks_mut(ld)
                .enumerate()
                .for_each(|(oi, d)| one(oi, d));
        }
    }
}

/// Runs `f(group, chunk of out, scratch)` over the groups, in parallel or one after the other;
/// `scratch` (`scratch` elements, contents unspecified) is the running thread's reused buffer.
pub(super) fn for_groups<T: Float, F>(
    out: &mut [T],
    per_group: usize,
    parallel: bool,
    scratch: usize,
    f: F,
) where
    F: Fn(usize, &mut [T], &mut [T]) + Sync + Send,
{
    if parallel {
        crate::threads::keep_warm();
        out.par_chunks_mut(per_group)
            .enumerate()
            .for_each(|(g, chunk)| with_scratch(scratch, |buf| f(g, chunk, buf)));
    } else {
        with_scratch(scratch, |buf| {
            for (g, chunk) in out.chunks_mut(per_group).enumerate() {
                f(g, chunk, buf);
            }
        });
    }
}

/// Convolution forward: `x [B, C, H, W]`, `w [O, K]`, optional bias `[O]` → `[B, O, Ho, Wo]`.
pub(crate) fn conv_fwd<T: Float>(x: &[T], wt: &[T], bias: Option<&[T]>, s: &ConvShape) -> Vec<T> {
    if s.winograd() {
        count_winograd();
        return winograd::convolve(x, wt, false, bias, &s.wino());
    }
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
            im2col(x, s, b0, nbg, &mut cols_buf[..k * ld], par);
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
                    (yg.as_mut_ptr(), 1, hw),
                    bias.is_some(),
                    wt.as_ptr(),
                    1,
                    k,
                    cols.as_ptr(),
                    1,
                    ld,
                    Par::Split(par),
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
                    (ob.as_mut_ptr(), 1, ld),
                    false,
                    wt.as_ptr(),
                    1,
                    k,
                    cols.as_ptr(),
                    1,
                    ld,
                    Par::Split(par),
                )
            };
            regroup(ob, yg, o, hw, nbg, true, par);
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
    if s.winograd() {
        // gx = the 3 × 3 stride-1 convolution of gy with the kernel rotated by 180° and its
        // channel axes swapped, offsets 2 - padding.
        count_winograd();
        let g = Wino {
            b: s.b,
            c: s.o,
            h: s.ho,
            w: s.wo,
            a: s.c,
            ho: s.h,
            wo: s.w,
            ph: 2 - s.win.ph as isize,
            pw: 2 - s.win.pw as isize,
        };
        return winograd::convolve(gy, wt, true, None, &g);
    }
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
                par,
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
                (dst.as_mut_ptr(), 1, ld),
                accumulate,
                wt.as_ptr(),
                k,
                1,
                gyg.as_ptr(),
                1,
                ld,
                Par::Split(par),
            )
        };
        if !direct {
            col2im_group(&cols_buf[..k * ld], s, nbg, gxg, par);
        }
    });
    gx
}

/// `dst [hw, o] = srcᵀ` for one sample's `src [o, hw]`: sequential reads, writes `o` apart.
/// (Square tiles were slower here: with `hw` a power of two the tile's source rows all map to
/// the same L1 sets; small-cnn's weight gradient went from 7.7 to 12.4 % of the samples.)
fn sample_transpose<T: Float>(src: &[T], o: usize, hw: usize, dst: &mut [T]) {
    for (oi, row) in src[..o * hw].chunks_exact(hw).enumerate() {
        for (pi, &v) in row.iter().enumerate() {
            dst[pi * o + oi] = v;
        }
    }
}

/// Weight gradient of the convolution: `x [B, C, H, W]`, `gy [B, O, Ho, Wo]` → `[O, K]`.
///
/// Per group, `G_Wᵀ [K, O] += C [K, ld] · G_Yᵀ [ld, O]` with `G_Y` transposed into a scratch
/// buffer first (both factors of `G_Y · Cᵀ` have the summed (spatial) index contiguous, a
/// layout for which the gemm crate runs several times slower than for this one); for layers of
/// 512 or more output channels written column-major, i.e. straight into the `[O, K]` layout of
/// the result, else transposed at the end.
pub(crate) fn conv_bwd_weight<T: Float>(x: &[T], gy: &[T], s: &ConvShape) -> Vec<T> {
    if s.winograd() {
        count_winograd();
        return winograd::weight_grad(x, gy, &s.wino());
    }
    let (k, hw, o, nb) = (s.k(), s.hw(), s.o, s.nb());
    let zero = T::from_f64(0.0);
    let groups = s.groups();
    let parts = groups.clamp(1, WGRAD_PARTS);
    if hw == 0 || s.b == 0 {
        return vec![zero; o * k];
    }
    let direct = s.identity() && nb == 1;
    let per_part = groups.div_ceil(parts);
    // Every part has at least one group (its first product overwrites the part).
    let parts = groups.div_ceil(per_part);
    let (parallel, par) = s.plan(parts);
    let cols_len = if direct { 0 } else { k * nb * hw };
    let scratch = cols_len + o * nb * hw;
    // The products write `[O, K]` directly (column-major) for wide layers only: at 2 threads the
    // gemm crate's column-major output ran the 4608 × 512 × 256 product of a 512-channel 4 × 4
    // layer in 14.0 instead of 16.0 ms (and saves the transpose), but the 576 × 64 × 1024
    // product of a 64-channel layer in 1.79 instead of 1.01 ms, per group.
    let col_major = o >= 512;
    // Partial sums in the calling thread's scratch (each part's first product overwrites).
    with_scratch(parts * o * k, |acc: &mut [T]| {
        for_groups(acc, o * k, parallel, scratch, |p, accp, buf| {
            for g in p * per_part..((p + 1) * per_part).min(groups) {
                let (b0, nbg) = s.group(g);
                let ld = nbg * hw;
                let (cols_buf, gyt) = buf.split_at_mut(cols_len);
                let cols: &[T] = if direct {
                    &x[b0 * s.c * s.h * s.w..][..k * hw]
                } else {
                    im2col(x, s, b0, nbg, &mut cols_buf[..k * ld], par);
                    &cols_buf[..k * ld]
                };
                // G_Yᵀ [ld, O]: row (j, p) holds gy[b0 + j, :, p] (each sample's [O, HW] block
                // transposed in cache-sized tiles).
                let gyt = &mut gyt[..ld * o];
                let src = &gy[b0 * o * hw..][..nbg * o * hw];
                if par <= 1 || nbg == 1 {
                    for (j, d) in gyt.chunks_mut(hw * o).enumerate() {
                        sample_transpose(&src[j * o * hw..][..o * hw], o, hw, d);
                    }
                } else {
                    crate::threads::keep_warm();
                    gyt.par_chunks_mut(hw * o).enumerate().for_each(|(j, d)| {
                        sample_transpose(&src[j * o * hw..][..o * hw], o, hw, d);
                    });
                }
                // SAFETY: accp is [O, K] (written as the column-major [K, O] product) or
                // [K, O]; cols [K, ld]; gyt [ld, O].
                let dst = if col_major { (k, 1) } else { (1, o) };
                unsafe {
                    mm(
                        k,
                        o,
                        ld,
                        (accp.as_mut_ptr(), dst.0, dst.1),
                        g > p * per_part,
                        cols.as_ptr(),
                        1,
                        ld,
                        gyt.as_ptr(),
                        1,
                        o,
                        Par::Split(par),
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
        if col_major {
            first.to_vec()
        } else {
            // [K, O] → [O, K].
            let mut out = vec![zero; o * k];
            transpose_into(first, k, o, &mut out);
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::valid_range;

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
