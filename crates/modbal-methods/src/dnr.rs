//! `dnr`: Diagnosing & Re-learning (Wei, Li, Feng & Hu, "Diagnosing and Re-learning for Balanced
//! Multimodal Learning", ECCV 2024, arXiv 2407.09705; official code
//! GeWu-Lab/Diagnosing_Relearning_ECCV2024, `code/ours.py`). See `docs/methods/dnr.md`.
//!
//! # Maths
//! Training is plain joint training on the fused cross-entropy (`L = CE(z, y)`, the official
//! `loss_mm`). At a few diagnosis epochs `e` (official: after epochs 20, 40, 60 of 90), for
//! every modality `m`, with `Φ^m_D: [N_D, D_m]` its encoder features on the training data and
//! `Φ^m_V: [N_V, D_m]` on the validation split:
//!
//! ```text
//! Φ̃      = 2·(Φ − min_col)/(max_col − min_col) − 1          (MinMaxScaler(−1, 1), per set; a
//!                                                            constant column has range 1)
//! c      = k-means(Φ̃, K)                                    (K = number of classes; k-means++,
//!                                                            best of n_init, Lloyd)
//! P(Φ)   = (1/N) Σ_clusters max_y |{i : c_i = cluster, y_i = y}|      (purity)
//! g^m    = |P(Φ^m_D) − P(Φ^m_V)|                            (paper eq. for the learning state)
//! α^m    = tanh(λ·g^m)                                      (λ = 3)
//! θ^m    ← (1 − α^m)·θ^m + α^m·θ^m_init                      (every trainable tensor of encoder m)
//! ```
//!
//! `θ^m_init` is encoder `m` at the start of training (the official `init_para.pkl`). A modality
//! whose training representation separates much better than its validation one (well learnt,
//! over-fitting) is pulled back toward its initialisation more; a scarcely informative modality
//! (low purity on both sets) is left nearly as is. Every modality is treated alike, so the
//! method is defined for any M ≥ 1.
//!
//! # When
//! Diagnosis epochs are `scale_epoch(j·reinit_every, schedule_epochs, E)` for `j = 1..=reinit_num`
//! (0-based, at the end of the epoch, after validation: the official check
//! `epoch % 20 == 0 and epoch > 0` after `valid`, at most `reinit_num = 3` times), kept when
//! `≥ 1` and before the run's last epoch, duplicates removed.
//!
//! # Features
//! `Φ_D` are the encoder features of the diagnosis epoch's own training steps (detached; train
//! mode, from the moving model): the hooks have no pass over the training split. The official code
//! runs an extra eval-mode pass over the training set after the epoch. `Φ_V` are the validation
//! pass's features (eval mode), as there.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! Always `dist_init.<m>` (`‖θ^m − θ^m_init‖₂` at the epoch's end, after a re-initialisation),
//! `reinits` (re-initialisations done so far) and `loss.fused`, `loss.<m>` (unimodal CE of the
//! head slices, logged only). At diagnosis epochs also `purity_train.<m>`, `purity_val.<m>`,
//! `gap.<m>` and `alpha.<m>`.

use crate::params::MethodParams;
use crate::util::{by_name, fused_ce_logging_unimodal, labels};
use candle_core::{DType, Tensor, Var};
use modbal_core::{
    scale_epoch, Batch, EvalOutputs, LossTerms, Method, ModbalError, MultimodalModel,
    MultimodalOutput, Result, RunContext,
};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of `dnr` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "dnr"
/// lambda = 3.0            # α = tanh(λ·|P_train − P_val|)
/// reinit_every = 20       # diagnose after epochs 20, 40, … (of a schedule_epochs schedule)
/// reinit_num = 3          # at most this many re-initialisations
/// schedule_epochs = 90    # the schedule reinit_every refers to (0: literal run epochs)
/// clusters = 0            # k-means K; 0 = the number of classes
/// kmeans_init = 10        # k-means++ restarts, best inertia kept
/// kmeans_max_iter = 300
/// kmeans_tol = 1e-4       # relative to the mean feature variance (scikit-learn's tol)
/// minmax = true           # scale each feature column to [−1, 1] before clustering
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnrConfig {
    /// λ of `α = tanh(λ·g)`, finite and ≥ 0. Default 3: official `script/ours.sh`
    /// `--move_lambda 3` (also the `get_arguments` default).
    pub lambda: f64,
    /// Diagnosis period in epochs of the `schedule_epochs` schedule, ≥ 1. Default 20: official
    /// `--reinit_epoch 20`.
    pub reinit_every: usize,
    /// Maximum number of re-initialisations. Default 3: official `--reinit_num 3`.
    pub reinit_num: usize,
    /// Length of the schedule `reinit_every` refers to; the diagnosis epochs are scaled to the
    /// run (`modbal_core::scale_epoch`). Default 90: official `--epochs 90`. 0 = literal epochs.
    pub schedule_epochs: usize,
    /// Number of k-means clusters; 0 (default) = the number of classes (official
    /// `KMeans(n_clusters=args.n_classes)`).
    pub clusters: usize,
    /// k-means++ restarts (best inertia kept), ≥ 1. Default 10: scikit-learn's `n_init` before
    /// 1.4 (the official call leaves it at the library default).
    pub kmeans_init: usize,
    /// Lloyd iterations per restart, ≥ 1. Default 300 (scikit-learn's `max_iter`).
    pub kmeans_max_iter: usize,
    /// Convergence tolerance on the squared centre shift, relative to the mean per-column
    /// variance, ≥ 0. Default 1e-4 (scikit-learn's `tol`).
    pub kmeans_tol: f64,
    /// Scale each feature column of each set to [−1, 1] before clustering. Default `true`
    /// (official `MinMaxScaler(feature_range=(-1,1))`).
    pub minmax: bool,
}

impl Default for DnrConfig {
    fn default() -> Self {
        Self {
            lambda: 3.0,
            reinit_every: 20,
            reinit_num: 3,
            schedule_epochs: 90,
            clusters: 0,
            kmeans_init: 10,
            kmeans_max_iter: 300,
            kmeans_tol: 1e-4,
            minmax: true,
        }
    }
}

impl DnrConfig {
    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method dnr: {m}")));
        for (k, v) in [("lambda", self.lambda), ("kmeans_tol", self.kmeans_tol)] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        for (k, v) in [
            ("reinit_every", self.reinit_every),
            ("kmeans_init", self.kmeans_init),
            ("kmeans_max_iter", self.kmeans_max_iter),
        ] {
            if v == 0 {
                return err(format!("{k} must be >= 1"));
            }
        }
        if self.clusters == 1 {
            return err("clusters must be 0 (the number of classes) or >= 2, got 1".into());
        }
        Ok(())
    }

    /// The 0-based diagnosis epochs of a run of `run_epochs` epochs (see the module docs).
    pub fn reinit_epochs(&self, run_epochs: usize) -> Vec<usize> {
        let mut out: Vec<usize> = (1..=self.reinit_num)
            .map(|j| scale_epoch(j * self.reinit_every, self.schedule_epochs, run_epochs))
            .filter(|&e| e >= 1 && e + 1 < run_epochs)
            .collect();
        out.dedup();
        out
    }

    fn kmeans_options(&self) -> KMeansOptions {
        KMeansOptions {
            n_init: self.kmeans_init,
            max_iter: self.kmeans_max_iter,
            tol: self.kmeans_tol,
        }
    }
}

/// Scales each column of `x` to [−1, 1] in place: `2(x − min)/(max − min) − 1`, a constant
/// column (range 0) with range 1 (scikit-learn's `MinMaxScaler`, which maps it to −1).
pub fn minmax_scale(x: &mut [Vec<f64>]) {
    let Some(d) = x.first().map(|r| r.len()) else {
        return;
    };
    for j in 0..d {
        let (lo, hi) = x
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r[j]), hi.max(r[j]))
            });
        let range = if hi - lo == 0.0 { 1.0 } else { hi - lo };
        for r in x.iter_mut() {
            r[j] = 2.0 * (r[j] - lo) / range - 1.0;
        }
    }
}

/// Cluster purity `(1/N) Σ_c max_y |{i : c_i = c, y_i = y}|` (the official `purity_score`).
pub fn purity(labels: &[usize], clusters: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let mut counts: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (&y, &c) in labels.iter().zip(clusters) {
        *counts.entry((c, y)).or_default() += 1;
    }
    let mut best: BTreeMap<usize, usize> = BTreeMap::new();
    for ((c, _), n) in counts {
        let b = best.entry(c).or_default();
        *b = (*b).max(n);
    }
    best.values().sum::<usize>() as f64 / labels.len() as f64
}

/// The re-initialisation strength `α = tanh(λ·|p_train − p_val|)`.
pub fn strength(lambda: f64, p_train: f64, p_val: f64) -> f64 {
    (lambda * (p_train - p_val).abs()).tanh()
}

/// Options of [`kmeans`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KMeansOptions {
    /// Restarts; the run with the lowest inertia is kept (the first on a tie).
    pub n_init: usize,
    /// Lloyd iterations per restart.
    pub max_iter: usize,
    /// Stop when `Σ_k ‖c_k − c_k'‖² ≤ tol · mean_j var(x_{·j})` (or the assignment is unchanged).
    pub tol: f64,
}

fn d2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Nearest centre of each row (the lowest index on a tie) and the summed squared distance.
fn assign(x: &[Vec<f64>], centers: &[Vec<f64>]) -> (Vec<usize>, f64) {
    let mut inertia = 0.0;
    let labels = x
        .iter()
        .map(|r| {
            let (mut bi, mut bd) = (0, f64::INFINITY);
            for (k, c) in centers.iter().enumerate() {
                let d = d2(r, c);
                if d < bd {
                    (bi, bd) = (k, d);
                }
            }
            inertia += bd;
            bi
        })
        .collect();
    (labels, inertia)
}

/// Greedy k-means++ seeding (scikit-learn's: `2 + ⌊ln k⌋` candidates per centre, drawn with
/// probability ∝ D², the one lowering the potential most kept).
fn kmeans_pp(x: &[Vec<f64>], k: usize, rng: &mut SeededRng) -> Vec<Vec<f64>> {
    let n = x.len();
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut centers = vec![x[rng.below(n)].clone()];
    let mut closest: Vec<f64> = x.iter().map(|r| d2(r, &centers[0])).collect();
    while centers.len() < k {
        let pot: f64 = closest.iter().sum();
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let cand = if pot > 0.0 {
                let target = rng.uniform() * pot;
                let mut acc = 0.0;
                let mut idx = n - 1;
                for (i, d) in closest.iter().enumerate() {
                    acc += d;
                    if acc > target {
                        idx = i;
                        break;
                    }
                }
                idx
            } else {
                rng.below(n)
            };
            let new: Vec<f64> = x
                .iter()
                .zip(&closest)
                .map(|(r, &c)| c.min(d2(r, &x[cand])))
                .collect();
            let p: f64 = new.iter().sum();
            if best.as_ref().is_none_or(|(bp, _, _)| p < *bp) {
                best = Some((p, cand, new));
            }
        }
        let (_, cand, new) = best.expect("at least two trials");
        centers.push(x[cand].clone());
        closest = new;
    }
    centers
}

/// k-means of the rows of `x` into `k` clusters (`k` capped at the row count): greedy
/// k-means++ seeding from `rng`, Lloyd iterations, an empty cluster moved to the row farthest
/// from its centre; best of `n_init` restarts. Returns the assignment and its inertia.
pub fn kmeans(
    x: &[Vec<f64>],
    k: usize,
    opts: &KMeansOptions,
    rng: &mut SeededRng,
) -> Result<(Vec<usize>, f64)> {
    let n = x.len();
    if n == 0 || k == 0 {
        return Err(ModbalError::Data(format!(
            "dnr: k-means needs rows and clusters, got {n} rows and k = {k}"
        )));
    }
    let d = x[0].len();
    if let Some(r) = x.iter().find(|r| r.len() != d) {
        return Err(ModbalError::Data(format!(
            "dnr: k-means rows of unequal width ({d} and {})",
            r.len()
        )));
    }
    if x.iter().flatten().any(|v| !v.is_finite()) {
        return Err(ModbalError::Data(
            "dnr: non-finite encoder features cannot be clustered".into(),
        ));
    }
    let k = k.min(n);
    let mean_var = if d == 0 {
        0.0
    } else {
        (0..d)
            .map(|j| {
                let mu = x.iter().map(|r| r[j]).sum::<f64>() / n as f64;
                x.iter().map(|r| (r[j] - mu).powi(2)).sum::<f64>() / n as f64
            })
            .sum::<f64>()
            / d as f64
    };
    let tol = opts.tol * mean_var;
    let mut best: Option<(Vec<usize>, f64)> = None;
    for _ in 0..opts.n_init.max(1) {
        let mut centers = kmeans_pp(x, k, rng);
        let (mut lab, _) = assign(x, &centers);
        for _ in 0..opts.max_iter.max(1) {
            let mut sums = vec![vec![0.0; d]; k];
            let mut counts = vec![0usize; k];
            for (r, &c) in x.iter().zip(&lab) {
                counts[c] += 1;
                for (s, v) in sums[c].iter_mut().zip(r) {
                    *s += v;
                }
            }
            let mut new: Vec<Vec<f64>> = sums
                .into_iter()
                .zip(&counts)
                .map(|(s, &c)| s.into_iter().map(|v| v / c.max(1) as f64).collect())
                .collect();
            for c in 0..k {
                if counts[c] == 0 {
                    // The row farthest from its own centre becomes the empty cluster's centre.
                    let far = (0..n)
                        .max_by(|&a, &b| {
                            d2(&x[a], &centers[lab[a]]).total_cmp(&d2(&x[b], &centers[lab[b]]))
                        })
                        .unwrap_or(0);
                    new[c] = x[far].clone();
                }
            }
            let shift: f64 = centers.iter().zip(&new).map(|(a, b)| d2(a, b)).sum();
            centers = new;
            let (next, _) = assign(x, &centers);
            let same = next == lab;
            lab = next;
            if same || shift <= tol {
                break;
            }
        }
        let (lab, inertia) = assign(x, &centers);
        if best.as_ref().is_none_or(|(_, bi)| inertia < *bi) {
            best = Some((lab, inertia));
        }
    }
    Ok(best.expect("n_init >= 1"))
}

/// The purity of one feature set: optional min-max scaling, k-means, purity against `y`.
pub fn feature_purity(
    mut x: Vec<Vec<f64>>,
    y: &[usize],
    k: usize,
    minmax: bool,
    opts: &KMeansOptions,
    rng: &mut SeededRng,
) -> Result<f64> {
    if x.len() != y.len() {
        return Err(ModbalError::Data(format!(
            "dnr: {} feature rows for {} labels",
            x.len(),
            y.len()
        )));
    }
    if minmax {
        minmax_scale(&mut x);
    }
    let (c, _) = kmeans(&x, k, opts, rng)?;
    Ok(purity(y, &c))
}

/// `θ ← (1 − α)·θ + α·θ_init` on one tensor.
pub fn soft_reinit(theta: &Var, init: &Tensor, alpha: f64) -> Result<()> {
    let new = (theta.as_tensor().affine(1.0 - alpha, 0.0)? + init.affine(alpha, 0.0)?)?;
    theta.set(&new)?;
    Ok(())
}

fn to_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let t = if t.rank() == 2 {
        t.clone()
    } else {
        t.flatten_from(1)?
    };
    Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

/// The Diagnosing & Re-learning method; see the [module docs](self).
#[derive(Debug)]
pub struct Dnr {
    cfg: DnrConfig,
    modalities: Vec<String>,
    /// `θ_init`: the encoders' trainable tensors before the first step, by parameter name.
    init: BTreeMap<String, Tensor>,
    /// The diagnosis epochs of this run.
    plan: Vec<usize>,
    /// Detached training features of the diagnosis epoch, per modality, and their labels.
    train_feats: Vec<Vec<Tensor>>,
    train_labels: Vec<Tensor>,
    /// The validation split's features and labels of the diagnosis epoch.
    val: Option<(Vec<Tensor>, Vec<usize>)>,
}

impl Dnr {
    pub fn new(cfg: DnrConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            modalities: Vec::new(),
            init: BTreeMap::new(),
            plan: Vec::new(),
            train_feats: Vec::new(),
            train_labels: Vec::new(),
            val: None,
        })
    }

    pub fn config(&self) -> &DnrConfig {
        &self.cfg
    }

    /// `θ_init` of a parameter (after the first [`Method::on_epoch_start`] or a resume).
    pub fn initial(&self, name: &str) -> Option<&Tensor> {
        self.init.get(name)
    }

    /// Whether the epoch `epoch` of a run of `run_epochs` epochs ends with a diagnosis.
    pub fn diagnoses(&self, epoch: usize, run_epochs: usize) -> bool {
        self.cfg.reinit_epochs(run_epochs).contains(&epoch)
    }

    fn diagnosing(&self, epoch: usize) -> bool {
        self.plan.contains(&epoch)
    }

    /// Every trainable tensor of encoder `m`, as `(name, var)`.
    fn encoder_vars(model: &dyn MultimodalModel, m: usize) -> Vec<(String, Var)> {
        let all = model.params().trainable();
        modbal_modulate::group_vars(&all, &model.encoder_prefix(m))
            .into_iter()
            .cloned()
            .collect()
    }

    fn ensure(&mut self, model: &dyn MultimodalModel, ctx: &RunContext) {
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        self.plan = self.cfg.reinit_epochs(ctx.num_epochs);
    }

    /// The purities, gaps and strengths of every modality, from the collected features, in the
    /// official order (train, then validation, modality by modality; k-means draws from `rng`).
    fn diagnose(&mut self, k: usize, rng: &mut SeededRng) -> Result<[Vec<f64>; 4]> {
        let (val_feats, val_y) = self.val.take().ok_or_else(|| {
            ModbalError::Data(
                "dnr: no validation features at a diagnosis epoch (the method needs a \
                 validation split)"
                    .into(),
            )
        })?;
        let mut train_y = Vec::new();
        for l in &self.train_labels {
            train_y.extend(labels(l)?);
        }
        let opts = self.cfg.kmeans_options();
        let n = self.modalities.len();
        let (mut pt, mut pv, mut g, mut a) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for m in 0..n {
            let parts = &self.train_feats[m];
            let train = Tensor::cat(parts, 0)?;
            pt[m] = feature_purity(to_rows(&train)?, &train_y, k, self.cfg.minmax, &opts, rng)?;
            let val = val_feats.get(m).ok_or_else(|| {
                ModbalError::Data(format!("dnr: no validation features of modality {m}"))
            })?;
            pv[m] = feature_purity(to_rows(val)?, &val_y, k, self.cfg.minmax, &opts, rng)?;
            g[m] = (pt[m] - pv[m]).abs();
            a[m] = strength(self.cfg.lambda, pt[m], pv[m]);
        }
        Ok([pt, pv, g, a])
    }
}

impl Method for Dnr {
    fn name(&self) -> &str {
        "dnr"
    }

    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.ensure(model, ctx);
        if self.init.is_empty() {
            if ctx.epoch != 0 {
                return Err(ModbalError::Data(format!(
                    "dnr: no initial encoder weights θ_init at epoch {} (a checkpoint without \
                     the method's tensors?)",
                    ctx.epoch
                )));
            }
            for m in 0..self.modalities.len() {
                for (n, v) in Self::encoder_vars(model, m) {
                    self.init.insert(n, v.as_tensor().detach().copy()?);
                }
            }
        }
        self.train_feats = vec![Vec::new(); self.modalities.len()];
        self.train_labels.clear();
        self.val = None;
        Ok(())
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        fused_ce_logging_unimodal(model, batch, out)
    }

    fn after_step(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        if !self.diagnosing(ctx.epoch) {
            return Ok(());
        }
        let n = model.modalities().len();
        if out.features.len() != n || self.train_feats.len() != n {
            return Err(ModbalError::Data(format!(
                "dnr: the model gave {} feature tensors for {n} modalities",
                out.features.len()
            )));
        }
        for (acc, f) in self.train_feats.iter_mut().zip(&out.features) {
            acc.push(f.detach());
        }
        self.train_labels.push(batch.labels.clone());
        Ok(())
    }

    fn on_validation(
        &mut self,
        _model: &dyn MultimodalModel,
        val: &EvalOutputs,
        ctx: &mut RunContext,
    ) -> Result<()> {
        if self.diagnosing(ctx.epoch) {
            let y = val.labels.iter().map(|&c| c as usize).collect();
            self.val = Some((val.features.clone(), y));
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.ensure(model, ctx);
        let names = self.modalities.clone();
        let done_before = self.plan.iter().filter(|&&e| e < ctx.epoch).count();
        let mut reinits = done_before;
        if self.diagnosing(ctx.epoch) && !self.train_labels.is_empty() {
            let k = if self.cfg.clusters == 0 {
                model.num_classes()
            } else {
                self.cfg.clusters
            };
            let [pt, pv, g, a] = self.diagnose(k, &mut ctx.rng)?;
            for (m, &alpha) in a.iter().enumerate() {
                for (n, v) in Self::encoder_vars(model, m) {
                    let init = self.init.get(&n).ok_or_else(|| {
                        ModbalError::Data(format!("dnr: no θ_init for parameter {n}"))
                    })?;
                    soft_reinit(&v, init, alpha)?;
                }
            }
            reinits += 1;
            ctx.log.set("purity_train", by_name(&names, &pt));
            ctx.log.set("purity_val", by_name(&names, &pv));
            ctx.log.set("gap", by_name(&names, &g));
            ctx.log.set("alpha", by_name(&names, &a));
        }
        self.train_feats = vec![Vec::new(); names.len()];
        self.train_labels.clear();
        self.val = None;
        let mut dist = vec![0.0; names.len()];
        for (m, d) in dist.iter_mut().enumerate() {
            for (n, v) in Self::encoder_vars(model, m) {
                if let Some(i) = self.init.get(&n) {
                    *d += (v.as_tensor().detach() - i)?
                        .to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?;
                }
            }
            *d = d.sqrt();
        }
        ctx.log.set("dist_init", by_name(&names, &dist));
        ctx.log.set("reinits", reinits as f64);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "modalities": self.modalities })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if !state["modalities"].is_null() {
            self.modalities = serde_json::from_value(state["modalities"].clone())
                .map_err(|e| ModbalError::Data(format!("dnr state modalities: {e}")))?;
        }
        Ok(())
    }

    /// `θ_init` (under `init.<parameter>`): the re-initialisation target must survive a resume.
    fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(self
            .init
            .iter()
            .map(|(n, t)| (format!("init.{n}"), t.clone()))
            .collect())
    }

    fn load_state_tensors(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        self.init = tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix("init.").map(|k| (k.to_string(), t.clone())))
            .collect();
        Ok(())
    }
}

/// Registry entry: `[method] name = "dnr"` with [`DnrConfig`]'s keys; concat head.
impl MethodParams for DnrConfig {
    /// Heads: `{ALL_FUSIONS}` (`docs/fusion.md`): it uses only the fused logits and the encoders' features.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ALL_FUSIONS,
            "it uses only the fused logits and the encoders' features",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Dnr::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_schedule_is_epochs_20_40_60_of_90() {
        let c = DnrConfig::default();
        assert_eq!(c.reinit_epochs(90), vec![20, 40, 60]);
        // 12-epoch run: round(20·12/90) = 3, round(5.33) = 5, round(8) = 8.
        assert_eq!(c.reinit_epochs(12), vec![3, 5, 8]);
    }
}
