"""No host synchronisation in a training step (issue 21), counted on the CPU by tests/sync_counter.py
(the ops that force a device -> host sync on CUDA; with CUDA present also CUDA's own sync debug mode).

Each test prints the offending ``file:line in function: op`` list when it fails. The only syncs
allowed in a step are the kNN graph's edge count (data-dependent by nature) and, in the CPU's compact
GCA-HNG layout, ``GeneratedNegatives.compact()``.
"""
import sys
import os

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from sync_counter import count_syncs  # noqa: E402

from graphneg.losses import (  # noqa: E402
    DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss,
    TripletMarginLoss, UnReMixLoss,
)
from graphneg.losses.gca_hng import generator_diagnostics, generator_loss, node_loss  # noqa: E402
from graphneg.nn import GCAHNG  # noqa: E402
from graphneg.ops import knn as knn_mod  # noqa: E402
from graphneg.ops.knn import chunked_topk, knn_index  # noqa: E402
from graphneg.validation import value_checks  # noqa: E402


@pytest.fixture
def cuda_path(monkeypatch):
    """The kNN kernel's CUDA selection (sync-free two-pass) also on the CPU."""
    monkeypatch.setattr(knn_mod, "PREFILTER_DEVICE_TYPES", set())


# ------------------------------------------------------------------------------------------ detector
def test_detector_records_each_sync_kind_with_its_line():
    """Reference: the CUDA semantics of each op (a data-dependent size or a Python value needs the device)."""
    x = torch.tensor([0.5, -1.0, 2.0, 0.0])
    mask = x > 0
    cases = {
        "item": lambda: x.sum().item(),
        "bool": lambda: bool(x.sum() > 0),
        "if": lambda: 1 if (x > 1).any() else 0,
        "nonzero": lambda: mask.nonzero(),
        "where1": lambda: torch.where(mask),
        "mask_index": lambda: x[mask],
        "mask_assign": lambda: x.clone().__setitem__(mask, 0.0),
        "unique": lambda: torch.unique(x),
        "bincount": lambda: torch.bincount(torch.tensor([0, 2, 2])),
        "tolist": lambda: x.tolist(),
        "numpy": lambda: x.numpy(),
        "equal": lambda: torch.equal(x, x),
        "repeat_interleave": lambda: torch.repeat_interleave(torch.tensor([1, 2])),
    }
    for name, fn in cases.items():
        with count_syncs() as rep:
            fn()
        assert len(rep.events) >= 1, name
        assert all("test_host_sync.py" in e.where for e in rep.events), (name, rep.message())


def test_detector_ignores_sync_free_ops():
    x = torch.randn(6, 5, requires_grad=True)
    with count_syncs() as rep:
        s = x @ x.t()
        v, i = s.topk(3, dim=1)
        o = s.sort(dim=1, stable=True).indices
        g = s.gather(1, i) + x.index_select(0, i[:, 0]).sum()
        w = torch.where(s > 0, s, torch.zeros_like(s)).masked_fill(s < -1, 0.0)
        m = torch.zeros(6, 3).scatter_add_(1, o[:, :3] % 3, s[:, :3])
        loss = v.sum() + g.sum() + w.sum() + m.sum() + s.argmax(1).float().sum() + s.cumsum(1).sum()
        loss.backward()
    assert len(rep) == 0, rep.message()


# ------------------------------------------------------------------------------------------ kNN kernel
def test_knn_kernel_cuda_path_is_sync_free(cuda_path):
    x = torch.randn(64, 8)
    with count_syncs() as rep:
        for _ in chunked_topk(x, x, 5, exclude_self=True, chunk_size=16):
            pass
        knn_index(x, 4)
        knn_index(x, 4, loop=True)
    assert len(rep) == 0, rep.message()


# ------------------------------------------------------------------------------------------ losses
def _synthetic(seed=0):
    torch.manual_seed(seed)
    y = torch.arange(6).repeat(3)
    z = torch.randn(18, 16)
    gen = GCAHNG(16, num_classes=6, num_layers=1, heads=2, rw="chain")
    out = gen(z, y, j_mean=2.0)
    return z, y, out.x.detach(), out.labels, out.anchor_index


METRIC_LOSSES = {"ms": MultiSimilarityLoss, "ms_mined": lambda: MultiSimilarityLoss(mining=True), "npair": NPairLoss,
                 "triplet": TripletMarginLoss}


@pytest.mark.parametrize("name", ["ms", "ms_mined", "npair", "triplet", "proxy_anchor"])
def test_metric_losses_are_sync_free(name):
    z, y, _, _, _ = _synthetic()
    loss = ProxyAnchorLoss(6, 16) if name == "proxy_anchor" else METRIC_LOSSES[name]()
    z = z.clone().requires_grad_(True)
    with value_checks(False), count_syncs() as rep:
        loss(z, y).backward()
    assert len(rep) == 0, rep.message()


@pytest.mark.parametrize("name", ["ms", "ms_mined", "npair", "triplet"])
def test_metric_losses_with_synthetic_negatives_are_sync_free(name):
    z, y, neg, neg_y, anchor = _synthetic()
    z = z.clone().requires_grad_(True)
    with value_checks(False), count_syncs() as rep:
        METRIC_LOSSES[name]()(z, y, neg_embeddings=neg, neg_labels=neg_y, anchor_index=anchor).backward()
    assert len(rep) == 0, rep.message()


@pytest.mark.parametrize("name", ["infonce", "dcl", "hcl", "unremix"])
def test_contrastive_losses_are_sync_free(name, cuda_path):
    loss = {"infonce": InfoNCELoss(), "dcl": DebiasedContrastiveLoss(), "hcl": HCLLoss(),
            "unremix": UnReMixLoss(k=4)}[name]
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(32, 8, generator=g).requires_grad_(True)
    z2 = torch.randn(32, 8, generator=g).requires_grad_(True)
    with value_checks(False), count_syncs() as rep:
        loss(z1, z2).backward()
    assert len(rep) == 0, rep.message()


# ------------------------------------------------------------------------------------------ GCA-HNG
#: sites whose output size is data-dependent by nature in the sparse (kNN) graph (edge counts): allowed
KNN_DATA_DEPENDENT = ("graphneg/ops/knn.py", "_sorted_unique_edges", "graph.py")


def _gca_step(edges, k, rw="chain", static_shapes=True):
    torch.manual_seed(0)
    y = torch.arange(6).repeat(3)
    z = torch.randn(18, 16, requires_grad=True)
    gen = GCAHNG(16, num_classes=6, num_layers=2, heads=4, rw=rw, edges=edges, k=k, static_shapes=static_shapes)
    clf = torch.nn.Linear(16, 6)
    with value_checks(False), count_syncs() as rep:
        out = gen(z, y, j_mean=2.0)
        loss = generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight).total + node_loss(out)
        loss.backward()
        generator_diagnostics(out)
    return rep


@pytest.mark.parametrize("rw", ["chain", "dirichlet", None])
def test_gcahng_complete_step_is_sync_free(rw):
    """The padded layout (static_shapes=True, the default on CUDA): generation, generator and node losses,
    backward and the logged diagnostics without a host sync."""
    rep = _gca_step("complete", None, rw)
    assert len(rep) == 0, rep.message()


@pytest.mark.parametrize("rw", ["chain", "dirichlet", None])
def test_gcahng_knn_step_syncs_only_for_the_edge_count(cuda_path, rw):
    """The class-aware kNN graph has a data-dependent number of edges (symmetrised, deduplicated): its
    construction may sync; nothing else in the step may."""
    rep = _gca_step("knn", 4, rw)
    other = [s for s in rep.sites() if not any(a in s for a in KNN_DATA_DEPENDENT)]
    assert not other, "host synchronisations:\n  " + "\n  ".join(other)


def test_gcahng_compact_layout_syncs_only_to_drop_the_padding():
    """The compact layout (the CPU default) is the padded one plus GeneratedNegatives.compact(): its
    only syncs are compact()'s two nonzero (rows, pairs)."""
    rep = _gca_step("complete", None, "chain", static_shapes=False)
    kinds = sorted((s.split(" in ")[1].split(":")[0], s.split(": ")[1].split(" ")[0]) for s in rep.sites())
    assert all("graphneg/nn/negatives.py" in s for s in rep.sites()), rep.message()
    assert kinds == [("compact", "aten.nonzero.default")] * 2, kinds


# ------------------------------------------------------------------------------------------ module step
def _module_step_syncs(generator: bool):
    import lightning as L

    from graphneg.models import MetricLearningModule

    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16))
    gen = GCAHNG(16, num_classes=6, num_layers=1, heads=2, rw="chain") if generator else None
    module = MetricLearningModule(enc, MultiSimilarityLoss(), generator=gen, num_classes=6, scheduler="none",
                                  eval_nmi=False)
    batches = [(torch.randn(18, 12), torch.arange(6).repeat(3)) for _ in range(2)]
    reports = []
    inner = module.training_step

    def counted(batch, batch_idx):
        with count_syncs() as rep:
            out = inner(batch, batch_idx)
        reports.append(rep)
        return out

    module.training_step = counted
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    with value_checks(False):
        trainer.fit(module, loader)
    assert len(reports) == 2
    return reports[-1]


def test_metric_module_training_step_is_sync_free():
    rep = _module_step_syncs(generator=False)
    assert len(rep) == 0, rep.message()


def test_metric_module_gca_training_step_is_sync_free(monkeypatch):
    """The module's GCA-HNG step with the generator's default layout on CUDA (padded), forced on the CPU by
    emptying graphneg.nn.generator.COMPACT_DEVICE_TYPES."""
    from graphneg.nn import generator as generator_mod

    monkeypatch.setattr(generator_mod, "COMPACT_DEVICE_TYPES", set())
    rep = _module_step_syncs(generator=True)
    assert len(rep) == 0, rep.message()


# ------------------------------------------------------------------------------------------ graph
@pytest.mark.parametrize("n", [0, 1, 2, 5])
@pytest.mark.parametrize("loop", [True, False])
def test_complete_edge_index_equals_the_dense_mask_and_is_sync_free(n, loop):
    """Reference: the nonzero of the dense [B, B] mask (the previous construction), read as (target,
    source), and a loop over all ordered pairs."""
    from graphneg.graph import batch_graph, complete_edge_index, dense_edge_mask

    tgt, src = dense_edge_mask(n, None, "complete", loop).nonzero(as_tuple=True)
    loops = [(j, i) for i in range(n) for j in range(n) if loop or i != j]
    with value_checks(False), count_syncs() as rep:
        got = complete_edge_index(n, loop)
        if n:
            graph = batch_graph(torch.randn(n, 3), edges="complete", loop=loop)
    assert len(rep) == 0, rep.message()
    assert torch.equal(got, torch.stack([src, tgt]))
    assert got.t().tolist() == [list(p) for p in loops]
    if n:
        assert torch.equal(graph.edge_index, got)


def test_check_batch_values_false_checks_structure_only_without_sync():
    from graphneg.validation import check_batch

    emb = torch.tensor([[float("nan"), 0.0], [1.0, 2.0]])
    y = torch.tensor([0, 0])  # one class, a NaN: both value errors
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_batch(emb, y)
    with count_syncs() as rep:
        out = check_batch(emb, y, values=False)
    assert len(rep) == 0, rep.message()
    assert torch.equal(out, y)
    with pytest.raises(ValueError, match="one entry per sample"):  # structure still checked
        check_batch(emb, torch.tensor([0, 1, 2]), values=False)


@pytest.mark.parametrize("batch_idx,checks_on,raises", [(0, False, True), (0, True, True), (3, True, True),
                                                          (3, False, False)])
def test_metric_module_value_check_policy(batch_idx, checks_on, raises):
    """MetricLearningModule._check_batch: values on the first batch of each epoch, and on later batches
    only with value checks on and the step on the CPU (documented policy; the CUDA case is the
    device-type test of the same expression)."""
    from graphneg.models import MetricLearningModule

    module = MetricLearningModule(torch.nn.Linear(2, 2), MultiSimilarityLoss(), num_classes=2, scheduler="none",
                                  eval_nmi=False)
    emb = torch.tensor([[float("nan"), 0.0], [1.0, 2.0]])
    y = torch.tensor([0, 1])
    out = None
    with count_syncs() as rep:
        if raises:
            with pytest.raises(ValueError, match="NaN or Inf"):
                module._check_batch(emb, y, batch_idx, checks_on)
        else:
            out = module._check_batch(emb, y, batch_idx, checks_on)
    assert (len(rep) > 0) == raises
    assert raises or torch.equal(out, y)
