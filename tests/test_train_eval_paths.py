"""A forward that takes other ops in train mode (``if self.training:``) keeps both paths in
one joined graph: gates shared, channels analysed and cut together, both modes verified,
and both written out by export."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, ProgramMLP, assert_equivalent, max_rel_error, programs, set_gates

EXAMPLES = int(os.environ.get("LUMOS_EXAMPLES", "250"))


class AuxHead(nn.Module):
    """An auxiliary classifier only train mode runs and returns (Inception, GoogLeNet)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.aux = nn.Sequential(nn.Conv2d(8, 12, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(12, 5))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = self.stem(x)
        out = self.head(self.body(h).mean((2, 3)))
        if self.training:
            return out, self.aux(h)
        return out


def _train_outputs(module, x, gates_still=False):
    """`module` in train mode under one seed (the gates at their eval values if asked), its
    state put back."""
    state = copy.deepcopy(module.state_dict())
    module.train()
    if gates_still:
        module.get_submodule("lumos_gates").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = module(x)
    module.load_state_dict(state)
    return out


def _close(wrapped, setting):
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            if setting == "closed":
                gate.log_alpha.fill_(-10.0)
            elif setting == "random":
                gate.log_alpha.uniform_(-6.0, 6.0)


@pytest.mark.parametrize("setting", ["open", "closed", "random"])
def test_an_aux_head_only_train_mode_runs_is_cut_with_the_rest_and_both_modes_match(setting, tmp_path):
    torch.manual_seed(0)
    model, x = AuxHead(), torch.randn(4, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = lumos_fx.instrument(model, (x,))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "if self.training:" in wrapped.code
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model.eval()(x)) < 1e-6
    for got, expected in zip(_train_outputs(wrapped, x, gates_still=True), _train_outputs(model, x)):
        assert max_rel_error(got, expected) < 1e-5
    assert "aux.0" in lumos_fx.gates(wrapped)  # a channel group of the train-mode path only
    _close(wrapped, setting)
    pruned = lumos_fx.prune(wrapped)
    kept = pruned.get_submodule("aux.0").out_channels if setting != "closed" else 0
    assert kept == {"open": 12, "closed": 0, "random": kept}[setting]
    if setting == "random":
        assert 0 < kept < 12
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert any("train mode takes its own path" in a for a in lumos_fx.summary(pruned).assumptions)
    for y in (x, torch.randn(7, 3, 12, 10)):  # another batch and grid size
        with torch.no_grad():
            assert max_rel_error(pruned.eval()(y), wrapped.eval()(y)) < 1e-5
        for got, expected in zip(_train_outputs(pruned, y), _train_outputs(wrapped, y, gates_still=True)):
            assert got.shape == expected.shape and max_rel_error(got, expected) < 1e-5
    lumos_fx.export(pruned, tmp_path / "m")
    loaded = lumos_fx.load(tmp_path / "m")
    assert "def _forward_train(self, x):" in (tmp_path / "m" / "model.py").read_text()
    y = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert max_rel_error(loaded.eval()(y), pruned.eval()(y)) < 1e-6
    for got, expected in zip(_train_outputs(loaded, y), _train_outputs(pruned, y)):
        assert max_rel_error(got, expected) < 1e-6


def test_the_joined_model_trains_its_gates_in_both_paths():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(AuxHead(), (torch.randn(4, 3, 8, 8),))
    out, aux = wrapped.train()(torch.randn(4, 3, 8, 8))
    (out.pow(2).mean() + aux.pow(2).mean() + lumos_fx.complexity_loss(wrapped)).backward()
    gates = lumos_fx.gates(wrapped)
    assert gates["aux.0"].log_alpha.grad.abs().sum() > 0 and gates["body.0"].log_alpha.grad.abs().sum() > 0


class Noisy(nn.Module):
    """Noise injection only in train mode: a path that draws random numbers."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        if self.training:
            x = x + 0.1 * torch.randn_like(x)
        return self.lin(x)


def test_a_submodule_with_weights_whose_paths_differ_by_mode_is_traced_into_and_cut(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), Noisy(), nn.ReLU(), nn.Linear(8, 16), nn.ReLU(),
                          nn.Linear(16, 2)).eval()
    x = torch.randn(5, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    assert not lumos_fx.summary(wrapped).one_op
    assert {"0", "2.lin", "4"} <= set(lumos_fx.gates(wrapped))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["0"].log_alpha[::2] = -10.0
        lumos_fx.gates(wrapped)["2.lin"].log_alpha[:2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("0").out_features == 4 and pruned.get_submodule("2.lin").out_features == 6
    assert any("its outputs' shapes checked" in a for a in lumos_fx.summary(pruned).assumptions), lumos_fx.summary(pruned).assumptions
    y = torch.randn(9, 4)
    with torch.no_grad():
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5
        lumos_fx.export(pruned, tmp_path / "m")
        loaded = lumos_fx.load(tmp_path / "m")
        assert max_rel_error(loaded(y), pruned(y)) < 1e-6
        torch.manual_seed(1)
        trained = loaded.train()(y)
        torch.manual_seed(1)
        assert torch.allclose(trained, pruned.train()(y), atol=1e-6)
        assert not torch.allclose(trained, loaded.eval()(y))


class RunningCentre(nn.Module):
    """Train mode updates a running mean in place; eval mode subtracts it."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 2)
        self.register_buffer("centre", torch.randn(4))

    def forward(self, x):
        if self.training:
            self.centre.mul_(0.9).add_(0.1 * x.mean(0))
            return self.out(torch.relu(self.fc(x)))
        return self.out(torch.relu(self.fc(x - self.centre)))


def test_an_in_place_update_only_train_mode_makes_stays_in_its_path():
    torch.manual_seed(0)
    model, x = RunningCentre(), torch.randn(5, 4)
    centre = model.centre.clone()
    wrapped = lumos_fx.instrument(model, (x,))
    assert torch.equal(model.centre, centre) and torch.equal(wrapped.centre, centre)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["fc"].log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("fc").out_features == 3 and torch.equal(pruned.centre, centre)
    with torch.no_grad():
        assert max_rel_error(pruned.eval()(x), wrapped.eval()(x)) < 1e-5
        pruned.train()(x)
        model.train()(x)
    assert torch.allclose(pruned.centre, model.centre) and not torch.equal(pruned.centre, centre)


def test_functional_dropout_in_an_other_path_is_drawn_only_in_train_mode():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            h = F.dropout(h, 0.3, training=True) if self.training else h + 0.5 * h.mean(0, keepdim=True)
            return self.b(h)

    torch.manual_seed(0)
    x = torch.randn(5, 6)
    wrapped = lumos_fx.instrument(Net(), (x,))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["a"].log_alpha[::3] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("a").out_features == 10
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-5
        assert pruned.train()(torch.randn(8, 6)).shape == (8, 3)


_MODE_FREE = ("act", "dropout", "bias", "scale", "add", "sub", "mul")  # steps that keep their input's width


@settings(max_examples=max(EXAMPLES // 5, 10), deadline=None)
@given(program=programs(), setting=st.sampled_from(GATE_SETTINGS), seed=st.integers(0, 2**16), data=st.data())
def test_random_programs_with_steps_of_one_mode_are_cut_exactly_in_both(program, setting, seed, data):
    n_in, steps, n_out = program
    modes = [data.draw(st.sampled_from(("both", "train", "eval"))) if step[0] in _MODE_FREE else "both"
             for step in steps]
    torch.manual_seed(seed)
    model = ProgramMLP(n_in, steps, n_out, modes=modes)
    wrapped = lumos_fx.instrument(model, (torch.randn(8, n_in),))
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    assert_equivalent(wrapped, pruned, torch.randn(13, n_in))
    y = torch.randn(11, n_in)
    got, expected = _train_outputs(pruned, y), _train_outputs(wrapped, y, gates_still=True)
    assert got.shape == expected.shape
    if not any(step[0] == "dropout" and mode != "eval" for step, mode in zip(steps, modes)):
        assert max_rel_error(got, expected) < 1e-4


class DictModel(nn.Module):
    """Takes a dict; train mode returns one more entry (each mode its own output structure)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.aux = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 3)

    def forward(self, batch):
        h = torch.relu(self.a(batch["x"]))
        if self.training:
            return {"y": self.b(h), "aux": self.aux(h)}
        return {"y": self.b(h)}


def test_a_forward_taking_containers_keeps_each_mode_s_output_structure(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    wrapped = lumos_fx.instrument(DictModel(), ({"x": x},))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["a"].log_alpha[::2] = -9.0
    pruned = lumos_fx.prune(wrapped)
    lumos_fx.export(pruned, tmp_path / "m")
    loaded = lumos_fx.load(tmp_path / "m")
    y = {"x": torch.randn(3, 4)}
    with torch.no_grad():
        for module in (pruned, loaded):
            assert set(module.eval()(y)) == {"y"} and set(module.train()(y)) == {"y", "aux"}
            assert max_rel_error(module.eval()(y)["y"], wrapped.eval()(y)["y"]) < 1e-5
            trained, reference = _train_outputs(module, y), _train_outputs(wrapped, y, gates_still=True)
            assert all(max_rel_error(trained[k], reference[k]) < 1e-5 for k in ("y", "aux"))
