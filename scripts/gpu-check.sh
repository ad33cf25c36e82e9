#!/usr/bin/env bash
# The GPU check of issue 16 (`just gpu-check`), for a machine with a CUDA GPU, its driver, the
# CUDA libraries and PyTorch, but no Rust toolchain: it runs binaries built elsewhere with
# `just build-cuda-bins` (BIN, default gpu-bins/: `modbal` and the CUDA test binaries under
# tests/). Target: under 8 minutes on one GPU. Writes logs and tables under OUT (default
# gpu-check-out/) and prints the summary last.
#
#   scripts/gpu-check.sh [BIN] [DEVICE]      # DEVICE: cuda (default) or cuda:N
#
# 1. the CUDA test subset (every `per_device!` case and the generic-op tests, on the GPU);
# 2. every method, 2 epochs of synth-av on DEVICE and on the CPU (same seed), compared field by
#    field with bench/compare_runs.py (losses 1e-3 relative, accuracies 0.02 absolute);
# 3. `modbal bench step` on DEVICE beside PyTorch eager on the same GPU (bench/step_compare.py).
set -uo pipefail
BIN=${1:-gpu-bins}
DEV=${2:-cuda}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
modbal="$BIN/modbal"
[[ -x "$modbal" ]] || { echo "no $modbal: build it with \`just build-cuda-bins\` (docs/cuda.md)"; exit 2; }
status=0
summary=()
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  "$modbal" --version
} | tee "$OUT/machine.txt"

echo "== 1. CUDA tests"
for t in "$BIN"/tests/*; do
  [[ -x "$t" ]] || continue
  name=$(basename "$t")
  if timeout 120 "$t" --test-threads 2 >"$OUT/test-$name.log" 2>&1; then r=ok; else r=FAILED; status=1; fi
  skips=$(grep -c "skipping" "$OUT/test-$name.log" || true)
  summary+=("test $name: $r ($(grep -E '^test result' "$OUT/test-$name.log" | tail -1); $skips skipped-device lines)")
done

echo "== 2. every method on synth-av, $DEV vs cpu"
methods=$("$modbal" train --method '?' 2>&1 | sed -n 's/.*valid choices: //p' | tr -d ',')
for m in $methods; do
  for d in cpu "$DEV"; do
    timeout 120 "$modbal" train --method "$m" --epochs 2 --seed 0 --device "$d" --no-progress \
      --out "$OUT/runs" --name "$m-${d//:/}" >"$OUT/train-$m-${d//:/}.log" 2>&1 || {
      summary+=("train $m on $d: FAILED (see $OUT/train-$m-${d//:/}.log)"); status=1; continue 2; }
  done
  if python3 bench/compare_runs.py "$OUT/runs/$m-cpu" "$OUT/runs/$m-${DEV//:/}" >"$OUT/compare-$m.txt"; then
    summary+=("method $m: $DEV agrees with cpu")
  else
    summary+=("method $m: $DEV DIFFERS from cpu beyond tolerance ($OUT/compare-$m.txt)"); status=1
  fi
done

echo "== 3. bench step on $DEV beside PyTorch"
python3 bench/step_compare.py --modbal "$modbal" --device "$DEV" --threads 16 --rounds 3 \
  --workloads small-cnn,conv4-pair,resnet18-av,mlp-pair --json >"$OUT/bench.txt" 2>&1 || status=1

echo
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
sed -n '1,7p' "$OUT/bench.txt"
exit $status
