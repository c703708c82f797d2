"""Embeddings: a lookup table whose embedding dim is a producer of channels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from .api import Connecting, ModuleRule, Rule, Unsupported, arg
from .registry import REGISTRY


class EmbeddingRule(ModuleRule):
    r"""``y[..., j] = W[i, j]`` for index ``i``: output channel ``j`` is column ``j`` of the
    table ``W`` (num_embeddings, embedding_dim). The indices carry no channels.

    The embedding dim opens a space tied to ``W[:, j]``; the gates of its consumers close
    columns of the table (the paper's Embedding-to-FC map: 300 -> 189 columns). Embeddings
    summed (one per atom feature in a molecule encoder) are one group through the add.
    """

    channels_at = -1

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        out = an.new_space(node, -1, producer=True)
        an.tie(out, an.param_space(module.weight, 1))
        idx = an.space(node.args[0])
        if idx is not None:
            an.accept(idx)

    def resize(self, module: nn.Embedding) -> None:
        module.embedding_dim = module.weight.shape[1]


class FunctionalEmbedding(Rule):
    """``F.embedding(indices, weight)`` with the table read in forward: the output's
    channels are the table's last dim."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        table = an.space(arg(node, 1, "weight"))
        if table is None or table.dim != len(an.shape(arg(node, 1, "weight"))) - 1:
            raise Unsupported("its table has no channel space on its last dim")
        idx = an.space(node.args[0])
        if idx is not None:
            an.accept(idx)
        an.follow(node, table, -1)


REGISTRY.register(EmbeddingRule(), nn.Embedding)
REGISTRY.register(FunctionalEmbedding(), F.embedding)
