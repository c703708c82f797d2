r"""The structured-pruning baselines a user would otherwise pick, cut to a parameter budget
(the count Lumos reached) and fine-tuned in the same harness.

- **L1-norm filter pruning** (Li et al., 2017): a channel's importance is the L1 norm of the
  weights that produce it, :math:`s_c = \sum |W_{c, \dots}|` summed over every layer writing
  that channel (coupled channels, e.g. both sides of a residual add, are one unit).
- **Network slimming** (Liu et al., 2017): train with :math:`\lambda_s \sum |\gamma|` on the
  BatchNorm scales, then rank channels by :math:`|\gamma_c|`; only channels a BatchNorm
  scales are candidates.
- **DepGraph** (Fang et al., 2023) through the ``torch-pruning`` package (optional):
  group-level magnitude importance, global pruning.

L1 and slimming use lumos_fx's channel dependency graph to know which weights each channel
touches, close the least important units (scores normalised by their group's mean, ranked
globally; input features and at least one unit of every group stay), and prune with
lumos_fx.prune, so the cut is exact and identical in kind to Lumos's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import lumos_fx
from lumos_fx.node_info import info
from lumos_fx.plan import gate_modules, plan_of
from lumos_fx.report import count_params

OPEN, CLOSED = 30.0, -30.0


def l1_scores(wrapped) -> dict[int, np.ndarray]:
    """Group id -> per-unit L1 norm of the weights producing each unit's channels (the weight
    tensors, of two or more dims, of the modules whose outputs are the group's channels; a
    recurrent layer's units are also read back by its own weights, whose columns the unit's
    gate folds into: those read the unit and are left out)."""
    plan = plan_of(wrapped)
    nodes = {n.name: n for n in wrapped.graph.nodes}
    producers = {(s.group, _owner(nodes[s.node])) for s in plan.spaces.values() if s.producer and s.node in nodes}
    reads = {key for group in plan.groups for consumer in group.consumers for key in consumer.fold}
    return _scores(wrapped, lambda space, module: (space.group, space.param.rpartition(".")[0]) in producers
                   and space.key not in reads and _is_weight(space, wrapped))


def _owner(node) -> str | None:
    """The module whose output `node` is: a module call's target (a folded gate turned a
    module call functional), or the owner of a parameter read in the graph (a recurrent
    layer written out produces its units from its weights)."""
    if node.op == "call_module" or info(node).folded is not None:
        return info(node).folded or node.target
    return node.target.rpartition(".")[0] if node.op == "get_attr" else None


def bn_scores(wrapped) -> dict[int, np.ndarray]:
    """Group id -> per-unit |gamma| of the BatchNorm scales in the group (groups without one left out)."""
    return _scores(wrapped, lambda space, module: isinstance(module, nn.modules.batchnorm._BatchNorm)
                   and space.param.endswith(".weight"))


def _is_weight(space, wrapped) -> bool:
    return wrapped.get_parameter(space.param).dim() >= 2


def _scores(wrapped, select) -> dict[int, np.ndarray]:
    plan = plan_of(wrapped)
    inputs = {g.id for g in plan.input_groups().values()}
    out = {}
    for gid in gate_modules(wrapped):
        if gid in inputs:
            continue
        group = plan.groups[gid]
        score = np.zeros(group.n_units)
        found = False
        for key in group.spaces:
            space = plan.spaces[key]
            if space.param is None or space.refines is not None:
                continue
            module = wrapped.get_submodule(space.param.rpartition(".")[0])
            if not select(space, module):
                continue
            w = wrapped.get_parameter(space.param).detach().abs()
            per_channel = w.sum(dim=[d for d in range(w.dim()) if d != space.dim]) if w.dim() > 1 else w
            np.add.at(score, space.units, per_channel.double().numpy())
            found = True
        if found:
            out[gid] = score
    return out


def producer_units(wrapped) -> dict[int, list[set[int]]]:
    """Group id -> the units of each layer output in the group (a U-Net's merge input holds
    the skip path's channels and the upsampling path's)."""
    plan = plan_of(wrapped)
    out: dict[int, list[set[int]]] = {}
    for space in plan.spaces.values():
        if space.producer and space.node is not None and space.units is not None and space.refines is None:
            out.setdefault(space.group, []).append(set(space.units.tolist()))
    return out


def cut_to_budget(wrapped, scores: dict[int, np.ndarray], params: int) -> int:
    """Close the globally least important units until at most `params` parameters remain
    (counted as lumos_fx counts them); returns the units closed. Every layer output keeps
    at least one unit: closing all of one would cut its path out of the model."""
    gates = gate_modules(wrapped)
    ranked = sorted(((s / max(score.mean(), 1e-12), gid, u) for gid, score in scores.items()
                     for u, s in enumerate(score)))
    outputs = producer_units(wrapped)
    left = {(gid, i): len(units) for gid, sets in outputs.items() for i, units in enumerate(sets)}
    left.update({(gid, None): len(score) for gid, score in scores.items()})  # the group as a whole
    candidates = []
    for _, gid, u in ranked:
        holders = [(gid, None)] + [(gid, i) for i, units in enumerate(outputs.get(gid, [])) if u in units]
        if all(left[h] > 1 for h in holders):
            candidates.append((gid, u))
            for h in holders:
                left[h] -= 1
    fixed = count_params(wrapped) - lumos_fx.expected_alive(wrapped)[1]

    def close(k: int) -> float:
        with torch.no_grad():
            for gate in gates.values():
                gate.log_alpha.fill_(OPEN)
            for gid, u in candidates[:k]:
                gates[gid].log_alpha[u] = CLOSED
            return fixed + float(lumos_fx.expected_alive(wrapped)[0])

    k = fewest(close, len(candidates), params)
    close(k)
    return k


def fewest(count: Callable[[int], float], most: int, budget: float) -> int:
    """The smallest k in [0, most] with ``count(k) <= budget``, by bisection, for a count
    that falls as k grows (`most` where none is small enough)."""
    lo, hi = 0, most
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def slimming_penalty(model: nn.Module, strength: float = 1e-4):
    """The network-slimming term added to the task loss: :math:`\\lambda_s \\sum |\\gamma|`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    return lambda loss: loss + strength * sum(m.weight.abs().sum() for m in norms)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def depgraph_refuses(model: nn.Module) -> str | None:
    """Why torch-pruning (1.6) cannot cut `model`, or None: its LSTM pruner asserts one layer,
    and a complex weight (an FNO's spectral convolution) is a parameter it does not know,
    which it cuts along its last dim, the Fourier modes."""
    if any(isinstance(m, nn.RNNBase) and m.num_layers > 1 for m in model.modules()):
        return "torch-pruning cuts one-layer recurrent layers only"
    if any(p.is_complex() for p in model.parameters()):
        return "torch-pruning has no rule for complex spectral weights"
    return None


def depgraph_prune(model: nn.Module, example: tuple, params: int, output_layer: nn.Module) -> nn.Module:
    """A copy of `model` pruned by torch-pruning's DepGraph (global group magnitude importance)
    to at most `params` parameters, by bisection on the global pruning ratio."""
    import torch_pruning as tp

    def pruned_at(ratio: float) -> nn.Module:
        m = copy.deepcopy(model)
        layer = dict(model.named_modules())
        name = next(n for n, mod in layer.items() if mod is output_layer)
        pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                      pruning_ratio=ratio, global_pruning=True,
                                      ignored_layers=[m.get_submodule(name)])
        pruner.step()
        return m

    lo, hi, best = 0.0, 0.99, None
    for _ in range(8):
        mid = (lo + hi) / 2
        m = pruned_at(mid)
        if sum(p.numel() for p in m.parameters()) <= params:
            best, hi = m, mid
        else:
            lo = mid
    return best if best is not None else pruned_at(hi)


def output_layer(model: nn.Module) -> nn.Module:
    """The last module with parameters (a classifier or regression head, kept whole)."""
    return [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None][-1]
