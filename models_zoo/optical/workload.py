"""Optical: an encoder-decoder reconstructing undamaged laser beam profiles (MSE); damage is
what the reconstruction leaves out."""

from ..vision.models import EncoderDecoder
from ..workload import Workload, image_scales, image_task, mse_loss
from . import data

WORKLOAD = Workload(
    "optical", "encoder-decoder", "MSE",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch),
    lambda task, scale: EncoderDecoder(1, scale.size, latent=max(8, round(256 * scale.width)), width=scale.width),
    mse_loss, image_scales(), lr=1e-3, target=0.05, lam=0.1)
