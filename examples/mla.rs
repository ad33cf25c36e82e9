//! MLA against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example mla -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example mla -- synth-vec fusion=average projection=false
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `mla` (see `docs/methods/mla.md`).
//! Prints, per epoch, the projection residual, the gradient ratio and the fusion weights, then the test accuracies (fusion and each
//! modality) of concat and MLA. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/mla.md`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    modbal::example_support::compare_with_concat(
        "mla",
        &["projection.residual", "projection.grad_ratio", "val_lambda"],
    )
}
