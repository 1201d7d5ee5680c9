"""UnReMix scores (graphneg.sampling) against loop references on 6 points."""
import math

import pytest
import torch
import torch.nn.functional as F

from graphneg.graph import batch_graph
from graphneg.sampling import (
    UnReMixScores,
    density_scores,
    mix_scores,
    normalize_scores,
    representativeness_scores,
    similarity_scores,
    uncertainty_scores,
    unremix_scores,
)


def _six(seed=0, d=4):
    """6 anchors = 3 samples x 2 views; positive of i is (i + 3) % 6, negatives the other 4."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, d, generator=g, dtype=torch.float64)
    pos = (torch.arange(6) + 3) % 6
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[torch.arange(6), torch.arange(6)] = False
    mask[torch.arange(6), pos] = False
    return z, pos, mask


def _cos(a, b):
    return float(a @ b) / (float(a.norm()) * float(b.norm()))


def _negs(mask, i):
    return [j for j in range(mask.size(1)) if bool(mask[i, j])]


def test_similarity_matches_loop():
    z, pos, mask = _six(1)
    t, beta = 0.3, 1.7
    got = similarity_scores(z, mask, temperature=t, beta=beta)
    for i in range(6):
        js = _negs(mask, i)
        raw = {j: math.exp(beta * _cos(z[i], z[j]) / t) for j in js}
        m = max(_cos(z[i], z[j]) for j in js)
        mean = sum(raw.values()) / len(js)
        for j in range(6):
            if j in raw:
                # raw score is exp(beta s / t) up to the documented per-anchor constant exp(beta m / t)
                assert abs(float(got[i, j]) - raw[j] / math.exp(beta * m / t)) < 1e-12
            else:
                assert float(got[i, j]) == 0.0
    normed = normalize_scores(got, mask)
    for i in range(6):
        js = _negs(mask, i)
        raw = {j: math.exp(beta * _cos(z[i], z[j]) / t) for j in js}
        mean = sum(raw.values()) / len(js)
        for j in js:
            assert abs(float(normed[i, j]) - raw[j] / mean) < 1e-12


def test_uncertainty_matches_loop():
    z, pos, mask = _six(2)
    t = 0.5
    got = uncertainty_scores(z, pos, mask, temperature=t)
    for i in range(6):
        js = _negs(mask, i)
        cands = [int(pos[i])] + js
        denom = sum(math.exp(_cos(z[i], z[c]) / t) for c in cands)
        for j in range(6):
            if j in js:
                s = _cos(z[i], z[j])
                want = math.exp(s / t) / denom * math.sqrt(1 - s * s) / t
                assert abs(float(got[i, j]) - want) < 1e-12
            else:
                assert float(got[i, j]) == 0.0


def test_uncertainty_is_gradient_norm_on_sphere():
    z, pos, mask = _six(3, d=5)
    t = 0.4
    unit = F.normalize(z, dim=-1)
    got = uncertainty_scores(unit, pos, mask, temperature=t)
    for i in range(6):
        x = unit.clone().requires_grad_()
        u = F.normalize(x, dim=-1)  # identity at unit norm; its Jacobian projects on the tangent space
        cands = [int(pos[i])] + _negs(mask, i)
        logits = torch.stack([u[i] @ u[c] for c in cands]) / t
        term = -torch.log_softmax(logits, dim=0)[0]  # anchor i's InfoNCE term
        (grad,) = torch.autograd.grad(term, x)
        for j in _negs(mask, i):
            assert abs(float(grad[j].norm()) - float(got[i, j])) < 1e-10


def _loop_density(z, k):
    out = []
    n = z.size(0)
    for j in range(n):
        sims = sorted((_cos(z[j], z[m]) for m in range(n) if m != j), reverse=True)[:k]
        out.append(math.exp(sum(sims) / len(sims)))
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_density_matches_loop(k):
    z, _, _ = _six(4)
    got = density_scores(z, k=k)
    want = _loop_density(z, k)
    for j in range(6):
        assert abs(float(got[j]) - want[j]) < 1e-12
    # same value when the edge weights are read from a precomputed cosine matrix
    zn = F.normalize(z, dim=-1)
    assert torch.allclose(density_scores(z, k=k, sim=zn @ zn.t()), got, atol=1e-14)


def test_density_uses_the_pyg_knn_graph():
    z, _, _ = _six(5)
    k = 2
    data = batch_graph(z, edges="knn", k=k)
    src, dst = data.edge_index
    zn = F.normalize(z, dim=-1)
    w = (zn[src] * zn[dst]).sum(-1)
    want = torch.zeros(6, dtype=z.dtype).index_add_(0, dst, w) / k
    assert torch.allclose(density_scores(z, k=k), want.exp(), atol=1e-12)


def test_knn_read_off_similarity_equals_knn_index():
    from graphneg.graph import knn_index
    from graphneg.sampling.unremix import _knn_from_sim

    g = torch.Generator().manual_seed(20)
    z = F.normalize(torch.randn(30, 6, generator=g, dtype=torch.float64), dim=-1)
    for k in (1, 4, 29, 40):
        a = _knn_from_sim(z @ z.t(), k)
        b = knn_index(z, k)
        assert set(map(tuple, a.t().tolist())) == set(map(tuple, b.t().tolist()))
    # a duplicate of node 0 may outrank node 0 itself: the node is still never its own neighbour
    zd = torch.cat([z[:1], z[:1], z[1:5]])
    e = _knn_from_sim(zd @ zd.t(), 2)
    assert bool((e[0] != e[1]).all()) and e.size(1) == 12
    assert {tuple(p) for p in e.t().tolist() if p[1] == 0} >= {(1, 0)}


def test_density_outlier_lowest():
    g = torch.Generator().manual_seed(6)
    centre = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    cluster = centre + 0.05 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    outlier = torch.tensor([[-0.2, 1.0, 0.3]], dtype=torch.float64)
    x = torch.cat([cluster[:4], outlier, cluster[4:]])
    dens = density_scores(x, k=3)
    assert int(dens.argmin()) == 4
    assert bool((dens > 0).all())
    rep = representativeness_scores(dens, torch.ones(9, 9, dtype=torch.bool).fill_diagonal_(False))
    # the outlier is the least representative negative for every other anchor
    for i in range(9):
        if i != 4:
            row = rep[i].clone()
            row[i] = float("inf")
            assert int(row.argmin()) == 4


def test_unremix_scores_bundle_and_representativeness_loop():
    z, pos, mask = _six(7)
    t, beta, k = 0.5, 1.0, 2
    s = unremix_scores(z, pos, mask, temperature=t, beta=beta, k=k)
    assert isinstance(s, UnReMixScores)
    assert torch.allclose(s.similarity, similarity_scores(z, mask, t, beta), atol=1e-14)
    assert torch.allclose(s.uncertainty, uncertainty_scores(z, pos, mask, t), atol=1e-14)
    dens = _loop_density(z, k)
    for i in range(6):
        for j in range(6):
            want = dens[j] if bool(mask[i, j]) else 0.0
            assert abs(float(s.representativeness[i, j]) - want) < 1e-12
    for v in s:
        assert v.shape == (6, 6) and not v.requires_grad


def test_unremix_scores_with_extra_candidates():
    z, pos, _ = _six(8)
    g = torch.Generator().manual_seed(9)
    extra = torch.randn(2, 4, generator=g, dtype=torch.float64)
    cand = torch.cat([z, extra])
    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[torch.arange(6), torch.arange(6)] = False
    mask[torch.arange(6), pos] = False
    s = unremix_scores(z, pos, mask, temperature=0.5, k=3, candidates=cand)
    dens = _loop_density(cand, 3)  # density over all candidates
    for i in range(6):
        js = _negs(mask, i)
        denom = sum(math.exp(_cos(z[i], cand[c]) / 0.5) for c in [int(pos[i])] + js)
        for j in js:
            sij = _cos(z[i], cand[j])
            assert abs(float(s.representativeness[i, j]) - dens[j]) < 1e-12
            want_u = math.exp(sij / 0.5) / denom * math.sqrt(1 - sij * sij) / 0.5
            assert abs(float(s.uncertainty[i, j]) - want_u) < 1e-12


def test_normalize_and_mix():
    z, pos, mask = _six(10)
    mask[0, 1] = False  # a variable number of negatives
    s = unremix_scores(z, pos, mask, k=2)
    normed = [normalize_scores(v, mask) for v in s]
    for v in normed:
        assert torch.all(v[~mask] == 0)
        assert torch.allclose(v.sum(1) / mask.sum(1), torch.ones(6, dtype=v.dtype), atol=1e-12)
    mixed = mix_scores(normed, (1.0, 2.0, 0.0))
    assert torch.allclose(mixed, (normed[0] + 2 * normed[1]) / 3, atol=1e-14)
    assert torch.allclose(mixed.sum(1) / mask.sum(1), torch.ones(6, dtype=mixed.dtype), atol=1e-12)
    # a row of zeros (no preference) becomes uniform 1 on the negatives
    zero = torch.zeros(6, 6, dtype=torch.float64)
    assert torch.equal(normalize_scores(zero, mask), mask.double())


def test_duplicates_uncertainty_gradient_guarded():
    x = torch.ones(6, 3, dtype=torch.float64, requires_grad=True)
    pos = (torch.arange(6) + 3) % 6
    mask = torch.ones(6, 6, dtype=torch.bool).fill_diagonal_(False)
    mask[torch.arange(6), pos] = False
    u = uncertainty_scores(x, pos, mask, temperature=0.5, detach=False)
    assert torch.all(u == 0)  # |s| = 1: no tangent direction
    (g,) = torch.autograd.grad(u.sum(), x)
    assert torch.isfinite(g).all()
    d = density_scores(x, k=2, detach=False)
    (g,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(g).all()


def test_scores_detached_by_default():
    z, pos, mask = _six(11)
    z.requires_grad_()
    assert not similarity_scores(z, mask).requires_grad
    assert not uncertainty_scores(z, pos, mask).requires_grad
    assert not density_scores(z, 2).requires_grad
    assert similarity_scores(z, mask, detach=False).requires_grad


def test_errors():
    z, pos, mask = _six(12)
    with pytest.raises(ValueError, match="k .* integer >= 1"):
        density_scores(z, k=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        uncertainty_scores(z, pos, mask, temperature=0.0)
    with pytest.raises(ValueError, match="neg_mask must be a bool tensor of shape"):
        unremix_scores(z, pos, mask[:, :5])
    bad = mask.clone()
    bad[0, int(pos[0])] = True
    with pytest.raises(ValueError, match="positive as a negative"):
        unremix_scores(z, pos, bad)
    with pytest.raises(ValueError, match="pos_index"):
        unremix_scores(z, pos[:5], mask)
    nan = z.clone()
    nan[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        similarity_scores(nan, mask)
    with pytest.raises(ValueError, match="beta"):
        similarity_scores(z, mask, beta=float("inf"))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        mix_scores([mask.double()] * 3, (0, 0, 0))
    with pytest.raises(ValueError, match="one entry per candidate"):
        representativeness_scores(torch.ones(5), mask)
