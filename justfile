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

# Criterion benches of every modbal-info estimator (N in {64, 512, 4096}, D in {16, 128, 512}),
# side by side with NumPy equivalents (bench/numpy_estimators.py) when python3 has numpy; both
# sides use 2 threads. Results and the plain commands: docs/benchmarks.md.
#
# Time every modbal-info estimator next to NumPy (modbal/NumPy ratio per row).
bench-estimators:
    #!/usr/bin/env bash
    set -euo pipefail
    export RAYON_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
    cargo bench -p modbal-info --bench estimators
    out="${CARGO_TARGET_DIR:-target}/criterion"
    if ! command -v python3 >/dev/null; then
        echo "python3 not found: no NumPy comparison (modbal timings are in criterion's output above and under $out)"
    elif python3 -c 'import numpy' 2>/dev/null; then
        echo "timing the NumPy equivalents (bench/numpy_estimators.py, numpy $(python3 -c 'import numpy; print(numpy.__version__)'))..."
        python3 bench/numpy_estimators.py > "$out/numpy-estimators.jsonl"
        python3 bench/numpy_estimators.py --check "$out/numeric-check.json" || echo "warning: modbal and NumPy disagree (see above)"
        python3 bench/compare.py --criterion "$out" --numpy "$out/numpy-estimators.jsonl"
    else
        echo "python3 cannot import numpy: no NumPy comparison, modbal timings only (pip install numpy to compare)"
        python3 bench/compare.py --criterion "$out"
    fi
