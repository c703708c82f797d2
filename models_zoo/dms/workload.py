"""DMS: a CNN + FC classifying diffuse scattering patterns by short-range order (accuracy)."""

from ..vision.models import CNNClassifier
from ..workload import Workload, classification_loss, image_scales, image_task
from . import data

WORKLOAD = Workload(
    "dms", "CNN + FC", "accuracy",
    lambda scale, seed: image_task(*data.load(scale.samples, scale.size, seed), scale.batch),
    lambda task, scale: CNNClassifier(1, scale.size, len(data.CLASSES), width=scale.width),
    classification_loss, image_scales(), lr=1e-3, target=0.15, lam=0.5)
