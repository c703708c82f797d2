"""Stage 5 for other runtimes: the pruned model as a ``torch.export`` program, ONNX, and an
AOTInductor package, each checked against the pruned model when it is written.

All three come from one :func:`torch.export.export` of the pruned model in eval mode. Every
dim of every input is exported as ``Dim.AUTO`` except the feature dims (their sizes are the
kept columns the weights were cut to): torch.export keeps a dim dynamic unless the program
ties it to a size, so a guard of :mod:`lumos_fx.guards` (a fixed spatial size) becomes a
static dim, and so does a dim of size 1 (torch.export specialises those).

The batch is dim 0 of the first tensor input and, along with it, of every input whose dim 0
has that size (a graph's node features and its ``batch`` vector grow together). Inputs with
other batch sizes (1 and the example's + 3) are made by repeating the example's rows cyclically,

.. math::
    x'_i = x_{i \\bmod B}, \\qquad i = 0, \\dots, B' - 1,

which keeps every index an input holds (``edge_index``) valid. A batch the program keeps
dynamic is exported once more from 1 up (``Dim.AUTO`` starts at 2, as torch.export assumes a
dynamic size is never 0 or 1; a simulation code calls a surrogate one cell at a time). Each
format is run on the example and on those inputs and must match the pruned model to the
prune tolerance. A model that does not run at another batch size, or whose program ties the
batch to one size, is exported with the example's batch, and ``formats.json`` says so.

``formats.json`` lists each input's shape and its dynamic dims, and each format's file, the
batch sizes it was checked at and its largest difference, or why it could not be written.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import fx
from torch.export import Dim
from torch.fx.experimental import _config as fx_config
from torch.utils import _pytree as pytree

from .errors import ExportError
from .fxutil import describe
from .input_columns import InputColumns
from .verify import eval_mode, output_error, run_quietly, within_tolerance

FILES = {"pt2": "model.pt2", "onnx": "model.onnx", "aoti": "model_aoti.pt2"}
MANIFEST = "formats.json"
_ONNX_EXTRA = "pip install 'lumos_fx[onnx]' (onnx, onnxscript and onnxruntime)"


@dataclass(frozen=True)
class InputShape:
    """One tensor input of the exported program: its shape at the example and the dims it
    takes at any size."""

    name: str
    shape: tuple[int, ...]
    dynamic: tuple[int, ...]


@dataclass(frozen=True)
class Written:
    """A format written and checked: the batch sizes it ran at and its largest difference from
    the pruned model there."""

    format: str
    file: str
    batch_sizes: tuple[int, ...]
    max_error: float


def _tensors(tree) -> list[torch.Tensor]:
    return [v for v in pytree.tree_leaves(tree) if isinstance(v, torch.Tensor)]


def _batch_size(example: tuple) -> int | None:
    tensors = [t for t in _tensors(example) if t.dim() >= 1]
    return tensors[0].shape[0] if tensors else None


def _batched(example: tuple, n: int) -> tuple:
    """`example` with the batch (dim 0 of every input whose dim 0 has the first input's size)
    grown or cut to `n`, its rows repeated cyclically."""
    batch = _batch_size(example)
    rows = torch.arange(n) % batch

    def grow(v):
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == batch:
            return v[rows.to(v.device)]
        return v

    return pytree.tree_map(grow, example)


def _dynamic_shapes(example: tuple, columns: list[InputColumns], dynamic: bool, batch=None):
    """``dynamic_shapes`` for torch.export: ``Dim.AUTO`` on every dim but the feature dims;
    `batch` (a :class:`torch.export.Dim`) on dim 0 of the inputs that hold the batch."""
    features = {col.path: col.dim for col in columns if col.path is not None}
    size = _batch_size(example)
    paths, spec = pytree.tree_flatten_with_path(example)
    specs = []
    for p, v in paths:
        if not (dynamic and isinstance(v, torch.Tensor)):
            specs.append(None)
            continue
        feature = features.get(tuple(p))
        fixed = None if feature is None else feature % v.dim()
        dims = {d: Dim.AUTO for d in range(v.dim()) if d != fixed}
        if batch is not None and v.dim() >= 1 and v.shape[0] == size:
            dims[0] = batch
        specs.append(dims)
    return pytree.tree_unflatten(specs, spec)


def _runs(pruned: fx.GraphModule, inputs: tuple):
    """The pruned model's outputs on `inputs`, or None where it does not run on them."""
    with contextlib.redirect_stderr(io.StringIO()):  # fx prints the failing line of a refused input
        try:
            return run_quietly(pruned, inputs)
        except Exception:
            return None


def _plain(exc: BaseException) -> str:
    """`exc`'s message without terminal colours (the ONNX exporter colours its messages)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc))


def _first_line(exc: BaseException) -> str:
    return (_plain(exc).strip().splitlines() or [type(exc).__name__])[0]


def _failing_op(exc: BaseException) -> str:
    """The node of the pruned graph that was running when `exc` was raised (torch.export runs
    the graph in an :class:`torch.fx.Interpreter`), and the error's first line."""
    for error in (exc, exc.__cause__, exc.__context__):
        if error is None:
            continue
        for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
            node, interpreter = frame.f_locals.get("n"), frame.f_locals.get("self")
            if isinstance(node, fx.Node) and isinstance(interpreter, fx.Interpreter):
                return f"{describe(node, interpreter.module)} ({_first_line(exc)})"
    return _first_line(exc)


def _export(pruned: fx.GraphModule, example: tuple, columns, dynamic: bool, batch=None) -> torch.export.ExportedProgram:
    try:
        # torch.export logs the whole graph of a failed trace: the error says what failed.
        with eval_mode(pruned), torch.no_grad(), _quiet("torch"), contextlib.redirect_stderr(io.StringIO()):
            return torch.export.export(pruned, example,
                                       dynamic_shapes=_dynamic_shapes(example, columns, dynamic, batch))
    except Exception as exc:
        hint = (" (a size computed from the input's values, which these formats cannot take; give it as an "
                "argument where the model accepts one)" if "data-dependent" in str(exc) else "")
        raise ExportError(f"torch.export cannot express {_failing_op(exc)}{hint}") from exc


def _input_shapes(program: torch.export.ExportedProgram) -> list[InputShape]:
    """Each tensor input's example shape and the dims whose range is more than one size."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    ranges = program.range_constraints
    shapes = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            continue
        sizes, dynamic = [], []
        for d, size in enumerate(value.shape):
            if isinstance(size, torch.SymInt):
                sizes.append(size.node.hint)
                if any(ranges[s].lower != ranges[s].upper for s in size.node.expr.free_symbols if s in ranges):
                    dynamic.append(d)
            else:
                sizes.append(int(size))
        shapes.append(InputShape(name, tuple(sizes), tuple(dynamic)))
    return shapes


def _write_pt2(program, path: Path) -> None:
    torch.export.save(program, path)


def _write_aoti(program, path: Path, inductor_configs=None) -> None:
    with _quiet("torch._inductor"):
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=inductor_configs)


def _write_onnx(program, path: Path) -> None:
    try:
        import onnxruntime  # noqa: F401  (the check runs the file)
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ExportError(f"ONNX needs {exc.name}: {_ONNX_EXTRA}") from exc
    with _quiet("torch.onnx"), contextlib.redirect_stdout(io.StringIO()):
        try:
            torch.onnx.export(program, dynamo=True, verbose=False).save(str(path))
        except Exception as exc:
            raise ExportError(f"ONNX cannot express this model: {_onnx_cause(exc)}") from exc


def _onnx_cause(exc: BaseException) -> str:
    """The exporter's own summary of a failure: the exception and the aten op it ran."""
    text = _plain(exc)
    cause = re.search(r"^<class '[\w.]+'>: (.+)$", text, re.M)
    op = re.search(r"While executing %\w+ : .*?target=([\w.]+)", text)
    if cause is None:
        return _first_line(exc)
    return f"{op.group(1)}: {cause.group(1)}" if op else cause.group(1)


def _onnx_session(path: Path):
    """``model.onnx`` run by onnxruntime: tensors in, the output tensors (flat) out."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*args):
        outs = session.run(None, dict(zip(names, (t.detach().cpu().numpy() for t in _tensors(args)))))
        return [torch.from_numpy(o) for o in outs]

    return run


_WRITERS = {"pt2": _write_pt2, "onnx": _write_onnx, "aoti": _write_aoti}
_LOADERS = {"pt2": lambda path: torch.export.load(path).module(), "onnx": _onnx_session,
            "aoti": lambda path: torch._inductor.aoti_load_package(str(path))}


def load_format(folder, fmt: str):
    """The file export(formats=...) wrote for `fmt` into `folder`, as a callable: the
    ExportedProgram's module (``pt2``), an onnxruntime session taking tensors and returning
    the output tensors flat (``onnx``), the AOTInductor package (``aoti``)."""
    if fmt not in _LOADERS:
        raise ExportError(f"unknown export format {fmt!r}; choose among {sorted(_LOADERS)}")
    path = Path(folder) / FILES[fmt]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: export(pruned, folder, formats=({fmt!r},)) writes it")
    return _LOADERS[fmt](path)


@contextlib.contextmanager
def _quiet(prefix: str):
    """The loggers under `prefix` silenced for the block (torch sets levels per logger)."""
    logs = [logging.getLogger(prefix)] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                                          if name.startswith(prefix + ".")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _check(fmt: str, run, checks: list[tuple[tuple, object]]) -> tuple[tuple[int, ...], float]:
    """Run a written format on every check input; its largest difference from the pruned model."""
    worst, sizes = 0.0, []
    for inputs, reference in checks:
        try:
            got = run(*inputs)
        except Exception as exc:
            raise ExportError(f"the {fmt} file does not run at batch size {_batch_size(inputs)}: "
                              f"{_first_line(exc)}") from exc
        if fmt == "onnx":  # onnxruntime returns the output tensors flat
            leaves, spec = pytree.tree_flatten(reference)
            got = pytree.tree_unflatten(got, spec) if len(got) == len(leaves) else got
        err, scale = output_error(reference, got)
        if not within_tolerance(err, scale):
            raise ExportError(f"the {fmt} file differs from the pruned model by {err:.3g} (output scale "
                              f"{scale:.3g}) at batch size {_batch_size(inputs)}; this is a bug, please report it")
        worst, sizes = max(worst, err), sizes + [_batch_size(inputs)]
    return tuple(sizes), worst


def _from_one(pruned: fx.GraphModule, base: tuple, columns, one: tuple) -> torch.export.ExportedProgram | None:
    """The program exported with a batch from 1 up, or None where torch.export cannot, or its
    guards refuse the batch of 1 `one`."""
    try:
        with fx_config.patch(backed_size_oblivious=True):
            program = _export(pruned, base, columns, dynamic=True, batch=Dim("batch", min=1))
        with contextlib.redirect_stderr(io.StringIO()):  # a GraphModule prints the line of a failed guard
            program.module()(*one)
    except Exception:
        return None
    return program


def _programs(pruned: fx.GraphModule, example: tuple, columns) -> tuple[torch.export.ExportedProgram, list, str]:
    """The exported program, the inputs to check it on with the pruned model's outputs, and
    what it does with the batch."""
    batch = _batch_size(example)
    # torch.export fixes a dim of size 1: a batch of 1 is exported at 2 (and checked at 1).
    base = _batched(example, 2) if batch == 1 else example
    others = [_batched(base, n) for n in (1, _batch_size(base) + 3)] if batch else []
    checks = [(inputs, out) for inputs in others for out in [_runs(pruned, inputs)] if out is not None]
    if not checks:
        why = "no input has a batch" if batch is None else "the pruned model does not run at another batch size"
        return _export(pruned, example, columns, dynamic=False), [(example, run_quietly(pruned, example))], why
    program = _export(pruned, base, columns, dynamic=True)
    batched = [s for s in _input_shapes(program) if s.shape and s.shape[0] == _batch_size(base)]
    if all(0 in s.dynamic for s in batched):
        # Dim.AUTO's range starts at 2 (torch.export assumes a dynamic size is never 0 or 1),
        # and an AOTInductor package that checks its inputs refuses a batch of 1. Exported
        # again without that assumption, the batch's range starts at 1, unless the program's
        # own guards still assume more (timm's convnext_atto: x.size()[0] > 1).
        ones = [inputs for inputs, _ in checks if _batch_size(inputs) == 1]
        from_one = _from_one(pruned, base, columns, ones[0]) if ones else None
        if from_one is None:
            above_one = [(inputs, out) for inputs, out in checks if _batch_size(inputs) != 1]
            return program, [(base, run_quietly(pruned, base))] + above_one, "dynamic, 2 or more"
        return from_one, [(base, run_quietly(pruned, base))] + checks, "dynamic"
    why = f"torch.export fixed it: the program's code ties it to {_batch_size(base)}"
    if base is not example:
        program = _export(pruned, example, columns, dynamic=True)
    return program, [(example, run_quietly(pruned, example))], why


def write_formats(pruned: fx.GraphModule, folder: Path, formats, example: tuple, inductor_configs=None) -> None:
    """Write every format of `formats` into `folder` and ``formats.json`` beside them (the
    AOTInductor package compiled with `inductor_configs`). A format that cannot be written is
    listed in one ExportError raised after the others are written."""
    unknown = [f for f in formats if f not in _WRITERS]
    if unknown:
        raise ExportError(f"unknown export formats {unknown}; choose among {sorted(_WRITERS)}")
    writers = {**_WRITERS, "aoti": functools.partial(_write_aoti, inductor_configs=inductor_configs)}
    manifest: dict = {"inputs": [], "batch": None, "formats": {}}
    written, failures = {}, {}
    try:
        program, checks, manifest["batch"] = _programs(pruned, example, pruned.meta.get("lumos_columns", []))
    except ExportError as exc:
        failures = dict.fromkeys(formats, str(exc))
    else:
        manifest["inputs"] = [asdict(s) for s in _input_shapes(program)]
        for fmt in formats:
            path = folder / FILES[fmt]
            try:
                writers[fmt](program, path)
                sizes, err = _check(fmt, load_format(folder, fmt), checks)
            except Exception as exc:  # a compiler or serialiser failure is one format's failure too
                failures[fmt] = str(exc) if isinstance(exc, ExportError) else (
                    f"writing {FILES[fmt]} failed: {type(exc).__name__}: {_first_line(exc)}")
                path.unlink(missing_ok=True)
                continue
            written[fmt] = Written(fmt, FILES[fmt], sizes, err)
    manifest["formats"] = {f: asdict(w) for f, w in written.items()} | {f: {"error": e} for f, e in failures.items()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if failures:
        reasons = {}  # formats that failed for one reason (torch.export's) are named together
        for fmt, why in failures.items():
            reasons.setdefault(why, []).append(fmt)
        raise ExportError("; ".join(f"{', '.join(fmts)}: {why}" for why, fmts in reasons.items())
                          + f" (written: model.py, weights.pt{''.join(', ' + FILES[f] for f in written)})")
