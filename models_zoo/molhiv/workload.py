"""Molhiv: ogbg-molhiv's GINE with atom and bond encoders classifying molecules by a
substructure rule (accuracy)."""

from ..graph.models import MolhivGIN
from ..workload import Workload, classification_loss, graph_scales, graph_task
from . import data

WORKLOAD = Workload(
    "molhiv", "GIN", "accuracy",
    lambda scale, seed: graph_task(*data.load(scale.samples, seed), scale.batch),
    lambda task, scale: MolhivGIN(scale.width, layers=3, n_tasks=2),
    classification_loss, graph_scales(), lr=1e-3, target=0.4, lam=0.3)
