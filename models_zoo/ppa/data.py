r"""The PPA workload's data: graphs drawn from five random-graph models, to be told apart by
their structure alone (as ogbg-ppa tells taxa apart from protein association graphs).

Generators (networkx), all with a mean degree near 4 and 20-40 nodes: Erdos-Renyi
:math:`G(n, p)`, Barabasi-Albert preferential attachment, Watts-Strogatz small world,
a two-block stochastic block model and a random geometric graph. Nodes carry no features;
each edge :math:`(u, v)` has 7 features computed from the graph: its endpoints' degrees
(smaller and larger, over 10), their common neighbours and Jaccard similarity, whether it
closes a triangle, and two uniform noise columns.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from ..cache import cached_objects
from ..graph.models import PPA_EDGE_FEATURES

CLASSES = ["erdos_renyi", "barabasi_albert", "watts_strogatz", "block_model", "geometric"]
INFORMATIVE = ["degree_min", "degree_max", "common_neighbours", "jaccard", "in_triangle"]
UNINFORMATIVE = ["noise_1", "noise_2"]
EDGE_FEATURES = INFORMATIVE + UNINFORMATIVE


def generate(kind: str, n: int, seed: int) -> nx.Graph:
    if kind == "erdos_renyi":
        return nx.gnp_random_graph(n, 4 / (n - 1), seed=seed)
    if kind == "barabasi_albert":
        return nx.barabasi_albert_graph(n, 2, seed=seed)
    if kind == "watts_strogatz":
        return nx.watts_strogatz_graph(n, 4, 0.1, seed=seed)
    if kind == "block_model":
        half = n // 2
        return nx.stochastic_block_model([half, n - half], [[7 / half, 1 / half], [1 / half, 7 / (n - half)]], seed=seed)
    return nx.random_geometric_graph(n, np.sqrt(4 / (np.pi * n)), seed=seed)


def features(g: nx.Graph, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, edge_index, edge_attr) with both directions of every edge."""
    deg = dict(g.degree())
    rows = []
    for u, v in g.edges():
        common = len(set(g[u]) & set(g[v]))
        union = len(set(g[u]) | set(g[v]))
        rows.append([min(deg[u], deg[v]) / 10, max(deg[u], deg[v]) / 10, common / 5, common / max(union, 1),
                     float(common > 0), *rng.random(2)])
    edges = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2)
    attr = np.array(rows, dtype=np.float32).reshape(-1, PPA_EDGE_FEATURES)
    edge_index = torch.as_tensor(np.concatenate([edges, edges[:, ::-1]]).T.copy())
    return torch.zeros(g.number_of_nodes(), dtype=torch.long), edge_index, torch.as_tensor(np.concatenate([attr, attr]))


def simulate(n: int, seed: int) -> tuple[list, torch.Tensor]:
    """`n` graphs as (x, edge_index, edge_attr) and their generator's class (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    graphs = [features(generate(CLASSES[c], int(rng.integers(20, 41)), int(rng.integers(2 ** 31))), rng)
              for c in labels]
    return graphs, torch.as_tensor(labels)


def load(n: int, seed: int = 0) -> tuple[list, torch.Tensor]:
    return cached_objects(f"ppa_n{n}_s{seed}", lambda: simulate(n, seed))
