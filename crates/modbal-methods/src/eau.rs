//! `eau`: Embracing Unimodal Aleatoric Uncertainty for robust multimodal fusion (Gao, Jiang, Xu,
//! Shen, Li & Shen, CVPR 2024). See `docs/methods/eau.md` for the sources (the paper's abstract;
//! the official `URMF` code as preserved in `Knightrider16/EAURMF` @ `17d012d`) and every choice.
//!
//! # Maths
//! Per modality m, on the encoder feature `f_m` (`[B, D_m]`), two method-owned Linear layers give
//! a diagonal Gaussian embedding of width K (`latent_dim`):
//!
//! ```text
//! μ_m = Wμ_m f_m + bμ_m,   ℓ_m = Wℓ_m f_m + bℓ_m (= log σ²_m)                   (Gaussian)
//! ```
//!
//! **SUFA** (stable unimodal feature augmentation): two augmented views of each modality are
//! sampled from its own learned distribution, `z¹_m, z²_m = μ_m + s(ℓ_m) ⊙ ε` (ε ~ N(0, I) from
//! the run's RNG; `s = exp(ℓ/2)`, the standard deviation, or `exp(ℓ)` as the official code,
//! option `sample_scale`), and a symmetric InfoNCE (GRACE form, temperature τ) pulls the two views
//! of a sample together against the other samples of the batch:
//!
//! ```text
//! S¹² = exp(cos(z¹_i, z²_j)/τ),  S¹¹ = exp(cos(z¹_i, z¹_j)/τ)
//! ℓ(z¹, z²)_i = −log( S¹²_ii / (Σ_j S¹¹_ij − S¹¹_ii + Σ_j S¹²_ij) )
//! L_con,m = mean_i ½(ℓ(z¹, z²)_i + ℓ(z², z¹)_i)
//! ```
//!
//! The unimodal Gaussians are regularised towards N(0, I):
//! `KL_m = mean_b ½ Σ_k (μ² + e^ℓ − 1 − ℓ)`.
//!
//! **RMFI** (robust multimodal feature integration): each modality's mean is weighted by an
//! element-wise softmax over modalities of the negative variance (the official code's swapped
//! `softmax([σ²_img, σ²_txt])`, which for two modalities is exactly this), fused by a channel
//! gate over the M modality channels (CBAM-style: average over the K dims, a two-layer MLP
//! `M → M → M` with ReLU, sigmoid), then compressed by a variational information bottleneck:
//!
//! ```text
//! w_m = softmax_m(−σ²_m) (per dimension),   x_m = w_m ⊙ μ_m
//! g = sigmoid(G₂ relu(G₁ [mean_k x_1k, …, mean_k x_Mk])),   h = Σ_m g_m x_m
//! μ_z = Wμ h + bμ,  ℓ_z = Wℓ h + bℓ,  z = μ_z + s(ℓ_z) ⊙ ε
//! logits = C μ_z (the prediction, training and evaluation alike),  logits_IB = C_IB z
//! ```
//!
//! The loss (official `totolloss` + `con_loss` weights):
//!
//! ```text
//! L = CE(C μ_z, y) + β·KL(μ_z, ℓ_z) + λ_u Σ_m KL_m + λ_IB·CE(C_IB z, y) + λ_c Σ_m L_con,m
//!     + CE(head(sg[f]), y)
//! ```
//!
//! The last term trains the model's own fusion head as a linear probe on the detached encoder
//! features, so that the per-modality logits (`modality_acc`, the discrepancy ratio) stay
//! defined; it never reaches the encoders and never enters the prediction. At evaluation no
//! sampling happens: the prediction is `C μ_z` from the means alone.
//!
//! The method-owned layers (`mu.<m>`, `logvar.<m>`, `gate.fc1/fc2`, `vib.mu/logvar`, `clf`,
//! `ib_clf`) have their own Adam (AdamW with weight decay 0, the official optimizer) at the main
//! optimizer's current learning rate. Because the prediction depends on them, their weights are
//! part of the JSON [`Method::state`] (so the best-on-validation snapshot carries them); their
//! weights and Adam moments are also checkpointed through [`Method::state_tensors`].
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `variance` (mean σ²_m per modality), `weight` (mean w_m per modality), `gate` (mean g_m),
//! `kl_vib` (the unweighted VIB KL), `kl_uni` (unweighted KL_m per modality), `beta`, and the
//! loss parts `loss.{ce, kl_vib, kl_uni, ib, con, probe}` (weighted as in L).

use crate::params::MethodParams;
use crate::util::{by_name, check_batch_inputs, feature_widths};
use candle_core::{backprop::GradStore, DType, Device, Tensor, D};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
    StepOutput,
};
use modbal_tensors::{
    cross_entropy, AdamW, AdamWConfig, Linear, Optimizer, OptimizerState, ParamStore, SeededRng,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// How a reparameterised sample scales its noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleScale {
    /// `μ + exp(ℓ/2)·ε`: the standard deviation (Kingma & Welling; Alemi et al.'s VIB).
    Std,
    /// `μ + exp(ℓ)·ε`: the official code passes the variance `exp(logvar)` as the std.
    Var,
}

/// Options of `eau` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "eau"
/// latent_dim = 128
/// beta = 0.001
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EauConfig {
    /// Width K of the unimodal Gaussian embeddings and of the VIB latent, ≥ 1. Default 128
    /// (official `nn.Linear(hidden, 128)` in `BertClf`/`ImageClf`, `self.mu = nn.Linear(128, 128)`).
    pub latent_dim: usize,
    /// β, the weight of the VIB's KL to N(0, I), ≥ 0. Default 1e-3 (official `totolloss`:
    /// `1e-3*kl_loss`).
    pub beta: f64,
    /// λ_u, the weight of each unimodal Gaussian's KL to N(0, I), ≥ 0. Default 1e-3 (official
    /// `1e-3*txt_kl_loss + 1e-3*img_kl_loss`).
    pub unimodal_kl: f64,
    /// λ_IB, the weight of the CE of the classifier on the sampled VIB latent, ≥ 0. Default 1e-3
    /// (official `1e-3*IB_loss`).
    pub ib_weight: f64,
    /// λ_c, the weight of the SUFA contrastive loss (summed over modalities), ≥ 0. Default 1e-3
    /// (official `train.py`: `conloss*1e-3`).
    pub contrastive_weight: f64,
    /// τ, the InfoNCE temperature, > 0. Default 0.5 (official `Contrastive_loss(0.5)`).
    pub tau: f64,
    /// The noise scale of every reparameterised sample. Default `std` (the paper's
    /// reparameterisation; the official code's `var` is the option).
    pub sample_scale: SampleScale,
}

impl Default for EauConfig {
    fn default() -> Self {
        Self {
            latent_dim: 128,
            beta: 1e-3,
            unimodal_kl: 1e-3,
            ib_weight: 1e-3,
            contrastive_weight: 1e-3,
            tau: 0.5,
            sample_scale: SampleScale::Std,
        }
    }
}

fn cfg_err<T>(msg: String) -> Result<T> {
    Err(ModbalError::Config(format!("method eau: {msg}")))
}

impl EauConfig {
    pub fn validate(&self) -> Result<()> {
        if self.latent_dim == 0 {
            return cfg_err("latent_dim must be >= 1, got 0".into());
        }
        for (k, v) in [
            ("beta", self.beta),
            ("unimodal_kl", self.unimodal_kl),
            ("ib_weight", self.ib_weight),
            ("contrastive_weight", self.contrastive_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return cfg_err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return cfg_err(format!("tau must be finite and > 0, got {}", self.tau));
        }
        Ok(())
    }
}

impl MethodParams for EauConfig {
    fn check(&self) -> Result<()> {
        self.validate()
    }
    /// Any late-fusion head: the model's head is only a detached probe for the per-modality
    /// metrics; EAU's own fusion (uncertainty weights, gate, VIB) acts on the encoders' features.
    /// Not mmtm: the encoders must see only their own modality.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::LATE_FUSIONS,
            "the head is only a probe; EAU fuses the encoders' features itself, which needs \
             encoders that see only their own modality",
        )
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Eau::new(self.clone())?))
    }
}

// ---- the equations, as free functions (tested against closed forms) ---------------------------

/// `KL(N(μ, diag e^ℓ) ‖ N(0, I)) = ½ Σ_k (μ² + e^ℓ − 1 − ℓ)`, averaged over the batch (rows).
pub fn kl_standard_normal(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let t = ((mu.sqr()? + logvar.exp()?)? - logvar)?;
    let t = ((t - 1.0)? * 0.5)?;
    Ok(t.sum(D::Minus1)?.mean_all()?)
}

/// The reparameterised sample `μ + s(ℓ) ⊙ ε` with a given draw `ε` (`s = exp(ℓ/2)` or `exp(ℓ)`).
pub fn reparameterise(
    mu: &Tensor,
    logvar: &Tensor,
    eps: &Tensor,
    scale: SampleScale,
) -> Result<Tensor> {
    let s = match scale {
        SampleScale::Std => (logvar * 0.5)?.exp()?,
        SampleScale::Var => logvar.exp()?,
    };
    Ok((mu + (s * eps)?)?)
}

/// The uncertainty weights `w_m = softmax_m(−σ²_m)`, element-wise over the modalities.
pub fn uncertainty_weights(vars: &[Tensor]) -> Result<Vec<Tensor>> {
    let stacked = Tensor::stack(vars, 0)?.neg()?;
    let w = candle_nn_softmax0(&stacked)?;
    (0..vars.len())
        .map(|m| Ok(w.get(m)?))
        .collect::<Result<Vec<_>>>()
}

/// Softmax over axis 0 (max-shifted).
fn candle_nn_softmax0(x: &Tensor) -> Result<Tensor> {
    let mx = x.max_keepdim(0)?;
    let e = x.broadcast_sub(&mx)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(0)?)?)
}

fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let n = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-24)?.sqrt()?;
    Ok(x.broadcast_div(&n)?)
}

/// The one-direction InfoNCE `ℓ(z¹, z²)_i` (GRACE form, see the module docs), `[B]`.
fn semi_info_nce(z1: &Tensor, z2: &Tensor, tau: f64) -> Result<Tensor> {
    let (a, b) = (l2_normalise(z1)?, l2_normalise(z2)?);
    let refl = (a.matmul(&a.t()?)? / tau)?.exp()?;
    let between = (a.matmul(&b.t()?)? / tau)?.exp()?;
    let n = refl.dim(0)?;
    let eye = Tensor::eye(n, refl.dtype(), refl.device())?;
    let diag = |t: &Tensor| -> Result<Tensor> { Ok((t * &eye)?.sum(D::Minus1)?) };
    let denom = ((refl.sum(D::Minus1)? - diag(&refl)?)? + between.sum(D::Minus1)?)?;
    Ok((diag(&between)?.log()? - denom.log()?)?.neg()?)
}

/// The symmetric InfoNCE between two views, `mean_i ½(ℓ(z¹, z²)_i + ℓ(z², z¹)_i)`.
pub fn info_nce(z1: &Tensor, z2: &Tensor, tau: f64) -> Result<Tensor> {
    let l = ((semi_info_nce(z1, z2, tau)? + semi_info_nce(z2, z1, tau)?)? * 0.5)?;
    Ok(l.mean_all()?)
}

/// A standard-normal draw of `shape` from the run's RNG.
fn normal_like(t: &Tensor, rng: &mut SeededRng) -> Result<Tensor> {
    let v: Vec<f32> = rng
        .normal_vec(t.elem_count(), 0.0, 1.0)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Ok(Tensor::from_vec(v, t.dims(), t.device())?.to_dtype(t.dtype())?)
}

// ---- the method-owned layers ------------------------------------------------------------------

/// The Gaussian projections, the gate, the VIB and the two classifiers.
pub struct EauLayers {
    store: ParamStore,
    mu: Vec<Linear>,
    logvar: Vec<Linear>,
    gate1: Linear,
    gate2: Linear,
    vib_mu: Linear,
    vib_logvar: Linear,
    clf: Linear,
    ib_clf: Linear,
    opt: AdamW,
}

/// Everything one forward through the layers computes.
pub struct EauForward {
    pub mus: Vec<Tensor>,
    pub logvars: Vec<Tensor>,
    pub weights: Vec<Tensor>,
    /// `[B, M]`.
    pub gate: Tensor,
    pub mu_z: Tensor,
    pub logvar_z: Tensor,
    pub logits: Tensor,
    /// Training only: the IB classifier's logits on the sampled latent, and the two SUFA views
    /// per modality.
    pub ib_logits: Option<Tensor>,
    pub views: Vec<(Tensor, Tensor)>,
}

impl EauLayers {
    fn new(
        dims: &[usize],
        k: usize,
        classes: usize,
        seed: u64,
        dtype: DType,
        dev: &Device,
        names: &[String],
    ) -> Result<Self> {
        let mut rng = SeededRng::new(seed);
        let store = ParamStore::new();
        let root = store.root(dtype, dev);
        let m = dims.len();
        let mut mu = Vec::new();
        let mut logvar = Vec::new();
        for (name, &d) in names.iter().zip(dims) {
            mu.push(Linear::new(&root.pp("mu").pp(name), d, k, &mut rng)?);
            logvar.push(Linear::new(&root.pp("logvar").pp(name), d, k, &mut rng)?);
        }
        let gate1 = Linear::new(&root.pp("gate").pp("fc1"), m, m, &mut rng)?;
        let gate2 = Linear::new(&root.pp("gate").pp("fc2"), m, m, &mut rng)?;
        let vib_mu = Linear::new(&root.pp("vib").pp("mu"), k, k, &mut rng)?;
        let vib_logvar = Linear::new(&root.pp("vib").pp("logvar"), k, k, &mut rng)?;
        let clf = Linear::new(&root.pp("clf"), k, classes, &mut rng)?;
        let ib_clf = Linear::new(&root.pp("ib_clf"), k, classes, &mut rng)?;
        let opt = AdamW::new(
            store.trainable(),
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        );
        Ok(Self {
            store,
            mu,
            logvar,
            gate1,
            gate2,
            vib_mu,
            vib_logvar,
            clf,
            ib_clf,
            opt,
        })
    }

    /// The layers' trainable parameters, by name.
    pub fn params(&self) -> Vec<(String, candle_core::Var)> {
        self.store.trainable()
    }

    /// The forward through the layers; `rng = Some` samples (training), `None` is the
    /// deterministic evaluation path.
    pub fn forward(
        &self,
        features: &[Tensor],
        cfg: &EauConfig,
        rng: Option<&mut SeededRng>,
    ) -> Result<EauForward> {
        if features.len() != self.mu.len() {
            return Err(ModbalError::Data(format!(
                "method eau: {} feature tensors for layers built for {} modalities",
                features.len(),
                self.mu.len()
            )));
        }
        let mut mus = Vec::new();
        let mut logvars = Vec::new();
        for (m, f) in features.iter().enumerate() {
            mus.push(self.mu[m].forward(f)?);
            logvars.push(self.logvar[m].forward(f)?);
        }
        let vars = logvars
            .iter()
            .map(|l| Ok(l.exp()?))
            .collect::<Result<Vec<_>>>()?;
        let weights = uncertainty_weights(&vars)?;
        let xs = mus
            .iter()
            .zip(&weights)
            .map(|(mu, w)| Ok((mu * w)?))
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::stack(&xs, 1)?; // [B, M, K]
        let pooled = x.mean(D::Minus1)?; // [B, M]
        let a = self.gate2.forward(&self.gate1.forward_relu(&pooled)?)?;
        let gate = (a.neg()?.exp()? + 1.0)?.recip()?;
        let h = x.broadcast_mul(&gate.unsqueeze(D::Minus1)?)?.sum(1)?; // [B, K]
        let mu_z = self.vib_mu.forward(&h)?;
        let logvar_z = self.vib_logvar.forward(&h)?;
        let logits = self.clf.forward(&mu_z)?;
        let (ib_logits, views) = match rng {
            None => (None, Vec::new()),
            Some(rng) => {
                let mut views = Vec::new();
                for (mu, lv) in mus.iter().zip(&logvars) {
                    let z1 = reparameterise(mu, lv, &normal_like(mu, rng)?, cfg.sample_scale)?;
                    let z2 = reparameterise(mu, lv, &normal_like(mu, rng)?, cfg.sample_scale)?;
                    views.push((z1, z2));
                }
                let z = reparameterise(
                    &mu_z,
                    &logvar_z,
                    &normal_like(&mu_z, rng)?,
                    cfg.sample_scale,
                )?;
                (Some(self.ib_clf.forward(&z)?), views)
            }
        };
        Ok(EauForward {
            mus,
            logvars,
            weights,
            gate,
            mu_z,
            logvar_z,
            logits,
            ib_logits,
            views,
        })
    }

    fn weights_json(&self) -> Result<serde_json::Value> {
        let mut w = serde_json::Map::new();
        for (n, v) in self.store.all() {
            w.insert(n, tensor_json(v.as_tensor())?);
        }
        Ok(serde_json::Value::Object(w))
    }

    fn restore(&self, map: &HashMap<String, Tensor>) -> Result<()> {
        let names: Vec<String> = self.store.all().into_iter().map(|(n, _)| n).collect();
        for n in &names {
            if !map.contains_key(n) {
                return Err(ModbalError::Data(format!(
                    "method eau: saved state lacks the layer tensor {n:?}"
                )));
            }
        }
        self.store
            .restore(map)
            .map_err(|e| ModbalError::Data(format!("method eau: saved layers: {e}")))?;
        Ok(())
    }
}

fn tensor_json(t: &Tensor) -> Result<serde_json::Value> {
    Ok(json!({
        "shape": t.dims(),
        "data": t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
    }))
}

fn json_tensor(v: &serde_json::Value, dtype: DType, dev: &Device, what: &str) -> Result<Tensor> {
    let bad = |e: String| ModbalError::Data(format!("method eau: saved layer {what}: {e}"));
    let shape: Vec<usize> =
        serde_json::from_value(v["shape"].clone()).map_err(|e| bad(e.to_string()))?;
    let data: Vec<f64> =
        serde_json::from_value(v["data"].clone()).map_err(|e| bad(e.to_string()))?;
    if shape.iter().product::<usize>() != data.len() {
        return Err(bad(format!("{} values for shape {shape:?}", data.len())));
    }
    Ok(Tensor::from_vec(data, shape, dev)?.to_dtype(dtype)?)
}

fn next_seed(rng: &mut SeededRng) -> u64 {
    let mut child = rng.fork();
    (child.uniform() * 9_007_199_254_740_992.0) as u64
}

/// What the layers were built for (recorded in the JSON state so that a restored snapshot can
/// rebuild them before any training step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Shape {
    modalities: Vec<String>,
    dims: Vec<usize>,
    classes: usize,
}

#[derive(Default)]
struct EpochSums {
    steps: usize,
    var: Vec<f64>,
    weight: Vec<f64>,
    gate: Vec<f64>,
    kl_uni: Vec<f64>,
    kl_vib: f64,
}

/// The EAU method; see the [module docs](self).
pub struct Eau {
    cfg: EauConfig,
    init_seed: Option<u64>,
    shape: Option<Shape>,
    layers: Option<EauLayers>,
    /// Saved layer weights (JSON state) not yet applied.
    pending_json: Option<serde_json::Value>,
    /// Saved layer weights and Adam state (checkpoint tensors) not yet applied.
    pending_tensors: Option<BTreeMap<String, Tensor>>,
    /// The last training forward (for the loss).
    last: Option<EauForward>,
    /// The last training forward's probe logits: the model's head on the detached features.
    last_probe: Option<Tensor>,
    sums: EpochSums,
}

impl std::fmt::Debug for Eau {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eau")
            .field("cfg", &self.cfg)
            .field("init_seed", &self.init_seed)
            .field("shape", &self.shape)
            .finish()
    }
}

impl Eau {
    pub fn new(cfg: EauConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            init_seed: None,
            shape: None,
            layers: None,
            pending_json: None,
            pending_tensors: None,
            last: None,
            last_probe: None,
            sums: EpochSums::default(),
        })
    }

    pub fn config(&self) -> &EauConfig {
        &self.cfg
    }

    /// The method-owned layers (built at the first training step).
    pub fn layers(&self) -> Option<&EauLayers> {
        self.layers.as_ref()
    }

    /// The last training step's forward through the layers.
    pub fn last_forward(&self) -> Option<&EauForward> {
        self.last.as_ref()
    }

    fn build_layers(&mut self, dtype: DType, dev: &Device) -> Result<()> {
        let (Some(shape), Some(seed)) = (&self.shape, self.init_seed) else {
            return Ok(());
        };
        let layers = EauLayers::new(
            &shape.dims,
            self.cfg.latent_dim,
            shape.classes,
            seed,
            dtype,
            dev,
            &shape.modalities,
        )?;
        if let Some(v) = self.pending_json.take() {
            let mut map = HashMap::new();
            if let Some(w) = v.as_object() {
                for (n, t) in w {
                    map.insert(n.clone(), json_tensor(t, dtype, dev, n)?);
                }
            }
            layers.restore(&map)?;
        }
        let mut layers = layers;
        if let Some(t) = self.pending_tensors.take() {
            restore_tensors(&mut layers, &t)?;
        }
        self.layers = Some(layers);
        Ok(())
    }

    fn ensure_layers(
        &mut self,
        model: &dyn MultimodalModel,
        features: &[Tensor],
        ctx: &mut RunContext,
    ) -> Result<()> {
        if let Some(l) = &self.layers {
            let w = &l.clf.weight;
            let f = &features[0];
            if w.device().same_device(f.device()) && w.dtype() == f.dtype() {
                return Ok(());
            }
            // Layers restored on the CPU (a resumed run's `load_state`) move to the run's
            // device and dtype, weights and Adam state alike.
            self.pending_tensors = Some(self.state_tensors()?);
            self.pending_json = None;
            self.layers = None;
            return self.build_layers(f.dtype(), f.device());
        }
        let dims = feature_widths("method eau", model, features)?;
        let shape = Shape {
            modalities: model.modalities().to_vec(),
            dims,
            classes: model.num_classes(),
        };
        if let Some(s) = &self.shape {
            if *s != shape {
                return Err(ModbalError::Data(format!(
                    "method eau: saved layers were built for {s:?}, the model has {shape:?}"
                )));
            }
        }
        self.shape = Some(shape);
        if self.init_seed.is_none() {
            self.init_seed = Some(next_seed(&mut ctx.rng));
        }
        self.build_layers(features[0].dtype(), features[0].device())
    }
}

fn restore_tensors(layers: &mut EauLayers, t: &BTreeMap<String, Tensor>) -> Result<()> {
    let map: HashMap<String, Tensor> = t
        .iter()
        .filter(|(n, _)| !n.starts_with("opt.") && !n.starts_with("steps."))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    layers.restore(&map)?;
    let mut steps = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (n, v) in t {
        if let Some(k) = n.strip_prefix("opt.") {
            tensors.insert(k.to_string(), v.clone());
        } else if let Some(k) = n.strip_prefix("steps.") {
            steps.insert(
                k.to_string(),
                v.to_dtype(DType::F64)?.to_scalar::<f64>()? as u64,
            );
        }
    }
    let w = &layers.clf.weight;
    let (dtype, dev) = (w.dtype(), w.device().clone());
    let tensors = tensors
        .into_iter()
        .map(|(n, v)| Ok((n, v.to_dtype(dtype)?.to_device(&dev)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    layers.opt.load_state(&OptimizerState {
        kind: "adamw".into(),
        steps,
        tensors,
    })?;
    Ok(())
}

fn mean_scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
}

fn add(v: &mut Vec<f64>, m: usize, x: f64) {
    if v.len() <= m {
        v.resize(m + 1, 0.0);
    }
    v[m] += x;
}

impl Method for Eau {
    fn name(&self) -> &str {
        "eau"
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        check_batch_inputs("method eau", model, batch)?;
        let features = batch
            .inputs
            .iter()
            .enumerate()
            .map(|(m, x)| Ok(model.encode(m, x, true)?))
            .collect::<Result<Vec<_>>>()?;
        self.ensure_layers(model, &features, ctx)?;
        // The model's head: a linear probe on the detached features (per-modality logits).
        let detached: Vec<Tensor> = features.iter().map(Tensor::detach).collect();
        let (probe, per_modality_logits) = model.head(&detached)?;
        let layers = self.layers.as_ref().ok_or_else(|| {
            ModbalError::Data("method eau: its layers were not built by ensure_layers".into())
        })?;
        let fwd = layers.forward(&features, &self.cfg, Some(&mut ctx.rng))?;
        let fused_logits = fwd.logits.clone();
        self.last = Some(fwd);
        self.last_probe = Some(probe);
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let fwd = self.last.as_ref().ok_or_else(|| {
            ModbalError::Data("method eau: loss called before its forward".into())
        })?;
        let y = &batch.labels;
        let cfg = &self.cfg;
        let ce = cross_entropy(&out.fused_logits, y)?;
        let kl_vib = kl_standard_normal(&fwd.mu_z, &fwd.logvar_z)?;
        let ib_logits = fwd.ib_logits.as_ref().ok_or_else(|| {
            ModbalError::Data("method eau: loss needs the training forward (VIB sample)".into())
        })?;
        let ib = cross_entropy(ib_logits, y)?;
        let mut kl_uni = Vec::new();
        let mut con = Vec::new();
        for (m, (mu, lv)) in fwd.mus.iter().zip(&fwd.logvars).enumerate() {
            kl_uni.push(kl_standard_normal(mu, lv)?);
            let (z1, z2) = &fwd.views[m];
            con.push(info_nce(z1, z2, cfg.tau)?);
        }
        let probe_logits = match &self.last_probe {
            Some(p) => p.clone(),
            None => {
                let detached: Vec<Tensor> = out.features.iter().map(Tensor::detach).collect();
                model.head(&detached)?.0
            }
        };
        let probe = cross_entropy(&probe_logits, y)?;

        let kl_uni_sum = Tensor::stack(&kl_uni, 0)?.sum_all()?;
        let con_sum = Tensor::stack(&con, 0)?.sum_all()?;
        let parts_w = [
            ("ce", ce.clone()),
            ("kl_vib", (&kl_vib * cfg.beta)?),
            ("kl_uni", (&kl_uni_sum * cfg.unimodal_kl)?),
            ("ib", (&ib * cfg.ib_weight)?),
            ("con", (&con_sum * cfg.contrastive_weight)?),
            ("probe", probe),
        ];
        let mut total = parts_w[0].1.clone();
        for (_, t) in &parts_w[1..] {
            total = (total + t)?;
        }
        // Epoch statistics of the mechanism.
        let s = &mut self.sums;
        s.steps += 1;
        for m in 0..fwd.mus.len() {
            add(&mut s.var, m, mean_scalar(&fwd.logvars[m].exp()?)?);
            add(&mut s.weight, m, mean_scalar(&fwd.weights[m])?);
            add(&mut s.gate, m, mean_scalar(&fwd.gate.narrow(1, m, 1)?)?);
            add(&mut s.kl_uni, m, mean_scalar(&kl_uni[m])?);
        }
        s.kl_vib += mean_scalar(&kl_vib)?;
        Ok(LossTerms {
            total,
            parts: parts_w
                .into_iter()
                .map(|(k, t)| (k.to_string(), t.detach()))
                .collect(),
        })
    }

    fn train_step(
        &mut self,
        model: &dyn MultimodalModel,
        batch: Batch,
        opt: &mut dyn Optimizer,
        ctx: &mut RunContext,
    ) -> Result<StepOutput> {
        let out = self.forward(model, &batch, ctx)?;
        let loss = self.loss(model, &batch, &out, ctx)?;
        let value = loss.value_logged(ctx)?;
        let mut grads: GradStore = loss.total.backward()?;
        let layers = self.layers.as_mut().ok_or_else(|| {
            ModbalError::Data("method eau: train_step before its layers were built".into())
        })?;
        layers.opt.set_lr(opt.lr());
        layers.opt.step(&grads)?;
        for (_, v) in layers.store.trainable() {
            grads.remove(v.as_tensor());
        }
        opt.step(&grads)?;
        self.last = None;
        self.last_probe = None;
        Ok(StepOutput {
            loss: value,
            output: out.detach(),
        })
    }

    fn predict(&self, _model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        let layers = self.layers.as_ref().ok_or_else(|| {
            ModbalError::Data(
                "method eau: no layers to predict with (neither trained nor restored)".into(),
            )
        })?;
        let features = out
            .features
            .iter()
            .map(|f| {
                let w = &layers.clf.weight;
                Ok(f.to_device(w.device())?.to_dtype(w.dtype())?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(layers.forward(&features, &self.cfg, None)?.logits)
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let s = std::mem::take(&mut self.sums);
        if s.steps == 0 {
            return Ok(());
        }
        let n = s.steps as f64;
        let names = model.modalities();
        let div = |v: &[f64]| v.iter().map(|x| x / n).collect::<Vec<_>>();
        ctx.log.set("variance", by_name(names, &div(&s.var)));
        ctx.log.set("weight", by_name(names, &div(&s.weight)));
        ctx.log.set("gate", by_name(names, &div(&s.gate)));
        ctx.log.set("kl_uni", by_name(names, &div(&s.kl_uni)));
        ctx.log.set("kl_vib", s.kl_vib / n);
        ctx.log.set("beta", self.cfg.beta);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        let weights = match &self.layers {
            Some(l) => l.weights_json().unwrap_or(serde_json::Value::Null),
            None => self.pending_json.clone().unwrap_or(serde_json::Value::Null),
        };
        json!({
            "init_seed": self.init_seed,
            "shape": self.shape,
            "weights": weights,
        })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        if let Some(s) = state["init_seed"].as_u64() {
            self.init_seed = Some(s);
        }
        if !state["shape"].is_null() {
            let shape: Shape = serde_json::from_value(state["shape"].clone()).map_err(|e| {
                ModbalError::Serde(format!("method eau: unreadable saved state: {e}"))
            })?;
            self.shape = Some(shape);
        }
        let weights = &state["weights"];
        if weights.is_null() {
            return Ok(());
        }
        match &self.layers {
            Some(l) => {
                let (dtype, dev) = (l.clf.weight.dtype(), l.clf.weight.device().clone());
                let mut map = HashMap::new();
                if let Some(w) = weights.as_object() {
                    for (n, t) in w {
                        map.insert(n.clone(), json_tensor(t, dtype, &dev, n)?);
                    }
                }
                l.restore(&map)?;
            }
            None => {
                self.pending_json = Some(weights.clone());
                // Rebuild now (on the CPU) so that a restored snapshot can predict before any
                // training step; a training run rebuilds nothing (the layers then exist).
                self.build_layers(DType::F32, &Device::Cpu)?;
            }
        }
        Ok(())
    }

    fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let Some(l) = &self.layers else {
            return Ok(self.pending_tensors.clone().unwrap_or_default());
        };
        let mut out = BTreeMap::new();
        for (n, v) in l.store.all() {
            out.insert(n, v.as_tensor().clone());
        }
        let st = l.opt.state();
        for (n, t) in st.tensors {
            out.insert(format!("opt.{n}"), t);
        }
        for (n, s) in st.steps {
            out.insert(
                format!("steps.{n}"),
                Tensor::new(s as f64, l.clf.weight.device())?,
            );
        }
        Ok(out)
    }

    fn load_state_tensors(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        match &mut self.layers {
            Some(l) => restore_tensors(l, tensors),
            None => {
                self.pending_tensors = Some(tensors.clone());
                Ok(())
            }
        }
    }
}
