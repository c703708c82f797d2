"""Hand-written models for each rule: what gets cut, what the generated code says, and what
is kept (with the reason summary() gives)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, assert_equivalent, count_params, max_rel_error, set_gates


def close(wrapped, group, idx):
    with torch.no_grad():
        lumos_fx.gates(wrapped)[group].log_alpha[idx] = -5.0


class Residual(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.inp = nn.Linear(5, width)
        self.hidden = nn.Linear(width, 32)
        self.back = nn.Linear(32, width)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.back(torch.tanh(self.hidden(h)))
        return self.out(F.gelu(h))


def test_closed_channels_are_physically_gone():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Residual(), (torch.randn(8, 5),))
    close(wrapped, "inp", list(range(6)))
    close(wrapped, "hidden", list(range(20)))
    close(wrapped, "x", [4])
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.inp.in_features, pruned.inp.out_features) == (4, 10)
    assert (pruned.hidden.in_features, pruned.hidden.out_features) == (10, 12)
    assert (pruned.back.in_features, pruned.back.out_features) == (12, 10)
    assert pruned.out.in_features == 10
    assert count_params(pruned) == 4 * 10 + 10 + 10 * 12 + 12 + 12 * 10 + 10 + 10 * 2 + 2
    assert "lumos_gates" not in pruned.code and "mul" not in pruned.code
    assert_equivalent(wrapped, pruned, torch.randn(11, 5))


def test_a_fully_closed_branch_becomes_its_constant_folded_into_the_add():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Residual(), (torch.randn(8, 5),))
    close(wrapped, "hidden", slice(None))
    pruned = lumos_fx.prune(wrapped)
    code = pruned.code
    assert "self.hidden" not in code and "self.back(" not in code and "tanh" not in code
    assert "add = inp + back_const" in code
    torch.testing.assert_close(pruned.back_const, wrapped.back.bias.detach())
    assert_equivalent(wrapped, pruned, torch.randn(3, 5))


def test_all_closed_makes_the_model_a_constant_of_the_right_batch_shape():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Residual(), (torch.randn(8, 5),))
    set_gates(wrapped, "closed", 0)
    pruned = lumos_fx.prune(wrapped)
    assert count_params(pruned) == 0
    for batch in (1, 7):
        x = torch.randn(batch, 5)
        out = pruned(x)
        assert out.shape == (batch, 2)
        assert_equivalent(wrapped, pruned, x)


def test_cat_offsets_add_up_at_the_consumer():
    """The paper's Fig. 7: 50 and 47 kept channels become 97 inputs of the consumer."""

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 64), nn.Linear(4, 64), nn.Linear(128, 3)

        def forward(self, x):
            return self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1))

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Cat(), (torch.randn(8, 4),))
    assert set(lumos_fx.gates(wrapped)) == {"x", "a"}  # one group: the cat joins a and b
    close(wrapped, "a", list(range(14)) + list(range(64, 81)))
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.a.out_features, pruned.b.out_features, pruned.c.in_features) == (50, 47, 97)
    assert_equivalent(wrapped, pruned, torch.randn(5, 4))


class WithGrid(nn.Module):
    """Features joined to coordinates computed from the input's size, as an FNO's grid
    embedding does: the grid has no channels of its own on the joined dim."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Conv1d(3, 6, 1), nn.Conv1d(6 + 3, 4, 1)

    def forward(self, x):
        t = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, -1)
        grid = torch.cat([t, t * t, torch.sin(t)], dim=1)  # (B, 3, L)
        return self.c(torch.cat([torch.relu(self.a(x)), grid], dim=1))


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_a_channel_less_input_of_a_cat_gives_channels_of_its_own(setting):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(WithGrid(), (torch.randn(2, 3, 10),))
    assert set(lumos_fx.gates(wrapped)) == {"x", "a"}  # the grid's 3 channels are units of a's group
    assert lumos_fx.gates(wrapped)["a"].log_alpha.numel() == 9
    set_gates(wrapped, setting, 0)
    close(wrapped, "a", [7] if setting == "random" else [])  # cut the grid part in the middle
    pruned = lumos_fx.prune(wrapped)
    if setting == "random":
        assert pruned.c.in_channels < 9
    for x in (torch.randn(2, 3, 10), torch.randn(5, 3, 17)):
        assert_equivalent(wrapped, pruned, x)


def test_a_constant_joined_to_a_channel_less_part_that_closed_is_the_constant_alone():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(WithGrid(), (torch.randn(2, 3, 10),))
    close(wrapped, "x", [0, 1, 2])  # a's input gone: its branch is the constant relu(bias)
    close(wrapped, "a", [6, 7, 8])  # every grid channel closed
    pruned = lumos_fx.prune(wrapped)
    assert count_params(pruned) == 0  # c of a constant is a constant
    assert_equivalent(wrapped, pruned, torch.randn(5, 3, 10))


class Splits(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.fc, self.p, self.q = nn.Linear(4, 12), nn.Linear(4, 2), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.sigmoid(self.fc(x))
        if self.how == "split":
            a, b = torch.split(h, [4, 8], dim=-1)
        elif self.how == "chunk":
            a, b, c = h.chunk(3, dim=1)
            b = torch.cat([b, c], dim=1)
        else:
            a, b = h[:, :4], h[..., 4:]
        return self.p(a) + self.q(b)


@pytest.mark.parametrize("how", ["split", "chunk", "slice"])
def test_split_chunk_and_slices_are_rewritten_to_the_kept_sizes(how):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Splits(how), (torch.randn(8, 4),))
    close(wrapped, "fc", [0, 1, 5, 7, 11])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.fc.out_features == 7
    expected = {"split": ["split(sigmoid, [2, 5], dim = 1)"], "chunk": ["sigmoid.split([2, 2, 3], dim = 1)"],
                "slice": ["slice(0, 2, None)", "slice(2, 7, None)"]}[how]
    assert all(e in pruned.code for e in expected), pruned.code
    assert_equivalent(wrapped, pruned, torch.randn(6, 4))


def test_view_with_a_literal_channel_count_is_rewritten():
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 10), nn.Linear(10, 2)

        def forward(self, x):
            h = self.a(x).view(-1, 4, 10)
            return self.b(torch.relu(h)).reshape(-1, 2)

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Views(), (torch.randn(8, 3),))
    close(wrapped, "a", [2, 3, 9])
    pruned = lumos_fx.prune(wrapped)
    assert "view(-1, 4, 7)" in pruned.code
    assert_equivalent(wrapped, pruned, torch.randn(12, 3))


def test_reading_the_channel_count_keeps_the_channels_and_says_why():
    class ReadsWidth(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 10), nn.Linear(10, 10), nn.Linear(10, 1)

        def forward(self, x):
            h = self.a(x)
            h = h / h.shape[-1]  # its value would change if channels were cut
            g = self.b(torch.relu(h))
            return self.c(g * g.size(0))  # the batch size is fine

    wrapped = lumos_fx.instrument(ReadsWidth(), (torch.randn(4, 3),))
    gates = lumos_fx.gates(wrapped)
    assert "a" not in gates and "b" in gates
    why = lumos_fx.summary(wrapped).kept_whole["a"]
    assert "channel count is read by" in why and "h.shape[-1]" in why


def test_unsupported_ops_keep_their_channels_and_the_rest_still_prunes():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.norm, self.b = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 8)
            self.c, self.d = nn.Linear(8, 6), nn.Linear(6, 1)

        def forward(self, x):
            h = self.b(self.norm(self.a(x)))
            s, _ = torch.sort(self.c(torch.relu(h)), dim=-1)
            return self.d(s)

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Mixed(), (torch.randn(4, 3),))
    report = lumos_fx.summary(wrapped)
    assert "LayerNorm" in report.kept_whole["a"] and "normalises over the channels" in report.kept_whole["a"]
    assert "no rule for torch.sort" in report.kept_whole["c"]
    assert set(lumos_fx.gates(wrapped)) == {"x", "b"}
    close(wrapped, "b", [0, 3])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.b.out_features == 6 and pruned.c.in_features == 6
    assert_equivalent(wrapped, pruned, torch.randn(5, 3))


def test_model_outputs_are_never_pruned():
    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 4)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h), h

    wrapped = lumos_fx.instrument(TwoOutputs(), (torch.randn(2, 3),))
    assert set(lumos_fx.gates(wrapped)) == {"x"}
    assert lumos_fx.summary(wrapped).kept_whole["a"] == "reaches the model output (at relu)"


def test_broadcast_scale_and_parameters_read_in_forward():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.s, self.b = nn.Linear(4, 8), nn.Linear(4, 1), nn.Linear(8, 2)
            self.shift = nn.Parameter(torch.randn(8))

        def forward(self, x):
            h = torch.relu(self.a(x) + self.shift) * torch.sigmoid(self.s(x))
            return self.b(h * 0.5)

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Gated(), (torch.randn(4, 4),))
    close(wrapped, "a", [1, 2, 6])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.shift.shape == (5,) and pruned.s.out_features == 1
    assert_equivalent(wrapped, pruned, torch.randn(3, 4))


def test_weight_sharing_ties_every_call():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.shared, self.out = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 1)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return self.out(self.shared(torch.tanh(self.shared(h))))

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Shared(), (torch.randn(4, 3),))
    assert set(lumos_fx.gates(wrapped)) == {"x", "a"}  # a's output and shared's in and out: one group
    close(wrapped, "a", [0, 5])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.shared.weight.shape == (6, 6)
    assert_equivalent(wrapped, pruned, torch.randn(3, 3))


def test_a_weight_read_elsewhere_cannot_take_a_folded_gate():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 8)

        def forward(self, x):
            h = self.b(torch.relu(self.a(x)))
            return h @ self.b.weight  # the same weight, read directly

    wrapped = lumos_fx.instrument(Tied(), (torch.randn(4, 3),))
    assert "a" not in lumos_fx.gates(wrapped)
    assert_equivalent(wrapped, lumos_fx.prune(wrapped), torch.randn(2, 3))


def test_reading_a_weights_dtype_leaves_its_gate_foldable():
    class CastsToWeight(nn.Module):  # T5's feed-forward casts to its output weight's dtype
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            if h.dtype != self.b.weight.dtype:
                h = h.to(self.b.weight.dtype)
            return self.b(h)

    wrapped = lumos_fx.instrument(CastsToWeight(), (torch.randn(4, 3),))
    close(wrapped, "a", [0, 5])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("a").out_features == 6
    assert_equivalent(wrapped, pruned, torch.randn(2, 3))


class Conv1D(nn.Module):
    """transformers' Conv1D (GPT-2): ``y = b + x W`` with ``W`` (in, out), through addmm on a
    flattened view whose sizes the forward computes."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.3)
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class FunctionalMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = Conv1D(12, 5), Conv1D(7, 12), nn.Linear(7, 2)
        self.w, self.w_bias = nn.Parameter(torch.randn(9, 7)), nn.Parameter(torch.randn(9))

    def forward(self, x):
        h = torch.relu(self.b(torch.tanh(self.a(x))))
        return self.c(h) + F.linear(h, self.w, self.w_bias)[..., :2]


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_linear_maps_on_parameters_read_in_forward_are_cut(setting, tmp_path):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(FunctionalMLP(), (torch.randn(3, 4, 5),))
    groups = {g.name: g.before for g in lumos_fx.summary(wrapped).groups}
    assert sorted(groups.values()) == [7, 12], groups  # both hidden widths, through addmm and F.linear
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    for shape in [(3, 4, 5), (2, 9, 5)]:  # another batch and sequence length
        assert_equivalent(wrapped, pruned, torch.randn(*shape))
    if setting == "half":
        assert pruned.a.weight.shape[1] < 12 and pruned.b.weight.shape[0] == pruned.a.weight.shape[1]
        assert pruned.w.shape[1] == pruned.b.weight.shape[1] < 7
        assert f"addmm.view(getitem, getitem_1, {pruned.a.weight.shape[1]})" in pruned.code  # the kept width
    lumos_fx.export(pruned, tmp_path / "m")
    x = torch.randn(2, 3, 5)
    assert max_rel_error(lumos_fx.load(tmp_path / "m")(x), pruned(x)) < 1e-6


class ScaledWeight(nn.Module):
    """e3nn's fully connected layer: ``x @ (W / sqrt(fan_in))`` with ``W`` (in, out); or, as
    PyG's PMLP writes it, ``x @ W.t() + b`` with ``W`` (out, in)."""

    def __init__(self, n_in, n_out, act, transposed=False):
        super().__init__()
        self.transposed, self.act, self.fan_in = transposed, act, n_in
        self.weight = nn.Parameter(torch.randn(n_out, n_in) if transposed else torch.randn(n_in, n_out))
        self.bias = nn.Parameter(torch.randn(n_out)) if transposed else None

    def forward(self, x):
        x = x @ self.weight.t() + self.bias if self.transposed else x @ (self.weight / self.fan_in ** 0.5)
        return self.act(x) * 1.7 if self.act is not None else x


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_a_product_with_a_scaled_weight_read_in_forward_is_cut(setting, transposed):
    torch.manual_seed(0)
    model = nn.Sequential(ScaledWeight(6, 16, torch.tanh, transposed), ScaledWeight(16, 12, torch.tanh, transposed),
                          ScaledWeight(12, 3, None, transposed))
    wrapped = lumos_fx.instrument(model, (torch.randn(5, 6),))
    assert {"input", "0", "1"} <= set(lumos_fx.gates(wrapped))  # named after the layers that compute them
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    assert_equivalent(wrapped, pruned, torch.randn(9, 6))
    if setting == "half":
        rows, cols = pruned.get_parameter("1.weight").shape[::-1] if transposed else pruned.get_parameter(
            "1.weight").shape
        assert rows < 16 and cols < 12


def test_prelu_with_one_slope_per_channel():
    model = nn.Sequential(nn.Linear(3, 6), nn.PReLU(6), nn.Linear(6, 1))
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(model, (torch.randn(4, 3),))
    close(wrapped, "0", [1, 4])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.get_submodule("1").weight.shape == (4,)
    assert_equivalent(wrapped, pruned, torch.randn(5, 3))


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_every_gate_setting_on_a_sequential(setting):
    model = nn.Sequential(nn.Linear(7, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 3))
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(model, (torch.randn(4, 7),))
    set_gates(wrapped, setting, 1)
    for shrink in (False, True):
        assert_equivalent(wrapped, lumos_fx.prune(wrapped, shrink_inputs=shrink), torch.randn(9, 7), shrink)


class FourierFilter(nn.Module):
    """A Fourier layer written by hand: a learned per-channel filter between torch.fft's
    transforms over the spatial dims (shifted, as FNOs do), plus a round trip of 1-D ones."""

    def __init__(self, mix_channels=False):
        super().__init__()
        self.mix_channels = mix_channels
        self.a, self.w, self.b = nn.Conv2d(3, 8, 1), nn.Parameter(torch.randn(8, 1, 1)), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.mix_channels:  # every dim, the channels too
            return self.b(torch.fft.ifftn(torch.fft.fftn(h)).real)
        f = torch.fft.ifftshift(torch.fft.fftshift(torch.fft.rfft2(h, norm="ortho"), dim=(-2,)) * self.w, dim=-2)
        h = torch.fft.irfft2(f, s=h.shape[-2:], norm="ortho")
        return self.b(h + torch.real(torch.fft.ifft(torch.fft.fft(h, dim=-1), dim=-1)))


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_fourier_transforms_over_the_spatial_dims_pass_the_channels(setting):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(FourierFilter(), (torch.randn(2, 3, 12, 10),))
    assert set(lumos_fx.gates(wrapped)) == {"x", "a"}
    set_gates(wrapped, setting, 0)
    close(wrapped, "a", [1, 5])
    pruned = lumos_fx.prune(wrapped)
    if setting != "closed":
        assert pruned.w.shape[0] == pruned.a.out_channels <= 6
    for x in (torch.randn(2, 3, 12, 10), torch.randn(3, 3, 16, 14)):
        assert_equivalent(wrapped, pruned, x)


def test_a_fourier_transform_over_the_channels_keeps_them_with_the_reason():
    wrapped = lumos_fx.instrument(FourierFilter(mix_channels=True), (torch.randn(2, 3, 12, 10),))
    assert "a" not in lumos_fx.gates(wrapped)
    assert any("which include the channel dim 1" in why for why in lumos_fx.summary(wrapped).kept_whole.values())


class Checked(nn.Module):
    """A model that checks its input's channel count before using it, as library models do."""

    def __init__(self):
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        if x.shape[1] != self.c.in_channels or x.size(1) < 1:
            raise ValueError(f"expected {self.c.in_channels} channels")
        return self.d(torch.relu(self.c(x)))


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_a_checked_feature_count_of_a_model_input_leaves_its_features_selectable(setting):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Checked(), (torch.randn(2, 3, 12, 10),))
    assert "x" in lumos_fx.gates(wrapped)
    set_gates(wrapped, setting, 0)
    close(wrapped, "x", [1])
    pruned = lumos_fx.prune(wrapped)
    x = torch.randn(3, 3, 16, 14)
    assert_equivalent(wrapped, pruned, x)  # the check reads the count the input had
    if lumos_fx.summary(wrapped).features["x"][0]:  # a model taking the kept channels only
        shrunk = lumos_fx.prune(wrapped, shrink_inputs=True)
        (kept,) = shrunk.kept_feature_indices.values()
        with torch.no_grad():
            assert max_rel_error(shrunk(x[:, kept]), wrapped.eval()(x)) <= 1e-4
