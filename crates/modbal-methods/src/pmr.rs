//! `pmr`: Prototypical Modal Rebalance (Fan, Xu, Wei, Zhang & Chen, "PMR: Prototypical Modal
//! Rebalance for Multimodal Learning", CVPR 2023). See `docs/methods/pmr.md`.
//!
//! # Maths
//! With encoder features `f_m: [B, D_m]` and class prototypes `c^m_k ∈ R^{D_m}` (one per class
//! k and modality m):
//!
//! ```text
//! c^m_k  = mean of f_m over the class-k samples of the first ⌈r·N_batches⌉ training batches
//!          of the epoch (r = sample_ratio = 0.1); optional EMA: c ← μ·c_old + (1 − μ)·c_new
//! sim_m  = −‖f_m − c^m_k‖₂                                   [B, C]  (prototype "logits")
//! PCE_m  = CE(sim_m, y)                                     prototypical cross-entropy
//! s_m    = Σ_i softmax(sim_m,i)[y_i]                        batch score
//! ρ_m    = max_k s_k / s_m                                  (M = 2: ρ = s_a/s_v of the paper)
//! L      = CE(z) + α · Σ_{m: ρ_m > 1} PCE_m  − μ_H · H(softmax(sim_strong))
//! ```
//!
//! For two modalities this is the paper/official rule: `ρ = s_a / s_v > 1` adds `α·PCE_v`,
//! `ρ < 1` adds `α·PCE_a`, `ρ = 1` adds nothing. The prototypes are constants in the graph;
//! PCE's gradient reaches only the weak modality's encoder. The entropy term (the paper's
//! regulariser on the dominant modality, missing from the official file) is off by default
//! (`entropy_mu = 0`, the official behaviour). PCE is added only inside the modulation window.
//!
//! # Schedule
//! `window` is given in epochs of the official 150-epoch schedule (`schedule_epochs = 150`;
//! default `[0, 101)`, the official `modulation_starts <= epoch <= modulation_ends` with 0 and
//! 100) and scaled to the run's `train.epochs` with [`ModulationWindow::scaled`]: a 12-epoch run
//! adds PCE in epochs 0-7 (`[0, 8)`). `schedule_epochs = 0` takes the window literally.
//!
//! # When the prototypes change
//! The hooks have no data access at epoch start, so the prototypes are accumulated from the
//! (detached) training features of the first `⌈r·N⌉` batches of each epoch ([`Method::forward`])
//! and become the current prototypes after the last of them ([`Method::after_step`]). Those
//! first batches still use the previous epoch's prototypes; in epoch 0 they have none, so PCE
//! starts after the first ⌈r·N⌉ batches. The official code instead runs a separate no-grad pass
//! over ~10% of the training loader before each epoch; here the same batches are reused
//! (features from a slightly moving model), which costs no extra forward pass.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `rho` (mean per-step `s_0/s_1`, two modalities), `s` (mean score per modality), `pce`
//! (fraction of steps in which each modality got PCE), `proto.norm`, `proto.spread` (mean
//! distance between two class prototypes), `proto.shift` (distance between the new and the
//! previous prototypes, mean over classes), `proto.samples` (samples averaged), `active`
//! (fraction of steps with prototypes inside the window), `window.start` / `window.end` (the
//! scaled window), and the loss parts `loss.ce`, `loss.pce.<m>`.

use crate::params::MethodParams;
use crate::util::{by_name, rows};
use candle_core::{Device, Tensor};
use modbal_core::stats::{BatchStats, ModalityStats};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_modulate::ModulationWindow;
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of `pmr` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "pmr"
/// alpha = 2.0
/// window = { start = 0, end = 101 }   # epochs of the official 150-epoch schedule
/// schedule_epochs = 150               # 0 = take the window literally
/// sample_ratio = 0.1
/// momentum = 0.0
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PmrConfig {
    /// α, weight of the weak modality's PCE, ≥ 0. Default 2 (official code).
    pub alpha: f64,
    /// 0-based epochs `[start, end)` with PCE, in epochs of a `schedule_epochs`-epoch schedule.
    /// Default `[0, 101)`: the official `--modulation_starts 0 --modulation_ends 100` with
    /// `starts <= epoch <= ends` (`main_Prototype_grad.py` default and the PMR command of
    /// `bash.sh`).
    pub window: ModulationWindow,
    /// Length of the schedule `window` refers to; the window is scaled to the run's length.
    /// Default 150 (the official `--epochs 150`, argparse default and every `bash.sh` command);
    /// 0 = use `window` as run epochs, unscaled.
    pub schedule_epochs: usize,
    /// Fraction of each epoch's batches whose features form the prototypes, in (0, 1].
    /// Default 0.1 (official).
    pub sample_ratio: f64,
    /// EMA momentum μ of the prototypes, in [0, 1): `c ← μ c_old + (1 − μ) c_new`. Default 0
    /// (recomputed every epoch, official default).
    pub momentum: f64,
    /// Weight μ_H of the entropy regulariser on the dominant modality's prototype prediction,
    /// ≥ 0. Default 0 (the official file has none).
    pub entropy_mu: f64,
}

impl Default for PmrConfig {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            window: ModulationWindow { start: 0, end: 101 },
            schedule_epochs: 150,
            sample_ratio: 0.1,
            momentum: 0.0,
            entropy_mu: 0.0,
        }
    }
}

impl PmrConfig {
    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method pmr: {m}")));
        for (k, v) in [("alpha", self.alpha), ("entropy_mu", self.entropy_mu)] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        if !(self.sample_ratio > 0.0 && self.sample_ratio <= 1.0) {
            return err(format!(
                "sample_ratio must be in (0, 1], got {}",
                self.sample_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if let Err(e) = self.window.validate() {
            return err(format!("window: {e}"));
        }
        Ok(())
    }

    /// The PCE window of a run of `run_epochs` epochs (see [`Self::schedule_epochs`]).
    pub fn run_window(&self, run_epochs: usize) -> ModulationWindow {
        self.window.scaled(self.schedule_epochs, run_epochs)
    }
}

/// `−‖f_i − c_k‖₂` for every sample i and class k: `[B, D]`, `[C, D]` → `[B, C]`
/// (differentiable in `f`; the squared distance is floored at 1e-12 before the root).
pub fn prototype_similarity(f: &Tensor, protos: &Tensor) -> Result<Tensor> {
    let c = protos.to_dtype(f.dtype())?.to_device(f.device())?;
    let diff = f.unsqueeze(1)?.broadcast_sub(&c.unsqueeze(0)?)?;
    let d2 = diff.sqr()?.sum(2)?;
    Ok(d2.clamp(1e-12, f64::MAX)?.sqrt()?.neg()?)
}

/// Running per-class feature sums of one epoch's prototype batches.
#[derive(Clone, Debug, Default)]
struct Accumulator {
    /// `[modality][class][dim]`.
    sums: Vec<Vec<Vec<f64>>>,
    counts: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    rho: f64,
    rho_steps: usize,
    /// The prototype classifiers' scores `s_m` over the active steps.
    scores: ModalityStats,
    pce: Vec<f64>,
}

/// `(norm, spread, shift, samples)` of the last prototype update.
type ProtoStats = (Vec<f64>, Vec<f64>, Vec<f64>, usize);

/// The PMR method; see the [module docs](self).
#[derive(Debug)]
pub struct Pmr {
    cfg: PmrConfig,
    /// Current prototypes per modality, `[C][D_m]` (f32 values), empty before the first ones.
    protos: Vec<Vec<Vec<f32>>>,
    acc: Option<Accumulator>,
    sums: EpochSums,
    /// Statistics of the last prototype update, for the log.
    last_update: Option<ProtoStats>,
}

impl Pmr {
    pub fn new(cfg: PmrConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            protos: Vec::new(),
            acc: None,
            sums: EpochSums::default(),
            last_update: None,
        })
    }

    pub fn config(&self) -> &PmrConfig {
        &self.cfg
    }

    /// The current prototypes of modality `m` as a `[C, D_m]` f32 tensor (`None` before any).
    pub fn prototypes(&self, m: usize, device: &Device) -> Result<Option<Tensor>> {
        let Some(p) = self.protos.get(m) else {
            return Ok(None);
        };
        let (c, d) = (p.len(), p.first().map(|r| r.len()).unwrap_or(0));
        let flat: Vec<f32> = p.iter().flatten().copied().collect();
        Ok(Some(Tensor::from_vec(flat, (c, d), device)?))
    }

    /// Replace the prototypes (`[C][D_m]` per modality), e.g. to test the loss in isolation.
    pub fn set_prototypes(&mut self, protos: Vec<Vec<Vec<f32>>>) {
        self.protos = protos;
    }

    /// Number of prototype batches in an epoch of `n` batches: `max(1, ⌈r·n⌉)`.
    pub fn prototype_batches(&self, n: usize) -> usize {
        ((self.cfg.sample_ratio * n as f64).ceil() as usize).max(1)
    }

    fn accumulate(&mut self, out: &MultimodalOutput, labels: &[usize], c: usize) -> Result<()> {
        let acc = self.acc.get_or_insert_with(|| Accumulator {
            sums: out
                .features
                .iter()
                .map(|f| vec![vec![0.0; f.dims()[1]]; c])
                .collect(),
            counts: vec![0; c],
        });
        for (m, f) in out.features.iter().enumerate() {
            for (row, &y) in rows(&f.detach())?.iter().zip(labels) {
                for (s, v) in acc.sums[m][y].iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
        for &y in labels {
            acc.counts[y] += 1;
        }
        Ok(())
    }

    /// Turn the accumulated sums into the current prototypes (classes without a sample keep
    /// their previous prototype).
    fn finalize(&mut self) {
        let Some(acc) = self.acc.take() else { return };
        let n_mod = acc.sums.len();
        let mu = self.cfg.momentum;
        let old = std::mem::take(&mut self.protos);
        let mut new = Vec::with_capacity(n_mod);
        let (mut norm, mut spread, mut shift) =
            (vec![0.0; n_mod], vec![0.0; n_mod], vec![0.0; n_mod]);
        for m in 0..n_mod {
            let c = acc.counts.len();
            let mut pm: Vec<Vec<f32>> = Vec::with_capacity(c);
            for k in 0..c {
                let prev = old.get(m).and_then(|p| p.get(k));
                let row: Vec<f32> = if acc.counts[k] > 0 {
                    let mean = acc.sums[m][k].iter().map(|s| s / acc.counts[k] as f64);
                    match prev {
                        Some(p) if mu > 0.0 => mean
                            .zip(p)
                            .map(|(x, o)| (mu * *o as f64 + (1.0 - mu) * x) as f32)
                            .collect(),
                        _ => mean.map(|x| x as f32).collect(),
                    }
                } else {
                    match prev {
                        Some(p) => p.clone(),
                        None => vec![f32::NAN; acc.sums[m][k].len()],
                    }
                };
                if let Some(p) = prev {
                    shift[m] += dist(&row, p) / c as f64;
                }
                norm[m] += row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() / c as f64;
                pm.push(row);
            }
            let mut pairs = 0.0;
            for i in 0..c {
                for j in i + 1..c {
                    spread[m] += dist(&pm[i], &pm[j]);
                    pairs += 1.0;
                }
            }
            if pairs > 0.0 {
                spread[m] /= pairs;
            }
            new.push(pm);
        }
        let samples = acc.counts.iter().sum();
        self.protos = new;
        self.last_update = Some((norm, spread, shift, samples));
    }

    /// Whether every class of every modality has a (finite) prototype.
    fn ready(&self, n_mod: usize) -> bool {
        self.protos.len() == n_mod
            && self
                .protos
                .iter()
                .all(|p| !p.is_empty() && p.iter().all(|r| r.iter().all(|x| x.is_finite())))
    }

    fn ensure_sums(&mut self, m: usize) {
        if self.sums.pce.len() != m {
            self.sums = EpochSums {
                scores: ModalityStats::new(m),
                pce: vec![0.0; m],
                ..Default::default()
            };
        }
    }
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

impl Method for Pmr {
    fn name(&self) -> &str {
        "pmr"
    }

    fn on_epoch_start(
        &mut self,
        _model: &dyn MultimodalModel,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        self.acc = None;
        Ok(())
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        let out = model.forward_t(&batch.inputs, true)?;
        if ctx.batch_index < self.prototype_batches(ctx.batches_per_epoch) {
            let y = crate::util::labels(&batch.labels)?;
            let c = model.num_classes();
            if let Some(&bad) = y.iter().find(|&&v| v >= c) {
                return Err(ModbalError::Data(format!(
                    "pmr: label {bad} out of range for {c} classes"
                )));
            }
            self.accumulate(&out, &y, c)?;
        }
        Ok(out)
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let names = model.modalities();
        let n = names.len();
        self.ensure_sums(n);
        self.sums.steps += 1;
        let ce = cross_entropy(&out.fused_logits, &batch.labels)?;
        let mut parts = BTreeMap::new();
        parts.insert("ce".to_string(), ce.detach());
        let mut total = ce;
        if !(self.cfg.run_window(ctx.num_epochs).contains(ctx.epoch) && self.ready(n)) {
            return Ok(LossTerms { total, parts });
        }
        self.sums.active += 1;
        let device = out.fused_logits.device();
        let mut sims = Vec::with_capacity(n);
        for (m, f) in out.features.iter().enumerate() {
            let p = self.prototypes(m, device)?.expect("ready");
            sims.push(prototype_similarity(f, &p)?);
        }
        // s_m = Σ_i softmax(sim_m,i)[y_i]: the prototype classifier's true-class score.
        let detached: Vec<Tensor> = sims.iter().map(Tensor::detach).collect();
        let batch_stats = BatchStats::from_logits(&detached, &batch.labels)?;
        let s = &batch_stats.scores;
        let best = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if n == 2 && s[1] > 0.0 {
            self.sums.rho += s[0] / s[1];
            self.sums.rho_steps += 1;
        }
        self.sums.scores.add(&batch_stats);
        for m in 0..n {
            let rho = if s[m] > 0.0 {
                best / s[m]
            } else {
                f64::INFINITY
            };
            if rho > 1.0 && self.cfg.alpha > 0.0 {
                let pce = cross_entropy(&sims[m], &batch.labels)?;
                parts.insert(format!("pce.{}", names[m]), pce.detach());
                total = (total + (pce * self.cfg.alpha)?)?;
                self.sums.pce[m] += 1.0;
            }
        }
        if self.cfg.entropy_mu > 0.0 {
            let strong = s
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > s[b] { i } else { b });
            let logp = modbal_tensors::ops::log_softmax(&sims[strong], 1)?;
            let h = (logp.exp()? * &logp)?.sum(1)?.mean(0)?.neg()?;
            parts.insert(format!("entropy.{}", names[strong]), h.detach());
            total = (total - (h * self.cfg.entropy_mu)?)?;
        }
        Ok(LossTerms { total, parts })
    }

    fn after_step(
        &mut self,
        _model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        if ctx.batch_index + 1 == self.prototype_batches(ctx.batches_per_epoch) {
            self.finalize();
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        // An epoch shorter than its prototype batches still produces prototypes.
        self.finalize();
        let names = model.modalities();
        let s = std::mem::take(&mut self.sums);
        if s.steps > 0 {
            let n = s.steps as f64;
            ctx.log.set("active", s.active as f64 / n);
            if s.active > 0 {
                let pce: Vec<f64> = s.pce.iter().map(|x| x / n).collect();
                ctx.log
                    .set("s", by_name(names, &s.scores.mean_batch_score()));
                ctx.log.set("pce", by_name(names, &pce));
            }
            if s.rho_steps > 0 {
                ctx.log.set("rho", s.rho / s.rho_steps as f64);
            }
        }
        let w = self.cfg.run_window(ctx.num_epochs);
        ctx.log.set("window.start", w.start as f64);
        ctx.log.set("window.end", w.end as f64);
        if let Some((norm, spread, shift, samples)) = self.last_update.take() {
            ctx.log.set("proto.norm", by_name(names, &norm));
            ctx.log.set("proto.spread", by_name(names, &spread));
            ctx.log.set("proto.shift", by_name(names, &shift));
            ctx.log.set("proto.samples", samples as f64);
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "prototypes": self.protos })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() || state["prototypes"].is_null() {
            return Ok(());
        }
        // NaN (a class never seen) is written as null.
        let raw: Vec<Vec<Vec<Option<f32>>>> =
            serde_json::from_value(state["prototypes"].clone())
                .map_err(|e| ModbalError::Data(format!("pmr state prototypes: {e}")))?;
        self.protos = raw
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|r| r.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
                    .collect()
            })
            .collect();
        Ok(())
    }
}

/// Registry entry: `[method] name = "pmr"` with [`PmrConfig`]'s keys; concat head.
impl MethodParams for PmrConfig {
    /// Heads: `{ALL_FUSIONS}` (`docs/fusion.md`): its prototypes use the encoders' features and its loss the fused logits.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ALL_FUSIONS,
            "its prototypes use the encoders' features and its loss the fused logits",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Pmr::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_negative_euclidean_distance() {
        let f = Tensor::new(&[[0f32, 0.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let c = Tensor::new(&[[0f32, 0.0], [0.0, 4.0]], &Device::Cpu).unwrap();
        let s = prototype_similarity(&f, &c)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((s[0][0] + 1e-6).abs() < 1e-5);
        assert!((s[0][1] + 4.0).abs() < 1e-6);
        assert!((s[1][0] + 5.0).abs() < 1e-6);
        assert!((s[1][1] + 3.0).abs() < 1e-6);
    }
}
