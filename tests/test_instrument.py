"""instrument(): same function at initialisation, trainable, movable, checkpointable, and the
user's model left alone."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import count_params


class MLP(nn.Module):
    def __init__(self, n_in=6, hidden=16, n_out=3):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, n_out)
        self.drop = nn.Dropout(0.2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = h + F.gelu(self.fc2(self.drop(h)))
        return self.out(h)


def test_eval_output_equals_the_original_at_initialisation():
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(32, 6)
    wrapped = lumos_fx.instrument(model, (x,))
    assert isinstance(wrapped, torch.fx.GraphModule)
    assert torch.equal(wrapped.eval()(x), model(x))
    assert set(lumos_fx.gates(wrapped)) == {"x", "fc1"}


def test_the_model_given_is_not_modified():
    torch.manual_seed(0)
    model = MLP()
    model.train()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(8, 6)
    x_before = x.clone()
    wrapped = lumos_fx.instrument(model, (x,))
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(x, x_before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        for p in wrapped.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_trains_with_any_optimizer_and_gates_get_gradients():
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = x[:, :3] ** 2
    wrapped = lumos_fx.instrument(MLP(), (x[:8],))
    opt = torch.optim.SGD(lumos_fx.param_groups(wrapped, lr=0.05, gate_lr=0.1), momentum=0.9)
    first = None
    for _ in range(200):
        loss = F.mse_loss(wrapped(x), y)
        first = first or loss.item()
        opt.zero_grad()
        (loss + lumos_fx.complexity_loss(wrapped)).backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert all(g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
               for g in lumos_fx.gates(wrapped).values())


def test_moves_between_dtypes_and_keeps_working():
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(4, 6)
    wrapped = lumos_fx.instrument(model, (x,)).double()
    assert all(g.log_alpha.dtype == torch.float64 for g in lumos_fx.gates(wrapped).values())
    out = wrapped.train()(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(wrapped.eval()(x.double()), model.double()(x.double()))
    pruned = lumos_fx.prune(wrapped)
    assert pruned(x.double()).dtype == torch.float64


def test_state_dict_resumes_training_in_a_fresh_instrumented_model():
    torch.manual_seed(0)
    model, x = MLP(), torch.randn(64, 6)
    wrapped = lumos_fx.instrument(model, (x[:8],))
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, lr=1e-2))
    for _ in range(20):
        loss = wrapped(x).pow(2).mean() + lumos_fx.complexity_loss(wrapped)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = wrapped.state_dict()
    assert "lumos_gates.x.log_alpha" in state and not any("units_" in k for k in state)
    resumed = lumos_fx.instrument(model, (x[:8],))
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.eval()(x), wrapped.eval()(x))
    assert torch.equal(lumos_fx.gates(resumed)["fc1"].log_alpha, lumos_fx.gates(wrapped)["fc1"].log_alpha)


def test_a_deep_copy_keeps_what_prune_needs():
    wrapped = lumos_fx.instrument(MLP(), (torch.randn(4, 6),))
    twin = copy.deepcopy(wrapped)
    assert set(lumos_fx.gates(twin)) == set(lumos_fx.gates(wrapped))
    assert count_params(lumos_fx.prune(twin)) == count_params(lumos_fx.prune(wrapped))


def test_feature_names_as_list_or_dict_and_their_errors():
    x = torch.randn(4, 6)
    names = ["a", "b", "c", "d", "e", "f"]
    for given in (names, {"x": names}):
        wrapped = lumos_fx.instrument(MLP(), (x,), feature_names=given)
        with torch.no_grad():
            lumos_fx.gates(wrapped)["x"].log_alpha[[1, 4]] = -5.0
        assert lumos_fx.summary(wrapped).features["x"] == (["a", "c", "d", "f"], ["b", "e"])
    with pytest.raises(lumos_fx.InputError, match="has 2 names; the input has 6 features"):
        lumos_fx.instrument(MLP(), (x,), feature_names=["a", "b"])
    with pytest.raises(lumos_fx.InputError, match="names inputs"):
        lumos_fx.instrument(MLP(), (x,), feature_names={"y": names})


def test_several_inputs_each_select_their_own_features():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 8)
            self.b = nn.Linear(5, 8)
            self.out = nn.Linear(8, 1)

        def forward(self, u, v, scale: float = 1.0):
            return self.out(torch.tanh(self.a(u) + self.b(v)) * scale)

    torch.manual_seed(0)
    u, v = torch.randn(4, 3), torch.randn(4, 5)
    wrapped = lumos_fx.instrument(TwoInputs(), (u, v))
    assert {"u", "v"} <= set(lumos_fx.gates(wrapped))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["v"].log_alpha[:2] = -5.0
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.kept_feature_indices == {"u": [0, 1, 2], "v": [2, 3, 4]}
    u2, v2 = torch.randn(9, 3), torch.randn(9, 5)
    torch.testing.assert_close(pruned(u2, v2[:, 2:]), wrapped.eval()(u2, v2))


def test_functional_dropout_follows_the_training_flag():
    class FunctionalDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 32), nn.Linear(32, 2)

        def forward(self, x):
            return self.fc2(F.dropout(torch.relu(self.fc1(x)), p=0.5, training=self.training))

    torch.manual_seed(0)
    model, x = FunctionalDropout(), torch.randn(16, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    torch.testing.assert_close(wrapped.eval()(x), model.eval()(x))
    wrapped.train()
    assert not torch.equal(wrapped(x), wrapped(x))


def test_inputs_with_extra_batch_dims():
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 5, 6)
    wrapped = lumos_fx.instrument(model, (x,))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["fc1"].log_alpha[:10] = -5.0
    pruned = lumos_fx.prune(wrapped)
    x2 = torch.randn(3, 7, 6)
    torch.testing.assert_close(pruned(x2), wrapped.eval()(x2))
