"""Stage 5 (export): the pruned model as a standalone ``model.py`` plus ``weights.pt``.

``model.py`` imports only torch (and torch_geometric where the model uses it): its class
builds every layer with literal sizes in ``__init__``; ``forward`` is the code torch.fx
generates for the pruned graph. ``weights.pt`` is a plain state_dict, readable with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import hashlib
import importlib.util
import inspect
import math
import pprint
import re
import textwrap
import types
from pathlib import Path

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .errors import ExportError
from .export_formats import load_format, write_formats
from .fxutil import describe
from .leaf_code import FunctionCall, graph_values, is_flag, received, traced, with_flag
from .modes import mode_graphs
from .rules import REGISTRY
from .rules.api import ModuleRule, generic_module_source
from .side_effects import MODULE_INTERNALS

_IMPORTABLE = ("torch", "torch_geometric", "math", "operator", "_operator", "builtins")


def _flat(name: str, taken: set[str]) -> str:
    flat = re.sub(r"\W", "_", name)
    if flat[0].isdigit():
        flat = "m_" + flat
    while flat in taken:
        flat += "_"
    taken.add(flat)
    return flat


def _module_source(name: str, module: nn.Module) -> str:
    rule = REGISTRY.module_rule(module)
    if rule is not None and type(rule).source is not ModuleRule.source:
        return rule.source(module)
    # A torch.nn or torch_geometric.nn module without children whose repr rebuilds it (ReLU(),
    # LayerNorm(...), SumAggregation()), with the settings its repr leaves out (AvgPool2d's
    # count_include_pad) given by keyword.
    source, same = generic_module_source(module), False
    try:
        names = {"nn": nn, "torch": torch, "torch_geometric": importlib.import_module("torch_geometric")
                 if source.startswith("torch_geometric.") else None}
        rebuilt = eval(source, names)
        missing = _settings_differing(rebuilt, module)
        if missing:
            source = f"{source[:-1]}{', ' if source[-2] != '(' else ''}{', '.join(f'{k}={v!r}' for k, v in missing.items())})"
            rebuilt = eval(source, names)
        same = (type(rebuilt) is type(module) and not _settings_differing(rebuilt, module)
                and (source.startswith("nn.") or _plain_state(rebuilt) == _plain_state(module))
                and {k: v.shape for k, v in rebuilt.state_dict().items()}
                == {k: v.shape for k, v in module.state_dict().items()})
    except Exception:
        pass
    if not same or any(True for _ in module.children()):
        raise ExportError(
            f"cannot write module '{name}' ({type(module).__name__}) as Python source. "
            "Register a rule that knows its constructor: "
            "lumos_fx.register_rule(MyRule(), type(module)) with MyRule(lumos_fx.ModuleRule).source()."
        )
    return source


def _settings_differing(rebuilt: nn.Module, module: nn.Module) -> dict:
    """The constructor arguments of `module`, kept as attributes of the same name, that
    differ in `rebuilt`."""
    names = inspect.signature(type(module).__init__).parameters
    return {k: v for k, v in vars(module).items()
            if k in names and not isinstance(v, (torch.Tensor, nn.Module)) and vars(rebuilt).get(k, _NONE) != v}


_NONE = object()


def _plain_state(module: nn.Module) -> dict:
    """The attributes of `module` that are plain values (a library layer's settings)."""
    return {k: v for k, v in vars(module).items()
            if k not in MODULE_INTERNALS and isinstance(v, (bool, int, float, str, tuple, type(None)))}


def _tensor_source(tensor: torch.Tensor) -> str:
    return f"torch.empty({tuple(tensor.shape)}, dtype={tensor.dtype})"


def _imports(python_code) -> list[str]:
    """Import lines for the globals fx's generated forward refers to."""
    lines = []
    for name, obj in python_code.globals.items():
        if not re.search(rf"\b{re.escape(name)}\b", python_code.src):
            continue
        if obj is torch:
            continue
        if isinstance(obj, types.ModuleType):
            lines.append(f"import {obj.__name__} as {name}")
        elif isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
            lines.append(f"from math import {name}")
        elif obj is type(None):
            lines.append(f"{name} = type(None)")
        elif getattr(builtins, name, None) is obj:
            continue
        elif isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            # A named tuple the model returns (torchvision's GoogLeNetOutputs): defined again here.
            lines.append(f"{name} = collections.namedtuple({obj.__name__!r}, {list(obj._fields)!r})")
        else:
            module = getattr(obj, "__module__", "") or ""
            # The output container of a library's model (transformers' ModelOutput dataclasses)
            # is imported from that library: the outputs keep their type.
            container = obj is collections.OrderedDict or (isinstance(obj, type) and dataclasses.is_dataclass(obj))
            if not (module.split(".")[0] in _IMPORTABLE or container):
                raise ExportError(f"the forward calls {name} from {module or 'an unknown module'}; "
                                  "model.py may import only torch and torch_geometric")
            lines.append(f"from {module} import {obj.__qualname__} as {name}")
    return lines


def _layer_imports(init: list[str]) -> list[str]:
    """``import torch_geometric.nn`` when a layer is built from it (``torch_geometric.nn.GCNConv(...)``)."""
    return ["import torch_geometric.nn"] if any("torch_geometric.nn." in line for line in init) else []


def _spec_source(pruned: fx.GraphModule, suffix: str = "") -> list[str]:
    """``self._in_spec = ...`` lines for a forward that takes containers (fx's pytree code):
    its generated code flattens the arguments with them (one pair per mode, with `suffix`)."""
    info = getattr(pruned.graph._codegen, "pytree_info", None)
    if info is None:
        return []
    return [f"self.{name}{suffix} = pytree.treespec_loads({pytree.treespec_dumps(spec)!r})"
            for name, spec in (("_in_spec", info.in_spec), ("_out_spec", info.out_spec)) if spec is not None]


def _library_function(target) -> bool:
    """A function the graph calls that model.py cannot import (only torch and torch_geometric)."""
    if not callable(target) or isinstance(target, type) or getattr(builtins, getattr(target, "__name__", ""), None) is target:
        return False
    return (getattr(target, "__module__", "") or "").split(".")[0] not in _IMPORTABLE


def _class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"_+", re.sub(r"\W", "_", name)) if part) or "Part"


class _Writer:
    """The classes of model.py: the pruned model's, and one per module or library function it
    calls that has no constructor export knows (:mod:`lumos_fx.leaf_code`), written from their
    traced graphs; identical classes are written once."""

    def __init__(self) -> None:
        self.classes: dict[str, str] = {}  # class name -> definition, dependencies first
        self.imports: list[str] = []

    def write(self, name: str, graphs: list[fx.GraphModule], example: tuple | None, where: str) -> tuple[str, dict]:
        """Write class `name` whose forward runs `graphs` (one, or the train- and eval-mode
        graphs); returns the name it got and its state_dict. `example`: what its forward gets."""
        taken: set[str] = set()
        flat_of: dict[str, str] = {}
        init, state, methods, specs = [], {}, [], []
        for mode, gm in zip(("train", "eval") if len(graphs) == 2 else ("",), graphs):
            code = self._graph_code(gm, example, mode == "train", where, taken, flat_of, init, state)
            src = "\n".join(line for line in code.src.splitlines() if not line.startswith("torch.fx._symbolic_trace.wrap("))
            suffix = f"_{mode}" if mode else ""
            if mode:  # each mode's code reads its own input and output structure
                src = src.replace("def forward(", f"def _forward_{mode}(", 1)
                src = src.replace("self._in_spec", f"self._in_spec{suffix}").replace("self._out_spec", f"self._out_spec{suffix}")
            specs += _spec_source(gm, suffix)
            methods.append(textwrap.indent(src.strip("\n").rstrip(), " " * 4))
            self.imports += [line for line in _imports(code) if line not in self.imports]
        if len(graphs) == 2:
            methods.insert(0, "    def forward(self, *args, **kwargs):\n        # its code takes another path in train mode\n"
                              "        if self.training:\n            return self._forward_train(*args, **kwargs)\n"
                              "        return self._forward_eval(*args, **kwargs)")
        self.imports += [line for line in _layer_imports(init) if line not in self.imports]
        if specs and "import torch.utils._pytree as pytree" not in self.imports:
            self.imports.append("import torch.utils._pytree as pytree")
        body = textwrap.indent("\n".join(["super().__init__()"] + specs + init), " " * 8)
        methods_src = "\n\n".join(methods)

        def definition(class_name):
            return f"class {class_name}(nn.Module):\n    def __init__(self):\n{body}\n\n{methods_src}\n"

        for existing, text in self.classes.items():
            if text == definition(existing):
                return existing, state
        class_name, n = name, 1
        while class_name in self.classes:
            n += 1
            class_name = f"{name}{n}"
        self.classes[class_name] = definition(class_name)
        return class_name, state

    def _graph_code(self, gm, example, training, where, taken, flat_of, init, state):
        """fx's code for `gm` with every attribute and submodule written into `init` / `state`."""
        graph = fx.Graph()
        graph._codegen = gm.graph._codegen  # a forward taking containers keeps its signature (read only)
        env, pending = {}, []
        for node in gm.graph.nodes:
            new = graph.node_copy(node, env.__getitem__)
            env[node] = new
            new.type = None  # an annotation names the model's types (typing, jaxtyping, strings): model.py needs none
            if node.op == "call_function" and _library_function(node.target):
                pending.append((node, new))
            elif is_flag(node):
                new.target = "training"  # a module's flag, which follows the exported model's .train()/.eval()
            elif node.op in ("call_module", "get_attr"):
                if node.target not in flat_of:
                    flat_of[node.target] = _flat(node.target, taken)
                    module = gm.get_submodule(node.target) if node.op == "call_module" else None
                    source = self._source(node, module, gm) if module is not None else None
                    if source is None and module is not None:
                        pending.append((node, new))
                        continue
                    flat = flat_of[node.target]
                    if module is not None:
                        init.append(f"self.{flat} = {source}")
                        state.update({f"{flat}.{k}": v for k, v in module.state_dict().items()})
                    else:
                        owner, _, attr = node.target.rpartition(".")
                        tensor = getattr(gm.get_submodule(owner), attr)
                        if isinstance(tensor, nn.Parameter):
                            init.append(f"self.{flat} = nn.Parameter({_tensor_source(tensor)})")
                        else:
                            init.append(f"self.register_buffer({flat!r}, {_tensor_source(tensor)})")
                        state[flat] = tensor
                new.target = flat_of[node.target]
        if pending:
            self._write_out(gm, example, training, where, pending, taken, flat_of, init, state)
            for new in list(graph.nodes):  # a flag a written-out function took as its mode
                if is_flag(new) and not new.users:
                    graph.erase_node(new)
        return graph.python_code("self")

    @staticmethod
    def _source(node: fx.Node, module: nn.Module, gm: fx.GraphModule) -> str | None:
        try:
            return _module_source(node.target, module)
        except ExportError:
            return None

    def _write_out(self, gm, example, training, where, pending, taken, flat_of, init, state):
        """Classes for the module calls and library functions export has no constructor for,
        traced on what they get when `gm` runs on `example`."""
        if example is None:
            node = pending[0][0]
            raise ExportError(f"cannot write {describe(node, gm)} as Python source: the model holds no example "
                              "inputs to trace it on (export the model lumos_fx.prune() returned)")
        got = received(gm, example, {node.name for node, _ in pending}, training)
        for node, new in pending:
            if node.name not in got:
                raise ExportError(f"cannot write {describe(node, gm)} as Python source: the example inputs do not "
                                  "reach it, so it cannot be traced")
            args, kwargs = got[node.name]
            if node.op == "call_module":
                module = gm.get_submodule(node.target)
                rule = REGISTRY.module_rule(module)
                if rule is not None:
                    module = rule.traceable(module)
                name, values = type(module).__name__, args
                if kwargs:  # traced as a function is: the graph values in order, the constants kept
                    module = FunctionCall(module, node.args, node.kwargs)
                    values = tuple(pytree.tree_leaves((args, kwargs))[i] for i in module.slots)
                    new.args, new.kwargs = tuple(graph_values(new)), {}
                modes = traced(f"{where}{node.target}", module, values)
                flat = flat_of[node.target]
                graphs = [modes.train] if modes.eval is None else [modes.train, modes.eval]
            else:
                # A flag argument (stochastic_depth(x, p, mode, self.training)) gives the
                # class one path per mode; the other arguments come in as the call gives them.
                graphs, name = [], _class_name(node.target.__name__)
                flags = any(is_flag(v) for v in pytree.tree_leaves((node.args, node.kwargs)))
                for training in (True, False) if flags else (False,):
                    module = FunctionCall(node.target, *with_flag(node, training))
                    values = tuple(pytree.tree_leaves((args, kwargs))[i] for i in module.slots)
                    graphs.append(traced(f"{where}{node.name}", module, values).train)
                flat = flat_of.setdefault(("call", node.name), _flat(node.name, taken))
                new.op, new.target = "call_module", flat
                new.args, new.kwargs = tuple(v for v in graph_values(new) if not is_flag(v)), {}
            class_name, sub_state = self.write(_class_name(name), graphs, values, f"{where}{flat}.")
            init.append(f"self.{flat} = {class_name}()")
            state.update({f"{flat}.{k}": v for k, v in sub_state.items()})
            new.target = flat


def export(pruned: fx.GraphModule, path, *, overwrite: bool = False, formats=(), inductor_configs=None) -> Path:
    """Write ``model.py`` and ``weights.pt`` into the folder `path`; returns the folder.

    `formats` adds files other runtimes load (:mod:`lumos_fx.export_formats`), each checked
    against the pruned model at the example's and at another batch size: ``"pt2"``
    (``model.pt2``, a ``torch.export`` program: ``torch.export.load``), ``"onnx"``
    (``model.onnx``, checked with onnxruntime) and ``"aoti"`` (``model_aoti.pt2``, an
    AOTInductor package that C++ loads with ``torch::inductor::AOTIModelPackageLoader``).
    ``formats.json`` lists their dynamic dims. A format that cannot be written is named in an
    ExportError raised once the others are written. `inductor_configs` go to
    ``torch._inductor.aoti_compile_and_package`` for ``"aoti"``: Inductor compiles for the
    exporting CPU (``-march=native``) unless told otherwise, so a package for other machines
    takes, say, ``inductor_configs={"cpp.march": "x86-64-v2"}``.

    ``lumos_fx.load(path)`` (or ``import model; model.load()`` with only torch installed,
    and torch_geometric for a GNN) rebuilds the module. A folder that already holds a
    ``model.py`` is refused unless ``overwrite=True``. A module or library function that has
    no constructor export knows is written out as the torch code it runs (traced on the
    values it gets from the pruned model's example inputs), as a class of its own.
    """
    if not isinstance(pruned, fx.GraphModule):
        raise ExportError(f"export() takes the GraphModule returned by lumos_fx.prune(), got {type(pruned).__name__}")
    if "lumos" in pruned.meta:
        raise ExportError("export() takes a pruned model; call lumos_fx.prune(wrapped) first")
    folder = Path(path)
    if (folder / "model.py").exists() and not overwrite:
        raise ExportError(f"{folder} already holds a model (model.py); pass overwrite=True to replace it, "
                          "or export into another folder")

    if isinstance(formats, str):
        formats = (formats,)
    example = pruned.meta.get("lumos_example_inputs")
    if inductor_configs is not None and "aoti" not in formats:
        raise ExportError("export(inductor_configs=...) configures the AOTInductor package: add 'aoti' to formats")
    if inductor_configs is not None and not isinstance(inductor_configs, dict):
        raise ExportError(f"export(inductor_configs=...) takes a dict of Inductor settings such as "
                          f"{{'cpp.march': 'x86-64-v2'}}; got {type(inductor_configs).__name__}")
    if formats and example is None:
        raise ExportError("export formats need the pruned model's example inputs: export the model "
                          "lumos_fx.prune() returned")
    writer = _Writer()
    class_name = re.sub(r"\W", "_", pruned.meta.get("lumos_class_name", "PrunedModel"))
    class_name, state = writer.write(class_name, mode_graphs(pruned), example, "")
    kept = pprint.pformat(getattr(pruned, "kept_features", {}), width=100, compact=True)
    kept_idx = pprint.pformat(getattr(pruned, "kept_feature_indices", {}), width=100, compact=True)
    imports = writer.imports
    if any("collections.namedtuple(" in line for line in imports):
        imports.insert(0, "import collections")
    needs = "torch and torch_geometric" if any("torch_geometric" in line for line in imports) else "torch"
    *parts, main = writer.classes.values()
    parts_src = "".join(f"{part}\n\n" for part in parts)
    source = f'''"""{class_name}, pruned by lumos_fx. Its weights are in weights.pt next to this file.

Load it with only {needs} installed:
    import model; net = model.load()
"""
import os

import torch
from torch import nn
{chr(10).join(imports)}

# Input features the model reads, per input (by name and by index in the original input).
KEPT_FEATURES = {kept}
KEPT_FEATURE_INDICES = {kept_idx}


{parts_src}{main}

def load(weights=None, map_location="cpu"):
    """Build the model and load weights.pt (or `weights`)."""
    model = {class_name}()
    path = weights or os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.pt")
    model.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return model.eval()
'''
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(source)
    torch.save({k: v.detach().cpu() for k, v in state.items()}, folder / "weights.pt")
    if formats:
        write_formats(pruned, folder, tuple(formats), example, inductor_configs)
    return folder


def load(path, format: str | None = None):
    """Rebuild an exported model from its folder (imports its ``model.py``); with `format`
    (``"pt2"``, ``"onnx"``, ``"aoti"``), the file export(formats=...) wrote, as a callable
    (:func:`lumos_fx.export_formats.load_format`)."""
    folder = Path(path)
    if format is not None:
        return load_format(folder, format)
    source = folder / "model.py"
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: pass the folder lumos_fx.export() wrote")
    name = "lumos_export_" + hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder / "weights.pt")
