"""MetricLearningModule's evaluation on the benchmark DataModules: same-set and In-Shop query/gallery."""
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from graphneg.data import CUB200DataModule, InShopDataModule
from graphneg.losses import MultiSimilarityLoss
from graphneg.metrics.retrieval import RECALL_KS, retrieval_metrics
from graphneg.models import MetricLearningModule
from retrieval_fixtures import make_cub, make_inshop

SMALL = dict(image_size=16, resize=20, num_workers=0, eval_batch_size=3, classes_per_batch=2, samples_per_class=2)


def _encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 8))


def _embed(enc, ds):
    with torch.no_grad():
        return torch.stack([enc(ds[i][0][None])[0] for i in range(len(ds))]), ds.labels


def _validate(module, dm):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer.validate(module, datamodule=dm, verbose=False)


def test_inshop_query_against_gallery(tmp_path):
    root, _ = make_inshop(tmp_path)
    dm = InShopDataModule(str(root), **SMALL)
    enc = _encoder()
    module = MetricLearningModule(enc, MultiSimilarityLoss(mining=True), ks=RECALL_KS["inshop"], eval_nmi=False)
    out = _validate(module, dm)
    logged = {k.split("/", 1)[1]: v for k, v in out[0].items()}
    dm.setup()
    q, ql = _embed(enc, dm.datasets["query"])
    g, gl = _embed(enc, dm.datasets["gallery"])
    want = retrieval_metrics(q, ql, ks=RECALL_KS["inshop"], ref_embeddings=g, ref_labels=gl, nmi=False)
    same_set = retrieval_metrics(torch.cat([q, g]), torch.cat([ql, gl]), ks=RECALL_KS["inshop"], nmi=False)
    for key in ("recall@1", "recall@10", "recall@50", "map@r", "r_precision"):
        assert logged[key] == pytest.approx(want[key], abs=1e-6), key
    assert want["map@r"] != pytest.approx(same_set["map@r"])  # the two protocols differ on this fixture


def test_same_set_protocol(tmp_path):
    root, _ = make_cub(tmp_path)
    dm = CUB200DataModule(str(root), **SMALL)
    enc = _encoder()
    module = MetricLearningModule(enc, MultiSimilarityLoss(mining=True), ks=RECALL_KS["cub200"], eval_nmi=False)
    logged = {k.split("/", 1)[1]: v for k, v in _validate(module, dm)[0].items()}
    dm.setup()
    x, y = _embed(enc, dm.datasets["test"])
    want = retrieval_metrics(x, y, ks=RECALL_KS["cub200"], nmi=False)
    for key in ("recall@1", "recall@8", "map@r", "r_precision"):
        assert logged[key] == pytest.approx(want[key], abs=1e-6), key


def test_official_step_schedule():
    """scheduler='step': encoder StepLR(lr_step_size, lr_gamma) as the official train.py (LR_POLICY step)."""
    module = MetricLearningModule(_encoder(), MultiSimilarityLoss(mining=True), lr=1e-3, scheduler="step", lr_step_size=2,
                                  lr_gamma=0.5)
    opts, configs = module.configure_optimizers()
    assert len(configs) == 1 and configs[0]["name"] == "lr/encoder" and configs[0]["interval"] == "epoch"
    sched = configs[0]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
    lrs = []
    for _ in range(5):
        lrs.append(opts[0].param_groups[0]["lr"])
        opts[0].step()
        sched.step()
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    with pytest.raises(ValueError, match="'cosine', 'step' or 'none'"):
        MetricLearningModule(_encoder(), MultiSimilarityLoss(mining=True), scheduler="exp")
