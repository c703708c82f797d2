"""Reference transformer models, written as plain PyTorch the way scientists write them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention in timm's layout: one fused qkv projection reshaped to
    (3, heads, head_dim), scaled dot products, heads merged into the output projection."""

    def __init__(self, dim: int, heads: int, sdpa: bool = False) -> None:
        super().__init__()
        self.heads, self.head_dim, self.sdpa = heads, dim // heads, sdpa
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x)). Attention by hand
    (``Attention``, with ``sdpa`` through ``F.scaled_dot_product_attention``) or, with
    ``mha``, ``nn.MultiheadAttention``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, sdpa: bool = False, mha: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mha = mha
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True) if mha else Attention(dim, heads, sdpa)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + (self.attn(h, h, h, need_weights=False)[0] if self.mha else self.attn(h))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision transformer (Dosovitskiy et al., 2021): a strided conv cuts the image into
    patch embeddings, a class token and a positional embedding are added, pre-norm blocks,
    the class token's final state is classified (the BrainTumor workload's model).
    Attention is written by hand by default, or is ``nn.MultiheadAttention`` (``mha``)."""

    def __init__(self, image: int = 32, patch: int = 4, in_channels: int = 3, n_classes: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4, sdpa: bool = False, mha: bool = False) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, sdpa=sdpa, mha=mha) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class SequenceRegressor(nn.Module):
    """nn.TransformerEncoder over a sequence of measurements (a time series of sensor
    readings, a spectrum in bands): input projection, learned positions, encoder layers,
    mean over the sequence, regression head."""

    def __init__(self, n_features: int = 8, length: int = 16, n_out: int = 2, dim: int = 64, depth: int = 3,
                 heads: int = 4, dropout: float = 0.1, norm_first: bool = True) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, n_out)

    def forward(self, x, padding=None):
        h = self.encoder(self.inp(x) + self.pos, src_key_padding_mask=padding)
        return self.head(h.mean(dim=1))
