"""ResNet-50 on a 1x3x224x224 input: what instrument() + prune() cost, and whether the cut
model's generated code runs as fast as the same network written by hand.

Prints two ratios, each measured side by side in this run:

1. (instrument + prune) time / (3 forward+backward passes of the original model);
2. pruned-model latency / latency of a hand-built dense ResNet with the pruned widths
   (plain nn.Conv2d / nn.BatchNorm2d / nn.Linear, weights copied), medians of
   interleaved runs.

    python -m benchmarks.resnet50_cut [--fraction 0.5] [--repeats 30] [--cuts 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from models_zoo.measure import interleaved_latency
from models_zoo.vision.gates import close_fraction
from models_zoo.vision.models import resnet50


class HandBottleneck(nn.Module):
    def __init__(self, c_in: int, p1: int, p2: int, c_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, p1, 1, bias=False), nn.BatchNorm2d(p1)
        self.conv2, self.bn2 = nn.Conv2d(p1, p2, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(p2)
        self.conv3, self.bn3 = nn.Conv2d(p2, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if shortcut:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + self.shortcut(x))


class HandResNet(nn.Module):
    """ResNet-50 written out with the layer widths read off a pruned model."""

    def __init__(self, pruned: nn.Module, layers=(3, 4, 6, 3)) -> None:
        super().__init__()
        stem = pruned.get_submodule("stem.0")
        c = stem.out_channels
        self.stem = nn.Sequential(nn.Conv2d(stem.in_channels, c, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        names = dict(pruned.named_modules())
        stages = []
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                conv1, conv2, conv3 = (names[f"stages.{i}.{j}.conv{k}"] for k in (1, 2, 3))
                blocks.append(HandBottleneck(conv1.in_channels, conv1.out_channels, conv2.out_channels,
                                             conv3.out_channels, conv2.stride[0], f"stages.{i}.{j}.shortcut.0" in names))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        fc = pruned.get_submodule("fc")
        self.fc = nn.Linear(fc.in_features, fc.out_features)
        self.load_state_dict(pruned.state_dict())

    def forward(self, x):
        h = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def train_step_seconds(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward+backward pass (after one unmeasured pass)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model(x).sum().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of each group's channels closed")
    parser.add_argument("--repeats", type=int, default=30, help="latency runs per model")
    parser.add_argument("--cuts", type=int, default=7, help="instrument + prune runs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = resnet50().to(device)
    x = torch.randn(1, 3, 224, 224, device=device)

    steps, cuts = [], []
    for _ in range(args.cuts):  # interleaved: machine load drifts alike for both
        steps.append(train_step_seconds(model, x, repeats=3))
        start = time.perf_counter()
        wrapped = lumos_fx.instrument(model, (x,))
        lumos_fx.prune(wrapped)
        cuts.append(time.perf_counter() - start)
    step, cut = statistics.median(steps), statistics.median(cuts)
    print(f"forward+backward of ResNet-50, 1x3x224x224 ({device}): {step * 1e3:.0f} ms")
    print(f"instrument() + prune():                      {cut * 1e3:.0f} ms   (medians of {args.cuts} interleaved runs)")
    print(f"ratio (instrument + prune) / (3 x forward+backward): {cut / (3 * step):.2f}  (target <= 1)")

    close_fraction(wrapped, args.fraction, seed=0)
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    hand = HandResNet(pruned).to(device).eval()
    xs = x[:, pruned.kept_feature_indices.get("x", slice(None))]
    with torch.no_grad():
        err = (hand(xs) - pruned(xs)).abs().max().item()
    print(f"\n{args.fraction:.0%} of each group closed: {lumos_fx.summary(pruned).params_before:,} -> "
          f"{lumos_fx.summary(pruned).params_after:,} parameters; hand-built vs pruned max |diff| {err:.2e}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(m):
        return lambda inp: (m(inp), sync())

    lat = interleaved_latency({"pruned": timed(pruned), "hand": timed(hand)}, (xs,), repeats=args.repeats)
    print(f"latency, medians of {args.repeats} interleaved runs: pruned {lat['pruned'] * 1e3:.2f} ms, "
          f"hand-built {lat['hand'] * 1e3:.2f} ms")
    print(f"ratio pruned / hand-built: {lat['pruned'] / lat['hand']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
