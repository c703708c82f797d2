"""Hostile models for hypothesis: ordinary-but-awkward PyTorch code a scientist writes.

A :class:`Program` is a small MLP written as a list of steps over a list of tensors (index 0
is the input ``x``), like ``support.ProgramMLP``, so hypothesis can shrink it. Besides the
ordinary layers (Linear, activations, residual adds, cat) a step can be one of the awkward
things real models do in ``forward``: update buffers (``self.count += 1``, a running mean
written by hand, in place or by reassignment), work in place on the input or on
intermediates, multiply by NumPy constants, branch on ``isinstance`` of a second input that
is a tensor or None, call one Linear twice or share a weight between two, keep Python-side
state (``self.calls += 1``, ``self.last = ...``, ``self.history.append(...)``). The program
also chooses the forward's signature (``x``; ``x, e=None``; ``*args``; ``x, e=None,
**kwargs``; a dict ``batch``) and its output (a tensor, a tuple, a dict).

Every feature's code is on its own line(s) of :meth:`HostileBase.run_program` (or of the
forward, for the signatures), tagged with a ``# [feature]`` comment; :data:`FEATURE_LINES`
maps each feature to its line numbers, so an error naming ``hostile_programs.py:LINE`` tells
which feature caused it (``forward_call`` tags the forward's ``return self.run_program(...)``
line, which is nobody's offending code: an error naming only it names the wrong frame). :data:`POLICY`
says what lumos_fx must do with each feature: ``work`` (kept, same function), ``either``
(works, or is refused with a LumosError naming its line) or ``refuse`` (instrument raises a
LumosError naming its line: the graph cannot hold Python-side state).
"""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn


@dataclasses.dataclass(frozen=True)
class Program:
    """A hostile model. `steps` (each reads ``t[i]``; all but the Python-state steps append
    one tensor to ``t``):

    ("linear", i, width)            nn.Linear
    ("act", i, kind)                relu (nn.ReLU), tanh (torch.tanh), gelu (F.gelu)
    ("add", i, j)                   t[i] + t[j] (same width: a residual)
    ("cat", i, j)                   torch.cat([t[i], t[j]], dim=1)
    ("count", i)                    self.count += 1 (0-dim long buffer); t[i] + 0.01 * self.count
    ("run_inplace", i)              self.run_a.mul_(0.9).add_(0.1 * t[i].detach().mean(0)); t[i] - self.run_a
    ("run_assign", i)               self.run_b = 0.9 * self.run_b + 0.1 * ...; t[i] - self.run_b
    ("inplace", i, kind[, k])       mul_ | add_ | relu_ | f_relu | relu_module | setitem (h[:, :k] *= 0.5)
    ("numpy", i, kind)              sqrt | f32 | f64 | array (t[i] * torch.from_numpy(width-long array)) | pi
    ("isinstance", i, kind)         isinstance | jit | not_none: t[i] + self.mods[k](e) when e is a tensor
    ("tied_call", i, j)             the Linear of step j called again
    ("tied_weight", i, j)           a new Linear whose weight is step j's Linear's weight Parameter
    ("calls", i)                    self.calls += 1 (a Python int)
    ("last", i)                     self.last = t[i].mean()
    ("history", i)                  self.history.append(t[i].detach().mean())

    sig: "x" | "x_e" | "args" | "kwargs" | "dict"; e: width of the second input (0: None, or
    not passed). out: ("single",) | ("tuple", j) | ("dict", j) (the second output is a Linear
    over t[j]). warm: the model was called once (under no_grad) before instrument().
    """

    n_in: int
    steps: tuple
    n_out: int = 2
    sig: str = "x"
    e: int = 0
    out: tuple = ("single",)
    warm: bool = False

    def features(self) -> list[str]:
        """The features this program uses, as tags of FEATURE_LINES (in order, no repeats)."""
        names = [f"sig:{self.sig}", f"out:{self.out[0]}", "head"]
        for step in self.steps:
            names.append(step_feature(step))
        return list(dict.fromkeys(names))


def step_feature(step: tuple) -> str:
    op = step[0]
    if op in ("act", "inplace", "numpy", "isinstance"):
        return f"{op}:{step[2]}"
    return op


# ---- the model ---------------------------------------------------------------------------


class HostileBase(nn.Module):
    """The program's interpreter. Subclasses only differ in the forward's signature."""

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.steps = program.steps
        self.out_kind = program.out[0]
        self.out_j = program.out[1] if len(program.out) > 1 else None
        widths, _ = program_widths(program)
        self.mods = nn.ModuleList()
        self.np_scales = {}
        self.calls = 0
        self.last = None
        self.history = []
        for k, step in enumerate(program.steps):
            op, i = step[0], step[1]
            mod: nn.Module = nn.Identity()
            if op == "linear":
                mod = nn.Linear(widths_before(program, k)[i], step[2])
            elif op == "act" and step[2] == "relu":
                mod = nn.ReLU()
            elif op == "inplace" and step[2] == "relu_module":
                mod = nn.ReLU(inplace=True)
            elif op == "isinstance":
                mod = nn.Linear(max(program.e, 1), widths_before(program, k)[i])
            elif op == "tied_weight":
                source = self.mods[step[2]]
                mod = nn.Linear(source.in_features, source.out_features)
                mod.weight = source.weight
            elif op == "numpy" and step[2] == "array":
                self.np_scales[k] = np.linspace(0.5, 1.5, widths_before(program, k)[i], dtype=np.float32)
            elif op == "count":
                self.register_buffer("count", torch.tensor(0))
            elif op == "run_inplace":
                self.register_buffer("run_a", torch.randn(widths_before(program, k)[i]))
            elif op == "run_assign":
                self.register_buffer("run_b", torch.randn(widths_before(program, k)[i]))
            self.mods.append(mod)
        self.head = nn.Linear(widths[-1], program.n_out)
        if self.out_j is not None:
            self.head2 = nn.Linear(widths[self.out_j], 2)

    def run_program(self, x, e):
        t = [x]
        for k, step in enumerate(self.steps):
            op, i = step[0], step[1]
            if op == "linear":
                t.append(self.mods[k](t[i]))  # [linear]
            elif op == "act":
                if step[2] == "relu":
                    t.append(self.mods[k](t[i]))  # [act:relu]
                elif step[2] == "tanh":
                    t.append(torch.tanh(t[i]))  # [act:tanh]
                else:
                    t.append(F.gelu(t[i]))  # [act:gelu]
            elif op == "add":
                t.append(t[i] + t[step[2]])  # [add]
            elif op == "cat":
                t.append(torch.cat([t[i], t[step[2]]], dim=1))  # [cat]
            elif op == "count":
                self.count += 1  # [count]
                t.append(t[i] + 0.01 * self.count)  # [count]
            elif op == "run_inplace":
                self.run_a.mul_(0.9).add_(0.1 * t[i].detach().mean(0))  # [run_inplace]
                t.append(t[i] - self.run_a)  # [run_inplace]
            elif op == "run_assign":
                self.run_b = 0.9 * self.run_b + 0.1 * t[i].detach().mean(0)  # [run_assign]
                t.append(t[i] - self.run_b)  # [run_assign]
            elif op == "inplace":
                if step[2] == "mul_":
                    t.append(t[i].mul_(2.0))  # [inplace:mul_]
                elif step[2] == "add_":
                    t.append(t[i].add_(1))  # [inplace:add_]
                elif step[2] == "relu_":
                    t.append(torch.relu_(t[i]))  # [inplace:relu_]
                elif step[2] == "f_relu":
                    t.append(F.relu(t[i], inplace=True))  # [inplace:f_relu]
                elif step[2] == "relu_module":
                    t.append(self.mods[k](t[i]))  # [inplace:relu_module]
                else:
                    h = t[i]
                    h[:, : step[3]] *= 0.5  # [inplace:setitem]
                    t.append(h)
            elif op == "numpy":
                if step[2] == "sqrt":
                    t.append(t[i] * np.sqrt(2 / np.pi))  # [numpy:sqrt]
                elif step[2] == "f32":
                    t.append(np.float32(1.5) * t[i])  # [numpy:f32]
                elif step[2] == "f64":
                    t.append(t[i] + np.float64(0.1))  # [numpy:f64]
                elif step[2] == "array":
                    t.append(t[i] * torch.from_numpy(self.np_scales[k]))  # [numpy:array]
                else:
                    t.append(t[i] / np.pi)  # [numpy:pi]
            elif op == "isinstance":
                h = t[i]
                if step[2] == "isinstance":
                    if isinstance(e, torch.Tensor):  # [isinstance:isinstance]
                        h = h + self.mods[k](e)  # [isinstance:isinstance]
                elif step[2] == "jit":
                    if torch.jit.isinstance(e, torch.Tensor):  # [isinstance:jit]
                        h = h + self.mods[k](e)  # [isinstance:jit]
                elif e is not None:  # [isinstance:not_none]
                    h = h + self.mods[k](e)  # [isinstance:not_none]
                t.append(h)
            elif op == "tied_call":
                t.append(self.mods[step[2]](t[i]))  # [tied_call]
            elif op == "tied_weight":
                t.append(self.mods[k](t[i]))  # [tied_weight]
            elif op == "calls":
                self.calls += 1  # [calls]
            elif op == "last":
                self.last = t[i].mean()  # [last]
            elif op == "history":
                self.history.append(t[i].detach().mean())  # [history]
        y = self.head(t[-1])  # [head]
        if self.out_kind == "tuple":
            return y, self.head2(t[self.out_j])  # [out:tuple]
        if self.out_kind == "dict":
            return {"y": y, "z": self.head2(t[self.out_j])}  # [out:dict]
        return y  # [out:single]


class HostileX(HostileBase):
    def forward(self, x):
        return self.run_program(x, None)  # [forward_call]


class HostileXE(HostileBase):
    def forward(self, x, e=None):
        return self.run_program(x, e)  # [forward_call]


class HostileArgs(HostileBase):
    def forward(self, *args):
        x = args[0]  # [sig:args]
        e = args[1] if len(args) > 1 else None  # [sig:args]
        return self.run_program(x, e)  # [forward_call]


class HostileKwargs(HostileBase):
    def forward(self, x, e=None, **kwargs):
        x = x * kwargs.get("scale", 1.0)  # [sig:kwargs]
        return self.run_program(x, e)  # [forward_call]


class HostileDict(HostileBase):
    def forward(self, batch):
        x = batch["x"]  # [sig:dict]
        e = batch.get("t")  # [sig:dict]
        return self.run_program(x, e)  # [forward_call]


CLASSES = {"x": HostileX, "x_e": HostileXE, "args": HostileArgs, "kwargs": HostileKwargs, "dict": HostileDict}


# ---- feature lines and policies ------------------------------------------------------------


def _feature_lines() -> dict[str, list[int]]:
    lines: dict[str, list[int]] = {}
    with open(__file__, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            m = re.search(r"#\s*\[([\w:]+)\]\s*$", line)
            if m:
                lines.setdefault(m.group(1), []).append(lineno)
    return lines


FEATURE_LINES: dict[str, list[int]] = _feature_lines()
LINE_FEATURE: dict[int, str] = {n: f for f, ns in FEATURE_LINES.items() for n in ns}

REFUSE = {"calls", "last", "history"}  # Python-side state: the graph cannot hold it
EITHER = {"isinstance:isinstance", "isinstance:jit", "inplace:setitem"}


def policy(feature: str) -> str:
    """'refuse', 'either' or 'work' (see the module docstring)."""
    if feature in REFUSE:
        return "refuse"
    if feature in EITHER:
        return "either"
    return "work"


# ---- building ------------------------------------------------------------------------------


def widths_before(program: Program, k: int) -> list[int]:
    """The widths of t[0], t[1], ... before step k runs."""
    return program_widths(program, upto=k)[0]


def program_widths(program: Program, upto: int | None = None) -> tuple[list[int], dict[int, int]]:
    """(width of every tensor of t, {step index of a Linear: its in-width})."""
    widths = [program.n_in]
    linear_in = {}
    steps = program.steps if upto is None else program.steps[:upto]
    for k, step in enumerate(steps):
        op, i = step[0], step[1]
        if op == "linear":
            linear_in[k] = widths[i]
            widths.append(step[2])
        elif op == "cat":
            widths.append(widths[i] + widths[step[2]])
        elif op in ("tied_call", "tied_weight"):
            widths.append(program.steps[step[2]][2])
        elif op in ("calls", "last", "history"):
            pass
        else:
            widths.append(widths[i])
    return widths, linear_in


def make_inputs(program: Program, batch: int, seed: int) -> tuple:
    """The forward's positional arguments, a batch of `batch` samples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, program.n_in, generator=gen)
    e = torch.randn(batch, program.e, generator=gen) if program.e else None
    if program.sig == "x":
        return (x,)
    if program.sig == "dict":
        return ({"x": x, "t": e} if e is not None else {"x": x},)
    return (x, e) if e is not None else (x,)


def build(program: Program, seed: int) -> tuple[nn.Module, tuple]:
    """(model, example inputs of batch 8). With ``program.warm`` the model has already been
    called once (under no_grad, on other inputs), so its buffers and Python state moved."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLASSES[program.sig](program)
    if program.warm:
        with torch.no_grad():
            model(*make_inputs(program, 5, seed + 7))
    return model, make_inputs(program, 8, seed)


def untrainable(program: Program, seed: int = 0) -> str | None:
    """Why a training step of the model fails (an in-place op on a tensor autograd saved),
    or None: such a model is not one a scientist could have trained, so it is skipped."""
    model, ex = build(program, seed)
    model.train()
    try:
        out = model(*ex)
        leaves = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, tuple) else [out]
        sum(y.sum() for y in leaves).backward()
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


# ---- the strategy --------------------------------------------------------------------------

# A step draws a category, then a kind; repeats are the weights (the first entry is what
# hypothesis shrinks towards).
CATEGORIES = (["ordinary"] * 6 + ["inplace"] * 2 + ["numpy"] * 2 + ["buffer"] * 2 + ["isinstance"] * 2
              + ["tied"] * 3 + ["pystate"] * 1)
KINDS = {
    "ordinary": ["linear", "linear", "linear", "act:relu", "act:tanh", "act:gelu", "add", "cat"],
    "inplace": ["inplace:mul_", "inplace:add_", "inplace:relu_", "inplace:f_relu", "inplace:relu_module",
                "inplace:setitem"],
    "numpy": ["numpy:sqrt", "numpy:f32", "numpy:f64", "numpy:array", "numpy:pi"],
    "buffer": ["count", "run_inplace", "run_assign"],
    "isinstance": ["isinstance:not_none", "isinstance:isinstance", "isinstance:jit"],
    "tied": ["tied_call", "tied_weight"],
    "pystate": ["calls", "last", "history"],
}
SIGS = ["x", "x_e", "args", "kwargs", "dict"]
OUTS = ["single", "tuple", "dict"]


@st.composite
def hostile_programs(draw, max_steps: int = 7, exclude=()) -> Program:
    """A random :class:`Program` of up to `max_steps` steps, with none of the features named
    in `exclude` (step kinds such as "numpy:f32" or "count", "sig:args", "out:dict", "warm"),
    e.g. to look past a failure that masks the others."""
    exclude = set(exclude)
    sig = draw(st.sampled_from([s for s in SIGS if f"sig:{s}" not in exclude]))
    e = 0 if sig == "x" else draw(st.sampled_from([0, 2, 1, 3]))
    n_in = draw(st.integers(2, 6))
    widths = [n_in]
    linear_in: dict[int, int] = {}
    used = set()
    steps = []
    kinds = {c: [kd for kd in KINDS[c] if kd not in exclude] for c in KINDS}
    for k in range(draw(st.integers(1, max_steps))):
        i = draw(st.integers(max(0, len(widths) - 3), len(widths) - 1))
        w = widths[i]
        same = [j for j in range(len(widths)) if j != i and widths[j] == w]
        # A Linear called again, or its weight shared, on any tensor of its in-width.
        tied = [(a, j) for j, win in linear_in.items() for a in range(len(widths)) if widths[a] == win]

        def available(kind: str) -> bool:
            if kind == "add":
                return bool(same)
            if kind in ("run_inplace", "run_assign"):
                return kind not in used
            if kind == "inplace:setitem":
                return w >= 2
            if kind.startswith("isinstance"):
                return sig != "x"
            if kind.startswith("tied"):
                return bool(tied)
            return True

        cats = [c for c in CATEGORIES if any(available(kd) for kd in kinds[c])]
        kind = draw(st.sampled_from([kd for kd in kinds[draw(st.sampled_from(cats))] if available(kd)]))
        used.add(kind)
        op, _, sub = kind.partition(":")
        if op == "linear":
            out = draw(st.integers(1, 8))
            steps.append(("linear", i, out))
            linear_in[k] = w
            widths.append(out)
        elif op in ("add", "cat"):
            j = draw(st.sampled_from(same)) if op == "add" else draw(st.integers(0, len(widths) - 1))
            steps.append((op, i, j))
            widths.append(w + widths[j] if op == "cat" else w)
        elif op in ("tied_call", "tied_weight"):
            i, j = draw(st.sampled_from(tied))
            steps.append((op, i, j))
            widths.append(steps[j][2])
        elif sub == "setitem":
            steps.append(("inplace", i, "setitem", draw(st.integers(1, w - 1))))
            widths.append(w)
        elif sub:
            steps.append((op, i, sub))
            widths.append(w)
        elif op in ("calls", "last", "history"):
            steps.append((op, i))
        else:  # count, run_inplace, run_assign
            steps.append((op, i))
            widths.append(w)
    out_kind = draw(st.sampled_from([o for o in OUTS if f"out:{o}" not in exclude]))
    out = (out_kind,) if out_kind == "single" else (out_kind, draw(st.integers(0, len(widths) - 1)))
    return Program(n_in=n_in, steps=tuple(steps), n_out=draw(st.integers(1, 3)), sig=sig, e=e, out=out,
                   warm="warm" not in exclude and draw(st.booleans()))


def program_size(program: Program) -> tuple:
    """For picking the smallest program of a failure class."""
    return (len(program.steps), len(program.features()), program.e > 0, program.warm, len(repr(program)))


def clone_tree(value):
    """A copy of nested tuples / lists / dicts of tensors, every tensor cloned."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: clone_tree(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(clone_tree(v) for v in value)
    return copy.deepcopy(value)


# ---- a program as plain Python ----------------------------------------------------------------

_SIG_SOURCE = {
    "x": ["def forward(self, x):", "    e = None"],
    "x_e": ["def forward(self, x, e=None):"],
    "args": ["def forward(self, *args):", "    x = args[0]", "    e = args[1] if len(args) > 1 else None"],
    "kwargs": ["def forward(self, x, e=None, **kwargs):", '    x = x * kwargs.get("scale", 1.0)'],
    "dict": ["def forward(self, batch):", '    x = batch["x"]', '    e = batch.get("t")'],
}
_STEP_SOURCE = {
    "linear": ["h{n} = self.m{k}(h{i})"],
    "act:relu": ["h{n} = self.m{k}(h{i})"],
    "act:tanh": ["h{n} = torch.tanh(h{i})"],
    "act:gelu": ["h{n} = F.gelu(h{i})"],
    "add": ["h{n} = h{i} + h{j}"],
    "cat": ["h{n} = torch.cat([h{i}, h{j}], dim=1)"],
    "count": ["self.count += 1", "h{n} = h{i} + 0.01 * self.count"],
    "run_inplace": ["self.run_a.mul_(0.9).add_(0.1 * h{i}.detach().mean(0))", "h{n} = h{i} - self.run_a"],
    "run_assign": ["self.run_b = 0.9 * self.run_b + 0.1 * h{i}.detach().mean(0)", "h{n} = h{i} - self.run_b"],
    "inplace:mul_": ["h{n} = h{i}.mul_(2.0)"],
    "inplace:add_": ["h{n} = h{i}.add_(1)"],
    "inplace:relu_": ["h{n} = torch.relu_(h{i})"],
    "inplace:f_relu": ["h{n} = F.relu(h{i}, inplace=True)"],
    "inplace:relu_module": ["h{n} = self.m{k}(h{i})"],
    "inplace:setitem": ["h{i}[:, :{j}] *= 0.5", "h{n} = h{i}"],
    "numpy:sqrt": ["h{n} = h{i} * np.sqrt(2 / np.pi)"],
    "numpy:f32": ["h{n} = np.float32(1.5) * h{i}"],
    "numpy:f64": ["h{n} = h{i} + np.float64(0.1)"],
    "numpy:array": ["h{n} = h{i} * torch.from_numpy(self.scale{k})"],
    "numpy:pi": ["h{n} = h{i} / np.pi"],
    "isinstance:isinstance": ["h{n} = h{i}", "if isinstance(e, torch.Tensor):", "    h{n} = h{n} + self.m{k}(e)"],
    "isinstance:jit": ["h{n} = h{i}", "if torch.jit.isinstance(e, torch.Tensor):", "    h{n} = h{n} + self.m{k}(e)"],
    "isinstance:not_none": ["h{n} = h{i}", "if e is not None:", "    h{n} = h{n} + self.m{k}(e)"],
    "tied_call": ["h{n} = self.m{j}(h{i})"],
    "tied_weight": ["h{n} = self.m{k}(h{i})"],
    "calls": ["self.calls += 1"],
    "last": ["self.last = h{i}.mean()"],
    "history": ["self.history.append(h{i}.detach().mean())"],
}


def model_source(program: Program) -> str:
    """The program as a plain ``class Model(nn.Module)`` (one line per feature), with its
    imports: the same model as ``build`` makes (``mods.k`` is ``m{k}`` here)."""
    widths, _ = program_widths(program)
    init = ["def __init__(self):", "    super().__init__()"]
    body = list(_SIG_SOURCE[program.sig]) + ["    h0 = x"]
    names = [0]  # t index -> h variable number
    n = 0
    for k, step in enumerate(program.steps):
        feature, op, i = step_feature(step), step[0], step[1]
        w = widths_before(program, k)[i]
        if op == "linear":
            init.append(f"    self.m{k} = nn.Linear({w}, {step[2]})")
        elif feature == "act:relu":
            init.append(f"    self.m{k} = nn.ReLU()")
        elif feature == "inplace:relu_module":
            init.append(f"    self.m{k} = nn.ReLU(inplace=True)")
        elif op == "isinstance":
            init.append(f"    self.m{k} = nn.Linear({max(program.e, 1)}, {w})")
        elif op == "tied_weight":
            j = step[2]
            init.append(f"    self.m{k} = nn.Linear({w}, {program.steps[j][2]})")
            init.append(f"    self.m{k}.weight = self.m{j}.weight  # tied")
        elif feature == "numpy:array":
            init.append(f"    self.scale{k} = np.linspace(0.5, 1.5, {w}, dtype=np.float32)")
        elif op == "count":
            init.append('    self.register_buffer("count", torch.tensor(0))')
        elif op in ("run_inplace", "run_assign"):
            init.append(f'    self.register_buffer("{"run_a" if op == "run_inplace" else "run_b"}", torch.randn({w}))')
        elif op in ("calls", "last", "history"):
            default = {"calls": "0", "last": "None", "history": "[]"}[op]
            line = f"    self.{op} = {default}"
            if line not in init:
                init.append(line)
        appends = op not in ("calls", "last", "history")
        if appends:
            n += 1
        j = step[3] if feature == "inplace:setitem" else (names[step[2]] if op in ("add", "cat") else
                                                          step[2] if len(step) > 2 else None)
        for line in _STEP_SOURCE[feature]:
            body.append("    " + line.format(n=n, i=names[i], j=j, k=k))
        if appends:
            names.append(n)
    init.append(f"    self.head = nn.Linear({widths[-1]}, {program.n_out})")
    body.append(f"    y = self.head(h{names[-1]})")
    if program.out[0] != "single":
        init.append(f"    self.head2 = nn.Linear({widths[program.out[1]]}, 2)")
        z = f"self.head2(h{names[program.out[1]]})"
        body.append(f"    return y, {z}" if program.out[0] == "tuple" else f'    return {{"y": y, "z": {z}}}')
    else:
        body.append("    return y")
    return "\n".join([
        "import copy", "", "import numpy as np", "import torch", "import torch.nn.functional as F",
        "from torch import nn", "from torch.utils._pytree import tree_flatten, tree_map", "", "import lumos_fx", "", "",
        "class Model(nn.Module):",
        *("    " + line for line in init), "",
        *("    " + line for line in body),
    ]) + "\n"


def program_source(program: Program, setting: str = "open", seed: int = 0) -> str:
    """A standalone script: :func:`model_source`, then instrument, the gates set as
    `setting`, prune, and the checks of tests/test_hostile.py (in short)."""

    def inputs(batch: int, name: str) -> list[str]:
        lines = [f"x = torch.randn({batch}, {program.n_in})"]
        if program.e:
            lines.append(f"e = torch.randn({batch}, {program.e})")
        pos = {"x": "(x,)", "dict": '({"x": x, "t": e},)' if program.e else '({"x": x},)'}.get(
            program.sig, "(x, e)" if program.e else "(x,)")
        return lines + [f"{name} = {pos}"]

    gates = {
        "open": "g.log_alpha.fill_(6.0)",
        "closed": "g.log_alpha.fill_(-6.0)",
        "random": "g.log_alpha.copy_(torch.rand(g.log_alpha.shape) * 12 - 6)",
        "half": "g.log_alpha.copy_(torch.where(torch.rand(g.log_alpha.shape) < 0.5, -4.0, "
                "torch.rand(g.log_alpha.shape) * 4 - 2))",
    }[setting]
    script = [model_source(program), "", f"torch.manual_seed({seed})", "model = Model()"]
    if program.warm:
        script += [*inputs(5, "warm"), "with torch.no_grad():", "    model(*warm)  # the user tried it once"]
    script += [
        *inputs(8, "ex"), "ex_copy, reference = tree_map(torch.clone, ex), copy.deepcopy(model)",
        "wrapped = lumos_fx.instrument(model, ex)",
        "assert all(map(torch.equal, tree_flatten(ex)[0], tree_flatten(ex_copy)[0])), 'example inputs mutated'",
        *inputs(13, "fresh"), "",
        "def run(m, n=2):  # two calls in a row from m's current state, on copies of fresh",
        "    m = copy.deepcopy(m).eval()",
        "    with torch.no_grad():",
        "        return [m(*tree_map(torch.clone, fresh)) for _ in range(n)]", "",
        "torch.testing.assert_close(run(wrapped), run(reference), atol=1e-5, rtol=1e-4)  # gates open",
        "with torch.no_grad():",
        "    for g in lumos_fx.gates(wrapped).values():",
        f"        {gates}",
        "pruned = lumos_fx.prune(wrapped)",
        "torch.testing.assert_close(run(pruned), run(wrapped), atol=1e-5, rtol=1e-4)",
        'print("ok")',
    ]
    return "\n".join(script) + "\n"
