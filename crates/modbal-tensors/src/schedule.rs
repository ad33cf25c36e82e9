//! Learning-rate schedules, evaluated per epoch (closed forms of PyTorch's `StepLR`,
//! `MultiStepLR`, `CosineAnnealingLR`), with an optional linear warm-up that multiplies the
//! schedule by `start + (1 − start)·e/warmup` for epochs `e < warmup` (`LinearLR`).

use serde::{Deserialize, Serialize};

/// The decay part of a schedule (`kind = "step"` etc. in TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    Constant,
    /// `lr·γ^⌊e/step_size⌋` (OGM-GE: step 70, γ 0.1). `gamma` defaults to 0.1.
    Step {
        step_size: usize,
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// `lr·γ^(number of milestones ≤ e)`. `gamma` defaults to 0.1.
    MultiStep {
        milestones: Vec<usize>,
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// `η_min + (lr − η_min)(1 + cos(π·e/t_max))/2`. `eta_min` defaults to 0.
    Cosine {
        t_max: usize,
        #[serde(default)]
        eta_min: f64,
    },
}

fn default_gamma() -> f64 {
    0.1
}

/// A schedule with warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub schedule: LrSchedule,
    pub warmup_epochs: usize,
    pub warmup_start_factor: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            schedule: LrSchedule::Constant,
            warmup_epochs: 0,
            warmup_start_factor: 0.1,
        }
    }
}

impl ScheduleConfig {
    pub fn validate(&self) -> Result<(), String> {
        match &self.schedule {
            LrSchedule::Step { step_size, .. } if *step_size == 0 => {
                Err("schedule: step_size must be > 0".into())
            }
            LrSchedule::Cosine { t_max, .. } if *t_max == 0 => {
                Err("schedule: t_max must be > 0".into())
            }
            _ if !(0.0..=1.0).contains(&self.warmup_start_factor) => {
                Err("schedule: warmup_start_factor must be in [0, 1]".into())
            }
            _ => Ok(()),
        }
    }

    /// Learning rate for (0-based) `epoch` given the base rate.
    pub fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let e = epoch as f64;
        let lr = match &self.schedule {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(&1)) as i32)
            }
            LrSchedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                let t = (e / *t_max as f64).min(1.0);
                eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        };
        if epoch < self.warmup_epochs {
            let s = self.warmup_start_factor;
            lr * (s + (1.0 - s) * e / self.warmup_epochs as f64)
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        let s = ScheduleConfig {
            schedule: LrSchedule::Step {
                step_size: 70,
                gamma: 0.1,
            },
            ..Default::default()
        };
        assert_eq!(s.lr_at(1e-3, 69), 1e-3);
        assert!((s.lr_at(1e-3, 70) - 1e-4).abs() < 1e-15);
        let m = ScheduleConfig {
            schedule: LrSchedule::MultiStep {
                milestones: vec![2, 5],
                gamma: 0.5,
            },
            ..Default::default()
        };
        assert_eq!(m.lr_at(1.0, 1), 1.0);
        assert_eq!(m.lr_at(1.0, 2), 0.5);
        assert_eq!(m.lr_at(1.0, 5), 0.25);
        let c = ScheduleConfig {
            schedule: LrSchedule::Cosine {
                t_max: 10,
                eta_min: 0.0,
            },
            warmup_epochs: 2,
            warmup_start_factor: 0.5,
        };
        // warm-up: epoch 0 → 0.5·cos-part(0)=0.5, epoch 1 → 0.75·(1+cos(π/10))/2
        assert!((c.lr_at(1.0, 0) - 0.5).abs() < 1e-12);
        let e1 = 0.75 * (1.0 + (std::f64::consts::PI / 10.0).cos()) / 2.0;
        assert!((c.lr_at(1.0, 1) - e1).abs() < 1e-12);
        assert!((c.lr_at(1.0, 5) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(1.0, 10).abs() < 1e-12);
    }
}
