//! Multi-layer perceptron encoder.
//!
//! `h_0 = flatten(x)`, `h_{l} = ReLU(W_l h_{l-1} + b_l)` for each hidden width; Xavier-normal
//! weights, zero biases. Parameters: `layers.<l>.{weight, bias}`.
//!
//! # Shapes
//! per-sample input `[d1, d2, ...]` with `D = Πdi`; forward input `[B, D]` or `[B, d1, d2, ...]`
//! → `[B, hidden.last()]` (`[B, D]` without hidden layers).

use crate::encoder::{batched, check_dtype, stage_range, Encoder};
use crate::error::Result;
use crate::EncoderConfig;
use candle_core::{DType, Tensor};
use modbal_tensors::{Linear, ParamBuilder, SeededRng};

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct MlpEncoder {
    layers: Vec<Linear>,
    input_shape: Vec<usize>,
    in_dim: usize,
    dtype: DType,
}

impl MlpEncoder {
    /// Build under `pb` (layers `layers.0`, `layers.1`, ...).
    pub fn new(
        pb: &ParamBuilder,
        input_shape: &[usize],
        hidden: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Self> {
        EncoderConfig::Mlp {
            hidden: hidden.to_vec(),
        }
        .validate(input_shape)?;
        let in_dim: usize = input_shape.iter().product();
        let mut layers = Vec::with_capacity(hidden.len());
        let mut d = in_dim;
        for (l, &h) in hidden.iter().enumerate() {
            layers.push(Linear::new(&pb.pp(format!("layers.{l}")), d, h, rng)?);
            d = h;
        }
        Ok(Self {
            layers,
            input_shape: input_shape.to_vec(),
            in_dim,
            dtype: pb.dtype(),
        })
    }
}

impl MlpEncoder {
    /// The input check of [`Encoder::forward_t`], then `flatten(x)`.
    fn flat_input(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let ok =
            dims.len() >= 2 && (dims[1..] == [self.in_dim] || dims[1..] == self.input_shape[..]);
        if !ok {
            let flat = batched(&[self.in_dim]);
            let full = batched(&self.input_shape);
            if flat == full {
                candle_core::bail!("mlp encoder expects input {flat}, got {dims:?}");
            }
            candle_core::bail!("mlp encoder expects input {flat} or {full}, got {dims:?}");
        }
        check_dtype("mlp", x, self.dtype)?;
        x.flatten_from(1)
    }
}

impl Encoder for MlpEncoder {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.flat_input(x)?;
        for layer in &self.layers {
            h = layer.forward_relu(&h)?;
        }
        Ok(h)
    }
    fn out_dim(&self) -> usize {
        self.layers
            .last()
            .map(|l| l.out_dim())
            .unwrap_or(self.in_dim)
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "mlp"
    }
    /// One stage per hidden layer (the first also flattens the input); without hidden layers,
    /// one stage that only flattens.
    fn num_stages(&self) -> usize {
        self.layers.len().max(1)
    }
    fn forward_stage(&self, k: usize, h: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        stage_range("mlp", k, self.num_stages())?;
        let h = if k == 0 {
            self.flat_input(h)?
        } else {
            h.clone()
        };
        match self.layers.get(k) {
            Some(layer) => layer.forward_relu(&h),
            None => Ok(h),
        }
    }
    fn stage_channels(&self, k: usize) -> usize {
        self.layers
            .get(k)
            .map(|l| l.out_dim())
            .unwrap_or(self.in_dim)
    }
}
