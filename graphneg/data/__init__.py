"""LightningDataModules, dataset readers and samplers."""
from graphneg.data.mnist import MNIST5kDataModule, TensorImageDataset, load_mnist5k
from graphneg.data.samplers import MPerClassSampler

__all__ = ["MNIST5kDataModule", "MPerClassSampler", "TensorImageDataset", "load_mnist5k"]
