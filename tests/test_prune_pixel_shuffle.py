"""Pixel shuffle and unshuffle (rules/pixel_shuffle.py): a shuffle's output channel goes with
its r^2 producer channels, an unshuffle's input channel with its r^2 output channels, and
the cut model equals the gated one at other batch and spatial sizes than the example's."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates


def close(wrapped, group, idx):
    with torch.no_grad():
        lumos_fx.gates(wrapped)[group].log_alpha[idx] = -5.0


def check(wrapped, pruned, example_shape, other_shape):
    """prune(w)(x) == w.eval()(x) at another batch size, at the example's spatial size and at
    `other_shape`; True if the cut holds at any size. A cut that summary() lists as valid at
    the example's size only must refuse the other size instead (its guard)."""
    def compare(x):
        with torch.no_grad():
            ref, out = wrapped.eval()(x), pruned(x)
        assert out.shape == ref.shape
        assert max_rel_error(out, ref) <= 1e-4, f"max rel error {max_rel_error(out, ref):.3g}"

    compare(torch.randn(5, *example_shape))
    x = torch.randn(3, *other_shape)
    if lumos_fx.summary(pruned).fixed_size:
        with pytest.raises(Exception, match="lumos_fx: dim"):
            pruned(x)
        return False
    compare(x)
    return True


class SuperRes(nn.Module):
    """ESPCN-style super-resolution: features, a conv to C r^2 channels, PixelShuffle(r), a conv."""

    def __init__(self, r=2, padding_mode="zeros", global_skip=False):
        super().__init__()
        self.r, self.global_skip = r, global_skip
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.Conv2d(8, 4 * r * r, 3, padding=1, padding_mode=padding_mode)
        self.shuffle = nn.PixelShuffle(r)
        self.tail = nn.Conv2d(4, 3, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x):
        y = self.tail(torch.relu(self.shuffle(self.up(torch.relu(self.body(x))))))
        return y + F.interpolate(x, scale_factor=float(self.r)) if self.global_skip else y


class Unshuffle(nn.Module):
    """Space to depth: a conv, F.pixel_unshuffle(2), a conv, a pooled head."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = F.pixel_unshuffle(torch.tanh(self.a(x)), 2)
        return self.head(torch.relu(self.b(h)).mean(dim=(-2, -1)))


class Residual(nn.Module):
    """torch.pixel_shuffle of a sum, added to an upsampled skip and concatenated with a side
    branch: the shuffle's units tie 4 channels of `a` and of `b` to 1 of `skip`."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(3, 16, 1)
        self.skip = nn.Conv2d(3, 4, 1)
        self.side = nn.Conv2d(3, 2, 3, padding=1)
        self.tail = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x)) + self.b(x)
        s = torch.pixel_shuffle(h, 2) + F.interpolate(self.skip(x), scale_factor=2.0)
        u = torch.cat([s, F.interpolate(self.side(x), scale_factor=2.0)], dim=1)
        return self.tail(torch.relu(u))


class Straddle(nn.Module):
    """A shuffle of a cat whose parts are not whole blocks of r^2 = 4: unit 1 is channels 4, 5
    of `a` and 0, 1 of `b`, so `a` and `b` become one group."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 10, 1)
        self.tail = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.tail(torch.pixel_shuffle(torch.cat([torch.tanh(self.a(x)), self.b(x)], dim=1), 2))


MODELS = {
    "superres": (SuperRes, (3, 6, 6), (3, 5, 7)),
    "superres_r3": (lambda: SuperRes(r=3), (3, 4, 4), (3, 5, 3)),
    "superres_skip": (lambda: SuperRes(padding_mode="replicate", global_skip=True), (3, 6, 6), (3, 5, 7)),
    "unshuffle": (Unshuffle, (3, 8, 8), (3, 6, 10)),
    "residual": (Residual, (3, 6, 6), (3, 4, 9)),
    "straddle": (Straddle, (3, 5, 5), (3, 7, 4)),
}


@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_cut_equals_the_gated_model(name, setting):
    build, example, other = MODELS[name]
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(build(), (torch.randn(2, *example),))
    set_gates(wrapped, setting, seed=1)
    pruned = lumos_fx.prune(wrapped)
    any_size = check(wrapped, pruned, example, other)
    # With some features in, the cut stays live and is checked at the other size; all closed,
    # only a model whose output adds a live branch does (the others are constants).
    assert any_size or (setting == "closed" and name != "superres_skip")
    gate_params = sum(g.log_alpha.numel() for g in lumos_fx.gates(wrapped).values())
    # All open, only the gates go; in every other setting some unit closed, and its parameters with it.
    assert (count_params(pruned) == count_params(wrapped) - gate_params) == (setting == "open")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_closing_gates_removes_parameters(name):
    build, example, other = MODELS[name]
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(build(), (torch.randn(2, *example),))
    counts = []
    for setting in ("open", "every_other", "closed"):
        set_gates(wrapped, "open" if setting == "every_other" else setting, seed=0)
        if setting == "every_other":  # every feature in, half of every layer's units out
            for group, gate in lumos_fx.gates(wrapped).items():
                if group != "x":
                    close(wrapped, group, list(range(1, gate.log_alpha.numel(), 2)))
        pruned = lumos_fx.prune(wrapped)
        check(wrapped, pruned, example, other)
        counts.append(count_params(pruned))
    assert counts[0] > counts[1] > counts[2]


def test_closing_one_shuffled_channel_removes_its_r2_producer_channels():
    torch.manual_seed(0)
    model = SuperRes()
    up_weight, up_bias = model.up.weight.detach().clone(), model.up.bias.detach().clone()
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 3, 6, 6),))
    assert lumos_fx.gates(wrapped)["up"].log_alpha.numel() == 4  # one gate per shuffled channel
    set_gates(wrapped, "open", 0)
    close(wrapped, "up", [1])
    pruned = lumos_fx.prune(wrapped)
    rows = [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]  # output channel 1 is up's channels 4..7
    assert (pruned.up.out_channels, pruned.tail.in_channels) == (12, 3)
    assert torch.equal(pruned.up.weight, up_weight[rows]) and torch.equal(pruned.up.bias, up_bias[rows])
    assert pruned.shuffle.upscale_factor == 2  # the op runs unchanged on whole blocks
    check(wrapped, pruned, (3, 6, 6), (3, 5, 7))


@pytest.mark.parametrize("batch", [(2,), ()])
def test_closing_one_unshuffled_feature_removes_its_r2_output_channels(batch):
    """The unshuffle reads the model input: its channels_at (-3) says where the features are,
    batched (dim 1) or not (dim 0)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.PixelUnshuffle(2)
            self.conv = nn.Conv2d(12, 4, 1)

        def forward(self, x):
            return self.conv(self.down(x)).mean(dim=(-2, -1))

    wrapped = lumos_fx.instrument(Net(), (torch.randn(*batch, 3, 4, 4),), feature_names=["r", "g", "b"])
    set_gates(wrapped, "open", 0)
    close(wrapped, "x", [1])
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.kept_features == {"x": ["r", "b"]}
    assert pruned.conv.in_channels == 8
    x = torch.randn(*batch, 3, 6, 8)
    with torch.no_grad():
        assert max_rel_error(pruned(x[..., [0, 2], :, :]), wrapped.eval()(x)) <= 1e-4


def test_a_cat_straddling_the_shuffle_blocks_joins_the_groups():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Straddle(), (torch.randn(2, 3, 5, 5),))
    (group,) = [g for g in lumos_fx.gates(wrapped) if g != "x"]
    assert lumos_fx.gates(wrapped)[group].log_alpha.numel() == 4
    set_gates(wrapped, "open", 0)
    close(wrapped, group, [1])
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.a.out_channels, pruned.b.out_channels, pruned.tail.in_channels) == (4, 8, 3)
    check(wrapped, pruned, (3, 5, 5), (3, 7, 4))


def test_residual_units_cut_every_branch_together():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Residual(), (torch.randn(2, 3, 6, 6),))
    set_gates(wrapped, "open", 0)
    close(wrapped, "a", [0, 2])
    pruned = lumos_fx.prune(wrapped)
    sizes = (pruned.a.out_channels, pruned.b.out_channels, pruned.skip.out_channels, pruned.tail.in_channels)
    assert sizes == (8, 8, 2, 4)
    check(wrapped, pruned, (3, 6, 6), (3, 4, 9))


def test_unbatched_input_has_its_channels_at_dim_minus_3():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(SuperRes(), (torch.randn(3, 6, 6),))
    set_gates(wrapped, "open", 0)
    close(wrapped, "up", [0, 3])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.up.out_channels == 8
    x = torch.randn(3, 5, 7)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) <= 1e-4


def test_a_shuffled_constant_is_computed_at_the_example_size():
    """`body` closed: `up` is its bias, one value per channel, and the shuffle tiles the r^2
    values of each unit over space: a constant valid at the example's size only."""
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(SuperRes(), (torch.randn(2, 3, 6, 6),))
    set_gates(wrapped, "open", 0)
    close(wrapped, "body", list(range(8)))
    pruned = lumos_fx.prune(wrapped)
    assert any("PixelShuffle 'shuffle'" in op for op in lumos_fx.summary(pruned).fixed_size)
    assert not check(wrapped, pruned, (3, 6, 6), (3, 5, 7))


def test_a_shuffled_constant_equal_over_each_unit_holds_at_any_size():
    """`body` closed and `up`'s bias equal over each unit: the shuffle's constant is uniform, and
    so is `tail`'s (replicate padding), added to the live upsampled input at any size."""
    torch.manual_seed(0)
    model = SuperRes(padding_mode="replicate", global_skip=True)
    with torch.no_grad():
        model.up.bias.copy_(model.up.bias[::4].repeat_interleave(4))  # r^2 = 4 equal values per unit
    wrapped = lumos_fx.instrument(model, (torch.randn(2, 3, 6, 6),))
    set_gates(wrapped, "random", 1)
    close(wrapped, "body", list(range(8)))
    pruned = lumos_fx.prune(wrapped)
    assert lumos_fx.summary(pruned).fixed_size == []
    assert check(wrapped, pruned, (3, 6, 6), (3, 5, 7))


def test_an_unshuffled_constant_holds_at_any_size():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Unshuffle(), (torch.randn(2, 3, 8, 8),))
    set_gates(wrapped, "open", 0)
    close(wrapped, "x", [0, 1, 2])  # `a` is its bias, even over the zero padding
    pruned = lumos_fx.prune(wrapped)
    assert lumos_fx.summary(pruned).fixed_size == []
    assert check(wrapped, pruned, (3, 8, 8), (3, 6, 10))


def test_channels_off_dim_minus_3_are_kept_with_the_reason():
    class Last(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):  # (N, 4, 6, 8), features last: the shuffle reads dim 1 as channels
            return self.conv(torch.pixel_shuffle(self.lin(x), 2))

    wrapped = lumos_fx.instrument(Last(), (torch.randn(2, 4, 6, 8),))
    why = lumos_fx.summary(wrapped).kept_whole["lin"]
    assert "trades the channels at dim -3 for space" in why and "test_prune_pixel_shuffle.py" in why
    check(wrapped, lumos_fx.prune(wrapped), (4, 6, 8), (4, 2, 8))


def test_export_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Residual(), (torch.randn(2, 3, 6, 6),))
    set_gates(wrapped, "half", 2)
    pruned = lumos_fx.prune(wrapped)
    model = SuperRes(r=3)
    wrapped_sr = lumos_fx.instrument(model, (torch.randn(2, 3, 4, 4),))
    set_gates(wrapped_sr, "half", 2)
    pruned_sr = lumos_fx.prune(wrapped_sr)
    for w, p, shape, folder in ((wrapped, pruned, (3, 4, 9), "residual"), (wrapped_sr, pruned_sr, (3, 4, 4), "sr")):
        path = lumos_fx.export(p, tmp_path / folder)
        loaded = lumos_fx.load(path)
        x = torch.randn(2, *shape)
        with torch.no_grad():
            assert max_rel_error(loaded(x), w.eval()(x)) <= 1e-4
    source = (tmp_path / "sr" / "model.py").read_text()
    assert "nn.PixelShuffle(upscale_factor=3)" in source
    assert "pixel_shuffle" in (tmp_path / "residual" / "model.py").read_text()
    assert count_params(lumos_fx.load(tmp_path / "sr")) == count_params(pruned_sr)
