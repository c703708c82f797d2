"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN and their cells): the input features are gated,
selected and cut from every direction's first-layer input weights; the hidden units of a
whole layer are one group, cut from every layer and direction (rows of every gate block,
columns of the recurrent and the next layer's input weights), also out of the returned
states; a cell's are kept with the reason. Exact under every gate setting, at other batch
sizes and sequence lengths."""

import pytest
import torch
from torch import nn

import lumos_fx
from support import GATE_SETTINGS, max_rel_error, set_gates


class Regressor(nn.Module):
    """Features -> Linear -> recurrent layer -> the last step's hidden state -> Linear."""

    def __init__(self, kind, layers, bidirectional, batch_first, state=False):
        super().__init__()
        self.pre = nn.Linear(6, 10)
        self.rnn = kind(10, 8, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                        dropout=0.2 if layers > 1 else 0.0)
        self.head = nn.Linear(8 * (1 + bidirectional), 3)
        self.batch_first, self.state, self.kind = batch_first, state, kind
        self.h0 = nn.Parameter(torch.randn(layers * (1 + bidirectional), 1, 8) * 0.1) if state else None

    def forward(self, x):
        h = torch.relu(self.pre(x))
        if self.state:
            batch = x.shape[0 if self.batch_first else 1]
            h0 = self.h0.expand(-1, batch, -1).contiguous()
            out, _ = self.rnn(h, (h0, torch.zeros_like(h0)) if self.kind is nn.LSTM else h0)
        else:
            out, _ = self.rnn(h)
        return self.head(out[:, -1] if self.batch_first else out[-1])


def _sequence(batch, steps, batch_first):
    return torch.randn(batch, steps, 6) if batch_first else torch.randn(steps, batch, 6)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("layers,bidirectional,batch_first,state", [
    (1, False, True, False), (2, True, True, False), (3, True, False, False), (2, False, False, True),
    (1, True, True, True)])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_recurrent_input_features_are_cut_exactly(kind, layers, bidirectional, batch_first, state, setting, tmp_path):
    torch.manual_seed(0)
    model = Regressor(kind, layers, bidirectional, batch_first, state)
    x = _sequence(4, 7, batch_first)
    wrapped = lumos_fx.instrument(model, (x,))
    units = "h0" if state else "rnn"  # a group is named after its first producer: the initial state's parameter
    assert {"x", "pre", units} <= set(lumos_fx.gates(wrapped))  # features, the layer feeding it, hidden units
    assert lumos_fx.gates(wrapped)[units].n == 8
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model.eval()(x)) < 1e-6
    set_gates(wrapped, setting, 0)
    pruned = lumos_fx.prune(wrapped)
    kept = next(r.after for r in lumos_fx.summary(pruned).groups if r.name == "pre")  # what the layer reads
    hidden = next(r.after for r in lumos_fx.summary(pruned).groups if r.name == units)
    if hidden == 0:
        assert not hasattr(pruned, "rnn")  # no unit left: the layer is gone
    else:
        blocks = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[kind]
        assert pruned.rnn.input_size == kept == pruned.rnn.weight_ih_l0.shape[1]
        if bidirectional:
            assert pruned.rnn.weight_ih_l0_reverse.shape[1] == kept
        assert pruned.rnn.hidden_size == hidden and pruned.rnn.weight_hh_l0.shape == (blocks * hidden, hidden)
        if layers > 1:
            assert pruned.rnn.weight_ih_l1.shape == (blocks * hidden, hidden * (1 + bidirectional))
        assert pruned.head.in_features == hidden * (1 + bidirectional)
    if setting == "random":
        assert 0 < hidden < 8
    for y in (x, _sequence(5, 11, batch_first)):  # another batch size and sequence length
        with torch.no_grad():
            assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5
    if setting == "random":
        lumos_fx.export(pruned, tmp_path / "m")
        with torch.no_grad():
            assert max_rel_error(lumos_fx.load(tmp_path / "m")(y), pruned(y)) < 1e-6


def test_a_recurrent_layer_reading_the_model_input_selects_features():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(5, 6, batch_first=True), nn.Linear(6, 1)

        def forward(self, x):
            out, (h, c) = self.lstm(x)
            return self.head(h[-1] + c[-1] + out[:, 0])  # the last state and the first step

    torch.manual_seed(0)
    model, x = Net(), torch.randn(3, 9, 5)
    wrapped = lumos_fx.instrument(model, (x,), feature_names=list("abcde"))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha[[1, 3]] = -10.0
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.kept_features == {"x": ["a", "c", "e"]} and pruned.lstm.input_size == 3
    y = torch.randn(2, 4, 5)
    with torch.no_grad():
        assert max_rel_error(pruned(y[..., [0, 2, 4]]), wrapped.eval()(y)) < 1e-5
    with torch.no_grad():
        lumos_fx.gates(wrapped)["lstm"].log_alpha[::3] = -10.0  # units 0, 3: out of h_n and the output
    pruned = lumos_fx.prune(wrapped)
    assert pruned.lstm.hidden_size == 4 and pruned.head.in_features == 4
    with torch.no_grad():
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5


def test_the_hidden_units_train_with_their_gate_inside_the_recurrence():
    torch.manual_seed(0)
    model, x = Regressor(nn.LSTM, 2, True, True), torch.randn(4, 7, 6)
    wrapped = lumos_fx.instrument(model, (x,))
    assert "weight_hh_l0" in wrapped.code and "run_recurrent" in wrapped.code
    wrapped.train()
    (wrapped(x).pow(2).mean() + lumos_fx.complexity_loss(wrapped)).backward()
    assert lumos_fx.gates(wrapped)["rnn"].log_alpha.grad.abs().sum() > 0
    torch.manual_seed(1)
    first = wrapped(x)
    torch.manual_seed(2)
    assert not torch.allclose(first, wrapped(x))  # dropout between the layers, and the gates, draw


class Loop(nn.Module):
    """A cell stepped over time by the model's own loop, from a zero state made in one of the
    ways models make it (or none), its states stacked into a sequence the head reads."""

    def __init__(self, cell, start):
        super().__init__()
        self.start = start
        self.pre, self.cell, self.head = nn.Linear(4, 7), cell(7, 5), nn.Linear(5, 2)

    def forward(self, x):
        lstm = isinstance(self.cell, nn.LSTMCell)
        if self.start == "none":
            state = None
        else:
            h = torch.zeros(x.shape[0], 5) if self.start == "zeros" else x.new_zeros(x.shape[0], 5)
            state = (h, torch.zeros_like(h)) if lstm else h
        steps = []
        for t in range(x.shape[1]):
            state = self.cell(torch.tanh(self.pre(x[:, t])), state)
            steps.append(state[0] if lstm else state)
        return self.head(torch.stack(steps, dim=1))


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
@pytest.mark.parametrize("start", ["zeros", "new_zeros", "none"])
@pytest.mark.parametrize("setting", GATE_SETTINGS)
def test_a_cell_in_a_loop_over_time_has_its_hidden_units_and_input_features_cut(cell, start, setting, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    wrapped = lumos_fx.instrument(Loop(cell, start), (x,))
    assert {"x", "pre", "cell"} <= set(lumos_fx.gates(wrapped))
    set_gates(wrapped, setting, 1)
    pruned = lumos_fx.prune(wrapped)
    groups = {r.name: r.after for r in lumos_fx.summary(pruned).groups}
    if setting != "closed":
        assert pruned.cell.input_size == groups["pre"] == pruned.cell.weight_ih.shape[1]
        assert pruned.cell.hidden_size == groups["cell"] == pruned.cell.weight_hh.shape[1] == pruned.head.in_features
    if setting == "half":
        assert pruned.cell.hidden_size < 5
    with torch.no_grad():
        y = torch.randn(6, 5, 4)
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5
    with pytest.raises(AssertionError, match="decided with 5"):  # the loop ran 5 steps: a guard
        pruned(torch.randn(6, 8, 4))
    if setting == "half":
        lumos_fx.export(pruned, tmp_path / "m")
        with torch.no_grad():
            assert max_rel_error(lumos_fx.load(tmp_path / "m")(y), pruned(y)) < 1e-6


class Started(Loop):
    """A GRU cell started from a learned state, or from ones (a state lumos_fx cannot resize)."""

    def __init__(self, learned):
        super().__init__(nn.GRUCell, "none")
        self.learned, self.h0 = learned, nn.Parameter(torch.randn(5))

    def forward(self, x):
        state = self.h0.expand(x.shape[0], 5) * 1.0 if self.learned else torch.ones(x.shape[0], 5)
        for t in range(x.shape[1]):
            state = self.cell(self.pre(x[:, t]), state)
        return self.head(state)


def test_a_learned_initial_state_of_a_cell_is_cut_with_its_units():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Started(learned=True), (torch.randn(3, 4, 4),))
    set_gates(wrapped, "half", 0)
    pruned = lumos_fx.prune(wrapped)
    assert pruned.h0.shape == (pruned.cell.hidden_size,) and pruned.cell.hidden_size < 5
    with torch.no_grad():
        y = torch.randn(2, 4, 4)
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5


def test_a_cell_started_from_a_state_it_cannot_resize_keeps_its_units_with_the_reason():
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Started(learned=False), (torch.randn(3, 4, 4),))
    assert "cell" not in lumos_fx.gates(wrapped) and "pre" in lumos_fx.gates(wrapped)
    assert any("torch.ones" in why for why in lumos_fx.summary(wrapped).kept_whole.values())
    set_gates(wrapped, "random", 0)
    pruned = lumos_fx.prune(wrapped)
    with torch.no_grad():
        y = torch.randn(2, 4, 4)
        assert max_rel_error(pruned(y), wrapped.eval()(y)) < 1e-5


def test_a_projected_lstm_keeps_its_hidden_units_and_says_why(tmp_path):
    class Projected(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(4, 8, proj_size=3, batch_first=True), nn.Linear(3, 1)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Projected(), (torch.randn(2, 6, 4),))
    assert set(lumos_fx.gates(wrapped)) == {"x"}
    assert any("proj_size" in why for why in lumos_fx.summary(wrapped).kept_whole.values())
    with torch.no_grad():
        lumos_fx.gates(wrapped)["x"].log_alpha[0] = -10.0
    pruned = lumos_fx.prune(wrapped, shrink_inputs=True)
    assert pruned.lstm.input_size == 3 and pruned.lstm.hidden_size == 8
    lumos_fx.export(pruned, tmp_path / "m")
    assert "nn.LSTM(3, 8, proj_size=3, batch_first=True)" in (tmp_path / "m" / "model.py").read_text()


def test_an_lstm_counts_the_flops_of_both_products_of_every_step():
    """torch's FlopCounterMode has no formula for the CPU LSTM kernel; lumos_fx registers one,
    so the FLOPs summary() and the budget report include the recurrence."""
    from lumos_fx.report import count_flops

    lstm, x = nn.LSTM(20, 16, num_layers=2, bidirectional=True, batch_first=True), torch.randn(3, 7, 20)
    per_step = 2 * 4 * 16 * (20 + 16) + 2 * 4 * 16 * (2 * 16 + 16)  # layer 0 reads 20 inputs, layer 1 both directions
    assert count_flops(lstm, (x,)) == 2 * 3 * 7 * per_step  # two directions
