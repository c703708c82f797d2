"""Shape-concrete tracing: Python decisions on shapes, ranks and dtypes resolve while tracing,
each guarded in the graph and listed in summary(); sizes in arithmetic stay symbolic."""

import collections
import dataclasses
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx
from support import line_of, max_rel_error


class Validates(nn.Module):
    """Input checks as physics-ML libraries write them (PhysicsNeMo, neuraloperator)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x, output_shape=None, **kwargs):
        if kwargs:
            raise ValueError(f"unexpected {kwargs}")
        if x.ndim != 4:
            raise ValueError("expected a batch of images")
        if x.dtype != torch.float32 or x.shape[-1] < 2:
            raise ValueError("expected float images")
        h = torch.relu(self.a(x))
        for _ in range(len(x.shape) - 3):
            h = h + 0.0
        return self.b(h)


class ByRank(nn.Module):
    """A recipe picked by rank, as einops' Rearrange does (``self._multirecipe[input.ndim]``)."""

    def __init__(self):
        super().__init__()
        self.recipes = {3: "tokens", 4: "images"}
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        if self.recipes[x.ndim] == "tokens":
            h = torch.relu(h)
        return self.b(h)


class Unrolled(nn.Module):
    """A loop over time steps: unrolled at the example's length, and guarded."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        steps = [torch.tanh(h[:, t]) for t in range(x.size(1))]
        assert x.shape[-1] == 5
        return self.b(torch.stack(steps, 1))


class NumpySizes(nn.Module):
    """Sizes computed with NumPy on a traced shape (MONAI's SwinUNETR pads to windows so)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 1, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        size = np.array(x.shape[2:]) * 2
        padded = int(np.ceil(x.shape[-1] / 3)) * 3
        h = F.interpolate(h, size=tuple(int(s) for s in size))
        return self.b(F.pad(h, (0, padded - x.shape[-1])))


class Symbolic(nn.Module):
    """Sizes read and multiplied into a reshape: nothing is decided, nothing is baked in."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        return self.b(torch.relu(self.a(x.reshape(b * n, 4)))).reshape(b, n, 2)


class Spectral(nn.Module):
    """Sizes passed to torch's C code one by one, as FNO layers write them (PhysicsNeMo's
    ``torch.zeros(b, c, h, w)``, neuraloperator's cached ``grid.repeat(b, 1, 1, 1)``,
    ``F.pad(x, (0, w - m))``): nothing is decided, the cut runs at other batch and grid sizes."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(9, 2, 1)
        self.register_buffer("grid", torch.full((1, 1, 1, 1), 0.5))

    def forward(self, x):
        h = torch.relu(self.a(x))
        b, w = h.size(0), h.size(-1)
        out = torch.zeros(b, 8, h.size(-2), w, dtype=h.dtype) + F.pad(h[..., :3], (0, w - 3))
        grid = self.grid.repeat(b, 1, h.size(-2), w)
        return self.b(torch.cat([out, grid], 1))


class HalfSequence(nn.Module):
    """A slice of a dim other than the channels with bounds computed in forward (the first
    half of the sequence, as RoPE's rotate_half slices the head dim): the channels are cut."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h[:, : h.shape[1] // 2])


def _cut(model, x):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(model.eval(), (x,))
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(x), model(x)) < 1e-5
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[::2] = -10.0
    return wrapped, lumos_fx.prune(wrapped)


CASES = [
    (Validates, (2, 3, 8, 8), [(3, 3, 10, 6)]),
    (ByRank, (2, 7, 6), [(5, 3, 6)]),
    (Unrolled, (2, 4, 5), [(3, 4, 5)]),
    (NumpySizes, (2, 2, 4, 4), [(5, 2, 4, 4)]),
    (Symbolic, (2, 3, 4), [(5, 7, 4)]),
    (Spectral, (2, 3, 5, 6), [(3, 3, 5, 6), (3, 3, 7, 9)]),
    (HalfSequence, (2, 6, 4), [(3, 6, 4), (3, 9, 4)]),
]


@pytest.mark.parametrize("cls, shape, others", CASES, ids=[c[0].__name__ for c in CASES])
def test_decisions_on_shapes_trace_and_the_cut_runs_at_other_batch_sizes(cls, shape, others):
    wrapped, pruned = _cut(cls(), torch.randn(*shape))
    for other in [shape, *others]:
        x = torch.randn(*other)
        with torch.no_grad():
            assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-5, other


def test_every_decision_is_a_guard_naming_its_line_and_value():
    wrapped, pruned = _cut(Unrolled(), torch.randn(2, 4, 5))
    loop = line_of(Unrolled.forward, "for t in range(x.size(1))")
    assumptions = lumos_fx.summary(pruned).assumptions
    assert any(f"test_shape_concrete.py:{loop}:" in a and "decided with 4" in a for a in assumptions), assumptions
    assert any("assert x.shape[-1] == 5" in a and "decided with True" in a for a in assumptions), assumptions
    for model in (wrapped.eval(), pruned):  # both graphs check it
        with pytest.raises(AssertionError, match=rf"test_shape_concrete.py:{loop}: .*decided with 4.*another path"):
            model(torch.randn(3, 6, 5))


def test_sizes_that_flow_into_arithmetic_are_not_decided():
    _, pruned = _cut(Symbolic(), torch.randn(2, 3, 4))
    assert not [a for a in lumos_fx.summary(pruned).assumptions if "decided" in a]
    assert "decided" not in pruned.code


def test_sizes_given_to_torch_functions_one_by_one_are_not_decided():
    _, pruned = _cut(Spectral(), torch.randn(2, 3, 5, 6))
    assert not [a for a in lumos_fx.summary(pruned).assumptions if "decided" in a]
    assert "torch.zeros(" in pruned.code and "repeat(" in pruned.code


class Positions(nn.Module):
    """Token and position embeddings as transformers writes them: value checks skipped while
    traced (``is_tracing``: ``isinstance(x, fx.Proxy)``), a position buffer sliced to the
    sequence length, a view to a shape computed in forward."""

    def __init__(self):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(10, 8), nn.Embedding(16, 8)
        self.register_buffer("position_ids", torch.arange(16).expand(1, -1), persistent=False)
        self.hidden, self.out = nn.Linear(8, 12), nn.Linear(12, 3)

    def forward(self, ids):
        if not isinstance(ids, torch.fx.Proxy) and bool((ids < 0).any()):
            raise ValueError("negative token ids")
        h = self.tokens(ids) + self.positions(self.position_ids[:, :ids.shape[1]])
        out = self.out(torch.relu(self.hidden(h)))
        return out.view(out.size()[:-1] + (3,))


def test_a_buffer_sliced_to_the_sequence_length_and_an_is_tracing_check_stay_symbolic():
    torch.manual_seed(0)
    model = Positions().eval()
    ids = torch.randint(0, 10, (2, 5))
    wrapped = lumos_fx.instrument(model, (ids,))
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert not [a for a in lumos_fx.summary(pruned).assumptions if "decided" in a]
    assert pruned.get_submodule("hidden").out_features == 6
    for shape in [(2, 5), (3, 9)]:
        other = torch.randint(0, 10, shape)
        with torch.no_grad():
            assert max_rel_error(pruned(other), wrapped.eval()(other)) < 1e-5, shape


def test_a_computed_slice_of_another_dim_leaves_the_channels_prunable():
    _, pruned = _cut(HalfSequence(), torch.randn(2, 6, 4))
    assert pruned.get_submodule("a").out_features == 4


def test_a_rank_lookup_keeps_the_lookup_out_of_the_graph():
    wrapped, _ = _cut(ByRank(), torch.randn(2, 7, 6))
    assert all(n.op != "get_attr" or "recipes" not in n.target for n in wrapped.graph.nodes)
    assert any(n.target is torch.relu for n in wrapped.graph.nodes)


def test_a_decision_on_tensor_values_still_names_the_line():
    class ValueFlow(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.a(x)
            return x

    line = line_of(ValueFlow.forward, "if x.sum() > 0")
    with pytest.raises(lumos_fx.TraceError, match=rf"(?s)control flow.*test_shape_concrete.py:{line}"):
        lumos_fx.instrument(ValueFlow(), (torch.randn(2, 4),))


def test_the_example_batch_size_is_never_baked_in_silently():
    """A model that iterates over the batch is traced, and says so: the guard names the line."""
    class PerSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)

        def forward(self, x):
            return torch.stack([self.a(x[i]) for i in range(len(x))])

    wrapped, pruned = _cut(PerSample(), torch.randn(2, 3))
    line = line_of(PerSample.forward, "for i in range(len(x))")
    assert any(f":{line}:" in a for a in lumos_fx.summary(pruned).assumptions)
    with pytest.raises(AssertionError, match=rf":{line}: .*decided with 2"):
        pruned(torch.randn(5, 3))


def _returns_tuple(func):
    """A decorator as transformers writes them (``can_return_tuple``): ``*args, **kwargs``."""
    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        as_dict = kwargs.pop("return_dict", True)
        out = func(self, *args, **kwargs)
        return out if as_dict else tuple(out.values())
    return wrapper


class Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    @_returns_tuple
    def forward(self, x, mask=None, *, scale: float = 1.0):
        h = self.a(x) * scale
        if mask is not None:
            h = h * mask
        return {"y": self.b(torch.relu(h))}


@pytest.mark.parametrize("with_mask", [False, True])
def test_a_decorated_forward_is_traced_through_its_real_signature(with_mask):
    torch.manual_seed(0)
    x, mask = torch.randn(3, 4), (torch.rand(3, 8) > 0.5).float()
    example = (x, mask) if with_mask else (x,)
    model = Decorated().eval()
    wrapped = lumos_fx.instrument(model, example)
    with torch.no_grad():
        assert max_rel_error(wrapped.eval()(*example)["y"], model(*example)["y"]) < 1e-6
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    other = (torch.randn(6, 4), torch.ones(6, 8))[: len(example)]
    with torch.no_grad():
        assert max_rel_error(pruned(*other)["y"], wrapped.eval()(*other)["y"]) < 1e-5


@dataclasses.dataclass
class Output(collections.OrderedDict):
    """An output container that is a dict and a dataclass, as transformers' ModelOutput."""

    logits: torch.Tensor = None
    hidden: torch.Tensor = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) is not None:
                self[field.name] = getattr(self, field.name)


class ReturnsContainer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return Output(logits=self.b(h), hidden=h)


def test_an_output_container_keeps_its_type_in_the_cut_and_the_export(tmp_path):
    torch.manual_seed(0)
    model, x = ReturnsContainer().eval(), torch.randn(3, 4)
    wrapped = lumos_fx.instrument(model, (x,))
    assert type(wrapped(x)) is Output
    pruned = lumos_fx.prune(wrapped)
    out = pruned(torch.randn(5, 4))
    assert type(out) is Output and out.logits.shape == (5, 2)
    lumos_fx.export(pruned, tmp_path / "m")
    assert "Output" in (tmp_path / "m" / "model.py").read_text()


def test_round_of_a_shape_is_decided_and_extra_state_that_is_not_a_tensor_is_fine():
    class Rounds(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(2, 4, 1)

        def get_extra_state(self):  # neuralop keeps dicts in its state_dict
            return {"version": 1}

        def set_extra_state(self, state):
            pass

        def forward(self, x):
            return F.interpolate(self.a(x), size=round(x.shape[-1] * 1.5))

    _, pruned = _cut(Rounds(), torch.randn(2, 2, 8))
    assert any("round(x.shape[-1] * 1.5)" in a for a in lumos_fx.summary(pruned).assumptions)


def test_a_pruned_model_with_guards_exports_and_loads(tmp_path):
    _, pruned = _cut(Validates(), torch.randn(2, 3, 8, 8))
    assert "not_" in pruned.code  # the guard of a decision taken as False
    lumos_fx.export(pruned, tmp_path / "m")
    x = torch.randn(3, 3, 10, 6)
    assert max_rel_error(lumos_fx.load(tmp_path / "m")(x), pruned(x)) < 1e-6


class GridEmbedding(nn.Module):
    """Appends a coordinate grid, cached for the resolution it last saw (neuraloperator's)."""

    def __init__(self):
        super().__init__()
        self._grid, self._res = None, None

    def forward(self, x):
        if self._grid is None or self._res != x.shape[2:]:
            self._grid = torch.linspace(0, 1, x.shape[-1]).expand(1, 1, *x.shape[2:])
            self._res = x.shape[2:]
        return torch.cat([x, self._grid.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


def test_a_cache_filled_by_an_earlier_call_is_recomputed_so_the_cut_runs_at_other_sizes():
    torch.manual_seed(0)
    model = nn.Sequential(GridEmbedding(), nn.Conv1d(3, 8, 1), nn.ReLU(), nn.Conv1d(8, 1, 1))
    x = torch.randn(2, 2, 8)
    model(x)  # the user tried the model: the grid for size 8 is cached
    grid = model[0]._grid
    wrapped, pruned = _cut(model, x)
    assert model[0]._grid is grid and model[0]._res == x.shape[2:]  # the model is left as it was
    assert not [a for a in lumos_fx.summary(pruned).assumptions if "self._res !=" in a]
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    for other in [(2, 2, 8), (3, 2, 13)]:
        x = torch.randn(*other)
        with torch.no_grad():
            assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-5, other


class TypeDispatch(nn.Module):
    """Calls a library that picks its array backend from the module of the argument's class
    (opt_einsum's backend="auto")."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x)
        backend = type(h).__module__.split(".")[0]
        if backend != "torch":
            raise TypeError(f"no einsum for {backend} arrays")
        return self.b(torch.einsum("bi,bi->bi", h, h))


def test_a_library_dispatching_on_the_array_class_module_takes_a_proxy_for_a_torch_tensor():
    wrapped, pruned = _cut(TypeDispatch(), torch.randn(4, 3))
    assert "einsum" in wrapped.code and sum(p.numel() for p in pruned.parameters()) < 32


class DuckTyped(nn.Module):
    """Duck typing on a traced tensor, a dtype's limits, and an attribute fx records lazily."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x)
        if hasattr(h, "redistribute"):  # a distributed tensor (PhysicsNeMo's ShardTensor)
            h = h.redistribute()
        h = h.clamp(min=torch.finfo(h.dtype).min)
        h = torch.view_as_complex(torch.stack([h, h], -1)).real.reshape(h.shape)
        return self.b(torch.relu(h))


def test_duck_typing_dtype_limits_and_lazy_attributes_get_the_example_tensors_answers():
    wrapped, pruned = _cut(DuckTyped(), torch.randn(4, 3))
    assert "redistribute" not in wrapped.code
    assert any("torch.finfo" in a and "float32" in a for a in lumos_fx.summary(pruned).assumptions)
    with torch.no_grad():
        x = torch.randn(7, 3)
        assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-5
    with pytest.raises(AssertionError, match="torch.finfo"):
        pruned.double()(x.double())  # the limits were those of float32: loud, never silent


def test_a_slice_of_a_traced_shape_counts_its_elements_symbolically():
    class PerImage(nn.Module):  # transformers' nb_values_per_image = pixel_values.shape[1:].numel()
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(12, 6)

        def forward(self, x):
            return self.a(x.reshape(x.shape[0], x.shape[1:].numel()))

    wrapped, pruned = _cut(PerImage(), torch.randn(2, 3, 4))
    assert not [a for a in lumos_fx.summary(pruned).assumptions if "numel" in a]
    with torch.no_grad():
        x = torch.randn(5, 3, 4)
        assert max_rel_error(pruned(x), wrapped.eval()(x)) < 1e-5
