//! Dense symmetric positive-definite linear algebra in f64 on row-major buffers: the blocked,
//! multi-threaded Cholesky factorisation [`cholesky_in_place`], the lower triangle of a Gram
//! matrix [`gram_lower`], and the inverse from the Cholesky factor. The building blocks of
//! [`logdet`](super::logdet) and of the Gaussian estimators' graph-free path.

use rayon::prelude::*;

/// Block size of the blocked Cholesky factorisation.
const CHOL_BLOCK: usize = 64;

/// Unblocked Cholesky of the `b × b` diagonal block at `(k0, k0)` of a row-major `d × d` matrix.
/// Errors with the (global) index of the first column whose pivot is not positive or not finite.
fn cholesky_block(a: &mut [f64], d: usize, k0: usize, b: usize) -> std::result::Result<(), usize> {
    for j in k0..k0 + b {
        let mut s = a[j * d + j];
        for k in k0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        // Not finite covers NaN.
        if !s.is_finite() || s <= 0.0 {
            return Err(j);
        }
        let ljj = s.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..k0 + b {
            let mut s = a[i * d + j];
            for k in k0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / ljj;
        }
    }
    Ok(())
}

/// Solves `x · L11ᵀ = row` in place for one row of the panel, with `lt` the columns of the
/// `b × b` lower-triangular block L11 stored contiguously (`lt[j·b + i] = L11[i][j]`).
/// Column-oriented forward substitution: after `x_j` is known, `x_i −= L11[i][j]·x_j` for all
/// `i > j` at once, a contiguous update the compiler vectorises (the row-oriented dot products
/// are a serial dependency chain).
#[inline(always)]
fn panel_row_solve(x: &mut [f64], lt: &[f64], b: usize) {
    for j in 0..b {
        let xj = x[j] / lt[j * b + j];
        x[j] = xj;
        let col = &lt[j * b + j + 1..(j + 1) * b];
        for (xi, &l) in x[j + 1..b].iter_mut().zip(col) {
            *xi -= xj * l;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_rows_avx2(rows: &mut [f64], d: usize, k0: usize, lt: &[f64], b: usize) {
    for row in rows.chunks_exact_mut(d) {
        panel_row_solve(&mut row[k0..k0 + b], lt, b);
    }
}

/// [`panel_row_solve`] for every row of `rows` (rows of length `d`), with AVX2/FMA code when
/// the CPU has it.
fn panel_rows(rows: &mut [f64], d: usize, k0: usize, lt: &[f64], b: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the enabled features (checked just above).
            unsafe { panel_rows_avx2(rows, d, k0, lt, b) };
            return;
        }
    }
    for row in rows.chunks_exact_mut(d) {
        panel_row_solve(&mut row[k0..k0 + b], lt, b);
    }
}

/// In-place Cholesky factorisation (A = L Lᵀ) of a row-major `d × d` symmetric matrix of which
/// only the **lower triangle** is read; on success the lower triangle holds L (the strict upper
/// triangle is left in an unspecified state). Errors with the index of the first column whose
/// pivot is not positive or not finite (A is not numerically positive definite there; the
/// leading `j × j` block was factorised successfully, so e.g. `log det` of every leading block
/// before it is available from the diagonal).
///
/// Right-looking blocked algorithm: factor a 64-wide diagonal block, solve the panel below it
/// (rows in parallel, vectorised column-oriented substitution), and update the lower triangle
/// of the trailing matrix with multi-threaded gemm calls over column blocks
/// (`A22 ← A22 − L21 L21ᵀ`, about half the flops of a full update), so that large matrices run at
/// matrix-product speed.
pub fn cholesky_in_place(a: &mut [f64], d: usize) -> std::result::Result<(), usize> {
    assert_eq!(a.len(), d * d, "cholesky_in_place: buffer is not {d}x{d}");
    // Small factorisations (≲ 1M multiply-adds) run on one thread: splitting them costs more
    // than it saves.
    let threads = if d < 160 {
        1
    } else {
        rayon::current_num_threads()
    };
    let mut lt = vec![0.0; CHOL_BLOCK * CHOL_BLOCK];
    let mut k0 = 0;
    while k0 < d {
        let b = CHOL_BLOCK.min(d - k0);
        cholesky_block(a, d, k0, b)?;
        let rest = d - k0 - b;
        if rest == 0 {
            break;
        }
        // Panel: each row i below the block solves x · L11ᵀ = a[i, k0..k0+b].
        for j in 0..b {
            for i in j..b {
                lt[j * b + i] = a[(k0 + i) * d + k0 + j];
            }
        }
        let lt = &lt[..b * b];
        let (_, bottom) = a.split_at_mut((k0 + b) * d);
        // Enough rows per task to amortise the task overhead (≳ 64 rows of b²/2 each).
        let rows_per_task = rest.div_ceil(threads).max(64);
        if rest <= rows_per_task {
            panel_rows(bottom, d, k0, lt, b);
        } else {
            bottom
                .par_chunks_mut(rows_per_task * d)
                .for_each(|rows| panel_rows(rows, d, k0, lt, b));
        }
        // Trailing update of the lower triangle, A22 -= P Pᵀ with P = a[k0+b.., k0..k0+b], by
        // column blocks: block [c0, c0+w) updates rows c0.. of those columns.
        let n_blocks = rest.div_ceil(256).clamp(1, 8).min(rest.div_ceil(32));
        let w_blk = rest.div_ceil(n_blocks);
        // The last, small updates (≲ 1M multiply-adds) on one thread.
        let parallelism = if threads > 1 && rest * rest * b / 2 >= 1 << 20 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let p = a.as_mut_ptr();
        let mut c0 = k0 + b;
        while c0 < d {
            let w = w_blk.min(d - c0);
            let m = d - c0;
            // SAFETY: the destination (rows c0.., columns c0..c0+w, all ≥ k0+b) and the panel
            // read as lhs and rhs (columns k0..k0+b) are disjoint regions of `a`; every offset
            // stays inside the d × d buffer.
            unsafe {
                gemm::gemm(
                    m,
                    w,
                    b,
                    p.add(c0 * d + c0),
                    1,
                    d as isize,
                    true,
                    p.add(c0 * d + k0) as *const f64,
                    1,
                    d as isize,
                    p.add(c0 * d + k0) as *const f64,
                    d as isize,
                    1,
                    1.0,
                    -1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            c0 += w;
        }
        k0 += b;
    }
    Ok(())
}

/// A `*mut f64` shared by the tasks of [`gram_lower`], which write disjoint panels.
#[derive(Clone, Copy)]
struct PanelOut(*mut f64);
// SAFETY: only used to write disjoint column panels of one buffer (see `gram_lower`).
unsafe impl Send for PanelOut {}
unsafe impl Sync for PanelOut {}

impl PanelOut {
    fn ptr(self) -> *mut f64 {
        self.0
    }
}

/// The lower triangle of the Gram matrix `A Aᵀ` (row-major `rows × rows`; the strict upper
/// triangle is left unspecified, as [`cholesky_in_place`] never reads it) of the row-major
/// `rows × k` matrix `a` whose rows are `ld ≥ k` apart: the input of a log-determinant of a
/// covariance (`A` = the centred data transposed, `rows` = features, `k` = samples) or of its
/// `N × N` dual.
///
/// The lower triangle is cut into column panels (panel `[i0, i0 + w)` is rows `i0..` of those
/// columns, one gemm call each; about `(b + 1)/(2b)` of the flops of a full product for `b`
/// panels). With enough panels, they are computed concurrently by single-threaded gemm calls:
/// the gemm crate's own parallelism splits one output, which scales poorly for these
/// short-and-wide products. Each entry is computed the same way whatever the number of threads.
pub fn gram_lower(a: &[f64], rows: usize, k: usize, ld: usize) -> Vec<f64> {
    let mut c = vec![0.0; rows * rows];
    gram_lower_into(a, rows, k, ld, &mut c);
    c
}

/// [`gram_lower`] into `c` (at least `rows × rows` values; the first `rows²` are used, with the
/// same layout), e.g. a reused buffer.
pub fn gram_lower_into(a: &[f64], rows: usize, k: usize, ld: usize, c: &mut [f64]) {
    assert!(
        ld >= k && (rows == 0 || a.len() >= (rows - 1) * ld + k),
        "gram_lower: input buffer too small"
    );
    assert!(
        c.len() >= rows * rows,
        "gram_lower: output buffer too small"
    );
    // Below ~16M multiply-adds (≈ 0.7 ms) one thread is faster than splitting the work.
    let work = rows * rows * k / 2;
    let threads = if work < 16 << 20 {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    // Panels of about 32 columns (at most 32 panels): narrow panels waste little of the upper
    // triangle, and were measured faster than wider ones even though the rows below each panel
    // are packed once per panel.
    let n_panels = rows.div_ceil(32).clamp(1, 32);
    let w_pan = rows.div_ceil(n_panels).max(1);
    let panels: Vec<(usize, usize)> = (0..rows)
        .step_by(w_pan)
        .map(|i0| (i0, w_pan.min(rows - i0)))
        .collect();
    let out = PanelOut(c.as_mut_ptr());
    let panel = |(i0, w): (usize, usize), par: gemm::Parallelism| {
        // SAFETY: `c` holds rows × rows values and the destination panel (rows i0.., columns i0..i0+w)
        // is written by this call only; the operands (rows i0.. of `a`, columns 0..k ≤ ld) are
        // in bounds (checked above); `c` does not alias `a`.
        unsafe {
            gemm::gemm(
                rows - i0,
                w,
                k,
                out.ptr().add(i0 * rows + i0),
                1,
                rows as isize,
                false,
                a.as_ptr().add(i0 * ld),
                1,
                ld as isize,
                a.as_ptr().add(i0 * ld),
                ld as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    };
    if threads > 1 && panels.len() >= threads {
        // One group of panels per thread, balanced by work (≈ rows below × width), each panel
        // by a single-threaded gemm call; largest first, to the least loaded group.
        let mut groups: Vec<(usize, Vec<(usize, usize)>)> = vec![(0, Vec::new()); threads];
        let mut order = panels.clone();
        order.sort_by_key(|&(i0, w)| std::cmp::Reverse((rows - i0) * w));
        for p in order {
            let g = groups
                .iter_mut()
                .min_by_key(|g| g.0)
                .expect("at least one group");
            g.0 += (rows - p.0) * p.1;
            g.1.push(p);
        }
        groups.par_iter().for_each(|(_, ps)| {
            for &p in ps {
                panel(p, gemm::Parallelism::None);
            }
        });
    } else {
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        for &p in &panels {
            panel(p, par);
        }
    }
}

/// [`cholesky_in_place`] as a yes/no answer.
pub(super) fn cholesky(a: &mut [f64], d: usize) -> bool {
    cholesky_in_place(a, d).is_ok()
}

/// Inverse of an SPD matrix from its Cholesky factor L (A = L Lᵀ): A⁻¹ = L⁻ᵀ L⁻¹, with L⁻¹
/// computed column by column in parallel and the product by gemm.
pub(super) fn spd_inverse(l: &[f64], d: usize) -> Vec<f64> {
    // Columns of L⁻¹ (stored as rows of its transpose: row j = column j of L⁻¹).
    let mut linv_t = vec![0.0; d * d];
    linv_t.par_chunks_mut(d).enumerate().for_each(|(j, col)| {
        // Solve L x = e_j; x_i = 0 for i < j.
        col[j] = 1.0 / l[j * d + j];
        for i in j + 1..d {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i * d + k] * col[k];
            }
            col[i] = s / l[i * d + i];
        }
    });
    // A⁻¹ = (L⁻¹)ᵀ L⁻¹; with M = L⁻ᵀ stored row-major in `linv_t` (M[j, i] = (L⁻¹)[i, j]),
    // A⁻¹ = M Mᵀ.
    let mut inv = vec![0.0; d * d];
    // SAFETY: distinct buffers of d × d elements with the given strides.
    unsafe {
        gemm::gemm(
            d,
            d,
            d,
            inv.as_mut_ptr(),
            1,
            d as isize,
            false,
            linv_t.as_ptr(),
            1,
            d as isize,
            linv_t.as_ptr(),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    inv
}

#[cfg(test)]
mod cholesky_tests {
    use super::{cholesky_in_place, gram_lower};

    /// `M Mᵀ + shift·I` for a deterministic `M` (`d × d`): symmetric positive definite.
    fn spd(d: usize, shift: f64) -> Vec<f64> {
        let m: Vec<f64> = (0..d * d).map(|i| ((i * 7 + 3) as f64).sin()).collect();
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..d).map(|k| m[i * d + k] * m[j * d + k]).sum::<f64>();
            }
            a[i * d + i] += shift;
        }
        a
    }

    #[test]
    fn blocked_factor_reproduces_the_matrix() {
        for d in [1usize, 2, 63, 64, 65, 130, 200] {
            let a = spd(d, 0.5);
            let mut l = a.clone();
            cholesky_in_place(&mut l, d).unwrap();
            let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for i in 0..d {
                for j in 0..=i {
                    let v: f64 = (0..=j).map(|k| l[i * d + k] * l[j * d + k]).sum();
                    assert!((v - a[i * d + j]).abs() <= 1e-12 * scale, "d={d} ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn failure_names_the_first_bad_pivot() {
        // Leading 70×70 block positive definite, then a zero row/column at 70.
        let d = 100;
        let mut a = spd(d, 1.0);
        for k in 0..d {
            a[70 * d + k] = 0.0;
            a[k * d + 70] = 0.0;
        }
        assert_eq!(cholesky_in_place(&mut a, d), Err(70));
    }

    #[test]
    fn gram_lower_matches_the_naive_product() {
        for &(rows, k, ld) in &[
            (1usize, 1usize, 1usize),
            (5, 3, 4),
            (33, 70, 70),
            (130, 40, 48),
            (64, 1100, 1108),
        ] {
            let a: Vec<f64> = (0..rows * ld)
                .map(|i| ((i * 13 + 1) as f64).cos())
                .collect();
            let c = gram_lower(&a, rows, k, ld);
            for i in 0..rows {
                for j in 0..=i {
                    let v: f64 = (0..k).map(|t| a[i * ld + t] * a[j * ld + t]).sum();
                    assert!(
                        (v - c[i * rows + j]).abs() <= 1e-11 * (k as f64),
                        "{rows}x{k} ({i},{j})"
                    );
                }
            }
        }
    }
}
