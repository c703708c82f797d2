"""benchmarks.deploy, end to end at a tiny size: both models exported for onnxruntime and
AOTInductor, the C++ driver built and timed, one row per runtime and batch in deploy.md."""

import math
import shutil

import pytest

from benchmarks import cpp_driver


def test_the_deploy_bench_times_every_runtime_and_writes_its_table(tmp_path):
    if shutil.which("cmake") is None or cpp_driver.compiler() is None:
        pytest.skip("the deploy bench builds examples/cpp: it needs cmake and a C++ compiler")
    pytest.importorskip("onnxruntime")
    from benchmarks.deploy import main

    rows = main(["--workloads", "cfd", "--batches", "1", "7", "--repeats", "2", "--steps", "30",
                 "--out", str(tmp_path)])
    runtimes = ("eager", "compile", "aoti", "c++", "onnxruntime")
    assert [(r["batch"], r["runtime"]) for r in rows] == [(b, rt) for b in (1, 7) for rt in runtimes]
    assert all(math.isfinite(r["speedup"]) and r["speedup"] > 0 and r["flop_ratio"] > 1 for r in rows)
    table = (tmp_path / "deploy.md").read_text()
    assert "| cfd | 7 | c++ |" in table and (tmp_path / "deploy.json").exists()
