"""PPA: ogbg-ppa's GCN with edge features classifying graphs by generative model (accuracy)."""

from ..graph.models import PPAGCN
from ..workload import Workload, classification_loss, graph_scales, graph_task
from . import data

WORKLOAD = Workload(
    "ppa", "GCN", "accuracy",
    lambda scale, seed: graph_task(*data.load(scale.samples, seed), scale.batch, {"edge_attr": data.EDGE_FEATURES}),
    lambda task, scale: PPAGCN(scale.width, layers=3, n_classes=len(data.CLASSES)),
    classification_loss, graph_scales(), lr=1e-3, target=0.4, lam=0.3,
    informative=tuple(data.INFORMATIVE), uninformative=tuple(data.UNINFORMATIVE))
