//! CLUB: a variational upper bound of mutual information, and UDI's complementary loss.
//!
//! References: Cheng, Hao, Dai, Liu, Gan, Carin, "CLUB: A Contrastive Log-ratio Upper Bound of
//! Mutual Information", ICML 2020 (official code: `Linear95/CLUB`, `mi_estimators.py`), and the
//! UDI paper ("Unidirectional Dynamic Interaction", eq 7-11), which uses it to make a follower
//! modality's features `f^m` complementary to a frozen anchor's `f^a` (x = `f^a`, y = `f^m`).
//!
//! # The estimators
//!
//! **Contrastive log-ratio bound** (Cheng et al. 2020; UDI eq 7), with the true conditional:
//!
//! `Î(x; y) = E_p(x,y)[log p(y|x)] − E_p(x) E_p(y)[log p(y|x)]  ≥  I(x; y)`
//!
//! (equality iff x and y are independent; UDI appendix A.1, eq 17-25). Since p(y|x) is unknown it
//! is replaced by a **variational network** q_φ(y|x) = N(μ(x), diag σ²(x)), σ² = exp(logvar(x)):
//!
//! * `μ(x)      = Linear(x_dim → h/2) → ReLU → Linear(h/2 → y_dim)`
//! * `logvar(x) = Linear(x_dim → h/2) → ReLU → Linear(h/2 → y_dim) → tanh`
//!
//! exactly as the official code (`p_mu`, `p_logvar`): the tanh keeps logvar ∈ (−1, 1), i.e.
//! σ² ∈ (e⁻¹, e) ≈ (0.37, 2.72) per dimension. That keeps every estimate finite, but q cannot
//! represent a conditional variance below e⁻¹ (standardise the features if they are small), and the
//! two networks do not share weights. Weights and biases use PyTorch's `nn.Linear` default
//! U(−1/√fan_in, 1/√fan_in), drawn from the caller's [`SeededRng`].
//!
//! **Learning q** (UDI eq 9-10; the official `learning_loss`): minimise
//! `KL(p(y|x) ‖ q_φ(y|x))`, i.e. the negative log-likelihood
//! `L_MI = −(1/N) Σ_i log q_φ(y_i|x_i)` ([`Club::learning_loss`]), with
//!
//! `log q(y|x) = Σ_d [ −(y_d − μ_d)²/(2σ_d²) − ½ logvar_d − ½ log 2π ]`
//!
//! [`Club::log_likelihood`] includes the constant `−(D/2) log 2π`, so it is a true log-density
//! (with q exact it equals −h(Y|X)). The official `loglikeli` returns `Σ_d[−(y_d−μ_d)²/σ_d² −
//! logvar_d]`, i.e. twice ours without the constant: same minimiser, gradients half as large
//! (immaterial to Adam).
//!
//! **CLUB** (the N-sample estimate of the variational bound, the official `CLUB.forward`):
//!
//! `I_CLUB = (1/N) Σ_i Σ_d [ −(μ_id − y_id)²/(2σ_id²) + (1/N) Σ_j (y_jd − μ_id)²/(2σ_id²) ]`
//!
//! computed **without the N×N×D tensor** of the official code: the inner mean is
//! `(1/N) Σ_j (y_jd − μ_id)² = var_d(y) + (ȳ_d − μ_id)²` (population variance), so [`Club::club`]
//! is O(N·D) in time and memory, exact, and differentiable in x, y and φ.
//!
//! **CLUBSample** (Cheng et al.'s negative-sampling version, the official `CLUBSample.forward`):
//! one random permutation π (from a [`SeededRng`]) replaces the average over j:
//! `(1/N) Σ_i Σ_d [ (μ_id − y_π(i)d)² − (μ_id − y_id)² ] / (2σ_id²)`. Since π(i) is uniform over
//! 0..N, its expectation over π is exactly `I_CLUB` (unbiased).
//!
//! **vCLUB** (UDI eq 8), the complementary loss `L^m_com = Î_v(f^a; f^m)` (UDI eq 11):
//!
//! `Î_v = (1/N²) Σ_i Σ_j [ log q(y_i|x_i) − log q(y_j|x_i) ]`
//!
//! implemented literally from the N×N matrix `L_ij = log q(y_j|x_i)` ([`Club::log_prob_matrix`],
//! built with two matmuls, O(N² + N·D) memory). The `−½ logvar_id − (D/2) log 2π` terms of
//! `L_ii` and `L_ij` cancel (both condition on x_i), so `Î_v = I_CLUB` for the same q and batch.
//!
//! Caveat on tightness: even with the exact q, CLUB is *not* the MI. For x ~ N(0, I_d),
//! y = ρx + √(1−ρ²)ε it equals `d·ρ²/(1−ρ²)` while `I = −(d/2) log(1−ρ²)` (ratio ≈ 2 for small ρ);
//! it is exact only at independence (I = 0). As a loss to *minimise* that is what matters: it is an
//! upper bound which reaches 0 exactly when the features are independent. With an under-trained q
//! the estimate may even be negative (the usual symptom of an under-trained q).
//!
//! # "One model step, k q-steps"
//!
//! [`Club`] owns its parameters (its own [`ParamStore`], names `club.mu.*`, `club.logvar.*`) and
//! its own optimizer, built from [`ClubConfig::q_optimizer`] over exactly those variables. Per
//! minibatch (UDI Algorithm 1, lines 14-19):
//!
//! ```text
//! let f_a = anchor.forward(x_a)?.detach();    // frozen anchor
//! let f_m = follower.forward(x_m)?;
//! club.q_update(&f_a, &f_m)?;                 // (1) k = q_steps steps of L_MI, detached inputs
//! let l_com = club.vclub(&f_a, &f_m)?;        // (2) UDI eq 11, q fixed
//! let loss = (l_cls + (l_com * alpha_com)?)?;
//! model_opt.step(&loss.backward()?)?;         //     the model's optimizer: the model's vars only
//! ```
//!
//! * `q_update` detaches its inputs, so q-steps never move (or even reach) the model.
//! * The estimate's `GradStore` *does* hold gradients for q's parameters (the estimate is
//!   differentiable in φ); the model's optimizer never sees q's variables, so they are ignored
//!   there. Never build the model optimizer over `club.params()`: minimising the bound w.r.t. φ
//!   would loosen it, the opposite of `q_update`.
//! * Order: run `q_update` before computing the estimate (as above, UDI's order) or after the
//!   model's backward pass. Not in between: candle updates `Var`s in place, so a graph built before
//!   a q-step would back-propagate through the *updated* φ.
//! * The official CLUB demos use k = 1 q-step per model step; UDI's Algorithm 1 too (line 14).
//!
//! # Shapes
//! * `x: [N, x_dim]`, `y: [N, y_dim]`, same N and the float dtype q was built with; N ≥ 1 for
//!   [`Club::log_prob`], [`Club::log_likelihood`], [`Club::learning_loss`], [`Club::q_update`];
//!   N ≥ 2 for [`Club::club`], [`Club::club_sample`], [`Club::vclub`], [`Club::log_prob_matrix`]
//! * [`Club::mu_logvar`] `-> ([N, y_dim], [N, y_dim])`; [`Club::log_prob`] `-> [N]`;
//!   [`Club::log_prob_matrix`] `-> [N, N]` (row i conditions on x_i, column j is y_j)
//! * the estimators and losses `-> []` (scalar, in nats)
//!
//! Inputs with NaN/Inf, mismatched shapes or too few samples give an [`InfoError::Input`] naming
//! the shapes; a bad configuration gives an [`InfoError::Param`].

use crate::error::{check_finite, InfoError, Result};
use candle_core::{DType, Device, Tensor};
use modbal_tensors::{
    AdamWConfig, Init, Linear, Optimizer, OptimizerConfig, ParamBuilder, ParamStore, SeededRng,
};
use serde::{Deserialize, Serialize};

/// `½ log 2π`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// Default hidden size: the official CLUB Gaussian benchmark (`mi_estimation.ipynb`,
/// `hidden_size = 15` for 20-d samples), i.e. 7 hidden units per network.
pub const DEFAULT_HIDDEN: usize = 15;
/// Default learning rate of q: the official CLUB benchmark (`torch.optim.Adam(..., 0.005)`).
pub const DEFAULT_Q_LR: f64 = 5e-3;
/// Default number of q-steps per model step: UDI Algorithm 1 (line 14) and the official demos.
pub const DEFAULT_Q_STEPS: usize = 1;

fn default_hidden() -> usize {
    DEFAULT_HIDDEN
}
fn default_q_steps() -> usize {
    DEFAULT_Q_STEPS
}
fn default_q_optimizer() -> OptimizerConfig {
    OptimizerConfig::Adamw(AdamWConfig {
        lr: DEFAULT_Q_LR,
        weight_decay: 0.0,
        ..AdamWConfig::default()
    })
}

/// Configuration of a [`Club`] estimator.
///
/// There is no `Default`: the dimensions have no sensible default. [`ClubConfig::new`] fills in
/// the documented defaults, and in serde only `x_dim`, `y_dim` are required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClubConfig {
    /// Dimension of x (the conditioning variable; UDI: the anchor's features `f^a`).
    pub x_dim: usize,
    /// Dimension of y (the modelled variable; UDI: the follower's features `f^m`).
    pub y_dim: usize,
    /// Hidden size `h`: each of the two networks (μ, logvar) has `h / 2` hidden units, as the
    /// official code (`hidden_size // 2`). Default [`DEFAULT_HIDDEN`] = 15 (the official Gaussian
    /// benchmark, for 20-d samples); scale it with the feature dimension (e.g. `h = 2·x_dim` or
    /// more for 512-d features): an under-fitted q makes the estimate loose or even negative.
    /// Must be ≥ 2.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Optimizer of q. Default: Adam (AdamW with weight decay 0), lr [`DEFAULT_Q_LR`] = 5e-3,
    /// betas (0.9, 0.999), eps 1e-8: `torch.optim.Adam(model.parameters(), 0.005)` of the official
    /// benchmark.
    #[serde(default = "default_q_optimizer")]
    pub q_optimizer: OptimizerConfig,
    /// k: optimizer steps of q per call of [`Club::q_update`] (i.e. per model step). Default
    /// [`DEFAULT_Q_STEPS`] = 1 (UDI Algorithm 1; official demos). Must be ≥ 1.
    #[serde(default = "default_q_steps")]
    pub q_steps: usize,
}

impl ClubConfig {
    /// A configuration with the documented defaults for everything but the dimensions.
    pub fn new(x_dim: usize, y_dim: usize) -> Self {
        Self {
            x_dim,
            y_dim,
            hidden: DEFAULT_HIDDEN,
            q_optimizer: default_q_optimizer(),
            q_steps: DEFAULT_Q_STEPS,
        }
    }

    /// Checks the parameters ([`InfoError::Param`] naming the culprit).
    pub fn validate(&self) -> Result<()> {
        if self.x_dim == 0 || self.y_dim == 0 {
            return Err(InfoError::Param(format!(
                "club: x_dim and y_dim must be >= 1, got x_dim = {}, y_dim = {}",
                self.x_dim, self.y_dim
            )));
        }
        if self.hidden < 2 {
            return Err(InfoError::Param(format!(
                "club: hidden must be >= 2 (each network has hidden / 2 units), got {}",
                self.hidden
            )));
        }
        if self.q_steps == 0 {
            return Err(InfoError::Param("club: q_steps must be >= 1, got 0".into()));
        }
        self.q_optimizer
            .validate()
            .map_err(|e| InfoError::Param(format!("club: q_optimizer: {e}")))
    }
}

/// Two-layer MLP `Linear → ReLU → Linear`, PyTorch default init.
#[derive(Clone, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(
        pb: &ParamBuilder,
        d_in: usize,
        d_hidden: usize,
        d_out: usize,
        rng: &mut SeededRng,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: torch_linear(&pb.pp("fc1"), d_in, d_hidden, rng)?,
            fc2: torch_linear(&pb.pp("fc2"), d_hidden, d_out, rng)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}

/// `nn.Linear` with PyTorch's default init: weight and bias U(−1/√fan_in, 1/√fan_in).
fn torch_linear(
    pb: &ParamBuilder,
    d_in: usize,
    d_out: usize,
    rng: &mut SeededRng,
) -> candle_core::Result<Linear> {
    let init = Init::TorchDefault { fan_in: d_in };
    let weight = pb.param("weight", (d_out, d_in), init, rng)?;
    let bias = pb.param("bias", d_out, init, rng)?;
    Ok(Linear {
        weight,
        bias: Some(bias),
    })
}

/// The CLUB estimator: the variational q(y|x), its own parameters and optimizer.
pub struct Club {
    cfg: ClubConfig,
    store: ParamStore,
    mu: Mlp,
    logvar: Mlp,
    opt: Box<dyn Optimizer>,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for Club {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Club")
            .field("cfg", &self.cfg)
            .field("num_params", &self.store.num_trainable())
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Club {
    /// Builds q in f32 on `device`, drawing its initial weights from `rng` (in the order
    /// `mu.fc1`, `mu.fc2`, `logvar.fc1`, `logvar.fc2`, weight then bias).
    pub fn new(cfg: ClubConfig, rng: &mut SeededRng, device: &Device) -> Result<Self> {
        Self::with_dtype(cfg, rng, device, DType::F32)
    }

    /// As [`Club::new`] with parameters of the float dtype `dtype`; inputs must have that dtype.
    pub fn with_dtype(
        cfg: ClubConfig,
        rng: &mut SeededRng,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        cfg.validate()?;
        if !dtype.is_float() {
            return Err(InfoError::Param(format!(
                "club: the parameter dtype must be a float type, got {dtype:?}"
            )));
        }
        let store = ParamStore::new();
        let pb = store.root(dtype, device).pp("club");
        let h = cfg.hidden / 2;
        let mu = Mlp::new(&pb.pp("mu"), cfg.x_dim, h, cfg.y_dim, rng)?;
        let logvar = Mlp::new(&pb.pp("logvar"), cfg.x_dim, h, cfg.y_dim, rng)?;
        let opt = cfg.q_optimizer.build(store.trainable())?;
        Ok(Self {
            cfg,
            store,
            mu,
            logvar,
            opt,
            dtype,
            device: device.clone(),
        })
    }

    /// The configuration q was built with.
    pub fn config(&self) -> &ClubConfig {
        &self.cfg
    }

    /// q's parameters (for checkpoints: `params().save(..)`; never hand them to the model's
    /// optimizer, see the module docs).
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// q's optimizer (learning rate, checkpointable state).
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.opt.as_ref()
    }

    /// q's optimizer, mutably (e.g. `set_lr`, `load_state`).
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.opt.as_mut()
    }

    /// The dtype of q's parameters (and of the accepted inputs).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of q's parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(μ(x), logvar(x))`, each `[N, y_dim]`, logvar ∈ (−1, 1).
    pub fn mu_logvar(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_x(x, "mu_logvar")?;
        self.mu_logvar_unchecked(x)
    }

    /// Per-sample `log q(y_i|x_i)` with the Gaussian constant, `[N]` (see the module docs).
    pub fn log_prob(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.check_pair(x, y, 1, "log_prob")?;
        self.log_prob_unchecked(x, y)
    }

    /// `(1/N) Σ_i log q(y_i|x_i)`, scalar, including `−(D/2) log 2π` (module docs; UDI eq 10
    /// is its negative).
    pub fn log_likelihood(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.check_pair(x, y, 1, "log_likelihood")?;
        Ok(self.log_prob_unchecked(x, y)?.mean(0)?)
    }

    /// `L_MI = −log_likelihood(x, y)` (UDI eq 10): what q minimises. Differentiable in x, y and
    /// φ; [`Club::q_update`] applies it to detached inputs.
    pub fn learning_loss(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.check_pair(x, y, 1, "learning_loss")?;
        self.learning_loss_unchecked(x, y)
    }

    /// The CLUB estimate (official `CLUB.forward`), O(N·D), scalar. Needs N ≥ 2.
    pub fn club(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.check_pair(x, y, 2, "club")?;
        if let Some(v) = self.fused(x, y, None) {
            return v;
        }
        Ok(club_formula(&self.mu, &self.logvar, x, y)?)
    }

    /// CLUBSample (official `CLUBSample.forward`): the negative pairs are `(x_i, y_π(i))` for one
    /// permutation π drawn from `rng` (advances it by one permutation). Unbiased for
    /// [`Club::club`]. Needs N ≥ 2.
    pub fn club_sample(&self, x: &Tensor, y: &Tensor, rng: &mut SeededRng) -> Result<Tensor> {
        let n = self.check_pair(x, y, 2, "club_sample")?;
        let perm: Vec<u32> = rng.permutation(n).into_iter().map(|i| i as u32).collect();
        if let Some(v) = self.fused(x, y, Some(&perm)) {
            return v;
        }
        let perm = Tensor::from_vec(perm, n, y.device())?;
        Ok(club_sample_formula(&self.mu, &self.logvar, x, y, &perm)?)
    }

    /// q's parameters in packing order: per network (μ, logvar), fc1 weight and bias, fc2
    /// weight and bias.
    fn param_tensors(&self) -> Option<[&Tensor; 8]> {
        Some([
            &self.mu.fc1.weight,
            self.mu.fc1.bias.as_ref()?,
            &self.mu.fc2.weight,
            self.mu.fc2.bias.as_ref()?,
            &self.logvar.fc1.weight,
            self.logvar.fc1.bias.as_ref()?,
            &self.logvar.fc2.weight,
            self.logvar.fc2.bias.as_ref()?,
        ])
    }

    /// The fused f64 path of [`Club::club`] (`perm = None`) and [`Club::club_sample`]: when x and
    /// y (validated) do not track gradients and everything is f64 on the CPU, the estimate is
    /// computed in one pass over the rows (see `fast` below) and attached to q's parameters, so
    /// that it stays differentiable in φ (its backward rebuilds the tensor formula).
    fn fused(&self, x: &Tensor, y: &Tensor, perm: Option<&[u32]>) -> Option<Result<Tensor>> {
        if x.track_op()
            || y.track_op()
            || self.dtype != DType::F64
            || !self.device.is_cpu()
            || modbal_tensors::ops::generic_forced()
            || !y.is_contiguous()
        {
            return None;
        }
        let params = self.param_tensors()?;
        let (n, dx) = x.dims2().ok()?;
        let dy = y.dim(1).ok()?;
        let h = self.cfg.hidden / 2;
        // Both first layers at once by a matrix product: `[N, dx] × [dx, 2h]`.
        let hidden = (|| {
            let w1 = Tensor::cat(&[params[0].detach(), params[4].detach()], 0)?;
            x.matmul(&w1.t()?)
        })();
        let hidden = match hidden {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        let mut ts: Vec<&Tensor> = vec![y, &hidden];
        ts.extend(params);
        let value = crate::fast::cpu_f64(&ts, |s| {
            let mu = fast::Net::new(s[3], s[4], s[5], h, dy);
            let lv = fast::Net::new(s[7], s[8], s[9], h, dy);
            fast::club_value(s[1], s[0], n, dy, &mu, &lv, perm)
        })?;
        let (x, y) = (x.clone(), y.clone());
        let perm = perm.map(|p| p.to_vec());
        let dims = (dx, h, dy);
        let attached = (|| {
            let flat: Vec<Tensor> = params
                .iter()
                .map(|t| t.flatten_all())
                .collect::<candle_core::Result<_>>()?;
            let packed = Tensor::cat(&flat, 0)?;
            crate::fast::attach(value, &packed, move |packed: &Tensor| {
                let (mu, logvar) = fast::unpack(packed, dims)?;
                match &perm {
                    None => club_formula(&mu, &logvar, &x, &y),
                    Some(p) => {
                        let p = Tensor::from_slice(p, p.len(), y.device())?;
                        club_sample_formula(&mu, &logvar, &x, &y, &p)
                    }
                }
            })
        })();
        Some(attached.map_err(InfoError::from))
    }

    /// UDI's vCLUB (eq 8), the complementary loss `L^m_com` (eq 11), computed literally from the
    /// pairwise matrix [`Club::log_prob_matrix`]. Equals [`Club::club`] (module docs). Needs N ≥ 2.
    pub fn vclub(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let n = self.check_pair(x, y, 2, "vclub")?;
        let l = self.log_prob_matrix_unchecked(x, y)?;
        let eye = Tensor::eye(n, l.dtype(), l.device())?;
        let diag = (&l * eye)?.sum(1)?; // log q(y_i|x_i)
        Ok((diag.mean(0)? - l.mean_all()?)?)
    }

    /// `L_ij = log q(y_j | x_i)`, `[N, N]`, with the Gaussian constant. Built from matmuls on
    /// centred y (no N×N×D tensor). Needs N ≥ 2.
    pub fn log_prob_matrix(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.check_pair(x, y, 2, "log_prob_matrix")?;
        self.log_prob_matrix_unchecked(x, y)
    }

    /// k = `q_steps` optimizer steps of [`Club::learning_loss`] on the **detached** `x`, `y`
    /// (the "k q-steps" half of the pattern in the module docs). Returns the loss evaluated before
    /// the last step. Only q's parameters move; nothing outside this `Club` is touched. A
    /// non-finite loss is an error and leaves q unchanged for that step.
    pub fn q_update(&mut self, x: &Tensor, y: &Tensor) -> Result<f64> {
        self.check_pair(x, y, 1, "q_update")?;
        let (x, y) = (x.detach(), y.detach());
        let mut last = f64::NAN;
        for step in 0..self.cfg.q_steps {
            let loss = self.learning_loss_unchecked(&x, &y)?;
            let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !v.is_finite() {
                return Err(InfoError::Input(format!(
                    "Club::q_update: the learning loss is {v} at q-step {step}"
                )));
            }
            let grads = loss.backward()?;
            self.opt.step(&grads)?;
            last = v;
        }
        Ok(last)
    }

    fn mu_logvar_unchecked(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mu = self.mu.forward(x)?;
        let logvar = self.logvar.forward(x)?.tanh()?;
        Ok((mu, logvar))
    }

    fn log_prob_unchecked(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (mu, logvar) = self.mu_logvar_unchecked(x)?;
        let w = inv_two_var(&logvar)?;
        let quad = ((&mu - y)?.sqr()? * w)?;
        let per_dim = (quad + (logvar * 0.5)?)?;
        let d = self.cfg.y_dim as f64;
        Ok(per_dim.sum(1)?.affine(-1.0, -d * HALF_LN_2PI)?)
    }

    fn learning_loss_unchecked(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(self.log_prob_unchecked(x, y)?.mean(0)?.neg()?)
    }

    fn log_prob_matrix_unchecked(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (mu, logvar) = self.mu_logvar_unchecked(x)?;
        // [N, D], row i: 1/(2σ²(x_i))
        let w = inv_two_var(&logvar)?;
        // Centre on ȳ to limit cancellation: y_j − μ_i = c_j − m_i.
        let y_mean = y.mean_keepdim(0)?;
        let c = y.broadcast_sub(&y_mean)?;
        let m = mu.broadcast_sub(&y_mean)?;
        // Σ_d w_id (c_jd − m_id)² = Σ_d w_id c_jd² − 2 Σ_d w_id m_id c_jd + Σ_d w_id m_id²
        let t1 = w.matmul(&c.sqr()?.t()?)?;
        let t2 = ((&m * &w)?.matmul(&c.t()?)? * 2.0)?;
        let t3 = (m.sqr()? * &w)?.sum_keepdim(1)?; // [N, 1]
        let quad = (t1 - t2)?.broadcast_add(&t3)?;
        let norm = (logvar.sum_keepdim(1)? * 0.5)?; // [N, 1]
        let d = self.cfg.y_dim as f64;
        Ok(quad.broadcast_add(&norm)?.affine(-1.0, -d * HALF_LN_2PI)?)
    }

    fn check_x(&self, x: &Tensor, what: &str) -> Result<usize> {
        if x.rank() != 2 || x.dims()[1] != self.cfg.x_dim {
            return Err(InfoError::Input(format!(
                "Club::{what}: x must have shape [N, {}] (x_dim), got {:?}",
                self.cfg.x_dim,
                x.dims()
            )));
        }
        if x.dtype() != self.dtype {
            return Err(InfoError::Input(format!(
                "Club::{what}: x has dtype {:?}, q was built with {:?}",
                x.dtype(),
                self.dtype
            )));
        }
        let n = x.dims()[0];
        if n == 0 {
            return Err(InfoError::Input(format!(
                "Club::{what}: empty batch, x has shape {:?}",
                x.dims()
            )));
        }
        check_finite(x, &format!("Club::{what}: x"))?;
        Ok(n)
    }

    /// Validates a pair of batches; returns N.
    fn check_pair(&self, x: &Tensor, y: &Tensor, min_n: usize, what: &str) -> Result<usize> {
        if x.rank() != 2 || y.rank() != 2 {
            return Err(InfoError::Input(format!(
                "Club::{what}: x and y must be [N, x_dim] and [N, y_dim], got x {:?} and y {:?}",
                x.dims(),
                y.dims()
            )));
        }
        if x.dims()[0] != y.dims()[0] {
            return Err(InfoError::Input(format!(
                "Club::{what}: x and y must have the same number of samples, got x {:?} and y {:?}",
                x.dims(),
                y.dims()
            )));
        }
        if y.dims()[1] != self.cfg.y_dim {
            return Err(InfoError::Input(format!(
                "Club::{what}: y must have shape [N, {}] (y_dim), got {:?} (x {:?})",
                self.cfg.y_dim,
                y.dims(),
                x.dims()
            )));
        }
        if y.dtype() != self.dtype {
            return Err(InfoError::Input(format!(
                "Club::{what}: y has dtype {:?}, q was built with {:?}",
                y.dtype(),
                self.dtype
            )));
        }
        let n = self.check_x(x, what)?;
        if n < min_n {
            return Err(InfoError::Input(format!(
                "Club::{what}: needs at least {min_n} samples, got x {:?} and y {:?}",
                x.dims(),
                y.dims()
            )));
        }
        check_finite(y, &format!("Club::{what}: y"))?;
        Ok(n)
    }
}

/// `(μ(x), logvar(x))` of the two networks.
fn mu_logvar(mu: &Mlp, logvar: &Mlp, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    Ok((mu.forward(x)?, logvar.forward(x)?.tanh()?))
}

/// The CLUB estimate as a differentiable tensor formula (module docs).
fn club_formula(mu: &Mlp, logvar: &Mlp, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let (mu, logvar) = mu_logvar(mu, logvar, x)?;
    let w = inv_two_var(&logvar)?;
    let positive = (&mu - y)?.sqr()?;
    let y_mean = y.mean_keepdim(0)?;
    let y_var = y.broadcast_sub(&y_mean)?.sqr()?.mean_keepdim(0)?;
    // (1/N) Σ_j (y_jd − μ_id)² = var_d(y) + (ȳ_d − μ_id)²
    let negative = mu.broadcast_sub(&y_mean)?.sqr()?.broadcast_add(&y_var)?;
    ((negative - positive)? * w)?.sum(1)?.mean(0)
}

/// CLUBSample for the permutation `perm` (`[N]`, u32) as a differentiable tensor formula.
fn club_sample_formula(
    mu: &Mlp,
    logvar: &Mlp,
    x: &Tensor,
    y: &Tensor,
    perm: &Tensor,
) -> candle_core::Result<Tensor> {
    let y_perm = y.index_select(perm, 0)?;
    let (mu, logvar) = mu_logvar(mu, logvar, x)?;
    let w = inv_two_var(&logvar)?;
    let positive = (&mu - y)?.sqr()?;
    let negative = (&mu - &y_perm)?.sqr()?;
    ((negative - positive)? * w)?.sum(1)?.mean(0)
}

/// The fused f64 kernel of CLUB / CLUBSample: per row, q's two hidden layers (7 units each by
/// default), μ and logvar for every output dimension, and the row's term, without `[N, D]`
/// intermediates; rows split over threads.
mod fast {
    use super::Mlp;
    use crate::fast::{par_ranges, simd_fn, sum_lanes, vm};
    use candle_core::Tensor;
    use modbal_tensors::Linear;

    /// One network `Linear(dx → h) → ReLU → Linear(h → dy)` after its first matrix product
    /// (`W1 x`, computed for all rows at once), its second weight transposed (`[h, dy]`) so
    /// that the output dimensions are the contiguous inner loop.
    pub(super) struct Net<'a> {
        b1: &'a [f64],
        w2t: Vec<f64>,
        b2: &'a [f64],
    }

    impl<'a> Net<'a> {
        pub(super) fn new(
            b1: &'a [f64],
            w2: &'a [f64],
            b2: &'a [f64],
            h: usize,
            dy: usize,
        ) -> Self {
            let mut w2t = vec![0.0; h * dy];
            for d in 0..dy {
                for k in 0..h {
                    w2t[k * dy + d] = w2[d * h + k];
                }
            }
            Self { b1, w2t, b2 }
        }

        /// `out = W2 relu(w1x + b1) + b2` for one row, `w1x` its first-layer product.
        #[inline(always)]
        fn forward(&self, w1x: &[f64], hidden: &mut [f64], out: &mut [f64]) {
            for ((hk, &a), &b) in hidden.iter_mut().zip(w1x).zip(self.b1) {
                *hk = (a + b).max(0.0);
            }
            let dy = out.len();
            // Eight outputs at a time, their sums kept in registers across the hidden units.
            let mut d0 = 0;
            while d0 + 8 <= dy {
                let mut acc = [0.0f64; 8];
                for (k, &hk) in hidden.iter().enumerate() {
                    let w = &self.w2t[k * dy + d0..k * dy + d0 + 8];
                    for l in 0..8 {
                        acc[l] += hk * w[l];
                    }
                }
                for l in 0..8 {
                    out[d0 + l] = acc[l] + self.b2[d0 + l];
                }
                d0 += 8;
            }
            for d in d0..dy {
                let mut acc = 0.0;
                for (k, &hk) in hidden.iter().enumerate() {
                    acc += hk * self.w2t[k * dy + d];
                }
                out[d] = acc + self.b2[d];
            }
        }
    }

    /// Scratch buffers of one thread.
    struct Scratch {
        hidden: Vec<f64>,
        mu: Vec<f64>,
        a: Vec<f64>,
        e: Vec<f64>,
    }

    simd_fn! {
        /// The row's term `Σ_d w_d [neg_d − (μ_d − y_d)²]` with `w = ½ e^{−tanh(a)}` and `neg_d`
        /// `= var_d + (ȳ_d − μ_d)²` (CLUB) or `(μ_d − y'_d)²` (CLUBSample, `y'` the permuted
        /// row; `ybar` then holds y', `var` is empty).
        fn row_term(w1x: &[f64], y: &[f64], ybar: &[f64], var: &[f64], mu_net: &Net<'_>, lv_net: &Net<'_>, sc: &mut Scratch) -> f64 {
            let h = sc.hidden.len();
            mu_net.forward(&w1x[..h], &mut sc.hidden, &mut sc.mu);
            lv_net.forward(&w1x[h..], &mut sc.hidden, &mut sc.a);
            // logvar = tanh(a) = sign(a)·(1 − e)/(1 + e) with e = exp(−2|a|): accurate to a few
            // units of 1e-16 in absolute terms, which is what 1/(2σ²) = ½ e^{−logvar} needs.
            for (e, &a) in sc.e.iter_mut().zip(&sc.a) {
                *e = -2.0 * a.abs();
            }
            vm::exp_in_place(&mut sc.e);
            for (e, &a) in sc.e.iter_mut().zip(&sc.a) {
                let t = (1.0 - *e) / (1.0 + *e);
                *e = -t.copysign(a);
            }
            vm::exp_in_place(&mut sc.e);
            if var.is_empty() {
                for (((e, &m), &yy), &yp) in sc.e.iter_mut().zip(&sc.mu).zip(y).zip(ybar) {
                    let neg = (m - yp) * (m - yp);
                    let pos = (m - yy) * (m - yy);
                    *e = (neg - pos) * (*e * 0.5);
                }
            } else {
                for ((((e, &m), &yy), &yb), &v) in sc.e.iter_mut().zip(&sc.mu).zip(y).zip(ybar).zip(var) {
                    let neg = (m - yb) * (m - yb) + v;
                    let pos = (m - yy) * (m - yy);
                    *e = (neg - pos) * (*e * 0.5);
                }
            }
            sum_lanes(&sc.e)
        }
    }

    /// CLUB (`perm = None`) or CLUBSample of `y: [n, dy]` row-major, with `w1x: [n, 2h]` the
    /// first-layer products of x by the two networks.
    pub(super) fn club_value(
        w1x: &[f64],
        y: &[f64],
        n: usize,
        dy: usize,
        mu: &Net<'_>,
        lv: &Net<'_>,
        perm: Option<&[u32]>,
    ) -> f64 {
        let (ybar, var) = if perm.is_some() {
            (Vec::new(), Vec::new())
        } else {
            // Population mean and variance of each column of y, as the tensor path.
            let mut mean = vec![0.0; dy];
            for row in y.chunks_exact(dy) {
                for (m, &v) in mean.iter_mut().zip(row) {
                    *m += v;
                }
            }
            mean.iter_mut().for_each(|m| *m /= n as f64);
            let mut var = vec![0.0; dy];
            for row in y.chunks_exact(dy) {
                for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
                    *s += (v - m) * (v - m);
                }
            }
            var.iter_mut().for_each(|s| *s /= n as f64);
            (mean, var)
        };
        let h = mu.b1.len();
        let cost = 6 * dy;
        let rows: Vec<f64> = par_ranges(n, cost, |rows| {
            let mut sc = Scratch {
                hidden: vec![0.0; h],
                mu: vec![0.0; dy],
                a: vec![0.0; dy],
                e: vec![0.0; dy],
            };
            rows.map(|i| {
                let (xr, yr) = (&w1x[i * 2 * h..(i + 1) * 2 * h], &y[i * dy..(i + 1) * dy]);
                let yb = match perm {
                    Some(p) => &y[p[i] as usize * dy..(p[i] as usize + 1) * dy],
                    None => &ybar[..],
                };
                row_term(xr, yr, yb, &var, mu, lv, &mut sc)
            })
            .collect::<Vec<f64>>()
        })
        .into_iter()
        .flatten()
        .collect();
        rows.iter().sum::<f64>() / n as f64
    }

    /// The two networks from the packed parameters (see `Club::param_tensors`), as views of
    /// `packed` (so that gradients flow back to it).
    pub(super) fn unpack(
        packed: &Tensor,
        (dx, h, dy): (usize, usize, usize),
    ) -> candle_core::Result<(Mlp, Mlp)> {
        let mut off = 0;
        let mut take = |len: usize, shape: &[usize]| {
            let t = packed.narrow(0, off, len)?.reshape(shape);
            off += len;
            t
        };
        let mut net = || -> candle_core::Result<Mlp> {
            Ok(Mlp {
                fc1: Linear {
                    weight: take(h * dx, &[h, dx])?,
                    bias: Some(take(h, &[h])?),
                },
                fc2: Linear {
                    weight: take(dy * h, &[dy, h])?,
                    bias: Some(take(dy, &[dy])?),
                },
            })
        };
        let mu = net()?;
        let logvar = net()?;
        Ok((mu, logvar))
    }
}

/// `1/(2σ²) = ½·exp(−logvar)`.
fn inv_two_var(logvar: &Tensor) -> candle_core::Result<Tensor> {
    logvar.neg()?.exp()? * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn vals(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// The fused path (untracked f64 x, y) against the tensor formula (the same x, y as tracked
    /// variables): same estimate, same gradients for q's parameters.
    #[test]
    fn fused_path_matches_the_tensor_formula() {
        for &(n, dx, dy, hidden) in &[
            (2, 1, 1, 2),
            (9, 3, 5, 15),
            (64, 33, 17, 15),
            (300, 20, 40, 8),
        ] {
            let mut rng = SeededRng::new(n as u64);
            let mut cfg = ClubConfig::new(dx, dy);
            cfg.hidden = hidden;
            let club = Club::with_dtype(cfg, &mut rng, &Device::Cpu, DType::F64).unwrap();
            let x = rng
                .randn((n, dx), 0.0, 1.5, DType::F64, &Device::Cpu)
                .unwrap();
            let y = rng
                .randn((n, dy), 0.3, 1.0, DType::F64, &Device::Cpu)
                .unwrap();
            let (xv, yv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&y).unwrap());
            let estimates = [
                (
                    club.club(&x, &y).unwrap(),
                    club.club(xv.as_tensor(), yv.as_tensor()).unwrap(),
                ),
                (
                    club.club_sample(&x, &y, &mut SeededRng::new(4)).unwrap(),
                    club.club_sample(xv.as_tensor(), yv.as_tensor(), &mut SeededRng::new(4))
                        .unwrap(),
                ),
            ];
            for (fast, slow) in &estimates {
                let (a, b) = (
                    fast.to_scalar::<f64>().unwrap(),
                    slow.to_scalar::<f64>().unwrap(),
                );
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "n={n}: {a} vs {b}"
                );
                let (gf, gs) = (fast.backward().unwrap(), slow.backward().unwrap());
                for (name, v) in club.params().trainable() {
                    let a = vals(gf.get(v.as_tensor()).unwrap());
                    let b = vals(gs.get(v.as_tensor()).unwrap());
                    for (p, q) in a.iter().zip(&b) {
                        assert!(
                            (p - q).abs() <= 1e-10 * q.abs().max(1.0),
                            "{name}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }
}
