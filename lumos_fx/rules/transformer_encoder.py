"""``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``, traced through their own
computation without the inference fast path (which computes the same function), so that
their attention, feed-forward and norm layers reach the rules."""

from __future__ import annotations

from torch import fx, nn

from .api import Connecting, ModuleRule, Tracing, Unsupported, trace_through
from .registry import REGISTRY


def _encoder_layer(layer: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None,
                   is_causal: bool = False):
    """``nn.TransformerEncoderLayer.forward`` without its inference fast path."""
    x = src
    if layer.norm_first:
        x = x + layer._sa_block(layer.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + layer._ff_block(layer.norm2(x))
    x = layer.norm1(x + layer._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
    return layer.norm2(x + layer._ff_block(x))


def _encoder(encoder: nn.TransformerEncoder, src, mask=None, src_key_padding_mask=None, is_causal=None):
    """``nn.TransformerEncoder.forward`` without its fast path. ``is_causal=None`` (detect it
    from the mask) passes False: the mask itself is applied, which a causal hint only mirrors."""
    for layer in encoder.layers:
        src = layer(src, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
    return encoder.norm(src) if encoder.norm is not None else src


class TracedThrough(ModuleRule):
    """A module the tracer enters through `function`; called as one op (named in
    ``Config(leaf_modules=...)``) it keeps its channels."""

    def __init__(self, function) -> None:
        self.function = function

    def tracing(self, module: nn.Module) -> Tracing:
        return trace_through(self.function)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        raise Unsupported("called as one op: its channels are kept")


REGISTRY.register(TracedThrough(_encoder_layer), nn.TransformerEncoderLayer)
REGISTRY.register(TracedThrough(_encoder), nn.TransformerEncoder)
