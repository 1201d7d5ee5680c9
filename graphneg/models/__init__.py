"""Encoders and LightningModules."""
from graphneg.models.encoders import EmbeddingHead, Flatten, SmallCNN
from graphneg.models.metric import MetricLearningModule
from graphneg.models.contrastive import ContrastiveModule, GraphContrastiveModule
from graphneg.models.gin import GINEncoder
from graphneg.models.projector import MLPProjector
from graphneg.models.resnet import CifarResNet, resnet18, resnet50
from graphneg.models.backbones import GoogLeNetEmbedding, ResNet50Embedding

__all__ = [
    "SmallCNN", "EmbeddingHead", "Flatten", "MetricLearningModule",
    "ContrastiveModule", "GraphContrastiveModule", "GINEncoder", "MLPProjector", "CifarResNet", "resnet18",
    "resnet50", "ResNet50Embedding", "GoogLeNetEmbedding",
]
