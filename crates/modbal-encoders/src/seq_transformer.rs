//! The CMU-MOSEI sequence encoder of MulT-style code (Tsai et al., ACL'19,
//! `yaohungt/Multimodal-Transformer`): a 1-D convolution projects each time step's features
//! to `d` channels, a stack of pre-LayerNorm Transformer encoder layers with a causal
//! self-attention mask runs over time, and the last time step is the feature.
//!
//! # Maths (`x: [B, T, F]`)
//! ```text
//! p   = conv1d(x; W_proj [d, F, k], no bias, padding (k−1)/2)            [B, T, d]
//! h_0 = dropout(√d · p + PE_{1..T}, p_embed)                             PE sinusoidal (fairseq)
//! a   = h + dropout(MHA(LN_0(h)), p_res)                                 causal: step t sees ≤ t
//! h'  = a + dropout(W_2 · dropout(relu(W_1 · LN_1(a) + b_1), p_relu) + b_2, p_res)
//! out = LN(h_L)[:, T−1]                                                  [B, d]
//! ```
//! `MHA`: `Q = (X W_qᵀ + b_q)/√d_h`, `K`, `V` from one `in_proj_weight [3d, d]`,
//! `softmax(Q Kᵀ + M)` (`M = −10⁹` above the diagonal), `dropout(p_attn)`, `out_proj`.
//! `PE_p = [sin(p·ω_0..ω_{d/2−1}), cos(p·ω_0..)]`, `ω_i = exp(−i·ln 10⁴/(d/2 − 1))` (a zero
//! column appended for odd `d`), positions `p = 1..T`.
//!
//! # Hyper-parameters ([`SeqTransformerConfig`] defaults) and their source
//! All from MulT's `main.py` argument defaults (the values its README uses for CMU-MOSEI):
//! `d = 30` (`orig_d_* → d_l = d_a = d_v = 30` in `src/models.py`), `num_heads = 5`
//! (`--num_heads`), `layers = 5` (`--nlevels`), `attn_dropout = 0.1` (`--attn_dropout`; MulT
//! uses 0.0 for the audio and vision streams via `--attn_dropout_a/_v`), `relu_dropout = 0.1`,
//! `res_dropout = 0.1`, `embed_dropout = 0.25`, `kernel = 1` (the `nn.Conv1d(orig_d, d,
//! kernel_size=1, bias=False)` projections), `causal = true` (`--attn_mask` is on by default:
//! `buffered_future_mask`), feed-forward width `4d` (`TransformerEncoderLayer`), pre-norm
//! (`normalize_before=True`) with a final LayerNorm. Linear layers: Xavier-uniform weights, zero
//! biases (MulT's `Linear` helper); the projection: PyTorch's default conv init.
//!
//! Difference from MulT: MulT derives positions from the first input feature and gives steps
//! whose first feature is exactly 0 (padding) a zero positional embedding; modbal uses
//! positions `1..T` for every step. No key-padding mask is applied (as MulT).
//!
//! Parameter names follow MulT: `proj.weight`, `layers.{i}.self_attn.in_proj_weight`,
//! `layers.{i}.self_attn.in_proj_bias`, `layers.{i}.self_attn.out_proj.{weight,bias}`,
//! `layers.{i}.fc1.*`, `layers.{i}.fc2.*`, `layers.{i}.layer_norms.{0,1}.*`, `layer_norm.*`.

use crate::encoder::{check_dtype, Encoder};
use crate::error::{config_err, Result};
use crate::seqnn::{SeededDropout, NEG_LARGE};
use candle_core::{Tensor, D};
use modbal_tensors::{ops, Init, LayerNorm, Linear, ParamBuilder, SeededRng};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`SeqTransformerEncoder`] (defaults: MulT's, see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeqTransformerConfig {
    pub d_model: usize,
    pub num_heads: usize,
    pub layers: usize,
    pub kernel: usize,
    pub attn_dropout: f64,
    pub relu_dropout: f64,
    pub res_dropout: f64,
    pub embed_dropout: f64,
    pub causal: bool,
}

impl Default for SeqTransformerConfig {
    fn default() -> Self {
        Self {
            d_model: 30,
            num_heads: 5,
            layers: 5,
            kernel: 1,
            attn_dropout: 0.1,
            relu_dropout: 0.1,
            res_dropout: 0.1,
            embed_dropout: 0.25,
            causal: true,
        }
    }
}

impl Eq for SeqTransformerConfig {}

impl SeqTransformerConfig {
    pub fn validate(&self, input_shape: &[usize]) -> Result<usize> {
        if self.d_model == 0 || self.num_heads == 0 || !self.d_model.is_multiple_of(self.num_heads)
        {
            return config_err(format!(
                "seq_transformer: d_model {} must be a positive multiple of num_heads {}",
                self.d_model, self.num_heads
            ));
        }
        if self.kernel.is_multiple_of(2) {
            return config_err(format!(
                "seq_transformer: kernel {} must be odd",
                self.kernel
            ));
        }
        for (k, p) in [
            ("attn_dropout", self.attn_dropout),
            ("relu_dropout", self.relu_dropout),
            ("res_dropout", self.res_dropout),
            ("embed_dropout", self.embed_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return config_err(format!("seq_transformer: {k} = {p} must be in [0, 1)"));
            }
        }
        match input_shape {
            [t, f] if *t >= 1 && *f >= 1 => Ok(self.d_model),
            _ => config_err(format!(
                "seq_transformer expects a per-sample input shape [T, F], got {input_shape:?}"
            )),
        }
    }
}

fn xavier_uniform(d_out: usize, d_in: usize) -> Init {
    let b = (6.0 / (d_in + d_out) as f64).sqrt();
    Init::Uniform { lo: -b, hi: b }
}

#[derive(Clone, Debug)]
struct Layer {
    in_proj_w: Tensor,
    in_proj_b: Tensor,
    out_proj: Linear,
    fc1: Linear,
    fc2: Linear,
    ln0: LayerNorm,
    ln1: LayerNorm,
}

/// MulT-style sequence Transformer encoder; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SeqTransformerEncoder {
    cfg: SeqTransformerConfig,
    proj: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    dropout: SeededDropout,
    input_shape: Vec<usize>,
    dtype: candle_core::DType,
}

/// fairseq's sinusoidal table for positions `1..=t`: `[t, d]`.
pub fn sinusoidal_positions(t: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let step = if half > 1 {
        (10000f64).ln() / (half - 1) as f64
    } else {
        0.0
    };
    let mut out = vec![0f32; t * d];
    for p in 0..t {
        let pos = (p + 1) as f64;
        for i in 0..half {
            let a = pos * (-(i as f64) * step).exp();
            out[p * d + i] = a.sin() as f32;
            out[p * d + half + i] = a.cos() as f32;
        }
    }
    out
}

impl SeqTransformerEncoder {
    pub fn new(
        pb: &ParamBuilder,
        input_shape: &[usize],
        cfg: &SeqTransformerConfig,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let d = cfg.validate(input_shape)?;
        let f = input_shape[1];
        let proj = pb.pp("proj").param(
            "weight",
            (d, f, cfg.kernel),
            // PyTorch's Conv1d default: kaiming_uniform(a=√5) = U(±1/√fan_in).
            Init::TorchDefault {
                fan_in: f * cfg.kernel,
            },
            rng,
        )?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let pl = pb.pp("layers").pp(i.to_string());
            let pa = pl.pp("self_attn");
            let in_proj_w = pa.param("in_proj_weight", (3 * d, d), xavier_uniform(d, d), rng)?;
            let in_proj_b = pa.param("in_proj_bias", 3 * d, Init::Const(0.0), rng)?;
            let out_proj =
                Linear::with_init(&pa.pp("out_proj"), d, d, xavier_uniform(d, d), true, rng)?;
            let fc1 =
                Linear::with_init(&pl.pp("fc1"), d, 4 * d, xavier_uniform(4 * d, d), true, rng)?;
            let fc2 =
                Linear::with_init(&pl.pp("fc2"), 4 * d, d, xavier_uniform(d, 4 * d), true, rng)?;
            let ln0 = LayerNorm::new(&pl.pp("layer_norms").pp("0"), d, 1e-5, rng)?;
            let ln1 = LayerNorm::new(&pl.pp("layer_norms").pp("1"), d, 1e-5, rng)?;
            layers.push(Layer {
                in_proj_w,
                in_proj_b,
                out_proj,
                fc1,
                fc2,
                ln0,
                ln1,
            });
        }
        let final_ln = LayerNorm::new(&pb.pp("layer_norm"), d, 1e-5, rng)?;
        Ok(Self {
            cfg: *cfg,
            proj,
            layers,
            final_ln,
            dropout: SeededDropout::new(rng),
            input_shape: input_shape.to_vec(),
            dtype: pb.dtype(),
        })
    }

    /// Re-seed the dropout masks.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout.reseed(seed)
    }

    /// All time steps after the final LayerNorm: `[B, T, F] → [B, T, d]`.
    pub fn forward_all(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let f = self.input_shape[1];
        if x.rank() != 3 || x.dim(2)? != f || x.dim(1)? == 0 {
            candle_core::bail!(
                "seq_transformer encoder expects input [B, T, {f}], got {:?}",
                x.dims()
            );
        }
        check_dtype("seq_transformer", x, self.dtype)?;
        let (b, t, _) = x.dims3()?;
        let d = self.cfg.d_model;
        let k = self.cfg.kernel;
        // Conv1d as a matmul over k shifted copies.
        let p = (k - 1) / 2;
        let xs = if p > 0 {
            x.pad_with_zeros(1, p, p)?
        } else {
            x.clone()
        };
        let cols: Vec<Tensor> = (0..k)
            .map(|j| xs.narrow(1, j, t))
            .collect::<candle_core::Result<_>>()?;
        let cols = Tensor::cat(&cols, 2)?; // [B, T, k·F], index j·F + c
        let w = self.proj.permute((0, 2, 1))?.reshape((d, k * f))?;
        let proj = cols
            .reshape((b * t, k * f))?
            .matmul(&w.t()?)?
            .reshape((b, t, d))?;
        let pe = Tensor::from_vec(sinusoidal_positions(t, d), (1, t, d), x.device())?
            .to_dtype(x.dtype())?;
        let mut h = ((proj * (d as f64).sqrt())?.broadcast_add(&pe))?;
        h = self.dropout.apply(&h, self.cfg.embed_dropout, train)?;
        let nh = self.cfg.num_heads;
        let dh = d / nh;
        let mask = if self.cfg.causal {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| (0..t).map(move |j| if j > i { NEG_LARGE as f32 } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(m, (1, 1, t, t), x.device())?.to_dtype(x.dtype())?)
        } else {
            None
        };
        for layer in &self.layers {
            let a_in = layer.ln0.forward(&h)?;
            let qkv = a_in
                .reshape((b * t, d))?
                .matmul(&layer.in_proj_w.t()?)?
                .broadcast_add(&layer.in_proj_b)?
                .reshape((b, t, 3, nh, dh))?;
            let part = |i: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, i, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = (part(0)? * (1.0 / (dh as f64).sqrt()))?;
            let kk = part(1)?;
            let v = part(2)?;
            let mut s = q.matmul(&kk.t()?.contiguous()?)?;
            if let Some(m) = &mask {
                s = s.broadcast_add(m)?;
            }
            let pr = ops::softmax(&s, D::Minus1)?;
            let pr = self.dropout.apply(&pr, self.cfg.attn_dropout, train)?;
            let ctx = pr
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, d))?;
            let att =
                self.dropout
                    .apply(&layer.out_proj.forward(&ctx)?, self.cfg.res_dropout, train)?;
            let a = (&h + att)?;
            let ff = layer.fc1.forward(&layer.ln1.forward(&a)?)?.relu()?;
            let ff = self.dropout.apply(&ff, self.cfg.relu_dropout, train)?;
            let ff = self
                .dropout
                .apply(&layer.fc2.forward(&ff)?, self.cfg.res_dropout, train)?;
            h = (a + ff)?;
        }
        self.final_ln.forward(&h)
    }
}

impl Encoder for SeqTransformerEncoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let all = self.forward_all(x, train)?;
        let t = all.dim(1)?;
        all.narrow(1, t - 1, 1)?.squeeze(1)
    }
    fn out_dim(&self) -> usize {
        self.cfg.d_model
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "seq_transformer"
    }
    fn set_epoch_seed(&self, seed: u64) {
        self.reseed_dropout(seed)
    }
}
