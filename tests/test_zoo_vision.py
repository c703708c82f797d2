"""The reference CNNs of models_zoo: every gate setting cuts them to a model that computes
what the gated model computes."""

import pytest
import torch

import lumos_fx
from models_zoo.vision.gates import close_fraction
from models_zoo.vision.models import reference_models
from support import count_params, max_rel_error

MODELS = reference_models(width=0.25, size=32)


@pytest.fixture(scope="module", params=sorted(MODELS))
def instrumented(request):
    model, shape = MODELS[request.param]
    torch.manual_seed(0)
    return request.param, lumos_fx.instrument(model, (torch.randn(2, *shape),)), shape


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_reference_model_cut_is_equivalent_and_smaller(instrumented, fraction):
    name, wrapped, shape = instrumented
    close_fraction(wrapped, fraction, seed=1)
    pruned = lumos_fx.prune(wrapped)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        ref, out = wrapped.eval()(x), pruned(x)
    assert out.shape == ref.shape
    assert max_rel_error(out, ref) <= 1e-4
    summary = lumos_fx.summary(pruned)
    before, after = summary.params_before, count_params(pruned)
    assert after == summary.params_after
    # Roughly (1 - f)^2 of a conv's weights survive when both its sides lose a fraction f.
    assert after < before * (1 - fraction) ** 1.5, (name, before, after)
    assert summary.flops_after < summary.flops_before
    # The model's answer (classes, regression targets, pixels) keeps every channel.
    # So does a one-channel input: closing it would leave a model that ignores its input.
    whole = dict(summary.kept_whole)
    if shape[0] == 1:
        assert "its one channel carries every path" in whole.pop("x")
    assert len(whole) == 1 and "reaches the model output" in next(iter(whole.values()))
