"""``neg_mask``: synthetic negatives in the padded layout (issue 21: no host sync in the training step).

On CUDA the GCA-HNG generator returns a static number of rows ``M`` with a bool ``mask [M]`` (False =
padding: zeros in ``x``, arbitrary ``labels`` / ``anchor_index``). Contract checked here, for every loss
and mode that takes synthetic negatives and for ``pair_block``::

    loss(z, y, neg_embeddings=x, neg_labels=l, anchor_index=a, neg_mask=m)
        == loss(z, y, neg_embeddings=x[m], neg_labels=l[m], anchor_index=a[m])

in value and in the gradients w.r.t. ``z`` and ``x`` (padding rows: exactly zero), with no host sync.
Reference: the compact call, whose values tests/test_metric_losses.py checks against loop references
and tests/test_pml_agreement.py against pytorch-metric-learning.
"""
import os
import sys
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from sync_counter import count_syncs  # noqa: E402

from graphneg.losses import (  # noqa: E402
    LpDistance, MeanReducer, MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss, TripletMarginLoss, pml_inputs,
    synthetic_indices_tuple,
)
from graphneg.losses.base import BaseMetricLoss, check_synthetic, pair_block  # noqa: E402
from graphneg.losses.distances import CosineSimilarity  # noqa: E402
from graphneg.validation import value_checks  # noqa: E402

TOL = 1e-10
D = 6
NUM_CLASSES = 5
SEEDS = [0, 1, 2, 3]

LOSSES = {
    "ms": lambda: MultiSimilarityLoss(),
    "ms_mined": lambda: MultiSimilarityLoss(mining=True),
    "ms_mined_lp": lambda: MultiSimilarityLoss(mining=True, base=0.8, distance=LpDistance()),
    "npair_all": lambda: NPairLoss(l2_reg=0.1),
    "npair_official": lambda: NPairLoss(l2_reg=0.1, anchors="official"),
    "triplet_all": lambda: TripletMarginLoss(margin=0.5),
    "triplet_all_mean_smooth": lambda: TripletMarginLoss(margin=0.2, smooth_loss=True, reducer=MeanReducer()),
    "triplet_hard": lambda: TripletMarginLoss(0.2, mining="hard"),
    "triplet_hard_cos": lambda: TripletMarginLoss(0.2, mining="hard", distance=CosineSimilarity()),
    "triplet_semihard": lambda: TripletMarginLoss(0.6, mining="semihard"),
    "triplet_sampled": lambda: TripletMarginLoss(0.5, triplets_per_anchor=3),
    "proxy_anchor": lambda: ProxyAnchorLoss(NUM_CLASSES, D).double(),
}


# ----------------------------------------------------------------------------- data
def batch(seed):
    """A random float64 batch (3 per class for 3-4 classes, sometimes a singleton class) and compact
    synthetic negatives (random anchors, some anchors with none; labels differ from the anchor's)."""
    g = torch.Generator().manual_seed(seed)
    c = 3 + seed % 2
    y = torch.arange(c).repeat(3)
    if seed % 2 == 0:
        y = torch.cat([y, torch.tensor([NUM_CLASSES - 1])])  # a singleton class: an anchor with no positive
    y = y[torch.randperm(y.numel(), generator=g)]
    z = torch.randn(y.numel(), D, generator=g, dtype=torch.float64)
    m = 7 + 3 * seed
    anchor = torch.randint(0, y.numel(), (m,), generator=g)
    neg_y = (y[anchor] + torch.randint(1, NUM_CLASSES, (m,), generator=g)) % NUM_CLASSES
    x = torch.randn(m, D, generator=g, dtype=torch.float64)
    return z, y, x, neg_y, anchor


def pad(x, neg_y, anchor, y, n_pad, seed, garbage=False):
    """Insert ``n_pad`` padding rows at random positions: zero ``x``, random anchors and labels (half of
    them the anchor's own class); ``garbage`` also puts anchors outside ``[0, B)`` and negative labels.
    Returns the padded tensors, the mask and the padded row of each compact row."""
    g = torch.Generator().manual_seed(1000 + seed)
    m, b = x.size(0), y.numel()
    total = m + n_pad
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.randperm(total, generator=g)[:m]] = True
    rows = torch.arange(total)[mask]  # compact row k -> padded row rows[k] (order kept)
    xp = torch.zeros(total, x.size(1), dtype=x.dtype)
    xp[rows] = x
    ap = torch.randint(0, b, (total,), generator=g)
    lp = torch.randint(0, NUM_CLASSES, (total,), generator=g)
    own = torch.rand(total, generator=g) < 0.5
    lp = torch.where(own, y[ap], lp)  # padding rows that carry their anchor's class
    if garbage:
        ap = torch.where(torch.rand(total, generator=g) < 0.5, ap + 3 * b, -1 - ap)
        lp = torch.where(own, lp, -7)
    ap[rows], lp[rows] = anchor, neg_y
    return xp, lp, ap, mask, rows


def run(loss, z, y, x, neg_y, anchor, mask=None, seed=0):
    z = z.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    kwargs = {} if mask is None else {"neg_mask": mask}
    torch.manual_seed(seed)  # triplets_per_anchor=k draws
    value = loss(z, y, neg_embeddings=x, neg_labels=neg_y, anchor_index=anchor, **kwargs)
    value.backward()
    return value.detach(), z.grad, x.grad


def assert_same(masked, compact, rows):
    (v, gz, gx), (v0, gz0, gx0) = masked, compact
    assert torch.isfinite(v) and torch.isfinite(gz).all() and torch.isfinite(gx).all()
    assert abs(float(v) - float(v0)) < TOL, (float(v), float(v0))
    assert torch.allclose(gz, gz0, atol=TOL, rtol=0)
    assert torch.allclose(gx[rows], gx0, atol=TOL, rtol=0)
    padding = torch.ones(gx.size(0), dtype=torch.bool)
    padding[rows] = False
    assert (gx[padding] == 0).all(), "padding rows must get exactly zero gradient"


# ----------------------------------------------------------------------------- values and gradients
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", LOSSES)
def test_masked_equals_compact(name, seed):
    z, y, x, neg_y, anchor = batch(seed)
    loss = LOSSES[name]()
    compact = run(loss, z, y, x, neg_y, anchor, seed=seed)
    assert float(compact[0]) != 0.0  # a real test: the synthetic negatives matter
    for n_pad in (1, 9):
        xp, lp, ap, mask, rows = pad(x, neg_y, anchor, y, n_pad, seed + 17 * n_pad)
        assert_same(run(loss, z, y, xp, lp, ap, mask, seed=seed), compact, rows)
        with value_checks(False):  # the training-step path gives the same
            assert_same(run(loss, z, y, xp, lp, ap, mask, seed=seed), compact, rows)


@pytest.mark.parametrize("name", ["ms_mined", "npair_all", "triplet_all", "triplet_hard", "proxy_anchor"])
def test_garbage_padding_anchors_and_labels_are_ignored(name):
    """Padding rows may carry anchors outside [0, B) and negative labels: the value checks skip them and
    the loss sanitises them (check_synthetic puts 0 there), so they never index out of range."""
    z, y, x, neg_y, anchor = batch(2)
    loss = LOSSES[name]()
    compact = run(loss, z, y, x, neg_y, anchor)
    xp, lp, ap, mask, rows = pad(x, neg_y, anchor, y, 6, 5, garbage=True)
    assert bool(((ap < 0) | (ap >= y.numel()))[~mask].any()) and bool((lp < 0)[~mask].any())
    assert_same(run(loss, z, y, xp, lp, ap, mask), compact, rows)


def test_padding_rows_need_not_be_zero_only_finite():
    """Zero x is the generator's padding; any finite rows give the same loss and zero gradient."""
    z, y, x, neg_y, anchor = batch(1)
    xp, lp, ap, mask, rows = pad(x, neg_y, anchor, y, 5, 3)
    xp[~mask] = 10.0 * torch.randn(int((~mask).sum()), D, dtype=torch.float64)
    for name in ("ms_mined", "npair_all", "triplet_all", "triplet_hard", "proxy_anchor"):
        loss = LOSSES[name]()
        assert_same(run(loss, z, y, xp, lp, ap, mask), run(loss, z, y, x, neg_y, anchor), rows)


def test_all_true_mask_equals_no_mask():
    z, y, x, neg_y, anchor = batch(3)
    rows = torch.arange(x.size(0))
    for name in LOSSES:
        loss = LOSSES[name]()
        mask = torch.ones(x.size(0), dtype=torch.bool)
        assert_same(run(loss, z, y, x, neg_y, anchor, mask), run(loss, z, y, x, neg_y, anchor), rows)


# ----------------------------------------------------------------------------- all-False mask
@pytest.mark.parametrize("name", LOSSES)
def test_all_false_mask_equals_no_synthetic_negatives(name):
    """An all-False mask is the compact call with M = 0: same value and gradient w.r.t. z, zero
    gradient for every row of x; where the compact call raises (triplets: no triplet can be formed)
    the masked one raises the same error under value checks and gives the same value without them."""
    z, y, x, neg_y, anchor = batch(0)
    loss = LOSSES[name]()
    xp, lp, ap, mask, _ = pad(x[:0], neg_y[:0], anchor[:0], y, 8, 4)
    assert not bool(mask.any())
    empty = (x[:0], neg_y[:0], anchor[:0])
    try:
        compact = run(loss, z, y, *empty, seed=1)
    except ValueError as err:
        with pytest.raises(ValueError, match=str(err)[:40]):
            run(loss, z, y, xp, lp, ap, mask, seed=1)
        with value_checks(False):
            compact = run(loss, z, y, *empty, seed=1)
            masked = run(loss, z, y, xp, lp, ap, mask, seed=1)
    else:
        masked = run(loss, z, y, xp, lp, ap, mask, seed=1)
    assert_same(masked, compact, torch.arange(0))


def test_all_false_mask_with_mining_uses_no_negative():
    """MS mining with no synthetic negative keeps no positive either (max over an empty set is -inf):
    the loss is 0, as the MS miner gives for the compact M = 0 call."""
    z, y, x, neg_y, anchor = batch(1)
    mask = torch.zeros(x.size(0), dtype=torch.bool)
    v = MultiSimilarityLoss(mining=True)(z, y, neg_embeddings=x, neg_labels=neg_y, anchor_index=anchor,
                                         neg_mask=mask)
    assert float(v) == 0.0


# ----------------------------------------------------------------------------- pair_block
@pytest.mark.parametrize("seed", SEEDS)
def test_pair_block_masked_equals_compact_on_its_columns(seed):
    z, y, x, neg_y, anchor = batch(seed)
    xp, lp, ap, mask, rows = pad(x, neg_y, anchor, y, 6, seed)
    dist = LpDistance()
    ref = pair_block(z, y, check_synthetic(z, y, x, neg_y, anchor), dist)
    got = pair_block(z, y, check_synthetic(z, y, xp, lp, ap, mask), dist)
    k = ref.neg_mask.size(1)
    assert got.neg_mask.size(1) == xp.size(0) >= k
    assert torch.equal(got.pos_mask, ref.pos_mask) and torch.equal(got.pos_sim, ref.pos_sim)
    assert torch.equal(got.neg_mask[:, :k], ref.neg_mask) and not bool(got.neg_mask[:, k:].any())
    on = ref.neg_mask
    assert torch.allclose(got.neg_sim[:, :k][on], ref.neg_sim[on], atol=TOL, rtol=0)
    # neg_index of a real column points at the same synthetic negative (padded row = rows[compact row])
    assert torch.equal(got.neg_index[:, :k][on], rows[ref.neg_index[on]])


# ----------------------------------------------------------------------------- PML form
@pytest.mark.parametrize("kind", ["pairs", "triplets"])
def test_synthetic_indices_tuple_compacts_the_mask(kind):
    z, y, x, neg_y, anchor = batch(1)
    xp, lp, ap, mask, _ = pad(x, neg_y, anchor, y, 7, 2)
    ref = synthetic_indices_tuple(z, y, x, neg_y, anchor, kind)
    got = synthetic_indices_tuple(z, y, xp, lp, ap, kind, neg_mask=mask)
    assert torch.equal(got.ref_emb, ref.ref_emb) and torch.equal(got.ref_labels, ref.ref_labels)
    assert len(got.indices_tuple) == len(ref.indices_tuple)
    assert all(torch.equal(a, b) for a, b in zip(got.indices_tuple, ref.indices_tuple))
    # pml_inputs reads the generator output's mask; an output without one is taken as it is
    out = SimpleNamespace(graph=SimpleNamespace(x=z, y=y), x=xp, labels=lp, anchor_index=ap, mask=mask)
    via = pml_inputs(out, kind)
    assert all(torch.equal(a, b) for a, b in zip(via.indices_tuple, ref.indices_tuple))
    plain = pml_inputs(SimpleNamespace(graph=SimpleNamespace(x=z, y=y), x=x, labels=neg_y, anchor_index=anchor),
                       kind)
    assert torch.equal(plain.ref_emb, ref.ref_emb)


# ----------------------------------------------------------------------------- errors
def test_neg_mask_errors_name_the_argument_and_the_fix():
    z, y, x, neg_y, anchor = batch(0)
    loss = MultiSimilarityLoss()
    m = x.size(0)
    with pytest.raises(ValueError, match="neg_mask was given without synthetic negatives"):
        loss(z, y, neg_mask=torch.ones(m, dtype=torch.bool))
    short = torch.ones(m - 1, dtype=torch.bool)
    with pytest.raises(ValueError, match=rf"neg_mask must be a bool tensor of shape \[M\] = \[{m}\].*got torch.bool"):
        loss(z, y, neg_embeddings=x, neg_labels=neg_y, anchor_index=anchor, neg_mask=short)
    with pytest.raises(ValueError, match=r"neg_mask must be a bool tensor.*got torch.int64.*neg_mask.bool\(\)"):
        loss(z, y, neg_embeddings=x, neg_labels=neg_y, anchor_index=anchor, neg_mask=torch.ones(m, dtype=torch.long))
    with pytest.raises(ValueError, match="neg_mask must be a bool tensor.*got list"):
        loss(z, y, neg_embeddings=x, neg_labels=neg_y, anchor_index=anchor, neg_mask=[True] * m)
    with pytest.raises(TypeError):  # keyword-only (PML's positional slots are unchanged)
        loss(z, y, None, None, None, x, neg_y, anchor, torch.ones(m, dtype=torch.bool))
    # value checks still see the real rows
    mask = torch.ones(m, dtype=torch.bool)
    mask[0] = False
    bad = neg_y.clone()
    bad[1] = y[anchor[1]]
    with pytest.raises(ValueError, match="carries its anchor's class"):
        loss(z, y, neg_embeddings=x, neg_labels=bad, anchor_index=anchor, neg_mask=mask)
    far = anchor.clone()
    far[0], far[1] = 99, 50  # row 0 is padding: only 50 is reported
    with pytest.raises(ValueError, match=rf"lie in \[0, {y.numel()}\); got values in \[\d+, 50\]"):
        loss(z, y, neg_embeddings=x, neg_labels=neg_y, anchor_index=far, neg_mask=mask)
    bad[1] = neg_y[1]
    bad[0] = y[anchor[0]]  # own class on a padding row: fine
    loss(z, y, neg_embeddings=x, neg_labels=bad, anchor_index=anchor, neg_mask=mask)


def test_check_synthetic_returns_the_mask_on_the_embeddings_device_and_sanitises_padding():
    z, y, x, neg_y, anchor = batch(0)
    xp, lp, ap, mask, rows = pad(x, neg_y, anchor, y, 4, 0, garbage=True)
    s = check_synthetic(z, y, xp, lp, ap, mask)
    assert s.mask is mask or torch.equal(s.mask, mask)
    assert s.mask.device == z.device and s.mask.dtype == torch.bool
    assert torch.equal(s.anchor_index[rows], anchor) and torch.equal(s.labels[rows], neg_y)
    assert not bool(s.anchor_index[~mask].any()) and not bool(s.labels[~mask].any())
    plain = check_synthetic(z, y, x, neg_y, anchor)
    assert plain.mask is None and torch.equal(plain.anchor_index, anchor)
    assert "neg_mask" in BaseMetricLoss.forward.__wrapped__.__code__.co_varnames


# ----------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("name", LOSSES)
def test_masked_calls_are_sync_free(name):
    z, y, x, neg_y, anchor = batch(1)
    xp, lp, ap, mask, _ = pad(x, neg_y, anchor, y, 5, 1)
    loss = LOSSES[name]()
    z = z.clone().requires_grad_(True)
    with value_checks(False), count_syncs() as rep:
        loss(z, y, neg_embeddings=xp, neg_labels=lp, anchor_index=ap, neg_mask=mask).backward()
    assert len(rep) == 0, rep.message()
