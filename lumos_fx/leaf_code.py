"""What export cannot build from a constructor, traced to torch code: a module without a
rule (an automatic leaf, a library's block) or a library function the graph calls.

Each is traced again on the values it receives when the pruned model runs on its example
inputs (:func:`lumos_fx.trace.trace_modes`, both modes), and the traced graph must give
the module's own output on them; ``model.py`` then holds its code as a class of its own.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .errors import ExportError
from .side_effects import preserved, rng_devices
from .trace import Modes, trace_modes
from .verify import output_error, within_tolerance


class FunctionCall(nn.Module):
    """A call of `function` (or of a module called with keyword arguments) as a module, to
    trace it: the arguments that are graph values come in order (``forward(*values)``), the
    constants stay as the call gives them."""

    traces_into = ("function",)  # a module called is traced into even where its rule makes it one op

    def __init__(self, function, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.function = function
        leaves, self.spec = pytree.tree_flatten((args, kwargs))
        self.slots = [i for i, v in enumerate(leaves) if isinstance(v, fx.Node)]
        self.constants = [None if isinstance(v, fx.Node) else v for v in leaves]

    def __deepcopy__(self, memo):
        twin = copy.copy(self)  # the pytree spec is immutable: shared, not copied
        twin.__dict__ = {k: dict(v) if isinstance(v, dict) else v for k, v in self.__dict__.items()}
        twin.constants = copy.deepcopy(self.constants, memo)
        twin._modules = copy.deepcopy(self._modules, memo)  # a module called as a function
        return twin

    def forward(self, *values):
        leaves = list(self.constants)
        for i, value in zip(self.slots, values):
            leaves[i] = value
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return self.function(*args, **kwargs)


def graph_values(node: fx.Node) -> list[fx.Node]:
    """The graph values among `node`'s arguments, in the order :class:`FunctionCall` takes them."""
    return [v for v in pytree.tree_leaves((node.args, node.kwargs)) if isinstance(v, fx.Node)]


def received(gm: fx.GraphModule, example: tuple, nodes: set[str], training: bool) -> dict[str, tuple]:
    """The arguments (args, kwargs) each node named in `nodes` gets when `gm` runs on `example`
    in the given mode; `gm`'s state and the random stream are left as they were."""
    seen: dict[str, tuple] = {}

    class Recording(fx.Interpreter):
        def run_node(self, n):
            if n.name in nodes:
                seen[n.name] = pytree.tree_map(
                    lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, self.fetch_args_kwargs_from_env(n))
            return super().run_node(n)

    flags = {m: m.training for m in gm.modules()}
    try:
        with preserved(gm), torch.no_grad(), torch.random.fork_rng(rng_devices(gm)):
            gm.train(training)
            Recording(gm).run(*gm.graph._codegen.process_inputs(*copy.deepcopy(example)))
    finally:
        for m, flag in flags.items():
            m.training = flag
    return seen


def _unwritable(name: str, module: nn.Module, why: str) -> ExportError:
    return ExportError(f"cannot write module '{name}' ({type(module).__name__}) as Python source: {why}. Register a "
                       "rule that knows its constructor: lumos_fx.register_rule(MyRule(), type(module)) with "
                       "MyRule(lumos_fx.ModuleRule).source().")


def traced(name: str, module: nn.Module, args: tuple) -> Modes:
    """`module` (called as `name` with `args`) traced to graphs that compute what it does."""
    try:
        modes = trace_modes(module, args)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise _unwritable(name, module, f"torch.fx cannot trace it ({type(e).__name__}: {first})") from e
    if isinstance(module, FunctionCall) and "function" in modes.leaves:  # the module called is itself untraceable
        raise _unwritable(name, module.function, f"torch.fx cannot trace it ({modes.leaves['function']})")
    for training in (True, False):
        graph = modes.eval if modes.eval is not None and not training else modes.train
        if not within_tolerance(*output_error(_run(module, args, training), _run(graph, args, training))):
            raise _unwritable(name, module, f"its traced code does not compute what it does in "
                                            f"{'train' if training else 'eval'} mode")
    return modes


def _run(module: nn.Module, args: tuple, training: bool):
    """`module` on `args` in a mode, on copies, with the same random numbers every time."""
    twin = copy.deepcopy(module).train(training)
    with torch.no_grad(), torch.random.fork_rng(rng_devices(module)):
        torch.manual_seed(0)
        return twin(*copy.deepcopy(args))


def is_flag(value) -> bool:
    """Whether `value` is a read of a module's ``training`` flag in the graph."""
    return isinstance(value, fx.Node) and value.op == "get_attr" and value.target.rpartition(".")[2] == "training"


def with_flag(node: fx.Node, training: bool) -> tuple[tuple, dict]:
    """`node`'s arguments with every read of a ``training`` flag replaced by `training`."""
    return pytree.tree_map(lambda v: training if is_flag(v) else v, (node.args, node.kwargs))
