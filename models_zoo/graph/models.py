"""Reference graph neural networks of the paper's graph workloads, written as plain PyTorch
and torch_geometric (no lumos_fx in them), the way OGB's baselines write them:

- :class:`MolhivGIN`: ogbg-molhiv's GIN/GINE baseline (Hu et al., 2020): atom and bond
  encoders (one ``nn.Embedding`` per categorical feature, summed), 5 layers of width 300,
  BatchNorm, mean pooling, a linear head;
- :class:`PPAGCN`: ogbg-ppa's GCN baseline, whose convolution adds an edge embedding to
  every message (Lumos eq. 10 with edge features);
- :class:`GATNodeClassifier`: Velickovic et al.'s GAT, multi-head layers and an output layer
  averaging its heads.

``width`` scales every hidden size, so tests run the same architectures small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GINConv, GINEConv, global_mean_pool
from torch_geometric.utils import degree, scatter

# OGB's categorical feature sizes (ogb.utils.features): 9 atom and 3 bond features.
ATOM_FEATURE_SIZES = (119, 5, 12, 12, 10, 6, 6, 2, 2)
BOND_FEATURE_SIZES = (5, 6, 2)
PPA_EDGE_FEATURES = 7
PPA_CLASSES = 37


def _w(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class CategoricalEncoder(nn.Module):
    """OGB's AtomEncoder / BondEncoder: :math:`h = \\sum_k E_k[x_{:, k}]`."""

    def __init__(self, sizes: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, dim) for n in sizes)

    def forward(self, x):
        return sum(emb(x[:, k]) for k, emb in enumerate(self.embeddings))


class MolhivGIN(nn.Module):
    """GINE layers (GIN with ``edge_features=False``) on atom embeddings, with a bond encoder
    per layer; BatchNorm, ReLU between layers; the last layer's output mean-pooled."""

    def __init__(self, width: float = 1.0, layers: int = 5, edge_features: bool = True, n_tasks: int = 1) -> None:
        super().__init__()
        dim = _w(300, width)
        self.edge_features = edge_features
        self.atom = CategoricalEncoder(ATOM_FEATURE_SIZES, dim)
        mlp = lambda: nn.Sequential(nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(),
                                    nn.Linear(2 * dim, dim))
        self.convs = nn.ModuleList(GINEConv(mlp(), train_eps=True) if edge_features else GINConv(mlp(), train_eps=True)
                                   for _ in range(layers))
        self.bonds = nn.ModuleList(CategoricalEncoder(BOND_FEATURE_SIZES, dim) for _ in range(layers if edge_features
                                                                                               else 0))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(layers))
        self.head = nn.Linear(dim, n_tasks)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.atom(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, self.bonds[i](edge_attr)) if self.edge_features else conv(h, edge_index))
            if i < len(self.convs) - 1:
                h = F.relu(h)
        return self.head(global_mean_pool(h, batch))


class PPAConv(nn.Module):
    r"""ogbg-ppa's GCN convolution with edge features:

    .. math::
        h = x W^\top + b, \quad
        y_i = \sum_{j \to i} \frac{\mathrm{ReLU}(h_j + e_{ji} W_e^\top + b_e)}{\sqrt{d_i d_j}}
        + \frac{\mathrm{ReLU}(h_i + r)}{d_i},

    with :math:`d` the out-degree plus one and :math:`r` a learnt root embedding. Written with
    ``index_select`` and ``scatter`` (OGB's is a ``MessagePassing`` subclass), so that fx
    traces it op by op.
    """

    def __init__(self, dim: int, edge_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.edge_encoder = nn.Linear(edge_features, dim)
        self.root = nn.Parameter(torch.zeros(dim))

    def forward(self, x, edge_index, edge_attr):
        h = self.linear(x)
        row, col = edge_index[0], edge_index[1]
        deg = degree(row, x.size(0), dtype=x.dtype) + 1
        norm = deg.pow(-0.5).index_select(0, row) * deg.pow(-0.5).index_select(0, col)
        messages = norm.unsqueeze(-1) * F.relu(h.index_select(0, row) + self.edge_encoder(edge_attr))
        return scatter(messages, col, 0, x.size(0), reduce="sum") + F.relu(h + self.root) / deg.unsqueeze(-1)


class PPAGCN(nn.Module):
    """ogbg-ppa's GCN: one learnt node embedding (PPA nodes have no features), 5 PPAConv layers
    with BatchNorm and ReLU, mean pooling, a linear classifier over 37 taxa."""

    def __init__(self, width: float = 1.0, layers: int = 5, edge_features: int = PPA_EDGE_FEATURES,
                 n_classes: int = PPA_CLASSES) -> None:
        super().__init__()
        dim = _w(300, width)
        self.node = nn.Embedding(1, dim)
        self.convs = nn.ModuleList(PPAConv(dim, edge_features) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(layers))
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.node(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, edge_attr))
            if i < len(self.convs) - 1:
                h = F.relu(h)
        return self.head(global_mean_pool(h, batch))


class GATNodeClassifier(nn.Module):
    """GAT: ``layers - 1`` layers of 8 heads x 8 channels (concatenated, ELU), then one layer
    whose heads are averaged into the class scores."""

    def __init__(self, in_features: int = 32, n_classes: int = 7, width: float = 1.0, heads: int = 8,
                 layers: int = 3) -> None:
        super().__init__()
        per_head = _w(8, width)
        sizes = [in_features] + [heads * per_head] * (layers - 1)
        self.convs = nn.ModuleList(GATConv(i, per_head, heads=heads) for i in sizes[:-1])
        self.out = GATConv(sizes[-1], n_classes, heads=1, concat=False)

    def forward(self, x, edge_index):
        for conv in self.convs:
            x = F.elu(conv(x, edge_index))
        return self.out(x, edge_index)


def random_graphs(n_graphs: int, seed: int, *, kind: str, node_features: int = 32) -> tuple:
    """Inputs of the shape each reference model takes, on random graphs of 4 to 12 nodes: for
    checking cuts (the zoo's simulators give the training data)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(4, 13, (n_graphs,), generator=gen)
    batch = torch.repeat_interleave(torch.arange(n_graphs), sizes)
    start = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, 2 * sizes)
    span = torch.repeat_interleave(sizes, 2 * sizes)
    edge_index = (torch.rand(2, len(span), generator=gen) * span).long() + start
    n, m = len(batch), edge_index.shape[1]
    if kind == "molhiv":
        x = torch.stack([torch.randint(0, s, (n,), generator=gen) for s in ATOM_FEATURE_SIZES], 1)
        e = torch.stack([torch.randint(0, s, (m,), generator=gen) for s in BOND_FEATURE_SIZES], 1)
        return x, edge_index, e, batch
    if kind == "ppa":
        return torch.zeros(n, dtype=torch.long), edge_index, torch.rand(m, PPA_EDGE_FEATURES, generator=gen), batch
    return torch.randn(n, node_features, generator=gen), edge_index


def reference_models(width: float = 1.0) -> dict[str, tuple[nn.Module, str]]:
    """Name -> (model, input kind for :func:`random_graphs`)."""
    return {
        "molhiv-gine": (MolhivGIN(width), "molhiv"),
        "molhiv-gin": (MolhivGIN(width, edge_features=False), "molhiv"),
        "ppa-gcn": (PPAGCN(width), "ppa"),
        "gat": (GATNodeClassifier(width=width), "nodes"),
    }
