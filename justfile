# modbal recipes. Install just with `cargo install just` (or use the cargo commands inside).

default:
    @just --list

# Train the default (concat on the built-in synth-av benchmark) and print the results table.
train *ARGS:
    cargo run --release -- train {{ARGS}}

# The test suite (what CI runs, with the lints below).
test:
    cargo test --workspace --release

# Formatting and clippy, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI runs.
ci:
    bash .ci/run

# The imbalance signature: each modality alone vs its head slice inside concat training.
imbalance DATASET="synth-vec":
    cargo run --release --example imbalance -- {{DATASET}}

# The three baselines on synth-av with the same seed; results in runs/.
baselines SEED="0":
    cargo run --release -- train --method concat --seed {{SEED}} --no-progress
    cargo run --release -- train --method sum --seed {{SEED}} --no-progress
    cargo run --release -- train --method unimodal --modality audio --seed {{SEED}} --no-progress
    cargo run --release -- train --method unimodal --modality visual --seed {{SEED}} --no-progress
