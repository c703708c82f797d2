"""Feature selection during ordinary training: the target depends on a known subset of the
inputs, and the gates must find exactly that subset."""

import pytest
import torch
from torch import nn

import lumos_fx


def train(wrapped, x, y, steps):
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, lr=1e-2))
    gen = torch.Generator().manual_seed(0)
    wrapped.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = nn.functional.mse_loss(wrapped(x[idx]), y[idx]) + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("seed", [0, 1])
def test_gates_keep_exactly_the_inputs_the_target_depends_on(seed):
    torch.manual_seed(seed)
    x = torch.randn(4096, 10)
    y = (torch.sin(2 * x[:, 0]) + x[:, 2] * x[:, 5] + 0.5 * x[:, 5] ** 2).unsqueeze(1)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    names = [f"f{i}" for i in range(10)]
    wrapped = lumos_fx.instrument(model, (x[:16],), feature_names=names)
    train(wrapped, x, y, steps=1500)
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.kept_feature_indices == {"input": [0, 2, 5]}
    assert pruned.kept_features == {"input": ["f0", "f2", "f5"]}
    with torch.no_grad():
        x_test = torch.randn(1000, 10)
        y_test = (torch.sin(2 * x_test[:, 0]) + x_test[:, 2] * x_test[:, 5] + 0.5 * x_test[:, 5] ** 2).unsqueeze(1)
        r2 = 1 - ((pruned(x_test[:, [0, 2, 5]]) - y_test) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum()
    assert r2 > 0.9
