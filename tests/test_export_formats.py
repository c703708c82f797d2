"""export(formats=...): torch.export, ONNX and AOTInductor files, each checked when written,
with a dynamic batch, loadable without lumos_fx; what a format cannot express is named."""

import json
import platform
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch_geometric.nn import GCNConv, global_mean_pool

import lumos_fx
from support import set_gates
from test_faithful import DictBatch
from test_prune_conv_rules import Padded
from test_prune_rules import close


def pruned_mlp(batch=8, shrink=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    wrapped = lumos_fx.instrument(model, (torch.randn(batch, 10),))
    set_gates(wrapped, "random", 0)
    return wrapped, lumos_fx.prune(wrapped, shrink_inputs=shrink)


def manifest(folder):
    return json.loads((folder / "formats.json").read_text())


def test_every_format_loads_without_lumos_fx_and_matches_at_another_batch_size(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    wrapped, pruned = pruned_mlp()
    compile_and_package, configs = torch._inductor.aoti_compile_and_package, []

    def spy(*args, **kwargs):
        configs.append(kwargs.get("inductor_configs"))
        return compile_and_package(*args, **kwargs)
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", spy)
    # a package for any x86-64 CPU of the last decade, not only for the one that exported it
    portable = {"cpp.march": "x86-64-v2"} if platform.machine() in ("x86_64", "AMD64") else {}
    folder = lumos_fx.export(pruned, tmp_path / "model", formats=("pt2", "onnx", "aoti"), inductor_configs=portable)
    assert configs == [portable]
    written = manifest(folder)
    assert written["batch"] == "dynamic"
    assert written["inputs"] == [{"name": "input", "shape": [8, len(pruned.kept_feature_indices["input"])],
                                  "dynamic": [0]}]
    for fmt, file in (("pt2", "model.pt2"), ("onnx", "model.onnx"), ("aoti", "model_aoti.pt2")):
        assert (folder / file).exists() and written["formats"][fmt]["file"] == file
        assert written["formats"][fmt]["batch_sizes"] == [8, 1, 11]
        assert written["formats"][fmt]["max_error"] < 1e-5

    x = torch.randn(13, 10)
    x_in = x[:, pruned.kept_feature_indices["input"]]
    torch.save({"x": x_in, "y": wrapped.eval()(x).detach()}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch, onnxruntime
        sys.modules["lumos_fx"] = None  # the files must not need lumos_fx
        folder = {str(folder)!r}
        io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
        onnx = onnxruntime.InferenceSession(folder + "/model.onnx")
        outs = {{
            "pt2": torch.export.load(folder + "/model.pt2").module()(io["x"]),
            "aoti": torch._inductor.aoti_load_package(folder + "/model_aoti.pt2")(io["x"]),
            "onnx": torch.from_numpy(onnx.run(None, {{onnx.get_inputs()[0].name: io["x"].numpy()}})[0]),
        }}
        for name, y in outs.items():
            err = (y - io["y"]).abs().max().item()
            assert err < 1e-5, (name, err)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_a_batch_of_one_is_exported_dynamic_and_checked_at_one(tmp_path):
    _, pruned = pruned_mlp(batch=1, shrink=False)
    written = manifest(lumos_fx.export(pruned, tmp_path, formats="pt2"))
    assert written["batch"] == "dynamic" and written["inputs"][0]["dynamic"] == [0]
    assert written["formats"]["pt2"]["batch_sizes"] == [2, 1, 5]
    program = torch.export.load(tmp_path / "model.pt2").module()
    x = torch.randn(1, 10)
    assert torch.allclose(program(x), pruned(x), atol=1e-6)


def test_a_program_whose_guards_assume_a_batch_above_one_is_exported_from_two(tmp_path, monkeypatch):
    from lumos_fx import export_formats

    class AboveOne(nn.Module):  # the guard torch.export keeps in timm's convnext_atto: x.size()[0] > 1
        def __init__(self, pruned):
            super().__init__()
            self.pruned = pruned

        def forward(self, x):
            torch._check(x.shape[0] > 1)
            return self.pruned(x)

    export = export_formats._export

    def guarded(pruned, example, columns, dynamic, batch=None):
        return export(pruned if batch is None else AboveOne(pruned), example, columns, dynamic, batch)

    monkeypatch.setattr(export_formats, "_export", guarded)
    _, pruned = pruned_mlp(shrink=False)
    written = manifest(lumos_fx.export(pruned, tmp_path, formats="pt2"))
    assert written["batch"] == "dynamic, 2 or more" and written["inputs"][0]["dynamic"] == [0]
    assert written["formats"]["pt2"]["batch_sizes"] == [8, 11]


def test_the_feature_dim_is_static_in_the_program(tmp_path):
    _, pruned = pruned_mlp(shrink=False)  # the pruned model picks its columns out of all 10
    lumos_fx.export(pruned, tmp_path, formats="pt2")
    program = torch.export.load(tmp_path / "model.pt2").module()
    with pytest.raises(Exception):
        program(torch.randn(4, 12))  # more columns than the model was cut from


def test_dict_inputs_and_outputs_keep_their_structure(tmp_path):
    torch.manual_seed(1)
    example = ({"x": torch.randn(5, 4), "t": torch.randn(5, 1)},)
    wrapped = lumos_fx.instrument(DictBatch(), example)
    set_gates(wrapped, "random", 1)
    pruned = lumos_fx.prune(wrapped)
    written = manifest(lumos_fx.export(pruned, tmp_path, formats="pt2"))
    assert [i["dynamic"] for i in written["inputs"]] == [[0], [0]]
    batch = {"x": torch.randn(7, 4), "t": torch.randn(7, 1)}
    got = lumos_fx.load(tmp_path, format="pt2")(batch)
    assert torch.allclose(got["y"], pruned(batch)["y"], atol=1e-6)
    with pytest.raises(FileNotFoundError, match=r"model_aoti\.pt2 not found: export\(pruned, folder, formats=\('aoti',\)\)"):
        lumos_fx.load(tmp_path, format="aoti")


def test_a_size_guard_of_the_pruned_model_becomes_a_static_dim(tmp_path):
    torch.manual_seed(9)
    wrapped = lumos_fx.instrument(Padded(), (torch.randn(2, 3, 6, 6),))
    close(wrapped, "a", slice(None))  # c's zero padding of a constant: exact at 6 x 6 only
    pruned = lumos_fx.prune(wrapped)
    assert lumos_fx.summary(pruned).fixed_size
    written = manifest(lumos_fx.export(pruned, tmp_path, formats="pt2"))
    assert written["inputs"][0]["dynamic"] == [0]  # the batch; height and width are the example's
    program = torch.export.load(tmp_path / "model.pt2").module()
    x = torch.randn(4, 3, 6, 6)
    assert torch.allclose(program(x), pruned(x), atol=1e-5)
    with pytest.raises(Exception):
        program(torch.randn(4, 3, 8, 8))


def test_an_op_onnx_cannot_express_is_named_and_the_other_formats_are_written(tmp_path):
    pytest.importorskip("onnxruntime")
    from neuralop.models import FNO

    torch.manual_seed(0)
    x = torch.randn(2, 2, 16, 16)
    wrapped = lumos_fx.instrument(FNO(n_modes=(4, 4), hidden_channels=8, in_channels=2, out_channels=1,
                                      n_layers=2), (x,))
    set_gates(wrapped, "random", 0)
    pruned = lumos_fx.prune(wrapped)
    with pytest.raises(lumos_fx.ExportError, match=r"onnx: ONNX cannot express this model: torch\.ops\.aten\.\w+"
                                                    r".*complex.*\(written: model\.py, weights\.pt, model\.pt2\)"):
        lumos_fx.export(pruned, tmp_path, formats=("pt2", "onnx"))
    assert (tmp_path / "model.pt2").exists() and not (tmp_path / "model.onnx").exists()
    written = manifest(tmp_path)
    assert "error" in written["formats"]["onnx"] and written["formats"]["pt2"]["max_error"] < 1e-5
    # neuraloperator's einsum plans its contraction from the batch size: the program says so
    assert written["batch"].startswith("torch.export fixed it")
    assert torch.allclose(lumos_fx.load(tmp_path)(x), pruned(x), atol=1e-5)


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.out = GCNConv(5, 16), nn.Linear(16, 2)

    def forward(self, x, edge_index, batch):
        return self.out(global_mean_pool(self.conv(x, edge_index).relu(), batch))


def test_a_size_read_from_the_data_names_the_call_and_the_source_line(tmp_path):
    torch.manual_seed(0)
    example = (torch.randn(10, 5), torch.randint(0, 10, (2, 24)), torch.tensor([0] * 5 + [1] * 5))
    wrapped = lumos_fx.instrument(Pooled(), example)
    set_gates(wrapped, "random", 0)
    pruned = lumos_fx.prune(wrapped)
    with pytest.raises(lumos_fx.ExportError, match=r"pt2, aoti: torch\.export cannot express "
                                                    r"torch_geometric\.nn\.pool\.glob\.global_mean_pool at "
                                                    r".*test_export_formats\.py:\d+: .*global_mean_pool.*"
                                                    r"computed from the input's values"):
        lumos_fx.export(pruned, tmp_path, formats=("pt2", "aoti"))
    assert not (tmp_path / "model.pt2").exists()
    assert torch.allclose(lumos_fx.load(tmp_path)(*example), pruned(*example), atol=1e-5)


def test_unknown_formats_and_a_missing_onnx_runtime_say_what_to_do(tmp_path, monkeypatch):
    _, pruned = pruned_mlp()
    with pytest.raises(lumos_fx.ExportError, match=r"unknown export formats \['tflite'\]; choose among"):
        lumos_fx.export(pruned, tmp_path / "a", formats=("tflite",))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(lumos_fx.ExportError, match=r"onnx: ONNX needs onnxruntime: pip install 'lumos_fx\[onnx\]'"):
        lumos_fx.export(pruned, tmp_path / "b", formats=("onnx", "pt2"))
    assert (tmp_path / "b" / "model.pt2").exists()
    with pytest.raises(lumos_fx.ExportError, match=r"configures the AOTInductor package: add 'aoti' to formats"):
        lumos_fx.export(pruned, tmp_path / "c", formats=("pt2",), inductor_configs={"cpp.march": "x86-64-v2"})
    with pytest.raises(lumos_fx.ExportError, match=r"takes a dict of Inductor settings.*got str"):
        lumos_fx.export(pruned, tmp_path / "d", formats=("aoti",), inductor_configs="x86-64-v2")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_export_leaves_the_pruned_models_mode_as_it_was(tmp_path):
    _, pruned = pruned_mlp()
    pruned.train()
    lumos_fx.export(pruned, tmp_path, formats="pt2")
    assert all(m.training for m in pruned.modules())
