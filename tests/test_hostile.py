"""Hostile models (issue 16, item 7): ordinary-but-awkward PyTorch a scientist writes.

The property, on every generated model (tests/hostile_programs.py) with its example inputs:

1. ``instrument(model, ex)`` succeeds, or raises a LumosError naming the source line
   (``hostile_programs.py:LINE``) of a feature it may refuse; anything else fails. A model
   with Python-side state (``self.calls += 1``, ``self.last = ...``, ``self.history.append``)
   must be refused; a model using only features that must work must not be.
2. a freshly instrumented model (gates open) computes what the model computes, on fresh
   inputs of another batch size, for two calls in a row from the same state (so a buffer
   update the graph dropped shows on the second call);
3. after random gates, ``prune(wrapped)`` succeeds (or refuses as in 1) without changing
   ``wrapped``, and computes what ``wrapped.eval()`` computes, two calls in a row from the
   state both are in right after prune;
4. the user's model (state_dict bitwise, parameter ties, Python attributes) and example
   tensors are never modified, whether instrument/prune succeeded or raised.

``python tests/test_hostile.py --report N`` runs N random cases without stopping at the
first failure and prints a table of the failure classes with the smallest program of each
(``--source``: as a standalone script), the outcomes per feature, and the outcome of each
per-feature example; ``--exclude sig:args,count,...`` leaves features out, to look past a
failure that masks the others; ``--seed S`` makes a random run instead of the derandomized one.
LUMOS_HOSTILE_EXAMPLES sets the property test's example count (default 200).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lumos_fx  # noqa: E402
from hostile_programs import (  # noqa: E402
    FEATURE_LINES, LINE_FEATURE, Program, build, clone_tree, hostile_programs, make_inputs, model_source, policy, program_size,
    program_source, untrainable,
)
from support import GATE_SETTINGS, set_gates  # noqa: E402

EXAMPLES = int(os.environ.get("LUMOS_HOSTILE_EXAMPLES", "200"))
# The tests deep-copy models with a dict input; torch's copy of their pytree specs warns of its own LeafSpec.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\):FutureWarning")
FRESH_BATCH = 13
LINE = re.compile(r"hostile_programs\.py:(\d+)")


class HostileFailure(AssertionError):
    """A broken property; `kind` is its failure class (for the report)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}\n{detail}" if detail else kind)
        self.kind = kind


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def _normalise(text: str) -> str:
    """A message's first line without what varies between cases: numbers, paths, shapes."""
    text = re.sub(r"hostile_programs\.py:\d+:? .*?# \[([\w:]+)\]", r"hostile_programs.py:LINE [\1]", text)
    text = re.sub(r"/[^\s:'\"]*/", "", text)
    text = re.sub(r"Hostile\w*", "Hostile", text)
    text = re.sub(r"\d+", "N", text)
    return text[:160]


# ---- the user's model and tensors must not change ----------------------------------------


def _snapshot(value):
    """A comparable copy of nested Python state (tensors cloned, arrays copied)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().clone())
    if isinstance(value, np.ndarray):
        return ("ndarray", value.copy())
    if isinstance(value, dict):
        return ("dict", {k: _snapshot(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_snapshot(v) for v in value])
    return ("value", copy.deepcopy(value))


def _same(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "tensor":
        x, y = a[1], b[1]
        return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if a[0] == "ndarray":
        return a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1])
    if a[0] == "dict":
        return a[1].keys() == b[1].keys() and all(_same(a[1][k], b[1][k]) for k in a[1])
    if a[0] in ("list", "tuple"):
        return len(a[1]) == len(b[1]) and all(_same(x, y) for x, y in zip(a[1], b[1]))
    return a[1] == b[1]


def python_state(model: torch.nn.Module):
    """Every module's public attributes and training flag, and which tensor objects the
    model's parameters and buffers are (ties included)."""
    attrs = {name: _snapshot({k: v for k, v in vars(m).items() if not k.startswith("_")})
             for name, m in model.named_modules()}
    identity = [(n, id(p)) for n, p in model.named_parameters(remove_duplicate=False)]
    identity += [(n, id(b)) for n, b in model.named_buffers(remove_duplicate=False)]
    return attrs, identity


def state_snapshot(module: torch.nn.Module):
    return _snapshot(dict(module.state_dict(keep_vars=False)))


class Untouched:
    """What the user handed over, to check later that lumos_fx left it alone."""

    def __init__(self, model, example_inputs) -> None:
        self.model, self.example_inputs = model, example_inputs
        self.state = state_snapshot(model)
        self.attrs, self.identity = python_state(model)
        self.inputs = _snapshot(example_inputs)

    def check(self, stage: str) -> None:
        if not _same(state_snapshot(self.model), self.state):
            raise HostileFailure(f"{stage} mutated the user's model (state_dict)")
        attrs, identity = python_state(self.model)
        if identity != self.identity:
            raise HostileFailure(f"{stage} mutated the user's model (parameter/buffer objects or ties)")
        changed = [name for name in attrs if name not in self.attrs or not _same(attrs[name], self.attrs[name])]
        if changed or attrs.keys() != self.attrs.keys():
            raise HostileFailure(f"{stage} mutated the user's model (Python attributes of {changed or 'modules'})")
        if not _same(_snapshot(self.example_inputs), self.inputs):
            raise HostileFailure(f"{stage} mutated the user's example inputs")


# ---- errors ----------------------------------------------------------------------------------


def check_refusal(program: Program, err: BaseException, stage: str) -> None:
    """A LumosError is fine when it names the line of a feature of the program that
    lumos_fx may refuse (policy 'either' or 'refuse')."""
    if not isinstance(err, lumos_fx.LumosError):
        raise HostileFailure(f"{stage} raised {type(err).__name__}: {_normalise(_first_line(err))}",
                             str(err)) from err
    message, first = str(err), f"{type(err).__name__}: {_normalise(_first_line(err))}"
    named = {int(n) for n in LINE.findall(message)}
    if not named:
        raise HostileFailure(f"{stage}: a LumosError naming no hostile_programs.py line: {first}", message) from err
    features = sorted({LINE_FEATURE.get(n, f"untagged line {n}") for n in named})
    refusable = {f for f in program.features() if policy(f) != "work"}
    if {LINE_FEATURE.get(n) for n in named} & refusable:
        return
    # Named lines of features that must work (or only the forward's `return
    # self.run_program(...)`, the wrong frame): one class whatever else the program holds.
    raise HostileFailure(f"{stage} refused, naming {features}: {first}",
                         f"the program's refusable features: {sorted(refusable)}\n{message}") from err


# ---- outputs ----------------------------------------------------------------------------------


def _leaves(value, path="out"):
    if isinstance(value, dict):
        for k in value:
            yield from _leaves(value[k], f"{path}[{k!r}]")
    elif isinstance(value, (tuple, list)):
        for j, v in enumerate(value):
            yield from _leaves(v, f"{path}[{j}]")
    else:
        yield path, value


def _structure(value):
    if isinstance(value, dict):
        return ("dict", tuple((k, _structure(v)) for k, v in value.items()))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_structure(v) for v in value))
    return "leaf"


def assert_same_outputs(ref, out, what: str) -> None:
    if _structure(ref) != _structure(out):
        raise HostileFailure(f"mismatch: {what}: output structure differs",
                             f"expected {_structure(ref)}, got {_structure(out)}")
    ref_leaves, out_leaves = list(_leaves(ref)), list(_leaves(out))
    scale = max([r.abs().max().item() for _, r in ref_leaves if isinstance(r, torch.Tensor) and r.numel()] + [1e-6])
    for (path, r), (_, o) in zip(ref_leaves, out_leaves):
        try:
            torch.testing.assert_close(o, r, atol=1e-5 * scale, rtol=1e-4)
        except AssertionError as err:
            raise HostileFailure(f"mismatch: {what}", f"{path}: {err}") from None


def compare(reference, candidate, fresh: tuple, what: str) -> None:
    """Copies of both, from their current states, in eval mode: two calls on `fresh`."""
    try:
        reference, candidate = copy.deepcopy(reference), copy.deepcopy(candidate)
    except Exception as err:
        raise HostileFailure(f"deepcopy failed ({what}): {type(err).__name__}: {_normalise(_first_line(err))}",
                             str(err)) from err
    reference.eval()
    candidate.eval()
    with torch.no_grad():
        for call in (1, 2):
            try:
                ref = reference(*clone_tree(fresh))
            except Exception as err:
                raise HostileFailure(f"reference raised on fresh inputs ({what}): {type(err).__name__}: "
                                     f"{_normalise(_first_line(err))}", str(err)) from err
            try:
                out = candidate(*clone_tree(fresh))
            except Exception as err:
                raise HostileFailure(f"raised on fresh inputs ({what}, call {call}): {type(err).__name__}: "
                                     f"{_normalise(_first_line(err))}", str(err)) from err
            assert_same_outputs(ref, out, f"{what} (call {call})")


# ---- the property -----------------------------------------------------------------------------


class Untrainable(Exception):
    """The generated model cannot take a training step: not a model anyone hands over."""


def check_case(program: Program, setting: str = "half", seed: int = 0) -> str:
    """Run the property on one program; raise HostileFailure or return what happened."""
    why = untrainable(program, seed)
    if why is not None:
        raise Untrainable(why)
    model, ex = build(program, seed)
    reference = copy.deepcopy(model)  # the user's model in its starting state
    untouched = Untouched(model, ex)
    fresh = make_inputs(program, FRESH_BATCH, seed + 1)
    refuse = sorted(f for f in program.features() if policy(f) == "refuse")

    try:
        wrapped = lumos_fx.instrument(model, ex)
    except Exception as err:
        check_refusal(program, err, "instrument")
        untouched.check("instrument (refusing)")
        return "refused by instrument"
    untouched.check("instrument")
    if refuse:
        raise HostileFailure(f"instrument accepted Python-side state {refuse}")
    compare(reference, wrapped, fresh, "instrumented (gates open) vs model")

    set_gates(wrapped, setting, seed)
    before = state_snapshot(wrapped)
    try:
        pruned = lumos_fx.prune(wrapped)
    except Exception as err:
        check_refusal(program, err, "prune")
        untouched.check("prune (refusing)")
        return "refused by prune"
    untouched.check("prune")
    if not _same(state_snapshot(wrapped), before):
        raise HostileFailure("prune changed the instrumented model's state")
    compare(wrapped, pruned, fresh, "pruned vs wrapped.eval()")
    untouched.check("running the copies")
    return "pruned"


@settings(max_examples=EXAMPLES, deadline=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(program=hostile_programs(), setting=st.sampled_from(GATE_SETTINGS), seed=st.integers(0, 2**16))
def test_hostile_models(program, setting, seed):
    try:
        check_case(program, setting, seed)
    except Untrainable:
        reject()


# ---- one deterministic case per feature --------------------------------------------------------

L = ("linear", 0, 4)  # t[1]: a hidden layer of width 4 over the input
FEATURES = {
    "plain MLP": Program(3, (L, ("act", 1, "relu"), ("linear", 2, 4), ("add", 3, 1), ("cat", 4, 2))),
    "act:tanh, act:gelu": Program(3, (L, ("act", 1, "tanh"), ("act", 2, "gelu"))),
    "count": Program(3, (L, ("count", 1), ("act", 2, "tanh"))),
    "count, warm": Program(3, (L, ("count", 1), ("act", 2, "tanh")), warm=True),
    "run_inplace": Program(3, (L, ("run_inplace", 1), ("act", 2, "tanh"))),
    "run_inplace, warm": Program(3, (L, ("run_inplace", 1), ("act", 2, "tanh")), warm=True),
    "run_assign": Program(3, (L, ("run_assign", 1), ("act", 2, "tanh"))),
    "run_assign, warm": Program(3, (L, ("run_assign", 1), ("act", 2, "tanh")), warm=True),
    "inplace:mul_ on the input": Program(3, (("inplace", 0, "mul_"), ("linear", 1, 4))),
    "inplace:mul_ on the input, read before": Program(3, (("act", 0, "tanh"), ("inplace", 0, "mul_"), ("cat", 1, 2))),
    "inplace:add_": Program(3, (L, ("inplace", 1, "add_"), ("linear", 2, 3))),
    "inplace:relu_": Program(3, (L, ("inplace", 1, "relu_"), ("linear", 2, 3))),
    "inplace:f_relu": Program(3, (L, ("inplace", 1, "f_relu"), ("linear", 2, 3))),
    "inplace:relu_module": Program(3, (L, ("inplace", 1, "relu_module"), ("linear", 2, 3))),
    "inplace:relu_ aliasing a residual": Program(3, (L, ("linear", 1, 4), ("inplace", 2, "relu_"), ("add", 1, 2))),
    "inplace:setitem": Program(3, (L, ("inplace", 1, "setitem", 2), ("linear", 2, 3))),
    "numpy:sqrt": Program(3, (L, ("numpy", 1, "sqrt"))),
    "numpy:f32": Program(3, (L, ("numpy", 1, "f32"))),
    "numpy:f64": Program(3, (L, ("numpy", 1, "f64"))),
    "numpy:array": Program(3, (L, ("numpy", 1, "array"), ("linear", 2, 3))),
    "numpy:pi": Program(3, (L, ("numpy", 1, "pi"))),
    "isinstance, e a tensor": Program(3, (L, ("isinstance", 1, "isinstance")), sig="x_e", e=2),
    "isinstance, e None": Program(3, (L, ("isinstance", 1, "isinstance")), sig="x_e", e=0),
    "torch.jit.isinstance, e a tensor": Program(3, (L, ("isinstance", 1, "jit")), sig="x_e", e=2),
    "e is not None, e a tensor": Program(3, (L, ("isinstance", 1, "not_none")), sig="x_e", e=2),
    "e is not None, e None": Program(3, (L, ("isinstance", 1, "not_none")), sig="x_e", e=0),
    "out:tuple": Program(3, (L, ("act", 1, "relu")), out=("tuple", 1)),
    "out:dict": Program(3, (L, ("act", 1, "relu")), out=("dict", 1)),
    "tied_call": Program(3, (("linear", 0, 3), ("act", 1, "tanh"), ("tied_call", 2, 0))),
    "tied_weight": Program(3, (("linear", 0, 3), ("act", 1, "tanh"), ("tied_weight", 2, 0))),
    "sig:args, one input": Program(3, (L, ("act", 1, "relu")), sig="args"),
    "sig:args, e a tensor": Program(3, (L, ("isinstance", 1, "not_none")), sig="args", e=2),
    "sig:kwargs": Program(3, (L, ("act", 1, "relu")), sig="kwargs"),
    "sig:dict": Program(3, (L, ("isinstance", 1, "not_none")), sig="dict", e=2),
    "sig:dict, no t": Program(3, (L, ("isinstance", 1, "not_none")), sig="dict", e=0),
    "calls (refused)": Program(3, (L, ("calls", 1), ("act", 1, "relu"))),
    "last (refused)": Program(3, (L, ("last", 1), ("act", 1, "relu"))),
    "history (refused)": Program(3, (L, ("history", 1), ("act", 1, "relu"))),
    "history, warm (refused)": Program(3, (L, ("history", 1), ("act", 1, "relu")), warm=True),
}


@pytest.mark.parametrize("setting", ["open", "half"])
@pytest.mark.parametrize("name", list(FEATURES))
def test_feature(name, setting):
    assert untrainable(FEATURES[name]) is None
    outcome = check_case(FEATURES[name], setting, seed=0)
    if any(policy(f) == "refuse" for f in FEATURES[name].features()):
        assert outcome == "refused by instrument"


def test_python_state_is_refused_naming_its_line():
    model, ex = build(FEATURES["calls (refused)"], 0)
    line = FEATURE_LINES["calls"][0]  # self.calls += 1
    with pytest.raises(lumos_fx.LumosError, match=rf"hostile_programs\.py:{line}\b"):
        lumos_fx.instrument(model, ex)


@settings(max_examples=50, deadline=None)
@given(program=hostile_programs())
def test_model_source_is_the_same_model(program):
    """The standalone source the report prints computes what the generated model computes."""
    model, _ = build(program, 1)
    namespace: dict = {}
    exec(compile(model_source(program), "<model_source>", "exec"), namespace)
    plain = namespace["Model"]()
    plain.load_state_dict({("m" + k[5:] if k.startswith("mods.") else k): v for k, v in model.state_dict().items()})
    for attr in ("calls", "last", "history"):
        if hasattr(plain, attr):
            setattr(plain, attr, copy.deepcopy(getattr(model, attr)))
    fresh = make_inputs(program, FRESH_BATCH, 5)
    for _ in range(2):
        torch.testing.assert_close(plain(*clone_tree(fresh)), model(*clone_tree(fresh)))


# ---- report mode -------------------------------------------------------------------------------


def _outcome(program: Program, setting: str, seed: int) -> tuple[str, str | None]:
    """(outcome, failure class or None) of one case, without raising."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # fx prints the generated code of a failing call
            return check_case(program, setting, seed), None
    except HostileFailure as failure:
        return "FAILED", failure.kind
    except Untrainable:
        return "skipped (cannot train)", None
    except Exception as err:  # a bug of the harness or of the generator
        return "FAILED", f"harness error {type(err).__name__}: {_normalise(_first_line(err))}"


def report(n: int, seed: int | None = None, exclude=(), source: bool = False, out=sys.stdout) -> dict:
    """Run `n` random cases (programs without the features in `exclude`) without stopping;
    print the failure classes, each with its count and its smallest program (with `source`,
    as a standalone script), a table of outcomes per feature, and the outcome of each
    per-feature example of FEATURES. Returns {class: (count, smallest program, setting, seed)}."""
    from hypothesis import Phase
    from hypothesis import seed as hypothesis_seed

    classes: dict[str, list] = {}
    outcomes: Counter = Counter()
    per_feature: dict[str, Counter] = {}

    @settings(max_examples=n, deadline=None, database=None, derandomize=seed is None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(program=hostile_programs(exclude=exclude), setting=st.sampled_from(GATE_SETTINGS),
           seed=st.integers(0, 2**16))
    def run(program, setting, seed):
        outcome, kind = _outcome(program, setting, seed)
        outcomes[outcome] += 1
        for f in program.features():
            per_feature.setdefault(f, Counter())[outcome] += 1
        if kind is not None:
            entry = classes.setdefault(kind, [0, None, None, None])
            entry[0] += 1
            if entry[1] is None or program_size(program) < program_size(entry[1]):
                entry[1:] = [program, setting, seed]

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    run()
    total = sum(outcomes.values())
    print(f"{total} cases: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()), file=out)
    print(f"\n{'count':>5}  failure class", file=out)
    for kind, (count, program, setting, case_seed) in sorted(classes.items(), key=lambda kv: -kv[1][0]):
        print(f"{count:>5}  {kind}", file=out)
        print(f"       smallest: check_case({program!r}, {setting!r}, {case_seed})", file=out)
        if source:
            print("       " + program_source(program, setting, case_seed).replace("\n", "\n       "), file=out)
    print(f"\n{'feature':<24} {'cases':>5} {'failed':>6} {'refused':>7} {'pruned':>6}", file=out)
    for f, c in sorted(per_feature.items()):
        refused = c["refused by instrument"] + c["refused by prune"]
        print(f"{f:<24} {sum(c.values()):>5} {c['FAILED']:>6} {refused:>7} {c['pruned']:>6}", file=out)
    print("\nper-feature examples (test_feature), gates 'open' / 'half':", file=out)
    for name, program in FEATURES.items():
        results = [_outcome(program, setting, 0) for setting in ("open", "half")]
        text = [kind if kind is not None else outcome for outcome, kind in results]
        print(f"  {name:<40} " + (text[0] if text[0] == text[1] else " / ".join(text)), file=out)
    return {k: tuple(v) for k, v in classes.items()}


if __name__ == "__main__":
    import argparse
    import warnings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=int, metavar="N", required=True, help="run N random cases")
    parser.add_argument("--seed", type=int, default=None, help="a random run with this seed (default: derandomized)")
    parser.add_argument("--exclude", default="", help="features not to generate, e.g. sig:args,numpy:f32")
    parser.add_argument("--source", action="store_true", help="print each class's smallest program as a script")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    report(args.report, args.seed, [f for f in args.exclude.split(",") if f], args.source)
