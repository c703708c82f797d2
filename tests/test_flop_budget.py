"""A FLOP budget: the cost model counts what FlopCounterMode counts, and prune() lands on it."""

import pytest
import torch
from torch import nn

import lumos_fx
from lumos_fx.budget import budget_of
from lumos_fx.plan import gate_modules, plan_of
from lumos_fx.report import count_flops


def cnn(width=12):
    """Convolutions on maps of 16x16, 8x8 (stride 2) and 8x8, then a linear head: a channel
    of the first layers costs more FLOPs than one of the last, per parameter as well."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1),
                         nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5))


class Attention(nn.Module):
    """One attention head written out: its two matmuls' FLOPs belong to no weight."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v, self.head = nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(8, 2)

    def forward(self, x):
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2), -1)
        return self.head(scores @ self.v(x))


def random_gates(wrapped, seed, inputs=True):
    """Close about half the units of every group (of every group but the input's)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gate_modules(wrapped).values():
            if gate.group == "input" and not inputs:
                continue
            gate.log_alpha.copy_(torch.where(torch.rand(gate.n, generator=gen) < 0.5, -8.0, 8.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_flop_cost_of_the_eval_gates_is_what_the_pruned_model_costs(seed):
    x = torch.randn(2, 3, 16, 16)
    wrapped = lumos_fx.instrument(cnn(), (x,))
    plan = plan_of(wrapped)
    fixed = plan.example_flops - plan.flop_cost.total  # FLOPs no gate controls
    assert plan.flop_cost.total > 0 and fixed >= 0
    random_gates(wrapped, seed)
    with torch.no_grad():
        masks = {gid: (g.eval_value() > 0).double() for gid, g in gate_modules(wrapped).items()}
        expected = float(plan.flop_cost.expected(masks))
    assert fixed + expected == pytest.approx(count_flops(lumos_fx.prune(wrapped), (x,)))


def test_attention_scores_count_as_fixed_flops():
    x = torch.randn(2, 5, 16)
    wrapped = lumos_fx.instrument(Attention(), (x,))
    plan = plan_of(wrapped)
    assert plan.flop_cost.total == 2 * 2 * 5 * 3 * 16 * 8  # q, k and v, which read the gated inputs
    head = 2 * 2 * 5 * 8 * 2  # behind the matmuls, which have no rule: ungated
    assert plan.example_flops - plan.flop_cost.total == 2 * (2 * 2 * 5 * 5 * 8) + head  # q k^T, scores v


def test_a_channel_on_a_larger_map_weighs_more_flops():
    wrapped = lumos_fx.instrument(cnn(), (torch.randn(2, 3, 16, 16),))
    plan = plan_of(wrapped)
    by_name = {plan.groups[gid].name: gid for gid in gate_modules(wrapped)}

    def cost_of_closing(name, model):
        probs = {gid: torch.ones(g.n, dtype=torch.float64) for gid, g in gate_modules(wrapped).items()}
        probs[by_name[name]][0] = 0.0
        return 1 - float(model.expected(probs)) / model.total

    # a channel of the 16x16 map (conv 0's output) against one of the 8x8 map (conv 5's)
    assert cost_of_closing("0", plan.flop_cost) / cost_of_closing("5", plan.flop_cost) > \
        cost_of_closing("0", plan.cost) / cost_of_closing("5", plan.cost)


def test_one_budget_at_a_time():
    with pytest.raises(ValueError, match="not both"):
        lumos_fx.Config(target_params=0.5, target_flops=0.5)
    with pytest.raises(ValueError, match="target_flops"):
        lumos_fx.Config(target_flops=1.0)


@pytest.mark.parametrize("target", [0.8, 0.5, 0.2])
def test_prune_lands_on_a_flop_budget(target):
    """From either side; the input features stay open (one of three moves a third of the
    first conv, more than the tolerance)."""
    x = torch.randn(2, 3, 16, 16)
    wrapped = lumos_fx.instrument(cnn(width=64), (x,), config=lumos_fx.Config(target_flops=target))
    assert budget_of(wrapped).kind == "flops"
    random_gates(wrapped, 0, inputs=False)
    pruned = lumos_fx.prune(wrapped)
    plan = plan_of(wrapped)
    fixed = plan.example_flops - plan.flop_cost.total
    kept = (count_flops(pruned, (x,)) - fixed) / plan.flop_cost.total
    assert kept == pytest.approx(target, abs=plan.config.budget_tolerance)
    snap = lumos_fx.summary(pruned).budget
    assert snap.kind == "flops" and snap.after == pytest.approx(kept)
    assert "of FLOPs of the gated layers" in str(snap)
    torch.testing.assert_close(pruned(x), wrapped.eval()(x), rtol=1e-4, atol=1e-5)


def test_training_to_a_flop_budget_moves_the_expected_flops_there():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16)
    y = x.mean((2, 3)) @ torch.randn(3, 5)
    wrapped = lumos_fx.instrument(cnn(), (x[:2],), config=lumos_fx.Config(target_flops=0.3, budget_warmup=50))
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, 1e-3))
    wrapped.train()
    for _ in range(300):
        loss = nn.functional.mse_loss(wrapped(x), y) + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert lumos_fx.expected_kept(wrapped).item() == pytest.approx(0.3, abs=0.05)
