"""BrainTumor: a vision transformer classifying MRI-like slices by lesion (accuracy)."""

from ..transformer.models import ViT
from ..workload import Workload, classification_loss, image_scales, image_task
from . import data

WORKLOAD = Workload(
    "braintumor", "ViT", "accuracy",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch),
    lambda task, scale: ViT(image=scale.size, patch=4, in_channels=1, n_classes=len(data.CLASSES),
                            dim=max(16, round(256 * scale.width)), depth=4, heads=4),
    classification_loss, image_scales(), lr=1e-3, target=0.4, lam=0.1)
