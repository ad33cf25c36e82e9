#!/usr/bin/env python3
"""Check a modbal run's TensorBoard event files with TensorBoard's own reader.

Usage: scripts/check_tensorboard.py RUN_DIR

Loads RUN_DIR/tensorboard/ with tensorboard.backend.event_processing.event_accumulator.
EventAccumulator (purging orphaned data, as `tensorboard --logdir` does) and compares it with
the run's own files:

* every scalar tag and step with metrics.jsonl (train and val), test_curve.jsonl (test) and
  timing.jsonl (time/epoch_seconds), values equal as float32 (TensorBoard's simple_value);
  no tag or step missing or extra;
* exactly one value per (tag, step): after a resume, the SessionLog START of the new event
  file must have purged the events of the epochs trained again;
* the `config` text tag (text plugin) at step 0 equals config.toml.

Exits 1 with a message naming the first mismatches; prints one JSON line on success.
Needs the python package `tensorboard` (pip install tensorboard).
"""

import json
import math
import os
import sys


def fail(msg):
    print(f"check_tensorboard: {msg}", file=sys.stderr)
    sys.exit(1)


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def num(v):
    """A metrics value as a float (serde_json writes a NaN as null)."""
    return float("nan") if v is None else float(v)


def method_scalars(prefix, v, out):
    # Numbers only (bool is an int in python: skipped, as the writer skips JSON booleans);
    # nested objects flattened with "/".
    if isinstance(v, bool):
        return
    if isinstance(v, (int, float)):
        out[prefix] = float(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            method_scalars(f"{prefix}/{k}", x, out)


def split_scalars(r, out):
    s = r["split"]
    out[f"{s}/loss"] = num(r["loss"])
    out[f"{s}/fusion_acc"] = num(r["fusion_acc"])
    for m, a in r["modality_acc"].items():
        out[f"{s}/acc/{m}"] = num(a)
    out[f"{s}/macro_f1"] = num(r["macro_f1"])
    if "discrepancy_ratio" in r and r["discrepancy_ratio"] is not None:
        out[f"{s}/discrepancy_ratio"] = num(r["discrepancy_ratio"])


def expected_scalars(run):
    """{(tag, step): value} from the run's metrics files."""
    want = {}
    per_epoch = {}
    for r in read_jsonl(os.path.join(run, "metrics.jsonl")) + read_jsonl(
        os.path.join(run, "test_curve.jsonl")
    ):
        e = per_epoch.setdefault(r["epoch"], {})
        split_scalars(r, e)
        if r["split"] == "train":
            e["lr"] = num(r["lr"])
            for k, v in r.get("method", {}).items():
                method_scalars(f"method/{k}", v, e)
    for t in read_jsonl(os.path.join(run, "timing.jsonl")):
        per_epoch.setdefault(t["epoch"], {})["time/epoch_seconds"] = num(t["seconds"])
    for epoch, tags in per_epoch.items():
        for tag, v in tags.items():
            want[(tag, epoch)] = v
    return want


def same_f32(expected, got):
    import numpy as np

    with np.errstate(over="ignore"):
        e = float(np.float32(expected))
    if math.isnan(e) or math.isnan(got):
        return math.isnan(e) and math.isnan(got)
    return e == got or abs(e - got) <= 1e-6 * max(abs(e), 1e-30)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_tensorboard.py RUN_DIR")
    run = sys.argv[1]
    tb_dir = os.path.join(run, "tensorboard")
    if not os.path.isdir(tb_dir):
        fail(f"{tb_dir}: no such directory (was the run trained with --no-tensorboard?)")
    files = sorted(f for f in os.listdir(tb_dir) if f.startswith("events.out.tfevents."))
    if not files:
        fail(f"{tb_dir}: no event files")
    try:
        import tensorboard
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError as e:
        fail(f"python package tensorboard not found ({e}); install: pip install tensorboard")

    # Size guidance 0: keep every event (no reservoir sampling).
    acc = ea.EventAccumulator(
        tb_dir,
        size_guidance={ea.SCALARS: 0, ea.TENSORS: 0},
        purge_orphaned_data=True,
    )
    acc.Reload()
    tags = acc.Tags()

    got = {}
    errors = []
    for tag in tags.get(ea.SCALARS, []):
        for ev in acc.Scalars(tag):
            key = (tag, ev.step)
            if key in got:
                errors.append(f"scalar {tag!r} has more than one value at step {ev.step}")
            got[key] = ev.value
    want = expected_scalars(run)
    for key in sorted(set(want) - set(got)):
        errors.append(f"scalar {key[0]!r} step {key[1]}: missing (metrics say {want[key]!r})")
    for key in sorted(set(got) - set(want)):
        errors.append(f"scalar {key[0]!r} step {key[1]}: {got[key]!r}, not in the metrics files")
    for key in sorted(set(got) & set(want)):
        if not same_f32(want[key], got[key]):
            errors.append(
                f"scalar {key[0]!r} step {key[1]}: event file {got[key]!r}, "
                f"metrics {want[key]!r}"
            )

    cfg_path = os.path.join(run, "config.toml")
    with open(cfg_path) as f:
        cfg = f.read()
    if "config" not in tags.get(ea.TENSORS, []):
        errors.append("no `config` text tag")
    else:
        evs = acc.Tensors("config")
        if [e.step for e in evs] != [0]:
            errors.append(f"`config` text at steps {[e.step for e in evs]}, want exactly [0]")
        md = tensor_util.make_ndarray(evs[-1].tensor_proto).item().decode("utf-8")
        body = cfg[:-1] if cfg.endswith("\n") else cfg
        if md != f"```toml\n{body}\n```":
            errors.append("`config` text differs from config.toml")
        meta = acc.SummaryMetadata("config")
        if meta.plugin_data.plugin_name != "text":
            errors.append(f"`config` plugin {meta.plugin_data.plugin_name!r}, want 'text'")

    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        fail(f"{run}: {len(errors)} mismatch(es):\n  {shown}{more}")
    steps = sorted({s for _, s in got})
    print(
        json.dumps(
            {
                "run": run,
                "ok": True,
                "tensorboard": tensorboard.__version__,
                "event_files": len(files),
                "scalar_tags": len({t for t, _ in got}),
                "scalars": len(got),
                "steps": [steps[0], steps[-1]] if steps else [],
                "config": True,
            }
        )
    )


if __name__ == "__main__":
    main()
