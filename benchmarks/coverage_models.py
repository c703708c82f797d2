"""The models of the coverage benchmark, in one list: ``MODELS``.

Each record is (library, name, build): ``build()`` returns ``(model, example_inputs,
other_inputs)`` with ``example_inputs`` a tuple of forward's positional arguments and
``other_inputs`` ``{label: inputs tuple}`` (another batch size; another spatial size or
sequence length where the architecture may take one) or None. Small configs, random
weights: nothing is downloaded, no pretrained weights are loaded. Libraries are imported
inside the builders, so a missing one only skips its own models.

To add a model: write a builder below and append ``Case("lib", "Name", builder)`` to MODELS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

os.environ.setdefault("DDE_BACKEND", "pytorch")


@dataclass(frozen=True)
class Library:
    modules: tuple[str, ...]  # imported before a model is built; the first one's __version__ is recorded
    pip: str                  # the PyPI name
    aliases: tuple[str, ...] = ()


LIBRARIES = {
    "torchvision": Library(("torchvision",), "torchvision"),
    "timm": Library(("timm",), "timm"),
    "pyg": Library(("torch_geometric",), "torch-geometric", ("torch_geometric", "torch-geometric")),
    "monai": Library(("monai",), "monai"),
    "neuralop": Library(("neuralop",), "neuraloperator", ("neuraloperator",)),
    "physicsnemo": Library(("physicsnemo",), "nvidia-physicsnemo", ("nvidia-physicsnemo", "modulus")),
    "deepxde": Library(("deepxde",), "deepxde"),
    "smp": Library(("segmentation_models_pytorch",), "segmentation-models-pytorch",
                   ("segmentation_models_pytorch", "segmentation-models-pytorch")),
    "e3nn": Library(("e3nn",), "e3nn"),
    "transformers": Library(("transformers",), "transformers", ("hf", "huggingface")),
}


@dataclass(frozen=True)
class Case:
    library: str
    name: str
    build: Callable[[], tuple]
    timeout: float | None = None  # seconds, instead of --timeout

    @property
    def key(self) -> str:
        return f"{self.library}/{self.name}"


# --------------------------------------------------------------------------- inputs

def images(model, c=3, size=64, alt=96, batch=2, dims=2):
    """(model, (x,), {other batch, other batch + size}) for an image (dims=2) or volume (3) model."""
    def x(b, s):
        return torch.randn(b, c, *([s] * dims))
    others = {"batch 3": (x(3, size),)}
    if alt:
        others[f"batch 3, size {alt}"] = (x(3, alt),)
    return model, (x(batch, size),), others


def signal(model, c, length=32, alt=48):
    """A 1-D field (batch, c, length)."""
    return images(model, c=c, size=length, alt=alt, dims=1)


def table(model, features, batch=16):
    return model, (torch.randn(batch, features),), {"batch 7": (torch.randn(7, features),)}


def graph(n_nodes, n_edges, features, edge_dim=None, n_graphs=None):
    """(x, edge_index[, edge_attr][, batch]) of a random graph."""
    x = torch.randn(n_nodes, features)
    ei = torch.stack([torch.randint(0, n_nodes, (n_edges,)), torch.randint(0, n_nodes, (n_edges,))])
    out = [x, ei]
    if edge_dim:
        out.append(torch.randn(n_edges, edge_dim))
    if n_graphs:
        out.append(torch.arange(n_nodes) * n_graphs // n_nodes)  # sorted, every graph non-empty
    return tuple(out)


def graphs(model, features=8, **kw):
    return model, graph(12, 30, features, **kw), {"another graph (17 nodes)": graph(17, 44, features, **kw)}


def molecules(model, atoms=10, alt_atoms=14, graphs_=2):
    """(z, pos, batch) for SchNet-like models."""
    def mol(n):
        return (torch.randint(1, 10, (n,)), torch.randn(n, 3) * 1.5,
                torch.arange(graphs_).repeat_interleave(n // graphs_ + 1)[:n])
    return model, mol(atoms), {f"{alt_atoms} atoms": mol(alt_atoms)}


def tokens(model, vocab=100, batch=2, length=8):
    def ids(b, n):
        return torch.randint(0, vocab, (b, n))
    return model, (ids(batch, length),), {"batch 3": (ids(3, length),), "batch 3, length 12": (ids(3, 12),)}


# --------------------------------------------------------------------------- torchvision

def tv(name, size=64, alt=96, **kw):
    import torchvision
    kw.setdefault("weights", None)
    return images(getattr(torchvision.models, name)(**kw), size=size, alt=alt)


def tv_vit():
    from torchvision.models import VisionTransformer
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                          num_classes=10)
    return images(m, size=32, alt=48)


def tv_seg(name, **kw):
    import torchvision
    m = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=3, **kw)
    return images(m, size=64, alt=96)


# --------------------------------------------------------------------------- timm

def timm_model(name, size=64, alt=96, **kw):
    import timm
    return images(timm.create_model(name, pretrained=False, num_classes=10, **kw), size=size, alt=alt)


# --------------------------------------------------------------------------- torch_geometric

def pyg(name, **kw):
    import torch_geometric.nn.models as M
    return graphs(getattr(M, name)(**kw))


def pyg_mlp():
    from torch_geometric.nn.models import MLP
    return table(MLP([8, 32, 32, 4]), 8)


def pyg_pna():
    from torch_geometric.nn.models import PNA
    deg = torch.tensor([1, 4, 6, 4, 2, 1])
    m = PNA(8, 16, 2, 4, aggregators=["mean", "min", "max", "std"],
            scalers=["identity", "amplification", "attenuation"], deg=deg)
    return graphs(m)


def pyg_attentivefp():
    from torch_geometric.nn.models import AttentiveFP
    m = AttentiveFP(in_channels=8, hidden_channels=16, out_channels=2, edge_dim=4, num_layers=2, num_timesteps=2)
    return graphs(m, edge_dim=4, n_graphs=3)


def pyg_graphunet():
    from torch_geometric.nn.models import GraphUNet
    return graphs(GraphUNet(8, 16, 4, depth=2))


class _DenseRadiusGraph(nn.Module):
    """SchNet's interaction graph in plain torch: every pair of atoms of one molecule closer
    than the cutoff. (PyG's default, radius_graph, needs pyg-lib or torch-cluster, which have
    no wheels on PyPI for this torch; DimeNet++ and ViSNet call it with no such hook and are
    left out of the list for that reason.)"""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, pos, batch):
        d = torch.cdist(pos, pos)
        n = pos.size(0)
        mask = (d < self.cutoff) & (batch[:, None] == batch[None, :]) & ~torch.eye(n, dtype=torch.bool)
        edge_index = mask.nonzero().t()
        return edge_index, d[edge_index[0], edge_index[1]]


def pyg_schnet():
    from torch_geometric.nn.models import SchNet
    m = SchNet(hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=10, cutoff=5.0,
               interaction_graph=_DenseRadiusGraph(5.0))
    return molecules(m)


# --------------------------------------------------------------------------- MONAI

def monai_net(name, size=32, alt=48, c=1, dims=2, **kw):
    import monai.networks.nets as N
    return images(getattr(N, name)(**kw), c=c, size=size, alt=alt, dims=dims)


# --------------------------------------------------------------------------- neuraloperator

def neuralop_fno(dims):
    from neuralop.models import FNO
    m = FNO(n_modes=(6,) * dims, in_channels=2, out_channels=1, hidden_channels=16, n_layers=2)
    size, alt = {1: (32, 48), 2: (24, 32), 3: (12, 16)}[dims]
    return images(m, c=2, size=size, alt=alt, dims=dims)


def neuralop_tfno():
    from neuralop.models import TFNO
    m = TFNO(n_modes=(6, 6), in_channels=2, out_channels=1, hidden_channels=16, n_layers=2, factorization="tucker",
             rank=0.5)
    return images(m, c=2, size=24, alt=32)


def neuralop_uno():
    from neuralop.models import UNO
    m = UNO(in_channels=2, out_channels=1, hidden_channels=16, lifting_channels=16, projection_channels=16,
            n_layers=3, uno_out_channels=[16, 16, 16], uno_n_modes=[[6, 6], [4, 4], [6, 6]],
            uno_scalings=[[1.0, 1.0], [0.5, 0.5], [2.0, 2.0]], channel_mlp_skip="linear")
    return images(m, c=2, size=24, alt=32)


def neuralop_codano():
    from neuralop.models import CODANO
    m = CODANO(output_variable_codimension=1, hidden_variable_codimension=2, lifting_channels=4,
               projection_channels=4, n_layers=2, n_modes=[[6, 6], [6, 6]], n_heads=[2, 2],
               per_layer_scaling_factors=[[1, 1], [1, 1]], attention_scaling_factors=[1, 1])
    return images(m, c=2, size=16, alt=24)


# --------------------------------------------------------------------------- PhysicsNeMo

def pn_fc(**kw):
    from physicsnemo.models.mlp import FullyConnected
    return table(FullyConnected(in_features=8, layer_size=32, out_features=2, num_layers=3, **kw), 8)


def pn_fno(dims):
    from physicsnemo.models.fno import FNO
    m = FNO(in_channels=2, out_channels=1, decoder_layers=1, decoder_layer_size=16, dimension=dims, latent_channels=16,
            num_fno_layers=2, num_fno_modes=6, padding=4)
    return images(m, c=2, size=32 if dims == 1 else 24, alt=48 if dims == 1 else 32, dims=dims)


def pn_afno():
    from physicsnemo.models.afno import AFNO
    m = AFNO(inp_shape=[32, 32], in_channels=2, out_channels=1, patch_size=[8, 8], embed_dim=32, depth=2, num_blocks=4)
    return images(m, c=2, size=32, alt=None)


def pn_unet():
    from physicsnemo.models.unet import UNet
    m = UNet(in_channels=1, out_channels=1, model_depth=2, feature_map_channels=(4, 4, 8, 8), num_conv_blocks=2,
             gradient_checkpointing=False)
    return images(m, c=1, size=16, alt=24, dims=3)


def pn_pix2pix():
    from physicsnemo.models.pix2pix import Pix2Pix
    m = Pix2Pix(in_channels=2, out_channels=1, dimension=2, conv_layer_size=8, n_downsampling=2, n_upsampling=2,
                n_blocks=1)
    return images(m, c=2, size=32, alt=48)


def pn_srresnet():
    from physicsnemo.models.srrn import SRResNet
    m = SRResNet(in_channels=2, out_channels=2, conv_layer_size=8, n_resid_blocks=2, scaling_factor=2)
    return images(m, c=2, size=16, alt=24, dims=3)


def pn_transolver():
    from physicsnemo.models.transolver import Transolver
    m = Transolver(functional_dim=3, out_dim=1, embedding_dim=2, n_layers=2, n_hidden=32, n_head=4, slice_num=8,
                   use_te=False)

    def points(b, n):
        return torch.randn(b, n, 3), torch.rand(b, n, 2)
    return m, points(2, 50), {"batch 3": points(3, 50), "batch 3, 70 points": points(3, 70)}


# --------------------------------------------------------------------------- DeepXDE

def dde_fnn(layers, act):
    import deepxde as dde
    return table(dde.nn.FNN(layers, act, "Glorot normal"), layers[0])


def dde_pfnn():
    import deepxde as dde
    return table(dde.nn.PFNN([2, [16, 16], [16, 16], 2], "tanh", "Glorot normal"), 2)


def dde_deeponet(cls="DeepONet"):
    import deepxde as dde
    if cls == "DeepONet":
        m = dde.nn.DeepONet([8, 16, 16], [2, 16, 16], "tanh", "Glorot normal")
        ex = ((torch.randn(6, 8), torch.randn(6, 2)),)
        other = {"batch 9": ((torch.randn(9, 8), torch.randn(9, 2)),)}
    else:  # DeepONetCartesianProd: branch (functions, sensors) x trunk (points, dims)
        m = dde.nn.DeepONetCartesianProd([8, 16, 16], [2, 16, 16], "tanh", "Glorot normal")
        ex = ((torch.randn(4, 8), torch.randn(10, 2)),)
        other = {"5 functions x 13 points": ((torch.randn(5, 8), torch.randn(13, 2)),)}
    return m, ex, other


def dde_mionet():
    import deepxde as dde
    m = dde.nn.MIONetCartesianProd([8, 16, 16], [6, 16, 16], [2, 16, 16], "tanh", "Glorot normal")
    ex = ((torch.randn(4, 8), torch.randn(4, 6), torch.randn(10, 2)),)
    return m, ex, {"5 functions x 13 points": ((torch.randn(5, 8), torch.randn(5, 6), torch.randn(13, 2)),)}


# --------------------------------------------------------------------------- segmentation-models-pytorch

def smp_model(arch, encoder="resnet18", size=64, alt=96, **kw):
    import segmentation_models_pytorch as smp
    m = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=2, **kw)
    return images(m, size=size, alt=alt)


# --------------------------------------------------------------------------- e3nn

def e3nn_fcnet():
    from e3nn.nn import FullyConnectedNet
    return table(FullyConnectedNet([8, 32, 32, 4], torch.tanh), 8)


class _E3Gated(nn.Module):
    """A small equivariant network: Linear -> Gate -> FullyConnectedTensorProduct -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        from e3nn import o3
        from e3nn.nn import Gate
        irreps_in = o3.Irreps("4x0e + 2x1o")
        self.gate = Gate("8x0e", [torch.tanh], "4x0e", [torch.sigmoid], "4x1o")
        self.lin1 = o3.Linear(irreps_in, self.gate.irreps_in)
        self.tp = o3.FullyConnectedTensorProduct(self.gate.irreps_out, self.gate.irreps_out, "8x0e + 4x1o")
        self.lin2 = o3.Linear("8x0e + 4x1o", "2x0e + 1x1o")

    def forward(self, x):
        h = self.gate(self.lin1(x))
        return self.lin2(self.tp(h, h))


def e3nn_gated():
    return table(_E3Gated(), 10, batch=12)


def e3nn_linear():
    from e3nn import o3
    m = nn.Sequential(o3.Linear("8x0e + 4x1o", "16x0e + 8x1o"), o3.Linear("16x0e + 8x1o", "4x0e + 2x1o"))
    return table(m, 20)


# --------------------------------------------------------------------------- transformers

def hf(model_cls, config_cls, image=False, **cfg):
    import transformers
    config = getattr(transformers, config_cls)(**cfg)
    m = getattr(transformers, model_cls)(config)
    if image:
        return images(m, size=32, alt=48)
    return tokens(m, vocab=cfg.get("vocab_size", 100))


_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64)


# --------------------------------------------------------------------------- the list

P = partial
MODELS: list[Case] = [
    # torchvision classification (random weights, 64x64 inputs)
    Case("torchvision", "resnet18", P(tv, "resnet18", num_classes=10)),
    Case("torchvision", "resnet50", P(tv, "resnet50", num_classes=10)),
    Case("torchvision", "resnext50_32x4d", P(tv, "resnext50_32x4d", num_classes=10)),
    Case("torchvision", "wide_resnet50_2", P(tv, "wide_resnet50_2", num_classes=10)),
    Case("torchvision", "vgg11_bn", P(tv, "vgg11_bn", num_classes=10)),
    Case("torchvision", "alexnet", P(tv, "alexnet", num_classes=10)),
    Case("torchvision", "squeezenet1_1", P(tv, "squeezenet1_1", num_classes=10)),
    Case("torchvision", "densenet121", P(tv, "densenet121", num_classes=10)),
    Case("torchvision", "googlenet", P(tv, "googlenet", num_classes=10, aux_logits=False, init_weights=True)),
    Case("torchvision", "inception_v3", P(tv, "inception_v3", size=80, alt=96, num_classes=10, aux_logits=False,
                                          init_weights=True)),
    Case("torchvision", "mobilenet_v2", P(tv, "mobilenet_v2", num_classes=10)),
    Case("torchvision", "mobilenet_v3_small", P(tv, "mobilenet_v3_small", num_classes=10)),
    Case("torchvision", "mnasnet0_5", P(tv, "mnasnet0_5", num_classes=10)),
    Case("torchvision", "shufflenet_v2_x0_5", P(tv, "shufflenet_v2_x0_5", num_classes=10)),
    Case("torchvision", "efficientnet_b0", P(tv, "efficientnet_b0", num_classes=10)),
    Case("torchvision", "regnet_y_400mf", P(tv, "regnet_y_400mf", num_classes=10)),
    Case("torchvision", "convnext_tiny", P(tv, "convnext_tiny", num_classes=10)),
    Case("torchvision", "swin_t", P(tv, "swin_t", num_classes=10)),
    Case("torchvision", "VisionTransformer (tiny)", tv_vit),
    # torchvision segmentation
    Case("torchvision", "fcn_resnet50", P(tv_seg, "fcn_resnet50")),
    Case("torchvision", "deeplabv3_mobilenet_v3_large", P(tv_seg, "deeplabv3_mobilenet_v3_large")),
    Case("torchvision", "lraspp_mobilenet_v3_large", P(tv_seg, "lraspp_mobilenet_v3_large")),

    # timm
    Case("timm", "resnet18", P(timm_model, "resnet18")),
    Case("timm", "resnet10t", P(timm_model, "resnet10t")),
    Case("timm", "efficientnet_b0", P(timm_model, "efficientnet_b0")),
    Case("timm", "mobilenetv3_small_100", P(timm_model, "mobilenetv3_small_100")),
    Case("timm", "lcnet_050", P(timm_model, "lcnet_050")),
    Case("timm", "ghostnet_100", P(timm_model, "ghostnet_100")),
    Case("timm", "regnetx_002", P(timm_model, "regnetx_002")),
    Case("timm", "repvgg_a0", P(timm_model, "repvgg_a0")),
    Case("timm", "dla34", P(timm_model, "dla34")),
    Case("timm", "cspresnet50", P(timm_model, "cspresnet50")),
    Case("timm", "convnext_atto", P(timm_model, "convnext_atto")),
    Case("timm", "edgenext_xx_small", P(timm_model, "edgenext_xx_small")),
    Case("timm", "poolformerv2_s12", P(timm_model, "poolformerv2_s12")),
    Case("timm", "mobilevit_xxs", P(timm_model, "mobilevit_xxs")),
    Case("timm", "vit_tiny (32px, patch 8)", P(timm_model, "vit_tiny_patch16_224", size=32, alt=48, img_size=32,
                                               patch_size=8)),
    Case("timm", "deit_tiny (32px, patch 8)", P(timm_model, "deit_tiny_patch16_224", size=32, alt=48, img_size=32,
                                                patch_size=8)),
    Case("timm", "swin_tiny (64px, window 4)", P(timm_model, "swin_tiny_patch4_window7_224", img_size=64,
                                                 window_size=4)),
    Case("timm", "mixer_s16 (64px)", P(timm_model, "mixer_s16_224", img_size=64)),
    Case("timm", "levit_128s (64px)", P(timm_model, "levit_128s", img_size=64)),

    # torch_geometric.nn.models (node features 8, 12 nodes / 30 edges; other graph 17 / 44)
    Case("pyg", "GCN", P(pyg, "GCN", in_channels=8, hidden_channels=16, num_layers=2, out_channels=4)),
    Case("pyg", "GCN (jk=cat, batch_norm)", P(pyg, "GCN", in_channels=8, hidden_channels=16, num_layers=3,
                                              out_channels=4, jk="cat", norm="batch_norm")),
    Case("pyg", "GraphSAGE", P(pyg, "GraphSAGE", in_channels=8, hidden_channels=16, num_layers=2, out_channels=4)),
    Case("pyg", "GIN", P(pyg, "GIN", in_channels=8, hidden_channels=16, num_layers=2, out_channels=4)),
    Case("pyg", "GAT", P(pyg, "GAT", in_channels=8, hidden_channels=16, num_layers=2, out_channels=4, heads=2)),
    Case("pyg", "GATv2", P(pyg, "GAT", in_channels=8, hidden_channels=16, num_layers=2, out_channels=4, heads=2,
                           v2=True)),
    Case("pyg", "EdgeCNN", P(pyg, "EdgeCNN", in_channels=8, hidden_channels=16, num_layers=2, out_channels=4)),
    Case("pyg", "PNA", pyg_pna),
    Case("pyg", "PMLP", P(pyg, "PMLP", in_channels=8, hidden_channels=16, out_channels=4, num_layers=2)),
    Case("pyg", "MLP", pyg_mlp),
    Case("pyg", "AttentiveFP", pyg_attentivefp),
    Case("pyg", "GraphUNet", pyg_graphunet),
    Case("pyg", "SchNet (dense radius graph)", pyg_schnet),

    # MONAI (2-D unless named 3-D; 1 input channel)
    Case("monai", "UNet", P(monai_net, "UNet", spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16, 32),
                            strides=(2, 2), num_res_units=2)),
    Case("monai", "UNet (3-D)", P(monai_net, "UNet", size=16, alt=24, dims=3, spatial_dims=3, in_channels=1,
                                  out_channels=2, channels=(4, 8, 16), strides=(2, 2))),
    Case("monai", "BasicUNet", P(monai_net, "BasicUNet", spatial_dims=2, in_channels=1, out_channels=2,
                                 features=(8, 8, 16, 16, 32, 8))),
    Case("monai", "BasicUNetPlusPlus", P(monai_net, "BasicUNetPlusPlus", spatial_dims=2, in_channels=1, out_channels=2,
                                         features=(8, 8, 16, 16, 32, 8))),
    Case("monai", "DynUNet", P(monai_net, "DynUNet", spatial_dims=2, in_channels=1, out_channels=2,
                               kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                               filters=[8, 16, 32])),
    Case("monai", "AttentionUnet", P(monai_net, "AttentionUnet", spatial_dims=2, in_channels=1, out_channels=2,
                                     channels=(8, 16, 32), strides=(2, 2))),
    Case("monai", "SegResNet", P(monai_net, "SegResNet", spatial_dims=2, init_filters=8, in_channels=1,
                                 out_channels=2, blocks_down=(1, 2, 2), blocks_up=(1, 1))),
    Case("monai", "VNet", P(monai_net, "VNet", spatial_dims=2, in_channels=1, out_channels=2)),
    Case("monai", "HighResNet", P(monai_net, "HighResNet", spatial_dims=2, in_channels=1, out_channels=2)),
    Case("monai", "AutoEncoder", P(monai_net, "AutoEncoder", spatial_dims=2, in_channels=1, out_channels=1,
                                   channels=(8, 16), strides=(2, 2))),
    Case("monai", "DenseNet121", P(monai_net, "DenseNet121", spatial_dims=2, in_channels=1, out_channels=3)),
    Case("monai", "ResNet (resnet10)", P(monai_net, "resnet10", spatial_dims=2, n_input_channels=1, num_classes=3)),
    Case("monai", "EfficientNetBN (b0)", P(monai_net, "EfficientNetBN", model_name="efficientnet-b0", pretrained=False,
                                           spatial_dims=2, in_channels=1, num_classes=3)),
    Case("monai", "ViT", P(monai_net, "ViT", alt=48, in_channels=1, img_size=(32, 32), patch_size=(8, 8),
                           hidden_size=64, mlp_dim=128, num_layers=2, num_heads=4, spatial_dims=2,
                           classification=True, num_classes=3)),
    Case("monai", "UNETR", P(monai_net, "UNETR", in_channels=1, out_channels=2, img_size=(32, 32), feature_size=8,
                             hidden_size=64, mlp_dim=128, num_heads=4, spatial_dims=2)),
    Case("monai", "SwinUNETR", P(monai_net, "SwinUNETR", size=64, alt=96, in_channels=1, out_channels=2,
                                 feature_size=12, depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 3), spatial_dims=2)),

    # neuraloperator
    Case("neuralop", "FNO 1-D", P(neuralop_fno, 1)),
    Case("neuralop", "FNO 2-D", P(neuralop_fno, 2)),
    Case("neuralop", "FNO 3-D", P(neuralop_fno, 3)),
    Case("neuralop", "TFNO 2-D (tucker)", neuralop_tfno),
    Case("neuralop", "UNO 2-D", neuralop_uno),
    Case("neuralop", "CODANO 2-D", neuralop_codano),

    # NVIDIA PhysicsNeMo
    Case("physicsnemo", "FullyConnected", pn_fc),
    Case("physicsnemo", "FullyConnected (skip connections)", P(pn_fc, skip_connections=True)),
    Case("physicsnemo", "FNO 1-D", P(pn_fno, 1)),
    Case("physicsnemo", "FNO 2-D", P(pn_fno, 2)),
    Case("physicsnemo", "AFNO", pn_afno),
    Case("physicsnemo", "UNet (3-D)", pn_unet),
    Case("physicsnemo", "Pix2Pix", pn_pix2pix),
    Case("physicsnemo", "SRResNet (3-D)", pn_srresnet),
    Case("physicsnemo", "Transolver", pn_transolver),

    # DeepXDE (pytorch backend)
    Case("deepxde", "FNN (tanh)", P(dde_fnn, [2, 32, 32, 1], "tanh")),
    Case("deepxde", "FNN (relu, 4 layers)", P(dde_fnn, [3, 32, 32, 32, 32, 2], "relu")),
    Case("deepxde", "PFNN", dde_pfnn),
    Case("deepxde", "DeepONet", dde_deeponet),
    Case("deepxde", "DeepONetCartesianProd", P(dde_deeponet, "cartesian")),
    Case("deepxde", "MIONetCartesianProd", dde_mionet),

    # segmentation-models-pytorch (encoder_weights=None)
    Case("smp", "Unet (resnet18)", P(smp_model, "Unet")),
    Case("smp", "Unet (mobilenet_v2)", P(smp_model, "Unet", "mobilenet_v2")),
    Case("smp", "Unet (efficientnet-b0)", P(smp_model, "Unet", "efficientnet-b0")),
    Case("smp", "UnetPlusPlus (resnet18)", P(smp_model, "UnetPlusPlus")),
    Case("smp", "FPN (resnet18)", P(smp_model, "FPN")),
    Case("smp", "Linknet (resnet18)", P(smp_model, "Linknet")),
    Case("smp", "PSPNet (resnet18)", P(smp_model, "PSPNet")),
    Case("smp", "DeepLabV3Plus (resnet18)", P(smp_model, "DeepLabV3Plus")),
    Case("smp", "PAN (resnet18, 128px)", P(smp_model, "PAN", size=128, alt=160)),
    Case("smp", "MAnet (resnet18)", P(smp_model, "MAnet")),
    Case("smp", "Segformer (resnet18)", P(smp_model, "Segformer")),

    # e3nn
    Case("e3nn", "FullyConnectedNet", e3nn_fcnet),
    Case("e3nn", "o3.Linear stack", e3nn_linear),
    Case("e3nn", "gated tensor-product net", e3nn_gated),

    # Hugging Face transformers (tiny configs, random weights)
    Case("transformers", "BertModel", P(hf, "BertModel", "BertConfig", **_BERT)),
    Case("transformers", "BertForSequenceClassification", P(hf, "BertForSequenceClassification", "BertConfig",
                                                            num_labels=3, **_BERT)),
    Case("transformers", "DistilBertModel", P(hf, "DistilBertModel", "DistilBertConfig", vocab_size=100, dim=32,
                                              n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)),
    Case("transformers", "GPT2Model", P(hf, "GPT2Model", "GPT2Config", vocab_size=100, n_embd=32, n_layer=2, n_head=4,
                                        n_positions=64, use_cache=False)),
    Case("transformers", "LlamaModel", P(hf, "LlamaModel", "LlamaConfig", vocab_size=100, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, max_position_embeddings=64, use_cache=False)),
    Case("transformers", "LlamaModel (GQA)", P(hf, "LlamaModel", "LlamaConfig", vocab_size=100, hidden_size=32,
                                               intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, max_position_embeddings=64, use_cache=False)),
    Case("transformers", "T5EncoderModel", P(hf, "T5EncoderModel", "T5Config", vocab_size=100, d_model=32, d_kv=8,
                                             d_ff=64, num_layers=2, num_heads=4)),
    Case("transformers", "ViTForImageClassification", P(hf, "ViTForImageClassification", "ViTConfig", image=True,
                                                        image_size=32, patch_size=8, hidden_size=32,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        intermediate_size=37, num_labels=3)),
]


def by_key() -> dict[str, Case]:
    out = {c.key: c for c in MODELS}
    assert len(out) == len(MODELS), "duplicate model names"
    return out


def library_name(name: str) -> str | None:
    """A library's key in LIBRARIES from its key, module or PyPI name (case-insensitive)."""
    n = name.lower()
    for key, lib in LIBRARIES.items():
        if n == key or n in lib.modules or n == lib.pip or n in lib.aliases:
            return key
    return None
