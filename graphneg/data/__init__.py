"""LightningDataModules, dataset readers and samplers."""
from graphneg.data.mnist import MNIST5kDataModule, TensorImageDataset, load_mnist5k
from graphneg.data.mnist_pairs import MNIST5kPairsDataModule
from graphneg.data.samplers import MPerClassBatchSampler, MPerClassSampler
from graphneg.data.graph_augment import (
    AttributeMask, EdgePerturb, GraphAugmentation, NodeDrop, RandomChoice, SubgraphSample, TwoViews, collate_views,
)
from graphneg.data.image_augment import SimCLRViews, cifar_views, digit_views, stl_views
from graphneg.data.tu import TUDataModule, prepare_grakel_tu
from graphneg.data.retrieval import (
    CUB200DataModule, Cars196DataModule, ImageListDataset, InShopDataModule, RetrievalDataModule, SOPDataModule,
)
from graphneg.data.vision import CIFAR10DataModule, CIFAR100DataModule, STL10DataModule

__all__ = [
    "MNIST5kDataModule", "MNIST5kPairsDataModule", "MPerClassBatchSampler", "MPerClassSampler",
    "TensorImageDataset", "load_mnist5k",
    "TUDataModule", "prepare_grakel_tu", "NodeDrop", "EdgePerturb", "AttributeMask", "SubgraphSample",
    "RandomChoice", "TwoViews", "GraphAugmentation", "collate_views",
    "SimCLRViews", "cifar_views", "stl_views", "digit_views",
    "CIFAR10DataModule", "CIFAR100DataModule", "STL10DataModule",
    "RetrievalDataModule", "ImageListDataset", "CUB200DataModule", "Cars196DataModule", "SOPDataModule",
    "InShopDataModule",
]
