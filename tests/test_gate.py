"""The hard-concrete gate against its formulas, known values and Monte-Carlo estimates."""

import math

import pytest
import torch

import lumos_fx
from lumos_fx import Config, Gate


def gate_with(log_alpha, **config) -> Gate:
    gate = Gate(len(log_alpha), Config(**config))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.as_tensor(log_alpha, dtype=torch.float32))
    return gate


def test_eval_gate_thresholds_of_the_default_constants():
    config = Config()
    assert config.closed_threshold == pytest.approx(-2.3979, abs=1e-4)
    assert config.open_threshold == pytest.approx(2.3979, abs=1e-4)
    gate = gate_with([-6.0, -3.0, -2.399, -2.39, 0.0, 2.39, 2.399, 3.0]).eval()
    z = gate()
    assert z[:3].tolist() == [0.0, 0.0, 0.0]
    assert 0.0 < z[3] < 1e-3
    assert z[4].item() == pytest.approx(0.5)  # sigmoid(0) * 1.2 - 0.1
    assert 1 - 1e-3 < z[5] < 1.0
    assert z[6:].tolist() == [1.0, 1.0]


def test_eval_value_formula():
    la = torch.linspace(-4, 4, 17)
    gate = gate_with(la, beta=0.5, gamma=-0.2, zeta=1.3).eval()
    expected = torch.clamp(torch.sigmoid(la) * 1.5 - 0.2, 0, 1)
    torch.testing.assert_close(gate(), expected)


@pytest.mark.parametrize("log_alpha", [-3.0, -1.0, 0.0, 1.5, 4.0])
def test_prob_nonzero_matches_monte_carlo(log_alpha):
    torch.manual_seed(0)
    gate = gate_with([log_alpha] * 200_000).train()
    z = gate()
    freq = (z > 0).float().mean().item()
    p = gate.prob_nonzero()[0].item()
    assert p == pytest.approx(1 / (1 + math.exp(-(log_alpha - (2 / 3) * math.log(0.1 / 1.1)))))
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / 200_000) + 1e-4


def test_training_sample_distribution_matches_the_stretched_concrete():
    """P(z <= t) for 0 < t < 1 has a closed form: invert the stretch and the logistic."""
    torch.manual_seed(1)
    la, beta, gamma, zeta = 0.7, 2 / 3, -0.1, 1.1
    z = gate_with([la] * 200_000).train()()
    for t in (0.2, 0.5, 0.8):
        s = (t - gamma) / (zeta - gamma)
        # s <= s_t  <=>  log u - log(1-u) <= beta * logit(s_t) - log_alpha
        expected = torch.sigmoid(torch.tensor(beta * math.log(s / (1 - s)) - la)).item()
        assert (z <= t).float().mean().item() == pytest.approx(expected, abs=0.006)
    assert (z == 1).any() and (z == 0).any()  # the stretch gives exact zeros and ones


def test_noise_range_collapsed_to_one_half_is_deterministic():
    gate = gate_with([-1.0, 0.3, 2.0], noise_range=(0.5, 0.5)).train()
    expected = torch.clamp(torch.sigmoid(torch.tensor([-1.0, 0.3, 2.0]) / (2 / 3)) * 1.2 - 0.1, 0, 1)
    torch.testing.assert_close(gate(), expected)
    torch.testing.assert_close(gate(), expected)


def test_one_sample_per_gate_per_forward_shared_by_the_batch():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4, bias=False)
            torch.nn.init.eye_(self.fc.weight)

        def forward(self, x):
            return self.fc(x)

    x = torch.ones(64, 4)
    wrapped = lumos_fx.instrument(Scale(), (x,))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha.fill_(0.0)
    wrapped.train()
    y = wrapped(x)
    assert torch.equal(y, y[:1].expand_as(y))  # every row saw the same gate sample
    assert not torch.equal(y, wrapped(x))  # a new sample on the next forward


def test_prob_nonzero_is_differentiable_and_increasing():
    gate = gate_with([-2.0, 0.0, 2.0])
    p = gate.prob_nonzero()
    p.sum().backward()
    assert (gate.log_alpha.grad > 0).all()
    assert (p[1:] > p[:-1]).all()


def test_config_rejects_bad_constants():
    with pytest.raises(ValueError, match="gamma < 0 < 1 < zeta"):
        Config(gamma=0.1)
    with pytest.raises(ValueError, match="noise_range"):
        Config(noise_range=(0.6, 0.4))


def test_the_warm_up_holds_gates_deterministic_and_the_complexity_term_at_zero():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 4),), config=Config(gate_warmup=3)).train()
    gates = list(lumos_fx.gates(wrapped).values())
    with torch.no_grad():
        for g in gates:
            g.log_alpha.uniform_(-1, 1)
    for _ in range(3):
        wrapped(torch.randn(2, 4))
        assert lumos_fx.complexity_loss(wrapped).item() == 0.0
    held = [g.eval_value() for g in gates]
    wrapped(torch.randn(2, 4))  # the fourth step samples
    assert lumos_fx.complexity_loss(wrapped).item() > 0
    assert not all(torch.equal(g(), h) for g, h in zip(gates, held))


def test_warm_up_draws_return_the_eval_value():
    gate = Gate(5, Config(gate_warmup=2)).train()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-2, 2, 5))
    assert torch.equal(gate(), gate.eval_value()) and torch.equal(gate(), gate.eval_value())
    assert not torch.equal(gate(), gate.eval_value())


def test_annealing_moves_beta_and_the_noise_range_to_deterministic_gates():
    gate = Gate(4, Config(gate_warmup=2, anneal_steps=10, final_beta=1 / 3, final_noise_range=(0.5, 0.5))).train()
    assert gate.schedule() == (pytest.approx(2 / 3), (1e-6, 1 - 1e-6))
    gate.draws = 2 + 5
    beta, (t_l, t_u) = gate.schedule()
    assert beta == pytest.approx(0.5) and t_l == pytest.approx(0.25, abs=1e-6) and t_u == pytest.approx(0.75, abs=1e-6)
    gate.draws = 2 + 10
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.2, 0.5, 3.0]))
    expected = torch.clamp(torch.sigmoid(gate.log_alpha / (1 / 3)) * 1.2 - 0.1, 0, 1)
    torch.testing.assert_close(gate(), expected)  # semi-stochastic, then deterministic
    torch.testing.assert_close(gate(), expected)
    assert gate.prob_nonzero()[0].item() == pytest.approx(
        1 / (1 + math.exp(1.0 + (1 / 3) * math.log(0.1 / 1.1))))  # the surrogate keeps a gradient


def test_a_bad_final_noise_range_is_refused():
    with pytest.raises(ValueError, match="final_noise_range"):
        Config(final_noise_range=(0.6, 0.5))


def test_the_training_sample_is_the_formula_and_its_gradient_is_the_formula_s():
    """The sample against eq. 1-2 written with torch ops, values and gradients, on log_alpha
    that put some gates below 0, some above 1 (zero gradient there) and some in between."""
    torch.manual_seed(2)
    gate = gate_with(torch.linspace(-5, 5, 41).double()).double()
    beta, (t_l, t_u) = gate.schedule()
    u = torch.empty(41, dtype=torch.float64).uniform_(t_l, t_u, generator=torch.Generator().manual_seed(7))
    la = gate.log_alpha.detach().clone().requires_grad_()
    expected = torch.clamp(torch.sigmoid((torch.log(u) - torch.log(1 - u) + la) / beta) * 1.2 - 0.1, 0, 1)
    got = gate._concrete(gate.log_alpha, u, beta)
    torch.testing.assert_close(got, expected)
    assert (got == 0).any() and (got == 1).any() and ((got > 0) & (got < 1)).any()
    weights = torch.randn(41, dtype=torch.float64)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    torch.testing.assert_close(gate.log_alpha.grad, la.grad)
    assert torch.autograd.gradcheck(lambda a: gate._concrete(a, u, beta), (la.detach().clone().requires_grad_(),))
