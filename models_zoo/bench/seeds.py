"""The benchmark's rows of several seeds as one per workload (or per workload and method):
every number as its mean over the seeds, with the sample standard deviation beside it,

.. math::
    \\bar v = \\frac{1}{n} \\sum_{s=1}^{n} v_s, \\qquad
    \\sigma_v = \\sqrt{\\frac{1}{n-1} \\sum_{s=1}^{n} (v_s - \\bar v)^2}

(``key`` and ``key_std``; 0 for one seed). Ratios (parameters cut, speedups) are taken per
seed first, so their spread is that of the ratio.
"""

from __future__ import annotations

import numbers
import statistics


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def combined(rows: list[dict], keys: tuple[str, ...] = ("workload",)) -> list[dict]:
    """One row per distinct `keys`, in first-seen order: numbers averaged (``_std`` beside
    them), flags true when true for every seed, ``seeds`` the seeds it holds, every other
    field the first seed's (lists of each seed's under ``<field>_by_seed``)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    out = []
    for group in groups.values():
        merged = dict(group[0])
        merged["seeds"] = [r.get("seed", 0) for r in group]
        for key, value in group[0].items():
            values = [r.get(key) for r in group]
            if key == "seed":
                continue
            if all(isinstance(v, bool) for v in values):  # a flag holds when it holds for every seed
                merged[key] = all(values)
            elif all(_number(v) for v in values):
                merged[key] = statistics.fmean(values)
                merged[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            elif isinstance(value, list):
                merged[f"{key}_by_seed"] = values
        out.append(merged)
    return out


def pm(row: dict, key: str, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    """``mean ± std`` of `key` in `row` formatted with `spec` (``mean`` alone for one seed)."""
    text = f"{row[key] * scale:{spec}}{suffix}"
    if len(row.get("seeds", ())) > 1:
        text += f" ± {row.get(f'{key}_std', 0.0) * scale:{spec}}{suffix}"
    return text
