"""Random 1D/2D/3D CNN programs for hypothesis, and the FLOPs a correct cut leaves."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from support import _varying_nodes, alive_entries
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from lumos_fx.node_info import info

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
IN = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
ADAPTIVE = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
F_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
F_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
ACTS = ("relu", "f_relu", "torch_relu", "m_relu", "gelu", "tanh", "silu", "m_tanh")
SMOOTH_ACTS = ("gelu", "tanh", "silu", "m_tanh")
HEADS = ("flatten", "permute", "view", "mean", "amax", "sum", "conv")


def _randomise_norm(module: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters away from their identity defaults."""
    with torch.no_grad():
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
        if getattr(module, "weight", None) is not None:
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen))


class ProgramCNN(nn.Module):
    """A CNN written as a program over a list of tensors (index 0 is the input).

    Each step reads earlier tensors and appends new ones; ``self.mods[k]`` is step k's
    layer (``nn.Identity`` when it has none). The head reads the last tensor, or with
    ``sink_all`` the spatial means of every tensor no step reads, concatenated.
    """

    def __init__(self, d: int, n_in: int, size: int, steps: list[tuple], head: str, n_out: int,
                 sink_all: bool = False, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.d, self.steps, self.head_kind, self.sink_all = d, steps, head, sink_all
        shapes = [(n_in, size)]  # (channels, spatial size) of each tensor
        self.mods = nn.ModuleList()
        self.params = nn.ParameterList()
        for step in steps:
            op, i = step[0], step[1]
            c, s = shapes[i]
            mod: nn.Module = nn.Identity()
            if op == "conv":
                _, _, out, k, stride, groups, bias, mode = step
                mod = CONV[d](c, out, k, stride=stride, padding=k // 2, groups=groups, bias=bias, padding_mode=mode)
                shapes.append((out, (s + 2 * (k // 2) - k) // stride + 1))
            elif op == "convT":
                _, _, out, groups = step
                mod = CONVT[d](c, out, 2, stride=2, groups=groups)
                shapes.append((out, 2 * s))
            elif op in ("bn", "in", "gn"):
                if op == "bn":
                    mod = BN[d](c)
                elif op == "in":
                    mod = IN[d](c, affine=True, track_running_stats=step[2])
                else:
                    mod = nn.GroupNorm(step[2], c)
                _randomise_norm(mod, gen)
                shapes.append((c, s))
            elif op == "act":
                mod = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}.get(step[2], nn.Identity)()
                shapes.append((c, s))
            elif op == "dropout":
                mod = nn.Dropout(0.3)
                shapes.append((c, s))
            elif op == "pool":
                kind = step[2]
                if kind in ("max", "avg"):
                    mod = (MAXPOOL if kind == "max" else AVGPOOL)[d](2)
                elif kind == "adaptive":
                    mod = ADAPTIVE[d](s // 2)
                shapes.append((c, s // 2))
            elif op == "up":
                mod = nn.Upsample(scale_factor=2) if step[2] == "module" else nn.Identity()
                shapes.append((c, 2 * s))
            elif op == "pad":
                shapes.append((c, s + 2))
            elif op in ("add", "mul"):
                shapes.append((c, s))
            elif op == "cat":
                shapes.append((c + shapes[step[2]][0], s))
            elif op == "split":
                shapes += [(step[2], s), (c - step[2], s)]
            elif op in ("narrow", "slice"):
                shapes.append((step[3] - step[2], s))
            elif op == "bias":
                self.params.append(nn.Parameter(torch.randn((c,) + (1,) * d, generator=gen)))
                shapes.append((c, s))
            elif op == "mask":
                self.params.append(nn.Parameter(torch.randn((1, 1) + (s,) * d, generator=gen)))
                shapes.append((c, s))
            self.mods.append(mod)
        self.shapes = shapes
        read = {step[1] for step in steps} | {step[2] for step in steps if step[0] in ("add", "mul", "cat")}
        self.sinks = [i for i in range(len(shapes)) if i not in read] if sink_all else [len(shapes) - 1]
        c, s = shapes[self.sinks[-1]]
        if sink_all:
            self.head = nn.Linear(sum(shapes[i][0] for i in self.sinks), n_out)
        elif head == "conv":
            self.head = CONV[d](c, n_out, 1)
        elif head in ("flatten", "permute", "view"):
            self.head = nn.Linear(c * s ** d, n_out)
            self.flat = c * s ** d
        else:
            self.head = nn.Linear(c, n_out)

    def forward(self, x):
        t = [x]
        params = iter(self.params)
        spatial = tuple(range(2, 2 + self.d))
        for step, mod in zip(self.steps, self.mods):
            op, a = step[0], t[step[1]]
            if op == "act" and step[2] in ("f_relu", "torch_relu", "m_relu", "m_tanh"):
                t.append({"f_relu": F.relu, "torch_relu": torch.relu, "m_relu": lambda v: v.relu(),
                          "m_tanh": lambda v: v.tanh()}[step[2]](a))
            elif op == "pool" and step[2] in ("fmax", "favg"):
                t.append((F_MAXPOOL if step[2] == "fmax" else F_AVGPOOL)[self.d](a, 2))
            elif op == "up" and step[2] == "interp":
                t.append(F.interpolate(a, scale_factor=2.0, mode="nearest"))
            elif op == "pad":
                mode = step[2]
                t.append(F.pad(a, [1, 1] * self.d, mode=mode, value=0.5) if mode == "constant"
                         else F.pad(a, [1, 1] * self.d, mode=mode))
            elif op == "add":
                t.append(a + t[step[2]])
            elif op == "mul":
                t.append(a * t[step[2]])
            elif op == "cat":
                t.append(torch.cat([a, t[step[2]]], dim=1))
            elif op == "split":
                first, second = torch.split(a, [step[2], self.shapes[step[1]][0] - step[2]], dim=1)
                t += [first, second]
            elif op == "narrow":
                t.append(a.narrow(1, step[2], step[3] - step[2]))
            elif op == "slice":
                t.append(a[:, step[2]:step[3]])
            elif op == "bias":
                t.append(a + next(params))
            elif op == "mask":
                t.append(a * next(params))
            else:
                t.append(mod(a))
        if self.sink_all:
            return self.head(torch.cat([t[i].mean(dim=spatial) for i in self.sinks], dim=1))
        h = t[self.sinks[0]]
        if self.head_kind == "flatten":
            h = torch.flatten(h, 1)
        elif self.head_kind == "permute":
            h = h.movedim(1, -1).flatten(1)
        elif self.head_kind == "view":
            h = h.view(h.size(0), self.flat)
        elif self.head_kind == "mean":
            h = h.mean(dim=spatial)
        elif self.head_kind == "amax":
            h = torch.amax(h, dim=spatial)
        elif self.head_kind == "sum":
            h = h.sum(spatial)
        return self.head(h)


@st.composite
def cnn_programs(draw, smooth_only: bool = False, norms=("bn", "in", "gn")):
    """(d, n_in, size, steps, head, n_out) of a random ProgramCNN.

    With `smooth_only` (for the gradient oracles) nothing leaves channels unread, convs have biases, and GroupNorm 2+
    channels per group: a one-channel group, like InstanceNorm, makes a spatial mean of
    its output a constant.
    """
    d = draw(st.integers(1, 3))
    n_in = draw(st.integers(1, 5))
    size = draw(st.sampled_from((4, 6)) if d == 3 else st.sampled_from((4, 6, 8)))
    shapes = [(n_in, size)]
    steps = []
    acts = SMOOTH_ACTS if smooth_only else ACTS
    max_size = 8 if d < 3 else 6
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(max(0, len(shapes) - 3), len(shapes) - 1))
        c, s = shapes[i]
        same = [j for j in range(len(shapes)) if j != i and shapes[j] == (c, s)]
        same_size = [j for j in range(len(shapes)) if shapes[j][1] == s]
        options = ["conv", "conv", "act", "dropout", "bias", "mask", *(n for n in norms if n != "gn" or c >= 2)]
        options += ["pool"] if s >= 2 else []
        options += ["up", "convT"] if 2 * s <= max_size else []
        options += ["pad"] if s + 2 <= max_size else []
        options += ["add", "mul"] if same else []
        options += ["cat"]
        # A narrow or slice leaves channels unread; only the gates' cut is under test there.
        options += (["split"] if smooth_only else ["split", "narrow", "slice"]) if c >= 2 else []
        op = draw(st.sampled_from(options))
        if op == "conv":
            k = draw(st.sampled_from((1, 3)))
            stride = draw(st.sampled_from((1, 2))) if s >= 4 else 1
            kind = draw(st.sampled_from(("plain", "depthwise", "grouped")))
            groups = 1
            if kind == "depthwise":
                groups, out = c, c * draw(st.integers(1, 2))
            elif kind == "grouped":
                groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
                out = groups * draw(st.integers(1, 3))
            else:
                out = draw(st.integers(1, 6))
            # Reflection needs more positions than it pads.
            modes = ("zeros", "reflect", "replicate", "circular") if s >= 2 else ("zeros", "replicate", "circular")
            mode = draw(st.sampled_from(modes)) if k == 3 else "zeros"
            # Biases keep constant branches non-zero, so the oracles see their consumers' weights.
            steps.append(("conv", i, out, k, stride, groups, smooth_only or draw(st.booleans()), mode))
            shapes.append((out, (s + 2 * (k // 2) - k) // stride + 1))
        elif op == "convT":
            groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
            out = groups * draw(st.integers(1, 3))
            steps.append(("convT", i, out, groups))
            shapes.append((out, 2 * s))
        elif op in ("bn", "dropout", "bias", "mask"):
            steps.append((op, i))
            shapes.append((c, s))
        elif op == "in":
            steps.append(("in", i, draw(st.booleans())))
            shapes.append((c, s))
        elif op == "gn":
            per_group = [g for g in range(1, c + 1) if c % g == 0 and (c // g >= 2 or not smooth_only)]
            steps.append(("gn", i, draw(st.sampled_from(per_group))))
            shapes.append((c, s))
        elif op == "act":
            steps.append(("act", i, draw(st.sampled_from(acts))))
            shapes.append((c, s))
        elif op == "pool":
            steps.append(("pool", i, draw(st.sampled_from(("max", "avg", "adaptive", "fmax", "favg")))))
            shapes.append((c, s // 2))
        elif op == "up":
            steps.append(("up", i, draw(st.sampled_from(("module", "interp")))))
            shapes.append((c, 2 * s))
        elif op == "pad":
            modes = ("constant", "reflect", "replicate", "circular") if s >= 2 else ("constant", "replicate", "circular")
            steps.append(("pad", i, draw(st.sampled_from(modes))))
            shapes.append((c, s + 2))
        elif op in ("add", "mul"):
            steps.append((op, i, draw(st.sampled_from(same))))
            shapes.append((c, s))
        elif op == "cat":
            j = draw(st.sampled_from(same_size))
            steps.append(("cat", i, j))
            shapes.append((c + shapes[j][0], s))
        elif op == "split":
            k = draw(st.integers(1, c - 1))
            steps.append(("split", i, k))
            shapes += [(k, s), (c - k, s)]
        else:
            a = draw(st.integers(0, c - 1))
            b = draw(st.integers(a + 1, c))
            steps.append((op, i, a, b))
            shapes.append((b - a, s))
    head = draw(st.sampled_from(HEADS))
    return d, n_in, size, steps, head, draw(st.integers(1, 3))


def build(program, seed: int, sink_all: bool = False):
    """The model, its instrumented form, and a fresh-input maker for a program."""
    import lumos_fx

    d, n_in, size, steps, head, n_out = program
    torch.manual_seed(seed)
    model = ProgramCNN(d, n_in, size, steps, head, n_out, sink_all=sink_all, seed=seed)
    x = torch.randn((3, n_in) + (size,) * d)
    return model, lumos_fx.instrument(model, (x,)), lambda batch: torch.randn((batch, n_in) + (size,) * d)


class _Shapes(fx.Interpreter):
    """Runs a GraphModule and keeps the input and output shapes of every module call."""

    def __init__(self, module):
        super().__init__(module)
        self.shapes = {}

    def run_node(self, n):
        value = super().run_node(n)
        if module_called(n) and n.args:
            self.shapes[n.name] = (self.env[n.args[0]].shape, value.shape)
        return value


def module_called(node: fx.Node) -> str | None:
    """The module a node calls: its target, or for a layer whose input gate lumos_fx folded
    into its weight (a functional call on the scaled weight), the module it stands for."""
    return node.target if node.op == "call_module" else info(node).folded


def expected_flops(wrapped: fx.GraphModule, x: torch.Tensor, seed: int = 0) -> int:
    """Forward FLOPs on `x` that a correct cut leaves, found without lumos_fx's analysis:
    each conv or Linear whose output still varies with the input keeps the weight entries
    the output depends on (non-zero float64 gradient), and costs what FlopCounterMode
    charges a layer of that many weights: ``2 * positions * weights``, with positions the
    batch times the output's spatial size (the input's, for a transposed conv)."""
    w = copy.deepcopy(wrapped).double().eval()
    gen = torch.Generator().manual_seed(seed)
    x1 = x.double()
    varies = _varying_nodes(w, x1, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    recorder = _Shapes(w)
    with torch.no_grad():
        recorder.run(x1)
    out = w(x1)
    weights = {name: p for name, p in w.named_parameters() if name.endswith("weight")}
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grads = dict(zip(weights, torch.autograd.grad((out * r).sum(), list(weights.values()), allow_unused=True)))
    total = 0
    for node in w.graph.nodes:
        target = module_called(node)
        if target is None or not varies.get(node.name, False):
            continue
        module = w.get_submodule(target)
        grad = grads.get(f"{target}.weight")
        if not isinstance(module, (*CONV.values(), *CONVT.values(), nn.Linear)) or grad is None:
            continue
        in_shape, out_shape = recorder.shapes[node.name]
        if isinstance(module, nn.Linear):
            positions = math.prod(out_shape[:-1])
        else:
            positions = out_shape[0] * math.prod((in_shape if isinstance(module, tuple(CONVT.values())) else out_shape)[2:])
        total += 2 * positions * alive_entries(grad)
    return total


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return int(counter.get_total_flops())
