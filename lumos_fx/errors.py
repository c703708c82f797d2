"""Errors a user of lumos_fx can get. Each message names the place and the fix."""

from __future__ import annotations

import os
import traceback

import torch


class LumosError(Exception):
    """Base class of every error lumos_fx raises on purpose."""


class TraceError(LumosError):
    """torch.fx could not trace the model."""


class InputError(LumosError):
    """The example inputs do not run through the model."""


class NotInstrumentedError(LumosError, TypeError):
    """A function that needs an instrumented (or pruned) model got something else."""


class GateError(LumosError):
    """A gate holds values prune() cannot turn into a mask (NaN or inf)."""


class PruneError(LumosError):
    """The pruned model would not compute what the gated model computes."""


class TrainingError(LumosError):
    """Training diverged: the task loss or a budget's multipliers became NaN or inf."""


class ExportError(LumosError):
    """The pruned model cannot be written as Python source, or in a format export() was asked for."""


# With the separator: torch_geometric's files are not torch's.
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_LUMOS_DIR = os.path.dirname(__file__) + os.sep


def is_library_file(filename: str) -> bool:
    return filename.startswith(_TORCH_DIR) or filename.startswith(_LUMOS_DIR)


def user_frame_of_traceback(tb) -> traceback.FrameSummary | None:
    """The innermost frame of `tb` that lies in the user's code (not torch, not lumos_fx)."""
    frames = [f for f in traceback.extract_tb(tb) if not is_library_file(f.filename)]
    return frames[-1] if frames else None


def user_line_of_stack_trace(stack_trace: str | None) -> str | None:
    """`file:line: code` of the innermost user frame in an fx node's recorded stack trace
    (the line that made the op, not the forward that called a helper that did)."""
    if not stack_trace:
        return None
    lines = stack_trace.strip().splitlines()
    found = None
    for i, line in enumerate(lines):
        line = line.strip()
        if not line.startswith("File "):
            continue
        filename = line.split('"')[1]
        if is_library_file(filename):
            continue
        lineno = line.split(", line ")[1].split(",")[0]
        code = lines[i + 1].strip() if i + 1 < len(lines) else ""
        code = "" if code.startswith("File ") else code  # no source (a frame of <stdin>)
        found = f"{filename}:{lineno}: {code}"
    return found


def describe_frame(frame: traceback.FrameSummary) -> str:
    return f"{frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
