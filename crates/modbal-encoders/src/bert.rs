//! A trainable BERT (Devlin et al., NAACL'19) in the Hugging Face `bert-base` layout, loading
//! Hugging Face safetensors by their standard tensor names; the text encoder of CAL (MVSA,
//! NYUD2-text-free aside), QMF-style image–text benchmarks and ARM/UDI's Food-101.
//!
//! candle-transformers' BERT cannot be trained: its LayerNorm registers no backward and its
//! dropout is a no-op. This one is built from modbal-tensors' gradient-safe [`Linear`] and
//! [`LayerNorm`], [`modbal_tensors::ops::softmax`] (with backward) and a real dropout drawn
//! from modbal's seeded RNG ([`SeededDropout`]).
//!
//! # Maths (per layer, as `transformers.models.bert.modeling_bert`)
//! * embeddings: `E = LN(W_word[ids] + W_pos[0..L] + W_type[0]) → dropout(p_hidden)`
//! * self-attention, `h` heads of width `d_h = H/h`: `Q, K, V = X·W_{q,k,v}ᵀ + b`,
//!   `P = softmax(Q·Kᵀ/√d_h + M)` with `M = 0` for real tokens and `−10⁹` for padded keys,
//!   `P → dropout(p_attn)`, `C = P·V`; `A = LN(dropout(C·W_oᵀ + b_o) + X)`
//! * feed-forward: `F = LN(dropout(gelu(A·W_iᵀ + b_i)·W_2ᵀ + b_2) + A)`, `gelu` the exact
//!   erf form `x·Φ(x)` (HF's `"gelu"`; `"gelu_new"`/`"gelu_pytorch_tanh"` use the tanh form)
//! * pooler: `tanh(F[:, 0]·W_pᵀ + b_p)`
//!
//! # Shapes
//! * [`BertModel::forward`]: `ids [B, L]` (u32), `mask [B, L]` (1 real / 0 padding) →
//!   `[B, L, H]`
//! * [`BertEncoder`] (an [`Encoder`]): `[B, L]` token ids stored as floats (the dataset's
//!   per-sample shape `[L]`), padding = `pad_token_id` (0 in every BERT vocabulary), so the
//!   attention mask is `ids ≠ pad`; token types are all 0 (single segment) → `[B, H]` by
//!   [`BertPooling`].
//!
//! # Names
//! Parameters are registered under the encoder's prefix with Hugging Face's names without the
//! `bert.` prefix: `embeddings.word_embeddings.weight`, `embeddings.LayerNorm.weight`,
//! `encoder.layer.3.attention.self.query.weight`, `encoder.layer.3.attention.output.dense.bias`,
//! `encoder.layer.3.intermediate.dense.weight`, `encoder.layer.3.output.LayerNorm.bias`,
//! `pooler.dense.weight`, … [`BertModel::load_safetensors`] accepts files with or without the
//! `bert.` prefix, with the old `LayerNorm.gamma/beta` names, and ignores the pre-training
//! heads (`cls.*`) and `embeddings.position_ids`.

use crate::encoder::Encoder;
use crate::error::{config_err, EncoderError, Result};
use crate::pretrained::{load_into_store, read_safetensors, LoadReport, WeightsSource};
use crate::seqnn::{embed, ids_from_float, SeededDropout, NEG_LARGE};
use candle_core::{DType, Tensor, D};
use modbal_tensors::{ops, Init, LayerNorm, Linear, ParamBuilder, SeededRng};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The fields of a Hugging Face BERT `config.json` that the model uses (others are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// `"gelu"` (erf form), `"gelu_new"` / `"gelu_pytorch_tanh"` (tanh form) or `"relu"`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    /// Only `"absolute"` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_pos_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// `bert-base-uncased`: 12 layers, 768 hidden, 12 heads, 3072 intermediate, 30522 tokens.
    pub fn bert_base_uncased() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: default_act(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            pad_token_id: 0,
            position_embedding_type: default_pos_type(),
        }
    }

    /// Read a Hugging Face `config.json` (errors name the file).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EncoderError::Config(format!("cannot read BERT config {}: {e}", path.display()))
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| {
            EncoderError::Config(format!("malformed BERT config {}: {e}", path.display()))
        })?;
        cfg.validate()
            .map_err(|e| EncoderError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// Check the sizes and the supported options.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return config_err(format!(
                "bert: hidden_size {} must be a positive multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0
            || self.intermediate_size == 0
            || self.max_position_embeddings == 0
            || self.type_vocab_size == 0
        {
            return config_err("bert: vocab_size, intermediate_size, max_position_embeddings and type_vocab_size must be positive");
        }
        if self.pad_token_id >= self.vocab_size {
            return config_err(format!(
                "bert: pad_token_id {} outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if self.position_embedding_type != "absolute" {
            return config_err(format!(
                "bert: position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        Activation::parse(&self.hidden_act)?;
        for (k, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return config_err(format!("bert: {k} = {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return config_err(format!(
                    "bert: hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
                ))
            }
        })
    }
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

#[derive(Clone, Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

fn linear(
    pb: &ParamBuilder,
    d_in: usize,
    d_out: usize,
    std: f64,
    rng: &mut SeededRng,
) -> candle_core::Result<Linear> {
    Linear::with_init(pb, d_in, d_out, Init::Normal { mean: 0.0, std }, true, rng)
}

/// The BERT trunk (embeddings, encoder layers, pooler); see the [module docs](self).
#[derive(Clone, Debug)]
pub struct BertModel {
    cfg: BertConfig,
    act: Activation,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<BertLayer>,
    pooler: Linear,
    dropout: SeededDropout,
    prefix: String,
    store: modbal_tensors::ParamStore,
}

impl BertModel {
    /// Build with HF's initialisation (`N(0, initializer_range²)` for linear and embedding
    /// weights, zero biases, LayerNorm ones/zeros, the padding row of the word embeddings
    /// zero), parameters drawn from `rng` in construction order.
    pub fn new(pb: &ParamBuilder, cfg: &BertConfig, rng: &mut SeededRng) -> Result<Self> {
        cfg.validate()?;
        let act = Activation::parse(&cfg.hidden_act)?;
        let h = cfg.hidden_size;
        let std = cfg.initializer_range;
        let normal = Init::Normal { mean: 0.0, std };
        let pe = pb.pp("embeddings");
        let word = pe
            .pp("word_embeddings")
            .param("weight", (cfg.vocab_size, h), normal, rng)?;
        // HF zeroes the embedding of the padding token at init.
        {
            let store = pb.store();
            let name = format!(
                "{}{}embeddings.word_embeddings.weight",
                pb.prefix(),
                if pb.prefix().is_empty() { "" } else { "." }
            );
            if let Some((_, var)) = store.all().into_iter().find(|(n, _)| *n == name) {
                let mut rows: Vec<Tensor> = Vec::new();
                let p = cfg.pad_token_id;
                if p > 0 {
                    rows.push(word.narrow(0, 0, p)?);
                }
                rows.push(word.narrow(0, p, 1)?.zeros_like()?);
                if p + 1 < cfg.vocab_size {
                    rows.push(word.narrow(0, p + 1, cfg.vocab_size - p - 1)?);
                }
                var.set(&Tensor::cat(&rows, 0)?)?;
            }
        }
        let position = pe.pp("position_embeddings").param(
            "weight",
            (cfg.max_position_embeddings, h),
            normal,
            rng,
        )?;
        let token_type = pe.pp("token_type_embeddings").param(
            "weight",
            (cfg.type_vocab_size, h),
            normal,
            rng,
        )?;
        let emb_ln = LayerNorm::new(&pe.pp("LayerNorm"), h, cfg.layer_norm_eps, rng)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let pl = pb.pp("encoder").pp("layer").pp(i.to_string());
            let pa = pl.pp("attention");
            let ps = pa.pp("self");
            let po = pa.pp("output");
            layers.push(BertLayer {
                query: linear(&ps.pp("query"), h, h, std, rng)?,
                key: linear(&ps.pp("key"), h, h, std, rng)?,
                value: linear(&ps.pp("value"), h, h, std, rng)?,
                attn_out: linear(&po.pp("dense"), h, h, std, rng)?,
                attn_ln: LayerNorm::new(&po.pp("LayerNorm"), h, cfg.layer_norm_eps, rng)?,
                inter: linear(
                    &pl.pp("intermediate").pp("dense"),
                    h,
                    cfg.intermediate_size,
                    std,
                    rng,
                )?,
                out: linear(
                    &pl.pp("output").pp("dense"),
                    cfg.intermediate_size,
                    h,
                    std,
                    rng,
                )?,
                out_ln: LayerNorm::new(
                    &pl.pp("output").pp("LayerNorm"),
                    h,
                    cfg.layer_norm_eps,
                    rng,
                )?,
            });
        }
        let pooler = linear(&pb.pp("pooler").pp("dense"), h, h, std, rng)?;
        Ok(Self {
            cfg: cfg.clone(),
            act,
            word,
            position,
            token_type,
            emb_ln,
            layers,
            pooler,
            dropout: SeededDropout::new(rng),
            prefix: pb.prefix().to_string(),
            store: pb.store().clone(),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Re-seed the dropout masks.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout.reseed(seed)
    }

    /// Map a Hugging Face tensor name to this model's (relative) name, or `None` for tensors
    /// the trunk does not use (`cls.*` pre-training heads, `embeddings.position_ids`,
    /// classifier heads).
    pub fn map_hf_name(name: &str) -> Option<String> {
        let n = name.strip_prefix("bert.").unwrap_or(name);
        if n.ends_with("position_ids")
            || !(n.starts_with("embeddings.")
                || n.starts_with("encoder.")
                || n.starts_with("pooler."))
        {
            return None;
        }
        let n = if let Some(s) = n.strip_suffix("LayerNorm.gamma") {
            format!("{s}LayerNorm.weight")
        } else if let Some(s) = n.strip_suffix("LayerNorm.beta") {
            format!("{s}LayerNorm.bias")
        } else {
            n.to_string()
        };
        Some(n)
    }

    /// Set every parameter from a Hugging Face BERT safetensors file (see the
    /// [module docs](self) for the accepted names). Errors name the file and the tensor.
    pub fn load_safetensors(&self, path: &Path) -> Result<LoadReport> {
        let device = self.word.device().clone();
        let tensors = read_safetensors(path, &device)?;
        load_into_store(
            &self.store,
            &self.prefix,
            tensors,
            path,
            Self::map_hf_name,
            |_, t, _| Ok(t),
        )
    }

    /// `ids [B, L]` (u32) and `mask [B, L]` (1 = token, 0 = padding; any dtype) →
    /// last hidden states `[B, L, H]`. Token types are all 0.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (b, l) = ids.dims2()?;
        if mask.dims() != [b, l] {
            candle_core::bail!(
                "bert: attention mask {:?} does not match ids {:?}",
                mask.dims(),
                ids.dims()
            );
        }
        if l > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "bert: sequence length {l} exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            );
        }
        let h = self.cfg.hidden_size;
        let nh = self.cfg.num_attention_heads;
        let dh = h / nh;
        let dtype = self.word.dtype();
        let words = embed(&self.word, ids)?;
        let pos = self.position.narrow(0, 0, l)?.unsqueeze(0)?;
        let tt = self.token_type.narrow(0, 0, 1)?.unsqueeze(0)?;
        let e = words.broadcast_add(&pos)?.broadcast_add(&tt)?;
        let mut x = self.dropout.apply(
            &self.emb_ln.forward(&e)?,
            self.cfg.hidden_dropout_prob,
            train,
        )?;
        // Additive key mask [B, 1, 1, L].
        let m = mask.to_dtype(dtype)?;
        let add_mask = ((m.ones_like()? - m)? * NEG_LARGE)?.reshape((b, 1, 1, l))?;
        let scale = 1.0 / (dh as f64).sqrt();
        for layer in &self.layers {
            let heads = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, l, nh, dh))?.transpose(1, 2)?.contiguous()
            };
            let q = heads(layer.query.forward(&x)?)?;
            let k = heads(layer.key.forward(&x)?)?;
            let v = heads(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&add_mask)?;
            let probs = ops::softmax(&scores, D::Minus1)?;
            let probs = self
                .dropout
                .apply(&probs, self.cfg.attention_probs_dropout_prob, train)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, l, h))?;
            let a = self.dropout.apply(
                &layer.attn_out.forward(&ctx)?,
                self.cfg.hidden_dropout_prob,
                train,
            )?;
            let a = layer.attn_ln.forward(&(a + &x)?)?;
            let f = self.act.apply(&layer.inter.forward(&a)?)?;
            let f =
                self.dropout
                    .apply(&layer.out.forward(&f)?, self.cfg.hidden_dropout_prob, train)?;
            x = layer.out_ln.forward(&(f + &a)?)?;
        }
        Ok(x)
    }

    /// The pooler: `tanh(hidden[:, 0]·W_pᵀ + b_p)`, `[B, L, H] → [B, H]`.
    pub fn pool(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.pooler
            .forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?
            .tanh()
    }
}

/// How [`BertEncoder`] turns hidden states `[B, L, H]` into features `[B, H]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BertPooling {
    /// The pooler output `tanh(W_p·h_[CLS] + b_p)` (`BertModel(...)[1]`, as QMF / CAL's text
    /// encoder). Default.
    #[default]
    Pooler,
    /// The last hidden state of `[CLS]` (position 0).
    Cls,
    /// Mean of the last hidden states over real (non-padding) tokens.
    Mean,
}

/// [`BertModel`] as an [`Encoder`]: `[B, L]` float token ids → `[B, H]`; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct BertEncoder {
    model: BertModel,
    pooling: BertPooling,
    input_shape: Vec<usize>,
}

impl BertEncoder {
    /// Build from a config (randomly initialised; see [`BertModel::new`]). `input_shape` is the
    /// per-sample shape `[L]` (maximum sequence length).
    pub fn new(
        pb: &ParamBuilder,
        cfg: &BertConfig,
        pooling: BertPooling,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Self> {
        check_text_shape(input_shape, cfg.max_position_embeddings)?;
        Ok(Self {
            model: BertModel::new(pb, cfg, rng)?,
            pooling,
            input_shape: input_shape.to_vec(),
        })
    }

    /// Build from a pretrained source: `config.json` and `model.safetensors` resolved by
    /// [`WeightsSource::resolve`]; `pretrained = false` reads only `config.json` and keeps the
    /// random initialisation.
    pub fn from_source(
        pb: &ParamBuilder,
        source: &WeightsSource,
        pretrained: bool,
        pooling: BertPooling,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let cfg = BertConfig::from_file(&source.resolve("config.json")?)?;
        let enc = Self::new(pb, &cfg, pooling, input_shape, rng)?;
        if pretrained {
            let weights = source.resolve("model.safetensors")?;
            enc.model.load_safetensors(&weights)?;
        }
        Ok(enc)
    }

    pub fn model(&self) -> &BertModel {
        &self.model
    }
}

/// Check a text encoder's per-sample shape `[L]` with `1 ≤ L ≤ max_len`.
pub(crate) fn check_text_shape(input_shape: &[usize], max_len: usize) -> Result<()> {
    match input_shape {
        [l] if *l >= 1 && *l <= max_len => Ok(()),
        [l] => config_err(format!(
            "text encoder: sequence length {l} must be in 1..={max_len}"
        )),
        _ => config_err(format!(
            "text encoder expects a per-sample input shape [L] (token ids), got {input_shape:?}"
        )),
    }
}

impl Encoder for BertEncoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let cfg = self.model.config();
        let ids = ids_from_float("bert", x, cfg.vocab_size)?;
        let mask = ids.ne(cfg.pad_token_id as u32)?.to_dtype(DType::F32)?;
        let hidden = self.model.forward(&ids, &mask, train)?;
        match self.pooling {
            BertPooling::Pooler => self.model.pool(&hidden),
            BertPooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
            BertPooling::Mean => {
                let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
                let n = m.sum(1)?.clamp(1.0, f64::INFINITY)?;
                hidden.broadcast_mul(&m)?.sum(1)?.broadcast_div(&n)
            }
        }
    }
    fn out_dim(&self) -> usize {
        self.model.config().hidden_size
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "bert"
    }
    fn set_epoch_seed(&self, seed: u64) {
        self.model.reseed_dropout(seed)
    }
}
