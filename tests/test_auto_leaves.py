"""A submodule fx cannot trace into is called as one op, and the rest of the model is cut."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from lumos_fx.node_info import info
from support import line_of, max_rel_error


class DataDependent(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        if x.mean() > 0:  # control flow on tensor values: fx cannot trace it
            return self.lin(x)
        return -self.lin(x)


class Block(nn.Module):
    """The untraceable part sits one level down: only it becomes a leaf."""

    def __init__(self):
        super().__init__()
        self.pre, self.odd = nn.Linear(8, 8), DataDependent(8)

    def forward(self, x):
        return self.odd(torch.relu(self.pre(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.block, self.c, self.d = nn.Linear(4, 8), Block(), nn.Linear(8, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.d(torch.relu(self.c(self.block(torch.relu(self.a(x))))))


def test_the_innermost_untraceable_submodule_is_one_op_and_the_rest_is_cut():
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(5, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    targets = {info(n).folded or n.target for n in wrapped.graph.nodes}  # a gate folded into a layer's call
    assert "block.odd" in targets and "block.pre" in targets  # Block itself is traced into
    summary = lumos_fx.summary(wrapped)
    line = line_of(DataDependent.forward, "if x.mean() > 0")
    assert list(summary.one_op) == ["block.odd"]
    assert f"test_auto_leaves.py:{line}" in summary.one_op["block.odd"]
    assert "c" in lumos_fx.gates(wrapped)  # the layers after the leaf still prune
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model(x)) < 1e-6
        gate = lumos_fx.gates(wrapped)["c"]
        gate.log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    other = torch.randn(9, 4)
    assert max_rel_error(pruned(other), wrapped.eval()(other)) < 1e-5
    assert pruned.get_submodule("c").out_features == 8
    assert "block.odd" in str(lumos_fx.summary(pruned))


def test_auto_leaves_can_be_turned_off():
    with pytest.raises(lumos_fx.TraceError, match="control flow"):
        lumos_fx.instrument(Net(), (torch.randn(5, 4),), config=lumos_fx.Config(auto_leaves=False))
    with pytest.raises(TypeError, match="auto_leaves"):
        lumos_fx.Config(auto_leaves="yes")


def test_a_failure_in_the_top_level_forward_is_still_a_trace_error():
    with pytest.raises(lumos_fx.TraceError, match="control flow"):
        lumos_fx.instrument(DataDependent(4), (torch.randn(5, 4),))


def test_a_traced_graph_that_fails_where_the_model_runs_is_not_blamed_on_the_inputs():
    class TracesOtherwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 6)

        def forward(self, x):
            if torch.fx._symbolic_trace.is_fx_tracing():  # a path only the trace takes
                return self.lin(x).view(-1, 4)
            return self.lin(x)

    with pytest.raises(lumos_fx.TraceError, match=r"(?s)fails on example_inputs where the model itself runs.*view"):
        lumos_fx.instrument(TracesOtherwise(), (torch.randn(3, 4),))


class Opaque(nn.Module):
    """A layer fx cannot trace into, whose output the model trims from the end
    (PhysicsNeMo's FNO unpads ``x[..., :-pad, :-pad]`` after its spectral layers)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        if x.mean() > 0:
            return self.conv(x)
        return -self.conv(x)


class Unpads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.odd, self.b = nn.Conv2d(2, 4, 1), Opaque(), nn.Conv2d(4, 1, 1)

    def forward(self, x):
        h = self.odd(F.pad(torch.relu(self.a(x)), (0, 2, 0, 2)))
        return self.b(h[..., :-2, :-2])


def test_a_slice_from_the_end_of_a_leaf_output_holds_at_other_sizes():
    torch.manual_seed(0)
    model = Unpads().eval()
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 2, 6, 6),))
    assert "odd" in lumos_fx.summary(wrapped).one_op
    pruned = lumos_fx.prune(wrapped)
    for shape in [(2, 2, 6, 6), (3, 2, 9, 7)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert pruned(x).shape == model(x).shape
            assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-5, shape


class CountsRows(nn.Module):
    """A module whose own ``__call__`` completes an argument from tensor values before
    ``nn.Module.__call__`` (as PyG's aggregations take ``int(index.max()) + 1``)."""

    def __call__(self, x, rows=None):
        if rows is None:
            rows = int(x.abs().argmax()) % 3 + 1
        return super().__call__(x, rows)

    def forward(self, x, rows):
        return x * rows


def test_a_module_with_its_own_call_that_cannot_be_traced_is_one_op():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), CountsRows(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    assert any(n.op == "call_module" and n.target == "2" for n in wrapped.graph.nodes)
    assert "2" in lumos_fx.summary(wrapped).one_op
    pruned = lumos_fx.prune(wrapped)
    for batch in (x, torch.randn(6, 4)):
        with torch.no_grad():
            assert max_rel_error(pruned(batch), model(batch)) < 1e-5
