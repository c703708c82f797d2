"""The registry of layer and op rules, with the built-in rules registered."""

import sys

from . import attention, conv, dims, elementwise, embedding, graph_io, indexing, joins, linear  # noqa: F401
from . import multihead_attention, norm, pixel_shuffle, recurrent, reshape, shape_reads, spatial  # noqa: F401
from . import spectral, transformer_encoder  # noqa: F401
from .api import ModuleRule, Rule, Unsupported
from .registry import REGISTRY, register_rule

__all__ = ["REGISTRY", "ModuleRule", "Rule", "Unsupported", "register_library_rules", "register_rule"]


def register_library_rules() -> None:
    """Register the rules of a library's own layers (they import it) once the user's code has
    imported the library (PyG's: :func:`lumos_fx.pyg_trace.register_rules`)."""
    if "neuralop" in sys.modules:
        from . import spectral_neuralop  # noqa: F401
    if "physicsnemo" in sys.modules:
        from . import spectral_physicsnemo  # noqa: F401
