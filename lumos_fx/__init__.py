"""lumos_fx: automatic model surgery on torch.fx.

L0-regularised hard-concrete gates learn, during ordinary training, which input features
and which channels a model needs; prune() then cuts the rest out and returns a smaller
model, verified to compute the same function, as readable Python::

    wrapped = lumos_fx.instrument(model, example_inputs=(x,))
    # train wrapped, adding lumos_fx.complexity_loss(wrapped) to the loss
    pruned = lumos_fx.prune(wrapped)
    print(pruned.code); lumos_fx.export(pruned, "out/model")
"""

from .complexity import complexity_loss, expected_alive, expected_kept, param_groups
from .config import Config
from .distill import Distill
from .distill_loss import distill_loss
from .errors import (
    ExportError,
    GateError,
    InputError,
    LumosError,
    NotInstrumentedError,
    PruneError,
    TraceError,
    TrainingError,
)
from .export import export, load
from .finetune import freeze_gates
from .fit import fit
from .gate import Gate
from .instrument import instrument
from .plan import gates
from .prune import prune, summary
from .report import Summary
from .rules import ModuleRule, Rule, Unsupported, register_rule
from .tolerance import ToleranceSearch

__all__ = [
    "Config", "Distill", "Gate", "Summary", "ModuleRule", "Rule", "Unsupported", "ToleranceSearch",
    "instrument", "gates", "param_groups", "complexity_loss", "expected_alive", "expected_kept",
    "distill_loss", "freeze_gates", "fit", "prune", "summary",
    "export", "load", "register_rule",
    "LumosError", "TraceError", "InputError", "NotInstrumentedError", "GateError", "PruneError", "ExportError",
    "TrainingError",
]
__version__ = "0.1.0"
