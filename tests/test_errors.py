"""What a user gets instead of a stack trace: the place, the cause and the fix."""

import copy

import pytest
import torch
from torch import nn

import lumos_fx


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value: fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.block = DataDependent()
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.block(torch.relu(self.inp(x)))))


def test_untraceable_submodule_names_the_line_the_module_and_the_leaf_fix():
    model, x = Outer(), torch.randn(4, 4)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(lumos_fx.TraceError) as info:
        lumos_fx.instrument(model, (x,), config=lumos_fx.Config(auto_leaves=False))
    message = str(info.value)
    assert "test_errors.py" in message and "if x.sum() > 0" in message
    assert "inside module 'block' (DataDependent)" in message
    assert "leaf_modules=['block']" in message
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    # By default the module is called as one op on its own (Config.auto_leaves), naming the line.
    assert "if x.sum() > 0" in lumos_fx.summary(lumos_fx.instrument(model, (x,))).one_op["block"]
    # The fix the message gives works; the leaf's channels are kept, the rest still prunes.
    wrapped = lumos_fx.instrument(model, (x,), config=lumos_fx.Config(leaf_modules=["block"]))
    assert set(lumos_fx.gates(wrapped)) == {"x"}
    report = lumos_fx.summary(wrapped)
    assert any("DataDependent 'block'" in why for why in report.kept_whole.values())
    torch.testing.assert_close(lumos_fx.prune(wrapped)(x), model(x))


def test_untraceable_root_forward_gives_the_line_and_what_to_do():
    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            for _ in range(int(x.max())):  # data-dependent loop in the model's own forward
                x = self.fc(x)
            return x

    with pytest.raises(lumos_fx.TraceError, match=r"(?s)test_errors.py:\d+ in forward.*int\(x.max\(\)\).*submodule"):
        lumos_fx.instrument(Root(), (torch.randn(2, 3),))


def test_example_inputs_that_do_not_fit_name_the_layer_and_the_line():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(12, 4)

        def forward(self, x):
            return self.fc1(x)

    with pytest.raises(lumos_fx.InputError) as info:
        lumos_fx.instrument(Net(), (torch.randn(8, 10),))
    message = str(info.value)
    assert "Linear 'fc1'" in message and "return self.fc1(x)" in message
    assert "8x10 and 12x4" in message and "(8, 10) torch.float32" in message


def test_wrong_number_of_example_inputs():
    with pytest.raises(lumos_fx.InputError, match="do not match Outer.forward"):
        lumos_fx.instrument(Outer(), (torch.randn(2, 4), torch.randn(2, 4)))
    with pytest.raises(lumos_fx.InputError, match="tuple of the model's positional arguments"):
        lumos_fx.instrument(Outer(), {"x": torch.randn(2, 4)})


def test_prune_and_summary_of_a_model_that_was_not_instrumented():
    for call in (lumos_fx.prune, lumos_fx.summary, lumos_fx.complexity_loss, lumos_fx.gates):
        with pytest.raises(lumos_fx.NotInstrumentedError, match="lumos_fx.instrument"):
            call(nn.Linear(2, 2))
    with pytest.raises(lumos_fx.NotInstrumentedError):
        lumos_fx.prune(torch.fx.symbolic_trace(nn.Linear(2, 2)))


def test_non_finite_log_alpha_names_the_gate():
    wrapped = lumos_fx.instrument(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1)), (torch.randn(2, 3),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["0"].log_alpha[1] = float("nan")
    with pytest.raises(lumos_fx.GateError, match=r"group '0' has 1 non-finite log_alpha.*gate_lr"):
        lumos_fx.prune(wrapped)
    with pytest.raises(lumos_fx.GateError):
        lumos_fx.summary(wrapped)


def test_a_wrong_rule_is_caught_by_verification_and_named(monkeypatch):
    """A rule that lies (flip is not element-wise) must never yield a silently different model."""
    from lumos_fx.rules import REGISTRY
    from lumos_fx.rules.elementwise import Elementwise

    class Flips(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 1)

        def forward(self, x):
            return self.b(torch.flip(self.a(x), dims=[-1]))

    monkeypatch.setitem(REGISTRY.functions, torch.flip, Elementwise())
    wrapped = lumos_fx.instrument(Flips(), (torch.randn(5, 3),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["a"].log_alpha[:2] = -5.0
    with pytest.raises(lumos_fx.PruneError, match=r"groups whose cut alone breaks it: \['a'\]"):
        lumos_fx.prune(wrapped)
