"""graphneg.validation: structure checks always, value checks behind a switch; no host sync from
validation in the building blocks when the switch is off; value checks still fire at the
LightningModule boundary; bool / float labels and non-integer k / ks are rejected by the public
entry points with a message saying what to pass."""
import contextlib
import traceback

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graphneg.graph import batch_graph
from graphneg.losses import (DCLLoss, HCLLoss, InfoNCELoss, MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss,
                             TripletMarginLoss, UnReMixLoss)
from graphneg.metrics import retrieval_metrics
from graphneg.metrics.retrieval import nearest_neighbours
from graphneg.models import MetricLearningModule
from graphneg.nn import GCAHNG
from graphneg.validation import (check_batch, check_embeddings, check_k, check_ks, check_labels,
                                 check_multiclass, set_value_checks, value_checks, value_checks_enabled)

SYNC_METHODS = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def record_host_syncs():
    """Record every Python-level tensor -> host conversion (``bool(t)``, ``t.item()``, ``int(t)``,
    ...) with the innermost graphneg function that triggered it, as ``(file, function)``.

    On CPU there is no ``torch.cuda.set_sync_debug_mode``; these methods are how Python code reads
    a tensor's value, i.e. what becomes a device -> host sync (and a graph break) on a GPU.
    """
    calls = []
    saved = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def wrap(name, original):
        def method(self, *args, **kwargs):
            frames = [f for f in traceback.extract_stack()[:-1] if "graphneg" in f.filename]
            where = (frames[-1].filename.split("graphneg")[-1], frames[-1].name) if frames else ("", "")
            calls.append((name, *where))
            return original(self, *args, **kwargs)
        return method

    try:
        for name, original in saved.items():
            setattr(torch.Tensor, name, wrap(name, original))
        yield calls
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(12, 8), torch.arange(4).repeat(3)


# ----------------------------------------------------------------------------- the switch
def test_switch_and_context_manager_restore_the_setting():
    assert value_checks_enabled()
    nan = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_embeddings(nan)
    with value_checks(False):
        assert not value_checks_enabled()
        check_embeddings(nan)  # values skipped ...
        with pytest.raises(ValueError, match="NaN or Inf"):
            check_embeddings(nan, values=True)  # ... unless asked for explicitly
        with pytest.raises(ValueError, match=r"shape \[B, D\]"):
            check_embeddings(torch.zeros(3))  # structure always
        with pytest.raises(TypeError, match="bool tensor"):
            check_labels(torch.ones(3, dtype=torch.bool), 3)
    assert value_checks_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        with value_checks(False):
            raise RuntimeError("boom")
    assert value_checks_enabled()  # restored after an error as well
    assert set_value_checks(False) is True and set_value_checks(True) is False
    with pytest.raises(TypeError, match="True or False"):
        set_value_checks("no")


def test_check_labels_dtype_shape_and_range():
    with pytest.raises(TypeError, match="bool tensor; a boolean mask is not a class id"):
        check_labels(torch.tensor([True, False, True]), 3)
    with pytest.raises(TypeError, match="bool tensor"):
        check_labels([True, False], 2)  # a Python list of bools too
    with pytest.raises(TypeError, match=r"dtype torch.float32; pass a LongTensor"):
        check_labels(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(TypeError, match="dtype torch.float64"):
        check_labels(np.array([0.5, 1.0]), 2)
    with pytest.raises(ValueError, match=r"expected shape \[3\], got \(2,\)"):
        check_labels(torch.tensor([0, 1]), 3)
    assert check_labels(torch.tensor([[0], [1]]), 2).shape == (2,)  # a column is flattened
    assert torch.equal(check_labels([2, 0, 1], 3), torch.tensor([2, 0, 1]))
    assert check_labels(torch.tensor([0, 1], dtype=torch.int32), 2).dtype == torch.int32
    with pytest.raises(ValueError, match=r"must lie in \[0, num_classes=3\), got values in \[-1, 3\]"):
        check_labels(torch.tensor([0, 3, -1]), 3, num_classes=3)
    with value_checks(False):
        check_labels(torch.tensor([0, 3, -1]), 3, num_classes=3)  # a value check: skipped
    with pytest.raises(ValueError, match="single class"):
        check_multiclass(torch.tensor([2, 2, 2]))


def test_check_k_and_ks():
    assert check_k(3) == 3 and check_k(np.int64(4)) == 4 and check_k(torch.tensor(5)) == 5
    assert type(check_k(np.int32(2))) is int
    for bad in (2.7, 2.0, True, "3", None, torch.tensor(2.0)):
        with pytest.raises(TypeError, match="k must be a positive integer.*not truncated"):
            check_k(bad)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        check_k(0)
    with pytest.raises(ValueError, match="an integer >= 2"):
        check_k(1, minimum=2)
    assert check_ks((8, 1, 2, 2, 4)) == (1, 2, 4, 8)
    assert check_ks(3) == (3,) and check_ks([np.int64(1)]) == (1,)
    with pytest.raises(TypeError, match="each entry of ks must be a positive integer, got 1.9"):
        check_ks(1.9)
    with pytest.raises(TypeError, match="got 2.5"):
        check_ks((1, 2.5))
    with pytest.raises(TypeError, match="the string"):
        check_ks("1,2")
    with pytest.raises(ValueError, match="ks is empty"):
        check_ks(())
    with pytest.raises(ValueError, match="got 0"):
        check_ks((0, 1))


def test_check_batch_one_sync_and_its_errors(batch):
    z, y = batch
    with record_host_syncs() as calls:
        out = check_batch(z, y, num_classes=4, need_positive=True, others=(("view 2", z + 1),))
    assert torch.equal(out, y)
    assert len(calls) == 1 and calls[0][0] == "tolist"  # all value checks: one host sync
    bad = z.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="encoder output contain NaN or Inf"):
        check_batch(bad, y, name="encoder output")
    with pytest.raises(ValueError, match="view 2 contain NaN or Inf"):
        check_batch(z, y, others=(("view 2", bad),))
    with pytest.raises(ValueError, match="this training batch holds a single class"):
        check_batch(z, torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match=r"batch labels must lie in \[0, num_classes=3\)"):
        check_batch(z, y, num_classes=3)
    with pytest.raises(ValueError, match="no sample of this training batch has a positive"):
        check_batch(z[:4], y[:4], need_positive=True)
    with pytest.raises(TypeError, match="bool tensor"):
        check_batch(z, y > 1)
    assert check_batch(z) is None
    with value_checks(False):  # the boundary check ignores the switch
        with pytest.raises(ValueError, match="NaN or Inf"):
            check_batch(bad, y)


# ----------------------------------------------------------------------------- public entry points
def test_public_entry_points_reject_bool_and_float_labels(batch):
    z, y = batch
    bool_y, float_y = y > 1, y.float()
    calls = [
        lambda lab: batch_graph(z, lab, edges="negative"),
        lambda lab: MultiSimilarityLoss(mining=True)(z, lab),
        lambda lab: GCAHNG(8, 4, num_layers=1, heads=2)(z, lab),
        lambda lab: retrieval_metrics(z, lab, nmi=False),
        lambda lab: InfoNCELoss()(z, z, lab),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="bool tensor; a boolean mask is not a class id"):
            call(bool_y)
        with pytest.raises(TypeError, match="dtype torch.float32"):
            call(float_y)


def test_retrieval_ks_and_k_must_be_integers():
    # 4 queries on a line; each query's nearest other point shares its label except query 3
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.7, 0.71]])
    lab = torch.tensor([0, 0, 1, 1])
    with pytest.raises(TypeError, match="ks must be a positive integer, got 1.9"):
        retrieval_metrics(emb, lab, ks=1.9, nmi=False)
    with pytest.raises(TypeError, match="got 2.0"):
        retrieval_metrics(emb, lab, ks=(1, 2.0), nmi=False)
    with pytest.raises(TypeError, match="got True"):
        retrieval_metrics(emb, lab, ks=(True,), nmi=False)
    # a single integer K is accepted; hand-computed: cosine neighbours 0->1, 1->0, 2->3, 3->1
    res = retrieval_metrics(emb, lab, ks=1, nmi=False)
    assert res["recall@1"] == pytest.approx(3 / 4) and "recall@2" not in res
    with pytest.raises(TypeError, match="k must be a positive integer, got 1.5"):
        next(nearest_neighbours(emb, emb, 1.5, same_set=True))


def test_graph_and_generator_reject_fractional_k(batch):
    z, y = batch
    # TypeError from graphneg.validation.check_k, or ValueError from an edge-mode check that runs first
    with pytest.raises((TypeError, ValueError), match=r"positive integer.*got 2\.7"):
        batch_graph(z, edges="knn", k=2.7)
    with pytest.raises((TypeError, ValueError), match="positive integer.*got True"):
        batch_graph(z, y, edges="knn_negative", k=True)
    with pytest.raises((TypeError, ValueError), match=r"positive integer.*got 2\.5"):
        GCAHNG(8, 4, edges="knn", k=2.5)
    # an integer k builds the same graph whether it is a Python or a NumPy integer
    a = batch_graph(z, edges="knn", k=2).edge_index
    assert torch.equal(a, batch_graph(z, edges="knn", k=np.int64(2)).edge_index)
    assert a.size(1) == 12 * 2


# ----------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("rw", [None, "dirichlet", "chain"])
@pytest.mark.parametrize("edges", ["complete", "knn"])
def test_generator_makes_no_validation_sync_when_value_checks_are_off(batch, rw, edges):
    z, y = batch
    torch.manual_seed(0)
    gen = GCAHNG(8, 4, num_layers=1, heads=2, rw=rw, edges=edges, k=3 if edges == "knn" else None)
    with record_host_syncs() as on:
        ref = gen.eval()(z, y, generator=torch.Generator().manual_seed(1))
    assert any(f.replace("\\", "/").startswith("/validation/") for _, f, _ in on)  # the recorder sees validation syncs
    with value_checks(False), record_host_syncs() as off:
        out = gen(z, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.x, ref.x)  # same result without the checks
    assert not any(f.replace("\\", "/").startswith("/validation/") for _, f, _ in off), off
    # what may remain is a data-dependent shape of the kNN graph itself (not validation); the compact
    # layout's nonzero in GeneratedNegatives.compact() is no Python-level conversion (tests/test_host_sync.py
    # counts it)
    allowed = {"build_graph"} if edges == "knn" else set()
    assert {fn for _, _, fn in off} <= allowed, off
    if edges == "complete":
        assert off == []  # GCAHNG.forward, complete graph: no Python-level host read at all


@pytest.mark.parametrize("loss", [MultiSimilarityLoss(mining=True), NPairLoss(), TripletMarginLoss(),
                                  ProxyAnchorLoss(4, 8)], ids=lambda m: type(m).__name__)
def test_metric_losses_make_no_host_sync_when_value_checks_are_off(batch, loss):
    z, y = batch
    gen = GCAHNG(8, 4, num_layers=1, heads=2, rw=None)
    neg = gen(z, y)
    with record_host_syncs() as on:
        ref = loss(z, y)
    assert on  # with value checks on, the loss reads values (the recorder works)
    with value_checks(False), record_host_syncs() as off:
        got = loss(z, y)
        synth = loss(z, y, neg_embeddings=neg.x, neg_labels=neg.labels, anchor_index=neg.anchor_index)
    assert torch.equal(got, ref)
    assert torch.allclose(synth, loss(z, y, neg_embeddings=neg.x, neg_labels=neg.labels, anchor_index=neg.anchor_index))
    # none, also with synthetic negatives (pair_block pads to the static width M, issue 21)
    assert off == [], off


@pytest.mark.parametrize("loss", [InfoNCELoss(), HCLLoss(), DCLLoss(), UnReMixLoss(k=3)],
                         ids=lambda m: type(m).__name__)
def test_contrastive_losses_make_no_host_sync_when_value_checks_are_off(batch, loss):
    z, y = batch
    with value_checks(False), record_host_syncs() as off:
        a, b = loss(z, z.flip(0)), loss(z, z.flip(0), y)
    assert off == []
    assert torch.equal(a, loss(z, z.flip(0))) and torch.equal(b, loss(z, z.flip(0), y))


def test_batch_graph_makes_no_host_sync_when_value_checks_are_off(batch):
    z, y = batch
    with value_checks(False), record_host_syncs() as off:
        batch_graph(z, y, edges="knn_negative", k=3)
        batch_graph(z, y, edges="complete")
    assert off == []


# ----------------------------------------------------------------------------- module boundary
class _Encoder(nn.Module):
    def __init__(self, poison: bool = False):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.poison = poison

    def forward(self, x):
        out = self.fc(x)
        return out * float("nan") if self.poison else out


class _SpyLoss(MultiSimilarityLoss):
    """Records whether value checks were on each time the loss ran."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, *args, **kwargs):
        self.seen.append(value_checks_enabled())
        return super().forward(*args, **kwargs)


def _fit(module, labels):
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(labels.numel(), 6), labels), batch_size=labels.numel())
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=data)


@pytest.mark.parametrize("with_generator", [False, True])
def test_module_checks_values_once_at_the_boundary(with_generator):
    y = torch.arange(4).repeat(3)
    gen = (lambda: GCAHNG(8, 4, num_layers=1, heads=2)) if with_generator else (lambda: None)
    loss = _SpyLoss()
    mod = MetricLearningModule(_Encoder(), loss, generator=gen(), num_classes=4, eval_nmi=False)
    _fit(mod, y)
    # the loss ran (once, or twice with synthetic negatives) with value checks off ...
    assert loss.seen == ([False, False] if with_generator else [False])
    assert value_checks_enabled()  # ... and the switch is back on after the step
    # NaN encoder output: a clear error from the boundary, although the building blocks skip values
    bad = MetricLearningModule(_Encoder(poison=True), MultiSimilarityLoss(mining=True), generator=gen(), num_classes=4,
                               eval_nmi=False)
    with pytest.raises(ValueError, match="encoder output contain NaN or Inf"):
        _fit(bad, y)
    assert value_checks_enabled()
    # labels outside the generator's / proxies' classes are caught at the boundary too
    if with_generator:
        with pytest.raises(ValueError, match=r"batch labels must lie in \[0, num_classes=4\)"):
            _fit(MetricLearningModule(_Encoder(), MultiSimilarityLoss(mining=True), generator=gen(), num_classes=4,
                                      eval_nmi=False), y + 1)
    else:
        with pytest.raises(ValueError, match=r"batch labels must lie in \[0, num_classes=4\)"):
            _fit(MetricLearningModule(_Encoder(), ProxyAnchorLoss(4, 8), eval_nmi=False), y + 1)
        with pytest.raises(ValueError, match="has a positive"):
            _fit(MetricLearningModule(_Encoder(), MultiSimilarityLoss(mining=True), eval_nmi=False), torch.arange(4))


def test_module_rejects_fractional_ks_at_construction():
    with pytest.raises(TypeError, match="each entry of ks must be a positive integer, got 1.5"):
        MetricLearningModule(_Encoder(), MultiSimilarityLoss(mining=True), ks=(1, 1.5))


def test_knn_index_rejects_fractional_k(batch):
    from graphneg.ops.knn import knn_index

    z, _ = batch
    with pytest.raises((TypeError, ValueError), match=r"positive integer.*got 1\.5"):
        knn_index(z, 1.5)
    assert knn_index(z, np.int64(2)).shape == (2, 24)


def test_contrastive_module_checks_values_at_the_boundary():
    import warnings

    from graphneg.models import ContrastiveModule, SmallCNN

    class Spy(InfoNCELoss):
        seen = []

        def forward(self, *args, **kwargs):
            self.seen.append(value_checks_enabled())
            return super().forward(*args, **kwargs)

    torch.manual_seed(0)
    v1, v2 = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    model = ContrastiveModule(SmallCNN(1, 0, width=4), Spy(), projector_dims=(8, 4), supervised=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        model.training_step((v1, v2, y), 0)
        assert Spy.seen == [False] and value_checks_enabled()
        with pytest.raises(ValueError, match="this training batch holds a single class"):
            model.training_step((v1, v2, torch.zeros(6, dtype=torch.long)), 0)
        with pytest.raises(ValueError, match="projected view 2 contain NaN or Inf"):
            model.training_step((v1, v2 * float("nan"), y), 0)
    assert value_checks_enabled()


def test_float64_into_float32_generator_is_refused_naming_dtype_and_fix():
    """GCAHNG's parameters are float32: float64 embeddings used to fail inside a matmul ("mat1 and mat2 must
    have the same dtype"); now the message names both dtypes and `.float()`. The losses compute in float64."""
    from graphneg.losses import MultiSimilarityLoss
    from graphneg.nn import GCAHNG

    gen = GCAHNG(dim=8, num_classes=3)
    x, y = torch.randn(12, 8, dtype=torch.float64), torch.arange(12) % 3
    with pytest.raises(ValueError, match=r"embeddings have dtype torch.float64 but GCAHNG's parameters are "
                                         r"torch.float32; pass embeddings.float\(\)"):
        gen(x, y)
    out = gen(x.float(), y)  # the fix works
    assert out.x.dtype == torch.float32
    loss = MultiSimilarityLoss(mining=True)
    torch.testing.assert_close(loss(x, y).float(), loss(x.float(), y), rtol=1e-5, atol=1e-6)


def test_meta_tensors_are_refused_clearly():
    from graphneg.losses import MultiSimilarityLoss
    from graphneg.validation import check_embeddings, check_labels

    x = torch.empty(6, 4, device="meta")
    with pytest.raises(ValueError, match=r"embeddings is a 'meta' tensor \(shape \(6, 4\), no values\)"):
        check_embeddings(x)
    with pytest.raises(ValueError, match=r"labels is a 'meta' tensor"):
        check_labels(torch.empty(6, dtype=torch.long, device="meta"), 6)
    with pytest.raises(ValueError, match=r"'meta' tensor"):  # was: "Tensor.item() cannot be called on meta tensors"
        MultiSimilarityLoss(mining=True)(x, torch.arange(6) % 2)


# ------------------------------------------------------------- the merged checks (issue 19)
def test_one_range_check_for_every_hyperparameter():
    from graphneg.losses.base import check_hparam
    from graphneg.validation import check_hyperparameter

    assert check_hyperparameter(0.25, "p", 0.0, 1.0) == 0.25 and check_hyperparameter(np.float32(2), "m") == 2.0
    with pytest.raises(ValueError, match=r"^NodeDrop: p must be a finite number in \[0, 1\], got 1.5$"):
        check_hyperparameter(1.5, "p", 0.0, 1.0, owner="NodeDrop")
    with pytest.raises(ValueError, match=r"^ratio must be a finite number in \(0, 1\], got 0.0$"):
        check_hyperparameter(0.0, "ratio", 0.0, 1.0, min_inclusive=False)
    with pytest.raises(ValueError, match=r"^base must be a finite number, got nan$"):
        check_hyperparameter(float("nan"), "base", float("-inf"))
    with pytest.raises(TypeError, match=r"^margin must be a real number, got True \(bool\)$"):
        check_hyperparameter(True, "margin", 0.0)
    # the losses' former helper: a deprecated wrapper with the same message
    with pytest.warns(DeprecationWarning, match="check_hyperparameter"):
        assert check_hparam("TripletMarginLoss", "margin", 0.1) == 0.1
    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match=r"^MultiSimilarityLoss: alpha must be a finite number > 0, got 0.0$"):
        check_hparam("MultiSimilarityLoss", "alpha", 0.0, strict=True)


def test_choice_width_and_optional_k():
    from graphneg.validation import check_choice, check_neighbours, check_same_width

    assert check_choice("optimizer", "AdamW", ("adam", "adamw"), ignore_case=True) == "adamw"
    with pytest.raises(ValueError, match=r"^optimizer must be one of \('adam', 'adamw'\), got 'AdamW'$"):
        check_choice("optimizer", "AdamW", ("adam", "adamw"))
    check_same_width(torch.zeros(3, 4), torch.zeros(5, 4), "ref_emb")
    with pytest.raises(ValueError, match=r"^ref_emb must have the embedding size \(dimension D=4\) of embeddings, "
                                         r"got shape \(3, 2\)$"):
        check_same_width(torch.zeros(3, 2), torch.zeros(5, 4), "ref_emb")
    assert check_neighbours(None) is None and check_neighbours(np.int64(3)) == 3
    assert check_k(None, optional=True) is None
    with pytest.raises(TypeError, match="positive integer or None"):
        check_neighbours(2.5)
    with pytest.raises(TypeError, match="k must be a positive integer, got None"):
        check_k(None)
