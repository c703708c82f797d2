"""Data-parallel training: `torchrun --nproc_per_node 2` (gloo, CPU) trains an instrumented
zoo model to the same pruned model as one process on the whole batch, its last steps with the
gates frozen (which DDP, waiting for a gradient of every parameter, must still get), and the
gate noise is the same on every rank."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import lumos_fx
from models_zoo.__main__ import main

ARGS = ["train", "cfd", "--scale", "smoke", "--steps", "40", "--seed", "3", "--target", "0.3", "--finetune", "0.25"]


def test_gate_noise_is_seeded_per_step_not_by_the_global_rng():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    a, b = (lumos_fx.instrument(model, (torch.randn(2, 4),)).train() for _ in range(2))
    torch.manual_seed(0)
    first = [g() for g in lumos_fx.gates(a).values()]
    torch.manual_seed(1)  # another rank's global RNG
    assert all(torch.equal(x, g()) for x, g in zip(first, lumos_fx.gates(b).values()))
    second = [g() for g in lumos_fx.gates(a).values()]
    assert not any(torch.equal(x, y) for x, y in zip(first, second))  # the next step draws anew
    resumed = lumos_fx.instrument(model, (torch.randn(2, 4),)).train()
    resumed.load_state_dict(a.state_dict())  # the draw count travels with the state dict
    assert all(torch.equal(g(), h()) for g, h in zip(lumos_fx.gates(resumed).values(), lumos_fx.gates(a).values()))


def test_the_gate_bank_draws_one_seeded_noise_vector_per_step():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    a, b = (lumos_fx.instrument(model, (torch.randn(2, 4),)).train() for _ in range(2))
    torch.manual_seed(0)
    first = a.lumos_gates()
    torch.manual_seed(1)
    assert all(torch.equal(x, y) for x, y in zip(first, b.lumos_gates()))
    second = a.lumos_gates()
    assert not any(torch.equal(x, y) for x, y in zip(first, second))
    assert all(g.draws == 2 for g in lumos_fx.gates(a).values())
    resumed = lumos_fx.instrument(model, (torch.randn(2, 4),)).train()
    resumed.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(resumed.lumos_gates(), a.lumos_gates()))
    u = torch.empty(sum(g.n for g in lumos_fx.gates(a).values())).uniform_(
        1e-6, 1 - 1e-6, generator=torch.Generator().manual_seed(hash((0, 3)) & (2 ** 63 - 1)))
    la = torch.cat([g.log_alpha for g in lumos_fx.gates(a).values()]).detach()
    want = torch.clamp(torch.sigmoid((torch.logit(u) + la) * 1.5) * 1.2 - 0.1, 0, 1)
    torch.testing.assert_close(torch.cat(a.lumos_gates()), want)  # draw 3: one vector over all gates


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None
                    and shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_gloo_processes_prune_to_the_model_one_process_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMOS_DATA", str(tmp_path / "data"))
    single = main([*ARGS, "--out", str(tmp_path / "single")])
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    env = {**os.environ, "LUMOS_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "models_zoo", *ARGS,
                          "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = lumos_fx.load(tmp_path / "single" / "model"), lumos_fx.load(tmp_path / "ddp" / "model")
    a, b = one.state_dict(), two.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
    assert 0 < single["params_pruned"] < single["params_dense"]
