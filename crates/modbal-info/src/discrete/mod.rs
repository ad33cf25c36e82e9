//! Discrete information measures (ARM eq 1-2, 8-10): plug-in estimators on labels, equal-width
//! histogram binning of continuous values, and a differentiable "soft" form over probability
//! vectors.
//!
//! Paper: Gao et al., *Asymmetric Reinforcing against Multi-modal Representation Bias* (ARM,
//! AAAI 2025). All logarithms are natural (nats).
//!
//! # Plug-in estimators on labels
//!
//! For N samples of labels with counts `n_x`, `n_xy`, `n_xyz`, … the empirical distribution is
//! `P(x) = n_x / N`, `P(x, y) = n_xy / N`, … and
//!
//! * entropy `H(X) = −Σ_x P(x) log P(x)`;
//! * joint entropy `H(X, Y) = −Σ_{x,y} P(x, y) log P(x, y)`;
//! * conditional entropy `H(X|Y) = H(X, Y) − H(Y) = Σ_{x,y} P(x, y) log(P(y) / P(x, y))`;
//! * mutual information, ARM eq 1:
//!   `I(X; Y) = Σ_{x,y} P(x, y) log( P(x, y) / (P(x) P(y)) )`;
//! * normalised mutual information, ARM eq 2 (the geometric normalisation, our default):
//!   `NMI(X; Y) = I(X; Y) / √(H(X) H(Y))`; [`Normalization`] also offers the arithmetic
//!   (`2I / (H(X) + H(Y))`, the official ARM code's choice), max and min normalisers;
//! * conditional mutual information, ARM eq 8:
//!   `I(X; Y|Z) = Σ_{x,y,z} P(x, y, z) log( P(x, y, z) P(z) / (P(x, z) P(y, z)) )
//!   = E_Z KL[P(x, y|z) ‖ P(x|z) P(y|z)]`;
//! * normalised CMI, ARM eq 9: `NCMI(X; Y|Z) = I(X; Y|Z) / √(H(X|Z) H(Y|Z))`. Because
//!   `I(X; Y|Z) ≤ min(H(X|Z), H(Y|Z)) ≤ √(H(X|Z) H(Y|Z))`, NCMI ∈ [0, 1];
//! * interaction information, ARM eq 10, with McGill's sign convention
//!   `I(X; Y; Z) = I(X; Y) − I(X; Y|Z)` (positive: Z explains away shared information,
//!   redundancy; negative: synergy). ARM eq 10 writes it with the normalised quantities
//!   (`II = NMI(X; Y) − NCMI(X; Y|Z)`, "we use I to represent NMI", below eq 5); both are provided:
//!   [`interaction_information`] (nats) and [`normalized_interaction_information`] (ARM's literal
//!   eq 10, in [−1, 1]). In ARM's notation `II(f_Y; f_xj; f_xi)` is `x = f_Y, y = f_xj, z = f_xi`.
//!
//! The estimators count with flat arrays sized by the alphabet (largest label + 1), never hash
//! maps: every estimate costs O(N + |alphabet|). Pairs and triples are formed as dense joint
//! symbols (at most N of them): directly through a `kx·ky` table when that table is at most
//! `max(4N, 4096)` entries, otherwise by a counting sort on the first variable. Labels larger
//! than `max(4N, 4096)` are first relabelled by sorting (O(N log N)).
//!
//! Estimates are computed per non-empty cell in the form `Σ (n_c/N) log(ratio of counts)`, as in
//! scikit-learn's `mutual_info_score`; results agree with scikit-learn 1.9.1 within 1e-12 (tested).
//!
//! # Equal-width binning
//!
//! [`discretize`] maps continuous values to `bins` equal-width bins spanning `[min, max]`:
//! bin `k` is `[min + k·w, min + (k+1)·w)` with `w = (max − min) / bins`, the last bin closed
//! (`max` falls in bin `bins − 1`). The assignment reproduces `numpy.histogram`'s (edges
//! `numpy.linspace(min, max, bins + 1)`, including its ±1 correction at the edges). Constant
//! input puts every value in bin 0 (NumPy would use the middle bin; the entropy is 0 either way).
//! The `*_binned` estimators bin each argument separately and apply the plug-in estimator.
//!
//! # Soft (probability-vector) form
//!
//! For rows `p_i ∈ Δ^{C}` and `q_i ∈ Δ^{C'}` (softmax outputs, or one-hot labels), the soft
//! joint distribution of the predicted classes is
//!
//! `P(a, b) = (1/N) Σ_i p_i(a) q_i(b)`, i.e. `J = pᵀ q / N`, with marginals `P(a) = mean_i p_i(a)`,
//! `P(b) = mean_i q_i(b)`,
//!
//! and ARM eq 1-2 are evaluated on `J` with tensor ops, so the result is differentiable. With
//! one-hot rows this is exactly the plug-in estimate on the argmax labels. Every `log u` is
//! computed as `log(u + ε)`, `ε =` [`SOFT_EPS`] `= 1e-12`, so empty cells contribute `0·log ε = 0`
//! with a finite gradient; the bias this introduces is below `ε·C·C'`.
//!
//! Per sample (ARM eq 5-6): ARM values sample `X` by `p(f_Y → y)·I(f_Y; f_xi)`, where eq 5 reads
//! `I` as the expectation, over the classes `ŷ` predicted with probability `p(f_Y → ŷ)`, of
//! the information the prediction carries. [`per_sample_pointwise_mi`] makes that expectation
//! per sample: `m_i = Σ_a p_i(a) · log( P(a, y_i) / (P(a) P(y_i)) )`, the expected pointwise MI
//! between the sample's predicted class and its label under the batch's soft joint. Its batch
//! mean is exactly the soft MI (`(1/N) Σ_i m_i = I`), so it is a decomposition of eq 1 over
//! samples; a single `m_i` can be negative. ARM's weighting by `p(f_Y → y)` (eq 6) is left to the
//! caller.
//!
//! The soft CMI (for ARM eq 8-10 over three predictions) uses
//! `P(a, b, c) = (1/N) Σ_i p_i(a) q_i(b) r_i(c)`.
//!
//! # Shapes
//! * labels: `x, y, z: &[u32]` of one length N ≥ 1 (N < 2³²); any values (not necessarily
//!   `0..K`); every plug-in estimator returns an `f64`.
//! * binning: `values: &[f64]` of length N ≥ 1 → `Vec<u32>` of length N with values in `0..bins`;
//!   tensors `[N]` or `[N, D]` → `Vec<u32>` of length N ([`discretize_tensor`]).
//! * soft form: `p: [N, C]`, `q: [N, C']`, `r: [N, C'']` float tensors whose rows are non-negative
//!   and sum to 1 within 1e-4, labels `y: &[u32]` of length N; MI/NMI/CMI/NCMI → `[]` (scalar,
//!   dtype of `p`), [`per_sample_pointwise_mi`] → `[N]`.
//!
//! Errors: empty input and length mismatches are [`InfoError::Input`] naming the lengths, NaN/Inf
//! is [`InfoError::Input`] naming the position, `bins = 0` is [`InfoError::Param`].
//!
//! # Layout
//! The counting machinery is in `counting.rs`, the plug-in estimators on labels in `plugin.rs`,
//! binning and the binned estimators in `binning.rs`, the soft form in `soft.rs`.
//!
//! [`InfoError::Input`]: crate::InfoError::Input
//! [`InfoError::Param`]: crate::InfoError::Param

mod binning;
mod counting;
mod plugin;
mod soft;

pub use binning::{
    cmi_binned, discretize, discretize_tensor, mean_per_feature_mi_binned,
    mutual_information_binned, ncmi_binned, nmi_binned, EqualWidthBins,
};
pub use plugin::{
    conditional_entropy, conditional_mutual_information, entropy, interaction_information,
    joint_entropy, joint_symbols, mutual_information, ncmi, normalized_interaction_information,
    normalized_mutual_information, Normalization,
};
pub use soft::{
    per_sample_pointwise_mi, soft_conditional_mutual_information, soft_mutual_information,
    soft_mutual_information_labels, soft_ncmi, soft_nmi, soft_nmi_labels, SOFT_EPS,
};
