//! Optimizers with checkpointable state, PyTorch semantics.
//!
//! candle-nn's `SGD` has neither momentum nor weight decay and its `AdamW` keeps its moments
//! private; both are re-implemented here over a `GradStore`.
//!
//! **SGD** (`torch.optim.SGD`): with g the gradient,
//! `g ← g + wd·p`; `b ← g` on the first step, else `b ← μ·b + (1−τ)·g`;
//! `g ← g + μ·b` (Nesterov) or `g ← b`; `p ← p − lr·g`.
//!
//! **AdamW** (`torch.optim.AdamW`, Loshchilov & Hutter 2019): `t ← t+1`; `p ← p·(1 − lr·wd)`;
//! `m ← β1·m + (1−β1)·g`; `v ← β2·v + (1−β2)·g²`;
//! `p ← p − (lr/(1−β1ᵗ)) · m / (√v/√(1−β2ᵗ) + ε)`.
//!
//! A parameter that has no gradient in the `GradStore` is skipped entirely (its state and step
//! count do not advance), as PyTorch skips parameters whose `.grad` is `None`.

use crate::cpu::elementwise::all_finite;
use crate::cpu::sgd::{sgd_momentum, sgd_step, SgdDirection};
use candle_core::{
    backprop::GradStore, CpuStorage, DType, Device, InplaceOp3, Layout, Result, Tensor, Var,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// SGD hyper-parameters. Defaults: the OGM-GE family (lr 1e-3, momentum 0.9, weight decay 1e-4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-4,
        }
    }
}

/// AdamW hyper-parameters. Defaults: BalanceMM's (lr 1e-3, weight decay 0.01), PyTorch betas/eps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Which optimizer, with its hyper-parameters (`kind = "sgd"` or `kind = "adamw"` in TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    Sgd(SgdConfig),
    Adamw(AdamWConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd(SgdConfig::default())
    }
}

impl OptimizerConfig {
    /// Checks the hyper-parameters (bad values are configuration errors, not runtime failures).
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            OptimizerConfig::Sgd(c) => {
                if !(c.lr > 0.0 && c.lr.is_finite()) {
                    return Err(format!("sgd: lr must be positive, got {}", c.lr));
                }
                if !(0.0..1.0).contains(&c.momentum) {
                    return Err(format!(
                        "sgd: momentum must be in [0, 1), got {}",
                        c.momentum
                    ));
                }
                // NaN fails every comparison: `!(x >= 0)` rejects it with the negatives.
                if !(c.weight_decay >= 0.0 && c.weight_decay.is_finite()) {
                    return Err(format!(
                        "sgd: weight_decay must be finite and >= 0, got {}",
                        c.weight_decay
                    ));
                }
                if !(0.0..=1.0).contains(&c.dampening) {
                    return Err(format!(
                        "sgd: dampening must be in [0, 1], got {}",
                        c.dampening
                    ));
                }
                if c.nesterov && (c.momentum == 0.0 || c.dampening != 0.0) {
                    return Err("sgd: nesterov needs momentum > 0 and dampening 0".into());
                }
            }
            OptimizerConfig::Adamw(c) => {
                if !(c.lr > 0.0 && c.lr.is_finite()) {
                    return Err(format!("adamw: lr must be positive, got {}", c.lr));
                }
                if !(0.0..1.0).contains(&c.beta1) || !(0.0..1.0).contains(&c.beta2) {
                    return Err(format!(
                        "adamw: betas must be in [0, 1), got ({}, {})",
                        c.beta1, c.beta2
                    ));
                }
                let eps_ok = c.eps > 0.0 && c.eps.is_finite();
                let wd_ok = c.weight_decay >= 0.0 && c.weight_decay.is_finite();
                if !(eps_ok && wd_ok) {
                    return Err(format!(
                        "adamw: eps must be finite and > 0 and weight_decay finite and >= 0, got \
                         eps {} and weight_decay {}",
                        c.eps, c.weight_decay
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::Adamw(c) => c.lr,
        }
    }

    /// Build the optimizer over `vars`.
    pub fn build(&self, vars: Vec<(String, Var)>) -> Result<Box<dyn Optimizer>> {
        self.validate().map_err(candle_core::Error::Msg)?;
        Ok(match self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(vars, c.clone())),
            OptimizerConfig::Adamw(c) => Box::new(AdamW::new(vars, c.clone())),
        })
    }
}

/// Optimizer state as tensors (moments, momentum buffers) plus per-parameter step counts.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    pub kind: String,
    pub steps: BTreeMap<String, u64>,
    pub tensors: BTreeMap<String, Tensor>,
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
    kind: String,
    steps: BTreeMap<String, u64>,
}

impl OptimizerState {
    /// Writes `<stem>.safetensors` (tensors) and `<stem>.json` (kind, step counts). A state
    /// without tensors writes no `.safetensors` file and removes one left by an earlier save
    /// under the same stem, so that [`OptimizerState::load`] never mixes two states.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<()> {
        let map: HashMap<String, Tensor> = self.tensors.clone().into_iter().collect();
        let sp = dir.join(format!("{stem}.safetensors"));
        if !map.is_empty() {
            candle_core::safetensors::save(&map, &sp)?;
        } else if sp.exists() {
            std::fs::remove_file(&sp)
                .map_err(|e| candle_core::Error::Msg(format!("removing {}: {e}", sp.display())))?;
        }
        let meta = StateMeta {
            kind: self.kind.clone(),
            steps: self.steps.clone(),
        };
        let js = serde_json::to_string_pretty(&meta).map_err(candle_core::Error::wrap)?;
        std::fs::write(dir.join(format!("{stem}.json")), js).map_err(candle_core::Error::wrap)
    }

    pub fn load(dir: &Path, stem: &str, device: &Device) -> Result<Self> {
        let jp = dir.join(format!("{stem}.json"));
        let js = std::fs::read_to_string(&jp)
            .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", jp.display())))?;
        let meta: StateMeta = serde_json::from_str(&js)
            .map_err(|e| candle_core::Error::Msg(format!("parsing {}: {e}", jp.display())))?;
        let sp = dir.join(format!("{stem}.safetensors"));
        let tensors = if sp.exists() {
            candle_core::safetensors::load(&sp, device)?
                .into_iter()
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            kind: meta.kind,
            steps: meta.steps,
            tensors,
        })
    }
}

/// A first-order optimizer over a fixed list of named variables.
pub trait Optimizer: Send {
    /// One update from the gradients in `grads` (parameters without a gradient are skipped).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    fn vars(&self) -> &[(String, Var)];
    fn state(&self) -> OptimizerState;
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// `Some(all finite)` for a contiguous CPU f32/f64 tensor (one pass, no copy), else `None`.
fn cpu_all_finite(g: &Tensor) -> Option<bool> {
    let (st, l) = g.storage_and_layout();
    let (a, b) = l.contiguous_offsets()?;
    match &*st {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) => Some(all_finite(&v[a..b])),
        candle_core::Storage::Cpu(CpuStorage::F64(v)) => Some(all_finite(&v[a..b])),
        _ => None,
    }
}

fn check_grad(name: &str, g: &Tensor) -> Result<()> {
    if let Some(ok) = cpu_all_finite(g) {
        if !ok {
            candle_core::bail!("non-finite gradient for parameter {name:?}: refusing the update");
        }
        return Ok(());
    }
    let s = g
        .to_dtype(DType::F64)?
        .abs()?
        .sum_all()?
        .to_scalar::<f64>()?;
    if !s.is_finite() {
        candle_core::bail!("non-finite gradient for parameter {name:?}: refusing the update");
    }
    Ok(())
}

/// Stochastic gradient descent with momentum, dampening, Nesterov and (coupled) weight decay.
pub struct Sgd {
    vars: Vec<(String, Var)>,
    cfg: SgdConfig,
    buf: BTreeMap<String, Tensor>,
    steps: BTreeMap<String, u64>,
}

impl Sgd {
    pub fn new(vars: Vec<(String, Var)>, cfg: SgdConfig) -> Self {
        Self {
            vars,
            cfg,
            buf: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = &self.cfg;
        // Validate every gradient first: no parameter moves if any gradient is bad.
        for (name, v) in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                check_grad(name, g)?;
            }
        }
        for (name, v) in &self.vars {
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            let g = &g.detach();
            if fused_sgd_ok(v.as_tensor(), g) {
                let g = &g.contiguous()?;
                let p = v.as_tensor();
                let buf = if c.momentum != 0.0 {
                    let (b, first) = match self.buf.get(name) {
                        Some(b) if b.is_contiguous() && b.dtype() == p.dtype() => {
                            (b.clone(), false)
                        }
                        _ => (g.copy()?, true),
                    };
                    b.inplace_op3(
                        g,
                        p,
                        &SgdBufUpdate {
                            momentum: c.momentum,
                            dampening: c.dampening,
                            weight_decay: c.weight_decay,
                            first,
                        },
                    )?;
                    self.buf.insert(name.clone(), b.clone());
                    Some(b)
                } else {
                    None
                };
                let b = buf.as_ref().unwrap_or(g);
                p.inplace_op3(
                    g,
                    b,
                    &SgdParamUpdate {
                        lr: c.lr,
                        momentum: c.momentum,
                        weight_decay: c.weight_decay,
                        nesterov: c.nesterov,
                        has_buf: buf.is_some(),
                    },
                )?;
                *self.steps.entry(name.clone()).or_insert(0) += 1;
                continue;
            }
            // Detached: `p` is a Var, and ops on it are tracked; a momentum buffer built from a tracked
            // tensor would keep a graph reference to every earlier buffer (unbounded memory).
            let p = &v.as_tensor().detach();
            let mut d = if c.weight_decay != 0.0 {
                (g + (p * c.weight_decay)?)?
            } else {
                g.clone()
            };
            if c.momentum != 0.0 {
                let b = match self.buf.get(name) {
                    None => d.copy()?,
                    Some(b) => ((b * c.momentum)? + (&d * (1.0 - c.dampening))?)?,
                };
                d = if c.nesterov {
                    (d + (&b * c.momentum)?)?
                } else {
                    b.clone()
                };
                self.buf.insert(name.clone(), b);
            }
            v.set(&(p - (d * c.lr)?)?)?;
            *self.steps.entry(name.clone()).or_insert(0) += 1;
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }
    fn state(&self) -> OptimizerState {
        OptimizerState {
            kind: "sgd".into(),
            steps: self.steps.clone(),
            tensors: self
                .buf
                .iter()
                // Deep copies: the buffers are updated in place by later steps.
                .map(|(n, t)| {
                    let t = t.copy().unwrap_or_else(|_| t.clone());
                    (format!("{n}.momentum_buffer"), t)
                })
                .collect(),
        }
    }
    fn load_state(&mut self, st: &OptimizerState) -> Result<()> {
        if st.kind != "sgd" {
            candle_core::bail!("optimizer state is for {:?}, not sgd", st.kind);
        }
        self.buf.clear();
        for (name, v) in &self.vars {
            if let Some(t) = st.tensors.get(&format!("{name}.momentum_buffer")) {
                if t.dims() != v.dims() {
                    candle_core::bail!(
                        "optimizer state for {name:?} has shape {:?}, parameter {:?}",
                        t.dims(),
                        v.dims()
                    );
                }
                // A copy: the buffer is updated in place, the caller's state must not change.
                self.buf.insert(
                    name.clone(),
                    t.to_dtype(v.dtype())?.to_device(v.device())?.copy()?,
                );
            }
        }
        self.steps = st.steps.clone();
        Ok(())
    }
}

/// Whether the fused in-place SGD update applies: a contiguous CPU f32/f64 parameter and a
/// gradient of the same dtype and shape.
fn fused_sgd_ok(p: &Tensor, g: &Tensor) -> bool {
    p.device().is_cpu()
        && g.device().is_cpu()
        && p.is_contiguous()
        && p.dtype() == g.dtype()
        && p.dims() == g.dims()
        && matches!(p.dtype(), DType::F32 | DType::F64)
}

/// Momentum buffer update in place, sources `(g, p)`: `d = g + wd·p`;
/// `b ← d` on the first step, else `b ← μ·b + (1−τ)·d` (the same element-wise operations, in
/// the same order and precision, as the tensor formulation).
struct SgdBufUpdate {
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    first: bool,
}

/// Parameter update in place, sources `(g, b)`: `d = g + wd·p`;
/// `p ← p − lr·(d + μ·b)` (Nesterov), `p − lr·b` (momentum) or `p − lr·d`.
struct SgdParamUpdate {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    has_buf: bool,
}

fn slices_of<'a, T: candle_core::WithDType>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("sgd: non-contiguous operand"),
    }
}

macro_rules! sgd_inplace {
    ($self:ident, $s1:ident, $l1:ident, $s2:ident, $l2:ident, $s3:ident, $l3:ident, |$d:ident, $a:ident, $b:ident, $t:ident| $body:block) => {{
        let (o1, e1) = match $l1.contiguous_offsets() {
            Some(r) => r,
            None => candle_core::bail!("{}: non-contiguous destination", $self.name()),
        };
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(d), CpuStorage::F32(a), CpuStorage::F32(b)) => {
                type $t = f32;
                let ($d, $a, $b) = (&mut d[o1..e1], slices_of(a, $l2)?, slices_of(b, $l3)?);
                $body
            }
            (CpuStorage::F64(d), CpuStorage::F64(a), CpuStorage::F64(b)) => {
                type $t = f64;
                let ($d, $a, $b) = (&mut d[o1..e1], slices_of(a, $l2)?, slices_of(b, $l3)?);
                $body
            }
            _ => candle_core::bail!("{}: f32 or f64 operands of one dtype", $self.name()),
        }
        Ok(())
    }};
}

impl InplaceOp3 for SgdBufUpdate {
    fn name(&self) -> &'static str {
        "modbal-sgd-momentum"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        sgd_inplace!(self, s1, l1, s2, l2, s3, l3, |buf, g, p, T| {
            let wd = (self.weight_decay != 0.0).then_some(self.weight_decay as T);
            let (m, damp) = (self.momentum as T, (1.0 - self.dampening) as T);
            sgd_momentum(buf, g, p, m, damp, wd, self.first);
        })
    }
}

impl InplaceOp3 for SgdParamUpdate {
    fn name(&self) -> &'static str {
        "modbal-sgd-step"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        sgd_inplace!(self, s1, l1, s2, l2, s3, l3, |p, g, buf, T| {
            let wd = (self.weight_decay != 0.0).then_some(self.weight_decay as T);
            let (m, lr) = (self.momentum as T, self.lr as T);
            let dir = if !self.has_buf {
                SgdDirection::Gradient
            } else if self.nesterov {
                SgdDirection::Nesterov
            } else {
                SgdDirection::Buffer
            };
            sgd_step(p, g, buf, lr, m, wd, dir);
        })
    }
}

/// AdamW (decoupled weight decay), PyTorch semantics, `amsgrad = false`.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    cfg: AdamWConfig,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    steps: BTreeMap<String, u64>,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Self {
        Self {
            vars,
            cfg,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = &self.cfg;
        for (name, v) in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                check_grad(name, g)?;
            }
        }
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = &g.detach();
            let t = self.steps.get(name).copied().unwrap_or(0) + 1;
            let p = &var.as_tensor().detach();
            let p = if c.weight_decay != 0.0 {
                (p * (1.0 - c.lr * c.weight_decay))?
            } else {
                p.clone()
            };
            let m = match self.m.get(name) {
                Some(m) => ((m * c.beta1)? + (g * (1.0 - c.beta1))?)?,
                None => (g * (1.0 - c.beta1))?,
            };
            let v2 = match self.v.get(name) {
                Some(v) => ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
                None => (g.sqr()? * (1.0 - c.beta2))?,
            };
            let bc1 = 1.0 - c.beta1.powi(t as i32);
            let bc2 = 1.0 - c.beta2.powi(t as i32);
            let denom = ((v2.sqrt()? / bc2.sqrt())? + c.eps)?;
            let upd = ((&m / denom)? * (c.lr / bc1))?;
            var.set(&(p - upd)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v2);
            self.steps.insert(name.clone(), t);
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }
    fn state(&self) -> OptimizerState {
        let mut tensors = BTreeMap::new();
        for (n, t) in &self.m {
            tensors.insert(format!("{n}.exp_avg"), t.clone());
        }
        for (n, t) in &self.v {
            tensors.insert(format!("{n}.exp_avg_sq"), t.clone());
        }
        OptimizerState {
            kind: "adamw".into(),
            steps: self.steps.clone(),
            tensors,
        }
    }
    fn load_state(&mut self, st: &OptimizerState) -> Result<()> {
        if st.kind != "adamw" {
            candle_core::bail!("optimizer state is for {:?}, not adamw", st.kind);
        }
        self.m.clear();
        self.v.clear();
        for (name, var) in &self.vars {
            for (suffix, map) in [("exp_avg", &mut self.m), ("exp_avg_sq", &mut self.v)] {
                if let Some(t) = st.tensors.get(&format!("{name}.{suffix}")) {
                    if t.dims() != var.dims() {
                        candle_core::bail!(
                            "optimizer state for {name:?} has shape {:?}, parameter {:?}",
                            t.dims(),
                            var.dims()
                        );
                    }
                    map.insert(
                        name.clone(),
                        t.to_dtype(var.dtype())?.to_device(var.device())?,
                    );
                }
            }
        }
        self.steps = st.steps.clone();
        Ok(())
    }
}

#[cfg(test)]
mod graph_tests {
    use super::*;

    /// Regression: optimizer state must never carry an autograd graph. A momentum buffer built
    /// from the (tracked) parameter kept a reference to every earlier buffer, so memory grew
    /// with every step (a 12-epoch synth-av run was OOM-killed at 24 GB).
    #[test]
    fn optimizer_state_holds_no_graph() {
        let dev = Device::Cpu;
        for cfg in [
            OptimizerConfig::Sgd(SgdConfig::default()),
            OptimizerConfig::Adamw(AdamWConfig::default()),
        ] {
            let w = Var::from_tensor(&Tensor::ones((3, 2), DType::F32, &dev).unwrap()).unwrap();
            let mut opt = cfg.build(vec![("w".into(), w.clone())]).unwrap();
            for _ in 0..3 {
                let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            let st = opt.state();
            assert!(!st.tensors.is_empty());
            for (name, t) in &st.tensors {
                assert!(!t.track_op(), "{name} carries an autograd graph");
            }
        }
    }
}
