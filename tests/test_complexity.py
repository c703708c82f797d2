"""complexity_loss: the expected fraction of prunable parameters alive, checked against
Monte-Carlo samples of the gates; and the optimizer groups."""

import pytest
import torch
from torch import nn

import lumos_fx
from lumos_fx import Config


class ResidualMLP(nn.Module):
    """A residual stream (fc_in, fc_b out) and a square layer on it (in and out: one group)."""

    def __init__(self):
        super().__init__()
        self.fc_in = nn.Linear(5, 12)
        self.fc_a = nn.Linear(12, 20)
        self.fc_b = nn.Linear(20, 12)
        self.square = nn.Linear(12, 12)
        self.out = nn.Linear(12, 2)

    def forward(self, x):
        h = self.fc_in(x)
        h = h + self.fc_b(torch.relu(self.fc_a(h)))
        h = h + self.square(h)
        return self.out(h)


def alive_params(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """Alive weights for sampled masks, counted by hand from the architecture."""
    x, h, a = masks["x"].sum(-1), masks["fc_in"].sum(-1), masks["fc_a"].sum(-1)
    return (h * x + h) + (a * h + a) + (h * a + h) + (h * h + h) + (2 * h)


def test_expected_alive_matches_monte_carlo_of_the_gates():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(ResidualMLP(), (torch.randn(4, 5),))
    gates = lumos_fx.gates(wrapped)
    assert set(gates) == {"x", "fc_in", "fc_a"}
    with torch.no_grad():
        for g in gates.values():
            g.log_alpha.uniform_(-3, 3)
    expected, total = lumos_fx.expected_alive(wrapped)
    assert total == 5 * 12 + 12 + 12 * 20 + 20 + 20 * 12 + 12 + 12 * 12 + 12 + 12 * 2
    samples = 20_000
    masks = {}
    for name, g in gates.items():
        # One gate of n * samples entries draws `samples` independent masks in one call.
        many = lumos_fx.Gate(g.n * samples, Config()).train()
        with torch.no_grad():
            many.log_alpha.copy_(g.log_alpha.repeat(samples))
        masks[name] = many().reshape(samples, g.n) > 0
    monte_carlo = alive_params({k: v.double() for k, v in masks.items()})
    assert expected.item() == pytest.approx(monte_carlo.mean().item(), rel=4 * monte_carlo.std().item()
                                            / (monte_carlo.mean().item() * samples ** 0.5) + 1e-3)


def test_complexity_loss_is_lambda_times_the_alive_fraction_and_trains_the_gates():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(ResidualMLP(), (torch.randn(4, 5),), config=Config(lam=0.3))
    expected, total = lumos_fx.expected_alive(wrapped)
    loss = lumos_fx.complexity_loss(wrapped)
    assert loss.item() == pytest.approx(0.3 * expected.item() / total)
    assert 0.29 < loss.item() < 0.3  # gates start open: P(z != 0) is just under 1
    loss.backward()
    assert all((g.log_alpha.grad > 0).all() for g in lumos_fx.gates(wrapped).values())


def test_a_model_with_nothing_to_prune_costs_nothing():
    wrapped = lumos_fx.instrument(nn.Sequential(nn.Linear(3, 2)), (torch.randn(4, 3),))
    assert lumos_fx.expected_alive(wrapped)[1] == 6  # only the input features are prunable
    single = lumos_fx.instrument(nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 2)), (torch.randn(4, 3),))
    assert lumos_fx.gates(single) == {}
    assert lumos_fx.complexity_loss(single).item() == 0.0


def test_param_groups_split_weights_and_gates():
    model = ResidualMLP()
    model.fc_in.weight.requires_grad_(False)
    wrapped = lumos_fx.instrument(model, (torch.randn(4, 5),))
    weights, gates = lumos_fx.param_groups(wrapped, lr=1e-3, gate_lr=0.2, weight_decay=0.01)
    assert (weights["lr"], weights["weight_decay"], gates["lr"], gates["weight_decay"]) == (1e-3, 0.01, 0.2, 0.0)
    gate_ids = {id(g.log_alpha) for g in lumos_fx.gates(wrapped).values()}
    assert {id(p) for p in gates["params"]} == gate_ids
    trainable = {id(p) for p in wrapped.parameters() if p.requires_grad}
    assert {id(p) for p in weights["params"]} | gate_ids == trainable
    assert not {id(p) for p in weights["params"]} & gate_ids
    assert id(wrapped.fc_in.weight) not in {id(p) for p in weights["params"]}
    default = lumos_fx.param_groups(wrapped, lr=1e-3)[1]["lr"]
    assert default == Config().gate_lr


@pytest.mark.parametrize("warmup", [0, 10])
def test_a_nan_gate_stops_training_at_its_step_naming_the_gate(warmup):
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    wrapped = lumos_fx.instrument(ResidualMLP(), (x,), config=Config(gate_warmup=warmup)).train()
    for _ in range(3):
        wrapped(x)
        lumos_fx.complexity_loss(wrapped)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["fc_a"].log_alpha[[2, 5]] = float("nan")
    wrapped(x)
    with pytest.raises(lumos_fx.GateError, match=r"complexity_loss is nan at step 4 .*gate 'fc_a' \(2 of 20 values\) "
                                                 r"became NaN or inf.*Config.gate_lr"):
        lumos_fx.complexity_loss(wrapped)


class HeadsAttention(nn.Module):
    """Self-attention by hand: a head and its dims gate the query rows twice (bilinear terms)."""

    def __init__(self, dim=12, heads=3):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


@pytest.mark.parametrize("model, example", [(ResidualMLP, (4, 5)), (HeadsAttention, (2, 6, 12))])
def test_the_expected_count_has_the_gradient_of_its_finite_differences(model, example):
    """The expected count's gradient against finite differences in float64, for parameter
    and FLOP counts, with the same-gate correction (ResidualMLP's square layer) and the
    head x dim terms gathered from their nonzero entries (attention)."""
    torch.manual_seed(0)
    plan = lumos_fx.plan.plan_of(lumos_fx.instrument(model(), (torch.randn(*example),)))
    for cost in (plan.cost, plan.flop_cost):
        assert cost.diagonal if model is ResidualMLP else cost.bilinear
        p = torch.rand(sum(cost.sizes), dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(cost.joined, (p,))


def test_the_last_unit_of_a_group_every_path_runs_through_is_free_and_not_pressed():
    # fc_a's 20 channels: a residual branch (closable whole); the chain's hidden layer: essential
    chain = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    wrapped = lumos_fx.instrument(chain, (torch.randn(4, 6),)).train()
    plan = lumos_fx.plan.plan_of(wrapped)
    gates = lumos_fx.plan.gate_modules(wrapped)
    low, high = list(gates)[1], list(gates)[2]
    assert {low, high} <= plan.essential
    with torch.no_grad():
        gates[low].log_alpha.fill_(-6.0)  # expected 16 * 0.012 = 0.2 units: below one
    lumos_fx.complexity_loss(wrapped).backward()
    assert torch.equal(gates[low].log_alpha.grad, torch.zeros(16))  # no pressure below one unit
    assert (gates[high].log_alpha.grad > 0).all()
    cost = lumos_fx.budget.cost_model(plan, "params")
    probs = {gid: g.prob_nonzero().detach().double() for gid, g in gates.items()}
    probs[low] = probs[low] / probs[low].sum()  # counted as the one unit prune() keeps
    kept = lumos_fx.complexity.expected_kept(wrapped)
    assert kept.item() == pytest.approx(float(cost.expected(probs)) / cost.total, rel=1e-5)
    with torch.no_grad():
        gates[low].log_alpha.fill_(0.0)  # 16 * 0.83 units: counted and pressed as they are
    for g in gates.values():
        g.log_alpha.grad = None
    lumos_fx.complexity_loss(wrapped).backward()
    assert (gates[low].log_alpha.grad > 0).all()


def test_a_residual_branch_may_close_whole():
    wrapped = lumos_fx.instrument(ResidualMLP(), (torch.randn(4, 5),)).train()
    plan = lumos_fx.plan.plan_of(wrapped)
    branch = next(gid for gid, g in plan.gate_keys.items() if "fc_a" in g)
    assert branch not in plan.essential
    with torch.no_grad():
        lumos_fx.plan.gate_modules(wrapped)[branch].log_alpha.fill_(-6.0)
    lumos_fx.complexity_loss(wrapped).backward()
    assert (lumos_fx.plan.gate_modules(wrapped)[branch].log_alpha.grad > 0).all()
