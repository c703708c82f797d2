"""The registry of layer and op rules, with the built-in rules registered."""

from . import attention, conv, dims, elementwise, embedding, graph_io, indexing, joins, linear  # noqa: F401
from . import multihead_attention, norm, pixel_shuffle, recurrent, reshape, shape_reads, spatial  # noqa: F401
from . import transformer_encoder  # noqa: F401
from .api import ModuleRule, Rule, Unsupported
from .registry import REGISTRY, register_rule

__all__ = ["REGISTRY", "ModuleRule", "Rule", "Unsupported", "register_rule"]
