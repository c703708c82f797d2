"""fit(tolerance=...): the budget's target searched against a validation metric, and the
smallest model that held is the one prune() cuts."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lumos_fx
from lumos_fx.budget import budget_of, eval_kept
from lumos_fx.errors import InputError
from lumos_fx.tolerance import ToleranceSearch


def _problem(seed=0):
    torch.manual_seed(seed)
    x, x_val = torch.randn(512, 6), torch.randn(256, 6)

    def f(x):  # two of the six inputs, a third weakly
        return x[:, :1] * x[:, 1:2] + 0.1 * torch.sin(x[:, 2:3])
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    loader = DataLoader(TensorDataset(x, f(x)), batch_size=64, shuffle=True)

    def validate(m):  # -log MSE: a tolerance of log(1.5) allows an MSE 50% above the reference
        return -math.log(nn.functional.mse_loss(m(x_val), f(x_val)).item())
    return model, loader, x, validate


def test_the_smallest_model_within_the_tolerance_is_the_one_pruned():
    model, loader, x, validate = _problem()
    wrapped = lumos_fx.instrument(model, (x[:4],))
    history = lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=30, lr=3e-3, progress=False,
                           validate=validate, tolerance=math.log(1.5), validate_every=24)
    chosen = history[-1]["chosen"]
    validations = [v for h in history for v in h["validations"]]
    assert validations[0]["target"] == 1.0 and validations[0]["kept"] == 1.0  # the dense phase
    assert chosen["reference"] == max(v["metric"] for v in validations)  # the best the run showed
    within = [v for v in validations if v["metric"] >= chosen["reference"] - math.log(1.5)]
    assert chosen["kept"] == min(v["kept"] for v in within) < 0.5
    assert any(not v["held"] for v in validations)  # it searched down to where the model no longer held
    pruned = lumos_fx.prune(wrapped)
    assert lumos_fx.summary(pruned).budget.closed == lumos_fx.summary(pruned).budget.reopened == 0
    assert validate(pruned) == pytest.approx(chosen["metric"], abs=1e-4)  # prune cut the validated model
    assert torch.allclose(pruned(x[:9]), wrapped.eval()(x[:9]), atol=1e-5)


def _tiny():
    torch.manual_seed(0)
    return lumos_fx.instrument(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), (torch.randn(3, 4),))


def test_the_target_falls_while_the_metric_holds_and_backs_off_with_a_halved_step_after_two_misses():
    metrics = iter([1.0, 0.995, 0.98, 0.98, 0.995, 0.995, 0.98, 0.995])
    wrapped = _tiny()
    search = ToleranceSearch(wrapped, lambda m: next(metrics), tolerance=0.01)
    targets = [search.validated()["next_target"] for _ in range(8)]
    # held at 1 and 0.7; missed at 0.49 (stays) and again (back to 0.7, half the step:
    # sqrt 0.7); two holds double it; one miss alone does not back off
    low = 0.7 * math.sqrt(0.7)
    assert targets == pytest.approx([0.7, 0.49, 0.49, 0.7, low, low * 0.7, low * 0.7, low * 0.7 * 0.7])
    assert [r["held"] for r in search.log] == [True, True, False, False, True, True, False, True]


@pytest.mark.parametrize("kind", [np.float32, np.float64, torch.tensor])
def test_a_metric_may_be_a_numpy_scalar_or_a_one_element_tensor(kind):
    search = ToleranceSearch(_tiny(), lambda m: kind(0.9), tolerance=np.float32(0.01))
    assert search.validated()["metric"] == pytest.approx(0.9)


def test_the_target_waits_for_the_gates_warm_up():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), (torch.randn(3, 4),),
                                  config=lumos_fx.Config(gate_warmup=3))
    search = ToleranceSearch(wrapped, lambda m: 1.0, tolerance=0.01)
    wrapped.train()
    targets = []
    for _ in range(5):
        wrapped(torch.randn(2, 4))  # one training draw of the gates
        targets.append(search.validated()["next_target"])
    assert targets == pytest.approx([1.0, 1.0, 1.0, 0.7, 0.49])  # warm-up draws 1-3 move nothing, then it falls


def test_finish_loads_the_smallest_state_that_held_and_sets_the_target_to_it():
    wrapped = _tiny()
    gate = next(iter(lumos_fx.gates(wrapped).values()))
    metrics = iter([1.0, 1.0, 0.5, 1.0, 1.0])
    search = ToleranceSearch(wrapped, lambda m: next(metrics), tolerance=0.1)
    search.validated()  # the reference, everything open
    with torch.no_grad():
        gate.log_alpha[:6] = -10.0
    smallest = eval_kept(wrapped)
    search.validated()  # holds with 6 units closed
    with torch.no_grad():
        gate.log_alpha[:] = -10.0
    search.validated()  # closed further, but misses
    with torch.no_grad():
        gate.log_alpha[:] = 3.0
    search.validated()  # holds, larger
    done = search.finish()
    assert done["kept"] == smallest < 1.0
    assert (gate.log_alpha[:6] == -10.0).all() and (gate.log_alpha[6:] == 3.0).all()
    assert lumos_fx.summary(lumos_fx.prune(wrapped)).budget.target == pytest.approx(smallest)


def test_a_resumed_tolerance_run_ends_where_an_uninterrupted_one_does(tmp_path):
    model, loader, x, validate = _problem()
    kwargs = dict(epochs=4, lr=3e-3, progress=False, validate=validate, tolerance=0.3, validate_every=4)
    whole = lumos_fx.instrument(model, (x[:4],))
    torch.manual_seed(7)
    expected = lumos_fx.fit(whole, loader, nn.functional.mse_loss, checkpoint=tmp_path / "a.pt", **kwargs)
    calls = {"n": 0}

    def crashing(pred, y):
        calls["n"] += 1
        if calls["n"] == 2 * len(loader) + 3:  # in the third epoch
            raise KeyboardInterrupt
        return nn.functional.mse_loss(pred, y)

    first = lumos_fx.instrument(model, (x[:4],))
    torch.manual_seed(7)
    with pytest.raises(KeyboardInterrupt):
        lumos_fx.fit(first, loader, crashing, checkpoint=tmp_path / "b.pt", **kwargs)
    again = lumos_fx.instrument(model, (x[:4],))
    history = lumos_fx.fit(again, loader, nn.functional.mse_loss, checkpoint=tmp_path / "b.pt", **kwargs)
    assert history[-1]["chosen"] == expected[-1]["chosen"]
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name


@pytest.mark.parametrize("kwargs, words", [
    (dict(tolerance=0.01), "go together"),
    (dict(validate=lambda m: 1.0), "go together"),
    (dict(validate=lambda m: 1.0, tolerance=0.01, target=0.3), "pass one of them"),
    (dict(validate=lambda m: 1.0, tolerance=-1), "tolerance=-1"),
    (dict(validate=lambda m: 1.0, tolerance=0.01, validate_every=0), "validate_every=0"),
    (dict(validate_every=3), "validate= and tolerance="),
    (dict(validate=lambda m: float("nan"), tolerance=0.01, validate_every=1), "finite number"),
])
def test_a_bad_tolerance_setting_is_refused_by_name(kwargs, words):
    model, loader, x, _ = _problem()
    wrapped = lumos_fx.instrument(model, (x[:4],))
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=1, progress=False, **kwargs)


def test_a_latency_budget_is_refused():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), (torch.randn(3, 4),),
                                  config=lumos_fx.Config(target_params=0.5))
    budget_of(wrapped).kind = "latency"  # a latency budget's tables take seconds to time; its kind is what counts
    with pytest.raises(InputError, match="parameter or FLOP budget"):
        ToleranceSearch(wrapped, lambda m: 1.0, 0.01)
