#!/usr/bin/env python3
"""NumPy (float64) equivalents of the modbal-info estimators, timed with `timeit`.

Counterpart of `crates/modbal-info/benches/estimators.rs`: the same estimators, shapes and
semantics (see that file for what N and D mean per estimator), the same input validation as
modbal (finite inputs, probability rows, label ranges), and the same conventions:

* gaussian-mi / gaussian-entropy: `np.cov` (unbiased) regularised like modbal's default
  `GaussianConfig` (ridge 1e-6, shrinkage 0): `cov + 1e-6 * diag(max(var_i, tau))` with
  `tau = max(1e-8 * mean(var), 1e-12)`; for MI the ridge is applied to the joint covariance of
  `[x, y]` and the x / y covariances are its diagonal blocks; log-determinants by
  `np.linalg.slogdet` (an error unless the sign is +1, as modbal errors unless Cholesky succeeds);
* club / club-sample: a NumPy forward of q (two `Linear(D -> 7) -> ReLU -> Linear(7 -> D)`
  networks, `tanh` on logvar, hidden 15 as modbal's default) and the CLUB / CLUBSample formulas
  (CLUB in its O(N·D) closed form, as modbal); club-sample draws its permutation inside the call;
* mi / nmi / cmi / ncmi: plug-in estimators from `np.bincount` counts of joint symbols (falling
  back to `np.unique` when the joint alphabet exceeds max(4N, 4096), the same rule as modbal);
  scikit-learn's conventions for the degenerate cases, as modbal;
* kl / js: probability rows, floored at 1e-12 before the logs, mean over rows;
* softmax-bound: `mean(log_softmax(z)[i, y_i]) + log C` by a max-shifted log-sum-exp;
* soft-mi: the soft joint `J = pᵀ onehot(y) / N` and `Σ J log((J + ε) / ((P(a) + ε)(P(b) + ε)))`
  with ε = 1e-12, clamped at 0.

Usage:
  python3 bench/numpy_estimators.py            # timings, one JSON line per (estimator, N, D)
  python3 bench/numpy_estimators.py --check target/criterion/numeric-check.json
                                               # recompute modbal's check cases, print the diffs
Options: --only EST[,EST...] to time a subset; --quick for fewer repeats.

Threads: BLAS is pinned to 2 threads (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS,
unless already set), the count the Rust benches get from RAYON_NUM_THREADS=2.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import timeit  # noqa: E402

import numpy as np  # noqa: E402

NS = (64, 512, 4096)
DS = (16, 128, 512)
HIDDEN = 15  # modbal's club::DEFAULT_HIDDEN: each network has 15 // 2 = 7 hidden units
RIDGE = 1e-6  # modbal's GaussianConfig::default()
PROB_FLOOR = 1e-12  # modbal's divergence::PROB_FLOOR
SOFT_EPS = 1e-12  # modbal's discrete::SOFT_EPS
ROW_SUM_TOL = 1e-4


# ----------------------------------------------------------------------------------------------
# validation (what modbal checks before estimating)
# ----------------------------------------------------------------------------------------------


def _check_finite(a, what):
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite values")


def _check_probs(p, what):
    if p.ndim != 2:
        raise ValueError(f"{what} must be [N, C]")
    _check_finite(p, what)
    if p.min() < 0.0:
        raise ValueError(f"{what} has negative probabilities")
    if (np.abs(p.sum(1) - 1.0) > ROW_SUM_TOL).any():
        raise ValueError(f"{what}: rows must sum to 1")


# ----------------------------------------------------------------------------------------------
# Gaussian
# ----------------------------------------------------------------------------------------------


def _regularised_cov(z):
    cov = np.cov(z, rowvar=False)
    idx = np.arange(cov.shape[0])
    var = cov[idx, idx]  # a copy (fancy indexing)
    tau = max(1e-8 * var.mean(), 1e-12)
    cov[idx, idx] += RIDGE * np.maximum(var, tau)
    return cov


def _logdet(a):
    sign, ld = np.linalg.slogdet(a)
    if sign <= 0:
        raise ValueError("covariance is not positive definite")
    return ld


def gaussian_entropy(x):
    _check_finite(x, "x")
    d = x.shape[1]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + _logdet(_regularised_cov(x)))


def gaussian_mi(x, y):
    _check_finite(x, "x")
    _check_finite(y, "y")
    dx = x.shape[1]
    cz = _regularised_cov(np.concatenate([x, y], axis=1))
    return 0.5 * (_logdet(cz[:dx, :dx]) + _logdet(cz[dx:, dx:]) - _logdet(cz))


# ----------------------------------------------------------------------------------------------
# CLUB
# ----------------------------------------------------------------------------------------------


def club_params(d, rng):
    """Random q of modbal's shape (PyTorch-default uniform init), as a dict of arrays."""
    h = HIDDEN // 2
    p = {}
    for net in ("mu", "logvar"):
        for layer, (fi, fo) in (("fc1", (d, h)), ("fc2", (h, d))):
            bound = 1.0 / math.sqrt(fi)
            p[f"club.{net}.{layer}.weight"] = rng.uniform(-bound, bound, (fo, fi))
            p[f"club.{net}.{layer}.bias"] = rng.uniform(-bound, bound, fo)
    return p


def _mlp(params, net, x):
    w1, b1 = params[f"club.{net}.fc1.weight"], params[f"club.{net}.fc1.bias"]
    w2, b2 = params[f"club.{net}.fc2.weight"], params[f"club.{net}.fc2.bias"]
    return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2


def _club_check(x, y):
    if x.ndim != 2 or y.shape != x.shape or x.shape[0] < 2:
        raise ValueError("x and y must be [N, D] with N >= 2")
    _check_finite(x, "x")
    _check_finite(y, "y")


def club(params, x, y):
    _club_check(x, y)
    mu = _mlp(params, "mu", x)
    w = 0.5 * np.exp(-np.tanh(_mlp(params, "logvar", x)))
    y_mean = y.mean(0)
    y_var = ((y - y_mean) ** 2).mean(0)
    # (1/N) sum_j (y_jd - mu_id)^2 = var_d(y) + (ybar_d - mu_id)^2
    negative = (mu - y_mean) ** 2 + y_var
    positive = (mu - y) ** 2
    return ((negative - positive) * w).sum(1).mean()


def club_sample(params, x, y, rng=None, perm=None):
    _club_check(x, y)
    if perm is None:
        perm = rng.permutation(x.shape[0])
    mu = _mlp(params, "mu", x)
    w = 0.5 * np.exp(-np.tanh(_mlp(params, "logvar", x)))
    return (((mu - y[perm]) ** 2 - (mu - y) ** 2) * w).sum(1).mean()


# ----------------------------------------------------------------------------------------------
# plug-in estimators on labels
# ----------------------------------------------------------------------------------------------


def _symbols(x):
    """Labels as int64 symbols 0..k (relabelled by np.unique when the alphabet is huge)."""
    n = len(x)
    if n == 0:
        raise ValueError("empty input")
    m = int(x.max())
    if m < max(4 * n, 4096):
        return x.astype(np.int64), m + 1
    u, inv = np.unique(x, return_inverse=True)
    return inv.astype(np.int64), len(u)


def _cell_counts(keys, size):
    """Per sample: the number of samples in its cell (`keys` in 0..size)."""
    if size <= max(4 * len(keys), 4096):
        return np.bincount(keys, minlength=size)[keys]
    _, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
    return cnt[inv]


def _pair(x, y):
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    (xs, kx), (ys, ky) = _symbols(x), _symbols(y)
    nx = np.bincount(xs, minlength=kx)
    ny = np.bincount(ys, minlength=ky)
    nxy = _cell_counts(xs * ky + ys, kx * ky)
    return len(x), xs, ys, nx, ny, nxy


def _mi_from(n, xs, ys, nx, ny, nxy):
    # (1/N) sum_i log(N n_xy / (n_x n_y)) = sum_cells (c/N) log(c N / (n_x n_y))
    return max(0.0, np.log(nxy * float(n) / (nx[xs] * ny[ys].astype(np.float64))).mean())


def _entropy_of_counts(c, n):
    c = c[c > 0] / n
    return float(-(c * np.log(c)).sum())


def mutual_information(x, y):
    return _mi_from(*_pair(x, y))


def normalized_mutual_information(x, y):
    """Geometric normalisation (ARM eq 2), scikit-learn's degenerate-case conventions."""
    n, xs, ys, nx, ny, nxy = _pair(x, y)
    if np.count_nonzero(nx) == 1 and np.count_nonzero(ny) == 1:
        return 1.0
    mi = _mi_from(n, xs, ys, nx, ny, nxy)
    if mi == 0.0:
        return 0.0
    d = math.sqrt(_entropy_of_counts(nx, n) * _entropy_of_counts(ny, n))
    return min(max(mi / d, 0.0), 1.0) if d > 0 else 0.0


def _triple(x, y, z):
    if not len(x) == len(y) == len(z):
        raise ValueError("x, y and z must have the same length")
    (xs, kx), (ys, ky), (zs, kz) = _symbols(x), _symbols(y), _symbols(z)
    n_z = np.bincount(zs, minlength=kz)[zs]
    n_xz = _cell_counts(xs * kz + zs, kx * kz)
    n_yz = _cell_counts(ys * kz + zs, ky * kz)
    n_xyz = _cell_counts((xs * ky + ys) * kz + zs, kx * ky * kz)
    return n_z, n_xz, n_yz, n_xyz


def _cmi_from(n_z, n_xz, n_yz, n_xyz):
    return max(0.0, np.log(n_xyz * n_z.astype(np.float64) / (n_xz * n_yz.astype(np.float64))).mean())


def conditional_mutual_information(x, y, z):
    return _cmi_from(*_triple(x, y, z))


def ncmi(x, y, z):
    n_z, n_xz, n_yz, n_xyz = _triple(x, y, z)
    cmi = _cmi_from(n_z, n_xz, n_yz, n_xyz)
    if cmi == 0.0:
        return 0.0
    nzf = n_z.astype(np.float64)
    hxz = max(0.0, np.log(nzf / n_xz).mean())  # H(X|Z)
    hyz = max(0.0, np.log(nzf / n_yz).mean())  # H(Y|Z)
    d = math.sqrt(hxz * hyz)
    return min(max(cmi / d, 0.0), 1.0) if d > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# divergences, softmax bound, soft MI
# ----------------------------------------------------------------------------------------------


def _check_pq(p, q):
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError("p and q must be [N, C] of equal shapes")
    _check_probs(p, "p")
    _check_probs(q, "q")


def kl_divergence(p, q):
    _check_pq(p, q)
    lp = np.log(np.clip(p, PROB_FLOOR, 1.0))
    lq = np.log(np.clip(q, PROB_FLOOR, 1.0))
    return (p * (lp - lq)).sum(1).mean()


def js_divergence(p, q):
    _check_pq(p, q)
    lp = np.log(np.clip(p, PROB_FLOOR, 1.0))
    lq = np.log(np.clip(q, PROB_FLOOR, 1.0))
    lm = np.log(np.clip(0.5 * (p + q), PROB_FLOOR, 1.0))
    return (0.5 * ((p * (lp - lm)).sum(1) + (q * (lq - lm)).sum(1))).mean()


def softmax_mi_lower_bound(logits, labels):
    n, c = logits.shape
    if labels.shape != (n,):
        raise ValueError("labels must be [N]")
    _check_finite(logits, "logits")
    if labels.max() >= c:
        raise ValueError("label out of range")
    z = logits - logits.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return (z[np.arange(n), labels] - lse).mean() + math.log(c)


def soft_mutual_information_labels(p, labels):
    _check_probs(p, "p")
    n = p.shape[0]
    if len(labels) != n:
        raise ValueError("p and labels must have the same N")
    _, ids = np.unique(labels, return_inverse=True)  # compact the alphabet, as modbal
    onehot = np.zeros((n, int(ids.max()) + 1))
    onehot[np.arange(n), ids] = 1.0
    j = p.T @ onehot / n
    la = np.log(j.sum(1, keepdims=True) + SOFT_EPS)
    lb = np.log(j.sum(0, keepdims=True) + SOFT_EPS)
    return max(0.0, (j * (np.log(j + SOFT_EPS) - la - lb)).sum())


# ----------------------------------------------------------------------------------------------
# inputs, timing, check
# ----------------------------------------------------------------------------------------------


def _softmax_rows(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _noisy_copy(rng, src, d, keep):
    out = src.copy()
    redraw = rng.random(len(src)) >= keep
    out[redraw] = rng.integers(0, d, int(redraw.sum()), dtype=np.uint32)
    return out


def inputs(n, d):
    """Same distributions as the Rust bench (not the same draws: the RNGs differ)."""
    rng = np.random.default_rng((n << 32) ^ d)
    x = rng.standard_normal((n, d))
    y = 0.6 * x + 0.8 * rng.standard_normal((n, d))
    lx = rng.integers(0, d, n, dtype=np.uint32)
    ly = _noisy_copy(rng, lx, d, 0.5)
    lz = _noisy_copy(rng, lx, d, 0.3)
    return {
        "x": x,
        "y": y,
        "lx": lx,
        "ly": ly,
        "lz": lz,
        "p": _softmax_rows(rng.standard_normal((n, d))),
        "q": _softmax_rows(rng.standard_normal((n, d))),
        "logits": 2.0 * rng.standard_normal((n, d)),
        "labels": ly.astype(np.int64),
        "club": club_params(d, np.random.default_rng(1000 + d)),
        "rng": np.random.default_rng(7),
    }


def calls(v):
    """estimator name -> zero-argument callable on the inputs `v`."""
    return {
        "gaussian-mi": lambda: gaussian_mi(v["x"], v["y"]),
        "gaussian-entropy": lambda: gaussian_entropy(v["x"]),
        "club": lambda: club(v["club"], v["x"], v["y"]),
        "club-sample": lambda: club_sample(v["club"], v["x"], v["y"], rng=v["rng"]),
        "mi": lambda: mutual_information(v["lx"], v["ly"]),
        "nmi": lambda: normalized_mutual_information(v["lx"], v["ly"]),
        "cmi": lambda: conditional_mutual_information(v["lx"], v["ly"], v["lz"]),
        "ncmi": lambda: ncmi(v["lx"], v["ly"], v["lz"]),
        "kl": lambda: kl_divergence(v["p"], v["q"]),
        "js": lambda: js_divergence(v["p"], v["q"]),
        "softmax-bound": lambda: softmax_mi_lower_bound(v["logits"], v["labels"]),
        "soft-mi": lambda: soft_mutual_information_labels(v["p"], v["ly"]),
    }


ESTIMATORS = list(calls({}).keys())


def median_ms(f, repeats, min_time):
    """Median over `repeats` of the mean time of `number` calls, `number` chosen so that one
    repeat takes at least `min_time` seconds (timeit's autorange rule)."""
    f()  # warm-up
    t = timeit.Timer(f)
    number = 1
    while True:
        if t.timeit(number) >= min_time:
            break
        number *= 2 if number < 10 else 5
    return statistics.median(t.repeat(repeats, number)) / number * 1e3


def run_timings(only, quick):
    repeats, min_time = (3, 0.02) if quick else (7, 0.05)
    for n in NS:
        for d in DS:
            v = inputs(n, d)
            for name, f in calls(v).items():
                if only and name not in only:
                    continue
                ms = median_ms(f, repeats, min_time)
                print(json.dumps({"estimator": name, "n": n, "d": d, "ms": ms}), flush=True)


def run_check(path):
    """Recompute modbal's check cases (inputs and results written by the Rust bench binary)."""
    with open(path) as fh:
        cases = json.load(fh)
    worst = 0.0
    print(f"{'estimator':<17} {'N':>5} {'D':>4} {'modbal':>22} {'numpy':>22} {'rel diff':>9}")
    for c in cases:
        n, d = c["n"], c["d"]
        mat = lambda k: np.array(c[k], dtype=np.float64).reshape(n, d)  # noqa: E731
        lab = lambda k: np.array(c[k], dtype=np.uint32)  # noqa: E731
        x, y, p, q, logits = mat("x"), mat("y"), mat("p"), mat("q"), mat("logits")
        lx, ly, lz = lab("lx"), lab("ly"), lab("lz")
        h = len(c["club"]["club.mu.fc1.bias"])
        params = {}
        for k, w in c["club"].items():
            w = np.array(w, dtype=np.float64)
            if k.endswith("fc1.weight"):
                w = w.reshape(h, d)
            elif k.endswith("fc2.weight"):
                w = w.reshape(d, h)
            params[k] = w
        ours = {
            "gaussian-mi": gaussian_mi(x, y),
            "gaussian-entropy": gaussian_entropy(x),
            "club": club(params, x, y),
            "club-sample": club_sample(params, x, y, perm=np.array(c["perm"], dtype=np.int64)),
            "mi": mutual_information(lx, ly),
            "nmi": normalized_mutual_information(lx, ly),
            "cmi": conditional_mutual_information(lx, ly, lz),
            "ncmi": ncmi(lx, ly, lz),
            "kl": kl_divergence(p, q),
            "js": js_divergence(p, q),
            "softmax-bound": softmax_mi_lower_bound(logits, ly.astype(np.int64)),
            "soft-mi": soft_mutual_information_labels(p, ly),
        }
        for name, theirs in c["modbal"].items():
            mine = float(ours[name])
            rel = abs(mine - theirs) / max(abs(theirs), 1e-300)
            worst = max(worst, rel)
            print(f"{name:<17} {n:>5} {d:>4} {theirs:>22.15g} {mine:>22.15g} {rel:>9.1e}")
    ok = worst < 1e-9
    print(f"numeric check: largest relative difference {worst:.1e} -> {'OK' if ok else 'MISMATCH'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", metavar="JSON", help="compare with modbal's numeric-check.json")
    ap.add_argument("--only", help="comma-separated estimators to time")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    if args.check:
        sys.exit(0 if run_check(args.check) else 1)
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(ESTIMATORS):
        ap.error(f"unknown estimator(s) {sorted(only - set(ESTIMATORS))}; known: {ESTIMATORS}")
    run_timings(only, args.quick)


if __name__ == "__main__":
    main()
