"""Metric losses against plain Python-loop references written here (float64, 1e-6).

References follow the published formulas: N-pair (Sohn 2016) + the HDML/GCA-HNG l2 term, the
official GCA-HNG synthetic N-pair in its chunked layout (scripts/loss.py, re-derived as loops),
multi-similarity with MS mining (Wang et al. 2019), triplet with batch-hard / semi-hard / all mining
(Hermans et al. 2017; pytorch-metric-learning's semihard miner), Proxy-Anchor (Kim et al. 2020, eq. 4).
"""
import math

import pytest
import torch

from graphneg.losses import AvgNonZeroReducer, MeanReducer
from graphneg.losses.metric import (
    MultiSimilarityLoss,
    NPairLoss,
    ProxyAnchorLoss,
    TripletMarginLoss,
    next_positive_index,
)

TOL = 1e-6
LABEL_SETS = {
    "interleaved": [0, 1, 2, 0, 1, 2, 0, 1],
    "singleton": [0, 0, 1, 1, 1, 2, 2, 3],  # class 3 has one sample: its anchor is skipped
}


# ----------------------------------------------------------------------------- data
def make_batch(labels, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return z, torch.tensor(labels)


def make_synthetic(z, y, m=11, seed=1):
    """Random synthetic negatives; anchor 2 gets none (anchor_index avoids it)."""
    g = torch.Generator().manual_seed(seed)
    num_classes = int(y.max()) + 1
    choices = torch.tensor([i for i in range(len(y)) if i != 2])
    anchor = choices[torch.randint(0, len(choices), (m,), generator=g)]
    shift = torch.randint(1, num_classes, (m,), generator=g)
    neg_labels = (y[anchor] + shift) % num_classes
    neg = torch.randn(m, z.size(1), generator=g, dtype=torch.float64)
    return neg, neg_labels, anchor


# ----------------------------------------------------------------------------- loop references
def f(t):
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


def positives(y, a):
    return [j for j in range(len(y)) if j != a and int(y[j]) == int(y[a])]


def negatives(z, y, a, synth):
    if synth is None:
        return [z[j] for j in range(len(y)) if int(y[j]) != int(y[a])]
    neg, _, anchor = synth
    return [neg[k] for k in range(len(anchor)) if int(anchor[k]) == a]


def cosine(u, v):
    return f(u @ v) / (f(u.norm()) * f(v.norm()))


def unit_dist(u, v):
    return f((u / u.norm() - v / v.norm()).norm())


def ref_npair(z, y, synth=None, l2_reg=3e-3):
    ces, a_sq, p_sq, tile_sq = [], [], [], []
    for a in range(len(y)):
        same = positives(y, a)
        if not same:
            continue
        later = [j for j in same if j > a]
        p = min(later) if later else min(same)  # next same-class sample, cyclic
        negs = negatives(z, y, a, synth)
        logits = [f(z[a] @ z[p])] + [f(z[a] @ n) for n in negs]
        ces.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
        a_sq.append(f(z[a] @ z[a]))
        p_sq.append(f(z[p] @ z[p]))
        tile_sq += [f(n @ n) for n in negs]
    if synth is None:
        reg = sum(x + w for x, w in zip(a_sq, p_sq)) / len(a_sq)
    else:
        reg = sum(a_sq) / len(a_sq) + (sum(p_sq) + sum(tile_sq)) / (len(p_sq) + len(tile_sq))
    return sum(ces) / len(ces) + 0.25 * l2_reg * reg


def ref_ms(z, y, synth=None, alpha=2.0, beta=50.0, base=0.5, eps=0.1, mining=True):
    """Mean over all B anchors (PML MeanReducer over the rows; an anchor with no kept pair gives 0)."""
    losses = []
    for a in range(len(y)):
        pos = positives(y, a)
        sp = [cosine(z[a], z[p]) for p in pos]
        sn = [cosine(z[a], n) for n in negatives(z, y, a, synth)]
        if mining:
            kept_n = [s for s in sn if sp and s + eps > min(sp)]
            kept_p = [s for s in sp if sn and s - eps < max(sn)]
        else:
            kept_p, kept_n = sp, sn
        lp = math.log(1 + sum(math.exp(-alpha * (s - base)) for s in kept_p)) / alpha
        ln = math.log(1 + sum(math.exp(beta * (s - base)) for s in kept_n)) / beta
        losses.append(lp + ln)
    return sum(losses) / len(losses)


def ref_triplet(z, y, synth=None, margin=0.2, mining="hard", reduction="mean"):
    losses = []
    for a in range(len(y)):
        pos = positives(y, a)
        negs = negatives(z, y, a, synth)
        if not pos or not negs:
            continue
        dp = [unit_dist(z[a], z[p]) for p in pos]
        dn = [unit_dist(z[a], n) for n in negs]
        if mining == "hard":
            losses.append(max(0.0, max(dp) - min(dn) + margin))
            continue
        for d_ap in dp:
            for d_an in dn:
                gap = d_an - d_ap
                if mining == "semihard" and not (0 < gap <= margin):
                    continue
                losses.append(max(0.0, margin - gap))
    if reduction == "nonzero":
        losses = [v for v in losses if v > 0]
    return sum(losses) / len(losses) if losses else 0.0


def ref_proxy_anchor(x, y, proxies, margin=0.1, alpha=32.0):
    pos_terms, neg_total = [], 0.0
    for c in range(proxies.size(0)):
        members = [i for i in range(len(y)) if int(y[i]) == c]
        others = [i for i in range(len(y)) if int(y[i]) != c]
        if members:
            pos_terms.append(math.log(1 + sum(
                math.exp(-alpha * (cosine(x[i], proxies[c]) - margin)) for i in members)))
        neg_total += math.log(1 + sum(math.exp(alpha * (cosine(x[i], proxies[c]) + margin)) for i in others))
    return sum(pos_terms) / len(pos_terms) + neg_total / proxies.size(0)


def synth_kwargs(synth):
    if synth is None:
        return {}
    neg, neg_labels, anchor = synth
    return dict(neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor)


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
@pytest.mark.parametrize("with_synth", [False, True])
def test_npair_matches_loop(labels, with_synth):
    z, y = make_batch(labels)
    synth = make_synthetic(z, y) if with_synth else None
    for l2_reg in (3e-3, 0.5):
        got = NPairLoss(l2_reg=l2_reg)(z, y, **synth_kwargs(synth))
        assert got.dtype == torch.float64
        assert abs(f(got) - ref_npair(z, y, synth, l2_reg)) < TOL


def test_npair_synthetic_equals_official_chunked_form():
    """Official GCA-HNG layout: m chunks of one sample per class; chunk j's anchors pair with chunk
    j+1 (cyclic); each anchor's row of the C x C tile holds its C-1 synthetic negatives and, on the
    diagonal, its positive; CE over the row, l2 = mean||anchor||^2 + mean||tile||^2; mean over chunks."""
    m, c, d, l2_reg = 3, 4, 5, 3e-3
    g = torch.Generator().manual_seed(3)
    z = torch.randn(m * c, d, generator=g, dtype=torch.float64)
    y = torch.arange(c).repeat(m)
    syn = torch.randn(m, c, c, d, generator=g, dtype=torch.float64)  # [chunk, anchor, class]
    expected = 0.0
    for j in range(m):
        ces, a_sq, tile_sq = [], [], []
        for i in range(c):
            anchor, positive = z[j * c + i], z[((j + 1) % m) * c + i]
            row = [positive if k == i else syn[j, i, k] for k in range(c)]
            logits = [f(anchor @ t) for t in row]
            ces.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
            a_sq.append(f(anchor @ anchor))
            tile_sq += [f(t @ t) for t in row]
        expected += sum(ces) / c + 0.25 * l2_reg * (sum(a_sq) / c + sum(tile_sq) / (c * c))
    expected /= m
    rows = [(j, i, k) for j in range(m) for i in range(c) for k in range(c) if k != i]
    neg = torch.stack([syn[j, i, k] for j, i, k in rows])
    neg_labels = torch.tensor([k for _, _, k in rows])
    anchor_index = torch.tensor([j * c + i for j, i, _ in rows])
    got = NPairLoss(l2_reg)(z, y, neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor_index)
    assert abs(f(got) - expected) < TOL


def official_npair_real(z, y, m, l2_reg):
    """``scripts/loss.py`` ``NpairLoss.forward(x, label, equal_shape=True)`` written as loops: the batch is
    ``m`` chunks of ``C`` samples; chunk 0 holds the anchors; for each chunk ``r >= 1`` the logits are
    ``anchor_i . sample_r,k`` with soft targets ``[y0_i == y0_k] / sum_k [y0_i == y0_k]`` (chunk 0's labels),
    ``CE = mean_i sum_k -target_ik log_softmax_k``; ``loss = sum_r CE_r / (m - 1) + 0.25 l2_reg
    sum_chunks sum ||x||^2 / C``."""
    c = len(y) // m
    chunks = [list(range(r * c, (r + 1) * c)) for r in range(m)]
    y0 = [int(y[i]) for i in chunks[0]]
    l2 = sum(f(z[j] @ z[j]) for ch in chunks for j in ch) / c
    loss_ce = 0.0
    for r in range(1, m):
        ce = 0.0
        for i, a in enumerate(chunks[0]):
            logits = [f(z[a] @ z[k]) for k in chunks[r]]
            lse = math.log(sum(math.exp(v) for v in logits))
            target = [float(y0[i] == y0[k]) for k in range(c)]
            ce += sum(-t / sum(target) * (v - lse) for t, v in zip(target, logits))
        loss_ce += ce / c
    return loss_ce / (m - 1) + l2_reg * l2 * 0.25


@pytest.mark.parametrize("m,c", [(2, 4), (3, 5), (4, 3)])
def test_npair_official_anchors_equal_official_real_branch(m, c):
    g = torch.Generator().manual_seed(10 * m + c)
    z = torch.randn(m * c, 6, generator=g, dtype=torch.float64)
    classes = torch.randperm(20, generator=g)[:c]
    y = classes.repeat(m)  # the official layout: m chunks, one sample per class, same class order
    for l2_reg in (3e-3, 0.7):
        expected = official_npair_real(z, y, m, l2_reg)
        got = NPairLoss(l2_reg, anchors="official")(z, y)
        assert got.dtype == torch.float64
        assert abs(f(got) - expected) < TOL
        # layout-free: class-grouped order (within-class order kept) gives the same value
        grouped = torch.arange(m * c).view(m, c).t().reshape(-1)
        assert abs(f(NPairLoss(l2_reg, anchors="official")(z[grouped], y[grouped])) - expected) < TOL
    # the generalised default differs (every sample an anchor, 2(C-1) negatives)
    assert abs(f(NPairLoss()(z, y)) - official_npair_real(z, y, m, 3e-3)) > 1e-3


def test_npair_official_anchors_gradient_matches_official_loop():
    m, c = 3, 4
    g = torch.Generator().manual_seed(5)
    z = torch.randn(m * c, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(c).repeat(m)

    def official_torch(x):  # the official code's tensor ops, verbatim structure
        samples = torch.chunk(x, m, dim=0)
        label = y[:c].view(c, 1)
        label = (label == label.t()).double()
        label = label / label.sum(dim=1, keepdim=True)
        l2 = sum(torch.sum(s ** 2) / c for s in samples)
        ce = sum(torch.mean(torch.sum(-label * torch.log_softmax(samples[0] @ samples[r].t(), -1), -1))
                 for r in range(1, m))
        return ce / (m - 1) + 3e-3 * l2 * 0.25

    (g_ours,) = torch.autograd.grad(NPairLoss(anchors="official")(z, y), z)
    (g_ref,) = torch.autograd.grad(official_torch(z), z)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_npair_official_anchors_synthetic_term_is_official_branch():
    """With synthetic negatives both modes compute the official ``equal_shape=False`` branch."""
    z, y = make_batch(LABEL_SETS["interleaved"])
    synth = make_synthetic(z, y)
    a = NPairLoss(anchors="official")(z, y, **synth_kwargs(synth))
    assert abs(f(a) - ref_npair(z, y, synth)) < TOL


def test_npair_anchors_argument_checked():
    with pytest.raises(ValueError, match="anchors"):
        NPairLoss(anchors="first")
    with pytest.raises(ValueError, match="no anchor in this batch has a positive"):
        NPairLoss(anchors="official")(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_next_positive_index_is_cyclic_next_same_class():
    y = torch.tensor([2, 0, 2, 1, 0, 2, 3])
    expected = []
    for a in range(len(y)):
        same = positives(y, a)
        later = [j for j in same if j > a]
        expected.append(min(later) if later else (min(same) if same else a))
    assert next_positive_index(y).tolist() == expected


@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
@pytest.mark.parametrize("with_synth", [False, True])
@pytest.mark.parametrize("mining", [True, False])
def test_multi_similarity_matches_loop(labels, with_synth, mining):
    z, y = make_batch(labels)
    synth = make_synthetic(z, y) if with_synth else None
    for alpha, beta, base, eps in [(2.0, 50.0, 0.5, 0.1), (1.0, 10.0, 0.0, 0.3)]:
        loss = MultiSimilarityLoss(alpha, beta, base, epsilon=eps, mining=mining)
        got = loss(z, y, **synth_kwargs(synth))
        assert abs(f(got) - ref_ms(z, y, synth, alpha, beta, base, eps, mining)) < TOL


def test_multi_similarity_mining_changes_the_pairs():
    """Guard that the mined and unmined losses differ on the test batch (mining is exercised)."""
    z, y = make_batch(LABEL_SETS["interleaved"])
    assert abs(ref_ms(z, y, mining=True) - ref_ms(z, y, mining=False)) > 1e-3


@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
@pytest.mark.parametrize("with_synth", [False, True])
@pytest.mark.parametrize("mining", ["hard", "semihard", "all"])
@pytest.mark.parametrize("reduction", ["mean", "nonzero"])
def test_triplet_matches_loop(labels, with_synth, mining, reduction):
    z, y = make_batch(labels)
    synth = make_synthetic(z, y) if with_synth else None
    for margin in (0.2, 0.7):
        reducer = MeanReducer() if reduction == "mean" else AvgNonZeroReducer()
        got = TripletMarginLoss(margin, mining=mining, reducer=reducer)(z, y, **synth_kwargs(synth))
        assert abs(f(got) - ref_triplet(z, y, synth, margin, mining, reduction)) < TOL


def test_triplet_semihard_selects_some_triplets():
    z, y = make_batch(LABEL_SETS["interleaved"])
    assert ref_triplet(z, y, mining="semihard", margin=0.7) > 0


@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
@pytest.mark.parametrize("with_synth", [False, True])
def test_proxy_anchor_matches_loop(labels, with_synth):
    z, y = make_batch(labels)
    num_classes = int(y.max()) + 2  # one proxy without samples in the batch
    loss = ProxyAnchorLoss(num_classes, z.size(1)).double()
    synth = make_synthetic(z, y) if with_synth else None
    x, t = z, y
    if synth is not None:
        x, t = torch.cat([z, synth[0]]), torch.cat([y, synth[1]])
    for margin, alpha in [(0.1, 32.0), (0.3, 4.0)]:
        loss.margin, loss.alpha = margin, alpha
        got = loss(z, y, **synth_kwargs(synth))
        expected = ref_proxy_anchor(x, t, loss.proxies.detach(), margin, alpha)
        assert abs(f(got) - expected) < TOL * max(1.0, abs(expected))


def test_proxy_anchor_init_is_kaiming_fan_out():
    torch.manual_seed(0)
    loss = ProxyAnchorLoss(400, 64)
    assert loss.proxies.shape == (400, 64)
    assert abs(f(loss.proxies.std()) / math.sqrt(2.0 / 400) - 1) < 0.05
    assert "num_classes=400" in repr(loss)


@pytest.mark.parametrize("make_loss", [
    lambda: NPairLoss(l2_reg=0.0),
    lambda: MultiSimilarityLoss(mining=True),
    lambda: TripletMarginLoss(mining="hard"),
    lambda: TripletMarginLoss(mining="semihard", margin=0.7),
    lambda: TripletMarginLoss(mining="all"),
])
def test_synthetic_equal_to_real_negatives_gives_real_loss(make_loss):
    """Handing each anchor all its real other-class samples as 'synthetic' negatives reproduces the
    real-pair loss: checks the packed anchors x candidates block."""
    z, y = make_batch(LABEL_SETS["singleton"])
    pairs = [(a, j) for a in range(len(y)) for j in range(len(y)) if int(y[a]) != int(y[j])]
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(5))
    pairs = [pairs[i] for i in perm]
    anchor = torch.tensor([a for a, _ in pairs])
    cand = torch.tensor([j for _, j in pairs])
    loss = make_loss()
    assert abs(f(loss(z, y, neg_embeddings=z[cand], neg_labels=y[cand], anchor_index=anchor)) - f(loss(z, y))) < TOL


# ----------------------------------------------------------------------------- gradients / training
LOSSES = {
    "npair": lambda d, c: NPairLoss(),
    "ms": lambda d, c: MultiSimilarityLoss(mining=True),
    "triplet_hard": lambda d, c: TripletMarginLoss(mining="hard"),
    "triplet_semihard": lambda d, c: TripletMarginLoss(margin=0.7, mining="semihard"),
    "triplet_all": lambda d, c: TripletMarginLoss(mining="all"),
    "proxy_anchor": lambda d, c: ProxyAnchorLoss(c, d),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("with_synth", [False, True])
def test_gradient_finite_and_sgd_step_lowers_loss(name, with_synth):
    z0, y = make_batch(LABEL_SETS["interleaved"], dim=6)
    synth = make_synthetic(z0, y) if with_synth else None
    loss_fn = LOSSES[name](6, 3).double()
    z = z0.clone().requires_grad_(True)
    params = [z] + list(loss_fn.parameters())
    kwargs = {}
    if synth is not None:
        neg = synth[0].clone().requires_grad_(True)
        params.append(neg)
        kwargs = dict(neg_embeddings=neg, neg_labels=synth[1], anchor_index=synth[2])
    opt = torch.optim.SGD(params, lr=1e-2)
    before = loss_fn(z, y, **kwargs)
    assert f(before) > 0
    opt.zero_grad()
    before.backward()
    for p in params:
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
    assert f(z.grad.abs().sum()) > 0
    if synth is not None and name != "proxy_anchor":
        assert f(neg.grad.abs().sum()) > 0
    opt.step()
    with torch.no_grad():
        after = loss_fn(z, y, **kwargs)
    assert f(after) < f(before)


def test_self_pair_and_duplicates_have_finite_gradient():
    """Identical same-class embeddings (distance 0) must not give NaN gradients (sqrt at 0)."""
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    for loss in (TripletMarginLoss(mining="all"), TripletMarginLoss(), MultiSimilarityLoss(mining=True)):
        z.grad = None
        loss(z, y).backward()
        assert bool(torch.isfinite(z.grad).all())


def test_float32_and_label_devices():
    z, y = make_batch(LABEL_SETS["interleaved"])
    for loss in (NPairLoss(), MultiSimilarityLoss(mining=True), TripletMarginLoss(), ProxyAnchorLoss(3, 4)):
        out = loss(z.float(), y)
        assert out.dtype == torch.float32 and out.dim() == 0 and bool(torch.isfinite(out))


# ----------------------------------------------------------------------------- errors
ALL = [NPairLoss(), MultiSimilarityLoss(mining=True), TripletMarginLoss(), ProxyAnchorLoss(4, 4)]


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_bad_inputs_raise_clear_errors(loss):
    z, y = make_batch(LABEL_SETS["interleaved"])
    with pytest.raises(ValueError, match=r"shape \[B, D\]"):
        loss(z[0], y)
    bad = z.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(bad, y)
    with pytest.raises(ValueError, match=r"expected shape \[8\]"):
        loss(z, y[:5])
    with pytest.raises(ValueError, match="single class"):
        loss(z, torch.zeros(8, dtype=torch.long))
    neg, neg_labels, anchor = make_synthetic(z, y)
    with pytest.raises(ValueError, match="missing: anchor_index"):
        loss(z, y, neg_embeddings=neg, neg_labels=neg_labels)
    with pytest.raises(ValueError, match="dimension D=4"):
        loss(z, y, neg_embeddings=neg[:, :3], neg_labels=neg_labels, anchor_index=anchor)
    with pytest.raises(ValueError, match=r"neg_labels .*expected shape \[11\]"):
        loss(z, y, neg_embeddings=neg, neg_labels=neg_labels[:4], anchor_index=anchor)
    with pytest.raises(ValueError, match=r"lie in \[0, 8\)"):
        loss(z, y, neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor + 8)
    with pytest.raises(ValueError, match="integer row indices"):
        loss(z, y, neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor.double())
    with pytest.raises(ValueError, match="carries its anchor's class"):
        loss(z, y, neg_embeddings=neg, neg_labels=y[anchor], anchor_index=anchor)
    # the former positional form lands in PML's indices_tuple slot: a clear error, not a silent misuse
    msg = f"{type(loss).__name__}: indices_tuple .* synthetic negatives are keyword-only"
    with pytest.raises(ValueError, match=msg):
        loss(z, y, neg, neg_labels, anchor)


@pytest.mark.parametrize("loss", ALL[:3], ids=lambda m: type(m).__name__)
def test_pair_losses_need_a_positive(loss):
    z, _ = make_batch(LABEL_SETS["interleaved"])
    with pytest.raises(ValueError, match="m-per-class sampler with m >= 2"):
        loss(z, torch.arange(8))


def test_triplet_without_any_triplet_raises():
    z, y = make_batch([0, 0, 1, 2])
    neg = torch.randn(2, 4, dtype=torch.float64)
    # only anchors 2 and 3 (no positive) receive synthetic negatives
    with pytest.raises(ValueError, match="no triplet can be formed"):
        TripletMarginLoss()(z, y, neg_embeddings=neg, neg_labels=torch.tensor([0, 0]),
                            anchor_index=torch.tensor([2, 3]))


def test_constructor_and_proxy_errors():
    with pytest.raises(ValueError, match="mining must be one of"):
        TripletMarginLoss(mining="hardest")
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'nonzero'"):
        TripletMarginLoss(reduction="sum")
    with pytest.raises(ValueError, match="l2_reg must be a finite number >= 0"):
        NPairLoss(l2_reg=-1)
    z, y = make_batch(LABEL_SETS["interleaved"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=2\)"):
        ProxyAnchorLoss(2, 4)(z, y)
    with pytest.raises(ValueError, match="embedding_size=5"):
        ProxyAnchorLoss(3, 5)(z, y)
    neg = torch.randn(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"neg_labels must lie in \[0, num_classes=3\)"):
        ProxyAnchorLoss(3, 4).double()(z, y, neg_embeddings=neg, neg_labels=torch.tensor([7]),
                                       anchor_index=torch.tensor([0]))


# ----------------------------------------------------------------------------- contract
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("make,arg", [
    (lambda v: MultiSimilarityLoss(alpha=v), "alpha"),
    (lambda v: MultiSimilarityLoss(beta=v), "beta"),
    (lambda v: MultiSimilarityLoss(base=v), "base"),
    (lambda v: MultiSimilarityLoss(epsilon=v), "epsilon"),
    (lambda v: TripletMarginLoss(margin=v), "margin"),
    (lambda v: ProxyAnchorLoss(3, 4, alpha=v), "alpha"),
    (lambda v: ProxyAnchorLoss(3, 4, margin=v), "margin"),
    (lambda v: NPairLoss(l2_reg=v), "l2_reg"),
])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_non_finite_hyper_parameters_raise_naming_the_argument(make, arg, value):
    with pytest.raises(ValueError, match=rf"{arg} must be a finite number"):
        make(value)


@pytest.mark.parametrize("make,arg", [
    (lambda v: MultiSimilarityLoss(alpha=v), "alpha"),
    (lambda v: MultiSimilarityLoss(beta=v), "beta"),
    (lambda v: MultiSimilarityLoss(epsilon=v), "epsilon"),
    (lambda v: TripletMarginLoss(margin=v), "margin"),
    (lambda v: ProxyAnchorLoss(3, 4, alpha=v), "alpha"),
    (lambda v: NPairLoss(l2_reg=v), "l2_reg"),
])
def test_negative_hyper_parameters_raise_where_meaningless(make, arg):
    with pytest.raises(ValueError, match=rf"{arg} must be a finite number >"):
        make(-0.5)


def test_zero_scales_raise_and_meaningful_values_pass():
    for make in (lambda: MultiSimilarityLoss(alpha=0), lambda: MultiSimilarityLoss(beta=0),
                 lambda: ProxyAnchorLoss(3, 4, alpha=0)):
        with pytest.raises(ValueError, match=r"must be a finite number > 0"):
            make()
    # a negative base / proxy margin is a legal (if unusual) choice
    z, y = make_batch(LABEL_SETS["interleaved"])
    assert abs(f(MultiSimilarityLoss(base=-0.2, mining=True)(z, y)) - ref_ms(z, y, base=-0.2)) < TOL
    assert torch.isfinite(ProxyAnchorLoss(3, 4, margin=-0.1).double()(z, y))
    with pytest.raises(TypeError, match="alpha must be a real number"):
        MultiSimilarityLoss(alpha="big")


def test_declared_needs():
    from graphneg.losses import BaseMetricLoss
    for loss in ALL:
        assert isinstance(loss, BaseMetricLoss) and loss.accepts_synthetic
    assert [loss.requires_positives for loss in ALL] == [True, True, True, False]
    assert [loss.has_proxies for loss in ALL] == [False, False, False, True]
    assert [loss.supports_indices_tuple for loss in ALL] == [False, True, True, True]
    assert [loss.supports_ref_emb for loss in ALL] == [False, True, True, False]


def test_unsupported_inputs_raise_naming_the_loss():
    z, y = make_batch(LABEL_SETS["interleaved"])
    t = (torch.tensor([0, 3]), torch.tensor([3, 0]), torch.tensor([0, 0]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="NPairLoss does not take a miner indices_tuple"):
        NPairLoss()(z, y, t)
    for loss in (NPairLoss(), ProxyAnchorLoss(3, 4).double()):
        with pytest.raises(ValueError, match=f"{type(loss).__name__} does not support ref_emb"):
            loss(z, y, None, z, y)
    with pytest.raises(ValueError, match="pass ref_emb .* and ref_labels .* together"):
        MultiSimilarityLoss(mining=True)(z, y, None, z)
    neg, neg_labels, anchor = make_synthetic(z, y)
    with pytest.raises(ValueError, match="cannot be combined with indices_tuple"):
        MultiSimilarityLoss(mining=True)(z, y, t, neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor)
    with pytest.raises(ValueError, match="indices_tuple and mining= both select"):
        TripletMarginLoss(mining="hard")(z, y, t)
    with pytest.raises(ValueError, match=r"indices_tuple\[1\] must lie in \[0, 8\)"):
        MultiSimilarityLoss(mining=True)(z, y, (t[0], t[1] + 8, t[2], t[3]))
    with pytest.raises(ValueError, match="lengths do not match"):
        MultiSimilarityLoss(mining=True)(z, y, (t[0], t[1][:1], t[2], t[3]))
    with pytest.raises(ValueError, match="pairs .* or triplets"):
        MultiSimilarityLoss(mining=True)(z, y, t[:2])
    with pytest.raises(ValueError, match="swap=True .* not supported with synthetic"):
        TripletMarginLoss(swap=True)(z, y, neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor)


def test_miner_pairs_select_exactly_those_pairs():
    """A pair tuple restricts the MS loss to its pairs: equals the loop over just those pairs."""
    z, y = make_batch(LABEL_SETS["interleaved"])
    a1, p, a2, n = [0, 0, 4], [3, 6, 1], [0, 5, 5], [1, 0, 7]
    loss = MultiSimilarityLoss(mining=True)(z, y, tuple(torch.tensor(v) for v in (a1, p, a2, n)))
    rows = []
    for a in range(len(y)):
        sp = [cosine(z[a], z[j]) for i, j in zip(a1, p) if i == a]
        sn = [cosine(z[a], z[j]) for i, j in zip(a2, n) if i == a]
        rows.append(math.log(1 + sum(math.exp(-2 * (s - 0.5)) for s in sp)) / 2
                    + math.log(1 + sum(math.exp(50 * (s - 0.5)) for s in sn)) / 50)
    assert abs(f(loss) - sum(rows) / len(rows)) < TOL


def test_npair_distance_object_replaces_dot_products():
    """N-pair is no longer hard-wired to dot products: with cosine similarity it is the dot-product loss of
    the normalised embeddings (l2 term off, as it reads the raw norms)."""
    from graphneg.losses import CosineSimilarity, LpDistance
    z, y = make_batch(LABEL_SETS["singleton"])
    zn = z / z.norm(dim=1, keepdim=True)
    assert abs(f(NPairLoss(0.0, distance=CosineSimilarity())(z, y)) - ref_npair(zn, y, l2_reg=0.0)) < TOL
    # a distance (not a similarity) enters as -d
    ours = NPairLoss(0.0, distance=LpDistance(normalize_embeddings=False))(z, y)
    ces = []
    for a in range(len(y)):
        same = positives(y, a)
        if not same:
            continue
        later = [j for j in same if j > a]
        pp = min(later) if later else min(same)
        logits = [-f((z[a] - z[pp]).norm())] + [-f((z[a] - n).norm()) for n in negatives(z, y, a, None)]
        ces.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
    assert abs(f(ours) - sum(ces) / len(ces)) < TOL


def test_triplet_reduction_keyword_is_deprecated_but_works():
    z, y = make_batch(LABEL_SETS["interleaved"])
    with pytest.warns(DeprecationWarning, match="reducer=MeanReducer"):
        old = TripletMarginLoss(0.2, mining="hard", reduction="mean")
    assert abs(f(old(z, y)) - ref_triplet(z, y, margin=0.2, mining="hard", reduction="mean")) < TOL


def test_new_paths_make_no_host_sync_when_value_checks_are_off():
    """GPU-ready: the official N-pair branch, batch-hard, swap, a miner tuple and a reference set read no
    tensor value on the host (no bool / item / tolist / int / float) once value checks are off."""
    from graphneg.validation import value_checks
    names = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}
    calls = []

    def spy(n):
        def method(self, *a, **k):
            calls.append(n)
            return saved[n](self, *a, **k)
        return method

    z, y = make_batch(LABEL_SETS["interleaved"])
    t = (torch.tensor([0, 3]), torch.tensor([3, 0]), torch.tensor([0, 0]), torch.tensor([1, 2]))
    cases = [lambda: NPairLoss(anchors="official")(z, y), lambda: TripletMarginLoss(mining="hard")(z, y),
             lambda: TripletMarginLoss(swap=True, smooth_loss=True)(z, y), lambda: MultiSimilarityLoss(mining=True)(z, y, t),
             lambda: TripletMarginLoss()(z, y, t[:2] + t[3:]), lambda: MultiSimilarityLoss(mining=True)(z, y, None, z[:5], y[:5]),
             lambda: ProxyAnchorLoss(3, 4).double()(z, y, t)]
    expected = [f(c()) for c in cases]
    try:
        for n in names:
            setattr(torch.Tensor, n, spy(n))
        cases[0]()  # value checks on: the spy sees the reads (it works)
        seen_with_checks, calls[:] = len(calls), []
        with value_checks(False):
            got = [c() for c in cases]
    finally:
        for n, m in saved.items():
            setattr(torch.Tensor, n, m)
    assert seen_with_checks > 0 and calls == []
    assert [f(g) for g in got[:-1]] == expected[:-1]  # the proxy loss draws fresh proxies


def test_a_subclass_gets_the_contract():
    """The docstring's example subclass, executed from the docstring: validated inputs reach compute; the
    value is the loop's."""
    import textwrap

    from graphneg.losses import BaseMetricLoss, LpDistance, MeanReducer
    from graphneg.losses.base import pair_masks

    example = textwrap.dedent(BaseMetricLoss.__doc__.split("::", 1)[1])
    namespace = dict(BaseMetricLoss=BaseMetricLoss, LpDistance=LpDistance, MeanReducer=MeanReducer,
                     pair_masks=pair_masks)
    exec(compile(example, "BaseMetricLoss.__doc__", "exec"), namespace)
    MeanPositiveDistance = namespace["MeanPositiveDistance"]
    z, y = make_batch(LABEL_SETS["interleaved"])
    pairs = [(a, p) for a in range(len(y)) for p in positives(y, a)]
    expected = sum(unit_dist(z[a], z[p]) for a, p in pairs) / len(pairs)
    assert abs(f(MeanPositiveDistance()(z, y.tolist())) - expected) < TOL
    neg, neg_labels, anchor = make_synthetic(z, y)
    with pytest.raises(ValueError, match="MeanPositiveDistance does not take synthetic negatives"):
        MeanPositiveDistance()(z, y, neg_embeddings=neg, neg_labels=neg_labels, anchor_index=anchor)


def test_base_classes_are_abstract():
    """BaseMetricLoss / BaseDistance / BaseReducer declare what a subclass must define (compute, compute_mat and
    pairwise_distance, forward): instantiating one without them is a TypeError naming the missing method."""
    from graphneg.losses import BaseMetricLoss
    from graphneg.losses.distances import BaseDistance
    from graphneg.losses.reducers import BaseReducer

    for cls, missing in ((BaseMetricLoss, "compute"), (BaseDistance, "compute_mat"), (BaseReducer, "forward")):
        with pytest.raises(TypeError, match=missing):
            cls()
