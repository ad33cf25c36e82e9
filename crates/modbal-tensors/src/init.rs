//! Parameter initialisers drawn from a [`SeededRng`].
//!
//! Fans follow PyTorch's `_calculate_fan_in_and_fan_out`: for a weight of shape
//! `[out, in, k...]`, `fan_in = in·Πk` and `fan_out = out·Πk`.
//!
//! | variant | distribution |
//! |---|---|
//! | `XavierNormal { gain }` | N(0, gain²·2/(fan_in+fan_out)) (Glorot & Bengio 2010) |
//! | `KaimingNormalFanOut` | N(0, 2/fan_out): He et al. 2015, ReLU gain, `mode="fan_out"` as torchvision ResNets |
//! | `KaimingNormalFanIn` | N(0, 2/fan_in) |
//! | `TorchDefault` | U(−1/√fan_in, 1/√fan_in): PyTorch's default for `nn.Linear`/`nn.Conv2d` weights and biases |
//! | `Uniform { lo, hi }`, `Normal { mean, std }`, `Const(c)` | as named |

use crate::rng::SeededRng;
use candle_core::{DType, Device, Result, Shape, Tensor};
use serde::{Deserialize, Serialize};

/// How to draw a parameter's initial value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    XavierNormal {
        gain: f64,
    },
    KaimingNormalFanOut,
    KaimingNormalFanIn,
    /// PyTorch's default: U(−b, b) with b = 1/√fan_in. `fan_in` is that of the layer's weight
    /// (pass it explicitly for biases).
    TorchDefault {
        fan_in: usize,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
    Const(f64),
}

/// `(fan_in, fan_out)` of a weight shape, PyTorch convention.
pub fn fans(dims: &[usize]) -> (usize, usize) {
    match dims.len() {
        0 => (1, 1),
        1 => (dims[0], dims[0]),
        _ => {
            let receptive: usize = dims[2..].iter().product();
            (dims[1] * receptive, dims[0] * receptive)
        }
    }
}

impl Init {
    /// Draw a tensor of `shape`.
    pub fn tensor<S: Into<Shape>>(
        &self,
        shape: S,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let (fan_in, fan_out) = fans(shape.dims());
        match *self {
            Init::XavierNormal { gain } => {
                let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
                rng.randn(shape, 0.0, std, dtype, device)
            }
            Init::KaimingNormalFanOut => {
                rng.randn(shape, 0.0, (2.0 / fan_out as f64).sqrt(), dtype, device)
            }
            Init::KaimingNormalFanIn => {
                rng.randn(shape, 0.0, (2.0 / fan_in as f64).sqrt(), dtype, device)
            }
            Init::TorchDefault { fan_in } => {
                let b = 1.0 / (fan_in.max(1) as f64).sqrt();
                rng.rand(shape, -b, b, dtype, device)
            }
            Init::Uniform { lo, hi } => rng.rand(shape, lo, hi, dtype, device),
            Init::Normal { mean, std } => rng.randn(shape, mean, std, dtype, device),
            Init::Const(c) => Tensor::full(c, shape, device)?.to_dtype(dtype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_of(t: &Tensor) -> f64 {
        let v: Vec<f64> = t
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    #[test]
    fn fans_match_pytorch_convention() {
        // torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(64, 3, 7, 7)) == (147, 3136)
        assert_eq!(fans(&[64, 3, 7, 7]), (147, 3136));
        assert_eq!(fans(&[10, 512]), (512, 10));
    }

    #[test]
    fn init_std_matches_closed_form() {
        let mut rng = SeededRng::new(0);
        let dev = Device::Cpu;
        // Kaiming fan-out for [128, 64, 3, 3]: std = sqrt(2 / (128*9)) = 0.041667
        let t = Init::KaimingNormalFanOut
            .tensor((128, 64, 3, 3), &mut rng, DType::F32, &dev)
            .unwrap();
        let s = std_of(&t);
        assert!((s - (2.0f64 / 1152.0).sqrt()).abs() < 0.002, "{s}");
        // Xavier normal for [300, 200]: std = sqrt(2/500) = 0.06325
        let t = Init::XavierNormal { gain: 1.0 }
            .tensor((300, 200), &mut rng, DType::F32, &dev)
            .unwrap();
        assert!((std_of(&t) - (2.0f64 / 500.0).sqrt()).abs() < 0.002);
        // U(-b, b): std = b/sqrt(3)
        let t = Init::TorchDefault { fan_in: 100 }
            .tensor((300, 100), &mut rng, DType::F32, &dev)
            .unwrap();
        assert!((std_of(&t) - 0.1 / 3f64.sqrt()).abs() < 0.002);
    }
}
