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

# Loader throughput on CREMA-D-shaped data (257×188 spectrogram + 3 JPEG frames 224×224 per
# clip, training transform) against the time of one ResNet18 audio-visual training step at the
# same batch size; says whether the loader is the bottleneck. Source: examples/bench_loader.rs.
bench-loader *ARGS:
    cargo run --release --example bench_loader -- {{ARGS}}

# Seeds' table of one method on a real dataset: a sweep of METHOD × SEEDS under PROTOCOL, then its
# report (test accuracy mean ± std over seeds) next to the paper's number. PROTOCOL is a paper
# preset (`modbal presets`: udi/crema-d, cal/ave, arm/kinetics-sounds, …; the paper's optimizer,
# lr, schedule, batch, epochs, frames) or a bare dataset name (modbal's defaults). METHOD may
# differ from the preset's method: the protocol is kept, the method's own options are its
# defaults. ARGS go to `modbal sweep` (--jobs N, --set KEY=VALUE, --epochs N, --slurm ...).
# GPU-sized (days on 2 CPU cores), e.g.
#   just table-real udi/crema-d /data/crema-d-prepared udi 82.80     (UDI Table 1)
#   just table-real cal/ave /data/ave-prepared concat 66.15          (CAL Table 1)
# The numbers are the validation-selected models' test accuracy (summary.json `test`); the sweep
# folder is runs/table-<protocol>-<method>/ and the same command again resumes it.
# One method × seeds on a real dataset under a paper's protocol, beside the paper's number.
table-real PROTOCOL ROOT METHOD="concat" PAPER="-" SEEDS="0 1 2" *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    proto="{{PROTOCOL}}"
    if [[ "$proto" == */* ]]; then src=(--presets "$proto"); else src=(--datasets "$proto"); fi
    out="runs/table-${proto//\//-}-{{METHOD}}"
    seeds=$(echo {{SEEDS}} | tr ' ' ',')
    cargo run --release -- sweep "${src[@]}" --methods {{METHOD}} --seeds "$seeds" \
        --set "dataset.root=\"{{ROOT}}\"" --out "$out" {{ARGS}}
    cargo run --release -- report "$out"
    echo "paper ({{METHOD}} under $proto): {{PAPER}} %"

# Results tables: every method of modbal::Registry::builtin() (unimodal once per modality) ×
# seeds on each of DATASETS (default synth-av and the shift benchmark synth-shift), as one
# `modbal sweep` with JOBS parallel jobs into OUT/synth-e<EPOCHS>/, then `modbal report` of it
# (OUT/synth-e<EPOCHS>/report/: report.html, report.md, runs.csv, summary.csv): test fusion
# accuracy selected on validation (mean ± std over seeds), per-modality accuracy, macro F1,
# discrepancy ratio, wall time, and the curves. DOC, if given, gets a copy of report.md. Hours on
# 2 CPU cores. Finished runs are reused, interrupted ones resumed. Each parameter also reads the
# environment: EPOCHS=1 SEEDS=0 METHODS=concat,cal DOC=/tmp/t.md just table-synth
# (docs/results/synth-av.md keeps its own layout: `cargo run --release --example table_synth -- synth`.)
# Every method × seeds on the built-in benchmarks: one sweep, then its report.
table-synth EPOCHS=env_var_or_default("EPOCHS", "12") SEEDS=env_var_or_default("SEEDS", "0,1,2") METHODS=env_var_or_default("METHODS", "all") DATASETS=env_var_or_default("DATASETS", "synth-av synth-shift") OUT=env_var_or_default("OUT", "runs/tables") DOC=env_var_or_default("DOC", "") JOBS=env_var_or_default("JOBS", "1"):
    #!/usr/bin/env bash
    set -euo pipefail
    out="{{OUT}}/synth-e{{EPOCHS}}"
    datasets=$(echo {{DATASETS}} | tr ' ' ',')
    cargo run --release -- sweep --methods {{METHODS}} --seeds {{SEEDS}} --datasets "$datasets" \
        --epochs {{EPOCHS}} --jobs {{JOBS}} --out "$out"
    cargo run --release -- report "$out" --out "$out/report"
    if [ -n "{{DOC}}" ]; then mkdir -p "$(dirname "{{DOC}}")"; cp "$out/report/report.md" "{{DOC}}"; echo "wrote {{DOC}}"; fi

# A grid of runs with parallel jobs (flags: `modbal sweep --help`; docs/sweep.md), e.g.
#   just sweep --datasets synth-vec --methods concat,ogm-ge,cal --seeds 0,1 --jobs 2 --out runs/sw
sweep *ARGS:
    cargo run --release -- sweep {{ARGS}}

# The report of run directories or sweep folders (docs/report.md): report.html, report.md, CSVs.
report *ARGS:
    cargo run --release -- report {{ARGS}}

# Robustness table (CAL §4.3, Tables 2-3): METHODS × seeds, clean / salt-pepper / Gaussian
# noise at each ε, on the test split only (the clean runs' selected models re-evaluated) and on
# train+test (one run per setting) → docs/results/<dataset>-robust-qmf.md. Default SCALE=qmf: ε as
# QMF's code and CAL's tables (5, 10; rows concat, tmc, qmf, eau, cal); SCALE=modbal: modbal's own
# ε (SP 0.05,0.1,0.2, GAUSS 0.5,1.5,3; rows concat, cal) → docs/results/<dataset>-robust.md.
# Empty METHODS / SP / GAUSS take the scale's defaults. Conventions: docs/robustness.md.
# E.g. EPOCHS=1 SEEDS=0 SP=5 GAUSS=10 DOC=/tmp/r.md just table-robust
table-robust EPOCHS=env_var_or_default("EPOCHS", "12") SEEDS=env_var_or_default("SEEDS", "0,1,2") SCALE=env_var_or_default("SCALE", "qmf") METHODS=env_var_or_default("METHODS", "") SP=env_var_or_default("SP", "") GAUSS=env_var_or_default("GAUSS", "") PROTOCOLS=env_var_or_default("PROTOCOLS", "test,train+test") DATASET=env_var_or_default("DATASET", "synth-av") OUT=env_var_or_default("OUT", "runs/tables") DOC=env_var_or_default("DOC", ""):
    cargo run --release --example table_synth -- robust --epochs {{EPOCHS}} --seeds {{SEEDS}} --scale {{SCALE}} {{ if METHODS != "" { "--methods " + METHODS } else { "" } }} {{ if SP != "" { "--salt-pepper " + SP } else { "" } }} {{ if GAUSS != "" { "--gaussian " + GAUSS } else { "" } }} --protocols {{PROTOCOLS}} --dataset {{DATASET}} --out {{OUT}} {{ if DOC != "" { "--doc " + DOC } else { "" } }}

# Prepare a raw audio-visual dataset (crema-d, kinetics-sounds, ave, vggsound) for training:
# spectrogram .npy files, 1 fps frames, split lists, manifest.json. Layouts: datasets/<name>/README.md.
# Exit status 3 = finished, but some clips were skipped (listed in OUT/manifest.json).
prepare DATASET RAW OUT *ARGS:
    cargo run --release -- prepare {{DATASET}} --raw {{RAW}} --out {{OUT}} {{ARGS}}

# Training-step time of the reference workloads (small-cnn, conv4-pair, resnet18-av, mlp-pair)
# and the epoch time of the default `modbal train` (synth-av-epoch) for modbal and PyTorch eager,
# both at THREADS threads, run interleaved (A B A B), with the modbal/PyTorch ratio table.
# Results and method: docs/benchmarks.md. PYTHON runs the PyTorch side (a venv's python works).
# PyTorch is optional; the CPU-only wheel avoids several GB of CUDA libraries:
#   pip install torch --index-url https://download.pytorch.org/whl/cpu
bench-vs-torch THREADS="2" ROUNDS="3" PYTHON="python3":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bin modbal
    bin="${CARGO_TARGET_DIR:-target}/release/modbal"
    if {{PYTHON}} -c 'import torch' 2>/dev/null; then
        echo "PyTorch $({{PYTHON}} -c 'import torch; print(torch.__version__)'): timing both sides..."
        python3 bench/step_compare.py --modbal "$bin" --python {{PYTHON}} --threads {{THREADS}} --rounds {{ROUNDS}}
    else
        echo "{{PYTHON}} cannot import torch: modbal timings only (CPU wheel: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        python3 bench/step_compare.py --modbal "$bin" --threads {{THREADS}} --rounds 1 --no-torch
    fi

# nvcc, the NVVM backend, the CUDA headers and libcu++ (CCCL) come from PyPI's CUDA-13 wheels,
# pinned together, in a venv under VENV (not in the repository); CUDA_COMPUTE_CAP=90 (H100) unless
# set, since nvidia-smi cannot tell without a GPU. Separate target dir: the CPU build is untouched.
# Libraries only: linking a binary or test needs the real CUDA libraries (libcuda from the driver,
# cudart/cublas/curand/nvrtc). Details and what runs on a GPU: docs/cuda.md.
#   just build-cuda                      # modbal-kernels
#   just build-cuda "-p modbal"          # the whole workspace (the root forwards `cuda` to every crate)
#
# Build the libraries with --features cuda, without a CUDA install or a GPU.
build-cuda WHAT="-p modbal-kernels" VENV="/tmp/modbal-cuda-venv" TARGET="/tmp/target-cuda":
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{VENV}}/bin/python" ]; then python3 -m venv "{{VENV}}"; fi
    "{{VENV}}/bin/pip" install -q nvidia-cuda-nvcc==13.4.92 nvidia-nvvm==13.4.92 \
        nvidia-cuda-crt==13.4.92 nvidia-cuda-runtime==13.4.92 nvidia-cuda-cccl==13.3.5.0.6
    cu="$("{{VENV}}/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
    export PATH="$cu/bin:$PATH" CUDA_HOME="$cu" CUDA_PATH="$cu"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CARGO_TARGET_DIR="{{TARGET}}"
    nvcc --version | tail -2
    cargo build --release --lib {{WHAT}} --features cuda
    echo "built {{WHAT}} with --features cuda (compute capability $CUDA_COMPUTE_CAP) in {{TARGET}}"

# Binaries for a GPU machine without a Rust toolchain: `modbal` and the CUDA test binaries,
# built with --features cuda into OUT (default gpu-bins/, git-ignored), for `just gpu-check`
# there. Linking needs the CUDA libraries (a CUDA toolkit: CUDA_HOME with lib64/ and
# lib64/stubs/libcuda.so, the driver stub), unlike `just build-cuda`. docs/cuda.md.
build-cuda-bins OUT="gpu-bins" TARGET="/tmp/target-cuda":
    #!/usr/bin/env bash
    set -euo pipefail
    : "${CUDA_HOME:?set CUDA_HOME to a CUDA toolkit (nvcc, lib64/, lib64/stubs/libcuda.so)}"
    export PATH="$CUDA_HOME/bin:$PATH" CARGO_TARGET_DIR="{{TARGET}}"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    export RUSTFLAGS="${RUSTFLAGS:-} -L $CUDA_HOME/lib64 -L $CUDA_HOME/lib64/stubs"
    mkdir -p "{{OUT}}/tests"
    cargo build --release --bin modbal --features cuda
    cp "{{TARGET}}/release/modbal" "{{OUT}}/"
    # The crates with device cases: each test binary's path from cargo's JSON messages.
    cargo test --release --no-run --features cuda -p modbal-kernels -p modbal-tensors \
        --message-format=json \
      | python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]]' \
      | while read -r exe; do cp "$exe" "{{OUT}}/tests/"; done
    ls -l "{{OUT}}" "{{OUT}}/tests"

# On a GPU machine: the CUDA tests, every method on synth-av on the GPU against the CPU, and
# `bench step` beside PyTorch on the same GPU (scripts/gpu-check.sh; ≤ 8 min on one GPU).
gpu-check BIN="gpu-bins" DEVICE="cuda":
    bash scripts/gpu-check.sh {{BIN}} {{DEVICE}}

# The README screenshot of `modbal report`: report the run folders of RUNS whose names match one
# of PATTERNS (globs; copied without checkpoints into a temporary folder first, RUNS is only
# read), screenshot the page with headless Chromium at SIZE into OUT (docs/report.md).
#   just report-screenshot runs/tables/synth-e12 "synth-av-concat-s* synth-av-ogm-ge-s* synth-av-cal-s* synth-av-unimodal-audio-s*"
report-screenshot RUNS="runs/tables/synth-e12" PATTERNS="*" OUT="docs/img/report.png" SIZE="1280,1040":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bin modbal
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/runs"
    cd "{{RUNS}}"
    for d in {{PATTERNS}}; do
        [ -f "$d/metrics.jsonl" ] || continue
        mkdir -p "$work/runs/$d"
        for f in config.toml metrics.jsonl summary.json timing.jsonl meta.json; do
            if [ -f "$d/$f" ]; then cp "$d/$f" "$work/runs/$d/"; fi
        done
    done
    cd - > /dev/null
    bin="$PWD/target/release/modbal"
    (cd "$work" && "$bin" report runs --out report --title "modbal report: $(basename "{{RUNS}}")")
    mkdir -p "$(dirname "{{OUT}}")"
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$work/profile" --window-size={{SIZE}} \
        --screenshot="$PWD/{{OUT}}" "file://$work/report/report.html" 2> /dev/null
    ls -l "{{OUT}}"

# Check a run's TensorBoard event files with TensorBoard's own reader (EventAccumulator):
# scalars against metrics.jsonl, the config text, one value per step after a resume.
# Needs `pip install tensorboard`. Example: just check-tensorboard runs/synth-av-concat-s0
check-tensorboard RUN:
    #!/usr/bin/env bash
    set -euo pipefail
    py="${MODBAL_PYTHON:-python3}"
    if ! "$py" -c 'import tensorboard' 2>/dev/null; then
        echo "python package tensorboard not found; install: pip install tensorboard" >&2
        exit 1
    fi
    "$py" scripts/check_tensorboard.py "{{RUN}}"
