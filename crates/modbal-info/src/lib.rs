//! # modbal-info: information-theoretic estimators
//!
//! The four families of estimators the balancing methods rest on, usable on their own (this
//! crate depends only on `modbal-core`, `modbal-tensors` and candle):
//!
//! | module | estimators | used by |
//! |---|---|---|
//! | [`gaussian`] | Gaussian entropy and mutual information from batch covariances (differentiable) | CAL eq 10-12 (AIB loss) |
//! | [`club`] | variational q(y\|x), its log-likelihood loss, CLUB, CLUBSample, UDI's vCLUB, the "one model step, k q-steps" helper | UDI eq 7-11 (Cheng et al. 2020) |
//! | [`discrete`] | entropy, MI, NMI, CMI, NCMI, interaction information: plug-in on labels, histogram binning, probability vectors | ARM eq 1-2, 8-10 |
//! | [`divergence`] | KL and Jensen–Shannon between categorical predictions, the variational softmax MI bound | UDI eq 4-5, IBML eq 10-11 |
//!
//! All logarithms are natural (nats). Every estimator either returns a well-defined value on
//! degenerate input (documented on the function) or an [`InfoError`] naming the problem; none
//! returns a silent NaN.
//!
//! Performance: the tensor estimators are differentiable compositions of candle ops. When an
//! estimate is only read (its tensor inputs do not track gradients, are f64 and on the CPU), the
//! Gaussian estimators, CLUB / CLUBSample, KL / JS (probability forms), the softmax bound and the
//! soft MI with labels compute the same value with fused, multi-threaded loops instead (see
//! `docs/benchmarks.md`); CLUB's fused estimate stays differentiable in q's parameters.
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use modbal_info::discrete::mutual_information;
//! use modbal_info::gaussian::{gaussian_mi, GaussianConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Four hand-made rows of two scalar features with sample correlation r = 0.8.
//! let x = Tensor::new(&[1.0f64, 2.0, 3.0, 4.0], &Device::Cpu)?;
//! let y = Tensor::new(&[1.0f64, 3.0, 2.0, 4.0], &Device::Cpu)?;
//! // No regularisation: the estimate is the closed form I = −½ ln(1 − r²) = ln(5/3) nats.
//! let exact = GaussianConfig { ridge: 0.0, shrinkage: 0.0 };
//! let mi = gaussian_mi(&x, &y, &exact)?.to_scalar::<f64>()?;
//! assert!((mi - (5.0f64 / 3.0).ln()).abs() < 1e-9);
//!
//! // Plug-in MI of discrete labels: a copy of a fair binary variable carries ln 2 nats.
//! let labels = [0u32, 1, 0, 1];
//! assert!((mutual_information(&labels, &labels)? - 2f64.ln()).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```

pub mod club;
pub mod discrete;
pub mod divergence;
pub mod error;
mod fast;
pub mod gaussian;

pub use error::{InfoError, Result};
