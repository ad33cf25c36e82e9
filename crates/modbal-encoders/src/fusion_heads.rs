//! Two-modality fusion heads with a multiplicative interaction: FiLM, gated fusion and BLOCK
//! (built by [`crate::FusionConfig`] `film`, `gated`, `block`), the signed square root they
//! need, and how each defines its per-modality logits ([`UnimodalLogits`]).
//!
//! Notation: features `f_0 ∈ R^{D_0}`, `f_1 ∈ R^{D_1}` of the model's two modalities (in the
//! model's modality order), `C` classes, `σ` the logistic sigmoid, `⊙` the element-wise product.
//! Every `Linear` is Xavier-normal with a zero bias (modbal's rule for every linear layer; the
//! official codes keep PyTorch's default `nn.Linear` initialisation).
//!
//! # FiLM (`film`, [`FilmHead`])
//! Perez, Strub, de Vries, Dumoulin & Courville, "FiLM: Visual Reasoning with a General
//! Conditioning Layer", AAAI 2018, as OGM-GE's official code (`GeWu-Lab/OGM-GE_CVPR2022`,
//! `models/fusion_modules.py`, class `FiLM`, reused by ARM's code) applies it to two feature
//! vectors. With `x = f_c` the conditioning modality (`condition = c`, default 0: OGM-GE's
//! `x_film=True`, the first modality conditions the second) and `y` the other one (`D_y`):
//!
//! ```text
//! [γ; β] = fc(x)                       fc: Linear(D_x → 2·D_y), γ = first D_y entries
//! z      = fc_out(γ ⊙ y + β)           fc_out: Linear(D_y → C)
//! ```
//!
//! The hidden width is the conditioned modality's feature width `D_y` (the official `dim = 512`,
//! ResNet18's feature width). The official code splits `fc(x)` at `input_dim` (`D_x`), which is
//! the same only when `D_x = D_y`; splitting at `D_y` is the only reading that type-checks for
//! `D_x ≠ D_y`, so different widths are allowed. Parameters: `fc.{weight, bias}`,
//! `fc_out.{weight, bias}`.
//!
//! # Gated fusion (`gated`, [`GatedHead`])
//! OGM-GE's `GatedFusion` (docstring: Kiela, Grave, Joulin & Mikolov, "Efficient Large-Scale
//! Multi-Modal Classification", AAAI 2018). With `g` the gating modality (`gate = g`, default 0:
//! the official `x_gate=True`) and `o` the other:
//!
//! ```text
//! h_0 = fc_x(f_0),  h_1 = fc_y(f_1)     fc_x: Linear(D_0 → H), fc_y: Linear(D_1 → H)
//! z   = fc_out(σ(h_g) ⊙ h_o)             fc_out: Linear(H → C)
//! ```
//!
//! `H = dim`, default the width of the gated (non-gating) modality's features (the official
//! `dim = input_dim = 512`). Compared with the Gated Multimodal Unit (GMU; Arevalo, Solorio,
//! Montes-y-Gómez & González, "Gated Multimodal Units for Information Fusion", ICLR workshop
//! 2017), which computes `h = z ⊙ tanh(W_0 f_0) + (1 − z) ⊙ tanh(W_1 f_1)` with a gate
//! `z = σ(W_z [f_0; f_1])` seeing both modalities, OGM-GE's version has no `tanh`, takes its gate
//! from one modality only and multiplies (no convex combination): the gated modality's
//! projection is passed through where the gating modality opens it. Parameters:
//! `fc_x.{weight, bias}`, `fc_y.{weight, bias}`, `fc_out.{weight, bias}`.
//!
//! # BLOCK (`block`, [`BlockHead`])
//! Ben-Younes, Cadene, Thome & Cord, "BLOCK: Bilinear Superdiagonal Fusion for Visual Question
//! Answering and Visual Relationship Detection", AAAI 2019, as the official
//! `Cadene/block.bootstrap.pytorch` (`block/models/networks/fusions/fusions.py`, class `Block`,
//! `pos_norm = "before_cat"`, no dropout: its defaults). With `mm_dim = P` split into `chunks`
//! blocks of sizes `s_1…s_K` (the official `get_sizes_list`: `⌈P/K⌉` each, the last one
//! adjusted) and `rank = R`:
//!
//! ```text
//! x_0 = linear0(f_0),  x_1 = linear1(f_1)                           [B, P]
//! per chunk k (x_i^k its s_k columns):
//!   m^k = merge0_k(x_0^k) ⊙ merge1_k(x_1^k)                         [B, R·s_k]  (Linear s_k → s_k·R)
//!   u^k_j = Σ_{r<R} m^k_{r·s_k + j}                                 [B, s_k]    (view(B, R, s_k).sum(1))
//!   v^k = sign(u^k) ⊙ √|u^k|                                        (√relu(u) − √relu(−u))
//!   w^k = v^k / max(‖v^k‖₂, 1e−12)                                  (F.normalize)
//! z = linear_out([w^1; …; w^K])                                     Linear(P → C)
//! ```
//!
//! Defaults: `mm_dim = 1600`, `chunks = 20`, `rank = 15` (the official constructor). The
//! signed square root has an infinite derivative at 0; [`signed_sqrt`] gives the derivative
//! `1/(2√|u|)` for `u ≠ 0` and 0 at `u = 0` exactly (PyTorch's result for the official
//! expression: its ReLU backward masks the infinite `sqrt` gradient), so no NaN reaches the
//! parameters. The normalisation's gradient is likewise zero below the `1e−12` floor.
//! Parameters: `linear0`, `linear1`, `merge_linears0.<k>`, `merge_linears1.<k>`, `linear_out`
//! (each `{weight, bias}`). BLOCK takes exactly two inputs in the official code (a list of two
//! input widths); its block-superdiagonal tensor is a 3-way tensor, so more modalities would
//! need a higher-order decomposition the paper does not define: three or more modalities are
//! an error.
//!
//! # Per-modality logits ([`UnimodalLogits`])
//! None of these heads decomposes additively into per-modality terms. Their per-modality logits
//! are the head's output with every other modality's features set to zero
//! ([`UnimodalLogits::ZeroOthers`], "the modality alone"):
//! `z_0 = head(f_0, 0)`, `z_1 = head(0, f_1)`. For FiLM with `condition = 0`,
//! `z_0 = fc_out(β(f_0))` and `z_1 = fc_out(b_γ ⊙ f_1 + b_β)` (`b_·`: the halves of `fc`'s bias);
//! for gated fusion `z_g = fc_out(σ(h_g) ⊙ b_o)` and `z_o = fc_out(σ(b_g) ⊙ h_o)` (`b_·`: the
//! bias of `fc_x` / `fc_y`); for BLOCK each is
//! `linear_out` of the normalised products with the other side's `linear` bias. `Σ_m z_m ≠ z`.

use crate::error::{config_err, Result};
use candle_core::Tensor;
use modbal_tensors::{Linear, ParamBuilder, SeededRng};
use serde::{Deserialize, Serialize};

/// How a head's per-modality logits are defined (see each head's docs and `docs/fusion.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnimodalLogits {
    /// Weight slices of one linear layer plus `b/M`: `Σ_m z_m = z` (concat).
    Decomposed,
    /// One classifier branch per modality, `z = Σ_m z_m` (sum, mmtm).
    Branch,
    /// The head's output with every other modality's features zeroed: `z_m = head(f ⊙ 1_{m})`;
    /// no additive relation to `z` (film, gated, block).
    ZeroOthers,
}

impl UnimodalLogits {
    /// `true` when the fused logits are the sum of the per-modality logits (a decomposition
    /// the unimodal scores of OGM-GE and its kin rely on).
    pub fn is_additive(self) -> bool {
        !matches!(self, UnimodalLogits::ZeroOthers)
    }
    /// Short name (`"decomposed"`, `"branch"`, `"zero_others"`).
    pub fn name(self) -> &'static str {
        match self {
            UnimodalLogits::Decomposed => "decomposed",
            UnimodalLogits::Branch => "branch",
            UnimodalLogits::ZeroOthers => "zero_others",
        }
    }
}

/// BLOCK's `mm_dim` default (official `Block.__init__`).
pub const DEFAULT_BLOCK_MM_DIM: usize = 1600;
/// BLOCK's `chunks` default (official `Block.__init__`).
pub const DEFAULT_BLOCK_CHUNKS: usize = 20;
/// BLOCK's `rank` default (official `Block.__init__`).
pub const DEFAULT_BLOCK_RANK: usize = 15;

/// The chunk sizes of BLOCK (official `get_sizes_list`): `⌈dim/chunks⌉` each, the last one
/// reduced so that they sum to `dim`; if that makes it negative, the last ones are evened out.
/// Errors (instead of the official `assert`) when a size would be 0 or less.
pub fn block_chunk_sizes(dim: usize, chunks: usize) -> Result<Vec<usize>> {
    if dim == 0 || chunks == 0 {
        return config_err(format!(
            "block fusion: mm_dim ({dim}) and chunks ({chunks}) must be >= 1"
        ));
    }
    if chunks > dim {
        return config_err(format!(
            "block fusion: {chunks} chunks of mm_dim {dim}: at most one chunk per dimension \
             (the official get_sizes_list asserts non-empty chunks); use fewer chunks"
        ));
    }
    let split = dim.div_ceil(chunks) as i64;
    let mut sizes = vec![split; chunks];
    let total: i64 = sizes.iter().sum();
    sizes[chunks - 1] -= total - dim as i64;
    if sizes[chunks - 1] < 0 {
        if chunks < 2 {
            return config_err(format!(
                "block fusion: cannot split mm_dim {dim} in {chunks}"
            ));
        }
        let n_miss = sizes[chunks - 2] - sizes[chunks - 1];
        sizes[chunks - 1] = sizes[chunks - 2];
        for j in 0..n_miss as usize {
            if j >= chunks {
                break;
            }
            sizes[chunks - 1 - j] -= 1;
        }
    }
    if sizes.iter().sum::<i64>() != dim as i64 || sizes.iter().any(|&s| s <= 0) {
        return config_err(format!(
            "block fusion: mm_dim {dim} cannot be split in {chunks} non-empty chunks (sizes \
             {sizes:?}); use fewer chunks"
        ));
    }
    Ok(sizes.into_iter().map(|s| s as usize).collect())
}

/// `sign(u) ⊙ √|u|` element-wise (BLOCK's `√relu(u) − √relu(−u)`), with derivative
/// `1/(2√|u|)` for `u ≠ 0` and exactly 0 at `u = 0` (finite everywhere; see the module docs).
pub fn signed_sqrt(u: &Tensor) -> candle_core::Result<Tensor> {
    let a = u.abs()?;
    let nonzero = a.gt(0.0)?;
    // |u| where u ≠ 0, else 1: the square root's derivative stays finite, and `where_cond`
    // sends no gradient to `a` where u = 0; the sign (0 there) zeroes the value.
    let safe = nonzero.where_cond(&a, &a.ones_like()?)?;
    safe.sqrt()? * u.sign()?
}

/// `v / max(‖v‖₂, eps)` over the last axis of `[B, D]` (PyTorch's `F.normalize(v, p=2)`,
/// `eps = 1e-12`); the norm's gradient is zero where it is below `eps`.
pub fn l2_normalize(v: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let sq = v.sqr()?.sum_keepdim(1)?;
    let floor = (sq.ones_like()? * (eps * eps))?;
    let big = sq.gt(eps * eps)?;
    let norm = big.where_cond(&sq, &floor)?.sqrt()?;
    v.broadcast_div(&norm)
}

/// `features` with every modality but `keep` replaced by zeros.
fn zero_others(features: &[Tensor], keep: usize) -> candle_core::Result<Vec<Tensor>> {
    features
        .iter()
        .enumerate()
        .map(|(m, f)| {
            if m == keep {
                Ok(f.clone())
            } else {
                f.zeros_like()
            }
        })
        .collect()
}

/// The fused logits and the [`UnimodalLogits::ZeroOthers`] logits of a head whose fused map is
/// `fused`.
fn with_zero_others(
    features: &[Tensor],
    fused: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
    let z = fused(features)?;
    let per = (0..features.len())
        .map(|m| fused(&zero_others(features, m)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((z, per))
}

/// The checks every two-modality head shares: exactly two modalities, a valid index.
fn check_two(kind: &str, dims: &[usize], index_name: &str, index: usize) -> Result<()> {
    if dims.len() != 2 {
        return config_err(format!(
            "{kind} fusion fuses exactly two modalities (as the official code), the model has {}",
            dims.len()
        ));
    }
    if index > 1 {
        return config_err(format!(
            "{kind} fusion: {index_name} = {index} is not a modality index (0 or 1, in the \
             model's modality order)"
        ));
    }
    Ok(())
}

/// FiLM head; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct FilmHead {
    /// `Linear(D_x → 2·D_y)`: `[γ; β]`.
    pub fc: Linear,
    /// `Linear(D_y → C)`.
    pub fc_out: Linear,
    condition: usize,
    dims: Vec<usize>,
}

impl FilmHead {
    /// Build under `pb`; modality `condition` (0 or 1) produces `γ, β` for the other one.
    pub fn new(
        pb: &ParamBuilder,
        feature_dims: &[usize],
        condition: usize,
        num_classes: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        check_two("film", feature_dims, "condition", condition)?;
        let (dx, dy) = (feature_dims[condition], feature_dims[1 - condition]);
        Ok(Self {
            fc: Linear::new(&pb.pp("fc"), dx, 2 * dy, rng)?,
            fc_out: Linear::new(&pb.pp("fc_out"), dy, num_classes, rng)?,
            condition,
            dims: feature_dims.to_vec(),
        })
    }

    /// Index of the conditioning modality.
    pub fn condition(&self) -> usize {
        self.condition
    }

    fn fused(&self, features: &[Tensor]) -> candle_core::Result<Tensor> {
        let x = &features[self.condition];
        let y = &features[1 - self.condition];
        let dy = self.dims[1 - self.condition];
        let p = self.fc.forward(x)?;
        let gamma = p.narrow(1, 0, dy)?;
        let beta = p.narrow(1, dy, dy)?;
        self.fc_out.forward(&((gamma * y)? + beta)?)
    }
}

impl crate::FusionHead for FilmHead {
    fn forward(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        crate::fusion::check_features("film", &self.dims, features)?;
        with_zero_others(features, |f| self.fused(f))
    }
    fn num_classes(&self) -> usize {
        self.fc_out.out_dim()
    }
    fn feature_dims(&self) -> &[usize] {
        &self.dims
    }
}

/// Gated-fusion head; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct GatedHead {
    /// `Linear(D_0 → H)` (the official `fc_x`, first modality).
    pub fc_x: Linear,
    /// `Linear(D_1 → H)` (the official `fc_y`, second modality).
    pub fc_y: Linear,
    /// `Linear(H → C)`.
    pub fc_out: Linear,
    gate: usize,
    dims: Vec<usize>,
}

impl GatedHead {
    /// Build under `pb`; modality `gate` (0 or 1) gives the gate, `dim` is `H` (`None`: the
    /// other modality's feature width).
    pub fn new(
        pb: &ParamBuilder,
        feature_dims: &[usize],
        gate: usize,
        dim: Option<usize>,
        num_classes: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        check_two("gated", feature_dims, "gate", gate)?;
        let h = dim.unwrap_or(feature_dims[1 - gate]);
        if h == 0 {
            return config_err("gated fusion: dim must be >= 1");
        }
        Ok(Self {
            fc_x: Linear::new(&pb.pp("fc_x"), feature_dims[0], h, rng)?,
            fc_y: Linear::new(&pb.pp("fc_y"), feature_dims[1], h, rng)?,
            fc_out: Linear::new(&pb.pp("fc_out"), h, num_classes, rng)?,
            gate,
            dims: feature_dims.to_vec(),
        })
    }

    /// Index of the gating modality.
    pub fn gate(&self) -> usize {
        self.gate
    }

    fn fused(&self, features: &[Tensor]) -> candle_core::Result<Tensor> {
        let hx = self.fc_x.forward(&features[0])?;
        let hy = self.fc_y.forward(&features[1])?;
        let (g, o) = if self.gate == 0 { (hx, hy) } else { (hy, hx) };
        self.fc_out.forward(&(crate::seqnn::sigmoid(&g)? * o)?)
    }
}

impl crate::FusionHead for GatedHead {
    fn forward(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        crate::fusion::check_features("gated", &self.dims, features)?;
        with_zero_others(features, |f| self.fused(f))
    }
    fn num_classes(&self) -> usize {
        self.fc_out.out_dim()
    }
    fn feature_dims(&self) -> &[usize] {
        &self.dims
    }
}

/// BLOCK head; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct BlockHead {
    /// `Linear(D_0 → mm_dim)`.
    pub linear0: Linear,
    /// `Linear(D_1 → mm_dim)`.
    pub linear1: Linear,
    /// Per chunk `Linear(s_k → s_k·rank)` on modality 0's side.
    pub merge0: Vec<Linear>,
    /// Per chunk `Linear(s_k → s_k·rank)` on modality 1's side.
    pub merge1: Vec<Linear>,
    /// `Linear(mm_dim → C)`.
    pub linear_out: Linear,
    sizes: Vec<usize>,
    rank: usize,
    dims: Vec<usize>,
}

impl BlockHead {
    pub fn new(
        pb: &ParamBuilder,
        feature_dims: &[usize],
        mm_dim: usize,
        chunks: usize,
        rank: usize,
        num_classes: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        check_two("block", feature_dims, "index", 0)?;
        if rank == 0 {
            return config_err("block fusion: rank must be >= 1");
        }
        let sizes = block_chunk_sizes(mm_dim, chunks)?;
        let linear0 = Linear::new(&pb.pp("linear0"), feature_dims[0], mm_dim, rng)?;
        let linear1 = Linear::new(&pb.pp("linear1"), feature_dims[1], mm_dim, rng)?;
        // The official constructor builds merge_linears0[k], merge_linears1[k] per chunk.
        let mut merge0 = Vec::with_capacity(sizes.len());
        let mut merge1 = Vec::with_capacity(sizes.len());
        for (k, &s) in sizes.iter().enumerate() {
            merge0.push(Linear::new(
                &pb.pp("merge_linears0").pp(k.to_string()),
                s,
                s * rank,
                rng,
            )?);
            merge1.push(Linear::new(
                &pb.pp("merge_linears1").pp(k.to_string()),
                s,
                s * rank,
                rng,
            )?);
        }
        let linear_out = Linear::new(&pb.pp("linear_out"), mm_dim, num_classes, rng)?;
        Ok(Self {
            linear0,
            linear1,
            merge0,
            merge1,
            linear_out,
            sizes,
            rank,
            dims: feature_dims.to_vec(),
        })
    }

    /// The chunk sizes `s_k`.
    pub fn chunk_sizes(&self) -> &[usize] {
        &self.sizes
    }
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The normalised chunk outputs concatenated, `[B, mm_dim]` (before `linear_out`).
    pub fn fused_representation(&self, features: &[Tensor]) -> candle_core::Result<Tensor> {
        let x0 = self.linear0.forward(&features[0])?;
        let x1 = self.linear1.forward(&features[1])?;
        let b = x0.dim(0)?;
        let mut off = 0;
        let mut zs = Vec::with_capacity(self.sizes.len());
        for (k, &s) in self.sizes.iter().enumerate() {
            let m = (self.merge0[k].forward(&x0.narrow(1, off, s)?)?
                * self.merge1[k].forward(&x1.narrow(1, off, s)?)?)?;
            let u = m.reshape((b, self.rank, s))?.sum(1)?;
            zs.push(l2_normalize(&signed_sqrt(&u)?, 1e-12)?);
            off += s;
        }
        Tensor::cat(&zs, 1)
    }

    fn fused(&self, features: &[Tensor]) -> candle_core::Result<Tensor> {
        self.linear_out
            .forward(&self.fused_representation(features)?)
    }
}

impl crate::FusionHead for BlockHead {
    fn forward(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        crate::fusion::check_features("block", &self.dims, features)?;
        with_zero_others(features, |f| self.fused(f))
    }
    fn num_classes(&self) -> usize {
        self.linear_out.out_dim()
    }
    fn feature_dims(&self) -> &[usize] {
        &self.dims
    }
}
