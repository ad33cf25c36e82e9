//! `modbal estimate`: run an information estimator on arrays from `.npy` or CSV files and print
//! one JSON object.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use modbal_data::npy::{read_array, Array};
use modbal_info::club::{Club, ClubConfig};
use modbal_info::discrete::{self, Normalization};
use modbal_info::gaussian::{gaussian_entropy, gaussian_mi, GaussianConfig};
use modbal_tensors::SeededRng;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The estimators `modbal estimate` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Estimator {
    /// Gaussian mutual information I(X;Y) from covariances (CAL eq 12). Needs --x, --y.
    GaussianMi,
    /// Gaussian differential entropy H(X) (CAL eq 11). Needs --x.
    GaussianEntropy,
    /// CLUB upper bound on I(X;Y) (Cheng et al. 2020) with q fitted on the data. Needs --x, --y.
    Club,
    /// CLUBSample (one random permutation) with q fitted on the data. Needs --x, --y.
    ClubSample,
    /// Normalised mutual information (geometric by default, ARM eq 2). Needs --x, --y.
    Nmi,
    /// Plug-in mutual information of discrete (or binned) data. Needs --x, --y.
    Mi,
    /// Conditional mutual information I(X;Y|Z). Needs --x, --y, --z.
    Cmi,
    /// Normalised conditional mutual information (ARM eq 9). Needs --x, --y, --z.
    Ncmi,
}

#[derive(clap::Args)]
pub struct EstimateArgs {
    /// Which estimator.
    #[arg(value_enum)]
    pub estimator: Estimator,
    /// X: .npy (f32/f64/integer, 1-D or 2-D, C order) or .csv ([N] or [N, D]). The Gaussian
    /// estimators take at most 8192 columns (X and Y together).
    #[arg(long)]
    pub x: PathBuf,
    /// Y, same number of rows as X.
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Z (conditioning variable for cmi / ncmi).
    #[arg(long)]
    pub z: Option<PathBuf>,
    /// Equal-width bins for float inputs of the discrete estimators (1 to 1048576).
    #[arg(long, default_value_t = 10)]
    pub bins: usize,
    /// Seed (CLUB's q initialisation and CLUBSample's permutation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Gaussian estimators: ridge (multiple of each variance added to the diagonal).
    #[arg(long, default_value_t = 1e-6)]
    pub ridge: f64,
    /// Gaussian estimators: shrinkage of correlations towards 0, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub shrinkage: f64,
    /// CLUB: full-batch optimisation steps of q before estimating.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// NMI normalisation: geometric (ARM eq 2) or arithmetic.
    #[arg(long, default_value = "geometric")]
    pub normalization: String,
}

/// The most `--bins`: the counting tables of the discrete estimators have one entry per bin, and
/// more bins than this cannot be filled by data that fits in memory anyway.
pub const MAX_BINS: usize = 1 << 20;

/// The most columns of the Gaussian estimators' inputs together (`dim_x + dim_y`): their
/// covariance is a dense `D × D` matrix (8192² f64 = 512 MiB).
pub const MAX_GAUSSIAN_DIM: usize = 8192;

fn load(path: &Path, what: &str) -> Result<Array> {
    let a = read_array(path).with_context(|| format!("reading --{what} {}", path.display()))?;
    if a.shape.len() > 2 {
        bail!(
            "--{what} {}: expected a 1-D or 2-D array, got shape {:?}",
            path.display(),
            a.shape
        );
    }
    if a.is_empty() {
        bail!("--{what} {}: empty array", path.display());
    }
    Ok(a)
}

fn need<'a>(p: &'a Option<PathBuf>, what: &str, est: Estimator) -> Result<&'a PathBuf> {
    p.as_ref()
        .with_context(|| format!("estimator {est:?} needs --{what}"))
}

fn same_rows(arrays: &[(&str, &Array)]) -> Result<usize> {
    let n = arrays[0].1.rows_cols().0;
    for (name, a) in arrays {
        if a.rows_cols().0 != n {
            let shapes: Vec<String> = arrays
                .iter()
                .map(|(k, a)| format!("{k} {:?}", a.shape))
                .collect();
            bail!(
                "shape mismatch: all inputs need the same number of rows ({}), {name} differs",
                shapes.join(", ")
            );
        }
    }
    Ok(n)
}

/// The Gaussian estimators' covariance is `D × D` for the inputs' columns together: bounded by
/// [`MAX_GAUSSIAN_DIM`], so a wide file is an error naming the widths, not an allocation abort.
fn gaussian_dims(arrays: &[(&str, &Array)]) -> Result<()> {
    let d: usize = arrays.iter().map(|(_, a)| a.rows_cols().1).sum();
    if d > MAX_GAUSSIAN_DIM {
        let dims: Vec<String> = arrays
            .iter()
            .map(|(k, a)| format!("{k} has {} columns", a.rows_cols().1))
            .collect();
        bail!(
            "{}: {d} columns together, more than the limit of {MAX_GAUSSIAN_DIM} for the Gaussian \
             estimators (their covariance is a dense {d}×{d} matrix)",
            dims.join(", ")
        );
    }
    Ok(())
}

fn tensor(a: &Array) -> Result<Tensor> {
    let (r, c) = a.rows_cols();
    Ok(Tensor::from_vec(a.data.clone(), (r, c), &Device::Cpu)?)
}

/// Symbols for the discrete estimators: integer data as labels (one column), float data binned.
fn symbols(a: &Array, bins: usize, what: &str) -> Result<Vec<u32>> {
    let (_, c) = a.rows_cols();
    if a.integer && c == 1 {
        if let Some(v) = a.data.iter().find(|v| **v < 0.0 || **v > u32::MAX as f64) {
            bail!("--{what}: labels must be non-negative integers, found {v}");
        }
        return Ok(a.data.iter().map(|&v| v as u32).collect());
    }
    discrete::discretize_tensor(&tensor(a)?, discrete::EqualWidthBins::new(bins)?)
        .with_context(|| format!("binning --{what}"))
}

pub fn run(a: &EstimateArgs) -> Result<serde_json::Value> {
    let est = a.estimator;
    if a.bins > MAX_BINS {
        bail!(
            "--bins {} is more than the limit of {MAX_BINS} bins (equal-width bins beyond the \
             number of samples stay empty)",
            a.bins
        );
    }
    let x = load(&a.x, "x")?;
    let name = format!("{est:?}");
    let name = name
        .chars()
        .enumerate()
        .flat_map(|(i, ch)| {
            if ch.is_uppercase() && i > 0 {
                vec!['-', ch.to_ascii_lowercase()]
            } else {
                vec![ch.to_ascii_lowercase()]
            }
        })
        .collect::<String>();
    let gcfg = GaussianConfig {
        ridge: a.ridge,
        shrinkage: a.shrinkage,
    };
    let mut extra = serde_json::Map::new();
    let (estimate, n) = match est {
        Estimator::GaussianEntropy => {
            gaussian_dims(&[("x", &x)])?;
            let n = x.rows_cols().0;
            extra.insert("dim_x".into(), json!(x.rows_cols().1));
            (
                gaussian_entropy(&tensor(&x)?, &gcfg)?.to_scalar::<f64>()?,
                n,
            )
        }
        Estimator::GaussianMi | Estimator::Club | Estimator::ClubSample => {
            let y = load(need(&a.y, "y", est)?, "y")?;
            let n = same_rows(&[("x", &x), ("y", &y)])?;
            if est == Estimator::GaussianMi {
                gaussian_dims(&[("x", &x), ("y", &y)])?;
            }
            extra.insert("dim_x".into(), json!(x.rows_cols().1));
            extra.insert("dim_y".into(), json!(y.rows_cols().1));
            let (xt, yt) = (tensor(&x)?, tensor(&y)?);
            let v = if est == Estimator::GaussianMi {
                gaussian_mi(&xt, &yt, &gcfg)?.to_scalar::<f64>()?
            } else {
                let mut rng = SeededRng::new(a.seed);
                let cfg = ClubConfig::new(x.rows_cols().1, y.rows_cols().1);
                let mut club =
                    Club::with_dtype(cfg, &mut rng, &Device::Cpu, candle_core::DType::F64)?;
                let mut last = f64::NAN;
                for _ in 0..a.steps {
                    last = club.q_update(&xt, &yt)?;
                }
                extra.insert("q_steps".into(), json!(a.steps));
                extra.insert("q_final_loss".into(), json!(last));
                let t = if est == Estimator::Club {
                    club.club(&xt, &yt)?
                } else {
                    club.club_sample(&xt, &yt, &mut rng)?
                };
                t.to_scalar::<f64>()?
            };
            (v, n)
        }
        Estimator::Nmi | Estimator::Mi | Estimator::Cmi | Estimator::Ncmi => {
            let y = load(need(&a.y, "y", est)?, "y")?;
            let xs = symbols(&x, a.bins, "x")?;
            let ys = symbols(&y, a.bins, "y")?;
            let three = matches!(est, Estimator::Cmi | Estimator::Ncmi);
            let z = if three {
                Some(load(need(&a.z, "z", est)?, "z")?)
            } else {
                None
            };
            let n = match &z {
                Some(z) => same_rows(&[("x", &x), ("y", &y), ("z", z)])?,
                None => same_rows(&[("x", &x), ("y", &y)])?,
            };
            if !(x.integer && y.integer) {
                extra.insert("bins".into(), json!(a.bins));
            }
            let v = match est {
                Estimator::Mi => discrete::mutual_information(&xs, &ys)?,
                Estimator::Nmi => {
                    let norm = match a.normalization.as_str() {
                        "geometric" => Normalization::Geometric,
                        "arithmetic" => Normalization::Arithmetic,
                        other => bail!(
                            "unknown --normalization {other:?}; valid choices: geometric, arithmetic"
                        ),
                    };
                    extra.insert("normalization".into(), json!(a.normalization));
                    discrete::normalized_mutual_information(&xs, &ys, norm)?
                }
                _ => {
                    let zs = symbols(z.as_ref().expect("loaded above"), a.bins, "z")?;
                    if est == Estimator::Cmi {
                        discrete::conditional_mutual_information(&xs, &ys, &zs)?
                    } else {
                        discrete::ncmi(&xs, &ys, &zs)?
                    }
                }
            };
            (v, n)
        }
    };
    if !estimate.is_finite() {
        bail!("estimator {name} produced a non-finite value ({estimate})");
    }
    let mut out = serde_json::Map::new();
    out.insert("estimator".into(), json!(name));
    out.insert("estimate".into(), json!(estimate));
    out.insert("n".into(), json!(n));
    out.insert(
        "unit".into(),
        json!(if matches!(est, Estimator::Nmi | Estimator::Ncmi) {
            "ratio"
        } else {
            "nats"
        }),
    );
    out.extend(extra);
    Ok(serde_json::Value::Object(out))
}
