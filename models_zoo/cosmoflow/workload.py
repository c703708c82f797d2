"""CosmoFlow: a 3D CNN regressing the power-spectrum parameters of density volumes (MSE)."""

from ..vision.models import CosmoFlow
from ..workload import Workload, image_scales, image_task, mse_loss
from . import data

WORKLOAD = Workload(
    "cosmoflow", "3D CNN + FC", "MSE",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch,
                                   [f"z={z}" for z in data.REDSHIFTS]),
    lambda task, scale: CosmoFlow(in_channels=len(data.REDSHIFTS), size=scale.size, n_out=len(data.PARAMS),
                                  width=scale.width),
    mse_loss, image_scales(size=16, cpu_samples=2000, cpu_width=0.5), lr=1e-3, target=0.7, lam=0.05)
