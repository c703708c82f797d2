"""lumos_fx.fit: a trainer that learns, reaches a budget, and resumes exactly."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lumos_fx


def problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(512, 6)
    y = (x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3]))
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    return model, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True), x


def test_fit_learns_and_reports_each_epoch():
    model, loader, x = problem()
    wrapped = lumos_fx.instrument(model, (x[:4],), config=lumos_fx.Config(lam=0.1))
    history = lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=20, lr=3e-3, progress=False)
    assert [h["epoch"] for h in history] == list(range(1, 21))
    assert history[-1]["loss"] < history[0]["loss"] / 2
    assert history[-1]["kept"] < history[0]["kept"]
    assert not wrapped.training


def test_fit_with_a_target_reaches_the_budget():
    model, loader, x = problem()
    wrapped = lumos_fx.instrument(model, (x[:4],))
    lumos_fx.fit(wrapped, loader, nn.functional.mse_loss, epochs=40, lr=3e-3, target=0.3, progress=False)
    assert lumos_fx.expected_alive(wrapped)[0].item() / lumos_fx.expected_alive(wrapped)[1] == pytest.approx(
        0.3, abs=0.05)
    assert lumos_fx.summary(lumos_fx.prune(wrapped)).budget.after == pytest.approx(0.3, abs=0.011)


@pytest.mark.parametrize("finetune", [0.0, 0.5])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, finetune):
    model, loader, x = problem()
    epochs = 4
    whole = lumos_fx.instrument(model, (x[:4],))
    torch.manual_seed(7)  # the loader shuffles with the global RNG
    lumos_fx.fit(whole, loader, nn.functional.mse_loss, epochs=epochs, target=0.5, checkpoint=tmp_path / "a.pt",
                 progress=False, finetune=finetune)

    calls = {"n": 0}

    def crashing(pred, y):
        calls["n"] += 1
        if calls["n"] == 3 * len(loader) + 3:  # in the last epoch, inside the fine-tune
            raise KeyboardInterrupt
        return nn.functional.mse_loss(pred, y)

    first = lumos_fx.instrument(model, (x[:4],))
    torch.manual_seed(7)
    with pytest.raises(KeyboardInterrupt):
        lumos_fx.fit(first, loader, crashing, epochs=epochs, target=0.5, checkpoint=tmp_path / "b.pt",
                     progress=False, finetune=finetune)
    torch.manual_seed(123)  # a new process: another global RNG state, fresh gates
    again = lumos_fx.instrument(model, (x[:4],))
    history = lumos_fx.fit(again, loader, nn.functional.mse_loss, epochs=epochs, target=0.5,
                           checkpoint=tmp_path / "b.pt", progress=False, finetune=finetune)
    assert len(history) == epochs
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name
    # resumed frozen, the gates stay in the graph for DDP as the uninterrupted run's do
    assert again.lumos_gates.frozen_in_graph == whole.lumos_gates.frozen_in_graph == (finetune > 0)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, 16), nn.Linear(2, 16), nn.Linear(16, 1)

    def forward(self, x, t):
        return self.out(torch.relu(self.a(x) + self.b(t)))


def two_inputs(n=128, batch=32):
    torch.manual_seed(0)
    x, t = torch.randn(n, 6), torch.randn(n, 2)
    y = x[:, :1] * t[:, :1]
    return TwoInputs(), [(x[i:i + batch], t[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def test_every_element_of_a_batch_but_the_last_is_an_input_of_the_model():
    model, batches = two_inputs()
    wrapped = lumos_fx.instrument(model, batches[0][:2])
    history = lumos_fx.fit(wrapped, batches, nn.functional.mse_loss, epochs=2, progress=False)
    assert len(history) == 2 and torch.isfinite(torch.tensor(history[-1]["loss"]))
    # A dataset of (inputs, target) pairs: the inputs spread into forward(x, t).
    history = lumos_fx.fit(wrapped, [((x, t), y) for x, t, y in batches], nn.functional.mse_loss, progress=False)
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))
    with pytest.raises(lumos_fx.InputError, match=r"forward takes \(x, t\).*batch gives 3 positional input"):
        lumos_fx.fit(wrapped, [(x, t, x, y) for x, t, y in batches], nn.functional.mse_loss, progress=False)


def test_dict_batches_train_through_batch_fn_and_without_it_the_error_shows_the_batch_and_the_fix():
    model, batches = two_inputs()
    wrapped = lumos_fx.instrument(model, batches[0][:2])
    dicts = [{"x": x, "t": t, "y": y} for x, t, y in batches]
    history = lumos_fx.fit(wrapped, dicts, nn.functional.mse_loss, progress=False,
                           batch_fn=lambda b: ((b["x"], b["t"]), b["y"]))
    assert len(history) == 1
    with pytest.raises(lumos_fx.InputError, match=r"gave a dict \{'x': Tensor\[32, 6\] float32, 't'.*"
                                                  r"batch_fn=lambda b: \(\(b\['x'\], b\['t'\],\), b\['y'\]\)"):
        lumos_fx.fit(wrapped, dicts, nn.functional.mse_loss, progress=False)
    with pytest.raises(lumos_fx.InputError, match=r"gave a Tensor\[32, 6\] float32"):
        lumos_fx.fit(wrapped, [x for x, _, _ in batches], nn.functional.mse_loss, progress=False)


def test_a_loader_without_len_needs_steps_per_epoch_and_a_generator_makes_one_pass():
    model, batches = two_inputs()
    wrapped = lumos_fx.instrument(model, batches[0][:2])
    with pytest.raises(lumos_fx.InputError, match=r"no len\(\).*steps_per_epoch="):
        lumos_fx.fit(wrapped, iter(batches), nn.functional.mse_loss, progress=False)
    with pytest.raises(lumos_fx.InputError, match=r"epochs=2.*iterator.*re-iterable"):
        lumos_fx.fit(wrapped, (b for b in batches), nn.functional.mse_loss, epochs=2, steps_per_epoch=4,
                     progress=False)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(batches)

    stream = DataLoader(Stream(), batch_size=None)
    history = lumos_fx.fit(wrapped, stream, nn.functional.mse_loss, epochs=2, steps_per_epoch=len(batches),
                           target=0.5, progress=False)
    assert len(history) == 2 and lumos_fx.budget.budget_of(wrapped).warmup == 2  # a quarter of the 8 steps


@pytest.mark.parametrize("setting", [dict(epochs=0), dict(epochs=2.0), dict(epochs=True), dict(lr=0.0),
                                     dict(lr=-1e-3), dict(lr=float("nan")), dict(weight_decay=-0.1),
                                     dict(target=1.5), dict(steps_per_epoch=0), dict(batch_fn="x")])
def test_a_bad_setting_is_refused_by_name(setting):
    model, batches = two_inputs()
    wrapped = lumos_fx.instrument(model, batches[0][:2])
    (name, value), = setting.items()
    with pytest.raises(lumos_fx.InputError, match=rf"fit\({name}="):
        lumos_fx.fit(wrapped, batches, nn.functional.mse_loss, progress=False, **setting)


def test_a_non_finite_loss_stops_the_run_at_its_step_before_anything_is_updated():
    model, batches = two_inputs()
    x, t, y = batches[2]
    poisoned = batches[:2] + [(x, t, torch.full_like(y, float("nan")))] + batches[3:]

    class Passes:
        """Clean batches in the first pass, a NaN target at step 3 of the second."""

        def __init__(self):
            self.passes = 0

        def __len__(self):
            return len(batches)

        def __iter__(self):
            self.passes += 1
            return iter(batches if self.passes == 1 else poisoned)

    wrapped = lumos_fx.instrument(model, batches[0][:2])
    seen = []

    def recording(pred, target):
        seen.append({k: v.clone() for k, v in wrapped.state_dict().items() if isinstance(v, torch.Tensor)})
        return nn.functional.mse_loss(pred, target)

    with pytest.raises(lumos_fx.LumosError, match=r"the task loss is nan at epoch 2/2, step 3 of 4 \(step 7 of "
                                                  r"the run\); the model was not updated.*NaN or inf in target"):
        lumos_fx.fit(wrapped, Passes(), recording, epochs=2, progress=False)
    for name, value in seen[-1].items():
        assert torch.equal(wrapped.state_dict()[name], value), name
    with pytest.raises(lumos_fx.LumosError, match=r"the task loss is -inf at epoch 1/1, step 1 of 4.*check loss_fn"):
        lumos_fx.fit(wrapped, batches, lambda pred, target: torch.log((pred - pred).abs().mean()), progress=False)
    with pytest.raises(lumos_fx.InputError, match=r"loss_fn must return a scalar tensor.*Tensor\[32, 1\]"):
        lumos_fx.fit(wrapped, batches, nn.MSELoss(reduction="none"), progress=False)
