"""Config(distill=...): the gated model learns a teacher's outputs, by the formulas the
docstring gives, and the user's models stay as they were."""

import copy

import pytest
import torch
from torch import nn

import lumos_fx
from lumos_fx.errors import InputError
from lumos_fx.plan import plan_of


def _mlp(seed=0, outputs=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, outputs))


def test_the_default_teacher_is_a_frozen_copy_of_the_model_as_instrumented():
    model, x = _mlp(), torch.randn(8, 5)
    before = copy.deepcopy(model.state_dict())
    wrapped = lumos_fx.instrument(model, (x,), config=lumos_fx.Config(gate_warmup=5, distill=lumos_fx.Distill()))
    teacher = plan_of(wrapped).config.distill.teacher
    assert teacher is not model and not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    wrapped.train()
    out = wrapped(x)  # a warm-up step: the gates are held open, the student is the teacher
    assert lumos_fx.distill_loss(wrapped, (x,), out).item() == 0.0
    opt = torch.optim.Adam(lumos_fx.param_groups(wrapped, 1e-2))
    for _ in range(20):
        out = wrapped(x)
        loss = out.pow(2).mean() + lumos_fx.distill_loss(wrapped, (x,), out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_mse_and_kl_are_the_formulas_of_the_docstring():
    x = torch.randn(8, 5)
    teacher = _mlp(seed=1)
    for loss, temperature in (("mse", 1.0), ("kl", 2.5)):
        wrapped = lumos_fx.instrument(_mlp(), (x,), config=lumos_fx.Config(
            distill=lumos_fx.Distill(teacher=teacher, weight=0.7, loss=loss, temperature=temperature)))
        out = wrapped.eval()(x)
        t = teacher(x).detach()
        if loss == "mse":
            expected = 0.7 * ((out - t) ** 2).mean()
        else:
            p_t = torch.softmax(t / temperature, 1)
            log_s = torch.log_softmax(out / temperature, 1)
            expected = 0.7 * temperature ** 2 * (p_t * (p_t.log() - log_s)).sum(1).mean()
        assert lumos_fx.distill_loss(wrapped, (x,), out).item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_callable_loss_gets_the_two_outputs():
    x, teacher = torch.randn(8, 5), _mlp(seed=1)
    seen = []

    def loss(student, taught):
        seen.append((student.shape, taught.requires_grad))
        return (student - taught).abs().mean()
    wrapped = lumos_fx.instrument(_mlp(), (x,), config=lumos_fx.Config(
        distill=lumos_fx.Distill(teacher=teacher, weight=2.0, loss=loss)))
    out = wrapped.eval()(x)
    assert lumos_fx.distill_loss(wrapped, (x,), out).item() == pytest.approx(
        2.0 * (out - teacher(x)).abs().mean().item(), rel=1e-6)
    assert seen == [(torch.Size([8, 3]), False)]


def test_distillation_pulls_a_pruned_student_toward_its_teacher():
    torch.manual_seed(0)
    x = torch.randn(256, 5)
    teacher = _mlp(seed=3)
    y = torch.randn(256, 3)  # targets unrelated to the teacher: only the distillation term knows it

    def train(weight):
        wrapped = lumos_fx.instrument(_mlp(), (x[:4],), config=lumos_fx.Config(
            target_params=0.5, budget_warmup=30, distill=lumos_fx.Distill(teacher=teacher, weight=weight)))
        lumos_fx.fit(wrapped, [(x, y)] * 10, nn.functional.mse_loss, epochs=10, lr=1e-2, finetune=0.3,
                     progress=False)
        return nn.functional.mse_loss(lumos_fx.prune(wrapped)(x), teacher(x)).item()
    assert train(10.0) < 0.5 * train(0.0)


def test_bad_settings_and_a_model_without_teacher_are_refused_by_name():
    x = torch.randn(8, 5)
    with pytest.raises(TypeError, match="Config.distill"):
        lumos_fx.Config(distill="dense")
    with pytest.raises(ValueError, match="Distill.weight"):
        lumos_fx.Distill(weight=-1.0)
    with pytest.raises(ValueError, match="Distill.temperature"):
        lumos_fx.Distill(temperature=0)
    with pytest.raises(ValueError, match="Distill.loss"):
        lumos_fx.Distill(loss="cross_entropy")
    with pytest.raises(TypeError, match="Distill.teacher"):
        lumos_fx.Distill(teacher=lambda v: v)
    plain = lumos_fx.instrument(_mlp(), (x,))
    with pytest.raises(InputError, match=r"Config\(distill="):
        lumos_fx.distill_loss(plain, (x,), plain(x))
    other = lumos_fx.instrument(_mlp(), (x,), config=lumos_fx.Config(distill=lumos_fx.Distill(teacher=_mlp(outputs=2))))
    with pytest.raises(InputError, match=r"do not pair"):
        lumos_fx.distill_loss(other, (x,), other(x))
    flat = lumos_fx.instrument(nn.Sequential(nn.Linear(5, 1), nn.Flatten(0)), (x,),
                               config=lumos_fx.Config(distill=lumos_fx.Distill(loss="kl")))
    with pytest.raises(InputError, match="classes along dim 1"):
        lumos_fx.distill_loss(flat, (x,), flat(x))
