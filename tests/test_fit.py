"""lumos_fx.fit: a trainer that learns, reaches a budget, and resumes exactly."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lumos_fx


def problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(512, 6)
    y = (x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3]))
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    return model, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True), x


def test_fit_learns_and_reports_each_epoch():
    model, loader, x = problem()
    wrapped = lumos_fx.instrument(model, (x[:4],), config=lumos_fx.Config(lam=0.1))
    history = lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=20, lr=3e-3, progress=False)
    assert [h["epoch"] for h in history] == list(range(1, 21))
    assert history[-1]["loss"] < history[0]["loss"] / 2
    assert history[-1]["kept"] < history[0]["kept"]
    assert not wrapped.training


def test_fit_with_a_target_reaches_the_budget():
    model, loader, x = problem()
    wrapped = lumos_fx.instrument(model, (x[:4],))
    lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=40, lr=3e-3, target=0.3, progress=False)
    assert lumos_fx.expected_alive(wrapped)[0].item() / lumos_fx.expected_alive(wrapped)[1] == pytest.approx(
        0.3, abs=0.05)
    assert lumos_fx.summary(lumos_fx.prune(wrapped)).budget.after == pytest.approx(0.3, abs=0.011)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    model, loader, x = problem()
    whole = lumos_fx.instrument(model, (x[:4],))
    torch.manual_seed(7)  # the loader shuffles with the global RNG
    lumos_fx.fit(whole, loader, nn.functional.mse_loss, epochs=3, target=0.5, checkpoint=tmp_path / "a.pt",
                 progress=False)

    calls = {"n": 0}

    def crashing(pred, y):
        calls["n"] += 1
        if calls["n"] == len(loader) + 3:  # in the second epoch
            raise KeyboardInterrupt
        return nn.functional.mse_loss(pred, y)

    first = lumos_fx.instrument(model, (x[:4],))
    torch.manual_seed(7)
    with pytest.raises(KeyboardInterrupt):
        lumos_fx.fit(first, loader, crashing, epochs=3, target=0.5, checkpoint=tmp_path / "b.pt", progress=False)
    torch.manual_seed(123)  # a new process: another global RNG state, fresh gates
    again = lumos_fx.instrument(model, (x[:4],))
    history = lumos_fx.fit(again, loader, nn.functional.mse_loss, epochs=3, target=0.5,
                           checkpoint=tmp_path / "b.pt", progress=False)
    assert len(history) == 3
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name
