"""A parameter budget: the Lagrangian controller reaches it in training, prune() lands on it."""

import pytest
import torch
from torch import nn

import lumos_fx
from lumos_fx.budget import budget_of, snap_to_budget
from lumos_fx.plan import gate_modules, plan_of


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


def kept_fraction(wrapped) -> float:
    """The prunable parameters the eval gates keep, as a fraction."""
    plan = plan_of(wrapped)
    with torch.no_grad():
        masks = {gid: (g.eval_value() > 0).double() for gid, g in gate_modules(wrapped).items()}
        return float(plan.cost.expected(masks)) / plan.cost.total


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5])
def test_a_target_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="target_params"):
        lumos_fx.Config(target_params=bad)


def test_without_a_target_nothing_changes():
    wrapped = lumos_fx.instrument(mlp(), (torch.randn(4, 8),))
    assert budget_of(wrapped) is None
    assert [g["name"] for g in lumos_fx.param_groups(wrapped, 1e-3)] == ["weights", "gates"]
    assert snap_to_budget(wrapped) is None


def test_the_controller_state_is_saved_and_counted_apart_from_the_model():
    model = mlp()
    wrapped = lumos_fx.instrument(model, (torch.randn(4, 8),), config=lumos_fx.Config(target_params=0.3))
    assert [g["name"] for g in lumos_fx.param_groups(wrapped, 1e-3)] == ["weights", "gates"]
    assert {"lumos_budget.lambda_1", "lumos_budget.lambda_2", "lumos_budget.step"} <= set(wrapped.state_dict())
    assert lumos_fx.report.count_params(wrapped) == sum(p.numel() for p in model.parameters())
    assert not any(n.startswith("lumos_budget") for n, _ in lumos_fx.prune(wrapped).named_buffers())


def test_the_target_ramps_from_everything_to_the_budget_over_the_warm_up():
    wrapped = lumos_fx.instrument(mlp(), (torch.randn(4, 8),),
                                  config=lumos_fx.Config(target_params=0.2, budget_warmup=10))
    budget = budget_of(wrapped)
    wrapped.train()
    seen = []
    for _ in range(12):
        seen.append(budget.target_now())
        lumos_fx.complexity_loss(wrapped)
    assert seen[0] == 1.0 and seen[5] == pytest.approx(0.6) and seen[10] == seen[11] == pytest.approx(0.2)
    wrapped.eval()
    lumos_fx.complexity_loss(wrapped)
    assert int(budget.step) == 12  # evaluation does not advance the controller


def test_lambda_rises_while_the_model_is_above_its_target_and_falls_below_it():
    wrapped = lumos_fx.instrument(mlp(), (torch.randn(4, 8),), config=lumos_fx.Config(target_params=0.2,
                                                                                          budget_warmup=0))
    budget = budget_of(wrapped)
    wrapped.train()
    expected, total = lumos_fx.expected_alive(wrapped)
    gap = expected.item() / total / 0.2 - 1  # the miss relative to the target
    for _ in range(5):
        lumos_fx.complexity_loss(wrapped)
    assert budget.lambda_1.item() == pytest.approx(5 * 0.05 * gap)  # dual ascent: lr x miss per step
    assert budget.lambda_2.item() == pytest.approx(5 * 0.05 * gap ** 2)
    with torch.no_grad():
        for gate in gate_modules(wrapped).values():
            gate.log_alpha.fill_(-6.0)  # far below the target now
    before = budget.lambda_1.item()
    lumos_fx.complexity_loss(wrapped)
    assert budget.lambda_1.item() < before
    for _ in range(40):  # lambda_1 turns negative
        lumos_fx.complexity_loss(wrapped)
    lumos_fx.complexity_loss(wrapped).backward()  # and the term pushes the gates open again
    assert all((g.log_alpha.grad < 0).all() for g in gate_modules(wrapped).values())


def test_training_with_a_budget_reaches_it_without_a_lam():
    torch.manual_seed(0)
    x = torch.randn(2048, 8)
    y = torch.stack([x[:, 0] * x[:, 1], torch.sin(x[:, 2])], 1)
    wrapped = lumos_fx.instrument(mlp(), (x[:4],), config=lumos_fx.Config(target_params=0.2, budget_warmup=100))
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, 3e-3))
    wrapped.train()
    for _ in range(600):
        idx = torch.randint(0, len(x), (128,))
        loss = nn.functional.mse_loss(wrapped(x[idx]), y[idx]) + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expected, total = lumos_fx.expected_alive(wrapped)
    assert expected.item() / total == pytest.approx(0.2, abs=0.05)
    pruned = lumos_fx.prune(wrapped)
    assert kept_fraction(wrapped) == pytest.approx(0.2, abs=0.02)
    assert lumos_fx.summary(pruned).budget.after == pytest.approx(kept_fraction(wrapped))
    torch.testing.assert_close(pruned(x[:64]), wrapped.eval()(x[:64]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("start", [4.0, -4.0, "random"])
def test_prune_snaps_any_gate_setting_to_the_budget_and_keeps_the_invariant(start):
    x = torch.randn(16, 8)
    wrapped = lumos_fx.instrument(mlp(), (x,), config=lumos_fx.Config(target_params=0.35))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for gate in gate_modules(wrapped).values():
            if start == "random":
                gate.log_alpha.copy_(torch.randn(gate.n, generator=gen) * 4)
            else:
                gate.log_alpha.fill_(start)
    before = {gid: g.log_alpha.detach().clone() for gid, g in gate_modules(wrapped).items()}
    pruned = lumos_fx.prune(wrapped)
    assert kept_fraction(wrapped) == pytest.approx(0.35, abs=0.01 + 1e-9) or start == -4.0
    snap = lumos_fx.summary(pruned).budget
    assert snap.target == 0.35 and snap.after == pytest.approx(kept_fraction(wrapped))
    assert "budget: keep 35.0%" in str(lumos_fx.summary(pruned))
    moved = sum(int((g.log_alpha != before[gid]).sum()) for gid, g in gate_modules(wrapped).items())
    assert moved == snap.closed + snap.reopened > 0
    torch.testing.assert_close(pruned(x), wrapped.eval()(x), rtol=1e-4, atol=1e-5)


def test_all_gates_closed_reopens_the_strongest_to_reach_the_budget():
    x = torch.randn(16, 8)
    wrapped = lumos_fx.instrument(mlp(), (x,), config=lumos_fx.Config(target_params=0.35))
    with torch.no_grad():
        for i, gate in enumerate(gate_modules(wrapped).values()):
            gate.log_alpha.copy_(-4.0 + torch.linspace(0, 1, gate.n) + i * 1e-3)
    pruned = lumos_fx.prune(wrapped)
    assert kept_fraction(wrapped) == pytest.approx(0.35, abs=0.01)
    assert lumos_fx.summary(pruned).budget.reopened > 0
    torch.testing.assert_close(pruned(x), wrapped.eval()(x), rtol=1e-4, atol=1e-5)


def test_summary_of_an_instrumented_model_does_not_snap_its_gates():
    wrapped = lumos_fx.instrument(mlp(), (torch.randn(4, 8),), config=lumos_fx.Config(target_params=0.5))
    before = [g.log_alpha.detach().clone() for g in gate_modules(wrapped).values()]
    assert lumos_fx.summary(wrapped).budget.after == pytest.approx(0.5, abs=0.01)
    assert all(torch.equal(b, g.log_alpha) for b, g in zip(before, gate_modules(wrapped).values()))


def test_a_one_channel_bottleneck_is_kept_whole_and_the_snap_keeps_a_unit_of_every_bottleneck():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 1, 8, 8)
    wrapped = lumos_fx.instrument(model, (x,), config=lumos_fx.Config(target_params=0.05))
    summary = lumos_fx.summary(wrapped)
    assert "its one channel carries every path" in summary.kept_whole["input"]  # a gate that could only be open
    plan = plan_of(wrapped)
    assert {plan.groups[g].name for g in plan.essential} == {"input", "0", "3"}
    with torch.no_grad():
        for gate in gate_modules(wrapped).values():
            gate.log_alpha.fill_(4.0)
    pruned = lumos_fx.prune(wrapped)  # 5% would close every channel: one of each stays
    assert [r.after for r in lumos_fx.summary(pruned).groups] == [1, 1]
    torch.testing.assert_close(pruned(x), wrapped.eval()(x), rtol=1e-4, atol=1e-5)
    assert pruned(torch.randn(2, 1, 8, 8)).std(0).sum() > 0  # still reads its input


def test_a_residual_branch_may_close_whole():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.branch, self.out = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.branch(torch.relu(h)))

    wrapped = lumos_fx.instrument(Block(), (torch.randn(2, 4),))
    plan = plan_of(wrapped)
    assert "branch" not in {plan.groups[g].name for g in plan.essential}


def test_when_the_last_unit_jumps_past_the_band_the_next_that_lands_in_it_is_taken():
    """Inputs 0 and 1 weigh 50 parameters each (14.3% of 350), a hidden unit 7 (2%): by
    log_alpha order the snap would close inputs 0 and 1 (71.4% kept for a target of 84%);
    closing input 0 and a hidden unit (6 parameters left to it) lands at 84.0%."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 50), nn.ReLU(), nn.Linear(50, 2))
    x = torch.randn(8, 4)
    wrapped = lumos_fx.instrument(model, (x,), config=lumos_fx.Config(target_params=0.84))
    gates = lumos_fx.gates(wrapped)
    with torch.no_grad():
        gates["input"].log_alpha.copy_(torch.tensor([2.5, 2.6, 3.5, 3.5]))
        gates["0"].log_alpha.fill_(3.0)
    pruned = lumos_fx.prune(wrapped)
    snap = lumos_fx.summary(pruned).budget
    assert snap.closed == 2 and snap.after == pytest.approx(294 / 350)
    assert summary_channels(pruned) == {"input": 3, "0": 49}
    torch.testing.assert_close(pruned(x), wrapped.eval()(x), rtol=1e-4, atol=1e-5)


def summary_channels(pruned) -> dict[str, int]:
    return {r.name: r.after for r in lumos_fx.summary(pruned).groups}


def test_a_diverging_multiplier_or_gate_stops_training_at_its_step():
    x = torch.randn(4, 8)
    config = lumos_fx.Config(target_params=0.2, budget_warmup=0, budget_lr=1e300)
    wrapped = lumos_fx.instrument(mlp(), (x,), config=config).train()
    wrapped(x)
    with pytest.raises(lumos_fx.LumosError, match=r"multipliers diverged at step 1 .*lambda_1=inf.*"
                                                  r"Lower Config.budget_lr \(now 1e\+300\)"):
        lumos_fx.complexity_loss(wrapped)
    wrapped = lumos_fx.instrument(mlp(), (x,), config=lumos_fx.Config(target_params=0.2)).train()
    with torch.no_grad():
        next(iter(gate_modules(wrapped).values())).log_alpha[0] = float("nan")
    wrapped(x)
    with pytest.raises(lumos_fx.GateError, match=r"at step 1 .*became NaN or inf"):
        lumos_fx.complexity_loss(wrapped)
