"""A user's rule supplies every hook of the contract for their own layer: how the tracer
treats it, how its input gate folds into its weight, how it is cut and exported."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from lumos_fx.node_info import info
from lumos_fx.rules.api import Connecting, FoldedCall, ModuleRule, trace_through
from lumos_fx.rules.linear import LinearRule
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates


class Dense(nn.Module):
    """A layer of the user's own: ``x W^T + b`` written by hand."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in ** 0.5)
        self.bias = nn.Parameter(torch.randn(n_out))
        self.in_features, self.out_features = n_in, n_out

    def forward(self, x):
        return x @ self.weight.t() + self.bias


class DenseRule(LinearRule):
    """nn.Linear's rule, with its own functional form and constructor."""

    def folded(self, module: Dense) -> FoldedCall:
        return FoldedCall(F.linear, ())

    def source(self, module: Dense) -> str:
        raise NotImplementedError  # replaced per test


class Clipped(nn.Module):
    """A forward fx cannot trace (control flow on values), with a traceable twin."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        if x.abs().max() > 1e9:  # a data-dependent guard fx cannot trace
            raise ValueError("overflow")
        return torch.relu(self.lin(x))


class ClippedRule(ModuleRule):
    def tracing(self, module: Clipped):
        return trace_through(lambda m, x: torch.relu(m.lin(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Dense(5, 8)
        self.b = Clipped(8)
        self.c = nn.Linear(8, 2)

    def forward(self, x):
        return self.c(self.b(torch.tanh(self.a(x))))


@pytest.fixture(scope="module", autouse=True)
def rules():
    lumos_fx.register_rule(DenseRule(), Dense)
    lumos_fx.register_rule(ClippedRule(), Clipped)


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_a_users_hooks_trace_fold_and_cut_their_layer(setting):
    torch.manual_seed(0)
    model = Net().eval()
    wrapped = lumos_fx.instrument(model, (torch.randn(4, 5),))
    nodes = {n.name: n for n in wrapped.graph.nodes}
    assert info(nodes["a"]).folded == "a"  # the input gate folds into Dense's weight (the `folded` hook)
    assert "b" not in nodes and "b_lin" in nodes  # traced through the function of the `tracing` hook
    assert {"x", "a", "b.lin"} <= set(lumos_fx.gates(wrapped))
    set_gates(wrapped, setting, seed=3)
    pruned = lumos_fx.prune(wrapped)
    x = torch.randn(7, 5)
    assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-4
    if setting != "open":
        assert count_params(pruned) < count_params(model)
    a = dict(pruned.named_modules()).get("a")  # gone when every channel it feeds closed
    assert a is None or a.weight.shape == (a.out_features, a.in_features)  # resized by the rule


def test_the_export_of_a_users_layer_is_its_rules_source(tmp_path, monkeypatch):
    monkeypatch.setattr(DenseRule, "source", lambda self, m: f"nn.Linear({m.in_features}, {m.out_features})")
    wrapped = lumos_fx.instrument(Net().eval(), (torch.randn(4, 5),))
    set_gates(wrapped, "random", seed=1)
    pruned = lumos_fx.prune(wrapped)
    lumos_fx.export(pruned, tmp_path / "m")
    assert "nn.Linear(" in (tmp_path / "m" / "model.py").read_text()
    x = torch.randn(3, 5)
    assert max_rel_error(lumos_fx.load(tmp_path / "m")(x), pruned(x)) < 1e-5


class Scale(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x):
        return x * self.weight


class ScaleRule(ModuleRule):
    """y = x * weight, one weight per channel; no `source`."""

    def connect(self, node, an: Connecting) -> None:
        src = an.space(node.args[0])
        an.tie(an.follow(node, src, src.dim), an.param_space(an.module(node).weight, 0))


def test_a_users_layer_whose_rule_writes_no_constructor_is_written_out_by_export(tmp_path):
    """The default source, ``nn.<repr>``, is checked: it would not rebuild the user's layer,
    so export writes the cut layer out as the torch code it runs."""
    lumos_fx.register_rule(ScaleRule(), Scale)
    model = nn.Sequential(nn.Linear(3, 4), Scale(4), nn.Linear(4, 2))
    wrapped = lumos_fx.instrument(model, (torch.randn(4, 3),))
    set_gates(wrapped, "random", seed=1)
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("1").weight.numel() < 4
    lumos_fx.export(pruned, tmp_path / "m")
    source = (tmp_path / "m" / "model.py").read_text()
    assert "class Scale(nn.Module):" in source and "nn.Scale(" not in source
    x = torch.randn(3, 3)
    assert max_rel_error(lumos_fx.load(tmp_path / "m")(x), pruned(x)) < 1e-5
