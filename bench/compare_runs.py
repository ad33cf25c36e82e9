#!/usr/bin/env python3
"""Compare two runs of the same configuration epoch by epoch (e.g. the CPU and the GPU run of
one method): every number of every `metrics.jsonl` line, matched by (epoch, split).

    python3 bench/compare_runs.py RUN_A RUN_B [--loss-rtol 1e-3] [--acc-atol 0.02]

Losses (and every other real-valued field) must agree to `--loss-rtol` relative (absolute below
1); accuracies and macro-F1 (fractions of samples) to `--acc-atol` absolute, since one sample
flipping its argmax moves them by 1/N. Prints the largest difference per field and exits 1 if a
field is outside its tolerance or the two runs do not have the same lines.
"""

import argparse
import json
import sys


def flatten(prefix, v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            flatten(f"{prefix}.{k}" if prefix else k, x, out)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        out[prefix] = float(v)


def load(run):
    rows = {}
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                key = (r["epoch"], r["split"])
                flat = {}
                flatten("", r, flat)
                rows[key] = flat
    return rows


def is_fraction(field):
    return "acc" in field or "macro_f1" in field


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--loss-rtol", type=float, default=1e-3)
    ap.add_argument("--acc-atol", type=float, default=0.02)
    a = ap.parse_args()
    ra, rb = load(a.a), load(a.b)
    if ra.keys() != rb.keys():
        print(f"different lines: only in A {sorted(ra.keys() - rb.keys())}, "
              f"only in B {sorted(rb.keys() - ra.keys())}")
        return 1
    worst = {}
    for key in sorted(ra):
        fa, fb = ra[key], rb[key]
        for field in sorted(fa.keys() | fb.keys()):
            if field == "epoch":
                continue
            x, y = fa.get(field), fb.get(field)
            if x is None or y is None:
                print(f"{key}: field {field} only in one run")
                return 1
            if is_fraction(field):
                d, tol = abs(x - y), a.acc_atol
            else:
                d, tol = abs(x - y) / max(1.0, abs(x)), a.loss_rtol
            if d != d:  # NaN on one side
                d = float("inf") if (x == x) != (y == y) else 0.0
            if field not in worst or d > worst[field][0]:
                worst[field] = (d, tol, key)
    bad = 0
    for field, (d, tol, key) in sorted(worst.items()):
        ok = d <= tol
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {field:<32} max diff {d:.3g} (tol {tol:g}) at epoch {key[0]} {key[1]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
