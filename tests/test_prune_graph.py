"""torch_geometric models: GCN, GraphConv, SAGE, GIN and GINE (edge embeddings joining the
node group), global pooling, jumping-knowledge cat, residuals, BatchNorm over nodes, atom
and bond encoders as sums of embeddings. prune(w)(g) == w.eval()(g) on a batch of other
random graphs (other node, edge and graph counts) under every gate setting."""

import pytest
import torch
import torch_geometric
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates
from torch import nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GINEConv,
    GraphConv,
    ResGatedGraphConv,
    SAGEConv,
    global_add_pool,
    global_mean_pool,
)

import lumos_fx


def graphs(n_graphs, seed, features=6, edge_features=3, categorical=False):
    """A batch of random graphs: (x, edge_index, edge_attr, batch), edges inside each graph."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 7, (n_graphs,), generator=gen)
    batch = torch.repeat_interleave(torch.arange(n_graphs), sizes)
    start = torch.cumsum(sizes, 0) - sizes
    edges = []
    for g in range(n_graphs):
        e = torch.randint(0, int(sizes[g]), (2, 3 * int(sizes[g])), generator=gen) + start[g]
        edges.append(e)
    edge_index = torch.cat(edges, 1)
    n, m = len(batch), edge_index.shape[1]
    if categorical:
        return (torch.randint(0, 5, (n, 3), generator=gen), edge_index,
                torch.randint(0, 4, (m, 2), generator=gen), batch)
    return (torch.randn(n, features, generator=gen), edge_index, torch.randn(m, edge_features, generator=gen), batch)


class NodeModel(nn.Module):
    """Node classifier: conv -> BatchNorm -> ReLU -> conv, with a residual and a JK cat."""

    def __init__(self, conv):
        super().__init__()
        make = {"gcn": lambda i, o: GCNConv(i, o), "graph": lambda i, o: GraphConv(i, o, aggr="max"),
                "sg": lambda i, o: torch_geometric.nn.SGConv(i, o, K=2),
                "tag": lambda i, o: torch_geometric.nn.TAGConv(i, o, K=2),
                "cheb": lambda i, o: torch_geometric.nn.ChebConv(i, o, K=3),
                "sage": lambda i, o: SAGEConv(i, o), "sage_max": lambda i, o: SAGEConv(i, o, aggr="max",
                                                                                       root_weight=False)}[conv]
        self.c1, self.c2, self.c3 = make(6, 16), make(16, 16), make(16, 12)
        self.bn = nn.BatchNorm1d(16)
        self.pyg_bn = torch_geometric.nn.BatchNorm(16)
        self.out = nn.Linear(16 + 16 + 12, 3)

    def forward(self, x, edge_index, edge_attr, batch):
        h1 = self.bn(self.c1(x, edge_index)).relu()
        h2 = self.pyg_bn(self.c2(h1, edge_index)).relu() + h1
        h3 = self.c3(h2, edge_index).relu()
        return self.out(torch.cat([h1, h2, h3], dim=-1))


class GraphModel(nn.Module):
    """Graph regressor: GIN or GINE layers (with an edge encoder), pooled three ways, an MLP head."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        mlp = lambda i, o: nn.Sequential(nn.Linear(i, 2 * o), nn.BatchNorm1d(2 * o), nn.ReLU(), nn.Linear(2 * o, o))
        if kind == "gin":
            self.c1, self.c2 = GINConv(mlp(6, 16), train_eps=True), GINConv(mlp(16, 16))
        else:
            self.c1, self.c2 = GINEConv(mlp(6, 16), edge_dim=3), GINEConv(mlp(16, 16), train_eps=True, edge_dim=3)
        self.head = nn.Sequential(nn.Linear(48, 20), nn.ReLU(), nn.Linear(20, 1))

    def forward(self, x, edge_index, edge_attr, batch):
        if self.kind == "gin":
            h = self.c1(x, edge_index).relu()
            h = self.c2(h, edge_index) + h
        else:
            h = self.c1(x, edge_index, edge_attr).relu()
            h = self.c2(h, edge_index, edge_attr) + h
        pooled = [global_add_pool(h, batch), global_mean_pool(h, batch), torch_geometric.nn.global_max_pool(h, batch)]
        return self.head(torch.cat(pooled, dim=-1))


class Molecule(nn.Module):
    """OGB style: atom and bond encoders are sums of one nn.Embedding per categorical feature."""

    def __init__(self, width=16):
        super().__init__()
        self.atom = nn.ModuleList(nn.Embedding(5, width) for _ in range(3))
        self.bond = nn.ModuleList(nn.ModuleList(nn.Embedding(4, width) for _ in range(2)) for _ in range(2))
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width)))
            for _ in range(2))
        self.head = nn.Linear(width, 1)

    def forward(self, x, edge_index, edge_attr, batch):
        h = sum(emb(x[:, i]) for i, emb in enumerate(self.atom))
        for conv, bond in zip(self.convs, self.bond):
            e = sum(emb(edge_attr[:, i]) for i, emb in enumerate(bond))
            h = conv(h, edge_index, e).relu() + h
        return self.head(global_mean_pool(h, batch))


def check(model, categorical=False, setting="random", seed=0):
    torch.manual_seed(seed)
    model = model.eval()
    wrapped = lumos_fx.instrument(model, graphs(3, 100, categorical=categorical))
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    batch = graphs(5, 200 + seed, categorical=categorical)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-4
    return wrapped, pruned


@pytest.mark.parametrize("conv", ["gcn", "graph", "sage", "sage_max", "sg", "tag", "cheb"])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("seed", range(2))
def test_node_models_prune_to_the_same_function(conv, setting, seed):
    check(NodeModel(conv), setting=setting, seed=seed)


class AttentionModel(nn.Module):
    """Node classifier of two graph attention layers (GATConv or GATv2Conv) with edge features."""

    def __init__(self, conv, concat=True, edge_dim=3, **options):
        super().__init__()
        layer = {"gat": GATConv, "gatv2": GATv2Conv}[conv]
        self.c1 = layer(6, 4, heads=3, edge_dim=edge_dim, **options)
        self.c2 = layer(12, 5, heads=2, concat=concat, edge_dim=edge_dim, **options)
        self.out = nn.Linear(10 if concat else 5, 3)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.c1(x, edge_index, edge_attr).relu()
        return self.out(self.c2(h, edge_index, edge_attr=edge_attr).relu())


ATTENTION_MODELS = {
    "gat": lambda: AttentionModel("gat"),
    "gat-mean-heads": lambda: AttentionModel("gat", concat=False),
    "gat-residual-no-loops": lambda: AttentionModel("gat", residual=True, add_self_loops=False),
    "gat-no-edges-no-bias": lambda: AttentionModel("gat", edge_dim=None, bias=False),
    "gatv2": lambda: AttentionModel("gatv2"),
    "gatv2-mean-heads": lambda: AttentionModel("gatv2", concat=False),
    "gatv2-shared-residual": lambda: AttentionModel("gatv2", share_weights=True, residual=True),
    "gatv2-no-loops": lambda: AttentionModel("gatv2", add_self_loops=False, fill_value=0.5),
}


@pytest.mark.parametrize("model", ATTENTION_MODELS)
@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("seed", range(2))
def test_graph_attention_models_prune_to_the_same_function(model, setting, seed):
    check(ATTENTION_MODELS[model](), setting=setting, seed=seed)


def test_closing_a_head_removes_its_slices():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(AttentionModel("gat").eval(), graphs(3, 100))
    set_gates(wrapped, "open", 0)
    gates = lumos_fx.gates(wrapped)
    assert gates["c1"].n == 3 and gates["c2"].n == 2  # one gate per head
    with torch.no_grad():
        gates["c1"].log_alpha[1] = -6.0
        gates["c2"].log_alpha[0] = -6.0
        gates["edge_attr"].log_alpha[:] = -6.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.c1.heads == 2 and pruned.c1.lin.weight.shape == (8, 6) and pruned.c1.att_src.shape == (1, 2, 4)
    assert pruned.c1.bias.shape == (8,) and pruned.c2.lin.weight.shape == (5, 8) and pruned.out.in_features == 5
    assert pruned.c1.lin_edge is None and pruned.c2.edge_dim is None  # every edge feature closed


class NormModel(nn.Module):
    """GCN layers with torch_geometric's per-graph normalisations, pooled, a linear head."""

    def __init__(self, kind):
        super().__init__()
        make = {"graph": lambda: torch_geometric.nn.GraphNorm(16),
                "instance": lambda: torch_geometric.nn.InstanceNorm(16, affine=True),
                "instance-running": lambda: torch_geometric.nn.InstanceNorm(16, track_running_stats=True),
                "mean": lambda: torch_geometric.nn.MeanSubtractionNorm(),
                "layer-graph": lambda: torch_geometric.nn.LayerNorm(16),
                "layer-node": lambda: torch_geometric.nn.LayerNorm(16, mode="node")}[kind]
        self.c1, self.c2, self.c3 = GCNConv(6, 16), GCNConv(16, 16), GCNConv(16, 8)
        self.n1, self.n2 = make(), make()
        self.head = nn.Linear(8, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.n1(self.c1(x, edge_index), batch).relu()
        h = self.n2(self.c2(h, edge_index), batch).relu()
        return self.head(global_mean_pool(self.c3(h, edge_index), batch))


NORMS = ["graph", "instance", "instance-running", "mean", "layer-graph", "layer-node"]


@pytest.mark.parametrize("kind", NORMS)
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_graph_norm_models_prune_to_the_same_function(kind, setting):
    model = NormModel(kind)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # affine terms and GraphNorm's mean scale away from 1, 0
    wrapped, _ = check(model, setting=setting)
    if setting == "half" and kind.startswith("layer"):
        assert "c1" not in lumos_fx.gates(wrapped)
        assert any("LayerNorm normalises over the channels" in r for r in lumos_fx.summary(wrapped).kept_whole.values())


@pytest.mark.parametrize("kind", NORMS)
def test_a_graph_norm_of_a_constant_is_the_layer_on_one_node(kind):
    """Every input feature closed: c1 computes its bias, the same at every node of every graph."""
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(NormModel(kind).eval(), graphs(3, 100))
    set_gates(wrapped, "open", 0)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha[:] = -6.0
    pruned = lumos_fx.prune(wrapped)
    batch = graphs(5, 3)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-5
    folded = {n.target for n in pruned.graph.nodes if n.op == "call_module"}.isdisjoint({"c1", "n1"})
    assert folded == (not kind.startswith("layer"))


@pytest.mark.parametrize("kind", ["graph", "instance", "layer-graph"])
def test_a_pruned_model_with_graph_norms_exports_and_reloads(tmp_path, kind):
    _, pruned = check(NormModel(kind), setting="half")
    if kind == "graph":
        assert pruned.n1.weight.shape[0] == pruned.n1.in_channels < 16
    lumos_fx.export(pruned, tmp_path / "model")
    batch = graphs(4, 7)
    with torch.no_grad():
        assert max_rel_error(lumos_fx.load(tmp_path / "model")(*batch), pruned(*batch)) <= 1e-6


@pytest.mark.parametrize("kind", ["gin", "gine"])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
@pytest.mark.parametrize("seed", range(2))
def test_graph_models_prune_to_the_same_function(kind, setting, seed):
    check(GraphModel(kind), setting=setting, seed=seed)


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_molecule_encoders_prune_to_the_same_function(setting):
    check(Molecule(), categorical=True, setting=setting)


def test_the_edge_encoder_joins_the_node_group():
    wrapped = lumos_fx.instrument(Molecule(), graphs(3, 100, categorical=True))
    groups = lumos_fx.gates(wrapped)
    # atom embeddings, both bond encoders and the residual stream are one group: one gate
    residual = [name for name in groups if name.startswith("atom")]
    assert residual == ["atom.0"] and groups["atom.0"].n == 16
    summary = lumos_fx.summary(wrapped)
    row = next(r for r in summary.groups if r.name == "atom.0")
    assert {"bond.0.0", "bond.1.1", "convs.0.nn.0", "convs.1.nn.0"} <= set(row.layers)


def test_closed_channels_leave_the_conv_weights():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(NodeModel("sage").eval(), graphs(3, 100))
    set_gates(wrapped, "open", 0)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["c1"].log_alpha[:6] = -6.0
        lumos_fx.gates(wrapped)["x"].log_alpha[:2] = -6.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.c1.lin_l.weight.shape == (10, 4) and pruned.c1.lin_r.weight.shape == (10, 4)
    assert pruned.c2.lin_l.weight.shape == (10, 10) and pruned.c1.out_channels == 10  # c2 adds to c1: one group
    assert pruned.bn.num_features == 10 and pruned.pyg_bn.module.num_features == 10
    assert lumos_fx.summary(pruned).features["x"][1] == ["x[0]", "x[1]"]
    assert count_params(pruned) < count_params(wrapped)


def test_a_layer_without_a_rule_keeps_its_channels_and_the_rest_prunes():
    class WithoutRule(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.conv, self.head = GCNConv(6, 16), ResGatedGraphConv(16, 16), nn.Linear(16, 2)

        def forward(self, x, edge_index, edge_attr, batch):
            return self.head(self.conv(self.c1(x, edge_index).relu(), edge_index))

    wrapped, _ = check(WithoutRule(), setting="half")
    kept = lumos_fx.summary(wrapped).kept_whole
    assert any("ResGatedGraphConv" in reason for reason in kept.values()), kept
    assert "x" in lumos_fx.gates(wrapped)  # the input features are still selected


def test_sage_normalize_keeps_its_outputs():
    class Norm(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.head = SAGEConv(6, 8, normalize=True), nn.Linear(8, 2)

        def forward(self, x, edge_index, edge_attr, batch):
            return self.head(self.c1(x, edge_index))

    wrapped, _ = check(Norm(), setting="half")
    assert "c1" not in lumos_fx.gates(wrapped) and "x" in lumos_fx.gates(wrapped)
    assert any("normalize=True" in reason for reason in lumos_fx.summary(wrapped).kept_whole.values())


@pytest.mark.parametrize("model", [GraphModel("gine"), NodeModel("gcn"), NodeModel("sage"), AttentionModel("gat"),
                                   AttentionModel("gatv2", concat=False), NodeModel("tag"), NodeModel("cheb")],
                         ids=["gine", "gcn", "sage", "gat", "gatv2", "tag", "cheb"])
def test_a_pruned_graph_model_exports_and_reloads(tmp_path, model):
    _, pruned = check(model, setting="half")
    lumos_fx.export(pruned, tmp_path / "model")
    loaded = lumos_fx.load(tmp_path / "model")
    batch = graphs(4, 7)
    with torch.no_grad():
        assert max_rel_error(loaded(*batch), pruned(*batch)) <= 1e-6


@pytest.mark.parametrize("model, categorical", [(GraphModel("gin"), False), (GraphModel("gine"), False),
                                                (Molecule(), True), (NodeModel("gcn"), False)],
                         ids=["gin", "gine", "molecule", "gcn"])
def test_the_instrumented_model_computes_what_the_model_does(model, categorical):
    """GIN and GINE are written out with index_select and scatter: the same function as PyG's."""
    model = model.eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.shape == (1,):
                p.fill_(0.3)  # a trained eps
    wrapped = lumos_fx.instrument(model, graphs(3, 100, categorical=categorical))
    batch = graphs(4, 5, categorical=categorical)
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*batch), model(*batch)) <= 1e-5


def test_a_data_object_argument_is_an_error_that_says_how_to_call():
    from torch_geometric.data import Batch, Data

    class TakesData(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = GCNConv(6, 4)

        def forward(self, data):
            return self.conv(data.x, data.edge_index)

    x, edge_index, _, batch = graphs(2, 1)
    data = Batch.from_data_list([Data(x=x[batch == g], edge_index=edge_index[:, :0]) for g in range(2)])
    with pytest.raises(lumos_fx.InputError, match=r"(?s)torch_geometric DataBatch.*forward\(x, edge_index, batch\).*data\.x"):
        lumos_fx.instrument(TakesData(), (data,))


def test_node_and_edge_feature_columns_are_selected():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(GraphModel("gine").eval(), graphs(3, 100))
    gates = lumos_fx.gates(wrapped)
    assert gates["x"].n == 6 and gates["edge_attr"].n == 3
    set_gates(wrapped, "open", 0)
    with torch.no_grad():
        gates["edge_attr"].log_alpha[1] = -6.0
        gates["x"].log_alpha[:3] = -6.0
    pruned = lumos_fx.prune(wrapped)
    features = lumos_fx.summary(pruned).features
    assert features["x"][1] == ["x[0]", "x[1]", "x[2]"] and features["edge_attr"][1] == ["edge_attr[1]"]
    # x is added to the edge encoding channel by channel: its closed columns leave the encoder too
    assert pruned.c1.lin.weight.shape == (3, 2) and pruned.get_submodule("c1.nn.0").in_features == 3


def test_gatv2_without_self_loops_keeps_a_zero_width_layer_when_its_inputs_all_close(tmp_path):
    """A node with no incoming edge gets b, the others b_l + b: not a constant."""
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(AttentionModel("gatv2", add_self_loops=False).eval(), graphs(3, 100))
    set_gates(wrapped, "open", 0)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha[:] = -6.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.c1.in_channels == 0 and pruned.c1.lin_l.weight.shape == (12, 0)
    lumos_fx.export(pruned, tmp_path / "model")
    batch = graphs(5, 3)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-5
        assert max_rel_error(lumos_fx.load(tmp_path / "model")(*batch), pruned(*batch)) <= 1e-6


class Readout(nn.Module):
    """A graph-level readout through a PyG aggregation module (SchNet's ``self.readout``):
    its own ``__call__`` takes ``int(index.max()) + 1`` graphs, a decision on values."""

    def __init__(self):
        super().__init__()
        self.conv, self.lin = GCNConv(6, 16), nn.Linear(16, 8)
        self.readout, self.out = torch_geometric.nn.aggr.SumAggregation(), nn.Linear(8, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        h = torch.relu(self.lin(torch.relu(self.conv(x, edge_index))))
        return self.out(self.readout(h, batch, dim=0))


def test_an_aggregation_module_is_one_op_and_exports_as_its_constructor(tmp_path):
    wrapped, pruned = check(Readout(), setting="half")
    assert any(n.op == "call_module" and n.target == "readout" for n in pruned.graph.nodes)
    folder = lumos_fx.export(pruned, tmp_path / "model")
    assert "self.readout = torch_geometric.nn.SumAggregation()" in (folder / "model.py").read_text()
    batch = graphs(5, 3)
    with torch.no_grad():
        assert max_rel_error(lumos_fx.load(folder)(*batch), pruned(*batch)) <= 1e-6


def test_torch_geometric_code_is_the_models_not_torchs():
    from lumos_fx.errors import is_library_file
    assert not is_library_file(torch_geometric.nn.aggr.basic.__file__)
    assert is_library_file(torch.nn.functional.__file__)


class EdgeConvModel(nn.Module):
    """DGCNN-style node regressor: two EdgeConv layers with MLPs inside, a residual, a head."""

    def __init__(self, aggr):
        super().__init__()
        mlp = lambda i, o: nn.Sequential(nn.Linear(2 * i, 12), nn.ReLU(), nn.Linear(12, o))
        self.c1 = torch_geometric.nn.EdgeConv(mlp(6, 16), aggr=aggr)
        self.c2 = torch_geometric.nn.EdgeConv(mlp(16, 16), aggr=aggr)
        self.head = nn.Linear(16, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.c1(x, edge_index).relu()
        return self.head(self.c2(h, edge_index) + h)


@pytest.mark.parametrize("aggr", ["max", "add", "mean"])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_edge_conv_is_written_out_and_its_mlp_is_cut(aggr, setting):
    wrapped, pruned = check(EdgeConvModel(aggr), setting=setting)
    assert {"c1.nn.0", "c2.nn.0"} <= set(lumos_fx.gates(wrapped))  # the MLPs' hidden widths are gated
    if setting == "half":
        assert pruned.get_submodule("c1.nn.0").out_features < 12
        assert pruned.get_submodule("c1.nn.0").in_features < 12  # both halves of the pair lose the closed inputs


class PNAModel(nn.Module):
    """Two PNA layers (four aggregators, three degree scalers), with or without edge features."""

    def __init__(self, edge_dim):
        super().__init__()
        deg = torch.tensor([0, 3, 6, 5, 3, 2, 1])
        kw = dict(aggregators=["mean", "min", "max", "std"], scalers=["identity", "amplification", "attenuation"],
                  deg=deg, edge_dim=edge_dim)
        self.c1 = torch_geometric.nn.PNAConv(6, 16, **kw)
        self.c2 = torch_geometric.nn.PNAConv(16, 16, post_layers=2, **kw)
        self.head = nn.Linear(16, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        e = edge_attr if self.c1.edge_dim else None
        h = self.c1(x, edge_index, e).relu()
        return self.head(self.c2(h, edge_index, e).relu() + h)


@pytest.mark.parametrize("edge_dim", [None, 3])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_pna_is_written_out_and_its_towers_are_cut(edge_dim, setting):
    wrapped, pruned = check(PNAModel(edge_dim), setting=setting)
    gates = set(lumos_fx.gates(wrapped))
    assert {"c1.post_nns.0.0", "c1.lin", "c2.post_nns.0.0", "c2.post_nns.0.2"} <= gates, gates
    if setting == "half":
        assert pruned.get_submodule("c1.post_nns.0.0").weight.shape[0] < 16
        assert count_params(pruned) < count_params(wrapped)


LOCAL_IMPORT = '''
import sys
import torch
from torch import nn
import lumos_fx

class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 8), nn.Linear(8, 1)

    def forward(self, x, batch):
        from torch_geometric.nn import global_mean_pool  # the first import of PyG in the process
        return self.out(global_mean_pool(torch.relu(self.a(x)), batch))

assert "torch_geometric" not in sys.modules
x, batch = torch.randn(7, 4), torch.tensor([0, 0, 0, 1, 1, 2, 2])
wrapped = lumos_fx.instrument(Pooled(), (x, batch))
with torch.no_grad():
    lumos_fx.gates(wrapped)["a"].log_alpha[:4] = -10.0
pruned = lumos_fx.prune(wrapped)
x, batch = torch.randn(10, 4), torch.tensor([0, 0, 1, 1, 1, 1, 2, 3, 3, 3])
assert pruned.a.out_features == 4 and pruned(x, batch).shape == (4, 1)
assert torch.allclose(pruned(x, batch), wrapped.eval()(x, batch), atol=1e-6)
'''


def test_a_forward_that_imports_pyg_itself_is_traced_with_pyg_s_rules():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", LOCAL_IMPORT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
