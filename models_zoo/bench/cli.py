"""The options every benchmark command shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..registry import NAMES


def parser(description: str, workloads: list[str]) -> argparse.ArgumentParser:
    """``--workloads`` (default `workloads`), ``--scale``, ``--out`` and ``--seed``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workloads", nargs="+", choices=NAMES, default=workloads)
    p.add_argument("--scale", choices=("smoke", "cpu", "gpu"), default="cpu")
    p.add_argument("--out", default="results")
    p.add_argument("--seed", type=int, default=0)
    return p


def out_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
