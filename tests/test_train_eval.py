"""A forward whose train- and eval-mode traces differ only in numbers or flags computed from
``self.training`` is one graph that follows ``.train()`` / ``.eval()``, cut and exported."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import max_rel_error


class Attention(nn.Module):
    """Attention dropout as transformers' sdpa integration passes it."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out, self.p = nn.Linear(8, 24), nn.Linear(8, 3), 0.5

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 2, 4).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        return self.out(h.transpose(1, 2).reshape(b, n, 8))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.attn = nn.Linear(4, 8), Attention()
        self.register_buffer("mean", torch.zeros(8))
        self.register_buffer("var", torch.ones(8))

    def forward(self, x):
        h = self.inp(x).transpose(1, 2)
        h = F.batch_norm(h, self.mean.clone(), self.var.clone(), training=self.training).transpose(1, 2)
        return self.attn(torch.relu(h))


@pytest.fixture()
def cut(tmp_path):
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 5, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model(x)) < 1e-6
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    lumos_fx.export(pruned, tmp_path / "m")
    return model, wrapped, pruned, lumos_fx.load(tmp_path / "m")


def test_the_graph_reads_the_training_flag_where_the_model_did(cut):
    _, wrapped, pruned, _ = cut
    assert "self.attn.training" in wrapped.code and "training" in pruned.code
    assert "dropout_p = 0.0" not in wrapped.code


def test_eval_mode_is_exact_and_train_mode_draws_dropout(cut):
    _, wrapped, pruned, exported = cut
    x = torch.randn(3, 7, 4)
    with torch.no_grad():
        for m in (pruned, exported):
            assert max_rel_error(m.eval()(x), wrapped.eval()(x)) < 1e-5
        torch.manual_seed(1)
        first = wrapped.train()(x)
        torch.manual_seed(2)
        assert not torch.allclose(first, wrapped(x))  # dropout on the attention weights
        exported.train()
        torch.manual_seed(1)
        assert exported(x).shape == first.shape


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm written out in Python, as timm's BatchNormAct2d does: train mode alone counts
    the batch and uses batch statistics."""

    def forward(self, x):
        factor = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        bn_training = True if self.training else (self.running_mean is None) and (self.running_var is None)
        x = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, bn_training, factor, self.eps)
        return torch.relu(x)


def test_a_batch_counter_only_train_mode_advances_is_one_graph_and_its_channels_are_cut(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BatchNormAct(8), nn.Conv2d(8, 2, 1))
    x = torch.randn(4, 3, 6, 6)
    wrapped = lumos_fx.instrument(model, (x,))
    assert not lumos_fx.summary(wrapped).one_op
    with torch.no_grad():
        lumos_fx.gates(wrapped)["0"].log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("0").out_channels == 4 and pruned.get_parameter("1.weight").numel() == 4
    other = torch.randn(3, 3, 9, 5)
    assert max_rel_error(pruned(other), wrapped.eval()(other)) < 1e-5
    counter = wrapped.get_buffer("1.num_batches_tracked")
    start = counter.item()
    wrapped.eval()(x)
    assert counter.item() == start  # eval mode counts nothing
    wrapped.train()(x)
    assert counter.item() == start + 1
    lumos_fx.export(pruned, tmp_path / "m")
    assert max_rel_error(lumos_fx.load(tmp_path / "m")(other), pruned(other)) < 1e-5


def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """timm's drop_path: whole samples dropped in train mode, the identity in eval mode."""
    if drop_prob == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - drop_prob)
    return x * keep.div_(1 - drop_prob)


def stochastic_depth(x, p: float, training: bool):
    """torchvision's stochastic_depth, which torchvision wraps for fx (one op in the graph)."""
    if not training or p == 0.0:
        return x
    noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * noise.div_(1 - p)


torch.fx.wrap("stochastic_depth")


class DropPath(nn.Module):
    def __init__(self, p, per_channel=False):
        super().__init__()
        self.p, self.per_channel = p, per_channel

    def forward(self, x):
        if self.per_channel and self.training:  # not a per-sample scale: keeps the channels
            return x * torch.rand(x.shape[0], x.shape[1], 1, 1, device=x.device)
        return drop_path(x, self.p, self.training)


class Residual(nn.Module):
    def __init__(self, module_drop=True, per_channel=False):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1)
        self.module_drop, self.drop = module_drop, DropPath(0.3, per_channel)

    def forward(self, x):
        h = self.b(torch.relu(self.a(x)))
        return x + (self.drop(h) if self.module_drop else stochastic_depth(h, 0.3, self.training))


@pytest.mark.parametrize("module_drop", [True, False], ids=["DropPath module", "stochastic_depth function"])
def test_drop_path_and_stochastic_depth_block_nothing(module_drop, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Residual(module_drop), Residual(module_drop), nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 5, 5)
    wrapped = lumos_fx.instrument(model, (x,))
    assert "0" in lumos_fx.gates(wrapped)  # the residual stream is one group
    assert "if self.training:" not in wrapped.code  # one op each: nothing after them is traced twice
    with torch.no_grad():
        lumos_fx.gates(wrapped)["0"].log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("0").out_channels == 4 and pruned.get_submodule("1.b").out_channels == 4
    for other in (torch.randn(3, 3, 5, 5), torch.randn(4, 3, 7, 6)):
        assert max_rel_error(pruned(other), wrapped.eval()(other)) < 1e-5
    torch.manual_seed(1)
    drawn = wrapped.train()(other)
    assert not torch.allclose(drawn, wrapped.eval()(other))  # train mode still drops samples
    lumos_fx.export(pruned, tmp_path / "m")
    assert max_rel_error(lumos_fx.load(tmp_path / "m")(other), pruned(other)) < 1e-5


def test_a_per_channel_random_scale_keeps_its_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Residual(per_channel=True), nn.Conv2d(8, 2, 1))
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 3, 5, 5),))
    assert "0" not in lumos_fx.gates(wrapped)
    assert "1.drop" in lumos_fx.summary(wrapped).one_op
