"""Evaluation: retrieval (Recall@K, MAP@R, R-Precision, NMI), probes, graph SVC protocol."""
from graphneg.metrics.retrieval import nmi_score, retrieval_metrics

__all__ = ["retrieval_metrics", "nmi_score"]
