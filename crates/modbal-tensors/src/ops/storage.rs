//! What every CPU op of this module shares: the element types (`Elem`), the contiguous slice of a
//! storage, and the f32/f64 dispatch over candle's CPU storages (`float_dispatch!`,
//! `float_dispatch2!`).

use candle_core::{Layout, Result};

/// Element types of the fused CPU ops (f32, f64).
pub(super) trait Elem: crate::cpu::simd::Float {}
impl Elem for f32 {}
impl Elem for f64 {}

/// The elements of a contiguous layout (an error for strided storage: the ops make their inputs
/// contiguous first).
pub(super) fn contiguous_slice<'a, T: candle_core::WithDType>(
    v: &'a [T],
    l: &Layout,
) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("modbal op expects a contiguous tensor"),
    }
}

/// Runs `$body` with `$v` bound to the f32 or f64 slice of a contiguous CPU storage and wraps
/// the resulting `Vec` back into a storage of the same type.
macro_rules! float_dispatch {
    ($op:expr, $s:expr, $l:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(v) => {
                let $v = contiguous_slice(v, $l)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(v) => {
                let $v = contiguous_slice(v, $l)?;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!("{} supports f32 and f64, got {:?}", $op, other.dtype()),
        }
    };
}

/// The f32/f64 slices of two (or three) storages of the same dtype.
macro_rules! float_dispatch2 {
    ($op:expr, ($s1:expr, $l1:expr), ($s2:expr, $l2:expr), |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($a, $b) = (contiguous_slice(a, $l1)?, contiguous_slice(b, $l2)?);
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($a, $b) = (contiguous_slice(a, $l1)?, contiguous_slice(b, $l2)?);
                CpuStorage::F64($body)
            }
            (a, b) => candle_core::bail!(
                "{}: f32 or f64 operands of one dtype expected, got {:?} and {:?}",
                $op,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}
pub(super) use float_dispatch;
pub(super) use float_dispatch2;
