"""Generated graph neural networks: stacks of every torch_geometric layer with a rule (GCN,
GraphConv, SAGE, SG, TAG, Cheb, GIN, GINE, GAT, GATv2 in their options), normalisations (BatchNorm, PyG's
GraphNorm, InstanceNorm, LayerNorm), residuals, node- or graph-level readouts (pooling,
jumping-knowledge cat), with and without edge features, under random gates.
prune(w)(g) == w.eval()(g) on a batch of other graphs (other node, edge and graph counts)."""

import os

import torch
import torch_geometric.nn as gnn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import GATE_SETTINGS, max_rel_error, set_gates
from test_prune_graph import graphs
from torch import nn

import lumos_fx

EXAMPLES = int(os.environ.get("LUMOS_GRAPH_EXAMPLES", "40"))
EDGE_DIM = 3


def conv(kind, options, n_in, d):
    if kind == "gcn":
        return gnn.GCNConv(n_in, d, bias=options["bias"])
    if kind == "graph":
        return gnn.GraphConv(n_in, d, aggr=options["aggr"])
    if kind == "sage":
        return gnn.SAGEConv(n_in, d, aggr=options["aggr"], root_weight=options["root"])
    if kind == "sg":
        return gnn.SGConv(n_in, d, K=options["heads"], bias=options["bias"])
    if kind == "tag":
        return gnn.TAGConv(n_in, d, K=options["heads"], bias=options["bias"], normalize=options["root"])
    if kind == "cheb":
        return gnn.ChebConv(n_in, d, K=options["heads"], bias=options["bias"])
    mlp = nn.Sequential(nn.Linear(n_in, d), nn.ReLU(), nn.Linear(d, d))
    if kind == "gin":
        return gnn.GINConv(mlp, train_eps=options["bias"])
    if kind == "gine":
        return gnn.GINEConv(mlp, train_eps=options["bias"], edge_dim=EDGE_DIM)
    heads = options["heads"]
    layer = gnn.GATConv if kind == "gat" else gnn.GATv2Conv
    concat = options["concat"] and d % heads == 0
    return layer(n_in, d // heads if concat else d, heads=heads, concat=concat, bias=options["bias"],
                 edge_dim=EDGE_DIM if options["edges"] else None, add_self_loops=options["root"])


def norm(kind, d):
    return {"none": nn.Identity(), "batch": nn.BatchNorm1d(d), "graph": gnn.GraphNorm(d),
            "instance": gnn.InstanceNorm(d, affine=True), "layer": gnn.LayerNorm(d)}[kind]


class Model(nn.Module):
    def __init__(self, n_in, d, layers, readout):
        super().__init__()
        # a residual joins layers of equal width: every layer's output has d channels
        self.layers = [(k, o, n, r and (i > 0 or n_in == d)) for i, (k, o, n, r) in enumerate(layers)]
        self.readout = readout
        self.convs = nn.ModuleList(conv(k, o, n_in if i == 0 else d, d) for i, (k, o, _, _) in enumerate(layers))
        self.norms = nn.ModuleList(norm(n, d) for _, _, n, _ in layers)
        width = d * (len(layers) if readout["jk"] else 1)
        self.head = nn.Sequential(nn.Linear(width, 5), nn.ReLU(), nn.Linear(5, 2))

    def forward(self, x, edge_index, edge_attr, batch):
        h, outputs = x, []
        for (kind, options, norm_kind, residual), conv, norm in zip(self.layers, self.convs, self.norms):
            if kind == "gine" or (kind in ("gat", "gatv2") and options["edges"]):
                out = conv(h, edge_index, edge_attr)
            else:
                out = conv(h, edge_index)
            out = norm(out, batch) if norm_kind in ("graph", "instance", "layer") else norm(out)
            out = out.relu()
            h = out + h if residual else out
            outputs.append(h)
        h = torch.cat(outputs, -1) if self.readout["jk"] else h
        pool = self.readout["pool"]
        if pool != "node":
            h = {"add": gnn.global_add_pool, "mean": gnn.global_mean_pool, "max": gnn.global_max_pool}[pool](h, batch)
        return self.head(h)


@st.composite
def models(draw):
    d = draw(st.sampled_from([4, 6]))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["gcn", "graph", "sage", "sg", "tag", "cheb", "gin", "gine", "gat", "gatv2"]))
        options = {"bias": draw(st.booleans()), "aggr": draw(st.sampled_from(["add", "mean", "max"])),
                   "root": draw(st.booleans()), "heads": draw(st.sampled_from([1, 2, 3])),
                   "concat": draw(st.booleans()), "edges": draw(st.booleans())}
        layers.append((kind, options, draw(st.sampled_from(["none", "batch", "graph", "instance", "layer"])),
                       draw(st.booleans())))
    readout = {"jk": draw(st.booleans()), "pool": draw(st.sampled_from(["node", "add", "mean", "max"]))}
    return draw(st.integers(2, 6)), d, layers, readout


def _input_joins_a_kept_output(model: Model, d: int) -> bool:
    """The input features share a group with the output of a graph attention that averages
    its heads (concat=False), which keeps its channels, so they are kept too: through
    residuals from the first layer on, or through the jumping-knowledge cat, which puts every
    layer's output (the first one's residual included) in one channel space."""
    kept = [kind in ("gat", "gatv2") and not (options["concat"] and d % options["heads"] == 0)
            for kind, options, _, _ in model.layers]
    residual = [r for _, _, _, r in model.layers]
    if model.readout["jk"] and residual[0] and any(kept):
        return True
    for blocked, joins in zip(kept, residual):
        if not joins:
            return False
        if blocked:
            return True
    return False


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=not os.environ.get("LUMOS_RANDOM"))
@given(models(), st.sampled_from(GATE_SETTINGS), st.integers(0, 10_000))
def test_generated_gnns_prune_to_the_same_function(spec, setting, seed):
    n_in, d, layers, readout = spec
    torch.manual_seed(seed)
    model = Model(n_in, d, layers, readout).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))  # eps, norm scales and shifts away from their initial values
    wrapped = lumos_fx.instrument(model, graphs(3, seed, features=n_in, edge_features=EDGE_DIM))
    if all(n != "layer" for _, _, n, _ in layers) and not _input_joins_a_kept_output(model, d):
        assert "x" in lumos_fx.gates(wrapped)  # every layer here reads its input features through a rule
    set_gates(wrapped, setting, seed)
    pruned = lumos_fx.prune(wrapped)
    batch = graphs(5, seed + 1, features=n_in, edge_features=EDGE_DIM)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-4
