"""torch.compile of an instrumented model: it trains as the eager one does, with no
recompilation per step, and lumos_fx's functions take it (and DataParallel's wrapper) for
the model inside."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import lumos_fx

# A fresh interpreter: what broke compile was torch._dynamo first imported while instrument()
# traced (fx's node records import it), which a test process that imported it earlier hides.
_SCRIPT = textwrap.dedent("""
    import copy
    import torch
    from torch import nn
    import lumos_fx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16),
                          nn.ReLU(), nn.Linear(16, 2))
    x, y = torch.randn(4, 3, 6, 6), torch.randn(4, 2)
    eager = lumos_fx.instrument(model, (x,)).train()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager")
    torch._dynamo.config.error_on_recompile = True
    opts = [torch.optim.Adam(lumos_fx.param_groups(m, 1e-2)) for m in (eager, compiled)]
    for step in range(4):
        losses = []
        for m, opt in ((eager, opts[0]), (compiled, opts[1])):
            loss = nn.functional.mse_loss(m(x), y) + lumos_fx.complexity_loss(m)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) < 1e-5, (step, losses)
    for (name, a), b in zip(eager.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    x2 = torch.randn(7, 3, 6, 6)
    assert torch.allclose(lumos_fx.prune(compiled)(x2), lumos_fx.prune(eager)(x2), atol=1e-5)
    print("ok")
""")


def test_a_compiled_instrumented_model_trains_as_the_eager_one_without_recompiling():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def _instrumented():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))
    return lumos_fx.instrument(model, (torch.randn(8, 5),))


@pytest.mark.parametrize("wrap", [lambda w: torch.compile(w, backend="eager"), nn.DataParallel],
                         ids=["compile", "DataParallel"])
def test_the_functions_act_on_the_instrumented_model_inside_a_wrapper(wrap):
    wrapped = _instrumented()
    outer = wrap(wrapped)
    assert lumos_fx.gates(outer) == lumos_fx.gates(wrapped)
    assert [g["params"] for g in lumos_fx.param_groups(outer, 1e-3)] == \
        [g["params"] for g in lumos_fx.param_groups(wrapped, 1e-3)]
    assert torch.equal(lumos_fx.complexity_loss(outer), lumos_fx.complexity_loss(wrapped))
    assert torch.equal(lumos_fx.expected_kept(outer), lumos_fx.expected_kept(wrapped))
    assert str(lumos_fx.summary(outer)) == str(lumos_fx.summary(wrapped))
    x = torch.randn(3, 5)
    assert torch.equal(lumos_fx.prune(outer)(x), lumos_fx.prune(wrapped)(x))


def test_fit_trains_a_compiled_model_as_the_model_itself(tmp_path):
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    eager, twin = _instrumented(), _instrumented()
    runs = [lumos_fx.fit(m, batches, nn.functional.mse_loss, epochs=2, progress=False, checkpoint=tmp_path / name)
            for m, name in ((eager, "eager.pt"), (torch.compile(twin, backend="eager"), "compiled.pt"))]
    for a, b in zip(*runs):
        assert a == pytest.approx(b)
    assert torch.load(tmp_path / "compiled.pt", weights_only=False)["model"].keys() == eager.state_dict().keys()
