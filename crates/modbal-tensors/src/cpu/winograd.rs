//! 3 × 3 convolutions with stride 1 by Winograd's minimal filtering F(2 × 2, 3 × 3) (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): the forward pass, the
//! input gradient (itself a 3 × 3 stride-1 convolution of the output gradient with the rotated,
//! transposed kernel) and the weight gradient (the adjoint of the forward formula).
//!
//! For each 2 × 2 tile of the output and each input channel, the 4 × 4 input patch `d` is
//! transformed to `V = Bᵀ d B`, and each kernel `g` to `U = G g Gᵀ` (16 values); the 16 products
//! `M_ξ [A, tiles] = U_ξ [A, C] · V_ξ [C, tiles]` (one gemm call each, `ξ` the position in the
//! 4 × 4 transformed tile) replace the 9 taps of the direct sum, and `Y = Aᵀ M A` gives the tile:
//! 16 multiplications per tile and channel pair instead of 36 (2.25× fewer), and the transformed
//! input is 4× the input where im2col's matrix is 9× (no col2im in the input gradient). With
//!
//! ```text
//! Bᵀ = | 1  0 -1  0 |     G = | 1    0    0  |     Aᵀ = | 1  1  1  0 |
//!      | 0  1  1  0 |         | ½    ½    ½  |          | 0  1 -1 -1 |
//!      | 0 -1  1  0 |         | ½   -½    ½  |
//!      | 0  1  0 -1 |         | 0    0    1  |
//! ```
//!
//! the tile is the cross-correlation `y[i][j] = Σ_{u,v} d[i+u][j+v] g[u][v]` exactly in real
//! arithmetic (the transforms add and halve; rounding differs from the direct sum by a few ulps
//! of the terms). The input gradient uses the same kernel: rotating `g` by 180° permutes the rows
//! and columns of `G g Gᵀ` by `(3, 1, 2, 0)` (`G J = P G`), so `U` is transformed once and read
//! transposed and permuted. The weight gradient follows from `Y = Aᵀ [U ⊙ V] A` being linear in
//! `U`: a tile contributes `Gᵀ [(A ĝ Aᵀ) ⊙ V] G` to its kernel, for the tile's output gradient
//! `ĝ` (zero past the plane), so the 16 products are `Z_ξ [C, A] = Σ_tiles V_ξ · Ŷ_ξ` with
//! `Ŷ = A ĝ Aᵀ`, followed by `Gᵀ Z G` per kernel ([`weight_grad`]).
//!
//! Tiles are taken in blocks of whole tile rows (`(sample, tile row)`), sized so that a block's
//! transformed input and products stay about 1 MiB; blocks run in parallel (each on one
//! thread, single-threaded gemm calls) when there are at least two per thread, else one after
//! the other with each phase split over the threads (channels, the 16 products, output channels).
//! The summation order of every output does not depend on the thread count.

use super::conv::for_groups;
use super::matmul::{mm, Par};
use super::scratch::with_scratch;
use super::simd::{simd_fn, Float};
use rayon::prelude::*;

/// `ξ → ξ'` of the 180° rotation of the kernel: `(G rot(g) Gᵀ)[r][s] = (G g Gᵀ)[p(r)][p(s)]`.
const ROT: [usize; 4] = [3, 1, 2, 0];

/// One 3 × 3 stride-1 convolution as this module computes it: input `[b, c, h, w]` read with
/// offsets `(ph, pw)` (input row `y + u - ph` for output row `y` and tap `u`; may be negative),
/// output `[b, a, ho, wo]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wino {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub a: usize,
    pub ho: usize,
    pub wo: usize,
    pub ph: isize,
    pub pw: isize,
}

impl Wino {
    fn th(&self) -> usize {
        self.ho.div_ceil(2)
    }
    fn tw(&self) -> usize {
        self.wo.div_ceil(2)
    }
    /// Tile rows per block: about `2^14 / (c + a)` tiles (so that the block's transformed input
    /// and products, `16 · (c + a) · tiles` elements, take about 1 MiB in f32), between 32 and
    /// 512 tiles, at least one row.
    fn rows_per_block(&self) -> usize {
        let tiles = ((1usize << 14) / (self.c + self.a).max(1)).clamp(32, 512);
        (tiles / self.tw().max(1)).max(1)
    }
}

/// `U [16, O, C]` (`ξ = 4r + s` major) of a kernel `[O, C, 3, 3]`.
fn transform_kernel<T: Float>(wt: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let oc = o * c;
    let mut u = vec![T::from_f64(0.0); 16 * oc];
    for (i, g) in wt[..9 * oc].chunks_exact(9).enumerate() {
        // G g: 4 × 3.
        let mut gg = [[T::from_f64(0.0); 3]; 4];
        for col in 0..3 {
            let (g0, g1, g2) = (g[col], g[3 + col], g[6 + col]);
            gg[0][col] = g0;
            gg[1][col] = (g0 + g1 + g2) * half;
            gg[2][col] = (g0 - g1 + g2) * half;
            gg[3][col] = g2;
        }
        // (G g) Gᵀ: 4 × 4.
        for (r, row) in gg.iter().enumerate() {
            let (g0, g1, g2) = (row[0], row[1], row[2]);
            let v = [g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2];
            for (s, &e) in v.iter().enumerate() {
                u[(4 * r + s) * oc + i] = e;
            }
        }
    }
    u
}

/// Shared write access to a buffer whose parts are written by different tasks.
#[derive(Clone, Copy)]
struct OutPtr(usize);

/// Scratch elements of [`input_channel`] and [`output_channel`] for blocks of `ld` tiles, `tw`
/// per tile row.
fn rows_scratch(ld: usize, tw: usize) -> usize {
    (16 * ld + 4 * (2 * tw + 2)).max(12 * ld)
}

simd_fn! {
    /// Row `ci` of each `V_ξ [C, ld]` (`V = Bᵀ d B` of input channel `ci`'s 4 × 4 patch, for the
    /// tiles of tile rows `r0..r0 + rows`, row `ρ`: sample `ρ / th`, tile row `ρ % th`), written
    /// at `v` (`[16, C, ld]`). The patches are gathered first (through zero-padded copies of the
    /// 4 input rows of each tile row) into 16 arrays `d_rs` over the block's tiles, then
    /// transformed with element-wise passes over those arrays (`buf`: [`rows_scratch`]).
    fn input_channel<T>(x: &[T], g: &Wino, ci: usize, r0: usize, rows: usize, v: OutPtr, ld: usize, buf: &mut [T]) {
        let (th, tw) = (g.th(), g.tw());
        let wp = 2 * tw + 2;
        let zero = T::from_f64(0.0);
        let hw = g.h * g.w;
        let stride = g.c * ld;
        // Padded columns j0..j1 hold input columns j0 - pw..j1 - pw.
        let j0 = g.pw.clamp(0, wp as isize) as usize;
        let j1 = (g.pw + g.w as isize).clamp(j0 as isize, wp as isize) as usize;
        let (d, pad) = buf[..16 * ld + 4 * wp].split_at_mut(16 * ld);
        for k in 0..rows {
            let rho = r0 + k;
            let (n, ty) = (rho / th, rho % th);
            let plane = &x[(n * g.c + ci) * hw..][..hw];
            for (r, pr) in pad.chunks_exact_mut(wp).enumerate() {
                pr.fill(zero);
                let iy = (2 * ty + r) as isize - g.ph;
                if iy >= 0 && iy < g.h as isize && j1 > j0 {
                    let src = (iy as usize * g.w) as isize + j0 as isize - g.pw;
                    let src = &plane[src as usize..][..j1 - j0];
                    for (e, &s) in pr[j0..j1].iter_mut().zip(src) {
                        *e = s;
                    }
                }
                // Even and odd columns: d_r0 = even[..tw], d_r1 = odd[..tw], d_r2 = even[1..],
                // d_r3 = odd[1..].
                let (ds, rest) = d[4 * r * ld..].split_at_mut(ld);
                let (d1, rest) = rest.split_at_mut(ld);
                let (d2, rest) = rest.split_at_mut(ld);
                let (d0, d1, d2, d3) = (
                    &mut ds[k * tw..][..tw],
                    &mut d1[k * tw..][..tw],
                    &mut d2[k * tw..][..tw],
                    &mut rest[k * tw..][..tw],
                );
                let pr = &pr[..2 * tw + 2];
                for tx in 0..tw {
                    let q = &pr[2 * tx..][..4];
                    d0[tx] = q[0];
                    d1[tx] = q[1];
                    d2[tx] = q[2];
                    d3[tx] = q[3];
                }
            }
        }
        // Bᵀ d over the rows r, in place, for each column s.
        for s in 0..4 {
            let (a, rest) = d.split_at_mut((4 + s) * ld);
            let d0 = &mut a[s * ld..][..ld];
            let (b, rest) = rest.split_at_mut(4 * ld);
            let d1 = &mut b[..ld];
            let (c, rest) = rest.split_at_mut(4 * ld);
            let d2 = &mut c[..ld];
            let d3 = &mut rest[..ld];
            for t in 0..ld {
                let (e0, e1, e2, e3) = (d0[t], d1[t], d2[t], d3[t]);
                d0[t] = e0 - e2;
                d1[t] = e1 + e2;
                d2[t] = e2 - e1;
                d3[t] = e1 - e3;
            }
        }
        // (Bᵀ d) B over the columns s, into V.
        for r in 0..4 {
            let row = &d[4 * r * ld..][..4 * ld];
            let (t0, rest) = row.split_at(ld);
            let (t1, rest) = rest.split_at(ld);
            let (t2, t3) = rest.split_at(ld);
            // SAFETY: row ci of blocks 4r..4r + 4 of V [16, C, ld]; written by this call only.
            let out = |s: usize| unsafe {
                std::slice::from_raw_parts_mut((v.0 as *mut T).add((4 * r + s) * stride + ci * ld), ld)
            };
            let (v0, v1, v2, v3) = (out(0), out(1), out(2), out(3));
            for t in 0..ld {
                v0[t] = t0[t] - t2[t];
                v1[t] = t1[t] + t2[t];
                v2[t] = t2[t] - t1[t];
                v3[t] = t1[t] - t3[t];
            }
        }
    }
}

simd_fn! {
    /// Output channel `ai` of tile rows `r0..r0 + rows` from `M [16, A, ld]`: `Y = Aᵀ M A` plus
    /// `bias` as element-wise passes over the block's tiles, then written to the output at `y`
    /// (`buf`: [`rows_scratch`]).
    fn output_channel<T>(m: &[T], g: &Wino, ai: usize, r0: usize, rows: usize, ld: usize, bias: T, y: OutPtr, buf: &mut [T]) {
        let (th, tw) = (g.th(), g.tw());
        let stride = g.a * ld;
        let (wo, hwo) = (g.wo, g.ho * g.wo);
        let (u, yv) = buf[..12 * ld].split_at_mut(8 * ld);
        // u[i][s] = (Aᵀ M)[i][s] over the tiles.
        for s in 0..4 {
            let mr = |r: usize| &m[(4 * r + s) * stride + ai * ld..][..ld];
            let (m0, m1, m2, m3) = (mr(0), mr(1), mr(2), mr(3));
            let (ua, ub) = u.split_at_mut(4 * ld);
            let (u0, u1) = (&mut ua[s * ld..][..ld], &mut ub[s * ld..][..ld]);
            for t in 0..ld {
                u0[t] = m0[t] + m1[t] + m2[t];
                u1[t] = m1[t] - m2[t] - m3[t];
            }
        }
        // y[i][j] = (u A)[i][j] + bias.
        for i in 0..2 {
            let ui = &u[4 * i * ld..][..4 * ld];
            let (c0, rest) = ui.split_at(ld);
            let (c1, rest) = rest.split_at(ld);
            let (c2, c3) = rest.split_at(ld);
            let (y0, y1) = yv[2 * i * ld..][..2 * ld].split_at_mut(ld);
            for t in 0..ld {
                y0[t] = c0[t] + c1[t] + c2[t] + bias;
                y1[t] = c1[t] - c2[t] - c3[t] + bias;
            }
        }
        for k in 0..rows {
            let rho = r0 + k;
            let (n, ty) = (rho / th, rho % th);
            for i in 0..2.min(g.ho - 2 * ty) {
                let y0 = &yv[2 * i * ld + k * tw..][..tw];
                let y1 = &yv[(2 * i + 1) * ld + k * tw..][..tw];
                // SAFETY: row 2ty + i of output plane (n, ai) lies in the output; it is written
                // by this call only.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        (y.0 as *mut T).add((n * g.a + ai) * hwo + (2 * ty + i) * wo),
                        wo,
                    )
                };
                let (pairs, last) = dst.split_at_mut(wo / 2 * 2);
                for (tx, p) in pairs.chunks_exact_mut(2).enumerate() {
                    p[0] = y0[tx];
                    p[1] = y1[tx];
                }
                if let Some(e) = last.first_mut() {
                    *e = y0[tw - 1];
                }
            }
        }
    }
}

/// The convolution `g` of `x` with the 3 × 3 kernel `wt` (plus `bias [A]`) into a new
/// `[b, a, ho, wo]` buffer: `wt` is `[A, C, 3, 3]`, or, with `rotated`, the `[C, A, 3, 3]`
/// kernel of a forward convolution whose input gradient this is (rotated by 180° and with its
/// channel axes swapped: `U` is read transposed, its 16 products permuted).
pub(crate) fn convolve<T: Float>(
    x: &[T],
    wt: &[T],
    rotated: bool,
    bias: Option<&[T]>,
    g: &Wino,
) -> Vec<T> {
    let (u, perm) = if rotated {
        (transform_kernel(wt, g.c, g.a), rotation())
    } else {
        (transform_kernel(wt, g.a, g.c), IDENTITY)
    };
    let len = g.b * g.a * g.ho * g.wo;
    let mut y: Vec<T> = Vec::with_capacity(len);
    if len == 0 {
        return y;
    }
    let rows = g.b * g.th();
    let rpb = g.rows_per_block();
    let blocks = rows.div_ceil(rpb);
    let ld_max = rpb * g.tw();
    let (c, a) = (g.c, g.a);
    let out = OutPtr(y.as_mut_ptr() as usize);
    let zero = T::from_f64(0.0);
    let threads = rayon::current_num_threads();
    let parallel_blocks = threads > 1 && blocks >= 2 * threads;
    // Buffers of the transforms (per thread).
    let rows_len = rows_scratch(ld_max, g.tw());
    let block = |bi: usize, buf: &mut [T], split: bool| {
        let r0 = bi * rpb;
        let nr = rpb.min(rows - r0);
        let ld = nr * g.tw();
        let (v, m) = buf.split_at_mut(16 * c * ld);
        let m = &mut m[..16 * a * ld];
        // The transformed input, per channel (each call writes its channel's rows of V only).
        let vp = OutPtr(v.as_mut_ptr() as usize);
        if split {
            crate::threads::keep_warm();
            (0..c).into_par_iter().for_each(|ci| {
                with_scratch(rows_len, |rb| input_channel(x, g, ci, r0, nr, vp, ld, rb))
            });
        } else {
            with_scratch(rows_len, |rb| {
                for ci in 0..c {
                    input_channel(x, g, ci, r0, nr, vp, ld, rb);
                }
            });
        }
        let vs = &*v;
        // The 16 products M_ξ = U_ξ · V_ξ.
        let product = |xi: usize, mx: &mut [T]| {
            let ub = &u[perm[xi] * a * c..][..a * c];
            let (cs, rs) = if rotated { (a, 1) } else { (1, c) };
            // SAFETY: mx is [A, ld]; U_ξ is an [A, C] view with strides (cs, rs) in bounds; V_ξ
            // is [C, ld].
            unsafe {
                mm(
                    a,
                    ld,
                    c,
                    (mx.as_mut_ptr(), 1, ld),
                    false,
                    ub.as_ptr(),
                    cs,
                    rs,
                    vs[xi * c * ld..].as_ptr(),
                    1,
                    ld,
                    Par::One,
                )
            };
        };
        for_groups(m, a * ld, split, 0, |xi, mx, _| product(xi, mx));
        // The output tiles, per output channel.
        let ms = &*m;
        let bias_of = |ai: usize| bias.map_or(zero, |b| b[ai]);
        if split {
            crate::threads::keep_warm();
            (0..a).into_par_iter().for_each(|ai| {
                with_scratch(rows_len, |rb| {
                    output_channel(ms, g, ai, r0, nr, ld, bias_of(ai), out, rb)
                })
            });
        } else {
            with_scratch(rows_len, |rb| {
                for ai in 0..a {
                    output_channel(ms, g, ai, r0, nr, ld, bias_of(ai), out, rb);
                }
            });
        }
    };
    let scratch = 16 * (c + a) * ld_max;
    if parallel_blocks {
        crate::threads::keep_warm();
        (0..blocks)
            .into_par_iter()
            .for_each(|bi| with_scratch(scratch, |buf| block(bi, buf, false)));
    } else {
        let split = threads > 1;
        with_scratch(scratch, |buf| {
            for bi in 0..blocks {
                block(bi, buf, split);
            }
        });
    }
    // SAFETY: the tiles cover every output element (rows 0..ho, columns 0..wo of every plane),
    // and each was written once above.
    unsafe { y.set_len(len) };
    y
}

/// The identity permutation of the 16 products.
const IDENTITY: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The permutation of the 16 products for the 180°-rotated kernel.
fn rotation() -> [usize; 16] {
    let mut p = [0; 16];
    for r in 0..4 {
        for s in 0..4 {
            p[4 * r + s] = 4 * ROT[r] + ROT[s];
        }
    }
    p
}

/// Output channels per vector of [`grad_tile_row`].
const OL: usize = 8;

simd_fn! {
    /// `Ŷ = A ĝ Aᵀ` of the output gradient's 2 × 2 tiles (zero past the plane) for tile row `k`
    /// of a block starting at tile row `r0`, every output channel: `Ŷ_ξ [ld, A]` rows
    /// `k·tw..k·tw + tw`, written at `yhat` (`[16, ld, A]`), [`OL`] channels at a time (gathered
    /// from their planes, stored contiguously).
    fn grad_tile_row<T>(gy: &[T], g: &Wino, r0: usize, k: usize, yhat: OutPtr, ld: usize) {
        let (th, tw) = (g.th(), g.tw());
        let zero = T::from_f64(0.0);
        let rho = r0 + k;
        let (n, ty) = (rho / th, rho % th);
        let (wo, hwo) = (g.wo, g.ho * g.wo);
        let a = g.a;
        let two_rows = 2 * ty + 1 < g.ho;
        let yp = yhat.0 as *mut T;
        let sample = &gy[n * a * hwo..][..a * hwo];
        for o0 in (0..a).step_by(OL) {
            let nl = OL.min(a - o0);
            for tx in 0..tw {
                let x1 = 2 * tx + 1 < wo;
                let at = |l: usize, dy: usize, dx: usize| -> T {
                    let ok = l < nl && (dy == 0 || two_rows) && (dx == 0 || x1);
                    if ok {
                        sample[(o0 + l) * hwo + (2 * ty + dy) * wo + 2 * tx + dx]
                    } else {
                        zero
                    }
                };
                let a0: [T; OL] = std::array::from_fn(|l| at(l, 0, 0));
                let a1: [T; OL] = std::array::from_fn(|l| at(l, 0, 1));
                let b0: [T; OL] = std::array::from_fn(|l| at(l, 1, 0));
                let b1: [T; OL] = std::array::from_fn(|l| at(l, 1, 1));
                let t = k * tw + tx;
                for r in 0..4 {
                    // Row r of A ĝ: (p0, p1).
                    let mut p0 = [zero; OL];
                    let mut p1 = [zero; OL];
                    for l in 0..OL {
                        (p0[l], p1[l]) = match r {
                            0 => (a0[l], a1[l]),
                            1 => (a0[l] + b0[l], a1[l] + b1[l]),
                            2 => (a0[l] - b0[l], a1[l] - b1[l]),
                            _ => (zero - b0[l], zero - b1[l]),
                        };
                    }
                    for s in 0..4 {
                        let mut e = [zero; OL];
                        for l in 0..OL {
                            e[l] = match s {
                                0 => p0[l],
                                1 => p0[l] + p1[l],
                                2 => p0[l] - p1[l],
                                _ => zero - p1[l],
                            };
                        }
                        // SAFETY: elements (t, o0..o0 + nl) of block 4r + s of Ŷ [16, ld, A]
                        // (t < ld); tile row k is written by this call only.
                        unsafe {
                            let dst = yp.add(((4 * r + s) * ld + t) * a + o0);
                            if nl == OL {
                                dst.cast::<[T; OL]>().write_unaligned(e);
                            } else {
                                std::ptr::copy_nonoverlapping(e.as_ptr(), dst, nl);
                            }
                        };
                    }
                }
            }
        }
    }
}

/// Partial sums of the weight gradient kept at most (fixed: the result does not depend on the
/// thread count), and their total size in elements at most.
const WGRAD_PARTS: usize = 4;
const WGRAD_PART_ELEMS: usize = 1 << 22;

/// Weight gradient of the 3 × 3 stride-1 convolution `g` (`x [b, c, h, w]`, output gradient
/// `gy [b, a, ho, wo]`) → `[A, C·9]`: per tile, `Gᵀ [(A ĝ Aᵀ) ⊙ (Bᵀ d B)] G` is the tile's
/// contribution to each kernel (the adjoint of the forward formula), so with the transformed
/// input `V_ξ [C, tiles]` (as in the forward pass) and output gradient `Ŷ_ξ [tiles, A]`, the 16
/// products `Z_ξ [C, A] = Σ V_ξ · Ŷ_ξ` followed by `Gᵀ Z G` give the gradient (16 instead of 36
/// multiplications per tile and channel pair). The tiles' blocks are summed in a fixed number
/// of partial sums, in order.
pub(crate) fn weight_grad<T: Float>(x: &[T], gy: &[T], g: &Wino) -> Vec<T> {
    let (c, a) = (g.c, g.a);
    let zero = T::from_f64(0.0);
    let rows = g.b * g.th();
    if rows == 0 || g.tw() == 0 {
        return vec![zero; a * c * 9];
    }
    let rpb = g.rows_per_block();
    let blocks = rows.div_ceil(rpb);
    let za = 16 * c * a;
    let parts = blocks.min(WGRAD_PARTS).min((WGRAD_PART_ELEMS / za).max(1));
    let per_part = blocks.div_ceil(parts);
    let parts = blocks.div_ceil(per_part);
    let ld_max = rpb * g.tw();
    let rows_len = rows_scratch(ld_max, g.tw());
    let threads = rayon::current_num_threads();
    let parallel_parts = threads > 1 && parts >= threads;
    let split = threads > 1 && !parallel_parts;
    let scratch = 16 * (c + a) * ld_max;
    // Part p sums blocks p·per_part.. into zp [16, C, A] (its first product overwrites).
    let part = |p: usize, zp: &mut [T], buf: &mut [T]| {
        for bi in p * per_part..((p + 1) * per_part).min(blocks) {
            let r0 = bi * rpb;
            let nr = rpb.min(rows - r0);
            let ld = nr * g.tw();
            let (v, yh) = buf.split_at_mut(16 * c * ld);
            let yh = &mut yh[..16 * ld * a];
            let (vp, yp) = (
                OutPtr(v.as_mut_ptr() as usize),
                OutPtr(yh.as_mut_ptr() as usize),
            );
            if split {
                crate::threads::keep_warm();
                (0..c).into_par_iter().for_each(|ci| {
                    with_scratch(rows_len, |rb| input_channel(x, g, ci, r0, nr, vp, ld, rb))
                });
                (0..nr)
                    .into_par_iter()
                    .for_each(|k| grad_tile_row(gy, g, r0, k, yp, ld));
            } else {
                with_scratch(rows_len, |rb| {
                    for ci in 0..c {
                        input_channel(x, g, ci, r0, nr, vp, ld, rb);
                    }
                });
                for k in 0..nr {
                    grad_tile_row(gy, g, r0, k, yp, ld);
                }
            }
            let (vs, ys) = (&*v, &*yh);
            let accumulate = bi > p * per_part;
            let product = |xi: usize, zx: &mut [T]| {
                // SAFETY: zx is [C, A]; V_ξ [C, ld] and Ŷ_ξ [ld, A] are row-major, in bounds.
                unsafe {
                    mm(
                        c,
                        a,
                        ld,
                        (zx.as_mut_ptr(), 1, a),
                        accumulate,
                        vs[xi * c * ld..].as_ptr(),
                        1,
                        ld,
                        ys[xi * ld * a..].as_ptr(),
                        1,
                        a,
                        Par::One,
                    )
                };
            };
            for_groups(zp, c * a, split, 0, |xi, zx, _| product(xi, zx));
        }
    };
    with_scratch(parts * za, |acc: &mut [T]| {
        let acc = &mut acc[..parts * za];
        for_groups(acc, za, parallel_parts, scratch, part);
        let (z, rest) = acc.split_at_mut(za);
        for zp in rest.chunks(za) {
            for (e, &v) in z.iter_mut().zip(zp) {
                *e += v;
            }
        }
        kernel_from_products(z, c, a)
    })
}

/// `[A, C·9]` kernel gradient `Gᵀ Z G` from `Z [16, C, A]`.
fn kernel_from_products<T: Float>(z: &[T], c: usize, a: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let ca = c * a;
    let mut out = vec![T::from_f64(0.0); a * c * 9];
    // Gᵀ y for a 4-vector y: [y0 + ½(y1 + y2), ½(y1 − y2), ½(y1 + y2) + y3].
    let gt = |y: [T; 4]| -> [T; 3] {
        let (p, m) = ((y[1] + y[2]) * half, (y[1] - y[2]) * half);
        [y[0] + p, m, p + y[3]]
    };
    for ci in 0..c {
        for ai in 0..a {
            let at = |xi: usize| z[xi * ca + ci * a + ai];
            // Columns first: w[r][v] = (Z G)[r][v] for each of the 4 rows r.
            let zg: [[T; 3]; 4] = std::array::from_fn(|r| {
                gt([at(4 * r), at(4 * r + 1), at(4 * r + 2), at(4 * r + 3)])
            });
            let dst = &mut out[(ai * c + ci) * 9..][..9];
            for v in 0..3 {
                let col = gt([zg[0][v], zg[1][v], zg[2][v], zg[3][v]]);
                for u in 0..3 {
                    dst[3 * u + v] = col[u];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `G rot(g) Gᵀ` is `G g Gᵀ` with rows and columns permuted by `(3, 1, 2, 0)` (closed form:
    /// `G J = P G` for the exchange matrix `J`), up to the rounding of sums taken in the other
    /// order (values below 1 here: 1e-15), for each of 2 × 3 kernels.
    #[test]
    fn rotated_kernel_transform_is_a_permutation() {
        let (o, c) = (2, 3);
        let w: Vec<f64> = (0..o * c * 9)
            .map(|i| (0.7 * i as f64 + 0.3).sin())
            .collect();
        let mut rot = vec![0.0; w.len()];
        for (k, g) in w.chunks_exact(9).enumerate() {
            for u in 0..3 {
                for v in 0..3 {
                    rot[k * 9 + (2 - u) * 3 + (2 - v)] = g[u * 3 + v];
                }
            }
        }
        let (uw, ur) = (transform_kernel(&w, o, c), transform_kernel(&rot, o, c));
        let p = rotation();
        for xi in 0..16 {
            let (got, want) = (&ur[xi * o * c..][..o * c], &uw[p[xi] * o * c..][..o * c]);
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 1e-15, "ξ = {xi}: {g} vs {w}");
            }
        }
    }
}
