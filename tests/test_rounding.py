"""Config(round_to=r): every pruned width is a multiple of r (or the full width), per layer
overrides by name, class or predicate, conv groups and head dims in their own units, with
a budget too; the cut model still equals the gated one."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, max_rel_error, set_gates


class Mixed(nn.Module):
    """An MLP, a grouped conv and an attention: the widths round_to acts on."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(10, 64), nn.Linear(64, 48), nn.Linear(48, 3)
        self.c = nn.Conv2d(3, 32, 3, padding=1)
        self.g = nn.Conv2d(32, 24, 1, groups=4)  # conv groups of 6 output channels
        self.att = nn.MultiheadAttention(24, 4, batch_first=True)

    def forward(self, x, img):
        h = torch.relu(self.b(torch.relu(self.a(x))))
        f = torch.relu(self.g(torch.relu(self.c(img)))).flatten(2).transpose(1, 2)
        f, _ = self.att(f, f, f, need_weights=False)
        return self.head(h) + f.mean(1)[:, :3]


EXAMPLE = (torch.randn(4, 10), torch.randn(4, 3, 6, 6))
OTHER = (torch.randn(7, 10), torch.randn(7, 3, 8, 5))
SAME_SIZE = (torch.randn(7, 10), torch.randn(7, 3, 6, 6))  # all closed: constants of the example's size


def _widths(pruned):
    return {"a": pruned.a.out_features, "b": pruned.b.out_features, "c": pruned.c.out_channels,
            "g": pruned.g.out_channels}


def _pruned(config, setting="random", seed=3):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Mixed(), EXAMPLE, config=config)
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    with torch.no_grad():
        for inputs in (EXAMPLE, SAME_SIZE if setting == "closed" else OTHER):
            assert max_rel_error(pruned(*inputs), wrapped.eval()(*inputs)) < 1e-4
    return wrapped, pruned


@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("multiple", [8, 16])
def test_every_pruned_width_is_a_multiple_or_the_full_width(setting, multiple):
    wrapped, pruned = _pruned(lumos_fx.Config(round_to=multiple), setting)
    if setting == "closed":
        return
    full = {"a": 64, "b": 48, "c": 32, "g": 24}
    for name, width in _widths(pruned).items():
        assert width % multiple == 0 or width == full[name], (name, width)
    assert pruned.g.groups * (24 // 4) == pruned.g.out_channels  # whole conv groups
    report = lumos_fx.summary(pruned)
    if setting in ("random", "half"):
        assert report.rounded and f"widths rounded up to multiples of {multiple} channels" in str(report)
    # rounding re-opens what the gates closed, never closes what they kept
    plain = _widths(_pruned(lumos_fx.Config(), setting)[1])
    assert all(_widths(pruned)[k] >= plain[k] for k in plain)


def test_overrides_by_name_class_and_predicate():
    config = lumos_fx.Config(round_to=16, round_to_modules={"b": 1, nn.Conv2d: 8,
                                                              lambda m, name: name == "a": 32})
    _, pruned = _pruned(config)
    widths = _widths(pruned)
    assert widths["a"] % 32 == 0 or widths["a"] == 64
    assert widths["c"] % 8 == 0 and widths["g"] % 8 == 0 or widths["g"] == 24
    plain = _widths(_pruned(lumos_fx.Config())[1])
    assert widths["b"] == plain["b"]  # round_to 1: as the gates kept it


def test_a_budget_counts_the_rounded_widths():
    wrapped, pruned = _pruned(lumos_fx.Config(round_to=8, target_params=0.3))
    report = lumos_fx.summary(pruned)
    assert abs(report.budget.after - 0.3) <= 0.01
    assert all(w % 8 == 0 or w == full for w, full in zip(_widths(pruned).values(), (64, 48, 32, 24)))


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(3, 40), min_size=1, max_size=3), multiple=st.integers(2, 12),
       seed=st.integers(0, 10_000))
def test_random_mlps_round_every_hidden_width(widths, multiple, seed):
    torch.manual_seed(seed)
    sizes = [6] + widths + [2]
    layers = [m for i in range(len(sizes) - 1) for m in (nn.Linear(sizes[i], sizes[i + 1]), nn.Tanh())][:-1]
    wrapped = lumos_fx.instrument(nn.Sequential(*layers), (torch.randn(5, 6),), config=lumos_fx.Config(round_to=multiple))
    set_gates(wrapped, "random", seed)
    pruned = lumos_fx.prune(wrapped)
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    for layer, full in zip(linears[:-1], widths):
        assert layer.out_features % multiple == 0 or layer.out_features == full
    x = torch.randn(9, 6)
    with torch.no_grad():
        assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-4


@pytest.mark.parametrize("kwargs,error,match", [
    ({"round_to": 0}, ValueError, "Config.round_to must be an int >= 1"),
    ({"round_to": 8.0}, TypeError, "Config.round_to must be an int >= 1"),
    ({"round_to_modules": ["a"]}, TypeError, "must be a dict from module specs"),
    ({"round_to_modules": {3: 8}}, TypeError, "round_to_modules key 3"),
    ({"round_to_modules": {"a": 0}}, ValueError, r"round_to_modules\['a'\]"),
])
def test_bad_round_to_settings_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        lumos_fx.Config(**kwargs)


def test_an_unknown_module_name_in_the_overrides_is_an_input_error():
    with pytest.raises(lumos_fx.InputError, match="round_to_modules names modules Mixed does not have"):
        lumos_fx.instrument(Mixed(), EXAMPLE, config=lumos_fx.Config(round_to_modules={"bb": 8}))


def test_the_budget_in_training_counts_rounded_widths_with_the_gates_gradient():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Mixed(), EXAMPLE, config=lumos_fx.Config(round_to=16, target_params=0.5))
    plain = lumos_fx.instrument(Mixed(), EXAMPLE, config=lumos_fx.Config(target_params=0.5))
    for model in (wrapped, plain):
        with torch.no_grad():
            for gate in lumos_fx.gates(model).values():
                gate.log_alpha.copy_(torch.linspace(-3, 3, gate.n))
    kept, kept_plain = lumos_fx.expected_kept(wrapped), lumos_fx.expected_kept(plain)
    assert kept.item() > kept_plain.item()  # widths round up, never down
    kept.backward()
    assert all(g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
               for g in lumos_fx.gates(wrapped).values())
