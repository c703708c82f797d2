"""torch_geometric's attention layers beyond GAT: TransformerConv cut by heads (rules/graph_transformer_conv.py),
AttentiveFP's GATEConv and the AttentionalAggregation readout written out (rules/graph_gate_conv.py,
rules/graph_attentional_aggregation.py), and AttentiveFP end to end. prune(w)(g) == w.eval()(g) on a batch
of other random graphs (other node, edge and graph counts) under every gate setting; the pruned models
export and reload to the same function."""

import pytest
import torch
from support import GATE_SETTINGS, count_params, max_rel_error, set_gates
from test_prune_graph import check, graphs
from torch import nn
from torch_geometric.nn import MLP, GCNConv, TransformerConv
from torch_geometric.nn.aggr import AttentionalAggregation
from torch_geometric.nn.models import AttentiveFP
from torch_geometric.nn.models.attentive_fp import GATEConv

import lumos_fx


def assert_exports(pruned, tmp_path):
    folder = lumos_fx.export(pruned, tmp_path / "model")
    batch = graphs(4, 7)
    with torch.no_grad():
        assert max_rel_error(lumos_fx.load(folder)(*batch), pruned(*batch)) <= 1e-6
    return (folder / "model.py").read_text()


# ---- TransformerConv ---------------------------------------------------------------------------
class TransformerModel(nn.Module):
    """Node classifier of two graph transformer layers, with edge features unless edge_dim=None."""

    def __init__(self, concat=True, edge_dim=3, **options):
        super().__init__()
        self.edges = edge_dim is not None
        self.c1 = TransformerConv(6, 4, heads=3, edge_dim=edge_dim, **options)
        self.c2 = TransformerConv(12, 5, heads=2, concat=concat, edge_dim=edge_dim, **options)
        self.out = nn.Linear(10 if concat else 5, 3)

    def forward(self, x, edge_index, edge_attr, batch):
        e = edge_attr if self.edges else None
        h = self.c1(x, edge_index, e).relu()
        return self.out(self.c2(h, edge_index, e).relu())


TRANSFORMERS = {
    "edges": lambda: TransformerModel(),
    "no-edges-no-bias": lambda: TransformerModel(edge_dim=None, bias=False),
    "beta": lambda: TransformerModel(beta=True),
    "mean-heads": lambda: TransformerModel(concat=False),
    "no-root-mean-aggr": lambda: TransformerModel(root_weight=False, aggr="mean"),
}


@pytest.mark.parametrize("model", TRANSFORMERS)
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_transformer_conv_models_prune_to_the_same_function(model, setting):
    check(TRANSFORMERS[model](), setting=setting)


@pytest.mark.parametrize("model", TRANSFORMERS)
def test_a_pruned_transformer_conv_model_exports_and_reloads(tmp_path, model):
    _, pruned = check(TRANSFORMERS[model](), setting="half", seed=1)
    assert_exports(pruned, tmp_path)


def test_closing_a_transformer_head_removes_its_rows():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(TransformerModel().eval(), graphs(3, 100))
    set_gates(wrapped, "open", 0)
    gates = lumos_fx.gates(wrapped)
    assert (gates["c1"].n, gates["c2"].n) == (3, 2)  # one gate per head
    with torch.no_grad():
        for name, closed in {"c1": [1], "c2": [0], "edge_attr": slice(None)}.items():
            gates[name].log_alpha[closed] = -6.0
    pruned = lumos_fx.prune(wrapped)
    c1, c2 = pruned.c1, pruned.c2
    assert c1.heads == 2 and c2.heads == 1 and pruned.out.in_features == 5
    assert all(lin.weight.shape == (8, 6) for lin in (c1.lin_query, c1.lin_key, c1.lin_value, c1.lin_skip))
    assert c2.lin_query.weight.shape == (5, 8) and c2.lin_skip.bias.shape == (5,)
    assert c1.lin_edge is None and c2.edge_dim is None  # every edge feature closed
    batch = graphs(5, 3)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-5


@pytest.mark.parametrize("model, reason", [("beta", "beta=True mixes skip and attention"),
                                           ("mean-heads", "concat=False averages the heads")])
def test_beta_and_averaged_heads_keep_the_outputs_whole_and_gate_the_inputs(model, reason):
    wrapped, _ = check(TRANSFORMERS[model](), setting="half")
    kept = lumos_fx.summary(wrapped).kept_whole
    assert reason in kept["c2"], kept
    assert {"x", "edge_attr"} <= set(lumos_fx.gates(wrapped)) and "c2" not in lumos_fx.gates(wrapped)


def test_a_transformer_conv_whose_inputs_all_close_runs_on_a_zero_width_input(tmp_path):
    """Its output is b_v on a node with incoming edges and 0 on one without: not a constant."""
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(TransformerModel().eval(), graphs(3, 100))
    set_gates(wrapped, "open", 0)
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha[:] = -6.0
    pruned = lumos_fx.prune(wrapped)
    assert pruned.c1.in_channels == 0 and pruned.c1.lin_query.weight.shape == (12, 0)
    batch = graphs(5, 3)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-5
    assert_exports(pruned, tmp_path)


def test_a_transformer_conv_on_a_source_target_pair_keeps_its_channels():
    class Bipartite(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.conv, self.out = nn.Linear(6, 6), TransformerConv((6, 6), 4, heads=2), nn.Linear(8, 2)

        def forward(self, x, edge_index, edge_attr, batch):
            return self.out(self.conv((self.lin(x), x), edge_index))

    wrapped, _ = check(Bipartite(), setting="half")
    assert "takes a (source, target) pair of node features" in lumos_fx.summary(wrapped).kept_whole["lin"]


# ---- GATEConv ----------------------------------------------------------------------------------
class GateModel(nn.Module):
    """AttentiveFP's first block without its GRU: an embedding, GATEConv, a residual and a head."""

    def __init__(self):
        super().__init__()
        self.lin, self.conv, self.out = nn.Linear(6, 8), GATEConv(8, 8, edge_dim=3), nn.Linear(8, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        h = nn.functional.leaky_relu(self.lin(x))
        return self.out(nn.functional.elu(self.conv(h, edge_index, edge_attr)) + h)


@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_gate_conv_is_written_out_and_its_layers_are_cut(setting):
    wrapped, pruned = check(GateModel(), setting=setting)
    assert {"x", "edge_attr", "conv.lin1"} <= set(lumos_fx.gates(wrapped))  # the hidden of its score is a group
    if setting == "half":
        assert pruned.conv.lin1.out_features < 8 and pruned.conv.att_l.shape[1] == pruned.conv.lin1.out_features


def test_a_pruned_gate_conv_exports_and_reloads(tmp_path):
    _, pruned = check(GateModel(), setting="half", seed=1)
    assert "GATEConv" not in assert_exports(pruned, tmp_path)


# ---- AttentionalAggregation --------------------------------------------------------------------
class Readout(nn.Module):
    """A GCN layer read out by soft attention over each graph's nodes, then a head."""

    def __init__(self, gate_nn, nn_=None, width=12):
        super().__init__()
        self.conv, self.pool, self.out = GCNConv(6, 16), AttentionalAggregation(gate_nn, nn_), nn.Linear(width, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        return self.out(self.pool(self.conv(x, edge_index).relu(), batch))


READOUTS = {
    "node-gate": lambda: Readout(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1)), nn.Linear(16, 12)),
    "feature-gate": lambda: Readout(nn.Linear(16, 12), nn.Sequential(nn.Linear(16, 12), nn.ReLU())),
    "gate-only": lambda: Readout(nn.Linear(16, 16), width=16),
    "mlps": lambda: Readout(MLP([16, 8, 1], norm=None), MLP([16, 12, 12], norm=None)),
}
# The groups inside the readout that get gates (a gate network's output of width 1 is none).
READOUT_GATES = {
    "node-gate": {"pool.gate_nn.0", "pool.nn"},
    "feature-gate": {"pool.gate_nn"},  # with pool.nn.0, the features it multiplies
    "gate-only": set(),  # the gate network's outputs are the conv's channels
    "mlps": {"pool.gate_mlp.lins.0", "pool.mlp.lins.0", "pool.mlp.lins.1"},
}


@pytest.mark.parametrize("model", READOUTS)
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_attentional_aggregation_is_written_out_and_its_networks_are_cut(model, setting):
    wrapped, _ = check(READOUTS[model](), setting=setting)
    assert set(lumos_fx.gates(wrapped)) == {"x", "conv"} | READOUT_GATES[model]


def test_a_gate_as_wide_as_the_features_is_cut_with_them():
    wrapped, pruned = check(READOUTS["feature-gate"](), setting="half")
    assert "pool.nn.0" not in lumos_fx.gates(wrapped)  # one group with the gate network's outputs
    widths = {pruned.get_submodule(name).out_features for name in ("pool.gate_nn", "pool.nn.0")}
    assert widths == {pruned.out.in_features} and pruned.out.in_features < 12


@pytest.mark.parametrize("model", READOUTS)
def test_a_pruned_attentional_aggregation_exports_and_reloads(tmp_path, model):
    _, pruned = check(READOUTS[model](), setting="half", seed=1)
    assert "AttentionalAggregation" not in assert_exports(pruned, tmp_path)


# ---- AttentiveFP -------------------------------------------------------------------------------
def test_attentive_fp_prunes_to_the_same_function_and_exports(tmp_path):
    """GATEConv, GATConv heads and GRUCell inputs are cut; the GRU states stay, as does the edge
    group (AttentiveFP's cat of atom and bond features joins it to the atom states), and the readout's
    GATConv on a (graph, nodes) pair keeps its channels."""
    torch.manual_seed(0)
    model = AttentiveFP(6, 8, 2, edge_dim=3, num_layers=2, num_timesteps=2).eval()
    wrapped = lumos_fx.instrument(model, graphs(3, 100))
    assert set(lumos_fx.gates(wrapped)) >= {"x", "gate_conv.lin1", "gate_conv.lin2", "atom_convs.0"}
    set_gates(wrapped, "half", 0)
    pruned = lumos_fx.prune(wrapped)
    batch = graphs(5, 200)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-4
    assert count_params(pruned) < count_params(model)
    assert_exports(pruned, tmp_path)
