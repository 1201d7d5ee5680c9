"""graphneg's metric losses, distances and reducers against pytorch-metric-learning (PML) itself.

Same name, same contract: on random float64 batches (m-per-class and ragged label sets with
singletons), with PML miners' indices tuples and with a reference set, the values agree to 1e-5.
"""
import pytest
import torch

import pytorch_metric_learning as pml  # noqa: E402  (the dev extra installs it)
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402

from graphneg.losses import (  # noqa: E402
    CosineSimilarity, DotProductSimilarity, LpDistance, MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss,
    TripletMarginLoss,
)

TOL = 1e-5


def batches():
    """Several random batches: m-per-class layouts and a ragged one (a singleton class, unequal counts)."""
    out = []
    for seed, labels in enumerate([
        torch.arange(4).repeat(3),                      # 4 classes x 3, chunked layout
        torch.arange(6).repeat_interleave(2),           # 6 classes x 2, grouped layout
        torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4]),   # ragged, class 3 alone
        torch.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1, 5]),   # shuffled, class 5 alone
    ]):
        g = torch.Generator().manual_seed(seed)
        out.append((torch.randn(len(labels), 8, generator=g, dtype=torch.float64), labels))
    return out


BATCHES = batches()
IDS = ["3x4", "2x6", "ragged", "shuffled"]


def close(a, b):
    a, b = float(a.detach()), float(b.detach())
    return abs(a - b) < TOL * max(1.0, abs(b))


# ----------------------------------------------------------------------------- distances
@pytest.mark.parametrize("ours,theirs", [
    (CosineSimilarity(), pml_distances.CosineSimilarity()),
    (DotProductSimilarity(), pml_distances.DotProductSimilarity()),
    (DotProductSimilarity(normalize_embeddings=False), pml_distances.DotProductSimilarity(normalize_embeddings=False)),
    (LpDistance(), pml_distances.LpDistance()),
    (LpDistance(normalize_embeddings=False), pml_distances.LpDistance(normalize_embeddings=False)),
    (LpDistance(p=1), pml_distances.LpDistance(p=1)),
], ids=["cos", "dot", "dot-raw", "lp", "lp-raw", "l1"])
def test_distances_equal_pml(ours, theirs):
    z, _ = BATCHES[2]
    r = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours(z, r), theirs(z, r), rtol=1e-6, atol=1e-6)
    # row-wise form (the synthetic-negative block) = the matrix's diagonal (PML's pairwise_distance adds
    # F.pairwise_distance's eps=1e-6; graphneg's row-wise form is exact)
    torch.testing.assert_close(ours.pairwise(z[:5], r), theirs(z[:5], r).diagonal(), rtol=1e-6, atol=1e-6)
    assert ours.is_inverted == theirs.is_inverted


# ----------------------------------------------------------------------------- triplet
def test_issue_case_triplet_defaults_now_equal_pml():
    """Issue 22: graphneg's TripletMarginLoss() gave 0.769 vs PML's 0.241 on the same batch."""
    z, y = BATCHES[0]
    assert close(TripletMarginLoss()(z, y), pml_losses.TripletMarginLoss()(z, y))
    assert TripletMarginLoss().margin == 0.05


@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
@pytest.mark.parametrize("kwargs", [{}, {"margin": 0.3}, {"swap": True}, {"smooth_loss": True},
                                    {"margin": 0.2, "swap": True, "smooth_loss": True}], ids=str)
def test_triplet_equals_pml(batch, kwargs):
    z, y = batch
    assert close(TripletMarginLoss(**kwargs)(z, y), pml_losses.TripletMarginLoss(**kwargs)(z, y))
    # the same positional signature
    args = (kwargs.get("margin", 0.05), kwargs.get("swap", False), kwargs.get("smooth_loss", False), "all")
    assert close(TripletMarginLoss(*args)(z, y), pml_losses.TripletMarginLoss(*args)(z, y))


@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
@pytest.mark.parametrize("miner", [
    pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
    pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
    pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="hard"),
    pml_miners.BatchHardMiner(),
    pml_miners.MultiSimilarityMiner(epsilon=0.1),  # pairs -> converted to triplets
], ids=["all", "semihard", "hard", "batchhard", "ms-pairs"])
def test_triplet_with_miner_tuples_equals_pml(batch, miner):
    z, y = batch
    t = miner(z, y)
    for kw in ({}, {"swap": True}):
        assert close(TripletMarginLoss(0.1, **kw)(z, y, t), pml_losses.TripletMarginLoss(0.1, **kw)(z, y, t))


@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
def test_triplet_with_ref_emb_equals_pml(batch):
    z, y = batch
    ref = torch.randn(7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref_y = torch.tensor([0, 1, 2, 3, 4, 5, 0])
    assert close(TripletMarginLoss(0.2)(z, y, None, ref, ref_y),
                 pml_losses.TripletMarginLoss(0.2)(z, y, None, ref, ref_y))


def test_triplet_sampled_per_anchor_equals_all_when_each_anchor_has_one_choice():
    """triplets_per_anchor=k samples (p, n) uniformly; with one positive and one negative per anchor every
    draw is that triplet, so the value equals the all-triplets loss (and PML's)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 5, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 0, 1, 1])
    ref = torch.randn(2, 5, dtype=torch.float64, generator=g)
    ry = torch.tensor([0, 1])  # with ref: anchor of class c has exactly one positive and one negative
    ours = TripletMarginLoss(0.5, triplets_per_anchor=3)(z, y, None, ref, ry)
    assert close(ours, pml_losses.TripletMarginLoss(0.5)(z, y, None, ref, ry))
    assert close(ours, pml_losses.TripletMarginLoss(0.5, triplets_per_anchor=3)(z, y, None, ref, ry))


# ----------------------------------------------------------------------------- multi-similarity
@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
@pytest.mark.parametrize("params", [(2.0, 50.0, 0.5), (1.0, 10.0, 0.2)], ids=str)
def test_multi_similarity_equals_pml(batch, params):
    z, y = batch
    # default mining=False: PML's loss on all pairs; mining=True: PML's loss + MultiSimilarityMiner(0.1)
    assert close(MultiSimilarityLoss(*params, mining=False)(z, y), pml_losses.MultiSimilarityLoss(*params)(z, y))
    t = pml_miners.MultiSimilarityMiner(0.1)(z, y)
    assert close(MultiSimilarityLoss(*params, mining=True)(z, y), pml_losses.MultiSimilarityLoss(*params)(z, y, t))


def test_multi_similarity_mining_is_exercised_on_these_batches():
    diffs = [abs(float(MultiSimilarityLoss(mining=True)(z, y)) - float(MultiSimilarityLoss(mining=False)(z, y)))
             for z, y in BATCHES]
    assert max(diffs) > 1e-3


@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
@pytest.mark.parametrize("miner", [
    pml_miners.MultiSimilarityMiner(0.3), pml_miners.PairMarginMiner(0.2, 0.8),
    pml_miners.TripletMarginMiner(0.2, type_of_triplets="semihard"),
], ids=["ms", "pair-margin", "triplets"])
def test_multi_similarity_with_miner_tuples_equals_pml(batch, miner):
    z, y = batch
    t = miner(z, y)
    if all(len(x) <= 1 for x in t):
        pytest.fail("test batch gives a degenerate tuple; choose another seed")
    # with a tuple the loss uses exactly its pairs (no mining of its own), whatever `mining` says
    for mining in (True, False):
        assert close(MultiSimilarityLoss(mining=mining)(z, y, t), pml_losses.MultiSimilarityLoss()(z, y, t))


@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
def test_multi_similarity_with_ref_emb_equals_pml(batch):
    z, y = batch
    ref = torch.randn(9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref_y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2])
    assert close(MultiSimilarityLoss(mining=False)(z, y, None, ref, ref_y),
                 pml_losses.MultiSimilarityLoss()(z, y, None, ref, ref_y))


# ----------------------------------------------------------------------------- proxy anchor
@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
@pytest.mark.parametrize("with_miner", [False, True])
def test_proxy_anchor_equals_pml(batch, with_miner):
    z, y = batch
    c = int(y.max()) + 2
    ours = ProxyAnchorLoss(c, 8, 0.2, 16).double()
    theirs = pml_losses.ProxyAnchorLoss(c, 8, 0.2, 16)
    theirs.proxies.data = ours.proxies.detach().clone()
    t = pml_miners.MultiSimilarityMiner(0.1)(z, y) if with_miner else None
    assert close(ours(z, y, t), theirs(z, y, t))


# ----------------------------------------------------------------------------- N-pair vs PML NPairsLoss
@pytest.mark.parametrize("batch", BATCHES[:2], ids=IDS[:2])
def test_npair_official_with_pml_distance_equals_pml_npairs_for_two_per_class(batch):
    """Documented relation: PML's NPairsLoss takes one (anchor, positive) per class (the first two in batch
    order) with normalised dot products and no l2 term; with m = 2 that is the official real branch."""
    z, y = batch
    keep = torch.cat([torch.nonzero(y == c)[:2, 0] for c in torch.unique(y)]).sort().values
    z, y = z[keep], y[keep]
    ours = NPairLoss(0.0, "official", distance=DotProductSimilarity())(z, y)
    assert close(ours, pml_losses.NPairsLoss()(z, y))
    assert not close(NPairLoss(0.0, "official")(z, y), pml_losses.NPairsLoss()(z, y))  # raw dot products differ


@pytest.mark.parametrize("batch", BATCHES, ids=IDS)
def test_in_loss_hard_mining_equals_pml_batch_hard_miner(batch):
    """The former default (batch-hard, mean over anchors) is PML's TripletMarginLoss(reducer=MeanReducer())
    on BatchHardMiner's triplets."""
    from graphneg.losses import MeanReducer
    from pytorch_metric_learning import reducers as pml_reducers
    z, y = batch
    t = pml_miners.BatchHardMiner()(z, y)
    theirs = pml_losses.TripletMarginLoss(0.2, reducer=pml_reducers.MeanReducer())(z, y, t)
    assert close(TripletMarginLoss(0.2, mining="hard", reducer=MeanReducer())(z, y), theirs)
