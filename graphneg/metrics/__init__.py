"""Evaluation: retrieval (Recall@K, MAP@R, R-Precision, NMI), probes, graph SVC protocol."""
from graphneg.metrics.retrieval import nmi_score, retrieval_metrics
from graphneg.metrics.graph_protocol import svc_protocol
from graphneg.metrics.probe import knn_accuracy, knn_loo_accuracy, linear_probe, logistic_probe

__all__ = ["retrieval_metrics", "nmi_score", "svc_protocol", "knn_accuracy", "knn_loo_accuracy", "linear_probe",
           "logistic_probe"]
