"""freeze_gates and fit(finetune=...): the last steps train the cut model's weights and
nothing else, and prune() cuts exactly that model."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lumos_fx
from lumos_fx.errors import InputError


def _problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(512, 6)
    y = x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3])
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    return model, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True), x, y


def _trained(target=0.3, epochs=8):
    model, loader, x, y = _problem()
    wrapped = lumos_fx.instrument(model, (x[:4],), config=lumos_fx.Config(target_params=target, budget_warmup=40))
    lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=epochs, lr=3e-3, progress=False)
    return wrapped, loader, x, y


def _log_alphas(wrapped):
    return {k: g.log_alpha.detach().clone() for k, g in lumos_fx.gates(wrapped).items()}


def test_frozen_gates_train_the_weights_of_the_cut_model_and_prune_moves_nothing():
    wrapped, loader, x, y = _trained()
    lumos_fx.freeze_gates(wrapped)
    settled = _log_alphas(wrapped)
    weights = {k: v.clone() for k, v in wrapped.state_dict().items() if k.endswith("weight")}
    wrapped.train()
    assert torch.equal(wrapped(x[:16]), wrapped.eval()(x[:16]))  # training runs the eval gates: no noise
    wrapped.train()
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, 1e-2))
    for xb, yb in loader:
        term = lumos_fx.complexity_loss(wrapped)
        assert term.item() == 0.0 and not term.requires_grad
        loss = nn.functional.mse_loss(wrapped(xb), yb) + term
        opt.zero_grad()
        loss.backward()
        assert all(g.log_alpha.grad is None for g in lumos_fx.gates(wrapped).values())
        opt.step()
    assert all(torch.equal(settled[k], g.log_alpha) for k, g in lumos_fx.gates(wrapped).items())
    assert any(not torch.equal(v, wrapped.state_dict()[k]) for k, v in weights.items())
    pruned = lumos_fx.prune(wrapped)
    assert all(torch.equal(settled[k], g.log_alpha) for k, g in lumos_fx.gates(wrapped).items())
    assert torch.allclose(pruned(x[:37]), wrapped.eval()(x[:37]), atol=1e-5)  # another batch size
    budget = lumos_fx.summary(pruned).budget
    assert budget is not None and budget.after == pytest.approx(0.3, abs=0.011)  # the snap freezing did
    assert lumos_fx.expected_kept(wrapped).item() == pytest.approx(budget.after, abs=1e-6)


def test_freezing_settles_the_gates_as_prune_would_and_twice_is_once():
    wrapped, *_ = _trained()
    twin = copy.deepcopy(wrapped)
    lumos_fx.prune(twin)  # snaps its gates in place
    lumos_fx.freeze_gates(wrapped)
    once = _log_alphas(wrapped)
    assert all(torch.equal(once[k], g.log_alpha) for k, g in lumos_fx.gates(twin).items())
    lumos_fx.freeze_gates(wrapped)
    assert all(torch.equal(once[k], g.log_alpha) for k, g in lumos_fx.gates(wrapped).items())


def test_the_frozen_flag_and_the_snap_are_part_of_the_state_dict_and_old_states_load(tmp_path):
    wrapped, _, x, _ = _trained(epochs=2)
    lumos_fx.freeze_gates(wrapped)
    torch.save(wrapped.state_dict(), tmp_path / "frozen.pt")
    fresh = lumos_fx.instrument(_problem()[0], (x[:4],), config=lumos_fx.Config(target_params=0.3))
    fresh.load_state_dict(torch.load(tmp_path / "frozen.pt", weights_only=True))
    assert all(g.frozen for g in lumos_fx.gates(fresh).values())
    here, there = lumos_fx.summary(lumos_fx.prune(wrapped)), lumos_fx.summary(lumos_fx.prune(fresh))
    assert there.budget is not None and there.budget == here.budget and there.rounded == here.rounded
    # saved before the bank kept the snap: frozen, with no snap to report
    older = {k: v for k, v in wrapped.state_dict().items() if k != "lumos_gates._extra_state"}
    frozen_before = lumos_fx.instrument(_problem()[0], (x[:4],), config=lumos_fx.Config(target_params=0.3))
    frozen_before.load_state_dict(older)
    assert all(g.frozen for g in lumos_fx.gates(frozen_before).values())
    assert lumos_fx.summary(lumos_fx.prune(frozen_before)).budget is None
    # saved before freezing existed: no flag either
    old = {k: ({"draws": v["draws"]} if k.endswith("_extra_state") else v) for k, v in older.items()}
    again = lumos_fx.instrument(_problem()[0], (x[:4],), config=lumos_fx.Config(target_params=0.3))
    again.load_state_dict(old)
    assert not any(g.frozen for g in lumos_fx.gates(again).values())


def test_fit_finetune_freezes_for_the_last_steps():
    model, loader, x, y = _problem()
    wrapped = lumos_fx.instrument(model, (x[:4],), config=lumos_fx.Config(target_params=0.3, budget_warmup=40))
    seen = []

    def loss_fn(pred, target):
        seen.append(next(iter(lumos_fx.gates(wrapped).values())).frozen)
        return nn.functional.mse_loss(pred, target)
    history = lumos_fx.fit(wrapped, loader, loss_fn, epochs=10, lr=3e-3, finetune=0.25, progress=False)
    assert seen == [False] * 60 + [True] * 20  # 80 steps, the last quarter frozen
    assert history[-1]["complexity"] == 0.0 and history[-1]["kept"] == pytest.approx(0.3, abs=0.011)
    pruned = lumos_fx.prune(wrapped)
    assert lumos_fx.summary(pruned).budget.after == pytest.approx(0.3, abs=0.011)
    assert torch.allclose(pruned(x[:9]), wrapped.eval()(x[:9]), atol=1e-5)


def test_a_tolerance_search_chooses_before_the_finetune_and_the_finetune_is_kept():
    torch.manual_seed(0)
    x, x_val = torch.randn(512, 6), torch.randn(256, 6)

    def f(v):
        return v[:, :1] * v[:, 1:2]
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
    loader = DataLoader(TensorDataset(x, f(x)), batch_size=64, shuffle=True)
    wrapped = lumos_fx.instrument(model, (x[:4],))
    at_freeze = {}

    def validate(m):
        return -math.log(nn.functional.mse_loss(m(x_val), f(x_val)).item())

    def loss_fn(pred, target):
        gate = next(iter(lumos_fx.gates(wrapped).values()))
        if gate.frozen and not at_freeze:
            at_freeze.update({k: v.clone() for k, v in wrapped.state_dict().items() if k.endswith("weight")})
        return nn.functional.mse_loss(pred, target)
    history = lumos_fx.fit(wrapped, loader, loss_fn, epochs=20, lr=3e-3, progress=False, validate=validate,
                           tolerance=math.log(1.5), validate_every=16, finetune=0.2)
    validations = [v for h in history for v in h["validations"]]
    assert len(validations) == 128 // 16  # none in the fine-tune's 32 steps
    assert history[-1]["chosen"]["kept"] < 1.0
    assert any(not torch.equal(v, wrapped.state_dict()[k]) for k, v in at_freeze.items())  # not loaded over
    pruned = lumos_fx.prune(wrapped)
    assert torch.allclose(pruned(x[:9]), wrapped.eval()(x[:9]), atol=1e-5)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.1", True])
def test_a_finetune_fraction_out_of_range_is_refused_by_name(bad):
    model, loader, x, _ = _problem()
    wrapped = lumos_fx.instrument(model, (x[:4],))
    with pytest.raises(InputError, match=r"fit\(finetune="):
        lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, finetune=bad, progress=False)


def test_with_its_optimizer_a_frozen_gate_gets_a_zero_gradient_and_does_not_move():
    wrapped, loader, x, y = _trained(epochs=2)
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, 1e-2))
    wrapped.train()
    for xb, yb in list(loader)[:3]:  # Adam's moments of the gates: non-zero before the freeze
        loss = nn.functional.mse_loss(wrapped(xb), yb) + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lumos_fx.freeze_gates(wrapped, opt)
    lumos_fx.freeze_gates(wrapped, opt)  # hooks the optimizer once
    settled = _log_alphas(wrapped)
    for xb, yb in loader:
        loss = nn.functional.mse_loss(wrapped(xb), yb) + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        # in the graph, for DistributedDataParallel, with nothing to say
        assert all(torch.equal(g.log_alpha.grad, torch.zeros_like(g.log_alpha)) for g in lumos_fx.gates(wrapped).values())
        opt.step()
        assert all(g.log_alpha.grad is None for g in lumos_fx.gates(wrapped).values())
    assert all(torch.equal(settled[k], g.log_alpha) for k, g in lumos_fx.gates(wrapped).items())
    assert len(opt._optimizer_step_pre_hooks) == 1
    pruned = lumos_fx.prune(wrapped)
    assert torch.allclose(pruned(x[:11]), wrapped.eval()(x[:11]), atol=1e-5)
