#!/usr/bin/env python3
"""PyTorch reference for `modbal bench step`: the same workloads, batches, optimizer and input
shapes, printing the same JSON object.

    python3 bench/torch_reference.py --workload small-cnn [--steps N] [--warmup W] [--threads T]

A step is forward, mean cross-entropy on the (fused) logits, backward and one
`torch.optim.SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)` update on a fixed batch
(`torch.randn`, seeded). Eager mode, float32, on the CPU or `--device cuda[:N]`. Workloads (see src/bench.rs):

| workload      | model                                                                    | batch | inputs              |
|---------------|--------------------------------------------------------------------------|-------|---------------------|
| small-cnn     | conv3x3 1->64 (pad 1), ReLU, max-pool 2, conv3x3 64->64, ReLU, GAP, fc 64->10 | 64 | 1x64x64          |
| conv4-pair    | two conv4 encoders (32-64-128-256, BN, ReLU, max-pool x3, GAP), fc 512->10 | 64  | 1x28x28, 3x28x28    |
| resnet18-av   | ResNet18 (1 channel) + ResNet18 (3 channels), concat fc 1024->6          | 16    | 1x128x128, 3x112x112 |
| mlp-pair      | two MLPs 256->512->512 (ReLU), concat fc 1024->10                        | 256   | 256, 256            |
| synth-av-epoch | not implemented on the PyTorch side (prints a "skipped" object)          |       |                     |

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
    if a.workload == "synth-av-epoch":
        print(json.dumps({"workload": a.workload, "framework": "pytorch",
                          "skipped": "no PyTorch port of the synth-av training epoch"}))
        return
    if a.threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[k] = str(a.threads)
    import torch
    import torch.nn.functional as F

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
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
        "ms_per_step_median": round(percentile(s, 0.5), 3),
        "ms_per_step_p10": round(percentile(s, 0.1), 3),
        "ms_per_step_p90": round(percentile(s, 0.9), 3),
        "steps": steps,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "version": torch.__version__,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "loss_first": first,
        "loss_last": last,
    }))


if __name__ == "__main__":
    sys.exit(main())
