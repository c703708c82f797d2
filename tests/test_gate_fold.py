"""Gates folded into the weight of the linear or conv layer that reads them."""

import copy
import operator

import pytest
import torch
from torch import nn

import lumos_fx
from lumos_fx.gate_fold import unfold
from lumos_fx.node_info import GateRole, info


def folded(wrapped) -> dict[str, str]:
    return {n.name: info(n).folded for n in wrapped.graph.nodes if info(n).folded is not None}


def test_linear_and_plain_convs_fold_grouped_convs_do_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(),
                          nn.Conv2d(8, 6, 1, padding_mode="circular"), nn.ReLU(),
                          nn.Conv2d(6, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    x = torch.randn(2, 3, 12, 12)
    wrapped = lumos_fx.instrument(model, (x,))
    assert folded(wrapped) == {"_0": "0", "_6": "6", "_8": "8"}
    assert "self.lumos_gates()" in wrapped.code and "conv2d(" in wrapped.code
    pruned = lumos_fx.prune(wrapped)
    assert "conv2d(" not in pruned.code and "linear(" not in pruned.code  # module calls again
    torch.testing.assert_close(pruned(x), wrapped.eval()(x))


def test_folded_gates_train_as_gates_on_the_input_do():
    """With the noise range at (0.5, 0.5) a training gate is deterministic: the folded graph
    and ``linear(x * z, W)`` written out must give the same loss and gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(16, 5)
    wrapped = lumos_fx.instrument(model, (x,), config=lumos_fx.Config(noise_range=(0.5, 0.5))).train()
    assert len(folded(wrapped)) == 2
    gates = list(lumos_fx.gates(wrapped).values())
    with torch.no_grad():
        for g in gates:
            g.log_alpha.uniform_(-2, 2)
    wrapped(x).square().sum().backward()
    got = [g.log_alpha.grad.clone() for g in gates]
    weights = [wrapped.get_parameter(n).grad.clone() for n in ("0.weight", "2.weight")]

    la = [g.log_alpha.detach().clone().requires_grad_() for g in gates]
    ws = [wrapped.get_parameter(n).detach().clone().requires_grad_() for n in ("0.weight", "2.weight")]
    bs = [wrapped.get_parameter(n).detach() for n in ("0.bias", "2.bias")]
    z = [gates[0]._stretch(torch.sigmoid(a / (2 / 3))) for a in la]  # logit(0.5) = 0
    h = torch.tanh(nn.functional.linear(x * z[0], ws[0], bs[0]))
    nn.functional.linear(h * z[1], ws[1], bs[1]).square().sum().backward()
    for a, b in zip(got, [a.grad for a in la]):
        torch.testing.assert_close(a, b)
    for a, b in zip(weights, [w.grad for w in ws]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("conv", [nn.Conv1d, nn.Conv3d])
def test_conv_folds_in_every_dimension(conv):
    torch.manual_seed(0)
    model = nn.Sequential(conv(2, 4, 3), nn.ReLU(), conv(4, 3, 1))
    x = torch.randn(2, 2, *([6] * (1 if conv is nn.Conv1d else 3)))
    wrapped = lumos_fx.instrument(model, (x,))
    assert set(folded(wrapped).values()) == {"0", "2"}
    with torch.no_grad():
        for g in lumos_fx.gates(wrapped).values():
            g.log_alpha.copy_(torch.where(torch.arange(g.n) % 2 == 0, 5.0, -5.0))
    torch.testing.assert_close(lumos_fx.prune(wrapped)(x), wrapped.eval()(x))


class HeadsAttention(nn.Module):
    """Self-attention; with `literal_width` its reshapes do not read the input's width, so its
    features are gated too (their gate folds into qkv's columns, and the query's head dims
    then scale the queries)."""

    def __init__(self, dim=12, heads=3, literal_width=False):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.width = dim if literal_width else None

    def forward(self, x):
        b, t, c = x.shape
        c = self.width or c
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


def activation_side(wrapped):
    """A copy of `wrapped` with every folded gate scaling the activations instead:
    ``W (x * z)`` for a gate on a layer's input, ``(W x + b) * s`` for one on its rows."""
    reference = copy.deepcopy(wrapped)
    graph = reference.graph
    for node in [n for n in graph.nodes if info(n).folded is not None]:
        weight, bias = node.args[1], node.args[2]
        rows = bias.args[1] if bias is not None and bias.op == "call_function" else None
        z = weight.args[1]
        unfold(node)
        if rows is None:
            with graph.inserting_before(node):
                node.args = (graph.call_function(operator.mul, (node.args[0], z)),)
        else:
            with graph.inserting_after(node):
                out = graph.call_function(operator.mul, (node, rows))
            node.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)
    graph.eliminate_dead_code()
    reference.recompile()
    return reference


@pytest.mark.parametrize("literal_width", [False, True])
def test_attention_gates_fold_into_the_query_rows_and_the_output_projection(literal_width):
    """The head dims' gate on the queries scales qkv's query rows and bias; the head's and the
    dims' gates on proj's input scale its weight by their product. The graph with the gates
    on the activations instead gives the same training loss and gradients; the pruned model
    gives the eval outputs."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, 12)
    config = lumos_fx.Config(noise_range=(0.5, 0.5))
    wrapped = lumos_fx.instrument(HeadsAttention(literal_width=literal_width), (x,), config=config).train()
    assert set(folded(wrapped).values()) == {"qkv", "proj"}
    scaled = [n for n in wrapped.graph.nodes if info(n).gate is GateRole.MUL]  # activations scaled
    assert len(scaled) == literal_width and ("x" in lumos_fx.gates(wrapped)) == literal_width
    with torch.no_grad():
        for g in lumos_fx.gates(wrapped).values():
            g.log_alpha.uniform_(-2, 2)
    reference = activation_side(wrapped)
    assert not folded(reference)
    losses = [model(x).square().sum() for model in (wrapped, reference)]
    torch.testing.assert_close(losses[0], losses[1])
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(wrapped.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for g in lumos_fx.gates(wrapped).values():
        g.log_alpha.data[torch.randperm(g.n)[: g.n // 2]] = -5.0
    for batch in (x, torch.randn(2, 7, 12)):
        torch.testing.assert_close(lumos_fx.prune(wrapped)(batch), wrapped.eval()(batch))
