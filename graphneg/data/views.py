"""MNIST-5k with the contrastive views drawn once per seed and epoch: every loss trained on a seed sees
the same views in the same batch order (a paired comparison of losses, as in ``experiments/``)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from graphneg.data.image_augment import digit_views
from graphneg.data.mnist import MNIST5kDataModule

__all__ = ["CachedViewsMNIST5kDataModule"]

# views of one (train_per_class, epochs, seed, crop_scale, strength) computed once per process
_VIEWS: Dict[tuple, Tuple[torch.Tensor, List[Tuple[torch.Tensor, torch.Tensor]]]] = {}


class CachedViewsMNIST5kDataModule(L.LightningDataModule):
    """MNIST-5k stratified split (400 train / 100 test digits per class) for contrastive learning, the
    training views pre-computed per epoch.

    The first ``train_per_class`` training digits of each class are kept; for each of ``epochs`` epochs
    two views of every kept digit are drawn with :func:`graphneg.data.digit_views` (``crop_scale``,
    brightness / contrast jitter ``strength``) from torch's generator seeded with ``10_000 + seed`` (the
    global RNG state is restored afterwards, so building the views does not move a model's
    initialisation). ``train_dataloader`` serves epoch ``e``'s views (cycled past ``epochs``), shuffled by
    a generator seeded with ``seed * 1000 + e``: train with ``Trainer(reload_dataloaders_every_n_epochs=1)``.
    ``train_eval_dataloader`` / ``test_dataloader`` (also ``val_dataloader``) are
    :class:`graphneg.data.MNIST5kDataModule`'s: all 4,000 training digits un-augmented / the 1,000 test
    digits, the banks of :class:`graphneg.callbacks.KNNProbe` / ``LinearProbe``.

    Args:
        train_per_class: training digits per class (<= 400).
        epochs: epochs of pre-computed views.
        seed: seeds the views and the batch order.
        batch_size: training batch size (the last incomplete batch is dropped).
        crop_scale, strength: of :func:`graphneg.data.digit_views` (stronger than ``MNIST5kDataModule``'s
            default views: crop ``(0.3, 1)`` and jitter 0.5).
        eval_batch_size: batch size of the evaluation loaders.
    """

    def __init__(self, train_per_class: int = 150, epochs: int = 4, seed: int = 0, batch_size: int = 64,
                 crop_scale: Sequence[float] = (0.3, 1.0), strength: float = 0.5, eval_batch_size: int = 1000,
                 data_path: Optional[str] = None):
        super().__init__()
        if not 1 <= train_per_class <= 400:
            raise ValueError(f"train_per_class must be in 1..400 (the split has 400 training digits per "
                             f"class), got {train_per_class}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.train_per_class, self.epochs, self.seed = int(train_per_class), int(epochs), int(seed)
        self.batch_size, self.crop_scale, self.strength = int(batch_size), tuple(crop_scale), float(strength)
        self.base = MNIST5kDataModule(data_path=data_path, mode="contrastive", split="stratified",
                                      eval_batch_size=eval_batch_size)
        self.labels: Optional[torch.Tensor] = None
        self.cache: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: Optional[str] = None) -> None:
        if self.labels is not None:
            return
        self.base.setup()
        key = (self.base.data_path, self.train_per_class,
               self.epochs, self.seed, self.crop_scale, self.strength)
        if key not in _VIEWS:
            labels = self.base.train_set.labels
            keep = torch.cat([(labels == c).nonzero(as_tuple=True)[0][: self.train_per_class]
                              for c in range(10)]).sort().values
            images = self.base.train_set.images[keep]
            views = digit_views(crop_scale=self.crop_scale, strength=self.strength)
            state = torch.get_rng_state()
            torch.manual_seed(10_000 + self.seed)
            cache = []
            for _ in range(self.epochs):
                pairs = [views(img.float() / 255.0) for img in images]  # SimCLRViews normalises
                cache.append((torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])))
            torch.set_rng_state(state)
            _VIEWS[key] = (labels[keep], cache)
        self.labels, self.cache = _VIEWS[key]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        e = self.trainer.current_epoch if self.trainer is not None else 0
        v1, v2 = self.cache[e % len(self.cache)]
        g = torch.Generator().manual_seed(self.seed * 1000 + e)
        return DataLoader(TensorDataset(v1, v2, self.labels), batch_size=self.batch_size, shuffle=True,
                          drop_last=True, generator=g)

    def train_eval_dataloader(self) -> DataLoader:
        self.setup()
        return self.base.train_eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self.base.test_dataloader()

    val_dataloader = test_dataloader
