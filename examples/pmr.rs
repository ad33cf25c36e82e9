//! PMR against plain concat training, same seed and settings.
//!
//! ```text
//! cargo run --release --example pmr -- synth-vec        # a few seconds on 2 cores
//! cargo run --release --example pmr -- synth-vec alpha=1.0 momentum=0.5
//! ```
//!
//! Extra arguments `key=value` are `[method]` options of `pmr` (see `docs/methods/pmr.md`).
//! Prints, per epoch, ρ, which modality got the prototype CE and the prototype spread, then the test accuracies (fusion and each
//! modality) of concat and PMR. Measured numbers on `synth-vec` (seed 0, defaults, 12
//! epochs) are in `docs/methods/pmr.md`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    modbal::example_support::compare_with_concat("pmr", &["rho", "pce", "proto.spread"])
}
