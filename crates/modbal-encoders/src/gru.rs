//! IBML's text encoder: GloVe embeddings + a one-layer bidirectional GRU (Cho et al., 2014),
//! trainable end to end (`QinYang79/IBML`, `models/backbone_VL.py`, `TextEncoder`).
//!
//! # Maths (PyTorch's `nn.GRU`, gate order r, z, n)
//! ```text
//! r_t = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr)
//! z_t = σ(W_iz x_t + b_iz + W_hz h_{t−1} + b_hz)
//! n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))
//! h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}
//! ```
//! run left to right and (with the `_reverse` weights) right to left, `h_0 = 0`. Variable
//! lengths behave like `pack_padded_sequence`: a sequence of length `n` (right-padded) is
//! read over its first `n` steps only — the forward state stops at step `n − 1`, the backward
//! direction starts there — and outputs at padded steps are zero (`pad_packed_sequence`).
//!
//! # Pooling
//! * [`GruPooling::Mean`] (IBML, default): the two directions' outputs are averaged,
//!   `o_t = (→h_t + ←h_t)/2`, then averaged over the `n` real steps (IBML's
//!   `maxk_pool1d_var` with `k = length` is a mean) → `[B, H]`.
//! * [`GruPooling::Last`]: `[→h_{n−1}; ←h_0]` → `[B, 2H]`.
//!
//! # Inputs and lengths
//! * token ids `[B, L]` (floats; per-sample shape `[L]`) when built with an embedding table
//!   (a [`GloveTable`]; frozen by default as IBML intends, or trainable): padding id 0, length
//!   `n = 1 + index of the last non-padding id` (at least 1);
//! * pre-embedded vectors `[B, L, D]` (per-sample shape `[L, D]`: IBML looks GloVe up in its
//!   dataset): `n = 1 + index of the last row with a non-zero value` (at least 1; IBML gives
//!   an empty text length 1).
//!
//! Parameter names follow PyTorch: `rnn.weight_ih_l0 [3H, D]`, `rnn.weight_hh_l0 [3H, H]`,
//! `rnn.bias_ih_l0`, `rnn.bias_hh_l0` and the same with `_reverse`; `embed.weight` when the
//! embedding is trainable. Initialisation as PyTorch: `U(−1/√H, 1/√H)` for every GRU tensor.

use crate::bert::check_text_shape;
use crate::encoder::Encoder;
use crate::error::{config_err, Result};
use crate::glove::GloveTable;
use crate::seqnn::{embed, ids_from_float, sigmoid};
use candle_core::{DType, Tensor};
use modbal_tensors::{Init, ParamBuilder, SeededRng};
use serde::{Deserialize, Serialize};

/// Feature pooling of [`BiGruEncoder`]; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GruPooling {
    /// Mean over directions and real steps → `[B, H]` (IBML). Default.
    #[default]
    Mean,
    /// Final states of both directions, concatenated → `[B, 2H]`.
    Last,
}

#[derive(Clone, Debug)]
struct Direction {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
}

impl Direction {
    fn new(
        pb: &ParamBuilder,
        suffix: &str,
        d: usize,
        h: usize,
        rng: &mut SeededRng,
    ) -> candle_core::Result<Self> {
        let b = 1.0 / (h as f64).sqrt();
        let u = Init::Uniform { lo: -b, hi: b };
        Ok(Self {
            w_ih: pb.param(&format!("weight_ih_l0{suffix}"), (3 * h, d), u, rng)?,
            w_hh: pb.param(&format!("weight_hh_l0{suffix}"), (3 * h, h), u, rng)?,
            b_ih: pb.param(&format!("bias_ih_l0{suffix}"), 3 * h, u, rng)?,
            b_hh: pb.param(&format!("bias_hh_l0{suffix}"), 3 * h, u, rng)?,
        })
    }

    /// Run over `x [B, L, D]` with step mask `m [B, L]` (1 real) in the given direction:
    /// outputs `[B, L, H]` (zero at padded steps) and the final state `[B, H]`.
    fn run(&self, x: &Tensor, m: &Tensor, reverse: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, l, d) = x.dims3()?;
        let h = self.w_hh.dim(1)?;
        let xp = x
            .reshape((b * l, d))?
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(&self.b_ih)?
            .reshape((b, l, 3 * h))?;
        let w_hh_t = self.w_hh.t()?;
        let mut state = Tensor::zeros((b, h), x.dtype(), x.device())?;
        let mut outs: Vec<Tensor> = vec![state.clone(); l];
        let order: Vec<usize> = if reverse {
            (0..l).rev().collect()
        } else {
            (0..l).collect()
        };
        for t in order {
            let xt = xp.narrow(1, t, 1)?.squeeze(1)?;
            let hp = state.matmul(&w_hh_t)?.broadcast_add(&self.b_hh)?;
            let r = sigmoid(&(xt.narrow(1, 0, h)? + hp.narrow(1, 0, h)?)?)?;
            let z = sigmoid(&(xt.narrow(1, h, h)? + hp.narrow(1, h, h)?)?)?;
            let n = (xt.narrow(1, 2 * h, h)? + (r * hp.narrow(1, 2 * h, h)?)?)?.tanh()?;
            let new = (&n + (z * (&state - &n)?)?)?;
            let mt = m.narrow(1, t, 1)?; // [B, 1]
            let out = new.broadcast_mul(&mt)?;
            // Padded steps keep the previous state.
            state = (&out + state.broadcast_mul(&(mt.ones_like()? - &mt)?)?)?;
            outs[t] = out;
        }
        Ok((Tensor::stack(&outs, 1)?, state))
    }
}

/// GloVe + bidirectional GRU text encoder; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct BiGruEncoder {
    /// Embedding table `[V, D]` for id inputs (a parameter when trainable, else a constant).
    embed: Option<Tensor>,
    fwd: Direction,
    bwd: Direction,
    hidden: usize,
    pooling: GruPooling,
    input_shape: Vec<usize>,
    dtype: DType,
}

impl BiGruEncoder {
    /// Build under `pb`. With `glove`, the input is token ids (per-sample `[L]`) and the
    /// table initialises the embedding (`trainable_embeddings`: registered as `embed.weight`,
    /// else a constant); without, the input is embedded vectors (per-sample `[L, D]`).
    pub fn new(
        pb: &ParamBuilder,
        input_shape: &[usize],
        glove: Option<&GloveTable>,
        trainable_embeddings: bool,
        hidden: usize,
        pooling: GruPooling,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        if hidden == 0 {
            return config_err("bigru encoder: hidden is 0");
        }
        let (embed, d) = match glove {
            Some(g) => {
                check_text_shape(input_shape, usize::MAX)?;
                if g.vectors().is_empty() {
                    return config_err("bigru encoder: the GloVe table has no vectors");
                }
                let t = Tensor::from_slice(g.vectors(), (g.vocab_size(), g.dim()), pb.device())?
                    .to_dtype(pb.dtype())?;
                let t = if trainable_embeddings {
                    let v = pb.param("embed.weight", (g.vocab_size(), g.dim()), Init::Const(0.0), rng)?;
                    set_param(pb, "embed.weight", &t)?;
                    v
                } else {
                    t
                };
                (Some(t), g.dim())
            }
            None => match input_shape {
                [l, d] if *l >= 1 && *d >= 1 => (None, *d),
                _ => {
                    return config_err(format!(
                        "bigru encoder without a GloVe table expects embedded input [L, D], got {input_shape:?}"
                    ))
                }
            },
        };
        let pr = pb.pp("rnn");
        let fwd = Direction::new(&pr, "", d, hidden, rng)?;
        let bwd = Direction::new(&pr, "_reverse", d, hidden, rng)?;
        Ok(Self {
            embed,
            fwd,
            bwd,
            hidden,
            pooling,
            input_shape: input_shape.to_vec(),
            dtype: pb.dtype(),
        })
    }

    /// All outputs `[B, L, 2H]` (forward ‖ backward, zero at padded steps), the final states
    /// `[B, 2H]` and the step mask `[B, L]`.
    pub fn run(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (emb, mask) = match &self.embed {
            Some(table) => {
                let ids = ids_from_float("bigru", x, table.dim(0)?)?;
                let v: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let (b, l) = ids.dims2()?;
                let lens: Vec<usize> = (0..b)
                    .map(|i| {
                        v[i * l..(i + 1) * l]
                            .iter()
                            .rposition(|&t| t != crate::glove::PAD_ID)
                            .map_or(1, |p| p + 1)
                    })
                    .collect();
                (embed(table, &ids)?, length_mask(&lens, l, x)?)
            }
            None => {
                if x.rank() != 3 || x.dim(2)? != self.input_shape[1] {
                    candle_core::bail!(
                        "bigru encoder expects embedded input [B, L, {}], got {:?}",
                        self.input_shape[1],
                        x.dims()
                    );
                }
                let (b, l, _) = x.dims3()?;
                let nz: Vec<f32> = x
                    .abs()?
                    .max(2)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                let lens: Vec<usize> = (0..b)
                    .map(|i| {
                        nz[i * l..(i + 1) * l]
                            .iter()
                            .rposition(|&a| a > 0.0)
                            .map_or(1, |p| p + 1)
                    })
                    .collect();
                (x.clone(), length_mask(&lens, l, x)?)
            }
        };
        let mask = mask.to_dtype(emb.dtype())?;
        let (of, hf) = self.fwd.run(&emb, &mask, false)?;
        let (ob, hb) = self.bwd.run(&emb, &mask, true)?;
        Ok((Tensor::cat(&[of, ob], 2)?, Tensor::cat(&[hf, hb], 1)?, mask))
    }
}

fn length_mask(lens: &[usize], l: usize, like: &Tensor) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..l).map(move |t| if t < n { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (lens.len(), l), like.device())
}

/// Overwrite the value of the just-registered parameter `<prefix>.<name>`.
fn set_param(pb: &ParamBuilder, name: &str, value: &Tensor) -> candle_core::Result<()> {
    let full = if pb.prefix().is_empty() {
        name.to_string()
    } else {
        format!("{}.{name}", pb.prefix())
    };
    match pb.store().all().into_iter().find(|(n, _)| *n == full) {
        Some((_, var)) => var.set(value),
        None => candle_core::bail!("parameter {full:?} not registered"),
    }
}

impl Encoder for BiGruEncoder {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        if x.dtype() != self.dtype {
            candle_core::bail!(
                "bigru encoder expects {:?} input, got {:?}",
                self.dtype,
                x.dtype()
            );
        }
        let (outs, last, mask) = self.run(x)?;
        match self.pooling {
            GruPooling::Last => Ok(last),
            GruPooling::Mean => {
                let h = self.hidden;
                let avg = ((outs.narrow(2, 0, h)? + outs.narrow(2, h, h)?)? * 0.5)?;
                let n = mask.sum_keepdim(1)?; // [B, 1], ≥ 1
                avg.sum(1)?.broadcast_div(&n)
            }
        }
    }
    fn out_dim(&self) -> usize {
        match self.pooling {
            GruPooling::Mean => self.hidden,
            GruPooling::Last => 2 * self.hidden,
        }
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "bigru"
    }
}
