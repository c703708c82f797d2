"""What lumos_fx hands back computes what the user's model computes, or lumos_fx says why not.

One test per case of ordinary models that used to be traced into a different function
without a word: side effects in forward, in-place writes to inputs, NaN, NumPy constants,
isinstance branches, inputs of another rank, containers and *args in forward.
"""

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from lumos_fx.verify import output_error
from support import line_of


def close_half(wrapped):
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[: gate.log_alpha.numel() // 2] = -6.0


def run(model, *inputs):
    """One eval-mode call from a copy of `model`'s state, on copies of the inputs."""
    with torch.no_grad():
        return copy.deepcopy(model).eval()(*copy.deepcopy(inputs))


def assert_same(a, b):
    err, scale = output_error(a, b)
    assert err <= 1e-5 * max(scale, 1.0), f"differ by {err:.3g} (scale {scale:.3g})"


class RunningStats(nn.Module):
    """A counter and a running mean written by hand (issue 16, case 1)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
        self.c = nn.Linear(8, 8)
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("m", torch.zeros(8))

    def forward(self, x):
        self.count += 1
        h = self.a(x)
        self.m.mul_(0.9).add_(0.1 * h.detach().mean(0))
        return self.b(torch.relu(self.c(h - self.m))) * self.count


def test_buffers_forward_updates_stay_in_the_graph_and_the_state_dict():
    torch.manual_seed(0)
    model, x = RunningStats(), torch.randn(6, 4)
    before = copy.deepcopy(model.state_dict())
    wrapped = lumos_fx.instrument(model, (x,))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert {"count", "m"} <= set(wrapped.state_dict())
    assert torch.equal(wrapped.count, model.count) and torch.equal(wrapped.m, model.m)  # instrument ran nothing on it
    fresh = torch.randn(9, 4)
    assert_same(run(wrapped, fresh), run(model, fresh))
    # Every call updates the state, in the instrumented model as in the original.
    w, m = copy.deepcopy(wrapped).eval(), copy.deepcopy(model).eval()
    with torch.no_grad():
        for _ in range(3):
            assert_same(w(fresh), m(fresh))
    assert float(w.count) == 3.0

    close_half(wrapped)
    state = {k: v.clone() for k, v in wrapped.state_dict().items() if isinstance(v, torch.Tensor)}
    pruned = lumos_fx.prune(wrapped)
    assert all(torch.equal(v, wrapped.state_dict()[k]) for k, v in state.items())  # prune's checks ran on copies
    assert_same(run(pruned, fresh), run(wrapped, fresh))
    report = lumos_fx.summary(pruned)
    assert any("'m' is updated by forward" in why for why in report.kept_whole.values())
    assert report.groups and report.params_after < report.params_before  # the rest is still cut


class Reassigned(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("m", torch.zeros(width))

    def forward(self, x):
        h = self.a(x)
        self.m = 0.9 * self.m + 0.1 * h.detach().mean(0)
        return self.b(h - self.m)


def test_a_buffer_assigned_in_forward_is_updated_in_place_in_the_graph():
    model, x = Reassigned(), torch.randn(6, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    assert "copy_" in wrapped.code
    w, m = copy.deepcopy(wrapped).eval(), copy.deepcopy(model).eval()
    with torch.no_grad():
        for _ in range(2):
            assert_same(w(x), m(x))
    assert_same(run(lumos_fx.prune(wrapped), x), run(wrapped, x))


def test_an_assignment_that_changes_a_buffers_shape_is_refused_naming_the_line():
    line = line_of(Reassigned.forward, "self.m = ")
    with pytest.raises(lumos_fx.TraceError, match=rf"buffer 'm' \(\(1,\) torch.float32\).*test_faithful.py:{line}"):
        lumos_fx.instrument(Reassigned(width=1), (torch.randn(6, 4),))


class PythonState(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.calls, self.history = kind, 0, []
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        if self.kind == "counter":
            self.calls += 1
        elif self.kind == "last":
            self.last = h.mean()
        else:
            self.history.append(h.sum())
        return self.b(h)


@pytest.mark.parametrize("kind, code", [("counter", "self.calls += 1"), ("last", "self.last = h.mean()"),
                                        ("history", "self.history.append(h.sum())")])
def test_python_state_changed_in_forward_is_refused_naming_the_line(kind, code):
    model = PythonState(kind)
    with pytest.raises(lumos_fx.TraceError) as info:
        lumos_fx.instrument(model, (torch.randn(3, 4),))
    message = str(info.value)
    assert f"test_faithful.py:{line_of(PythonState.forward, code)}: {code}" in message
    assert "fix:" in message and "leaf_modules" in message
    assert model.calls == 0 and model.history == [] and not hasattr(model, "last")  # lumos_fx ran copies


class WithCounterBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.head = PythonState("counter"), nn.Linear(2, 2)

    def forward(self, x):
        return self.head(torch.relu(self.block(x)))


def test_python_state_in_a_leaf_module_runs_as_it_is():
    model = WithCounterBlock()
    with pytest.raises(lumos_fx.TraceError, match=r"leaf_modules=\['block'\]"):
        lumos_fx.instrument(model, (torch.randn(3, 4),))
    wrapped = lumos_fx.instrument(model, (torch.randn(3, 4),), config=lumos_fx.Config(leaf_modules=["block"]))
    wrapped.eval()(torch.randn(3, 4))
    assert wrapped.block.calls == 1  # the leaf is called, its counter counts


class WritesItsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        x.mul_(2.0)
        h = self.a(x)
        torch.relu_(h)
        return self.b(h)


def test_a_forward_that_writes_its_input_never_changes_the_users_tensor():
    x = torch.randn(6, 4)
    kept = x.clone()
    wrapped = lumos_fx.instrument(WritesItsInput(), (x,))
    close_half(wrapped)
    pruned = lumos_fx.prune(wrapped)
    lumos_fx.summary(pruned)
    assert torch.equal(x, kept)
    fresh = torch.randn(9, 4)
    assert_same(run(pruned, fresh), run(wrapped, fresh))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_example_inputs_are_refused(bad):
    x = torch.randn(6, 4)
    x[2, 1] = bad
    with pytest.raises(lumos_fx.InputError, match=r"example input 'input' of Sequential holds 1 NaN or inf"):
        lumos_fx.instrument(nn.Sequential(nn.Linear(4, 2)), (x,))


def test_verification_sees_nan_and_inf():
    finite, nan = torch.ones(3), torch.tensor([1.0, float("nan"), 1.0])
    assert output_error(finite, nan)[0] == float("inf")
    assert output_error(nan, finite)[0] == float("inf")
    assert output_error(nan, nan.clone())[0] == 0.0  # the same NaN entries: no difference
    inf = torch.tensor([float("inf")])
    assert output_error(inf, -inf)[0] == float("inf")
    assert output_error({"y": inf}, {"y": inf.clone()})[0] == 0.0


class NumpyConstants(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
        self.scale = np.linspace(0.5, 1.5, 8).astype(np.float32)

    def forward(self, x):
        h = self.a(x)
        h = 0.5 * h * (1 + torch.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))  # GELU, as papers write it
        h = np.float32(1.5) * h + np.float64(0.1)
        return self.b(h * torch.from_numpy(self.scale) / np.pi)


def test_numpy_scalars_and_arrays_become_torch_constants(tmp_path):
    model, x = NumpyConstants(), torch.randn(6, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    assert "np." not in wrapped.code
    assert_same(run(wrapped, x), run(model, x))
    close_half(wrapped)
    pruned = lumos_fx.prune(wrapped)
    loaded = lumos_fx.load(lumos_fx.export(pruned, tmp_path / "model"))
    fresh = torch.randn(9, 4)
    assert_same(run(loaded, fresh), run(wrapped, fresh))


def test_a_numpy_function_of_a_traced_tensor_names_the_line_and_the_torch_function():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return np.sqrt(self.a(x))

    with pytest.raises(lumos_fx.TraceError, match=r"(?s)test_faithful.py:\d+ in forward.*use the torch function"):
        lumos_fx.instrument(Bad(), (torch.randn(2, 4),))


class Branches(nn.Module):
    """MONAI's UpCat style: a skip input added when it is a tensor."""

    def __init__(self, test):
        super().__init__()
        self.test = test
        self.a, self.l = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, e=None):
        h = self.a(x)
        if self.test == "jit" and torch.jit.isinstance(e, torch.Tensor):
            h = h + e
        if self.test == "builtin" and isinstance(e, torch.Tensor):
            h = h + e
        if self.test == "is_tensor" and torch.is_tensor(e):
            h = h + e
        return self.l(h)


@pytest.mark.parametrize("test", ["jit", "builtin", "is_tensor"])
@pytest.mark.parametrize("with_e", [True, False])
def test_isinstance_branches_on_inputs_are_traced_as_taken(test, with_e):
    model = Branches(test)
    x, e = torch.randn(6, 4), torch.randn(6, 8)
    example = (x, e) if with_e else (x,)
    wrapped = lumos_fx.instrument(model, example)
    assert_same(run(wrapped, *example), run(model, *example))
    close_half(wrapped)
    fresh = (torch.randn(9, 4), torch.randn(9, 8)) if with_e else (torch.randn(9, 4),)
    assert_same(run(lumos_fx.prune(wrapped), *fresh), run(wrapped, *fresh))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        out = self.rnn(x)
        if isinstance(out, tuple):  # the GRU (a leaf) returns (output, h_n)
            out = out[0]
        return self.head(out)


def test_isinstance_on_a_leafs_output_is_answered_from_its_example():
    model, x = Recurrent(), torch.randn(2, 5, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    assert_same(run(wrapped, x), run(model, x))


def test_a_wrong_isinstance_answer_is_refused_naming_the_line(monkeypatch):
    """Without an example (an op that failed on the example values), the tracer takes a
    value for a tensor; the run-time type refutes it."""
    from lumos_fx import concrete

    def no_module_examples(root, kind, target, args, kwargs):
        return (concrete.UNKNOWN, False) if kind == "call_module" else example_of(root, kind, target, args, kwargs)

    example_of = concrete.example_of
    monkeypatch.setattr(concrete, "example_of", no_module_examples)
    line = line_of(Recurrent.forward, "if isinstance(out, tuple)")
    with pytest.raises(lumos_fx.TraceError, match=rf"(?s)isinstance\(\) test on a traced value took the wrong "
                                                  rf"branch, at .*test_faithful.py:{line}.*took the value for a Tensor"
                                                  r" while tracing and answered False, but it is a tuple"):
        lumos_fx.instrument(Recurrent(), (torch.randn(2, 5, 4),))


def test_the_pruned_model_takes_inputs_with_other_leading_dims():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 2))
    wrapped = lumos_fx.instrument(model, (torch.randn(8, 12),))
    close_half(wrapped)
    for shrink in (False, True):
        pruned = lumos_fx.prune(wrapped, shrink_inputs=shrink)
        for shape in [(3, 7, 12), (12,), (2, 3, 4, 12)]:
            x = torch.randn(shape)
            x_in = x[..., pruned.kept_feature_indices["input"]] if shrink else x
            assert_same(run(pruned, x_in), run(wrapped, x))
        assert "dims" not in str(lumos_fx.summary(pruned))  # no rank guard needed


class SlicesColumns(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.cat([h[:, 6:], h[:, :6]], 1))  # dim 1 is the features at rank 2 only


def test_a_rank_the_cut_was_not_verified_at_is_refused_by_a_guard(tmp_path):
    wrapped = lumos_fx.instrument(SlicesColumns(), (torch.randn(5, 4),))
    close_half(wrapped)
    pruned = lumos_fx.prune(wrapped)
    assert any("input 'x' has 2 dims" in a for a in lumos_fx.summary(pruned).assumptions)
    fresh = torch.randn(9, 4)
    assert_same(run(pruned, fresh), run(wrapped, fresh))
    loaded = lumos_fx.load(lumos_fx.export(pruned, tmp_path / "model"))
    for model in (pruned, loaded):
        with pytest.raises(AssertionError, match="lumos_fx: input 'x' of this pruned model must have 2 dims"):
            model(torch.randn(3, 5, 4))


class DictBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, batch):
        return {"y": self.b(torch.relu(self.a(batch["x"])) * batch["t"])}


class DictBatchThis(DictBatch):
    def forward(this, batch):  # noqa: N805 - fx's pytree codegen took `this` for an input
        return {"y": this.b(torch.relu(this.a(batch["x"])) * batch["t"])}


@pytest.mark.parametrize("shrink", [False, True])
@pytest.mark.parametrize("model_class", [DictBatch, DictBatchThis])
def test_dict_inputs_are_flattened_as_fx_does_for_pytrees(shrink, model_class, tmp_path):
    model = model_class()
    example = ({"x": torch.randn(5, 4), "t": torch.randn(5, 1)},)
    wrapped = lumos_fx.instrument(model, example, feature_names={"batch['x']": ["a", "b", "c", "d"]})
    assert "batch['x']" in lumos_fx.gates(wrapped)
    assert_same(run(wrapped, *example), run(model, *example))
    close_half(wrapped)
    pruned = lumos_fx.prune(wrapped, shrink_inputs=shrink)
    assert pruned.kept_features == {"batch['x']": ["c", "d"], "batch['t']": ["batch['t'][0]"]}
    fresh = {"x": torch.randn(9, 4), "t": torch.randn(9, 1)}
    fresh_in = {"x": fresh["x"][:, pruned.kept_feature_indices["batch['x']"]], "t": fresh["t"]} if shrink else fresh
    loaded = lumos_fx.load(lumos_fx.export(pruned, tmp_path / "model"))
    for m in (pruned, loaded):
        assert_same(run(m, fresh_in), run(wrapped, fresh))


class StarArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, *args):
        h = self.a(args[0])
        if len(args) > 1:
            h = h * args[1]
        return self.b(h)


class Kwargs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, output_shape=None, **kwargs):
        if kwargs:  # neuraloperator's FNO tests its **kwargs
            raise ValueError(f"unexpected {kwargs}")
        return self.b(self.a(x) * kwargs.get("scale", 1.0))


@pytest.mark.parametrize("model, example", [
    (StarArgs(), (torch.randn(5, 4),)),
    (StarArgs(), (torch.randn(5, 4), torch.randn(5, 8))),
    (Kwargs(), (torch.randn(5, 4),)),
])
def test_star_args_and_kwargs_forwards_trace_with_the_examples_arguments(model, example):
    wrapped = lumos_fx.instrument(model, example)
    assert_same(run(wrapped, *example), run(model, *example))
    close_half(wrapped)
    fresh = tuple(torch.randn(9, t.shape[1]) for t in example)
    assert_same(run(lumos_fx.prune(wrapped), *fresh), run(wrapped, *fresh))


def test_an_instrumented_model_is_refused_and_a_pruned_one_is_pruned_again_with_its_feature_names():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    wrapped = lumos_fx.instrument(model, (torch.randn(5, 4),), feature_names=["p", "q", "r", "s"])
    with pytest.raises(lumos_fx.InputError, match="already instrumented by lumos_fx.*instrument the original"):
        lumos_fx.instrument(wrapped, (torch.randn(5, 4),))
    close_half(wrapped)
    whole = lumos_fx.prune(wrapped)  # takes every feature, selects r and s itself
    assert whole.input_features == {"input": ["p", "q", "r", "s"]}
    assert lumos_fx.summary(lumos_fx.instrument(whole, (torch.randn(5, 4),))).features["input"][0][2:] == ["r", "s"]
    shrunk = lumos_fx.prune(wrapped, shrink_inputs=True)  # takes r and s
    again = lumos_fx.instrument(shrunk, (torch.randn(5, 2),))
    assert lumos_fx.prune(again).kept_features == {"input": ["r", "s"]}


def test_a_failing_example_input_is_one_message_with_nothing_on_stderr():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(lumos_fx.InputError, match="do not run through"):
        lumos_fx.instrument(nn.Sequential(nn.Linear(4, 2)), (torch.randn(3, 5),))
    assert err.getvalue() == ""


def test_export_refuses_to_overwrite_a_model(tmp_path):
    wrapped = lumos_fx.instrument(nn.Sequential(nn.Linear(4, 2)), (torch.randn(3, 4),))
    pruned = lumos_fx.prune(wrapped)
    lumos_fx.export(pruned, tmp_path)
    with pytest.raises(lumos_fx.ExportError, match="already holds a model.*overwrite=True"):
        lumos_fx.export(pruned, tmp_path)
    lumos_fx.export(pruned, tmp_path, overwrite=True)


def test_unknown_leaf_module_names_are_refused_with_the_names_near_them():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(lumos_fx.InputError, match=r"leaf_modules names modules Sequential does not have: "
                                                  r"\['encodr'\].*did you mean \['encoder'"):
        lumos_fx.instrument(model, (torch.randn(2, 4),), config=lumos_fx.Config(leaf_modules=["encodr"]))


def test_kept_feature_indices_name_an_input_kept_whole():
    """The long random run's failure: an input without a gate was missing from kept_feature_indices."""
    model = nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    wrapped = lumos_fx.instrument(model, (torch.randn(8, 3),))
    close_half(wrapped)
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.kept_feature_indices == {"input": [0, 1, 2]}
    report = lumos_fx.summary(pruned)
    assert report.features["input"] == (["input[0]", "input[1]", "input[2]"], [])
    assert "LayerNorm" in report.ungated["input"] and "not gated: " in str(report)


def test_a_lazy_module_must_run_once_first():
    with pytest.raises(lumos_fx.InputError, match="(?s)LazyLinear.*call the model once"):
        lumos_fx.instrument(nn.Sequential(nn.LazyLinear(2)), (torch.randn(3, 4),))


class InitialisesOnce(nn.Module):
    """Data-dependent initialisation (ActNorm in normalising flows)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.register_buffer("ready", torch.tensor(False))
        self.register_buffer("shift", torch.zeros(4))

    def forward(self, x):
        h = self.a(x)
        if not self.ready:
            self.shift.copy_(h.detach().mean(0))
            self.ready.fill_(True)
        return h - self.shift


def test_a_buffer_written_in_python_while_tracing_is_refused_naming_the_line():
    line = line_of(InitialisesOnce.forward, "self.ready.fill_(True)")
    with pytest.raises(lumos_fx.TraceError, match=rf"(?s)buffer 'ready' in Python while.*test_faithful.py:{line}"
                                                  r".*call the model once"):
        lumos_fx.instrument(InitialisesOnce(), (torch.randn(3, 4),))
    model = InitialisesOnce()
    model(torch.randn(3, 4))  # the fix the message gives
    wrapped = lumos_fx.instrument(model, (torch.randn(3, 4),))
    fresh = torch.randn(5, 4)
    assert_same(run(wrapped, fresh), run(model, fresh))


def test_a_model_with_dropout_passes_the_train_mode_check():
    class Stochastic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(F.dropout(self.a(x), 0.5, training=self.training))

    model, x = Stochastic(), torch.randn(3, 4)
    rng = torch.get_rng_state()
    wrapped = lumos_fx.instrument(model, (x,))
    assert torch.equal(rng, torch.get_rng_state())  # lumos_fx draws from its own random state
    assert_same(run(wrapped, torch.ones(2, 4)), run(wrapped, torch.ones(2, 4)))


def test_a_buffer_as_wide_as_the_example_batch_never_stands_for_the_batch():
    """A constant branch is expanded to the batch of a live input, not to a buffer's size
    that equals the example's batch by chance (the long random hostile run's failure)."""
    class Centred(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 8), nn.Linear(8, 1)
            self.register_buffer("m", torch.zeros(8))

        def forward(self, x):
            h = self.a(x)
            self.m.mul_(0.9).add_(0.1 * h.detach().mean(0))
            return self.b(h - self.m)

    wrapped = lumos_fx.instrument(Centred(), (torch.randn(8, 2),))  # batch 8, as wide as m
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha.fill_(-6.0)
    fresh = torch.randn(13, 2)
    assert run(lumos_fx.prune(wrapped), fresh).shape == (13, 1)
    assert_same(run(lumos_fx.prune(wrapped), fresh), run(wrapped, fresh))


def test_a_constant_written_in_place_leaves_the_weights_it_came_from_alone():
    """A Linear whose input closed is its bias; a later `mul_` on it must not scale the
    bias parameter, which a second call of the same Linear reads (a long random run's failure)."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 1), nn.Linear(1, 1)

        def forward(self, x):
            g = self.a(x).mul_(2.0)
            return self.b(self.a(x)) + g

    wrapped = lumos_fx.instrument(Tied(), (torch.randn(8, 2),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha.fill_(-6.0)
    fresh = torch.randn(13, 2)
    assert_same(run(lumos_fx.prune(wrapped), fresh), run(wrapped, fresh))
