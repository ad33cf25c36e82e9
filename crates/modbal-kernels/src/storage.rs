//! Storage access shared by the ops' CPU paths (and the CUDA launcher's dtype error): the
//! elements of a contiguous layout and the unsupported-dtype error.

use candle_core::{DType, Layout, Result};

/// The elements of a contiguous layout (an error for strided storage: the wrappers call
/// `.contiguous()` first).
pub(crate) fn contiguous_slice<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("modbal-kernels: non-contiguous input {:?}", l),
    }
}

/// The error of an op given a dtype other than f32 and f64.
pub(crate) fn unsupported_dtype(op: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op}: only f32 and f64 are supported, got {dtype:?}"
    ))
}
