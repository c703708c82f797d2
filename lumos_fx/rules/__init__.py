"""The registry of layer and op rules, with the built-in rules registered."""

from .registry import REGISTRY, ModuleRule, Rule, Unsupported, register_rule
from . import attention, conv, elementwise, embedding, graph_io, linear, norm, spatial, structure  # noqa: F401  (registration)

__all__ = ["REGISTRY", "ModuleRule", "Rule", "Unsupported", "register_rule"]
