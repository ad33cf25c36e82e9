//! Global-norm gradient clipping as an [`Optimizer`] wrapper.

use candle_core::backprop::GradStore;
use modbal_tensors::{global_grad_norm, Optimizer};

/// Optimizer wrapper applying global-norm gradient clipping before the inner step
/// (`torch.nn.utils.clip_grad_norm_` semantics).
pub(crate) struct Clipped {
    pub(crate) inner: Box<dyn Optimizer>,
    pub(crate) max_norm: Option<f64>,
}

impl Optimizer for Clipped {
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let Some(max_norm) = self.max_norm else {
            return self.inner.step(grads);
        };
        let norm = global_grad_norm(grads, self.inner.vars())?;
        let coef = max_norm / (norm + 1e-6);
        if coef >= 1.0 || !norm.is_finite() {
            return self.inner.step(grads);
        }
        let mut scaled = GradStore::default();
        for (_, v) in self.inner.vars() {
            if let Some(g) = grads.get(v.as_tensor()) {
                scaled.insert(v.as_tensor(), (g * coef)?);
            }
        }
        self.inner.step(&scaled)
    }
    crate::clip::delegate_to_inner!();
}

/// The [`Optimizer`] methods other than `step` of a wrapper with an `inner: Box<dyn Optimizer>`
/// field, forwarded to it (a wrapper changes the gradients, nothing else).
macro_rules! delegate_to_inner {
    () => {
        fn lr(&self) -> f64 {
            self.inner.lr()
        }
        fn set_lr(&mut self, lr: f64) {
            self.inner.set_lr(lr)
        }
        fn vars(&self) -> &[(String, candle_core::Var)] {
            self.inner.vars()
        }
        fn state(&self) -> modbal_tensors::OptimizerState {
            self.inner.state()
        }
        fn load_state(&mut self, s: &modbal_tensors::OptimizerState) -> candle_core::Result<()> {
            self.inner.load_state(s)
        }
    };
}
pub(crate) use delegate_to_inner;
