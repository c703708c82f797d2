"""The reference GNNs of models_zoo (OGB's Molhiv GIN/GINE and PPA GCN baselines, GAT): cut
at fixed fractions of closed gates, each computes what the gated model computes on other
graphs, and is smaller."""

import subprocess
import sys
import textwrap

import pytest
import torch
from support import count_params, max_rel_error

import lumos_fx
from models_zoo.graph.models import random_graphs, reference_models
from models_zoo.vision.gates import close_fraction

MODELS = reference_models(width=0.1)


@pytest.fixture(scope="module", params=sorted(MODELS))
def instrumented(request):
    model, kind = MODELS[request.param]
    torch.manual_seed(0)
    return request.param, model.eval(), lumos_fx.instrument(model, random_graphs(3, 0, kind=kind)), kind


def test_the_instrumented_model_computes_what_the_model_does(instrumented):
    _, model, wrapped, kind = instrumented
    batch = random_graphs(6, 3, kind=kind)
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*batch), model(*batch)) <= 1e-5


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_reference_gnn_cut_is_equivalent_and_smaller(instrumented, fraction):
    name, _, wrapped, kind = instrumented
    close_fraction(wrapped, fraction, seed=1)
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():  # fractional open gates, folded into weights
            gate.log_alpha.clamp_(max=0.5)
    pruned = lumos_fx.prune(wrapped)
    batch = random_graphs(7, 4, kind=kind)
    with torch.no_grad():
        assert max_rel_error(pruned(*batch), wrapped.eval()(*batch)) <= 1e-4
    summary = lumos_fx.summary(pruned)
    # A layer losing a fraction f on both sides keeps (1 - f)^2 of its weights; the output
    # layers lose it on their input side only.
    assert count_params(pruned) == summary.params_after < summary.params_before * (1 - fraction) ** 1.2, name
    assert summary.flops_after < summary.flops_before


def test_the_edge_features_and_every_hidden_width_have_gates():
    wrapped = lumos_fx.instrument(MODELS["ppa-gcn"][0], random_graphs(3, 0, kind="ppa"))
    gates = lumos_fx.gates(wrapped)
    assert gates["edge_attr"].n == 7 and {f"convs.{i}.linear" for i in range(5)} <= set(gates)
    gat = lumos_fx.instrument(MODELS["gat"][0], random_graphs(3, 0, kind="nodes"))
    assert {name: g.n for name, g in lumos_fx.gates(gat).items()} == {"x": 32, "convs.0": 8, "convs.1": 8}
    assert any("concat=False averages the heads" in r for r in lumos_fx.summary(gat).kept_whole.values())


def test_the_pruned_reference_gnns_load_in_a_fresh_process_without_lumos_fx(tmp_path):
    folders = {}
    for name, (model, kind) in reference_models(width=0.1).items():
        torch.manual_seed(0)
        wrapped = lumos_fx.instrument(model, random_graphs(3, 0, kind=kind))
        close_fraction(wrapped, 0.5, seed=2)
        pruned = lumos_fx.prune(wrapped)
        folders[name] = lumos_fx.export(pruned, tmp_path / name)
        source = (folders[name] / "model.py").read_text()
        assert "with only torch and torch_geometric installed" in source and "lumos_fx." not in source.replace("pruned by lumos_fx", "")
        batch = random_graphs(5, 9, kind=kind)
        with torch.no_grad():
            torch.save({"inputs": batch, "y": pruned(*batch)}, folders[name] / "io.pt")
    assert "torch_geometric.nn.GATConv(16, 1, heads=4, concat=True" in (folders["gat"] / "model.py").read_text()
    script = textwrap.dedent(f"""
        import importlib.util, sys, torch
        sys.modules["lumos_fx"] = None
        for name, folder in {({k: str(v) for k, v in folders.items()})!r}.items():
            spec = importlib.util.spec_from_file_location("model_" + name.replace("-", "_"), folder + "/model.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            net = module.load()
            io = torch.load(folder + "/io.pt", weights_only=True)
            with torch.no_grad():
                err = (net(*io["inputs"]) - io["y"]).abs().max().item()
            assert err < 1e-5, (name, err)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
