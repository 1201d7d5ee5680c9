"""Encoders and LightningModules."""
from graphneg.models.encoders import Flatten, SmallCNN
from graphneg.models.metric import MetricLearningModule

__all__ = ["SmallCNN", "Flatten", "MetricLearningModule"]
