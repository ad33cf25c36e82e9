//! Pooling: [`max_pool2d`] with any kernel, stride and padding and a backward that routes each
//! output's gradient to the first arg-max of its window (as PyTorch), and [`global_avg_pool`]
//! as one fused op on CPU f32/f64. Off the CPU (or forced) max-pooling takes the generic path
//! of `generic.rs`.

use super::dispatch::use_fast_cpu;
use super::generic;
use super::storage::{contiguous_slice, float_dispatch, Elem};
use crate::cpu::pool::{
    max_pool_2x2_plane, max_pool_plane, plane_means, plane_spread, pool_columns,
};
use crate::window::Window;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct MaxPool {
    win: Window,
    /// Arg-max indices of the forward pass, kept for the backward (filled by `cpu_fwd`).
    arg: std::sync::Arc<std::sync::Mutex<Option<Vec<u32>>>>,
}

/// Returns (values, argmax flat index into the input plane) for each output cell: the 2×2 /
/// stride-2 window (unpadded) by its own vectorised kernel, every other window by the general
/// one; both scan row-major, first maximum wins, NaN propagates (as PyTorch).
fn max_pool_fwd<T: Elem>(x: &[T], dims: &[usize], win: &Window) -> Result<(Vec<T>, Vec<u32>)> {
    let (b, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let (ho, wo) = win.out_hw(h, w)?;
    let two_by_two = (
        win.kh, win.kw, win.sh, win.sw, win.ph, win.pw, win.dh, win.dw,
    ) == (2, 2, 2, 2, 0, 0, 1, 1);
    let mut out = vec![T::from_f64(0.0); b * c * ho * wo];
    let mut arg = vec![0u32; b * c * ho * wo];
    let cols = if two_by_two {
        Vec::new()
    } else {
        pool_columns(w, win, wo)
    };
    crate::threads::keep_warm();
    out.par_chunks_mut(ho * wo)
        .zip(arg.par_chunks_mut(ho * wo))
        .enumerate()
        .for_each(|(bc, (o, a))| {
            let plane = &x[bc * h * w..(bc + 1) * h * w];
            if two_by_two {
                max_pool_2x2_plane(plane, w, o, a, wo);
            } else {
                max_pool_plane(plane, h, w, win, &cols, o, a, wo);
            }
        });
    Ok((out, arg))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "modbal-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let (ho, wo) = self.win.out_hw(dims[2], dims[3])?;
        let shape = Shape::from((dims[0], dims[1], ho, wo));
        let (st, arg) = match s {
            CpuStorage::F32(v) => {
                let (o, a) = max_pool_fwd(contiguous_slice(v, l)?, dims, &self.win)?;
                (CpuStorage::F32(o), a)
            }
            CpuStorage::F64(v) => {
                let (o, a) = max_pool_fwd(contiguous_slice(v, l)?, dims, &self.win)?;
                (CpuStorage::F64(o), a)
            }
            _ => candle_core::bail!("max_pool2d supports f32 and f64, got {:?}", s.dtype()),
        };
        if let Ok(mut slot) = self.arg.lock() {
            *slot = Some(arg);
        }
        Ok((st, shape))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // The forward's arg-max indices (lent to the backward op and put back afterwards, so a
        // second backward over the same graph finds them too; recomputed if missing).
        let cached = self.arg.lock().ok().and_then(|mut a| a.take());
        let op = MaxPoolBwd {
            win: self.win,
            arg: std::sync::Mutex::new(cached),
        };
        let g = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &op)?;
        if let Ok(mut back) = op.arg.lock() {
            if let (Ok(mut slot), Some(a)) = (self.arg.lock(), back.take()) {
                *slot = Some(a);
            }
        }
        Ok(Some(g))
    }
}

struct MaxPoolBwd {
    win: Window,
    arg: std::sync::Mutex<Option<Vec<u32>>>,
}

fn max_pool_bwd<T: Elem>(
    x: &[T],
    dims: &[usize],
    g: &[T],
    win: &Window,
    cached: &std::sync::Mutex<Option<Vec<u32>>>,
) -> Result<Vec<T>> {
    let (b, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let (ho, wo) = win.out_hw(h, w)?;
    let mut slot = cached
        .lock()
        .map_err(|_| candle_core::Error::Msg("max_pool2d: poisoned arg-max cache".into()))?;
    let arg = match slot.take() {
        Some(a) if a.len() == b * c * ho * wo => a,
        _ => max_pool_fwd(x, dims, win)?.1,
    };
    let mut gx = vec![T::from_f64(0.0); b * c * h * w];
    crate::threads::keep_warm();
    gx.par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(bc, plane)| {
            let a = &arg[bc * ho * wo..(bc + 1) * ho * wo];
            let gg = &g[bc * ho * wo..(bc + 1) * ho * wo];
            for (i, &idx) in a.iter().enumerate() {
                plane[idx as usize] += gg[i];
            }
        });
    *slot = Some(arg);
    Ok(gx)
}

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "modbal-max-pool2d-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let shape = l1.shape().clone();
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => Ok((
                CpuStorage::F32(max_pool_bwd(
                    contiguous_slice(x, l1)?,
                    dims,
                    contiguous_slice(g, l2)?,
                    &self.win,
                    &self.arg,
                )?),
                shape,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => Ok((
                CpuStorage::F64(max_pool_bwd(
                    contiguous_slice(x, l1)?,
                    dims,
                    contiguous_slice(g, l2)?,
                    &self.win,
                    &self.arg,
                )?),
                shape,
            )),
            _ => candle_core::bail!("max_pool2d backward: dtype mismatch"),
        }
    }
}

/// Max-pooling over `kernel × kernel` windows with `stride` and zero-size `padding` cells that
/// never win (−∞), differentiable (gradient to the first arg-max, as PyTorch).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if x.rank() != 4 {
        candle_core::bail!("max_pool2d expects [B, C, H, W], got {:?}", x.dims());
    }
    if padding * 2 > kernel {
        candle_core::bail!("max_pool2d: padding {padding} exceeds half the kernel {kernel}");
    }
    let win = Window {
        kh: kernel,
        kw: kernel,
        sh: stride,
        sw: stride,
        ph: padding,
        pw: padding,
        dh: 1,
        dw: 1,
    };
    if !use_fast_cpu(&[x]) {
        return generic::max_pool2d(x, win);
    }
    x.contiguous()?.apply_op1(MaxPool {
        arg: Default::default(),
        win,
    })
}

/// Mean over the spatial axes: `[B, C, H, W] -> [B, C]` (one fused op on CPU f32/f64, the
/// mean of candle's means elsewhere).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    match x.dims() {
        &[_, _, h, w] if h * w > 0 && use_fast_cpu(&[x]) => {
            x.contiguous()?.apply_op1(Gap { hw: h * w })
        }
        // One reduction over both spatial axes (on the GPU as on the CPU).
        d if d.len() >= 2 => x.mean((d.len() - 2, d.len() - 1)),
        _ => x.mean(D::Minus1)?.mean(D::Minus1),
    }
}

/// `[B, C, H, W] → [B, C]` plane means; backward spreads `g/(H·W)` over each plane.
struct Gap {
    hw: usize,
}

impl CustomOp1 for Gap {
    fn name(&self) -> &'static str {
        "modbal-global-avg-pool"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = l.dims();
        let st = float_dispatch!("global_avg_pool", s, l, |v| plane_means(v, self.hw));
        Ok((st, Shape::from((d[0], d[1]))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?.apply_op1_no_bwd(&GapBwd {
            hw: self.hw,
            shape: arg.shape().clone(),
        })?;
        Ok(Some(g))
    }
}

struct GapBwd {
    hw: usize,
    shape: Shape,
}

impl CustomOp1 for GapBwd {
    fn name(&self) -> &'static str {
        "modbal-global-avg-pool-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch!("global_avg_pool backward", s, l, |v| plane_spread(
            v, self.hw
        ));
        Ok((st, self.shape.clone()))
    }
}
