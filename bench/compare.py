#!/usr/bin/env python3
"""Side-by-side table of the modbal criterion benches and the NumPy timings.

Reads criterion's `<criterion dir>/<estimator>/N{n}_D{d}/new/estimates.json` (median point
estimate, in ns) and, if given, the JSON lines `{"estimator", "n", "d", "ms"}` printed by
`bench/numpy_estimators.py`, and prints

    estimator | N | D | modbal ms | numpy ms | ratio (modbal/numpy)

followed by the number of rows with ratio <= 1. It reports, it does not gate: the exit status is
0 whatever the ratios (and 1 only if no criterion results are found at all).

Usage: python3 bench/compare.py [--criterion target/criterion] [--numpy numpy.jsonl]
                                [--markdown]
"""

import argparse
import json
import os
import re
import sys

# Estimator order of the bench (groups not listed here come after, alphabetically).
ORDER = [
    "gaussian-mi",
    "gaussian-entropy",
    "club",
    "club-sample",
    "mi",
    "nmi",
    "cmi",
    "ncmi",
    "kl",
    "js",
    "softmax-bound",
    "soft-mi",
]
ID = re.compile(r"^N(\d+)_D(\d+)$")


def read_criterion(root):
    """{(estimator, n, d): ms} from criterion's output directory."""
    out = {}
    if not os.path.isdir(root):
        return out
    for group in sorted(os.listdir(root)):
        gdir = os.path.join(root, group)
        if not os.path.isdir(gdir) or group == "report":
            continue
        for bench in os.listdir(gdir):
            m = ID.match(bench)
            path = os.path.join(gdir, bench, "new", "estimates.json")
            if not m or not os.path.isfile(path):
                continue
            with open(path) as fh:
                est = json.load(fh)
            out[(group, int(m.group(1)), int(m.group(2)))] = est["median"]["point_estimate"] / 1e6
    return out


def read_numpy(path):
    out = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            out[(r["estimator"], int(r["n"]), int(r["d"]))] = float(r["ms"])
    return out


def fmt_ms(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.3f}"
    return f"{v:.4f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--criterion", default="target/criterion", help="criterion output directory")
    ap.add_argument("--numpy", help="JSON lines from bench/numpy_estimators.py")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()

    ours = read_criterion(args.criterion)
    if not ours:
        print(f"compare.py: no criterion results under {args.criterion}", file=sys.stderr)
        return 1
    theirs = {}
    if args.numpy:
        if os.path.isfile(args.numpy):
            theirs = read_numpy(args.numpy)
        else:
            print(f"compare.py: {args.numpy} not found; modbal timings only", file=sys.stderr)

    rank = {e: i for i, e in enumerate(ORDER)}
    keys = sorted(ours, key=lambda k: (rank.get(k[0], len(ORDER)), k[0], k[1], k[2]))
    header = ["estimator", "N", "D", "modbal ms"]
    if theirs:
        header += ["numpy ms", "ratio (modbal/numpy)"]
    rows = []
    faster = compared = 0
    for k in keys:
        row = [k[0], str(k[1]), str(k[2]), fmt_ms(ours[k])]
        if theirs:
            t = theirs.get(k)
            if t is None:
                row += ["-", "-"]
            else:
                ratio = ours[k] / t
                compared += 1
                faster += ratio <= 1.0
                row += [fmt_ms(t), f"{ratio:.3f}"]
        rows.append(row)

    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
        print(line)
        print("-" * len(line))
        for r in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    if theirs:
        print(f"rows with ratio <= 1 (modbal at least as fast as NumPy): {faster} / {compared}")
    else:
        print(f"{len(rows)} modbal timings (no NumPy timings to compare with)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
