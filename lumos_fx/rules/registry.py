"""The registry of rules: one small rule per layer or op (the contract is :mod:`.api`).

Rules are looked up by the exact module class (a subclass may change forward), by function
object, or by Tensor method name. A module rule registered for a family (a base class and
its subclasses) answers only the tracer's question, whether to call a module as one op.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import fx

from .api import ModuleRule, Rule, Tracing


class Registry:
    def __init__(self) -> None:
        self.modules: dict[type, ModuleRule] = {}
        self.families: dict[type, ModuleRule] = {}
        self.functions: dict[Callable, Rule] = {}
        self.methods: dict[str, Rule] = {}
        self.ops: dict[str, Rule] = {}
        self.one_op: list[Callable] = []

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

    def register_family(self, rule: ModuleRule, *bases: type) -> ModuleRule:
        """`rule` tells the tracer how to treat subclasses of `bases` that have no rule of their own."""
        for base in bases:
            self.families[base] = rule
        return rule

    def register_op(self, op: str, rule: Rule) -> None:
        """Rules for fx's structural ops: placeholder, get_attr, output."""
        self.ops[op] = rule

    def record_as_one_op(self, *functions: Callable) -> None:
        """Functions the tracer records as one node instead of tracing into them (their code
        reads tensor values); those without a rule keep the channels they touch."""
        self.one_op.extend(f for f in functions if f not in self.one_op)

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

    def tracing(self, module: torch.nn.Module) -> Tracing | None:
        """How the rule of `module` (or of its family) has the tracer treat it; None when no
        rule speaks for it (the tracer's defaults decide)."""
        rule = self.modules.get(type(module))
        if rule is None:
            rule = next((r for base, r in self.families.items() if isinstance(module, base)), None)
        return None if rule is None else rule.tracing(module)


REGISTRY = Registry()


def register_rule(rule: Rule, *keys) -> Rule:
    """Teach lumos_fx a layer or op: ``register_rule(MyRule(), MyLayer)``. A module rule's
    hooks (:class:`~.api.ModuleRule`) also tell the tracer, gate insertion and export about it."""
    return REGISTRY.register(rule, *keys)
