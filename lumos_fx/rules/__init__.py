"""The registry of layer and op rules, with the built-in rules registered."""

import importlib
import sys

from . import attention, conv, dims, elementwise, embedding, graph_io, indexing, joins, linear  # noqa: F401
from . import multihead_attention, norm, pixel_shuffle, recurrent, reshape, shape_reads, spatial  # noqa: F401
from . import transformer_encoder  # noqa: F401
from .api import ModuleRule, Rule, Unsupported
from .registry import REGISTRY, register_rule

__all__ = ["REGISTRY", "ModuleRule", "Rule", "Unsupported", "register_library_rules", "register_rule"]

# The rules of a library's own layers (they import it): library -> rule module.
_LIBRARY_RULES = {"neuralop": "spectral_neuralop", "physicsnemo": "spectral_physicsnemo"}


def register_library_rules() -> None:
    """Register the rules of the libraries the user's code has imported."""
    for library, module in _LIBRARY_RULES.items():
        if library in sys.modules:
            importlib.import_module(f"{__name__}.{module}")
