//! Gaussian entropy and mutual information from batch covariances (CAL eq 10-12).
//!
//! For a D-dimensional Gaussian with covariance Σ (CAL eq 11):
//!
//! `H = ½ log((2πe)^D det Σ) = ½ (D·log(2πe) + log det Σ)`
//!
//! and, with `Z = [X; Y]` jointly Gaussian (CAL eq 10 `I = H(X) + H(Y) − H(X,Y)` into eq 12):
//!
//! `I(X; Y) = ½ log( det Σ_X · det Σ_Y / det Σ_Z )`
//!
//! Σ is the unbiased batch covariance `(1/(N−1)) Σ_i (x_i − x̄)(x_i − x̄)ᵀ`, regularised as
//!
//! `Σ_reg = (1 − λ)·Σ + λ·diag(Σ) + ridge·diag(max(σ_i², τ))`,  `τ = max(1e-12, 1e-8·tr Σ / D)`
//!
//! * `shrinkage` λ ∈ [0, 1] shrinks the correlations towards 0 (target: the diagonal), the usual
//!   remedy when N is not much larger than D (biases MI towards 0, never below);
//! * `ridge` ≥ 0 adds a multiple of each feature's own variance to the diagonal (scale-free), and
//!   gives a constant feature the variance `ridge·τ`, so that constant features and N ≤ D give a
//!   finite value instead of an error. With `ridge = 0` and a singular Σ the estimators return
//!   an error naming the covariance, never NaN.
//!
//! For MI, the regularisation is applied to the joint Σ_Z and Σ_X, Σ_Y are taken as its
//! diagonal blocks: Σ_Z is then positive definite and Fischer's inequality gives
//! `det Σ_Z ≤ det Σ_X det Σ_Y`, so **I ≥ 0** (up to floating-point rounding, ~1e-6 in f32).
//! Everything is built from differentiable tensor ops and `modbal_tensors::ops::logdet`, so the
//! estimates can sit inside a loss (CAL's AIB, eq 13). When no input tracks gradients (f64 on the
//! CPU), the same value is computed without the graph (`fast` below): centring, the covariance's
//! lower triangle and Cholesky factorisations in place, or, when N is small next to D, the
//! equivalent N × N determinant (matrix determinant lemma).
//!
//! Bias: with N samples the plug-in Gaussian MI of independent variables is ≈ D_X·D_Y/(2N) > 0.
//!
//! # Shapes
//! * `x: [N, D_X]` (or `[N]`, read as `[N, 1]`), `y: [N, D_Y]`, N ≥ 2, float dtype
//! * `covariance(x) -> [D, D]`; `gaussian_entropy(x) -> []`; `gaussian_mi(x, y) -> []`

use crate::error::{check_finite, InfoError, Result};
use candle_core::{DType, Tensor};
use modbal_tensors::ops::logdet;
use serde::{Deserialize, Serialize};

/// Regularisation of the covariance estimates (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GaussianConfig {
    /// Multiple of each feature's variance added to the diagonal. Default 1e-6.
    pub ridge: f64,
    /// Shrinkage λ of the correlations towards zero, in [0, 1]. Default 0.
    pub shrinkage: f64,
}

impl Default for GaussianConfig {
    fn default() -> Self {
        Self {
            ridge: 1e-6,
            shrinkage: 0.0,
        }
    }
}

impl GaussianConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            return Err(InfoError::Param(format!(
                "gaussian: ridge must be finite and >= 0, got {}",
                self.ridge
            )));
        }
        if !(0.0..=1.0).contains(&self.shrinkage) {
            return Err(InfoError::Param(format!(
                "gaussian: shrinkage must be in [0, 1], got {}",
                self.shrinkage
            )));
        }
        Ok(())
    }
}

/// A `[N, D]` or `[N]` float tensor as `[N, D]`; any other rank or an integer dtype is an
/// error naming `what` (the shape check of every Gaussian estimator, shared with estimators
/// built elsewhere, e.g. CAL's shrinkage MI in modbal-methods).
pub fn float_matrix(x: &Tensor, what: &str) -> Result<Tensor> {
    let x = match x.rank() {
        1 => x.unsqueeze(1)?,
        2 => x.clone(),
        _ => {
            return Err(InfoError::Input(format!(
                "{what} must be [N, D] or [N], got {:?}",
                x.dims()
            )))
        }
    };
    if !x.dtype().is_float() {
        return Err(InfoError::Input(format!(
            "{what} must be a float tensor, got {:?}",
            x.dtype()
        )));
    }
    Ok(x)
}

fn as_matrix(x: &Tensor, what: &str) -> Result<Tensor> {
    let x = float_matrix(x, what)?;
    let (n, d) = x.dims2()?;
    if n < 2 {
        return Err(InfoError::Input(format!(
            "{what}: a covariance needs at least 2 samples, got {n}"
        )));
    }
    if d == 0 {
        return Err(InfoError::Input(format!(
            "{what} has no features: {:?}",
            x.dims()
        )));
    }
    check_finite(&x, what)?;
    Ok(x)
}

/// The unbiased covariance of `x` with the configured regularisation, `[D, D]`.
pub fn covariance(x: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = as_matrix(x, "x")?;
    regularised_cov(&x, cfg)
}

fn regularised_cov(x: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let xc = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let cov = (xc.t()?.matmul(&xc)? / (n as f64 - 1.0))?;
    let var = (xc.sqr()?.sum(0)? / (n as f64 - 1.0))?; // [D], the diagonal of cov
                                                       // τ from the detached trace: a numerical floor, not part of the objective.
    let mean_var = var
        .detach()
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;
    let tau = f64::max(1e-8 * mean_var, 1e-12);
    let eye = Tensor::eye(d, x.dtype(), x.device())?;
    let mut out = cov.clone();
    if cfg.shrinkage > 0.0 {
        let diag = eye.broadcast_mul(&var.unsqueeze(0)?)?;
        out = ((out * (1.0 - cfg.shrinkage))? + (diag * cfg.shrinkage)?)?;
    }
    if cfg.ridge > 0.0 {
        let floor = var.clamp(tau, f64::INFINITY)?;
        let ridge = eye.broadcast_mul(&(floor * cfg.ridge)?.unsqueeze(0)?)?;
        out = (out + ridge)?;
    }
    Ok(out)
}

fn logdet_named(cov: &Tensor, what: &str) -> Result<Tensor> {
    logdet(cov).map_err(|e| {
        InfoError::Input(format!(
            "covariance of {what} is singular or not positive definite ({e}); use a ridge > 0 or shrinkage"
        ))
    })
}

/// Differential entropy (nats) of `x` under a Gaussian fit, CAL eq 11. Scalar tensor.
pub fn gaussian_entropy(x: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = as_matrix(x, "x")?;
    let d = x.dim(1)? as f64;
    let c = d * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln();
    let (n, dx) = x.dims2()?;
    if let Some(ld) = crate::fast::untracked_f64(&[&x], |s| fast::entropy_logdet(s[0], n, dx, cfg))
    {
        return Ok(crate::fast::scalar((ld? + c) * 0.5)?);
    }
    let cov = regularised_cov(&x, cfg)?;
    let ld = logdet_named(&cov, "x")?;
    Ok(((ld + c)? * 0.5)?)
}

/// Mutual information (nats) between `x` and `y` under a joint Gaussian fit, CAL eq 12.
/// Scalar tensor, ≥ 0 up to rounding.
pub fn gaussian_mi(x: &Tensor, y: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = as_matrix(x, "x")?;
    let y = as_matrix(y, "y")?;
    let (nx, dx) = x.dims2()?;
    let (ny, dy) = y.dims2()?;
    if nx != ny {
        return Err(InfoError::Input(format!(
            "x and y must have the same number of samples: x {:?}, y {:?}",
            x.dims(),
            y.dims()
        )));
    }
    if x.dtype() != y.dtype() {
        return Err(InfoError::Input(format!(
            "x and y must have the same dtype: {:?} vs {:?}",
            x.dtype(),
            y.dtype()
        )));
    }
    if let Some(mi) =
        crate::fast::untracked_f64(&[&x, &y], |s| fast::mi(s[0], s[1], nx, dx, dy, cfg))
    {
        return Ok(crate::fast::scalar(mi?)?);
    }
    let z = Tensor::cat(&[&x, &y], 1)?;
    let cz = regularised_cov(&z, cfg)?;
    let cx = cz.narrow(0, 0, dx)?.narrow(1, 0, dx)?;
    let cy = cz.narrow(0, dx, dy)?.narrow(1, dx, dy)?;
    let lx = logdet_named(&cx, "x")?;
    let ly = logdet_named(&cy, "y")?;
    let lz = logdet_named(&cz, "[x, y]")?;
    Ok((((lx + ly)? - lz)? * 0.5)?)
}

/// The fused f64 path of the estimators (see the crate's `fast` module): same regularised
/// covariances, log determinants by Cholesky, no tensor graph.
///
/// Two equivalent routes, chosen by flop count:
/// * **direct**: the data centred and transposed in one pass (`[D, N]`), the lower triangle of
///   the `D × D` covariance ([`modbal_tensors::ops::gram_lower`]: about half the flops of a full
///   `XᵀX`), regularised, then Cholesky. For MI, `log det Σ_X` is read off the leading block of
///   the Cholesky factor of `Σ_Z` (the factor of a leading block is the leading block of the
///   factor), so only `Σ_Z` and `Σ_Y` are factorised. The large buffers are kept per thread
///   between calls (up to 64 MiB each, see `SCRATCH`).
/// * **Gram** (N small next to D, ridge > 0): the regularised covariance is
///   `Σ_reg = Λ + (1 − λ)·XcᵀXc/(N − 1)` with the diagonal `Λ = λ·var + ridge·max(var, τ) > 0`,
///   so by the matrix determinant lemma
///   `log det Σ_reg = Σ_j log Λ_j + log det(I_N + B Bᵀ)`, `B = Xc Λ^{−1/2} √((1 − λ)/(N − 1))`:
///   an `N × N` factorisation instead of `D × D`. For MI, Λ of Σ_Z is block-diagonal, so the
///   `Σ log Λ` terms cancel and `I = ½ [log det(I + G_X) + log det(I + G_Y) − log det(I + G_X + G_Y)]`
///   with `G = B Bᵀ`. `I + G` has eigenvalues ≥ 1, so this route is also the better conditioned
///   one (the direct covariance is rank-deficient up to the ridge when N ≤ D).
mod fast {
    use super::{GaussianConfig, InfoError, Result};
    use crate::fast::{par_ranges, par_rows_mut};
    use modbal_tensors::ops::{cholesky_in_place, gram_lower, gram_lower_into};

    /// The columns of `[x, y]` (given as row-major parts `(values, width)`).
    struct Columns<'a> {
        parts: Vec<(&'a [f64], usize)>,
        n: usize,
        dz: usize,
    }

    /// Rows per block of the row-blocked passes: the blocks (not the threads) fix the
    /// summation order, so results do not depend on the number of threads.
    const ROW_BLOCK: usize = 128;

    /// A `*mut f64` that threads may share to write disjoint parts of one buffer.
    #[derive(Clone, Copy)]
    struct SharedOut(*mut f64);
    // SAFETY: only used to write disjoint regions from scoped threads (see its uses).
    unsafe impl Send for SharedOut {}
    unsafe impl Sync for SharedOut {}

    impl SharedOut {
        /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
        fn ptr(self) -> *mut f64 {
            self.0
        }
    }

    crate::fast::simd_fn! {
        /// `acc[j] += Σ_rows (x_j − shift_j)^p` for the rows of one part (`p` = 1 when
        /// `square` is false, with `shift` ignored).
        fn accumulate(v: &[f64], d: usize, acc: &mut [f64], shift: &[f64], square: bool) -> () {
            for row in v.chunks_exact(d) {
                if square {
                    for ((a, &b), &m) in acc.iter_mut().zip(row).zip(shift) {
                        *a += (b - m) * (b - m);
                    }
                } else {
                    for (a, &b) in acc.iter_mut().zip(row) {
                        *a += b;
                    }
                }
            }
        }
    }

    crate::fast::simd_fn! {
        /// `out[j] = (row_j − mean_j)·scale_j` for one row of one part.
        fn centre_row(src: &[f64], means: &[f64], scale: &[f64], out: &mut [f64]) -> () {
            for (((o, &a), &m), &g) in out.iter_mut().zip(src).zip(means).zip(scale) {
                *o = (a - m) * g;
            }
        }
    }

    crate::fast::simd_fn! {
        /// Transposes rows `i0..i1` of one part (`v`, width `d`, first z-column `off`),
        /// centred by `means` (the part's), into columns `i0..i1` of `zt` (rows `ld` apart):
        /// 8 × 8 tiles, 8-value loads and stores. Adds the squared deviations of each column,
        /// row by row, to `ss` (the part's).
        fn transpose_block(v: &[f64], d: usize, off: usize, means: &[f64], i0: usize, i1: usize, zt: SharedOut, ld: usize, ss: &mut [f64]) -> () {
            let mut i = i0;
            while i < i1 {
                let h = (i1 - i).min(8);
                let mut j = 0;
                while j < d {
                    let w = (d - j).min(8);
                    let mut tile = [[0.0f64; 8]; 8];
                    let (m, acc) = (&means[j..j + w], &mut ss[j..j + w]);
                    for r in 0..h {
                        let src = &v[(i + r) * d + j..(i + r) * d + j + w];
                        for (k, ((&a, &mk), s)) in src.iter().zip(m).zip(acc.iter_mut()).enumerate() {
                            let z = a - mk;
                            tile[k][r] = z;
                            *s += z * z;
                        }
                    }
                    for (k, t) in tile.iter().enumerate().take(w) {
                        // SAFETY (both writes): row off + j + k of zt, columns i..i + h: inside
                        // the buffer, and columns i0..i1 belong to this block only.
                        let p = unsafe { zt.ptr().add((off + j + k) * ld + i) };
                        if h == 8 {
                            // a fixed-size store (a slice copy of runtime length is a memcpy
                            // call per 8 values: 16 % of the time at N = 4096, D = 128)
                            unsafe { std::ptr::write_unaligned(p as *mut [f64; 8], *t) };
                        } else {
                            let dst = unsafe { std::slice::from_raw_parts_mut(p, h) };
                            dst.copy_from_slice(&t[..h]);
                        }
                    }
                    j += w;
                }
                i += h;
            }
        }
    }

    /// The centred data transposed (`[dz, n]`, rows `ld` apart; the buffer may be longer)
    /// and the column variances.
    struct CentredT {
        zt: Vec<f64>,
        ld: usize,
        var: Vec<f64>,
    }

    impl Drop for CentredT {
        fn drop(&mut self) {
            give_back_scratch(SLOT_ZT, std::mem::take(&mut self.zt));
        }
    }

    /// Largest scratch buffer kept between calls (f64 values: 64 MiB).
    const SCRATCH_KEEP: usize = 8 << 20;

    /// The reusable buffers of one thread: the transposed data, the covariance, Σ_Y's copy.
    const SLOTS: usize = 3;
    const SLOT_ZT: usize = 0;
    const SLOT_COV: usize = 1;
    const SLOT_COV_Y: usize = 2;

    thread_local! {
        /// The large buffers of the last call on this thread, reused by the next one: a fresh
        /// buffer of tens of MiB costs a page fault per 4 KiB page when first written, about as
        /// much time as the pass that writes it. At most [`SCRATCH_KEEP`] values per buffer are
        /// kept.
        static SCRATCH: std::cell::RefCell<[Vec<f64>; SLOTS]> =
            const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
    }

    /// A buffer of at least `len` values from slot `slot` (contents unspecified: every value
    /// read later is written first).
    fn take_scratch(slot: usize, len: usize) -> Vec<f64> {
        let mut v = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot]));
        if v.capacity() < len {
            // Growing would copy the old contents, which are never needed.
            v = vec![0.0; len];
        } else if v.len() < len {
            v.resize(len, 0.0);
        }
        v
    }

    /// Returns a buffer to slot `slot` for the next call (dropped if too large).
    fn give_back_scratch(slot: usize, v: Vec<f64>) {
        if v.capacity() <= SCRATCH_KEEP {
            SCRATCH.with(|s| s.borrow_mut()[slot] = v);
        }
    }

    impl<'a> Columns<'a> {
        fn new(parts: &[(&'a [f64], usize)], n: usize) -> Self {
            let dz = parts.iter().map(|p| p.1).sum();
            Self {
                parts: parts.to_vec(),
                n,
                dz,
            }
        }

        /// `(part values, part width, first column of the part in z)` for each part.
        fn each_part(&self) -> impl Iterator<Item = (&'a [f64], usize, usize)> + '_ {
            self.parts.iter().scan(0, |off, &(v, d)| {
                let o = *off;
                *off += d;
                Some((v, d, o))
            })
        }

        fn blocks(&self) -> usize {
            self.n.div_ceil(ROW_BLOCK)
        }

        /// Per-column `Σ_i (x_ij − shift_j)^p` (p = 2 if `square`, else 1 with no shift):
        /// partial sums over blocks of rows (in parallel), added in block order.
        fn column_sums(&self, shift: &[f64], square: bool) -> Vec<f64> {
            let dz = self.dz;
            let partials = par_ranges(self.blocks(), ROW_BLOCK * dz, |blocks| {
                blocks
                    .map(|b| {
                        let (r0, r1) = (b * ROW_BLOCK, ((b + 1) * ROW_BLOCK).min(self.n));
                        let mut acc = vec![0.0; dz];
                        for (v, d, off) in self.each_part() {
                            accumulate(
                                &v[r0 * d..r1 * d],
                                d,
                                &mut acc[off..off + d],
                                &shift[off..off + d],
                                square,
                            );
                        }
                        acc
                    })
                    .collect::<Vec<_>>()
            });
            let mut out = vec![0.0; dz];
            for acc in partials.into_iter().flatten() {
                for (o, a) in out.iter_mut().zip(acc) {
                    *o += a;
                }
            }
            out
        }

        fn means(&self) -> Vec<f64> {
            let n = self.n as f64;
            let zero = vec![0.0; self.dz];
            self.column_sums(&zero, false)
                .into_iter()
                .map(|s| s / n)
                .collect()
        }

        /// Unbiased variances `Σ (x − mean)² / (n − 1)`.
        fn variances(&self, means: &[f64]) -> Vec<f64> {
            let n = self.n as f64;
            self.column_sums(means, true)
                .into_iter()
                .map(|s| s / (n - 1.0))
                .collect()
        }

        /// `(x_ij − mean_j)·scale_j`, row-major `[n, dz]`.
        fn centred_rows(&self, means: &[f64], scale: &[f64]) -> Vec<f64> {
            let dz = self.dz;
            let mut z = vec![0.0; self.n * dz];
            par_rows_mut(&mut z, dz, dz, |first, rows| {
                for (r, out) in rows.chunks_exact_mut(dz).enumerate() {
                    let i = first + r;
                    for (v, d, off) in self.each_part() {
                        centre_row(
                            &v[i * d..(i + 1) * d],
                            &means[off..off + d],
                            &scale[off..off + d],
                            &mut out[off..off + d],
                        );
                    }
                }
            });
            z
        }

        /// `x_ij − mean_j` transposed, `[dz, n]` (row j = centred column j), with rows `ld`
        /// apart (`n` padded by 8 when it is a multiple of 64, so that rows written together
        /// do not map to the same cache sets), and the unbiased column variances: the means,
        /// then one tiled transposing pass that centres and sums the squares.
        fn centred_transposed(&self) -> CentredT {
            let (n, dz) = (self.n, self.dz);
            let ld = if n % 64 == 0 { n + 8 } else { n };
            let means = self.means();
            let mut zt = take_scratch(SLOT_ZT, dz * ld);
            let out = SharedOut(zt.as_mut_ptr());
            // Blocks of rows in parallel; each returns its columns' sums of squared deviations,
            // added below in block order.
            let partials = par_ranges(self.blocks(), ROW_BLOCK * dz, |blocks| {
                blocks
                    .map(|b| {
                        let (r0, r1) = (b * ROW_BLOCK, ((b + 1) * ROW_BLOCK).min(n));
                        let mut ss = vec![0.0; dz];
                        for (v, d, off) in self.each_part() {
                            transpose_block(
                                v,
                                d,
                                off,
                                &means[off..off + d],
                                r0,
                                r1,
                                out,
                                ld,
                                &mut ss[off..off + d],
                            );
                        }
                        ss
                    })
                    .collect::<Vec<_>>()
            });
            let mut var = vec![0.0; dz];
            for ss in partials.into_iter().flatten() {
                for (v, s) in var.iter_mut().zip(ss) {
                    *v += s;
                }
            }
            var.iter_mut().for_each(|v| *v /= n as f64 - 1.0);
            CentredT { zt, ld, var }
        }
    }

    /// `2 Σ log L_ii` over `0..split` and over all of the Cholesky factor now in `a`.
    fn factor_logdets(a: &[f64], d: usize, split: usize) -> (f64, f64) {
        let lead: f64 = (0..split).map(|j| a[j * d + j].ln()).sum();
        let rest: f64 = (split..d).map(|j| a[j * d + j].ln()).sum();
        (2.0 * lead, 2.0 * (lead + rest))
    }

    fn singular(what: &str, d: usize) -> InfoError {
        InfoError::Input(format!(
            "covariance of {what} is singular or not positive definite (logdet: matrix 0 ({d}x{d}) \
             is not positive definite (singular covariance? add a ridge)); use a ridge > 0 or shrinkage"
        ))
    }

    /// The regularised covariance's diagonal-only part `Λ_j = λ·var_j + ridge·max(var_j, τ)` if
    /// it is positive and normal everywhere (the Gram route needs Λ⁻¹ᐟ²).
    fn lambda(var: &[f64], tau: f64, cfg: &GaussianConfig) -> Option<Vec<f64>> {
        if cfg.ridge <= 0.0 {
            return None;
        }
        let l: Vec<f64> = var
            .iter()
            .map(|&v| cfg.shrinkage * v + cfg.ridge * v.max(tau))
            .collect();
        l.iter().all(|v| v.is_normal() && *v > 0.0).then_some(l)
    }

    /// Whether the regularised covariance of a block of `d` features with variances `var` is
    /// singular by construction: no ridge, and either no shrinkage with fewer than `d + 1`
    /// samples (rank ≤ N − 1 < D) or a constant feature (a zero row). Cholesky would meet a zero
    /// pivot there, but rounding may leave it a tiny positive number instead, so this is
    /// decided exactly rather than left to rounding.
    fn singular_by_construction(n: usize, var: &[f64], cfg: &GaussianConfig) -> bool {
        cfg.ridge == 0.0 && ((cfg.shrinkage == 0.0 && n <= var.len()) || var.contains(&0.0))
    }

    fn tau(var: &[f64]) -> f64 {
        let mean_var = var.iter().sum::<f64>() / var.len() as f64;
        f64::max(1e-8 * mean_var, 1e-12)
    }

    /// Approximate flops of the two routes: (direct, gram). `chol_n` is the number of `N × N`
    /// factorisations of the Gram route, `extra_d` the size of the extra direct factorisation.
    fn costs(n: usize, dz: usize, extra_d: usize, chol_n: usize) -> (f64, f64) {
        let (n, dz, e) = (n as f64, dz as f64, extra_d as f64);
        let direct = 0.6 * n * dz * dz + (dz * dz * dz + e * e * e) / 3.0;
        let gram = 0.6 * n * n * dz + chol_n as f64 * n * n * n / 3.0;
        (direct, gram)
    }

    /// The centred data scaled for the Gram route, row-major `[n, dz]`:
    /// `B = Xc Λ^{−1/2} √((1 − λ)/(N − 1))`.
    fn scaled(cols: &Columns<'_>, means: &[f64], lam: &[f64], cfg: &GaussianConfig) -> Vec<f64> {
        let s = (1.0 - cfg.shrinkage) / (cols.n as f64 - 1.0);
        let f: Vec<f64> = lam.iter().map(|l| (s / l).sqrt()).collect();
        cols.centred_rows(means, &f)
    }

    /// `log det(I + G)` for the lower triangle of `g` (`n × n`); None if not finite / not PD.
    fn logdet_identity_plus(mut g: Vec<f64>, n: usize) -> Option<f64> {
        for i in 0..n {
            g[i * n + i] += 1.0;
        }
        cholesky_in_place(&mut g, n).ok()?;
        let ld = factor_logdets(&g, n, 0).1;
        ld.is_finite().then_some(ld)
    }

    /// The regularised covariance (lower triangle) of the centred `z`, as the tensor path builds
    /// it: `cov·(1 − λ) + diag(var)·λ + ridge·diag(max(var, τ))`, `cov = zᵀz/(n − 1)`.
    fn regularised_cov(ct: &CentredT, n: usize, tau: f64, cfg: &GaussianConfig) -> Vec<f64> {
        let var = &ct.var;
        let dz = var.len();
        let mut c = take_scratch(SLOT_COV, dz * dz);
        gram_lower_into(&ct.zt, dz, n, ct.ld, &mut c);
        c.truncate(dz * dz);
        let inv = 1.0 / (n as f64 - 1.0);
        par_rows_mut(&mut c, dz, dz / 2 + 1, |first, rows| {
            for (r, row) in rows.chunks_exact_mut(dz).enumerate() {
                let i = first + r;
                for v in row[..i].iter_mut() {
                    *v *= inv;
                    if cfg.shrinkage > 0.0 {
                        *v *= 1.0 - cfg.shrinkage;
                    }
                }
                let mut dv = row[i] * inv;
                if cfg.shrinkage > 0.0 {
                    dv = dv * (1.0 - cfg.shrinkage) + var[i] * cfg.shrinkage;
                }
                if cfg.ridge > 0.0 {
                    dv += var[i].max(tau) * cfg.ridge;
                }
                row[i] = dv;
            }
        });
        c
    }

    /// `log det Σ_reg(x)` for `x: [n, d]` row-major.
    pub(super) fn entropy_logdet(
        x: &[f64],
        n: usize,
        d: usize,
        cfg: &GaussianConfig,
    ) -> Result<f64> {
        let cols = Columns::new(&[(x, d)], n);
        let (direct, gram) = costs(n, d, 0, 1);
        if gram < direct && cfg.ridge > 0.0 {
            let means = cols.means();
            let var = cols.variances(&means);
            if let Some(lam) = lambda(&var, tau(&var), cfg) {
                let b = scaled(&cols, &means, &lam, cfg);
                if let Some(ld) = logdet_identity_plus(gram_lower(&b, n, d, d), n) {
                    return Ok(lam.iter().map(|l| l.ln()).sum::<f64>() + ld);
                }
            }
        }
        let ct = cols.centred_transposed();
        if singular_by_construction(n, &ct.var, cfg) {
            return Err(singular("x", d));
        }
        let mut c = regularised_cov(&ct, n, tau(&ct.var), cfg);
        drop(ct);
        cholesky_in_place(&mut c, d).map_err(|_| singular("x", d))?;
        let ld = factor_logdets(&c, d, 0).1;
        give_back_scratch(SLOT_COV, c);
        Ok(ld)
    }

    /// `I(x; y)` for `x: [n, dx]`, `y: [n, dy]` row-major.
    pub(super) fn mi(
        x: &[f64],
        y: &[f64],
        n: usize,
        dx: usize,
        dy: usize,
        cfg: &GaussianConfig,
    ) -> Result<f64> {
        let dz = dx + dy;
        let cols = Columns::new(&[(x, dx), (y, dy)], n);
        let (direct, gram) = costs(n, dz, dy, 3);
        if gram < direct && cfg.ridge > 0.0 {
            let means = cols.means();
            let var = cols.variances(&means);
            if let Some(lam) = lambda(&var, tau(&var), cfg) {
                let b = scaled(&cols, &means, &lam, cfg);
                let gx = gram_lower(&b, n, dx, dz);
                let gy = gram_lower(&b[dx..], n, dy, dz);
                let gz: Vec<f64> = gx.iter().zip(&gy).map(|(a, b)| a + b).collect();
                if let (Some(lx), Some(ly), Some(lz)) = (
                    logdet_identity_plus(gx, n),
                    logdet_identity_plus(gy, n),
                    logdet_identity_plus(gz, n),
                ) {
                    return Ok(((lx + ly) - lz) * 0.5);
                }
            }
        }
        let ct = cols.centred_transposed();
        let var = &ct.var;
        // The tensor path checks Σ_X, then Σ_Y, then Σ_Z: report the first that fails.
        for (what, v) in [("x", &var[..dx]), ("y", &var[dx..]), ("[x, y]", &var[..])] {
            if singular_by_construction(n, v, cfg) {
                return Err(singular(what, v.len()));
            }
        }
        let mut c = regularised_cov(&ct, n, tau(var), cfg);
        drop(ct);
        // Σ_Y is the trailing block; copy its lower triangle before factorising Σ_Z.
        let mut cy = take_scratch(SLOT_COV_Y, dy * dy);
        cy.truncate(dy * dy);
        for i in 0..dy {
            let src = &c[(dx + i) * dz + dx..(dx + i) * dz + dx + i + 1];
            cy[i * dy..i * dy + i + 1].copy_from_slice(src);
        }
        let y_factor = |cy: &mut Vec<f64>| cholesky_in_place(cy, dy).map_err(|_| singular("y", dy));
        if let Err(j) = cholesky_in_place(&mut c, dz) {
            if j < dx {
                return Err(singular("x", dx));
            }
            y_factor(&mut cy)?;
            return Err(singular("[x, y]", dz));
        }
        let (lx, lz) = factor_logdets(&c, dz, dx);
        give_back_scratch(SLOT_COV, c);
        y_factor(&mut cy)?;
        let ly = factor_logdets(&cy, dy, 0).1;
        give_back_scratch(SLOT_COV_Y, cy);
        Ok(((lx + ly) - lz) * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn errors_name_the_problem() {
        let dev = Device::Cpu;
        let one = Tensor::zeros((1, 3), DType::F64, &dev).unwrap();
        let e = gaussian_entropy(&one, &GaussianConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2 samples"), "{e}");
        let x = Tensor::zeros((4, 2), DType::F64, &dev).unwrap();
        let y = Tensor::zeros((5, 2), DType::F64, &dev).unwrap();
        let e = gaussian_mi(&x, &y, &GaussianConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("same number of samples"), "{e}");
        let bad = GaussianConfig {
            ridge: -1.0,
            ..Default::default()
        };
        assert!(gaussian_entropy(&x, &bad)
            .unwrap_err()
            .to_string()
            .contains("ridge"));
        let nan = Tensor::new(&[[1.0f64, f64::NAN], [0.0, 1.0]], &dev).unwrap();
        let e = gaussian_entropy(&nan, &GaussianConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN"), "{e}");
        // Singular covariance without ridge: an error, not NaN.
        let none = GaussianConfig {
            ridge: 0.0,
            shrinkage: 0.0,
        };
        let e = gaussian_entropy(&x, &none).unwrap_err().to_string();
        assert!(e.contains("singular"), "{e}");
    }

    /// The fused f64 path (untracked inputs) against the differentiable tensor graph (the same
    /// inputs as tracked variables), on both of its routes (direct covariance, N×N Gram) and
    /// with every regularisation.
    #[test]
    fn fused_path_matches_the_tensor_graph() {
        let dev = Device::Cpu;
        let mut rng = modbal_tensors::SeededRng::new(5);
        let cfgs = [
            GaussianConfig::default(),
            GaussianConfig {
                ridge: 1e-3,
                shrinkage: 0.3,
            },
            GaussianConfig {
                ridge: 0.0,
                shrinkage: 0.4,
            },
            GaussianConfig {
                ridge: 0.0,
                shrinkage: 0.0,
            },
            GaussianConfig {
                ridge: 0.1,
                shrinkage: 1.0,
            },
        ];
        for &(n, dx, dy) in &[
            (5, 3, 2),
            (40, 7, 9),
            (30, 50, 40),
            (300, 20, 10),
            (64, 150, 90),
        ] {
            let xv = rng.normal_vec(n * dx, 0.5, 2.0);
            let ev = rng.normal_vec(n * dy, 0.0, 1.0);
            let yv: Vec<f64> = (0..n * dy)
                .map(|k| 0.7 * xv[(k / dy) * dx + k % dy.min(dx)] + ev[k])
                .collect();
            let x = Tensor::from_vec(xv, (n, dx), &dev).unwrap();
            let y = Tensor::from_vec(yv, (n, dy), &dev).unwrap();
            let xt = candle_core::Var::from_tensor(&x).unwrap();
            let yt = candle_core::Var::from_tensor(&y).unwrap();
            for cfg in &cfgs {
                let close =
                    |fast: Result<Tensor>, slow: Result<Tensor>, what: &str| match (fast, slow) {
                        (Ok(a), Ok(b)) => {
                            let (a, b) =
                                (a.to_scalar::<f64>().unwrap(), b.to_scalar::<f64>().unwrap());
                            let tol = 1e-8 * b.abs().max(1.0);
                            assert!(
                                (a - b).abs() <= tol,
                                "{what} n={n} dx={dx} dy={dy} {cfg:?}: {a} vs {b}"
                            );
                        }
                        (Err(a), Err(b)) => {
                            // The tensor path's message may carry a candle backtrace after its first
                            // line (RUST_BACKTRACE); compare up to there.
                            let (a, b) = (a.to_string(), b.to_string());
                            assert!(a.starts_with(b.lines().next().unwrap()), "{a} vs {b}");
                        }
                        (a, b) => panic!("{what} n={n} dx={dx} dy={dy} {cfg:?}: {a:?} vs {b:?}"),
                    };
                close(
                    gaussian_mi(&x, &y, cfg),
                    gaussian_mi(xt.as_tensor(), yt.as_tensor(), cfg),
                    "mi",
                );
                close(
                    gaussian_entropy(&x, cfg),
                    gaussian_entropy(xt.as_tensor(), cfg),
                    "entropy",
                );
                close(
                    gaussian_entropy(&y, cfg),
                    gaussian_entropy(yt.as_tensor(), cfg),
                    "entropy y",
                );
            }
        }
    }

    #[test]
    fn constant_features_give_a_defined_value_with_the_default_ridge() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f64, 5.0], [2.0, 5.0], [4.0, 5.0]], &dev).unwrap();
        let y = Tensor::new(&[[3.0f64], [1.0], [0.0]], &dev).unwrap();
        let h = gaussian_entropy(&x, &GaussianConfig::default())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(h.is_finite());
        let mi = gaussian_mi(&x, &y, &GaussianConfig::default())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(mi.is_finite() && mi >= -1e-9, "{mi}");
    }
}
