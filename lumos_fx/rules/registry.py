"""The registry of rules: one small rule per layer or op.

A rule says how an fx node moves channels (:meth:`Rule.connect`, used to build the channel
dependency graph) and how to cut it once masks are known (:meth:`Rule.prune`). Module
rules also resize the module after its parameters were sliced and write its constructor
for export. Rules are looked up by the exact module class (a subclass may change forward),
by function object, or by Tensor method name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import fx

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..prune import PruneContext


class Unsupported(Exception):
    """Raised by :meth:`Rule.connect` when this use of the op has no rule; the message says why."""


class Rule:
    """How one op moves channels. Subclasses override :meth:`connect` and, where the op
    needs more than "materialise dead inputs", :meth:`prune`."""

    channels_at: int | None = None  # the dim a layer reads as channels (tells a model input's feature dim)

    def connect(self, node: fx.Node, an: "Analysis") -> None:
        raise NotImplementedError

    def prune(self, node: fx.Node, pc: "PruneContext") -> Any:
        """Rewrite `node` for the cut model. Return a constant tensor (broadcast form, full
        channel width) when the node's value no longer depends on the inputs, else None."""
        return pc.materialize_dead_inputs(node)

    def emptied(self, node: fx.Node, pc: "PruneContext") -> None:
        """Called instead of :meth:`prune` when every channel of `node` closed (it goes)."""


class ModuleRule(Rule):
    """A rule for an ``nn.Module`` class."""

    def resize(self, module: torch.nn.Module) -> None:
        """Update the module's size attributes after its parameters were sliced."""

    def source(self, module: torch.nn.Module) -> str:
        """Python expression that constructs `module` (with ``nn`` = ``torch.nn``)."""
        return generic_module_source(module)


def generic_module_source(module: torch.nn.Module) -> str:
    """``nn.<repr>`` for a childless torch.nn module whose repr is its constructor call."""
    return f"nn.{module!r}"


class Registry:
    def __init__(self) -> None:
        self.modules: dict[type, ModuleRule] = {}
        self.functions: dict[Callable, Rule] = {}
        self.methods: dict[str, Rule] = {}
        self.ops: dict[str, Rule] = {}

    def register(self, rule: Rule, *keys) -> Rule:
        """Register `rule` for module classes, functions, or Tensor method names (strings)."""
        for key in keys:
            if isinstance(key, type):
                if not isinstance(rule, ModuleRule):
                    raise TypeError(f"a rule for module class {key.__name__} must be a ModuleRule")
                self.modules[key] = rule
            elif isinstance(key, str):
                self.methods[key] = rule
            elif callable(key):
                self.functions[key] = rule
            else:
                raise TypeError(f"cannot register a rule for {key!r}")
        return rule

    def register_op(self, op: str, rule: Rule) -> None:
        """Rules for fx's structural ops: placeholder, get_attr, output."""
        self.ops[op] = rule

    def lookup(self, node: fx.Node, gm: fx.GraphModule) -> Rule | None:
        if node.op == "call_module":
            return self.modules.get(type(gm.get_submodule(node.target)))
        if node.op == "call_function":
            return self.functions.get(node.target)
        if node.op == "call_method":
            return self.methods.get(node.target)
        return self.ops.get(node.op)

    def module_rule(self, module: torch.nn.Module) -> ModuleRule | None:
        return self.modules.get(type(module))


REGISTRY = Registry()


def register_rule(rule: Rule, *keys) -> Rule:
    """Teach lumos_fx a layer or op: ``register_rule(MyRule(), MyLayer)``."""
    return REGISTRY.register(rule, *keys)
