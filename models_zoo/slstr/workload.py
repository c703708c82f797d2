"""SLSTR: a U-Net masking clouds pixel by pixel in multi-band scenes (pixel accuracy)."""

from ..vision.models import UNet
from ..workload import Workload, classification_loss, image_scales, image_task
from . import data

WORKLOAD = Workload(
    "slstr", "U-Net", "accuracy",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch, data.BANDS),
    lambda task, scale: UNet(len(data.BANDS), 2, width=scale.width, depth=3),
    classification_loss, image_scales(cpu_steps=500, cpu_batch=32), lr=1e-3, target=0.02, lam=0.3,
    informative=tuple(b for b in data.BANDS if b not in data.UNINFORMATIVE), uninformative=tuple(data.UNINFORMATIVE))
