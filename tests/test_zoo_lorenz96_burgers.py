"""The Lorenz-96 LSTM and the Burgers FNO of the zoo: every gate setting cuts them to a model
that computes what the gated one computes, on longer windows and other grid sizes than the
example, exported and loaded alike; the features, hidden units and widths that go are gone."""

import pytest
import torch

import lumos_fx
from models_zoo.burgers import data as burgers
from models_zoo.lorenz96 import data as lorenz96
from models_zoo.registry import get
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates


def _smoke_model(name: str) -> torch.nn.Module:
    workload = get(name)
    torch.manual_seed(0)
    return workload.build(None, workload.scales["smoke"])


def _rows(summary, name: str) -> int:
    return next(r.after for r in summary.groups if r.name == name)


@pytest.mark.parametrize("name", ["lorenz96", "burgers"])
def test_the_workloads_name_their_inputs_and_the_truth_of_feature_selection(name):
    workload = get(name)
    task = workload.task("smoke")
    (names,) = task.feature_names.values()
    assert set(workload.informative) | set(workload.uninformative) <= set(names)
    assert not set(workload.informative) & set(workload.uninformative)
    assert task.example[0].shape[-1 if name == "lorenz96" else 1] == len(names)


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_the_lorenz96_lstm_is_cut_exactly(setting, tmp_path):
    model = _smoke_model("lorenz96")
    x = torch.as_tensor(lorenz96.simulate(6, 0)[0])
    wrapped = lumos_fx.instrument(model, (x,), feature_names={"x": lorenz96.FEATURES})
    hidden = model.lstm.hidden_size
    assert {n: g.n for n, g in lumos_fx.gates(wrapped).items()} == {"x": len(lorenz96.FEATURES), "lstm": hidden}
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    summary = lumos_fx.summary(pruned)
    assert summary.kept_whole == {"head": "reaches the model output (at head)"}
    kept, units = len(summary.features["x"][0]), _rows(summary, "lstm")
    if setting == "random":
        assert 0 < kept < len(lorenz96.FEATURES) and 0 < units < hidden
    if units:  # both layers lose the closed units; the first also the closed features
        assert (pruned.lstm.input_size, pruned.lstm.hidden_size) == (kept, units)
        assert pruned.lstm.weight_ih_l1.shape == (4 * units, units) and pruned.head.in_features == units
    else:
        assert not hasattr(pruned, "lstm")
    assert count_params(pruned) == summary.params_after
    assert summary.params_after < summary.params_before or setting == "open"
    longer = torch.randn(5, 13, len(lorenz96.FEATURES))  # another batch size and window length
    with torch.no_grad():
        for y in (x, longer):
            assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5
    if setting == "random":
        lumos_fx.export(pruned, tmp_path / "m")
        with torch.no_grad():
            assert max_rel_error(lumos_fx.load(tmp_path / "m")(longer), pruned(longer)) < 1e-6


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_the_burgers_fno_is_cut_exactly_at_other_grid_sizes(setting, tmp_path):
    pytest.importorskip("neuralop")
    model = _smoke_model("burgers")
    x = torch.as_tensor(burgers.simulate(4, 32, 0)[0])
    wrapped = lumos_fx.instrument(model, (x,), feature_names={"x": burgers.CHANNELS})
    assert lumos_fx.gates(wrapped)["x"].n == 3 and "fno_blocks.fno_skips.0.conv" in lumos_fx.gates(wrapped)
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    summary = lumos_fx.summary(pruned)
    assert summary.kept_whole == {"projection.fcs.1": "reaches the model output (at projection.fcs.1)"}
    # what the cut assumed is the rank (batch, channels, grid), nothing about the grid's size
    assert all("decided with 3," in a or "has 3 dims" in a for a in summary.assumptions), summary.assumptions
    if setting != "closed":
        weight = pruned.get_parameter("fno_blocks.convs.0.weight.tensor")
        assert weight.shape[2:] == model.get_parameter("fno_blocks.convs.0.weight.tensor").shape[2:]  # the modes
    if setting == "random":
        assert weight.shape[0] < model.hidden_channels and weight.shape[1] < model.hidden_channels
        assert 0 < len(summary.features["x"][0]) < 3
    assert count_params(pruned) == summary.params_after
    assert summary.params_after < summary.params_before or setting == "open"
    finer = torch.as_tensor(burgers.simulate(3, 64, 1)[0])  # the same problem on a finer grid
    odd = torch.randn(2, 3, 48)  # any grid of at least twice the modes
    with torch.no_grad():
        for y in (x, finer, odd):
            assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-4
    if setting in ("random", "half"):
        lumos_fx.export(pruned, tmp_path / "m")
        with torch.no_grad():
            assert max_rel_error(lumos_fx.load(tmp_path / "m")(finer), pruned(finer)) < 1e-5
