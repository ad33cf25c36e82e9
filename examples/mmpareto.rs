//! MMPareto against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example mmpareto -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example mmpareto -- synth-vec gamma=1.0
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `mmpareto` (see `docs/methods/mmpareto.md`).
//! Prints, per epoch, the mean cosine, k0 and the conflict count per encoder, then the test accuracies (fusion and each
//! modality) of concat and MMPareto. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/mmpareto.md`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    modbal::example_support::compare_with_concat("mmpareto", &["cos", "k_mm", "conflicts"])
}
