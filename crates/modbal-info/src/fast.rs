//! The shared machinery of the estimators' fast paths (each estimator's own loops sit next to
//! it, e.g. in `gaussian`'s private `fast` module): whether a fast path applies
//! ([`untracked_f64`], [`cpu_f64`]), run-time AVX2 dispatch (`simd_fn!`), work split over threads
//! ([`par_ranges`], [`par_rows_mut`]), lane sums, vectorisable `exp` / `ln` ([`vm`]), and a fast
//! value attached to a differentiable graph ([`attach`]).
//!
//! The estimators are written as chains of differentiable candle ops, so that they can sit inside
//! a loss. When an estimate is only *read* (monitoring, evaluation, benchmarks), that graph costs a
//! full pass over memory, an allocation and often a single-threaded loop per op. So each tensor
//! estimator first tries a fused path: when **no input tracks gradients** and every input is a
//! contiguous **f64** tensor on the **CPU**, the value is computed by the loops here (one or two
//! passes, split over candle's thread pool, `RAYON_NUM_THREADS`), in f64 like the tensor path.
//! Otherwise (a tracked input, f32, another device) the differentiable graph is built as before,
//! so gradients are exactly those of the documented formulas.
//!
//! The fused paths compute the same quantities with the same conventions (floors, clamps, the
//! regularisation, validation and error messages); what differs is rounding: the summation
//! order, and `exp`/`ln` from [`vm`] (fdlibm's algorithms, < 1 ulp) instead of the C library's.
//! The tests of each estimator compare both paths (relative differences of order 1e-15). Work
//! split over threads is reduced per row (or per fixed block) and then summed in order, so the
//! fast paths' results do not depend on the number of threads.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use std::ops::Range;

/// Whether the CPU has AVX2 and FMA (cached by the standard library after the first call).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled twice, for AVX2 + FMA (chosen at run time when the
/// CPU has them, so that its loops vectorise 4-wide) and for the baseline target. The body must
/// not call `f64::mul_add` (it would be a library call in the baseline build): both builds then
/// round identically.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    generic($($arg),*)
                }
                if $crate::fast::has_avx2() {
                    // SAFETY: the CPU has the enabled features (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Below this much work (the callers' costs are rough nanosecond estimates, so ≈ 0.2 ms) a
/// kernel runs on the calling thread: handing work to the pool costs tens of microseconds.
const PAR_MIN_WORK: usize = 200_000;

/// Threads to use: candle's count (`RAYON_NUM_THREADS`, else the number of CPUs).
pub(crate) fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// Runs `f(slices)` on the data of `ts` when every tensor is an untracked, contiguous f64 CPU
/// tensor; `None` otherwise (the caller then takes the differentiable tensor path).
pub(crate) fn untracked_f64<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f64]]) -> R) -> Option<R> {
    if ts.iter().any(|t| t.track_op()) {
        return None;
    }
    cpu_f64(ts, f)
}

/// Runs `f(slices)` on the data of `ts` when every tensor is a contiguous f64 CPU tensor
/// (tracked or not); `None` otherwise, and while the device-generic paths are forced
/// (`modbal_tensors::ops::force_generic`, `MODBAL_GENERIC_OPS=1`), so that a CPU run can take the
/// tensor paths a GPU takes.
pub(crate) fn cpu_f64<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f64]]) -> R) -> Option<R> {
    if modbal_tensors::ops::generic_forced()
        || ts
            .iter()
            .any(|t| t.dtype() != DType::F64 || !t.device().is_cpu())
    {
        return None;
    }
    // Read locks on the storages, held while `f` runs (as candle's own CPU ops do).
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[f64]> = Vec::with_capacity(ts.len());
    for (g, l) in &guards {
        match (&**g, l.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F64(v)), Some((a, b))) => slices.push(&v[a..b]),
            _ => return None,
        }
    }
    Some(f(&slices))
}

/// Whether every value is finite (no NaN, no ±∞): exponent bits not all ones, an integer
/// test the compiler vectorises.
pub(crate) fn all_finite(v: &[f64]) -> bool {
    simd_fn! {
        fn go(v: &[f64]) -> bool {
            const EXP: u64 = 0x7ff0_0000_0000_0000;
            v.iter().fold(0u64, |bad, x| bad | u64::from(x.to_bits() & EXP == EXP)) == 0
        }
    }
    go(v)
}

/// [`all_finite`] for f32.
fn all_finite_f32(v: &[f32]) -> bool {
    simd_fn! {
        fn go(v: &[f32]) -> bool {
            const EXP: u32 = 0x7f80_0000;
            v.iter().fold(0u32, |bad, x| bad | u32::from(x.to_bits() & EXP == EXP)) == 0
        }
    }
    go(v)
}

/// Whether every value of a contiguous f32/f64 CPU tensor is finite, read in place (no copy);
/// `None` for any other tensor.
pub(crate) fn tensor_all_finite(t: &Tensor) -> Option<bool> {
    let (g, l) = t.storage_and_layout();
    let (a, b) = l.contiguous_offsets()?;
    match &*g {
        Storage::Cpu(CpuStorage::F64(v)) => Some(all_finite(&v[a..b])),
        Storage::Cpu(CpuStorage::F32(v)) => Some(all_finite_f32(&v[a..b])),
        _ => None,
    }
}

/// Splits `0..n` into contiguous ranges, one per thread when `n · cost` is large enough, runs
/// `f` on each (in parallel, on candle's rayon pool) and returns the results in range order.
pub(crate) fn par_ranges<R: Send>(
    n: usize,
    cost_per_item: usize,
    f: impl Fn(Range<usize>) -> R + Sync,
) -> Vec<R> {
    let parts = if n.saturating_mul(cost_per_item) < PAR_MIN_WORK {
        1
    } else {
        threads().min(n).max(1)
    };
    if parts <= 1 {
        return vec![f(0..n)];
    }
    let chunk = n.div_ceil(parts);
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        (0..parts).map(|_| std::sync::Mutex::new(None)).collect();
    candle_core::cpu::kernels::par_for_each(parts, |p| {
        let r = f((p * chunk).min(n)..((p + 1) * chunk).min(n));
        *slots[p].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every part ran")
        })
        .collect()
}

/// `f(first_row, rows)` over row blocks of the row-major `out` (rows of `row_len` values), in
/// parallel when worth it.
pub(crate) fn par_rows_mut(
    out: &mut [f64],
    row_len: usize,
    cost_per_row: usize,
    f: impl Fn(usize, &mut [f64]) + Sync,
) {
    let n = out.len().checked_div(row_len).unwrap_or(0);
    let parts = if n.saturating_mul(cost_per_row) < PAR_MIN_WORK {
        1
    } else {
        threads().min(n).max(1)
    };
    if parts <= 1 {
        f(0, out);
        return;
    }
    let chunk = n.div_ceil(parts);
    let blocks: Vec<std::sync::Mutex<(usize, &mut [f64])>> = out
        .chunks_mut(chunk * row_len)
        .enumerate()
        .map(|(p, b)| std::sync::Mutex::new((p * chunk, b)))
        .collect();
    candle_core::cpu::kernels::par_for_each(blocks.len(), |p| {
        let mut g = blocks[p].lock().unwrap_or_else(|e| e.into_inner());
        let (first, ref mut rows) = *g;
        f(first, rows);
    });
}

/// A scalar f64 CPU tensor.
pub(crate) fn scalar(v: f64) -> candle_core::Result<Tensor> {
    Tensor::new(v, &candle_core::Device::Cpu)
}

// ---------------------------------------------------------------------------------------------
// vectorisable exp / ln
// ---------------------------------------------------------------------------------------------

/// `exp` and `ln` over slices, written branch-free so that the compiler vectorises them (AVX2
/// with FMA when the CPU has it, detected at run time; SSE2 otherwise). `f64::exp`/`f64::ln` call
/// the C library once per element, which makes them the bottleneck of the elementwise estimators
/// (NumPy uses SIMD implementations too).
///
/// The algorithms are fdlibm's (`e_exp.c`, `e_log.c`, as in musl and glibc's reference code):
/// Cody–Waite argument reduction and the same minimax polynomials (fdlibm bounds their error
/// below 1 ulp; the tests check every result within 1 ulp of the C library's). The AVX2 build
/// evaluates the polynomials with fused multiply-adds, the baseline build with separate products;
/// results may differ in the last bit.
// The constants are fdlibm's, digit for digit.
#[allow(clippy::excessive_precision)]
pub(crate) mod vm {
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    const P1: f64 = 1.666_666_666_666_660_190_37e-1;
    const P2: f64 = -2.777_777_777_701_559_338_42e-3;
    const P3: f64 = 6.613_756_321_437_934_361_17e-5;
    const P4: f64 = -1.653_390_220_546_525_153_90e-6;
    const P5: f64 = 4.138_136_797_057_238_460_39e-8;
    const LG1: f64 = 6.666_666_666_666_735_130e-1;
    const LG2: f64 = 3.999_999_999_940_941_908e-1;
    const LG3: f64 = 2.857_142_874_366_239_149e-1;
    const LG4: f64 = 2.222_219_843_214_978_396e-1;
    const LG5: f64 = 1.818_357_216_161_805_012e-1;
    const LG6: f64 = 1.531_383_769_920_937_332e-1;
    const LG7: f64 = 1.479_819_860_511_658_591e-1;
    /// 1.5·2⁵²: adding it rounds to an integer held in the low mantissa bits.
    const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

    /// `2^k` for integer `k` in [−1022, 1023].
    #[inline(always)]
    fn pow2(k: i64) -> f64 {
        f64::from_bits(((k + 1023) as u64) << 52)
    }

    /// `a·b + c`, fused (one rounding) in the AVX2 + FMA build.
    #[inline(always)]
    fn fma<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
        if F {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    /// e^x for any x (NaN → NaN, −∞ → 0, +∞ → +∞), error < 1 ulp.
    #[inline(always)]
    pub(crate) fn exp<const F: bool>(x: f64) -> f64 {
        // Clamping keeps k in range; e^−1000 = 0 and e^710 = ∞ in f64 anyway. NaN passes
        // through `clamp` and poisons the result as it should.
        let xc = x.clamp(-1000.0, 710.0);
        // k = round(x / ln 2), as a float and (from the same bits) as an integer; integer
        // conversions of packed f64 need AVX-512, bit arithmetic does not.
        let shifted = fma::<F>(xc, INV_LN2, ROUND_MAGIC);
        let k = shifted.to_bits() as i64 - ROUND_MAGIC.to_bits() as i64;
        let kf = shifted - ROUND_MAGIC;
        let hi = fma::<F>(-kf, LN2_HI, xc);
        let lo = kf * LN2_LO;
        let r = hi - lo;
        let t = r * r;
        let p = fma::<F>(t, fma::<F>(t, fma::<F>(t, fma::<F>(t, P5, P4), P3), P2), P1);
        let c = fma::<F>(-t, p, r);
        let y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
        // 2^k as two factors, each a normal number, so that results in the subnormal range and
        // the overflow to ∞ come out right (k + 2048 ≥ 0: a logical shift halves it).
        let k1 = (((k + 2048) as u64) >> 1) as i64 - 1024;
        y * pow2(k1) * pow2(k - k1)
    }

    /// ln x for **positive normal** x (the callers floor their arguments at ≥ 1e-12), error
    /// < 1 ulp. Other inputs give unspecified values.
    #[inline(always)]
    pub(crate) fn ln_pos<const F: bool>(x: f64) -> f64 {
        // x = 2^k · m with m in [√½, √2) (fdlibm: shift the high word so that mantissas from
        // √2 (0x3fe6a09e…) up carry into the exponent).
        let hx = x.to_bits().wrapping_add(0x0009_5f62_0000_0000);
        let biased = hx >> 52;
        let m = f64::from_bits((hx & 0x000f_ffff_ffff_ffff) + 0x3fe6_a09e_0000_0000);
        // k as f64 without an integer conversion: (2⁵² + biased) − (2⁵² + 1023).
        let dk =
            f64::from_bits(0x4330_0000_0000_0000 | biased) - (4_503_599_627_370_496.0 + 1023.0);
        let f = m - 1.0;
        let hfsq = 0.5 * f * f;
        let s = f / (2.0 + f);
        let z = s * s;
        let w = z * z;
        let t1 = w * fma::<F>(w, fma::<F>(w, LG6, LG4), LG2);
        let t2 = z * fma::<F>(w, fma::<F>(w, fma::<F>(w, LG7, LG5), LG3), LG1);
        let r = t2 + t1;
        fma::<F>(
            dk,
            LN2_HI,
            -((hfsq - fma::<F>(s, hfsq + r, dk * LN2_LO)) - f),
        )
    }

    #[inline(always)]
    fn map_generic(v: &mut [f64], f: impl Fn(f64) -> f64) {
        for x in v.iter_mut() {
            *x = f(*x);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_avx2(v: &mut [f64]) {
        map_generic(v, exp::<true>)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ln_avx2(v: &mut [f64]) {
        map_generic(v, ln_pos::<true>)
    }

    #[cfg(target_arch = "x86_64")]
    use super::has_avx2;

    /// `v[i] = e^{v[i]}`.
    pub(crate) fn exp_in_place(v: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has the features (checked).
            unsafe { exp_avx2(v) };
            return;
        }
        map_generic(v, exp::<false>)
    }

    /// `v[i] = ln v[i]` for positive normal values (see [`ln_pos`]).
    pub(crate) fn ln_in_place(v: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has the features (checked).
            unsafe { ln_avx2(v) };
            return;
        }
        map_generic(v, ln_pos::<false>)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn ulps(a: f64, b: f64) -> u64 {
            if a == b {
                return 0;
            }
            (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
        }

        #[test]
        fn exp_and_ln_match_the_c_library_within_one_ulp() {
            let mut rng = modbal_tensors::SeededRng::new(3);
            let mut xs: Vec<f64> = (0..200_000)
                .map(|_| rng.uniform() * 1400.0 - 745.0)
                .collect();
            xs.extend((0..200_000).map(|_| rng.uniform() * 4.0 - 2.0));
            xs.extend((0..20_000).map(|_| (rng.uniform() - 0.5) * 1e-9));
            xs.extend([
                0.0, -0.0, 1.0, -1.0, 709.7, 709.79, 710.0, -708.4, -744.0, -745.2, -800.0, -1e300,
                1e300,
            ]);
            let mut v = xs.clone();
            exp_in_place(&mut v);
            let mut w = xs.clone();
            map_generic(&mut w, exp::<false>);
            for ((&x, &a), &b) in xs.iter().zip(&v).zip(&w) {
                let e = x.exp();
                for r in [a, b] {
                    // Subnormal results carry fewer bits; compare absolutely there.
                    if e < f64::MIN_POSITIVE {
                        assert!((r - e).abs() <= 2.0 * 4.9e-324, "exp({x}) = {r}, libm {e}");
                    } else {
                        assert!(ulps(r, e) <= 1, "exp({x}) = {r}, libm {e}");
                    }
                }
            }
            for f in [exp::<false>, exp::<true>] {
                assert!(f(f64::NAN).is_nan());
                assert_eq!(f(f64::NEG_INFINITY), 0.0);
                assert_eq!(f(f64::INFINITY), f64::INFINITY);
            }

            let mut ps: Vec<f64> = (0..200_000).map(|_| rng.uniform()).collect();
            ps.extend((0..200_000).map(|_| (rng.uniform() * 1400.0 - 700.0).exp()));
            ps.extend((0..20_000).map(|_| 1.0 + (rng.uniform() - 0.5) * 1e-6));
            ps.extend([
                1.0,
                1e-12,
                f64::MIN_POSITIVE,
                f64::MAX,
                2.0,
                0.5,
                std::f64::consts::SQRT_2,
            ]);
            let mut v = ps.clone();
            ln_in_place(&mut v);
            for (&p, &a) in ps.iter().zip(&v) {
                for r in [a, ln_pos::<false>(p)] {
                    assert!(ulps(r, p.ln()) <= 1, "ln({p}) = {r}, libm {}", p.ln());
                }
            }
        }
    }
}

/// `Σ a_i` with eight independent partial sums.
#[inline(always)]
pub(crate) fn sum_lanes(a: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let ra = ca.remainder();
    for x in ca {
        for k in 0..8 {
            acc[k] += x[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in ra {
        s += x;
    }
    s
}

/// A value computed by a fused kernel, attached to the autodiff graph of `arg`: the forward
/// returns the value, the backward differentiates `reference(arg)` (the estimator's tensor
/// formulation, rebuilt on a copy of `arg`). Used where the fused path's inputs do not track
/// gradients but parameters do (CLUB's q): the estimate stays differentiable in them.
struct Attached<F> {
    value: f64,
    reference: F,
}

impl<F> candle_core::CustomOp1 for Attached<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync,
{
    fn name(&self) -> &'static str {
        "modbal-info-fused-estimate"
    }

    fn cpu_fwd(
        &self,
        _s: &CpuStorage,
        _l: &candle_core::Layout,
    ) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        Ok((
            CpuStorage::F64(vec![self.value]),
            candle_core::Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let v = candle_core::Var::from_tensor(&arg.detach())?;
        let out = (self.reference)(v.as_tensor())?;
        let grads = (out * grad_res.detach())?.sum_all()?.backward()?;
        Ok(grads.get(v.as_tensor()).cloned())
    }
}

/// The scalar f64 tensor `value`, differentiable in `arg` as `reference(arg)` is (see
/// [`Attached`]); `arg` must be an f64 CPU tensor.
pub(crate) fn attach<F>(value: f64, arg: &Tensor, reference: F) -> candle_core::Result<Tensor>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    arg.apply_op1(Attached { value, reference })
}

/// `(Σ v, min v, all finite)`, each a vectorisable pass (the row is in cache after the first).
#[inline(always)]
pub(crate) fn sum_min_finite(v: &[f64]) -> (f64, f64, bool) {
    const EXP: u64 = 0x7ff0_0000_0000_0000;
    let finite = v
        .iter()
        .fold(0u64, |bad, x| bad | u64::from(x.to_bits() & EXP == EXP))
        == 0;
    let mut m = [f64::INFINITY; 4];
    let c = v.chunks_exact(4);
    let r = c.remainder();
    for x in c {
        for k in 0..4 {
            m[k] = if x[k] < m[k] { x[k] } else { m[k] };
        }
    }
    let min = r.iter().chain(&m).copied().fold(f64::INFINITY, f64::min);
    (sum_lanes(v), min, finite)
}

/// `max v` of finite values (eight lanes).
#[inline(always)]
pub(crate) fn max_lanes(v: &[f64]) -> f64 {
    let mut m = [f64::NEG_INFINITY; 8];
    let c = v.chunks_exact(8);
    let r = c.remainder();
    for x in c {
        for k in 0..8 {
            m[k] = if x[k] > m[k] { x[k] } else { m[k] };
        }
    }
    let mut max = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for &x in r {
        max = max.max(x);
    }
    max
}
