"""EM-Denoise: a U-Net mapping low-dose micrographs to noise-free images (MSE)."""

from ..vision.models import UNet
from ..workload import Workload, image_scales, image_task, mse_loss
from . import data

WORKLOAD = Workload(
    "emdenoise", "U-Net", "MSE",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch),
    lambda task, scale: UNet(1, 1, width=scale.width, depth=3),
    mse_loss, image_scales(cpu_steps=500, cpu_batch=32), lr=1e-3, target=0.06, lam=0.01)
