"""STEM-DL: VGG-11 classifying diffraction patterns by Bravais lattice (accuracy)."""

from ..vision.models import VGG11
from ..workload import Workload, classification_loss, image_scales, image_task
from . import data

WORKLOAD = Workload(
    "stemdl", "VGG", "accuracy",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch),
    lambda task, scale: VGG11(1, len(data.CLASSES), width=scale.width),
    classification_loss, image_scales(), lr=1e-3, target=0.4, lam=0.3)
