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
    # the old precomputed-matrix argument is deprecated (the kNN kernel computes the similarities)
    zn = F.normalize(z, dim=-1)
    with pytest.warns(FutureWarning, match="sim=.*deprecated"):
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


def test_neighbourhoods_come_from_the_knn_kernel():
    """The representativeness neighbourhoods are graphneg.ops.knn's edges: knn_index for the density
    (self excluded), and chunked_topk with the pair excluded for the diversity; also across chunks."""
    from graphneg.ops.knn import knn_index
    from graphneg.sampling import neighbour_similarities, pair_groups

    g = torch.Generator().manual_seed(20)
    z = F.normalize(torch.randn(30, 6, generator=g, dtype=torch.float64), dim=-1)
    for k in (1, 4, 29, 40):
        src, dst = knn_index(z, k)
        want = torch.zeros(30, dtype=z.dtype).index_add_(0, dst, (z[src] * z[dst]).sum(-1))
        want = want / torch.bincount(dst, minlength=30).to(z.dtype)
        for chunk in (7, 1024):
            sims, valid = neighbour_similarities(z, k, chunk_size=chunk)
            assert valid.all() and sims.shape == (30, min(k, 29))
            assert torch.allclose(sims.sum(1) / valid.sum(1), want, atol=1e-12)
    partner = (torch.arange(30) + 15) % 30
    sims, valid = neighbour_similarities(z, 29, pair_groups(partner), chunk_size=4)
    assert valid.sum(1).tolist() == [28] * 30  # self and partner excluded
    for j in (0, 17):
        ref = sorted((float(z[j] @ z[m]) for m in range(30) if m not in (j, int(partner[j]))), reverse=True)
        assert torch.allclose(sims[j, :28], torch.tensor(ref, dtype=z.dtype), atol=1e-12)


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
    s = unremix_scores(z, pos, mask, temperature=t, beta=beta, k=k, representativeness="density")
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
    s = unremix_scores(z, pos, mask, temperature=0.5, k=3, candidates=cand, representativeness="density")
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
    with pytest.raises(ValueError, match="k .* positive integer or None"):
        density_scores(z, k=0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
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


# ------------------------------------------------------------------ issue 10: diversity, pseudo-label
def _loop_diversity(x, partner, k=None):
    """Mean cosine distance of each point to the other points (not itself, not its partner view);
    with k: to its k most cosine-similar such points."""
    n = x.size(0)
    out = []
    for j in range(n):
        others = [m for m in range(n) if m != j and m != int(partner[j])]
        dists = sorted((1.0 - _cos(x[j], x[m]) for m in others))  # nearest = smallest distance
        if k is not None:
            dists = dists[:k]
        out.append(sum(dists) / len(dists) if dists else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def _outlier_batch():
    """10 points = 5 samples x 2 views; view pairs (j, j + 5); sample 2 (rows 2 and 7) lies far away."""
    g = torch.Generator().manual_seed(21)
    centre = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = centre + 0.1 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    x[2] = torch.tensor([-0.3, 1.0, 0.2], dtype=torch.float64)
    x[7] = torch.tensor([-0.25, 1.0, 0.3], dtype=torch.float64)
    partner = (torch.arange(10) + 5) % 10
    return x, partner


@pytest.mark.parametrize("k", [None, 1, 3, 20])
def test_diversity_matches_loop(k):
    from graphneg.sampling import diversity_scores
    from graphneg.sampling.representativeness import _diversity

    x, partner = _outlier_batch()
    want = _loop_diversity(x, partner, k)
    got = diversity_scores(x, k=k, partner=partner)
    assert torch.allclose(got, want, atol=1e-12)
    # the kNN form in row blocks of 3 (the block loop) gives the same numbers
    assert torch.allclose(_diversity(F.normalize(x, dim=-1), k or 9, partner, block_size=3),
                          _loop_diversity(x, partner, k or 9), atol=1e-12)
    # without partners every other point counts
    assert torch.allclose(diversity_scores(x, k=k), _loop_diversity(x, torch.full((10,), -1), k), atol=1e-12)


def test_outlier_largest_diversity_smallest_density():
    from graphneg.sampling import candidate_representativeness

    x, partner = _outlier_batch()
    x = torch.cat([x[:2], x[3:7], x[8:], x[2:3]])  # keep one view of the outlier: it is isolated
    partner = torch.full((9,), -1)
    div = candidate_representativeness(x, "diversity", k=None, partner=partner)
    div_knn = candidate_representativeness(x, "diversity", k=3, partner=partner)
    dens = candidate_representativeness(x, "density", k=3)
    assert int(div.argmax()) == 8 and int(div_knn.argmax()) == 8 and int(dens.argmin()) == 8
    # and after broadcasting + per-anchor normalisation: largest / smallest weight for every anchor
    mask = torch.ones(9, 9, dtype=torch.bool).fill_diagonal_(False)
    for vec, pick in ((div, "max"), (dens, "min")):
        w = normalize_scores(representativeness_scores(vec, mask), mask)
        for i in range(8):
            row = w[i].clone()
            row[i] = float("-inf") if pick == "max" else float("inf")
            assert int(getattr(row, "arg" + pick)()) == 8


def test_unremix_scores_diversity_with_extra_candidates():
    z, pos, mask = _six(31)
    g = torch.Generator().manual_seed(32)
    extra = torch.randn(2, 4, generator=g, dtype=torch.float64)
    cand = torch.cat([z, extra])
    mask8 = torch.cat([mask, torch.ones(6, 2, dtype=torch.bool)], dim=1)
    s = unremix_scores(z, pos, mask8, candidates=cand, k=None, representativeness="diversity")
    partner = torch.cat([pos, torch.tensor([-1, -1])])  # extras have no positive view
    div = _loop_diversity(cand, partner)
    for i in range(6):
        for j in range(8):
            want = float(div[j]) if bool(mask8[i, j]) else 0.0
            assert abs(float(s.representativeness[i, j]) - want) < 1e-12


def _loop_pseudo_label_uncertainty(z, cand, pos, mask, t):
    """u_ij = ||g_ij|| (1 - cos(g_ij, g_i)) / 2 with g from torch.autograd.grad of the auxiliary task
    BCE(sigmoid(<z_i/|z_i|, c_l/|c_l|> / t), y_il), y = 1 for the positive, 0 for a negative,
    taken w.r.t. the anchor embedding z_i (unit norm, so the gradient is the tangential one)."""
    u = torch.zeros(mask.shape, dtype=z.dtype)

    def grad(i, l, y):
        zi = z[i].clone().requires_grad_(True)
        logit = (F.normalize(zi, dim=0) @ F.normalize(cand[l], dim=0)) / t
        loss = F.binary_cross_entropy_with_logits(logit, torch.tensor(float(y), dtype=z.dtype))
        return torch.autograd.grad(loss, zi)[0]

    for i in range(mask.size(0)):
        gi = grad(i, int(pos[i]), 1)
        for j in range(mask.size(1)):
            if bool(mask[i, j]):
                gj = grad(i, j, 0)
                cos = float(gj @ gi) / (float(gj.norm()) * float(gi.norm()))
                u[i, j] = float(gj.norm()) * (1 - cos) / 2
    return u


@pytest.mark.parametrize("t", [0.5, 0.2])
def test_pseudo_label_uncertainty_matches_autograd(t):
    z, pos, mask = _six(33, d=5)
    z = F.normalize(z, dim=-1)  # unit anchors: the autograd gradient is the gradient on the sphere
    want = _loop_pseudo_label_uncertainty(z, z, pos, mask, t)
    got = uncertainty_scores(z, pos, mask, temperature=t, uncertainty="pseudo_label")
    assert torch.allclose(got, want, atol=1e-12)
    # with extra candidates (q computed from the candidates) and through unremix_scores
    g = torch.Generator().manual_seed(34)
    cand = torch.cat([z, F.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=-1)])
    mask9 = torch.cat([mask, torch.ones(6, 3, dtype=torch.bool)], dim=1)
    want = _loop_pseudo_label_uncertainty(z, cand, pos, mask9, t)
    got = unremix_scores(z, pos, mask9, temperature=t, candidates=cand, uncertainty="pseudo_label")
    assert torch.allclose(got.uncertainty, want, atol=1e-12)


def test_pseudo_label_uncertainty_side_of_the_positive():
    """A negative next to the positive (same side of the anchor) outweighs one on the far side."""
    z = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.4, 0.0], [0.9, 0.38, 0.1], [0.9, -0.4, 0.0]],
                                 dtype=torch.float64), dim=-1)
    pos = torch.tensor([1, 0, 3, 2])
    mask = torch.ones(4, 4, dtype=torch.bool).fill_diagonal_(False)
    mask[torch.arange(4), pos] = False
    u = uncertainty_scores(z, pos, mask, temperature=0.5, uncertainty="pseudo_label")
    assert float(u[0, 2]) > 10 * float(u[0, 3])  # anchor 0: negative 2 near its positive 1, 3 opposite


def _loop_hcl_estimator(z1, z2, t, tau_plus, weights):
    """Loop HCL estimator (Robinson et al. 2021, Sec. 3) with given importance weights[i][j]."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n, b = z.size(0), z1.size(0)
    total = 0.0
    for i in range(n):
        p = (i + b) % n
        negs = [j for j in range(n) if j != i and j != p]
        pos = math.exp(float(z[i] @ z[p]) / t)
        w = [float(weights[i][j]) for j in negs]
        reweight = len(negs) * sum(wj * math.exp(float(z[i] @ z[j]) / t) for wj, j in zip(w, negs)) / sum(w)
        ng = max((reweight - tau_plus * len(negs) * pos) / (1 - tau_plus), len(negs) * math.exp(-1 / t))
        total += -math.log(pos / (pos + ng))
    return total / n


@pytest.mark.parametrize("rep,k", [("density", 3), ("diversity", None), ("diversity", 2)])
def test_loss_representativeness_only_equals_hcl_estimator_with_hand_weights(rep, k):
    from graphneg.losses import UnReMixLoss

    g = torch.Generator().manual_seed(40)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    z = torch.cat([z1, z2])
    partner = (torch.arange(10) + 5) % 10
    if rep == "density":
        vec = []
        for j in range(10):
            sims = sorted((_cos(z[j], z[m]) for m in range(10) if m != j), reverse=True)[:k]
            vec.append(math.exp(sum(sims) / len(sims)))
    else:
        vec = _loop_diversity(z, partner, k).tolist()
    weights = []
    for i in range(10):
        negs = [j for j in range(10) if j != i and j != int(partner[i])]
        mean = sum(vec[j] for j in negs) / len(negs)
        weights.append([vec[j] / mean if j in negs else 0.0 for j in range(10)])
    want = _loop_hcl_estimator(z1, z2, 0.4, 0.1, weights)
    loss = UnReMixLoss(temperature=0.4, tau_plus=0.1, weights=(0, 0, 1), k=k, representativeness=rep)
    got = loss(z1, z2)
    assert abs(float(got) - want) < 1e-10
    assert torch.allclose(loss.last_scores["weights"], torch.tensor(weights, dtype=torch.float64), atol=1e-12)


def test_loss_pseudo_label_only_equals_hcl_estimator_with_autograd_weights():
    from graphneg.losses import UnReMixLoss

    g = torch.Generator().manual_seed(41)
    z1 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    pos = (torch.arange(6) + 3) % 6
    mask = torch.ones(6, 6, dtype=torch.bool).fill_diagonal_(False)
    mask[torch.arange(6), pos] = False
    u = _loop_pseudo_label_uncertainty(z, z, pos, mask, 0.5)
    w = u / (u.sum(1, keepdim=True) / 4)
    want = _loop_hcl_estimator(z1, z2, 0.5, 0.1, w.tolist())
    got = UnReMixLoss(temperature=0.5, tau_plus=0.1, weights=(0, 1, 0), uncertainty="pseudo_label")(z1, z2)
    assert abs(float(got) - want) < 1e-10


def test_variant_errors():
    from graphneg.losses import UnReMixLoss
    from graphneg.sampling import candidate_representativeness, diversity_scores

    z, pos, mask = _six(50)
    with pytest.raises(ValueError, match="representativeness must be one of"):
        UnReMixLoss(representativeness="dense")
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        UnReMixLoss(uncertainty="bald")
    with pytest.raises(ValueError, match="representativeness must be one of"):
        unremix_scores(z, pos, mask, representativeness="Diversity")
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        uncertainty_scores(z, pos, mask, uncertainty="pseudo-label")
    with pytest.raises(ValueError, match="representativeness must be one of"):
        candidate_representativeness(z, "typical")
    with pytest.raises(ValueError, match="partner must be an integer vector"):
        diversity_scores(z, partner=pos[:4])
    with pytest.raises(ValueError, match="k .* positive integer or None"):
        diversity_scores(z, k=0)


def test_new_variants_train_with_finite_gradients_on_duplicates():
    """Identical views and a repeated sample (sqrt(1 - s^2) = 0, anchor gradient 0): finite gradients,
    detached or not, and the mean-1 weights stay defined (uniform where a score carries no preference)."""
    from graphneg.losses import UnReMixLoss

    g = torch.Generator().manual_seed(60)
    z1 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    z1[1] = z1[0]
    for detach in (True, False):
        for rep in ("density", "diversity"):
            a1, a2 = z1.clone().requires_grad_(), z1.clone().requires_grad_()
            loss = UnReMixLoss(weights=(1, 1, 1), k=None if rep == "diversity" else 2, representativeness=rep,
                               uncertainty="pseudo_label", detach_scores=detach)
            out = loss(a1, a2)
            g1, g2 = torch.autograd.grad(out, (a1, a2))
            assert torch.isfinite(out) and torch.isfinite(g1).all() and torch.isfinite(g2).all()
            w = loss.last_scores["weights"]
            assert torch.isfinite(w).all() and (w >= 0).all()
