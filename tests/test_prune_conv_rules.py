"""Hand-written CNNs for each convolutional rule: what gets cut, what the generated code
says, and what is kept (with the reason summary() gives)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from lumos_fx.node_info import GateRole, info
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates


def close(wrapped, group, idx):
    with torch.no_grad():
        lumos_fx.gates(wrapped)[group].log_alpha[idx] = -5.0


def check(wrapped, pruned, shape, batch=5):
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        ref, out = wrapped.eval()(x), pruned(x)
    assert out.shape == ref.shape
    assert max_rel_error(out, ref) <= 1e-4


def randomise_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and m.weight is not None:
                m.weight.normal_()
                m.bias.normal_()
    return model


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1, padding_mode="reflect")
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return self.head(self.conv2(h).mean(dim=(2, 3)))


def test_conv_bn_closed_channels_are_physically_gone():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(randomise_norms(ConvBN()), (torch.randn(2, 3, 8, 8),))
    close(wrapped, "conv1", list(range(10)))
    close(wrapped, "conv2", [0, 1, 2])
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.conv1.in_channels, pruned.conv1.out_channels) == (3, 6)
    assert pruned.bn1.num_features == 6 and pruned.bn1.running_mean.shape == (6,)
    assert (pruned.conv2.in_channels, pruned.conv2.out_channels) == (6, 5)
    assert pruned.head.in_features == 5
    assert count_params(pruned) == 3 * 6 * 9 + 6 + 2 * 6 + 6 * 5 * 9 + 5 + 5 * 2 + 2
    check(wrapped, pruned, (3, 8, 8))


class FunctionalBN(nn.Module):
    """F.batch_norm on a layer's buffers and parameters, as Python BatchNorms call it."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        bn = self.bn
        h = F.batch_norm(self.conv1(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, self.training, 0.1, 1e-5)
        return self.conv2(torch.relu(h))


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_functional_batch_norm_is_cut_with_its_channels(setting):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(randomise_norms(FunctionalBN()), (torch.randn(2, 3, 6, 6),))
    set_gates(wrapped, setting, seed=3)
    pruned = lumos_fx.prune(wrapped)
    state = pruned.state_dict()
    kept = state["conv1.bias"].numel() if "conv1.bias" in state else 0
    assert state.get("bn.weight", torch.empty(0)).numel() == kept == state.get("bn.running_var", torch.empty(0)).numel()
    assert kept == 8 if setting == "open" else kept < 8
    for shape, batch in (((3, 6, 6), 2), ((3, 9, 5), 5)):
        check(wrapped, pruned, shape, batch)


def test_the_gate_sits_after_batchnorm_and_activation_never_before_batchnorm():
    wrapped = lumos_fx.instrument(ConvBN(), (torch.randn(2, 3, 8, 8),))
    nodes = {n.name: n for n in wrapped.graph.nodes}
    assert info(nodes["bn1"].args[0]).gate is None  # bn1 reads conv1 directly
    gated = nodes["conv2"].args[0]
    assert info(gated).gate is GateRole.MUL and gated.args[0].name == "relu"


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_depthwise_conv_removes_channels_in_whole_groups(setting):
    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = nn.Conv2d(3, 8, 1)
            self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # channel multiplier 2
            self.bn = nn.BatchNorm2d(16)
            self.out = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.out(F.relu6(self.bn(self.dw(F.relu6(self.pw(x))))))

    torch.manual_seed(1)
    wrapped = lumos_fx.instrument(randomise_norms(Depthwise()), (torch.randn(2, 3, 6, 6),))
    assert lumos_fx.gates(wrapped)["pw"].n == 8  # one unit per depthwise group
    set_gates(wrapped, setting, 3)
    check(wrapped, lumos_fx.prune(wrapped), (3, 6, 6))
    set_gates(wrapped, "open", 0)
    close(wrapped, "pw", [1, 2, 6])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.pw.out_channels == 5
    assert (pruned.dw.groups, pruned.dw.in_channels, pruned.dw.out_channels) == (5, 5, 10)
    assert pruned.bn.num_features == 10 and pruned.out.in_channels == 10
    check(wrapped, pruned, (3, 6, 6))


@pytest.mark.parametrize("transposed", [False, True])
def test_grouped_conv_keeps_its_groups_consistent(transposed):
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(2, 12, 3, padding=1)
            conv = nn.ConvTranspose1d if transposed else nn.Conv1d
            self.g = conv(12, 9, 3, groups=3, padding=1, bias=False)
            self.gn = nn.GroupNorm(3, 9)
            self.b = nn.Conv1d(9, 1, 1)

        def forward(self, x):
            return self.b(torch.tanh(self.gn(self.g(torch.tanh(self.a(x))))))

    torch.manual_seed(2)
    wrapped = lumos_fx.instrument(randomise_norms(Grouped()), (torch.randn(2, 2, 10),))
    assert lumos_fx.gates(wrapped)["a"].n == 3  # conv groups and norm groups: three units
    close(wrapped, "a", [1])
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.g.groups, pruned.g.in_channels, pruned.g.out_channels) == (2, 8, 6)
    assert (pruned.gn.num_groups, pruned.gn.num_channels) == (2, 6)
    assert pruned.a.out_channels == 8 and pruned.b.in_channels == 6
    check(wrapped, pruned, (2, 10))


def test_conv_transpose_3d_and_instance_norm():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv3d(2, 6, 2, stride=2)
            self.norm = nn.InstanceNorm3d(6, affine=True)
            self.up = nn.ConvTranspose3d(6, 5, 2, stride=2)
            self.out = nn.Conv3d(5, 1, 1)

        def forward(self, x):
            return self.out(F.silu(self.up(F.leaky_relu(self.norm(self.down(x))))))

    torch.manual_seed(3)
    wrapped = lumos_fx.instrument(randomise_norms(Up()), (torch.randn(2, 2, 4, 4, 4),))
    close(wrapped, "down", [0, 4])
    close(wrapped, "up", [1])
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.up.in_channels, pruned.up.out_channels, pruned.norm.num_features) == (4, 4, 4)
    check(wrapped, pruned, (2, 4, 4, 4))


def test_cat_offsets_on_the_channel_dim_add_up_at_the_consumer():
    """The paper's Fig. 7: 50 and 47 kept channels become 97 inputs of the consumer."""

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(3, 64, 1)
            self.c = nn.Conv2d(128, 4, 1)

        def forward(self, x):
            return self.c(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1))

    wrapped = lumos_fx.instrument(Cat(), (torch.randn(2, 3, 5, 5),))
    assert lumos_fx.gates(wrapped)["a"].n == 128  # one group: a's channels, then b's
    close(wrapped, "a", list(range(14)) + list(range(64, 81)))
    pruned = lumos_fx.prune(wrapped)
    assert (pruned.a.out_channels, pruned.b.out_channels, pruned.c.in_channels) == (50, 47, 97)
    check(wrapped, pruned, (3, 5, 5))


def test_split_chunk_narrow_and_slices_of_the_channels_are_rewritten():
    class Pieces(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 12, 1)
            self.heads = nn.ModuleList(nn.Conv2d(n, 1, 1) for n in (4, 2, 3, 3, 6))

        def forward(self, x):
            h = self.a(x)
            p, q = torch.split(h, [4, 8], dim=1)
            r, s = q.chunk(2, dim=1)  # 4 + 4
            parts = [p, r[:, :2], s.narrow(1, 1, 3), h[:, 9:], h[:, 6:12]]
            return sum(head(t) for head, t in zip(self.heads, parts))

    wrapped = lumos_fx.instrument(Pieces(), (torch.randn(2, 2, 3, 3),))
    close(wrapped, "a", [0, 5, 9, 10])
    pruned = lumos_fx.prune(wrapped)
    assert [pruned.get_submodule(f"heads.{i}").in_channels for i in range(5)] == [3, 1, 1, 1, 4]
    check(wrapped, pruned, (2, 3, 3))


class Flatten(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 5, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        if self.how == "flatten":
            h = torch.flatten(h, 1)
        elif self.how == "view":
            h = h.view(h.size(0), 120)
        elif self.how == "channels_last":
            h = h.permute(0, 2, 3, 1).reshape(-1, 120)
        return self.fc(h)


@pytest.mark.parametrize("how", ["flatten", "view", "channels_last"])
def test_flatten_into_a_linear_head_cuts_whole_channel_blocks(how):
    """CONV2FC: closing conv channel c removes Linear inputs c*HW .. c*HW+HW-1 (channel-first),
    or c, c+C, c+2C, ... after a permute to channels-last."""
    torch.manual_seed(4)
    wrapped = lumos_fx.instrument(Flatten(how), (torch.randn(2, 3, 4, 5),))
    assert lumos_fx.gates(wrapped)["conv"].n == 6
    close(wrapped, "conv", [1, 4])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.fc.in_features == 4 * 20
    kept = [0, 2, 3, 5]
    w = wrapped.fc.weight.detach().view(3, 6, 20) if how != "channels_last" else \
        wrapped.fc.weight.detach().view(3, 20, 6).transpose(1, 2)
    z = lumos_fx.gates(wrapped)["conv"].eval_value().detach()
    expected = (w * z[None, :, None])[:, kept]
    got = pruned.fc.weight.detach().view(3, 4, 20) if how != "channels_last" else \
        pruned.fc.weight.detach().view(3, 20, 4).transpose(1, 2)
    torch.testing.assert_close(got, expected)
    if how != "flatten":
        assert "80" in pruned.code and "120" not in pruned.code  # the literal is rewritten
    check(wrapped, pruned, (3, 4, 5))


def test_features_unflattened_to_channels_by_a_decoder():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 8 * 3 * 3)
            self.up = nn.ConvTranspose2d(8, 2, 2, stride=2)

        def forward(self, z):
            return self.up(torch.relu(self.fc(z)).view(-1, 8, 3, 3))

    wrapped = lumos_fx.instrument(Decoder(), (torch.randn(2, 5),))
    assert lumos_fx.gates(wrapped)["fc"].n == 8
    close(wrapped, "fc", [2, 3, 7])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.fc.out_features == 5 * 9 and pruned.up.in_channels == 5
    assert "view(-1, 5, 3, 3)" in pruned.code
    check(wrapped, pruned, (5,))


class ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = F.relu(self.stem(x))
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h)))))
        h = F.relu(h + branch)
        return self.head(h.amax(dim=(-2, -1)))


def test_a_fully_closed_residual_branch_becomes_its_constant_folded_into_the_add():
    torch.manual_seed(5)
    wrapped = lumos_fx.instrument(randomise_norms(ResBlock()), (torch.randn(2, 3, 6, 6),))
    close(wrapped, "conv1", slice(None))
    pruned = lumos_fx.prune(wrapped)
    code = pruned.code
    assert all(f"self.{m}(" not in code for m in ("conv1", "bn1", "conv2", "bn2"))
    assert "add = relu + bn2_const" in code
    # The branch computes bn2(0): beta - mean * gamma / sqrt(var + eps), per channel.
    bn = wrapped.bn2
    expected = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(pruned.bn2_const.flatten(), expected.detach())
    check(wrapped, pruned, (3, 6, 6))


def test_a_fully_closed_layer_disappears_from_the_code():
    torch.manual_seed(6)
    wrapped = lumos_fx.instrument(randomise_norms(ConvBN()), (torch.randn(2, 3, 8, 8),))
    close(wrapped, "conv1", slice(None))
    pruned = lumos_fx.prune(wrapped)
    # conv2 reads only the constant bn1(relu(bias)) now: it, and everything after it,
    # is a constant of the batch's shape.
    assert "self.conv" not in pruned.code and "self.bn1" not in pruned.code and count_params(pruned) == 0
    check(wrapped, pruned, (3, 8, 8))


def test_channels_that_reach_the_model_output_are_never_pruned():
    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Conv2d(3, 8, 3, padding=1)
            self.cls = nn.Conv2d(8, 5, 1)

        def forward(self, x):
            return self.cls(torch.relu(self.enc(x)))

    wrapped = lumos_fx.instrument(Seg(), (torch.randn(1, 3, 8, 8),))
    assert set(lumos_fx.gates(wrapped)) == {"x", "enc"}
    set_gates(wrapped, "closed", 0)
    pruned = lumos_fx.prune(wrapped)
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 5, 8, 8)
    assert "reaches the model output" in lumos_fx.summary(pruned).kept_whole["cls"]
    check(wrapped, pruned, (3, 8, 8))


def test_a_broadcast_spatial_map_does_not_couple_channels():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.attn = nn.Conv2d(6, 1, 1)
            self.mask = nn.Parameter(torch.rand(1, 1, 5, 5))
            self.out = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = h * torch.sigmoid(self.attn(h)) * self.mask
            return self.out(h * 0.5)

    torch.manual_seed(7)
    wrapped = lumos_fx.instrument(Attention(), (torch.randn(2, 3, 5, 5),))
    assert lumos_fx.gates(wrapped)["conv"].n == 6
    close(wrapped, "conv", [0, 3])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.out.in_channels == 4 and pruned.attn.in_channels == 4
    check(wrapped, pruned, (3, 5, 5))


@pytest.mark.parametrize("form", ["module", "F", "torch", "method"])
def test_module_function_and_method_forms_are_the_same_op(form):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(2, 6, 3), nn.Conv1d(6, 2, 1)
            self.pool = nn.MaxPool1d(2) if form == "module" else None
            self.act = nn.ReLU() if form == "module" else None

        def forward(self, x):
            h = self.a(x)
            h = {"module": self.act, "F": F.relu, "torch": torch.relu, "method": lambda t: t.relu()}[form](h)
            h = self.pool(h) if self.pool is not None else F.max_pool1d(h, 2)
            return self.b(F.interpolate(F.pad(h, (1, 1), mode="replicate"), scale_factor=2.0))

    wrapped = lumos_fx.instrument(Net(), (torch.randn(2, 2, 10),))
    assert sorted(lumos_fx.gates(wrapped)) == ["a", "x"]
    close(wrapped, "a", [1, 2])
    pruned = lumos_fx.prune(wrapped)
    assert pruned.b.in_channels == 4
    check(wrapped, pruned, (2, 10))


def test_an_op_without_a_rule_keeps_its_channels_and_summary_says_which():
    class Roll(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 4, 1)
            self.c = nn.Conv2d(4, 1, 1)

        def forward(self, x):
            h = torch.roll(torch.relu(self.a(x)), 1, dims=1)  # channel c -> c + 1, cyclically
            return self.c(torch.relu(self.b(h)))

    wrapped = lumos_fx.instrument(Roll(), (torch.randn(2, 3, 4, 4),))
    assert "a" not in lumos_fx.gates(wrapped) and "b" in lumos_fx.gates(wrapped)
    set_gates(wrapped, "half", 1)
    why = lumos_fx.summary(wrapped).kept_whole["a"]
    assert "no rule for torch.roll" in why and "test_prune_conv_rules.py" in why
    check(wrapped, lumos_fx.prune(wrapped), (3, 4, 4))


def test_image_channels_are_the_features():
    class Bands(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 4, 3, padding=1)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))

    bands = ["B01", "B02", "B03", "B04", "B08", "B11"]
    wrapped = lumos_fx.instrument(Bands(), (torch.randn(2, 6, 7, 7),), feature_names=bands)
    close(wrapped, "x", [0, 4])
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.kept_features == {"x": ["B02", "B03", "B04", "B11"]}
    assert pruned.conv.in_channels == 4
    x = torch.randn(3, 6, 7, 7)
    with torch.no_grad():
        ref = wrapped.eval()(x)
        out = pruned(x[:, pruned.kept_feature_indices["x"]])
    assert max_rel_error(out, ref) <= 1e-4
    assert "kept 4 of 6 features: B02, B03, B04, B11" in str(lumos_fx.summary(pruned))


@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm_on_batch_statistics_of_a_constant_is_its_shift(affine):
    class BatchStats(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4, affine=affine, track_running_stats=False)
            self.b = nn.Conv2d(4, 3, 1)
            self.skip = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            return self.b(torch.relu(self.bn(self.a(x)))) + self.skip(x)

    torch.manual_seed(8)
    wrapped = lumos_fx.instrument(randomise_norms(BatchStats()), (torch.randn(4, 2, 5, 5),))
    close(wrapped, "x", slice(None))  # a computes its bias: a constant for bn's batch statistics
    pruned = lumos_fx.prune(wrapped)
    assert count_params(pruned) == 0
    check(wrapped, pruned, (2, 5, 5))


class Padded(nn.Module):
    def __init__(self, c_kernel=3, c_mode="zeros"):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 2, c_kernel, padding=c_kernel // 2, padding_mode=c_mode)
        self.skip = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x))))) + self.skip(x)


def test_a_zero_padded_conv_of_a_constant_is_exact_at_the_example_size_and_says_so():
    torch.manual_seed(9)
    wrapped = lumos_fx.instrument(Padded(), (torch.randn(2, 3, 6, 6),))
    close(wrapped, "a", slice(None))  # b computes its bias; c's zero padding makes its borders differ
    pruned = lumos_fx.prune(wrapped)
    assert "self.b(" not in pruned.code and "self.c(" not in pruned.code
    summary = lumos_fx.summary(pruned)
    assert len(summary.fixed_size) == 1 and "Conv2d 'c'" in summary.fixed_size[0]
    assert "valid at the example input's spatial size only" in str(summary)
    check(wrapped, pruned, (3, 6, 6))


@pytest.mark.parametrize("kernel,mode", [(1, "zeros"), (3, "replicate"), (3, "circular")])
def test_a_conv_of_a_constant_without_zero_padding_holds_at_any_input_size(kernel, mode):
    torch.manual_seed(10)
    wrapped = lumos_fx.instrument(Padded(kernel, mode), (torch.randn(2, 3, 6, 6),))
    close(wrapped, "a", slice(None))
    pruned = lumos_fx.prune(wrapped)
    assert "self.c(" not in pruned.code and not lumos_fx.summary(pruned).fixed_size
    for size in (6, 9):
        check(wrapped, pruned, (3, size, size + 2))
