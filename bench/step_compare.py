#!/usr/bin/env python3
"""Runs `modbal bench step` and `bench/torch_reference.py` side by side, interleaved
(modbal, PyTorch, modbal, PyTorch, ... per workload: A B A B), and prints the ratio table.

    python3 bench/step_compare.py --modbal target/release/modbal [--threads 2] [--rounds 2]
        [--steps N] [--epochs E] [--workloads small-cnn,conv4-pair,...] [--no-torch]
        [--python /path/to/venv/bin/python]

The ratio is modbal / PyTorch of the median ms per step (< 1: modbal faster); with several
rounds, each side's reported value is the median over the rounds' medians. Peak RSS: the
largest of the rounds. synth-av-epoch times whole epochs (train + validation) of the default
`modbal train`: its row is in ms per epoch, its count is `--epochs` (each side's default, 3
timed after 1 warm-up, when absent), not `--steps`. A side that prints a "skipped" object gets
"-" in the table. Each JSON line is also written to stdout's end with `--json`.
"""

import argparse
import json
import statistics
import subprocess
import sys

DEFAULT = ["small-cnn", "conv4-pair", "resnet18-av", "mlp-pair", "synth-av-epoch"]
EPOCH_WORKLOADS = {"synth-av-epoch"}


def run(cmd):
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as e:
        sys.exit(f"step_compare: cannot run {cmd[0]!r}: {e.strerror}")
    except subprocess.CalledProcessError as e:
        sys.exit(f"step_compare: {' '.join(cmd)} exited with {e.returncode}:\n{e.stderr.strip()}")
    lines = out.strip().splitlines()
    if not lines:
        sys.exit(f"step_compare: {' '.join(cmd)} printed nothing")
    return json.loads(lines[-1])


def usable(results):
    """The rounds' results if every one has timings (none "skipped"), else None."""
    if not results or any("skipped" in r for r in results):
        return None
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modbal", required=True, help="the modbal binary")
    ap.add_argument("--python", default="python3",
                    help="the Python that runs bench/torch_reference.py (one that imports torch, "
                         "e.g. a venv's bin/python; default python3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, help="timed steps of the step workloads")
    ap.add_argument("--epochs", type=int, help="timed epochs of synth-av-epoch")
    ap.add_argument("--workloads", default=",".join(DEFAULT))
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N, for both sides")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    here = __file__.rsplit("/", 1)[0]
    rows, lines = [], []
    for w in a.workloads.split(","):
        extra = ["--threads", str(a.threads), "--device", a.device]
        n = a.epochs if w in EPOCH_WORKLOADS else a.steps
        extra += ["--steps", str(n)] if n else []
        mb, pt = [], []
        for _ in range(a.rounds):
            mb.append(run([a.modbal, "bench", "step", "--workload", w] + extra))
            if not a.no_torch:
                pt.append(run([a.python, f"{here}/torch_reference.py", "--workload", w] + extra))
        lines += mb + pt
        m_ms = statistics.median(r["ms_per_step_median"] for r in mb)
        m_rss = max(r["peak_rss_mb"] or 0 for r in mb)
        if usable(pt):
            p_ms = statistics.median(r["ms_per_step_median"] for r in pt)
            p_rss = max(r["peak_rss_mb"] for r in pt)
            rows.append((w, m_ms, p_ms, m_ms / p_ms, m_rss, p_rss))
        else:
            rows.append((w, m_ms, None, None, m_rss, None))
    f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    print(f"{'workload':<16}{'modbal ms':>11}{'torch ms':>11}{'ratio':>8}{'modbal MB':>11}{'torch MB':>10}")
    for w, m, p, r, mr, pr in rows:
        print(f"{w:<16}{f(m):>11}{f(p):>11}{f(r, 3):>8}{f(mr):>11}{f(pr):>10}")
    print(f"(ms: median per step, median over {a.rounds} interleaved rounds; "
          f"{a.threads} threads, device {a.device}; ratio = modbal / PyTorch, below 1 means modbal is faster)")
    if any(w in EPOCH_WORKLOADS for w, *_ in rows):
        print("(synth-av-epoch: ms per epoch, train + validation of the default `modbal train`)")
    if a.json:
        for l in lines:
            print(json.dumps(l))


if __name__ == "__main__":
    main()
