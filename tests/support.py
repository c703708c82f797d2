"""Test helpers: random MLP programs (for hypothesis), gate settings, and two independent
oracles: output equivalence on fresh inputs, and the parameters that must survive."""

from __future__ import annotations

import copy
import inspect

import torch
from hypothesis import strategies as st
from torch import fx, nn

import lumos_fx
from lumos_fx.node_info import GateRole, info

ACTIVATIONS = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
    "f_relu": lambda: torch.relu, "m_tanh": lambda: "tanh",
}
SMOOTH = ("gelu", "tanh", "silu", "m_tanh")


class ProgramMLP(nn.Module):
    """An MLP written as a program over a list of tensors (index 0 is the input).

    Steps: ("linear", i, width), ("act", i, kind), ("dropout", i), ("add"|"sub"|"mul", i, j),
    ("cat", i, j), ("split", i, k) (adds two tensors), ("bias", i) (adds a Parameter read
    with get_attr), ("scale", i) (times a Python number), ("slice", i, a, b) (x[:, a:b]).
    The output is a Linear over the last tensor, or with ``sink_all`` over the cat of every
    tensor no step reads (then no channel is left unused by the program itself).
    """

    def __init__(self, n_in: int, steps: list[tuple], n_out: int, sink_all: bool = False,
                 modes: list[str] | None = None) -> None:
        super().__init__()
        self.steps = steps
        # Per step "both", or "train" / "eval": the mode it runs in (in the other it passes its
        # input through), so that the two modes take different paths.
        self.modes = modes or ["both"] * len(steps)
        widths = [n_in]
        self.layers = nn.ModuleList()
        self.biases = nn.ParameterList()
        self.acts = nn.ModuleList()
        for step in steps:
            op = step[0]
            if op == "linear":
                self.layers.append(nn.Linear(widths[step[1]], step[2]))
                widths.append(step[2])
            elif op == "act":
                act = ACTIVATIONS[step[2]]()
                self.acts.append(act if isinstance(act, nn.Module) else nn.Identity())
                widths.append(widths[step[1]])
            elif op in ("dropout", "scale"):
                widths.append(widths[step[1]])
            elif op == "bias":
                self.biases.append(nn.Parameter(torch.randn(widths[step[1]]) * 0.5))
                widths.append(widths[step[1]])
            elif op in ("add", "sub", "mul"):
                widths.append(widths[step[1]])
            elif op == "cat":
                widths.append(widths[step[1]] + widths[step[2]])
            elif op == "split":
                widths += [step[2], widths[step[1]] - step[2]]
            elif op == "slice":
                widths.append(step[3] - step[2])
        self.widths = widths
        read = set()
        for step in steps:
            read.add(step[1])
            if step[0] in ("add", "sub", "mul", "cat"):
                read.add(step[2])
        self.sinks = [i for i in range(len(widths)) if i not in read] if sink_all else [len(widths) - 1]
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(sum(widths[i] for i in self.sinks), n_out)

    def forward(self, x):
        t = [x]
        layers, biases, acts = iter(self.layers), iter(self.biases), iter(self.acts)
        for step, mode in zip(self.steps, self.modes):
            op = step[0]
            if mode != "both" and (mode == "train") != self.training:
                next({"act": acts, "bias": biases}.get(op, iter([None])))
                t.append(t[step[1]])
            elif op == "linear":
                t.append(next(layers)(t[step[1]]))
            elif op == "act":
                act, kind = next(acts), step[2]
                if kind == "f_relu":
                    t.append(torch.relu(t[step[1]]))
                elif kind == "m_tanh":
                    t.append(t[step[1]].tanh())
                else:
                    t.append(act(t[step[1]]))
            elif op == "dropout":
                t.append(self.dropout(t[step[1]]))
            elif op == "scale":
                t.append(t[step[1]] * 0.5)
            elif op == "bias":
                t.append(t[step[1]] + next(biases))
            elif op == "add":
                t.append(t[step[1]] + t[step[2]])
            elif op == "sub":
                t.append(t[step[1]] - t[step[2]])
            elif op == "mul":
                t.append(t[step[1]] * t[step[2]])
            elif op == "cat":
                t.append(torch.cat([t[step[1]], t[step[2]]], dim=-1))
            elif op == "split":
                a, b = torch.split(t[step[1]], [step[2], self.widths[step[1]] - step[2]], dim=-1)
                t += [a, b]
            elif op == "slice":
                t.append(t[step[1]][:, step[2]:step[3]])
        if len(self.sinks) == 1:
            return self.head(t[self.sinks[0]])
        return self.head(torch.cat([t[i] for i in self.sinks], dim=-1))


@st.composite
def programs(draw, smooth_only: bool = False, ops=None):
    """(n_in, steps, n_out) of a random ProgramMLP."""
    n_in = draw(st.integers(2, 7))
    widths = [n_in]
    steps = []
    kinds = SMOOTH if smooth_only else tuple(ACTIVATIONS)
    allowed = ops or ("linear", "act", "dropout", "add", "sub", "mul", "cat", "split", "bias", "scale", "slice")
    for _ in range(draw(st.integers(1, 7))):
        i = draw(st.integers(max(0, len(widths) - 3), len(widths) - 1))
        same = [j for j in range(len(widths)) if j != i and widths[j] == widths[i]]
        options = [op for op in allowed
                   if (op not in ("add", "sub", "mul") or same) and (op not in ("split", "slice") or widths[i] >= 2)]
        op = draw(st.sampled_from(options))
        if op == "linear":
            steps.append(("linear", i, draw(st.integers(1, 9))))
            widths.append(steps[-1][2])
        elif op == "act":
            steps.append(("act", i, draw(st.sampled_from(kinds))))
            widths.append(widths[i])
        elif op in ("dropout", "bias", "scale"):
            steps.append((op, i))
            widths.append(widths[i])
        elif op in ("add", "sub", "mul"):
            steps.append((op, i, draw(st.sampled_from(same))))
            widths.append(widths[i])
        elif op == "cat":
            j = draw(st.integers(0, len(widths) - 1))
            steps.append(("cat", i, j))
            widths.append(widths[i] + widths[j])
        elif op == "split":
            k = draw(st.integers(1, widths[i] - 1))
            steps.append(("split", i, k))
            widths += [k, widths[i] - k]
        elif op == "slice":
            a = draw(st.integers(0, widths[i] - 1))
            b = draw(st.integers(a + 1, widths[i]))
            steps.append(("slice", i, a, b))
            widths.append(b - a)
    return n_in, steps, draw(st.integers(1, 3))


GATE_SETTINGS = ("open", "closed", "random", "half")


def set_gates(wrapped: fx.GraphModule, setting: str, seed: int) -> None:
    """all open; all closed; log_alpha ~ U(-6, 6); or half the units closed, half fractional."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            la = gate.log_alpha
            if setting == "open":
                la.fill_(6.0)
            elif setting == "closed":
                la.fill_(-6.0)
            elif setting == "random":
                la.copy_(torch.rand(la.shape, generator=gen) * 12 - 6)
            else:
                closed = torch.rand(la.shape, generator=gen) < 0.5
                la.copy_(torch.where(closed, torch.full_like(la, -4.0), torch.rand(la.shape, generator=gen) * 4 - 2))


def max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / max(scale, 1e-6)


def assert_equivalent(wrapped, pruned, x: torch.Tensor, shrink_inputs: bool = False) -> None:
    """prune(w)(x) == w.eval()(x) on inputs the pruner never saw."""
    with torch.no_grad():
        ref = wrapped.eval()(x)
        if shrink_inputs:
            (kept,) = pruned.kept_feature_indices.values()
            x = x[..., kept]
        out = pruned(x)
    assert out.shape == ref.shape
    assert max_rel_error(out, ref) <= 1e-4, f"max rel error {max_rel_error(out, ref):.3g}"


def expected_params_after(wrapped: fx.GraphModule, n_in, seed: int = 0) -> int:
    """The parameter entries a correct cut keeps, found without lumos_fx's analysis.

    An entry survives when the output depends on it (non-zero gradient, in float64 on a
    random batch with smooth activations) and the op reading it still computes something
    input-dependent (otherwise the op became a constant and its parameters were folded).
    Whether an op's output varies is read off two runs of the gated graph on different batches.
    `n_in` is the feature count of a (batch, features) input, or an example input tensor.
    """
    w = copy.deepcopy(wrapped).double().eval()
    gen = torch.Generator().manual_seed(seed)
    shape = (16, n_in) if isinstance(n_in, int) else (16, *n_in.shape[1:])
    x1 = torch.randn(shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(shape, generator=gen, dtype=torch.float64)
    varies = _varying_nodes(w, x1, x2)
    out = w(x1)
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    params = {name: p for name, p in w.named_parameters() if not name.startswith("lumos_gates.")}
    grads = torch.autograd.grad((out * r).sum(), list(params.values()), allow_unused=True)
    readers = _readers(w)
    total = 0
    for (name, _), grad in zip(params.items(), grads):
        if grad is not None and any(varies.get(n, False) for n in readers.get(name, ())):
            total += alive_entries(grad)
    return total


def alive_entries(grad: torch.Tensor) -> int:
    """Entries of a parameter whose slices along dim 0 and dim 1 both carry gradient: a
    conv's kernel taps over padding or unpooled positions may get none, yet stay."""
    nonzero = grad != 0
    if grad.dim() < 2:
        return int(nonzero.sum())
    rows = int(nonzero.flatten(1).any(1).sum())
    cols = int(nonzero.transpose(0, 1).flatten(1).any(1).sum())
    return rows * cols * grad[0, 0].numel()


class _Recorder(fx.Interpreter):
    """Runs a GraphModule and keeps every node's value."""

    def __init__(self, module):
        super().__init__(module)
        self.values = {}

    def run_node(self, n):
        self.values[n.name] = result = super().run_node(n)
        return result


def _varying_nodes(w: fx.GraphModule, x1, x2) -> dict[str, bool]:
    values = []
    for x in (x1, x2):
        recorder = _Recorder(w)
        with torch.no_grad():
            recorder.run(x)
        values.append(recorder.values)
    return {name: isinstance(v, torch.Tensor) and v.shape == values[1][name].shape
            and not torch.equal(v, values[1][name]) for name, v in values[0].items()}


def _readers(w: fx.GraphModule) -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {}
    for node in w.graph.nodes:
        if node.op == "call_module":
            for pname, _ in w.get_submodule(node.target).named_parameters():
                readers.setdefault(f"{node.target}.{pname}", []).append(node.name)
        elif node.op == "get_attr":  # a weight a gate folded into is read by the layer behind the scaling
            users = [v for u in node.users for v in (u.users if info(u).gate is GateRole.FOLD else [u])]
            readers.setdefault(node.target, []).extend(u.name for u in users)
    return readers


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def line_of(fn, text: str) -> int:
    """The line number of the first line of `fn`'s source that contains `text`."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)
