"""The four image-retrieval benchmarks of GCA-HNG, read from their official distributed layouts.

=====================  ==========================================================  ====================
DataModule             files under ``root``                                        split (zero-shot)
=====================  ==========================================================  ====================
CUB200DataModule       ``images.txt``, ``image_class_labels.txt``, ``images/``      classes 1-100 train,
                       (``root`` = ``CUB_200_2011/`` or its parent)                 101-200 test
Cars196DataModule      ``cars_annos.mat`` (scipy), ``car_ims/``                     classes 1-98 train,
                                                                                    99-196 test
SOPDataModule          ``Ebay_train.txt``, ``Ebay_test.txt`` + the folders named    11,318 train classes,
                       there (``root`` = ``Stanford_Online_Products/`` or parent)   11,316 test classes
InShopDataModule       ``list_eval_partition.txt`` (or ``Eval/...``), ``img/``      3,997 train classes;
                                                                                    query vs gallery
=====================  ==========================================================  ====================

Splits follow the official GCA-HNG data preparation (``scripts/data_process/cub_convert.py``,
``car_convert.py``, ``sop_convert.py``; ``scripts/dataset.py::Inshop_Dataset``), itself the protocol of
Oh Song et al. (CVPR 2016). Labels are contiguous from 0 within each split, in ascending order of the
official class id; In-Shop's query and gallery share one label space (as ``Inshop_Dataset``).

Images are decoded lazily with PIL in ``__getitem__`` (nothing is preloaded), so ``num_workers > 0``
loads them in parallel. Transforms are the official ``scripts/dataset.py`` ones: training
``RandomResizedCrop(224, scale=(0.08, 1)) + RandomHorizontalFlip``, evaluation ``Resize(256) +
CenterCrop(224)``, both followed by ImageNet normalisation; ``image_size`` / ``resize`` change the 224 /
256 (tests use small images).

Batches for training come from :class:`graphneg.data.MPerClassBatchSampler` (``classes_per_batch`` x
``samples_per_class``, the official ``NUM_SAMPLED_CLASSES`` x ``NUM_PER_CLASS``). ``val_dataloader`` /
``test_dataloader`` return the test split; for In-Shop they return ``[query_loader, gallery_loader]``,
which :class:`graphneg.models.MetricLearningModule` evaluates query against gallery.

Modules: :mod:`~graphneg.data.retrieval.layouts` (the official layouts, :data:`LAYOUTS`, and the index-file
helpers), :mod:`~graphneg.data.retrieval.base` (transforms, :class:`ImageListDataset`,
:class:`RetrievalDataModule`), :mod:`~graphneg.data.retrieval.readers` (the four benchmark DataModules);
every name is importable from ``graphneg.data.retrieval``.
"""
from graphneg.data.retrieval.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageListDataset,
    RetrievalDataModule,
    retrieval_eval_transform,
    retrieval_train_transform,
)
from graphneg.data.retrieval.layouts import LAYOUTS, Split
from graphneg.data.retrieval.readers import CUB200DataModule, Cars196DataModule, InShopDataModule, SOPDataModule

# IMAGENET_MEAN, IMAGENET_STD and Split stay importable from here, as before the split, outside __all__
__all__ = [
    "ImageListDataset", "RetrievalDataModule", "CUB200DataModule", "Cars196DataModule", "SOPDataModule",
    "InShopDataModule", "retrieval_train_transform", "retrieval_eval_transform", "LAYOUTS",
]
