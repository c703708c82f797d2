"""docs/rules.md is run by the suite.

Which blocks count, by their first line:

- a ```python block starting with ``# run: tutorial`` is executed; all of them in the
  document's order, in one namespace, so a later block uses what an earlier one defined (the
  tutorial's own asserts are the test). Each is compiled with docs/rules.md as its file name
  and its lines at their place in the document, so a failure points at the line of the doc;
- a ```python block starting with ``# excerpt: <path>`` must appear verbatim in that file
  (relative to the repository root): the rule the tutorial shows is the one that runs;
- any other ```python block is illustration only.

Besides, the contract section must name every hook of ``Rule`` / ``ModuleRule`` and every
call of the ``Connecting`` and ``Pruning`` handles in lumos_fx/rules/api.py, and the table of
rule files must list every file of lumos_fx/rules/.
"""

import re
from pathlib import Path

from lumos_fx.rules import api

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "rules.md"
RUN, EXCERPT = "# run: tutorial", "# excerpt: "
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    """(first line number of the code, code) of every python block of the document."""
    text = DOC.read_text()
    for m in _BLOCK.finditer(text):
        yield text.count("\n", 0, m.start(1)) + 1, m.group(1)


def _public(cls) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_tutorial_runs():
    runs = [(line, code) for line, code in _blocks() if code.startswith(RUN)]
    assert len(runs) >= 3, "the tutorial's runnable blocks are gone"
    namespace = {"__name__": "rules_tutorial"}
    for line, code in runs:
        # Blank lines in front keep the doc's line numbers in tracebacks.
        exec(compile("\n" * (line - 1) + code, str(DOC), "exec"), namespace)
    # The blocks defined and registered a rule, and pruned with it.
    assert "ScaleRule" in namespace and "pruned" in namespace


def test_excerpts_are_the_files_they_quote():
    excerpts = [code for _, code in _blocks() if code.startswith(EXCERPT)]
    assert excerpts, "the tutorial shows no rule file"
    for code in excerpts:
        first, _, body = code.partition("\n")
        path = ROOT / first[len(EXCERPT):].strip()
        assert body.strip() and body in path.read_text(), f"docs/rules.md quotes {path} as it no longer is"


def test_the_contract_section_names_every_hook_and_call():
    text = DOC.read_text()
    contract = text[text.index("### 3. The contract"):]
    hooks = (_public(api.Rule) | _public(api.ModuleRule)) - {"live"}
    calls = _public(api.Connecting) | _public(api.Pruning)
    missing = sorted(h for h in hooks if f"`{h}" not in contract)
    assert not missing, f"hooks not documented in docs/rules.md: {missing}"
    missing = sorted(c for c in calls if f"`an.{c}(" not in contract and f"`pc.{c}(" not in contract)
    assert not missing, f"handle calls not documented in docs/rules.md: {missing}"
    for name in ("Outcome", "LIVE", "EMPTY", "const(value)", "broadcast form", "register_rule"):
        assert name in contract


def test_the_table_lists_every_rule_file():
    text = DOC.read_text()
    table = text[: text.index("## Tutorial")]
    files = sorted(p.name for p in (ROOT / "lumos_fx" / "rules").glob("*.py"))
    missing = [f for f in files if f"| `{f}` |" not in table]
    assert not missing, f"rule files missing from the table of docs/rules.md: {missing}"
    listed = re.findall(r"^\| `([\w.]+\.py)` \|", table, re.M)
    gone = [f for f in listed if f not in files]
    assert not gone, f"docs/rules.md lists files that no longer exist: {gone}"
