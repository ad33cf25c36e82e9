//! ARL against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example arl -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example arl -- synth-vec start_epoch=2 schedule_epochs=0 gamma=3.0 temperature=4.0
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `arl` (see `docs/methods/arl.md`).
//! Prints, per epoch, the coefficients w and the gradient scale per modality, then the test accuracies (fusion and each
//! modality) of concat and ARL. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/arl.md`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    modbal::example_support::compare_with_concat("arl", &["w", "scale", "gamma"])
}
