"""The OTO baseline (models_zoo.bench.oto): a small MLP and a small CNN cut near a parameter
budget by HESSO and OTO's subnet construction; the models OTO is refused; its failures and
its absence as the harness expects them."""

import sys

import pytest
import torch
from torch import nn

from lumos_fx.report import count_params
from models_zoo.bench import oto
from models_zoo.registry import get


@pytest.fixture
def installed():
    oto.alias_moved_torch_onnx()  # only_train_once 3.0.1 imports what recent torch moved
    pytest.importorskip("only_train_once")


def _rows(inputs: torch.Tensor, target: torch.Tensor, batch: int = 32):
    def draw(gen: torch.Generator):
        idx = torch.randint(0, len(target), (batch,), generator=gen)
        return (inputs[idx],), target[idx]
    return draw


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 2))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))


@pytest.mark.parametrize("build, shape, loss", [
    (_mlp, (8,), nn.functional.mse_loss),
    (_cnn, (1, 8, 8), nn.functional.cross_entropy),
])
def test_oto_cuts_to_the_budget_and_the_cut_runs_at_another_batch(installed, build, shape, loss):
    model = build()
    x = torch.randn(256, *shape)
    y = x.flatten(1)[:, :2] if loss is nn.functional.mse_loss else torch.randint(0, 3, (256,))
    dense = count_params(model)
    budget = int(0.4 * dense)
    cut, sparsity = oto.oto_prune(model, (x[:8],), budget, _rows(x, y), loss, steps=6)
    assert 0.8 * budget <= count_params(cut) <= budget and 0 < sparsity < 1
    assert count_params(model) == dense  # the caller's model is left whole
    with torch.no_grad():
        assert cut(torch.randn(5, *shape)).shape == model.eval()(torch.randn(5, *shape)).shape


def test_the_harness_entry_cuts_a_zoo_workload(installed):
    workload = get("cfd")
    scale = workload.scales["smoke"]
    task = workload.task(scale, 0)
    dense = workload.model(task, scale, 0)
    budget = int(0.4 * count_params(dense))
    cut, note = oto.oto_baseline(workload, task, dense, budget, steps=2)
    assert count_params(cut) <= budget and "HESSO" in note
    assert -10 < workload.evaluate(cut, task) < 1


def test_a_wrong_cut_fails_before_training_with_a_short_message(installed):
    """OTO leaves a BatchNorm1d's running statistics whole: the copy it compresses to count
    the budget fails on the example inputs, before any HESSO step."""
    model = nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
    x = torch.randn(64, 6)
    with pytest.raises(oto.OTOFailed, match="compressed model fails on the example inputs"):
        oto.oto_prune(model, (x[:8],), 100, _rows(x, x[:, :2]), nn.functional.mse_loss, steps=10_000)


class _Token(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.token = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.linear(x) + self.token


class _Spectral(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.cfloat))


@pytest.mark.parametrize("model, reason", [
    (nn.LSTM(4, 8), "recurrent"),
    (_Spectral(), "complex"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "BatchNorm1d"),
    (_Token(), "_Token.token"),
])
def test_oto_refuses_what_it_fails_on(model, reason):
    assert reason in oto.oto_refuses(model)


def test_oto_takes_plain_layers():
    assert oto.oto_refuses(_mlp()) is None and oto.oto_refuses(_cnn()) is None


def test_without_the_package_the_cut_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "only_train_once", None)
    x = torch.randn(16, 8)
    with pytest.raises(ImportError) as err:
        oto.oto_prune(_mlp(), (x,), 100, _rows(x, x[:, :2]), nn.functional.mse_loss, steps=1)
    assert err.value.name == "only_train_once"
