"""torch_geometric layers with MLPs inside, written out by their rules so that the MLPs are
cut: PointNetConv, GENConv (softmax and power-mean aggregation, MessageNorm), PNAConv with
several towers, SchNet's CFConv, InteractionBlock and the SchNet model. prune(w)(g) ==
w.eval()(g) on graphs with other node and edge counts than the example, under every gate
setting; the pruned models export and reload."""

import functools

import pytest
import torch
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates
from torch import nn
from torch_geometric.nn import GENConv, PNAConv, PointNetConv
from torch_geometric.nn.aggr import PowerMeanAggregation, SoftmaxAggregation
from torch_geometric.nn.models.schnet import CFConv, GaussianSmearing, InteractionBlock, SchNet

import lumos_fx

F = 6


def graph(nodes, edges, seed):
    """(x, edge_index, edge_attr, pos, edge_weight): a random graph, distances in [0, 4)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(nodes, F, generator=gen), torch.randint(0, nodes, (2, edges), generator=gen),
            torch.randn(edges, 3, generator=gen), torch.randn(nodes, 3, generator=gen),
            4 * torch.rand(edges, generator=gen))


def molecules(n, seed):
    """(z, pos, batch) of `n` molecules of 3 to 6 atoms."""
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(n), torch.randint(3, 7, (n,), generator=gen))
    return torch.randint(1, 10, batch.shape, generator=gen), 1.5 * torch.randn(len(batch), 3, generator=gen), batch


def mlp(*widths):
    layers = [m for i, o in zip(widths, widths[1:]) for m in (nn.Linear(i, o), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


# ---- the models --------------------------------------------------------------------------------
class PointNetModel(nn.Module):
    """A Linear on the node features, a PointNetConv over them and the positions, a head."""

    def __init__(self, aggr="max", global_nn=True):
        super().__init__()
        self.lin = nn.Linear(F, 8)
        self.conv = PointNetConv(mlp(8 + 3, 10, 7), mlp(7, 9) if global_nn else None, aggr=aggr)
        self.head = nn.Linear(9 if global_nn else 7, 2)

    def forward(self, x, edge_index, edge_attr, pos, edge_weight):
        return self.head(self.conv(self.lin(x).relu(), pos, edge_index).relu())


class GENModel(nn.Module):
    """A Linear, a GENConv of it (with or without edge features, encoded to its width by a
    Linear when it has no ``edge_dim``), a head (or none: the layer's output is the model's)."""

    def __init__(self, in_channels=8, edges=False, head=True, **options):
        super().__init__()
        self.lin = nn.Linear(F, in_channels)
        self.bond = nn.Linear(3, 5) if edges and "edge_dim" not in options else None
        self.edges = edges
        self.conv = GENConv(in_channels, 5, **options)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(5, 2)) if head else nn.Identity()

    def forward(self, x, edge_index, edge_attr, pos, edge_weight):
        e = None if not self.edges else edge_attr if self.bond is None else self.bond(edge_attr)
        return self.head(self.conv(self.lin(x).relu(), edge_index, e))


class PNATowers(nn.Module):
    """A Linear, a PNAConv of two towers (post-MLPs of two layers), a head."""

    def __init__(self, divide_input, edge_dim=None):
        super().__init__()
        self.lin = nn.Linear(F, 8)
        self.conv = PNAConv(8, 8, ["mean", "max", "std"], ["identity", "amplification"], deg=torch.tensor([1, 3, 4, 2]),
                            towers=2, divide_input=divide_input, edge_dim=edge_dim, post_layers=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x, edge_index, edge_attr, pos, edge_weight):
        e = edge_attr if self.conv.edge_dim else None
        return self.head(self.conv(self.lin(x).relu(), edge_index, e).relu())


class Filters(nn.Module):
    """A Linear, a CFConv with a filter network of the smeared distances, an InteractionBlock
    with a residual, a head."""

    def __init__(self):
        super().__init__()
        self.lin, self.smearing = nn.Linear(F, 8), GaussianSmearing(0.0, 4.0, 7)
        self.conv = CFConv(8, 5, 9, mlp(7, 9, 9), cutoff=4.0)
        self.block, self.head = InteractionBlock(5, 7, 4, 4.0), nn.Linear(5, 2)

    def forward(self, x, edge_index, edge_attr, pos, edge_weight):
        expansion = self.smearing(edge_weight)
        h = self.conv(self.lin(x).relu(), edge_index, edge_weight, expansion).relu()
        return self.head(h + self.block(h, edge_index, edge_weight, expansion))


class RadiusGraph(nn.Module):
    """SchNet's interaction graph without torch-cluster: every pair of atoms of a molecule
    closer than the cutoff, and their distance."""

    def __init__(self, cutoff):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, pos, batch):
        near = (torch.cdist(pos, pos) < self.cutoff) & (batch.view(-1, 1) == batch.view(1, -1))
        row, col = (near & ~torch.eye(pos.size(0), dtype=torch.bool)).nonzero().t()
        return torch.stack([row, col]), (pos[row] - pos[col]).norm(dim=-1)


GRAPHS = (graph(12, 30, 0), graph(17, 50, 5))  # the example, and a graph of other sizes
MODELS = {  # name: (model, (example, other inputs))
    "point-net-max": (lambda: PointNetModel(), GRAPHS),
    "point-net-add-no-global": (lambda: PointNetModel("add", global_nn=False), GRAPHS),
    "gen-softmax-learn-t": (lambda: GENModel(learn_t=True, t=0.5), GRAPHS),
    "gen-powermean-learn-p-edges": (lambda: GENModel(edges=True, edge_dim=3, aggr="powermean", learn_p=True, p=1.5,
                                                     num_layers=3, bias=True), GRAPHS),
    "gen-powermean-plain-mean": (lambda: GENModel(aggr="powermean"), GRAPHS),  # p = 1: no clamp
    "gen-softmax-sg-square": (lambda: GENModel(in_channels=5, aggr="softmax_sg", t=2.0), GRAPHS),
    "gen-edges-join-the-nodes": (lambda: GENModel(in_channels=5, edges=True, aggr="max"), GRAPHS),
    "gen-msg-norm": (lambda: GENModel(msg_norm=True, learn_msg_scale=True), GRAPHS),
    "gen-at-the-output": (lambda: GENModel(head=False), GRAPHS),  # its MLP's last Linear, without bias, stays
    "pna-towers-repeat": (lambda: PNATowers(divide_input=False), GRAPHS),
    "pna-towers-divide-edges": (lambda: PNATowers(divide_input=True, edge_dim=3), GRAPHS),
    "cfconv-interaction": (Filters, GRAPHS),
    "schnet": (lambda: SchNet(hidden_channels=8, num_filters=6, num_interactions=2, num_gaussians=5, cutoff=3.0,
                              interaction_graph=RadiusGraph(3.0)), (molecules(3, 0), molecules(5, 5))),
}


@functools.cache
def instrumented(name):
    """Model `name` with its parameters (GENConv's t and p too) off their initial values, and
    instrumented: once per run (every test sets the gates it reads). The instrumented model
    computes what the model does."""
    make, (example, other) = MODELS[name]
    model = make()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    wrapped = lumos_fx.instrument(model.eval(), example)
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*other), model(*other)) <= 1e-5
    return wrapped


def check(name, setting="open", closed=()):
    """Model `name` pruned with gates `setting`, then `closed`'s units closed (gate name,
    indices); the cut model computes what the gated one does on inputs of other sizes."""
    wrapped = instrumented(name)
    set_gates(wrapped, setting, 0)
    with torch.no_grad():
        for gate, units in closed:
            lumos_fx.gates(wrapped)[gate].log_alpha[list(units)] = -6.0
    pruned = lumos_fx.prune(wrapped)
    other = MODELS[name][1][1]
    with torch.no_grad():
        assert max_rel_error(pruned(*other), wrapped.eval()(*other)) <= 1e-4
    return wrapped, pruned


def kept_reasons(wrapped) -> str:
    return " | ".join(lumos_fx.summary(wrapped).kept_whole.values())


def group_layers(wrapped, name) -> set[str]:
    return set(next(r.layers for r in lumos_fx.summary(wrapped).groups if r.name == name))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_mlp_layers_prune_to_the_same_function(name, setting):
    check(name, setting)


@pytest.mark.parametrize("name", ["point-net-max", "gen-powermean-learn-p-edges", "pna-towers-divide-edges",
                                  "cfconv-interaction", "schnet"])
def test_pruned_mlp_layers_export_and_reload(tmp_path, name):
    _, pruned = check(name, "half")
    lumos_fx.export(pruned, tmp_path / "model")
    batch = molecules(4, 9) if name == "schnet" else graph(9, 20, 7)
    with torch.no_grad():
        assert max_rel_error(lumos_fx.load(tmp_path / "model")(*batch), pruned(*batch)) <= 1e-6


# ---- PointNetConv ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["point-net-max", "point-net-add-no-global"])
def test_point_net_conv_cuts_its_mlps_the_node_features_and_the_coordinates(name):
    # one group: the coordinates (units 0-2) and lin's channels (units 3-10) the first local layer reads
    wrapped, pruned = check(name, closed=[("x", [0]), ("pos", [1, 3 + 2, 3 + 6]), ("conv.local_nn.0", [1, 2, 5]),
                                          ("conv.local_nn.2", [3])])
    gates = lumos_fx.gates(wrapped)
    assert ("conv.global_nn.0" in gates) == name.endswith("max")
    first, second = pruned.get_submodule("conv.local_nn.0"), pruned.get_submodule("conv.local_nn.2")
    # the first local layer reads the kept node features and the kept coordinate differences
    assert pruned.lin.weight.shape == (6, F - 1) and first.weight.shape == (7, 6 + 2)
    assert second.weight.shape == (6, 7)
    assert (pruned.get_submodule("conv.global_nn.0").in_features if "conv.global_nn.0" in gates
            else pruned.head.in_features) == 6


# ---- GENConv -----------------------------------------------------------------------------------
def test_gen_conv_mlp_and_projections_lose_their_closed_channels():
    wrapped, pruned = check("gen-powermean-learn-p-edges", closed=[("conv.mlp.0", [0, 3, 7]), ("conv.lin_src", [1])])
    assert {"conv.lin_src", "conv.lin_edge", "conv.lin_dst", "conv.mlp.0"} <= group_layers(wrapped, "conv.lin_src")
    assert pruned.get_submodule("conv.mlp.0").weight.shape == (7, 4)
    assert pruned.get_submodule("conv.mlp.1").num_features == 7 and pruned.get_submodule("conv.mlp.4").in_channels == 7
    assert pruned.conv.lin_src.out_channels == pruned.conv.lin_edge.out_channels == pruned.conv.lin_dst.out_channels == 4


def test_gen_conv_edge_features_of_its_width_join_the_node_group():
    wrapped, pruned = check("gen-edges-join-the-nodes", closed=[("bond", [0, 4])])
    assert {"bond", "lin", "conv.mlp.0"} <= group_layers(wrapped, "bond")  # added to x_j channel by channel
    assert pruned.bond.out_features == pruned.lin.out_features == pruned.get_submodule("conv.mlp.0").in_channels == 3


def test_gen_conv_message_norm_keeps_the_layer_width_with_its_reason():
    wrapped, pruned = check("gen-msg-norm", closed=[("conv.mlp.0", [2])])
    assert "lin" not in lumos_fx.gates(wrapped) and "conv.lin_src" not in lumos_fx.gates(wrapped)
    assert "MessageNorm scales the aggregated messages by ||x_i|| / ||m_i||" in kept_reasons(wrapped)
    assert pruned.get_submodule("conv.mlp.0").out_channels == 9  # the MLP is still cut


@pytest.mark.parametrize("aggr", [SoftmaxAggregation(t=0.7, learn=True), PowerMeanAggregation(p=1.5, learn=True)],
                         ids=["softmax", "powermean"])
def test_gen_aggregations_reduce_channel_by_channel(aggr):
    """Channel 0 of the aggregate is a function of channel 0 of the messages alone, exactly."""
    gen = torch.Generator().manual_seed(0)
    messages, index = torch.rand(40, 4, generator=gen) + 0.1, torch.randint(0, 9, (40,), generator=gen)
    other = messages.clone()
    other[:, 1:] = 10 * torch.rand(40, 3, generator=gen)
    with torch.no_grad():
        assert torch.equal(aggr(messages, index, dim_size=9)[:, 0], aggr(other, index, dim_size=9)[:, 0])


# ---- PNAConv with towers -----------------------------------------------------------------------
def test_pna_towers_are_each_cut():
    closed = [("conv.post_nns.0.0", [0, 2]), ("conv.post_nns.0.2", [1, 5]), ("conv.lin", [1])]
    wrapped, pruned = check("pna-towers-repeat", closed=closed)
    assert {"lin", "conv.pre_nns.0.0", "conv.pre_nns.1.0"} <= group_layers(wrapped, "lin")
    assert {"conv.post_nns.0.2", "conv.post_nns.1.2", "conv.lin"} <= group_layers(wrapped, "conv.post_nns.0.2")
    assert [pruned.get_submodule(f"conv.post_nns.{t}.0").out_channels for t in range(2)] == [2, 4]  # its own
    assert [pruned.get_submodule(f"conv.post_nns.{t}.2").out_channels for t in range(2)] == [3, 3]
    assert pruned.conv.lin.weight.shape == (7, 6)  # the towers' outputs, concatenated into lin
    assert count_params(pruned) < count_params(wrapped)


def test_pna_divided_input_gives_each_tower_its_own_slice():
    wrapped, pruned = check("pna-towers-divide-edges", closed=[("lin", [0, 1, 5])])  # 2 of tower 0, 1 of tower 1
    assert pruned.lin.out_features == 5
    assert [pruned.get_submodule(f"conv.pre_nns.{t}.0").in_channels for t in range(2)] == [2 * 2 + 4, 2 * 3 + 4]
    assert pruned.conv.edge_encoder.out_channels == 4  # shared by both towers


# ---- SchNet ------------------------------------------------------------------------------------
def test_cfconv_filters_tie_lin1_rows_the_filter_network_and_lin2_columns():
    wrapped, pruned = check("cfconv-interaction", closed=[("conv.nn.2", [0, 4, 5]), ("block.mlp.2", [1])])
    assert {"conv.nn.2", "conv.lin1", "conv.lin2"} <= group_layers(wrapped, "conv.nn.2")
    assert pruned.conv.lin1.out_features == pruned.get_submodule("conv.nn.2").out_features == 6
    assert pruned.conv.lin2.in_features == 6 and pruned.block.conv.lin2.in_features == 3


def test_schnet_prunes_its_hidden_channels_and_filters():
    wrapped, pruned = check("schnet", closed=[("embedding", [2]), ("interactions.1.mlp.2", [0, 1])])
    assert {"embedding", "interactions.0.mlp.0", "interactions.1.mlp.2", "lin1"} <= set(lumos_fx.gates(wrapped))
    block_lin, filters = (pruned.get_submodule(f"interactions.{i}.{m}") for i, m in [(0, "lin"), (1, "conv.lin1")])
    assert pruned.embedding.embedding_dim == pruned.lin1.in_features == block_lin.out_features == 7
    assert filters.out_features == 4
