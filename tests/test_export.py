"""export()/load(): readable standalone source, weights without pickle, a fresh process."""

import collections
import copy
import subprocess
import sys
import textwrap
import typing

import pytest
import torch
from torch import nn

import lumos_fx
from test_prune_rules import Residual, close


def pruned_residual(shrink=False, branch_closed=False):
    torch.manual_seed(0)
    model = nn.Sequential()  # named submodules and a Sequential inside, as users write them
    model.add_module("net", Residual())
    wrapped = lumos_fx.instrument(model, (torch.randn(8, 5),), feature_names=list("abcde"))
    close(wrapped, "net.inp", [0, 3, 4])
    close(wrapped, "x" if "x" in lumos_fx.gates(wrapped) else "input", [1])
    if branch_closed:
        close(wrapped, "net.hidden", slice(None))
    return wrapped, lumos_fx.prune(wrapped, shrink_inputs=shrink)


@pytest.mark.parametrize("shrink,branch_closed", [(False, False), (True, False), (False, True)])
def test_export_loads_in_a_fresh_process_with_only_torch(tmp_path, shrink, branch_closed):
    wrapped, pruned = pruned_residual(shrink, branch_closed)
    folder = lumos_fx.export(pruned, tmp_path / "model")
    source = (folder / "model.py").read_text()
    assert "nn.Linear(4, 13, bias=True)" in source  # literal sizes: 5 - 1 inputs, 16 - 3 channels
    assert "import lumos_fx" not in source and "lumos_fx." not in source.replace("pruned by lumos_fx", "")
    compile(source, "model.py", "exec")

    x = torch.randn(6, 5)
    x_in = x[:, pruned.kept_feature_indices["input"]] if shrink else x
    torch.save({"x": x_in, "y": wrapped.eval()(x).detach()}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules["lumos_fx"] = None  # the export must not need lumos_fx
        sys.path.insert(0, {str(folder)!r})
        import model
        net = model.load()
        io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
        err = (net(io["x"]) - io["y"]).abs().max().item()
        print(err, model.KEPT_FEATURES)
        assert err < 1e-5, err
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "'input': ['a', 'c', 'd', 'e']" in run.stdout


def test_weights_are_a_plain_state_dict(tmp_path):
    _, pruned = pruned_residual()
    folder = lumos_fx.export(pruned, tmp_path)
    state = torch.load(folder / "weights.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["net_inp.weight"].shape == (13, 4)


def test_load_in_process_and_the_source_reads_like_the_model(tmp_path):
    wrapped, pruned = pruned_residual(branch_closed=True)
    folder = lumos_fx.export(pruned, tmp_path)
    net = lumos_fx.load(folder)
    x = torch.randn(3, 5)
    torch.testing.assert_close(net(x), wrapped.eval()(x))
    source = (folder / "model.py").read_text()
    assert "class Sequential(nn.Module)" in source
    assert "self.net_inp = nn.Linear(4, 13, bias=True)" in source
    assert "net_back_const" in source and "self.net_hidden" not in source
    assert "def forward(self, input):" in source


def _same_in_both_modes(loaded, pruned, trained_reference, x):
    """The loaded export equals the pruned model in eval mode and the reference in train mode,
    where it draws random numbers (so differs from eval mode)."""
    assert torch.allclose(loaded(x), pruned(x))
    torch.manual_seed(1)
    trained = loaded.train()(x)
    torch.manual_seed(1)
    assert torch.allclose(trained, trained_reference.train()(x), atol=1e-6)
    assert not torch.allclose(trained, loaded.eval()(x))


class Custom(nn.Module):
    """A leaf with no constructor export knows, whose forward takes another path in train mode."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        if self.training:
            return x * self.scale + torch.randn_like(x)
        return x * self.scale


class ValueDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_a_leaf_without_a_constructor_is_written_out_as_its_torch_code_in_both_modes(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), Custom(), Custom(), nn.Linear(3, 2))
    pruned = lumos_fx.prune(lumos_fx.instrument(model, (torch.randn(2, 3),),
                                                config=lumos_fx.Config(leaf_modules=[Custom])))
    folder = lumos_fx.export(pruned, tmp_path)
    source = (folder / "model.py").read_text()
    assert source.count("class Custom(nn.Module):") == 1  # both leaves are one class
    assert "if self.training:" in source and "def _forward_eval(self, x):" in source
    _same_in_both_modes(lumos_fx.load(folder), pruned, model, torch.randn(5, 3))


def drop_samples(x, p: float, training: bool):
    """A library function fx calls as one op, taking the mode as an argument (torchvision's
    stochastic_depth)."""
    if not training or p == 0.0:
        return x
    keep = torch.empty(x.shape[0], 1, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


torch.fx.wrap("drop_samples")


class Dropping(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(drop_samples(torch.relu(self.a(x)), 0.5, self.training))


def test_a_library_function_is_written_out_with_a_path_per_mode(tmp_path):
    torch.manual_seed(0)
    model = Dropping()
    wrapped = lumos_fx.instrument(model, (torch.randn(3, 4),))
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    folder = lumos_fx.export(pruned, tmp_path)
    source = (folder / "model.py").read_text()
    assert "class DropSamples(nn.Module):" in source and "test_export" not in source
    _same_in_both_modes(lumos_fx.load(folder), pruned, copy.deepcopy(pruned), torch.randn(6, 4))


def test_export_refuses_an_instrumented_model_and_unwritable_modules(tmp_path):
    wrapped, _ = pruned_residual()
    with pytest.raises(lumos_fx.ExportError, match="call lumos_fx.prune"):
        lumos_fx.export(wrapped, tmp_path)
    model = nn.Sequential(nn.Linear(3, 3), ValueDependent())
    pruned = lumos_fx.prune(lumos_fx.instrument(model, (torch.randn(2, 3),)))
    with pytest.raises(lumos_fx.ExportError, match=r"module '1' \(ValueDependent\).*cannot trace it.*register_rule"):
        lumos_fx.export(pruned, tmp_path)


def test_exported_cnns_and_vits_load_in_a_fresh_process(tmp_path):
    """Every reference CNN and ViT, cut, exported and rebuilt from its model.py without lumos_fx."""
    from models_zoo.transformer.models import SequenceRegressor, ViT
    from models_zoo.vision.gates import close_fraction
    from models_zoo.vision.models import reference_models

    models = reference_models(width=0.25, size=32)
    for attention in ("hand", "sdpa", "mha"):
        models[f"vit_{attention}"] = (ViT(image=16, dim=32, depth=2, sdpa=attention == "sdpa", mha=attention == "mha"),
                                      (3, 16, 16))
    models["transformer_encoder"] = (SequenceRegressor(n_features=5, length=6, dim=16, depth=2), (6, 5))
    models["reflect_padding"] = (nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                                               nn.Conv2d(6, 3, 3, padding=1, padding_mode="circular")), (2, 8, 8))
    # A setting nn.AvgPool2d's repr leaves out (timm's PoolFormer pools so).
    models["avg_pool_without_padding"] = (nn.Sequential(nn.Conv2d(2, 6, 1), nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                                                        nn.Conv2d(6, 3, 1)), (2, 8, 8))
    folders = {}
    for name, (model, shape) in models.items():
        torch.manual_seed(0)
        wrapped = lumos_fx.instrument(model, (torch.randn(2, *shape),))
        close_fraction(wrapped, 0.5, seed=2)
        pruned = lumos_fx.prune(wrapped)
        folders[name] = lumos_fx.export(pruned, tmp_path / name)
        compile((folders[name] / "model.py").read_text(), "model.py", "exec")
        x = torch.randn(3, *shape)
        torch.save({"x": x, "y": pruned(x).detach()}, folders[name] / "io.pt")
    script = textwrap.dedent(f"""
        import importlib.util, sys, torch
        sys.modules["lumos_fx"] = None
        for name, folder in {({k: str(v) for k, v in folders.items()})!r}.items():
            spec = importlib.util.spec_from_file_location("model_" + name, folder + "/model.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            net = module.load()
            io = torch.load(folder + "/io.pt", weights_only=True)
            with torch.no_grad():
                err = (net(io["x"]) - io["y"]).abs().max().item()
            assert err < 1e-5, (name, err)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


Pair = collections.namedtuple("Pair", ["main", "aux"])


class Annotated(nn.Module):
    """A forward annotated with a library's types, returning a named tuple (torchvision's
    GoogLeNetOutputs): model.py needs neither the annotations nor the library."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 1)

    def forward(self, x: typing.Optional[torch.Tensor]) -> Pair:
        h = torch.relu(self.a(x))
        return Pair(self.b(h), self.c(h))


def test_annotations_are_dropped_and_a_named_tuple_output_is_defined_in_model_py(tmp_path):
    torch.manual_seed(0)
    wrapped = lumos_fx.instrument(Annotated(), (torch.randn(2, 4),))
    with torch.no_grad():
        lumos_fx.gates(wrapped)["a"].log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    folder = lumos_fx.export(pruned, tmp_path / "m")
    source = (folder / "model.py").read_text()
    assert "typing" not in source and "import test_export" not in source
    x = torch.randn(3, 4)
    out = lumos_fx.load(folder)(x)
    assert type(out).__name__ == "Pair" and out._fields == ("main", "aux")
    assert torch.allclose(out.main, pruned(x).main) and torch.allclose(out.aux, pruned(x).aux)


class Segmenter(nn.Module):
    """An OrderedDict output, as torchvision's segmentation models return."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        out = collections.OrderedDict()
        out["out"] = self.b(torch.relu(self.a(x)))
        return out


def test_an_ordered_dict_output_keeps_its_type_in_the_cut_and_the_export(tmp_path):
    wrapped = lumos_fx.instrument(Segmenter(), (torch.randn(2, 3, 4, 4),))
    with torch.no_grad():
        for gate in lumos_fx.gates(wrapped).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos_fx.prune(wrapped)
    x = torch.randn(3, 3, 5, 5)
    assert type(pruned(x)) is collections.OrderedDict
    out = lumos_fx.load(lumos_fx.export(pruned, tmp_path))(x)
    assert type(out) is collections.OrderedDict and torch.allclose(out["out"], pruned(x)["out"])


class Scaled(nn.Module):
    """A leaf called with a keyword argument (neuraloperator's ``conv(x, output_shape=None)``)."""

    def forward(self, x, scale=None):
        return x if scale is None else x * scale


class CallsWithKeywords(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.s, self.b = nn.Linear(3, 6), Scaled(), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(self.s(self.a(x), scale=2.0))


def test_a_leaf_called_with_keyword_arguments_is_written_out(tmp_path):
    torch.manual_seed(0)
    model = CallsWithKeywords()
    wrapped = lumos_fx.instrument(model, (torch.randn(3, 3),), config=lumos_fx.Config(leaf_modules=[Scaled]))
    close(wrapped, "x", [1])
    pruned = lumos_fx.prune(wrapped)
    folder = lumos_fx.export(pruned, tmp_path)
    assert "class Scaled(nn.Module):" in (folder / "model.py").read_text()
    x = torch.randn(5, 3)
    assert torch.allclose(lumos_fx.load(folder)(x), pruned(x))
