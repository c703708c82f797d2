"""Many small graphs as one disjoint graph, the way torch_geometric's DataLoader collates them."""

from __future__ import annotations

import torch


def collate(graphs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """``[(x, edge_index, edge_attr), ...]`` -> ``(x, edge_index, edge_attr, batch)`` with node
    indices offset per graph and ``batch`` giving each node's graph."""
    offsets = torch.cumsum(torch.tensor([0] + [len(g[0]) for g in graphs[:-1]]), 0)
    x = torch.cat([g[0] for g in graphs])
    edge_index = torch.cat([g[1] + o for g, o in zip(graphs, offsets)], 1)
    edge_attr = torch.cat([g[2] for g in graphs])
    batch = torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor([len(g[0]) for g in graphs]))
    return x, edge_index, edge_attr, batch


def graph_batches(graphs: list, labels: torch.Tensor, size: int) -> list[tuple[tuple, torch.Tensor]]:
    """Consecutive groups of `size` graphs, collated, with their labels."""
    return [(collate(graphs[i:i + size]), labels[i:i + size]) for i in range(0, len(graphs), size)]
