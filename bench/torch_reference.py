#!/usr/bin/env python3
"""PyTorch reference for `modbal bench step`: the same workloads, batches, optimizer and input
shapes, printing the same JSON object.

    python3 bench/torch_reference.py --workload small-cnn [--steps N] [--warmup W] [--threads T]

In the first four workloads a step is forward, mean cross-entropy on the (fused) logits,
backward and one `torch.optim.SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)` update on a fixed
batch (`torch.randn`, seeded). Eager mode, float32, on the CPU or `--device cuda[:N]`. Workloads
(see src/cli/bench.rs):

| workload      | model                                                                    | batch | inputs              |
|---------------|--------------------------------------------------------------------------|-------|---------------------|
| small-cnn     | conv3x3 1->64 (pad 1), ReLU, max-pool 2, conv3x3 64->64, ReLU, GAP, fc 64->10 | 64 | 1x64x64          |
| conv4-pair    | two conv4 encoders (32-64-128-256, BN, ReLU, max-pool x3, GAP), fc 512->10 | 64  | 1x28x28, 3x28x28    |
| resnet18-av   | ResNet18 (1 channel) + ResNet18 (3 channels), concat fc 1024->6          | 16    | 1x128x128, 3x112x112 |
| mlp-pair      | two MLPs 256->512->512 (ReLU), concat fc 1024->10                        | 256   | 256, 256            |
| synth-av-epoch | one epoch of the default `modbal train` (below); a "step" is an epoch    | 64    | 1x32x32, 3x16x16    |

synth-av-epoch mirrors the default `modbal train` (method concat on synth-av, RunConfig::default):
two small_cnn encoders (per width 16, 32, 64: conv3x3 pad 1 without bias, BN, ReLU, max-pool 2;
then GAP) on audio 1x32x32 and visual 3x16x16, a concat head fc 128->6 (Xavier-normal, zero
bias; per-modality logits from its weight slices, W[:, slice_m] f_m + b/2), 47,878 trainable
parameters (modbal's meta.json `trainable_parameters`). SGD(lr=0.01, momentum=0.9,
weight_decay=1e-4), constant rate, no clipping. An epoch: shuffle the 2,400 training samples, 38
batches of 64 (the last of 32), each forward, mean cross-entropy on the fused logits, backward,
SGD step and the batch's train metrics on the host; then validation over the 600 validation
samples in batches of 256 (eval mode, no grad): fused and per-modality logits, loss, fusion and
per-modality accuracy, macro F1, discrepancy ratio; the two metric lines appended to a file and,
when validation accuracy improves, the best model snapshotted and saved (modbal's
checkpoints/best). The data are seeded random tensors of synth-av's shapes and split sizes held
in memory (`torch.randn`, labels uniform over 6 classes), not synth-av's samples: the timing does
not depend on the values, the accuracies do. Default 3 timed epochs after 1 warm-up epoch.

Install the CPU-only wheel (the default PyPI wheel pulls several GB of CUDA libraries):
    pip install torch --index-url https://download.pytorch.org/whl/cpu
"""

import argparse
import json
import os
import resource
import sys
import time

WORKLOADS = ["small-cnn", "conv4-pair", "resnet18-av", "mlp-pair", "synth-av-epoch"]


def timing_fields(torch, sorted_ms, steps, warmup, dev):
    """The fields every workload's JSON object shares: percentiles of the timed steps, the
    run's settings, peak RSS and the device."""
    return {
        "ms_per_step_median": round(percentile(sorted_ms, 0.5), 3),
        "ms_per_step_p10": round(percentile(sorted_ms, 0.1), 3),
        "ms_per_step_p90": round(percentile(sorted_ms, 0.9), 3),
        "steps": steps,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "version": torch.__version__,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
    }


def percentile(sorted_v, p):
    """Linear interpolation between order statistics (numpy.percentile's default)."""
    x = p * (len(sorted_v) - 1)
    i = int(x)
    f = x - i
    if i + 1 < len(sorted_v):
        return sorted_v[i] * (1 - f) + sorted_v[i + 1] * f
    return sorted_v[i]


def build(workload):
    import torch
    from torch import nn

    def conv_bn(ci, co, k, s, p):
        return [nn.Conv2d(ci, co, k, s, p, bias=False), nn.BatchNorm2d(co)]

    class Conv4(nn.Module):
        def __init__(self, c):
            super().__init__()
            layers = []
            for i, co in enumerate([32, 64, 128, 256]):
                layers += conv_bn(c, co, 3, 1, 1) + [nn.ReLU()]
                if i < 3:
                    layers.append(nn.MaxPool2d(2))
                c = co
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)

    class BasicBlock(nn.Module):
        def __init__(self, ci, co, stride):
            super().__init__()
            self.c1 = nn.Sequential(*conv_bn(ci, co, 3, stride, 1))
            self.c2 = nn.Sequential(*conv_bn(co, co, 3, 1, 1))
            self.down = (
                nn.Sequential(*conv_bn(ci, co, 1, stride, 0))
                if stride != 1 or ci != co
                else None
            )

        def forward(self, x):
            h = torch.relu(self.c1(x))
            h = self.c2(h)
            idt = self.down(x) if self.down is not None else x
            return torch.relu(h + idt)

    class ResNet18(nn.Module):
        def __init__(self, c):
            super().__init__()
            layers = conv_bn(c, 64, 7, 2, 3) + [nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
            ci = 64
            for i, co in enumerate([64, 128, 256, 512]):
                s = 1 if i == 0 else 2
                layers += [BasicBlock(ci, co, s), BasicBlock(co, co, 1)]
                ci = co
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)

    def mlp():
        return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU())

    class Pair(nn.Module):
        def __init__(self, a, b, d, classes):
            super().__init__()
            self.a, self.b = a, b
            self.fc = nn.Linear(d, classes)

        def forward(self, xa, xb):
            return self.fc(torch.cat([self.a(xa), self.b(xb)], 1))

    if workload == "small-cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        return model, 64, [(1, 64, 64)], 10
    if workload == "conv4-pair":
        return Pair(Conv4(1), Conv4(3), 512, 10), 64, [(1, 28, 28), (3, 28, 28)], 10
    if workload == "resnet18-av":
        return Pair(ResNet18(1), ResNet18(3), 1024, 6), 16, [(1, 128, 128), (3, 112, 112)], 6
    if workload == "mlp-pair":
        return Pair(mlp(), mlp(), 1024, 10), 256, [(256,), (256,)], 10
    raise ValueError(workload)


# The default `modbal train` (src/config.rs RunConfig::default; TrainConfig::default;
# modbal_data::SynthAvConfig::default; the small_cnn encoders of src/registry.rs for synth-av).
SYNTH_AV = {
    "train": 2400, "val": 600, "classes": 6,
    "shapes": {"audio": (1, 32, 32), "visual": (3, 16, 16)},  # spec_size 32, image_size 16
    "channels": (16, 32, 64),
    "batch": 64, "eval_batch": 256,
    "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
}
# `trainable_parameters` of the run's meta.json (`modbal train --epochs 1`, modbal 0.1.0).
MODBAL_SYNTH_AV_PARAMS = 47878


def synth_av_model():
    """modbal's MultimodalNet for synth-av: small_cnn encoders and the concat head."""
    import torch
    from torch import nn

    class SmallCnn(nn.Module):
        """modbal-encoders small_cnn.rs: per width conv3x3 (pad 1, no bias), BN, ReLU and a
        2x2 max-pool (skipped once H or W is below 2); then global average pooling."""

        def __init__(self, shape, channels):
            super().__init__()
            c, h, w = shape
            layers = []
            for co in channels:
                conv = nn.Conv2d(c, co, 3, 1, 1, bias=False)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                layers += [conv, nn.BatchNorm2d(co, eps=1e-5, momentum=0.1), nn.ReLU()]
                if h >= 2 and w >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                c = co
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.net = nn.Sequential(*layers)
            self.out_dim = c

        def forward(self, x):
            return self.net(x)

    class ConcatNet(nn.Module):
        """Encoders, then fc(cat(f_a, f_v)); per-modality logits W[:, slice_m] f_m + b/M
        (modbal-encoders fusion.rs ConcatHead, OGM-GE's uni-modal scores)."""

        def __init__(self):
            super().__init__()
            shapes, ch = SYNTH_AV["shapes"], SYNTH_AV["channels"]
            self.audio = SmallCnn(shapes["audio"], ch)
            self.visual = SmallCnn(shapes["visual"], ch)
            self.dims = [self.audio.out_dim, self.visual.out_dim]
            self.fc = nn.Linear(sum(self.dims), SYNTH_AV["classes"])
            nn.init.xavier_normal_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

        def forward(self, xa, xv):
            feats = [self.audio(xa), self.visual(xv)]
            fused = self.fc(torch.cat(feats, 1))
            share = self.fc.bias / len(feats)
            per, off = [], 0
            for f, d in zip(feats, self.dims):
                per.append(f @ self.fc.weight[:, off:off + d].t() + share)
                off += d
            return fused, per, feats

    return ConcatNet()


class Metrics:
    """modbal-train metrics.rs MetricAccumulator: mean loss (batch means weighted by size), fused
    accuracy, per-modality accuracy, macro F1 (scikit-learn's), discrepancy ratio
    max_m s_m / min_m s_m with s_m the summed f64 softmax probability of the true class."""

    def __init__(self, classes, modalities):
        self.k, self.m = classes, modalities
        self.n, self.loss_sum, self.correct = 0, 0.0, 0
        self.tp, self.fp, self.fn = [0] * classes, [0] * classes, [0] * classes
        self.m_correct, self.m_score = [0] * modalities, [0.0] * modalities

    def add_batches(self, losses, sizes, labels, fused, per):
        """`labels`, `fused` and `per` are CPU tensors holding the `sum(sizes)` rows."""
        import torch

        y = labels.tolist()
        pred = fused.argmax(1).tolist()
        for m, z in enumerate(per):
            self.m_correct[m] += int((z.argmax(1) == labels).sum())
            p = torch.softmax(z.double(), 1).gather(1, labels.view(-1, 1))
            self.m_score[m] += float(p.sum())
        for loss, b in zip(losses, sizes):
            self.n += b
            self.loss_sum += loss * b
        for p, t in zip(pred, y):
            if p == t:
                self.correct += 1
                self.tp[t] += 1
            else:
                self.fp[p] += 1
                self.fn[t] += 1

    def finish(self, names):
        n = max(self.n, 1)
        f1 = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in zip(self.tp, self.fp, self.fn)
              if tp + fp + fn > 0]
        lo, hi = min(self.m_score), max(self.m_score)
        ratio = None if self.m < 2 else (hi / lo if lo > 0 else float("inf"))
        return {
            "loss": self.loss_sum / n,
            "fusion_acc": self.correct / n,
            "modality_acc": {k: c / n for k, c in zip(names, self.m_correct)},
            "macro_f1": sum(f1) / len(f1) if f1 else 0.0,
            "discrepancy_ratio": ratio,
        }


def synth_av_epochs(a):
    """`warmup + steps` epochs of the default `modbal train` (see the module docs); the timed
    epochs' wall-clock ms (train + validation + the epoch's record), as modbal's timing.jsonl."""
    import tempfile

    import torch
    import torch.nn.functional as F

    c = SYNTH_AV
    steps = a.steps if a.steps is not None else 3
    warmup = a.warmup if a.warmup is not None else 1
    dev = torch.device(a.device)
    model = synth_av_model().to(dev)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if params != MODBAL_SYNTH_AV_PARAMS:
        raise SystemExit(f"synth-av-epoch: the PyTorch model has {params} trainable parameters, "
                         f"modbal's has {MODBAL_SYNTH_AV_PARAMS}: the ports differ")
    names = list(c["shapes"])
    # Synthetic stand-ins of synth-av's splits (same shapes and sizes), held in memory.
    g = torch.Generator().manual_seed(a.seed + 1)
    split = {}
    for s in ("train", "val"):
        xs = [torch.randn((c[s],) + c["shapes"][m], generator=g).to(dev) for m in names]
        y = torch.randint(0, c["classes"], (c[s],), generator=g).to(dev)
        split[s] = (xs, y)
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                          weight_decay=c["weight_decay"])
    shuffle = torch.Generator().manual_seed(a.seed)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_epoch():
        model.train()
        xs, y = split["train"]
        order = torch.randperm(c["train"], generator=shuffle).to(dev)
        acc = Metrics(c["classes"], len(names))
        for i in range(0, c["train"], c["batch"]):
            idx = order[i:i + c["batch"]]
            xb, yb = [x[idx] for x in xs], y[idx]
            opt.zero_grad(set_to_none=True)
            fused, per, _ = model(*xb)
            loss = F.cross_entropy(fused, yb)
            loss.backward()
            opt.step()
            acc.add_batches([loss.item()], [len(idx)], yb.cpu(), fused.detach().cpu(),
                            [z.detach().cpu() for z in per])
        return acc.finish(names)

    @torch.no_grad()
    def evaluate(s):
        model.eval()
        xs, y = split[s]
        losses, sizes, fused, per, feats = [], [], [], [[] for _ in names], [[] for _ in names]
        for i in range(0, c[s], c["eval_batch"]):
            xb, yb = [x[i:i + c["eval_batch"]] for x in xs], y[i:i + c["eval_batch"]]
            z, zs, fs = model(*xb)
            losses.append(F.cross_entropy(z, yb))
            sizes.append(len(yb))
            fused.append(z)
            for m in range(len(names)):
                per[m].append(zs[m])
                feats[m].append(fs[m])
        # One transfer per output, as modbal's evaluate.
        out = {
            "labels": y.cpu(),
            "losses": torch.stack(losses).double().cpu().tolist(),
            "fused": torch.cat(fused).cpu(),
            "per": [torch.cat(v).cpu() for v in per],
            "features": [torch.cat(v).cpu() for v in feats],
        }
        acc = Metrics(c["classes"], len(names))
        acc.add_batches(out["losses"], sizes, out["labels"], out["fused"], out["per"])
        return acc.finish(names)

    times, first, last, val_acc = [], None, None, None
    best = float("-inf")
    with tempfile.TemporaryDirectory(prefix="torch-synth-av-") as tmp:
        record = os.path.join(tmp, "metrics.jsonl")
        for epoch in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            tr = train_epoch()
            va = evaluate("val")
            with open(record, "a") as f:
                for split_name, m in (("train", tr), ("val", va)):
                    f.write(json.dumps(dict(epoch=epoch, split=split_name, lr=c["lr"], **m)) + "\n")
            if va["fusion_acc"] > best:
                # Model selection on validation: an in-memory snapshot and checkpoints/best.
                best = va["fusion_acc"]
                snap = {k: v.detach().clone() for k, v in model.state_dict().items()}
                path = os.path.join(tmp, "best.pt")
                with open(path + ".tmp", "wb") as f:
                    torch.save(snap, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(path + ".tmp", path)
            sync()
            ms = (time.perf_counter() - t0) * 1e3
            if epoch >= warmup:
                times.append(ms)
            first = tr["loss"] if first is None else first
            last, val_acc = tr["loss"], va["fusion_acc"]
    s = sorted(times)
    n_batches = -(-c["train"] // c["batch"])
    return {
        "workload": a.workload,
        "framework": "pytorch",
        **timing_fields(torch, s, steps, warmup, dev),
        "batch": c["batch"],
        "unit": "epoch (train + validation)",
        "params": params,
        "batches_per_epoch": n_batches,
        "data": "seeded random tensors of synth-av's shapes and split sizes",
        "train_loss_first": first,
        "train_loss_last": last,
        "val_fusion_acc_last": val_acc,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", required=True, choices=WORKLOADS)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="cpu, cuda or cuda:N (timed with torch.cuda.synchronize)")
    a = ap.parse_args()
    if a.threads is not None and a.threads < 1:
        ap.error("--threads must be at least 1")
    if a.steps is not None and a.steps < 1:
        ap.error("--steps must be at least 1")
    if a.warmup is not None and a.warmup < 0:
        ap.error("--warmup must be at least 0")
    if a.threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[k] = str(a.threads)
    import torch
    import torch.nn.functional as F

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.workload == "synth-av-epoch":
        print(json.dumps(synth_av_epochs(a)))
        return
    steps = a.steps if a.steps is not None else (10 if a.workload == "resnet18-av" else 20)
    warmup = a.warmup if a.warmup is not None else 3
    dev = torch.device(a.device)
    model, batch, shapes, classes = build(a.workload)
    model.to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    inputs = [torch.randn((batch,) + s).to(dev) for s in shapes]
    labels = torch.randint(0, classes, (batch,)).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(*inputs), labels)
        loss.backward()
        opt.step()
        return loss.detach().item()

    first = last = float("nan")
    for i in range(warmup):
        v = step()
        if i == 0:
            first = v
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        last = step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    s = sorted(times)
    print(json.dumps({
        "workload": a.workload,
        "framework": "pytorch",
        **timing_fields(torch, s, steps, warmup, dev),
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "loss_first": first,
        "loss_last": last,
    }))


if __name__ == "__main__":
    sys.exit(main())
