"""Contrastive loss family (InfoNCE, DCL, HCL, UnReMix) against independent references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss


def _views(b=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------------- references
def ref_hcl(z1, z2, temperature, tau_plus, beta, estimator="hard"):
    """Dense re-implementation of joshr17/HCL image/main.py `criterion` (unsupervised, no labels)."""
    out_1, out_2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    b = out_1.size(0)
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(out @ out.t() / temperature)
    mask = torch.ones(b, 2 * b, dtype=torch.bool)
    for i in range(b):
        mask[i, i] = False
        mask[i, i + b] = False
    mask = torch.cat([mask, mask], dim=0)
    neg = neg.masked_select(mask).view(2 * b, -1)
    pos = torch.exp((out_1 * out_2).sum(-1) / temperature)
    pos = torch.cat([pos, pos], dim=0)
    if estimator == "hard":
        n = 2 * b - 2
        imp = (beta * neg.log()).exp()
        reweight = (imp * neg).sum(-1) / imp.mean(-1)
        ng = (-tau_plus * n * pos + reweight) / (1 - tau_plus)
        ng = torch.clamp(ng, min=n * math.e ** (-1 / temperature))
    else:
        ng = neg.sum(-1)
    return (-torch.log(pos / (pos + ng))).mean()


def ref_loop(z1, z2, temperature, tau_plus, importance_fn, labels=None, neg=None, neg_labels=None,
             clamp=True):
    """Plain per-anchor loop of the HCL estimator with an arbitrary importance function.

    importance_fn(i, js, sims, cand) -> list of weights for anchor i over negatives js.
    """
    b = z1.size(0)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    cand = z if neg is None else torch.cat([z, F.normalize(neg, dim=-1)])
    lab = None
    if labels is not None:
        lab = torch.cat([labels, labels] + ([neg_labels] if neg is not None else []))
    losses = []
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        js = [j for j in range(cand.size(0)) if j != i and j != p and (lab is None or lab[j] != lab[i])]
        sims = {j: float(z[i] @ cand[j]) for j in range(cand.size(0))}
        pos = math.exp(sims[p] / temperature)
        negs = [math.exp(sims[j] / temperature) for j in js]
        w = importance_fn(i, js, sims, cand)
        n = len(js)
        reweight = sum(wj * nj for wj, nj in zip(w, negs)) / (sum(w) / n)
        ng = (-tau_plus * n * pos + reweight) / (1 - tau_plus)
        if clamp:
            ng = max(ng, n * math.exp(-1 / temperature))
        losses.append(-math.log(pos / (pos + ng)))
    return sum(losses) / len(losses)


def hcl_importance(beta, temperature):
    return lambda i, js, sims, cand: [math.exp(beta * sims[j] / temperature) for j in js]


def uniform_importance(i, js, sims, cand):
    return [1.0] * len(js)


# ---------------------------------------------------------------------------------- equalities
@pytest.mark.parametrize("t,tau,beta", [(0.5, 0.1, 1.0), (0.2, 0.05, 0.5), (1.0, 0.0, 2.0), (0.5, 0.9, 0.3)])
def test_hcl_matches_reference_formula(t, tau, beta):
    z1, z2 = _views(b=7, d=6, seed=1)
    got = HCLLoss(temperature=t, tau_plus=tau, beta=beta)(z1, z2)
    want = ref_hcl(z1, z2, t, tau, beta)
    assert abs(float(got) - float(want)) < 1e-6
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_clamp_is_exercised():
    # tau_plus=0.9 drives Ng below N e^{-1/t} for some anchors: the clamp decides the value
    z1, z2 = _views(b=7, d=6, seed=1)
    with_clamp = ref_loop(z1, z2, 0.5, 0.9, hcl_importance(0.3, 0.5))
    got = HCLLoss(0.5, 0.9, 0.3)(z1, z2)
    assert abs(float(got) - with_clamp) < 1e-10
    # the clamp is active: the loss equals log(1 + N e^{-1/t} / pos) for at least one anchor
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    pos = torch.exp((z * z.roll(7, 0)).sum(-1) / 0.5)
    neg = torch.exp(z @ z.t() / 0.5)
    mask = torch.ones(14, 14, dtype=torch.bool).fill_diagonal_(False)
    mask[torch.arange(14), (torch.arange(14) + 7) % 14] = False
    imp = neg ** 0.3 * mask
    reweight = (imp * neg).sum(1) / (imp.sum(1) / 12)
    assert bool(((reweight - 0.9 * 12 * pos) / 0.1 < 12 * math.exp(-2)).any())


def test_hcl_float32_matches_reference():
    z1, z2 = _views(b=16, d=8, seed=2, dtype=torch.float32)
    got = HCLLoss(temperature=0.5, tau_plus=0.1, beta=1.0)(z1, z2)
    want = ref_hcl(z1.double(), z2.double(), 0.5, 0.1, 1.0)
    assert abs(float(got) - float(want)) < 1e-5


def test_hcl_gradient_matches_reference():
    z1, z2 = _views(b=5, d=4, seed=3)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    g_got = torch.autograd.grad(HCLLoss(0.5, 0.1, 1.0)(a1, a2), (a1, a2))
    g_want = torch.autograd.grad(ref_hcl(b1, b2, 0.5, 0.1, 1.0), (b1, b2))
    for x, y in zip(g_got, g_want):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)


def test_hcl_beta0_equals_dcl():
    z1, z2 = _views(seed=4)
    a = HCLLoss(temperature=0.3, tau_plus=0.1, beta=0.0)(z1, z2)
    b = DebiasedContrastiveLoss(temperature=0.3, tau_plus=0.1)(z1, z2)
    ref = ref_loop(z1, z2, 0.3, 0.1, uniform_importance)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert abs(float(b) - ref) < 1e-10


def test_dcl_tau0_equals_infonce():
    z1, z2 = _views(seed=5)
    a = DebiasedContrastiveLoss(temperature=0.4, tau_plus=0.0)(z1, z2)
    b = InfoNCELoss(temperature=0.4)(z1, z2)
    c = HCLLoss(temperature=0.4, tau_plus=0.0, beta=0.0)(z1, z2)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert torch.allclose(c, b, rtol=1e-12, atol=1e-12)


def test_infonce_equals_cross_entropy():
    z1, z2 = _views(b=9, d=7, seed=6)
    t = 0.25
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    logits = z @ z.t() / t
    logits.fill_diagonal_(float("-inf"))
    target = (torch.arange(18) + 9) % 18
    want = F.cross_entropy(logits, target)
    got = InfoNCELoss(temperature=t)(z1, z2)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # also the unsupervised estimator of the HCL reference code ('easy')
    assert torch.allclose(got, ref_hcl(z1, z2, t, 0.0, 0.0, estimator="easy"), rtol=1e-12)


def test_infonce_with_labels_equals_masked_cross_entropy():
    z1, z2 = _views(b=6, d=4, seed=7)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    lab = torch.cat([labels, labels])
    logits = z @ z.t() / 0.5
    target = (torch.arange(12) + 6) % 12
    drop = (lab[:, None] == lab[None, :])
    drop[torch.arange(12), target] = False  # keep the positive
    logits = logits.masked_fill(drop, float("-inf"))
    want = F.cross_entropy(logits, target)
    got = InfoNCELoss(0.5)(z1, z2, labels)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_unremix_similarity_only_equals_hcl():
    z1, z2 = _views(b=8, d=6, seed=8)
    hcl = HCLLoss(temperature=0.3, tau_plus=0.05, beta=1.5)
    unr = UnReMixLoss(temperature=0.3, tau_plus=0.05, beta=1.5, weights=(1, 0, 0))
    assert torch.allclose(unr(z1, z2), hcl(z1, z2), rtol=1e-12, atol=1e-12)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
    assert torch.allclose(unr(z1, z2, labels), hcl(z1, z2, labels), rtol=1e-12, atol=1e-12)
    # with detach_scores=False the function is the same, hence the gradient too
    unr_nd = UnReMixLoss(temperature=0.3, tau_plus=0.05, beta=1.5, weights=(2.5, 0, 0), detach_scores=False)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ga = torch.autograd.grad(unr_nd(a1, a2), (a1, a2))
    gb = torch.autograd.grad(hcl(b1, b2), (b1, b2))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)


def test_hcl_with_labels_matches_loop():
    z1, z2 = _views(b=6, d=4, seed=9)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    got = HCLLoss(0.5, 0.1, 1.0)(z1, z2, labels)
    want = ref_loop(z1, z2, 0.5, 0.1, hcl_importance(1.0, 0.5), labels=labels)
    assert abs(float(got) - want) < 1e-10


def test_extra_negatives_match_loop():
    z1, z2 = _views(b=4, d=5, seed=10)
    g = torch.Generator().manual_seed(11)
    neg = torch.randn(3, 5, generator=g, dtype=torch.float64)
    got = HCLLoss(0.5, 0.1, 1.0)(z1, z2, neg=neg)
    want = ref_loop(z1, z2, 0.5, 0.1, hcl_importance(1.0, 0.5), neg=neg)
    assert abs(float(got) - want) < 1e-10
    labels, neg_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 5, 0])
    got = DebiasedContrastiveLoss(0.5, 0.1)(z1, z2, labels, neg=neg, neg_labels=neg_labels)
    want = ref_loop(z1, z2, 0.5, 0.1, uniform_importance, labels=labels, neg=neg, neg_labels=neg_labels)
    assert abs(float(got) - want) < 1e-10
    ce = InfoNCELoss(0.5)(z1, z2, neg=neg)
    want = ref_loop(z1, z2, 0.5, 0.0, uniform_importance, neg=neg, clamp=False)
    assert abs(float(ce) - want) < 1e-10


def _loop_unremix_importance(z, cand, t, beta, k, weights, rep="density"):
    """Loop UnReMix importance: each score per anchor normalised to mean 1, then the convex mix.

    rep="density": exp(mean cosine to the k most similar other candidates); rep="diversity": mean
    cosine distance to the k most similar other candidates except the candidate's own other view."""
    c = cand.size(0)
    b = z.size(0) // 2
    dens = []
    for j in range(c):
        partner = (j + b) % (2 * b) if j < 2 * b else -1
        skip = (j,) if rep == "density" else (j, partner)
        others = sorted((float(cand[j] @ cand[m]) for m in range(c) if m not in skip), reverse=True)[:k]
        if rep == "density":
            dens.append(math.exp(sum(others) / len(others)))
        else:
            dens.append(sum(1 - o for o in others) / len(others))

    def fn(i, js, sims, cand_):
        p = (i + b) % (2 * b)
        denom = math.exp(sims[p] / t) + sum(math.exp(sims[j] / t) for j in js)
        raw = [
            [math.exp(beta * sims[j] / t) for j in js],
            [math.exp(sims[j] / t) / denom * math.sqrt(max(1 - sims[j] ** 2, 0.0)) / t for j in js],
            [dens[j] for j in js],
        ]
        normed = [[v / (sum(r) / len(r)) for v in r] for r in raw]
        tot = sum(weights)
        return [sum(weights[c_] * normed[c_][n] for c_ in range(3)) / tot for n in range(len(js))]

    return fn


@pytest.mark.parametrize("rep", ["diversity", "density"])
@pytest.mark.parametrize("weights", [(1, 1, 1), (0, 1, 0), (0, 0, 1), (0.5, 0, 2), (1, 3, 0)])
def test_unremix_matches_loop(weights, rep):
    z1, z2 = _views(b=5, d=4, seed=12)
    t, beta, k = 0.4, 1.0, 3
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    kw = {} if rep == "diversity" else {"representativeness": rep}  # diversity is the default
    got = UnReMixLoss(temperature=t, tau_plus=0.1, beta=beta, weights=weights, k=k, **kw)(z1, z2)
    want = ref_loop(z1, z2, t, 0.1, _loop_unremix_importance(z, z, t, beta, k, weights, rep))
    assert abs(float(got) - want) < 1e-10


@pytest.mark.parametrize("rep", ["diversity", "density"])
@pytest.mark.parametrize("labelled", [True, False])
def test_unremix_with_labels_and_extra_negatives_matches_loop(labelled, rep):
    z1, z2 = _views(b=4, d=5, seed=13)
    g = torch.Generator().manual_seed(14)
    neg = torch.randn(3, 5, generator=g, dtype=torch.float64)
    labels, neg_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 5, 0])
    if not labelled:
        labels = neg_labels = None
    t, k = 0.5, 2
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    cand = torch.cat([z, F.normalize(neg, dim=-1)])
    got = UnReMixLoss(temperature=t, tau_plus=0.05, weights=(1, 1, 1), k=k, representativeness=rep)(
        z1, z2, labels, neg=neg, neg_labels=neg_labels)
    want = ref_loop(z1, z2, t, 0.05, _loop_unremix_importance(z, cand, t, 1.0, k, (1, 1, 1), rep),
                    labels=labels, neg=neg, neg_labels=neg_labels)
    assert abs(float(got) - want) < 1e-10


def test_unremix_last_scores():
    z1, z2 = _views(b=6, d=4, seed=15)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    loss = UnReMixLoss(k=3, weights=(1, 2, 1))
    loss(z1, z2, labels)
    s = loss.last_scores
    assert set(s) == {"similarity", "uncertainty", "representativeness", "weights"}
    lab = torch.cat([labels, labels])
    mask = lab[:, None] != lab[None, :]
    for name, v in s.items():
        assert v.shape == (12, 12) and not v.requires_grad
        assert torch.all(v[~mask] == 0)
        means = v.sum(1) / mask.sum(1)
        assert torch.allclose(means, torch.ones(12, dtype=v.dtype), atol=1e-12), name
    mixed = (s["similarity"] + 2 * s["uncertainty"] + s["representativeness"]) / 4
    assert torch.allclose(s["weights"], mixed, atol=1e-12)
    # the logged scores are the public graphneg.sampling scores, normalised per anchor
    from graphneg.sampling import normalize_scores, unremix_scores

    z = torch.cat([z1, z2])
    pos = (torch.arange(12) + 6) % 12
    pub = unremix_scores(z, pos, mask, temperature=0.5, beta=1.0, k=3)
    for name, v in zip(("similarity", "uncertainty", "representativeness"), pub):
        assert torch.allclose(s[name], normalize_scores(v, mask), atol=1e-12), name
    # detaching the scores changes the gradient path, not the value
    nd = UnReMixLoss(k=3, weights=(1, 2, 1), detach_scores=False)
    assert torch.allclose(nd(z1, z2, labels), loss(z1, z2, labels), rtol=1e-12, atol=1e-12)
    loss2 = UnReMixLoss(weights=(0, 1, 0))
    loss2(z1, z2)
    assert set(loss2.last_scores) == {"uncertainty", "weights"}


# ------------------------------------------------------------------------------ training / grads
ALL_LOSSES = [
    lambda: InfoNCELoss(0.5),
    lambda: DebiasedContrastiveLoss(0.5, 0.1),
    lambda: HCLLoss(0.5, 0.1, 1.0),
    lambda: UnReMixLoss(0.5, 0.1, 1.0, k=3),
    lambda: UnReMixLoss(0.5, 0.1, 1.0, weights=(0, 1, 1), k=3, detach_scores=False),
]


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_one_step_lowers_loss(make):
    loss_fn = make()
    z1, z2 = _views(b=8, d=6, seed=16, dtype=torch.float32)
    z1.requires_grad_()
    z2.requires_grad_()
    opt = torch.optim.SGD([z1, z2], lr=0.05)
    before = loss_fn(z1, z2)
    opt.zero_grad()
    before.backward()
    before = before.detach()
    opt.step()
    with torch.no_grad():
        after = loss_fn(z1, z2)
    assert float(after) < float(before)


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_finite_gradients_edge_cases(make):
    loss_fn = make()
    cases = []
    dup = torch.ones(4, 3)  # every embedding identical: s = 1 everywhere
    cases.append((dup.clone(), dup.clone()))
    g = torch.Generator().manual_seed(17)
    cases.append((torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)))  # batch of 2
    for a, b in cases:
        a.requires_grad_()
        b.requires_grad_()
        loss = loss_fn(a, b)
        ga, gb = torch.autograd.grad(loss, (a, b))
        assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gb).all()


@pytest.mark.parametrize("cls", [DebiasedContrastiveLoss, HCLLoss, UnReMixLoss])
def test_tau_plus_near_bound_finite(cls):
    z1, z2 = _views(b=6, d=4, seed=18, dtype=torch.float32)
    z1.requires_grad_()
    loss = cls(temperature=0.5, tau_plus=0.999)(z1, z2)
    (g,) = torch.autograd.grad(loss, z1)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


@pytest.mark.parametrize("cls", [InfoNCELoss, DebiasedContrastiveLoss, HCLLoss, UnReMixLoss])
def test_small_temperature_float32_stable(cls):
    # exp(s / 0.01) overflows float32 without the per-anchor shift
    z1, z2 = _views(b=8, d=6, seed=19, dtype=torch.float32)
    kw = {} if cls is InfoNCELoss else {"tau_plus": 0.0}
    a1 = z1.clone().requires_grad_()
    lo32 = cls(temperature=0.01, **kw)(a1, z2)
    (g,) = torch.autograd.grad(lo32, a1)
    lo64 = cls(temperature=0.01, **kw)(z1.double(), z2.double())
    assert torch.isfinite(lo32) and torch.isfinite(g).all()
    lo32 = lo32.detach()
    assert abs(float(lo32) - float(lo64)) < 1e-3 * max(1.0, abs(float(lo64)))


# ----------------------------------------------------------------------------------- validation
def test_errors():
    z1, z2 = _views(b=4, d=3)
    with pytest.raises(ValueError, match="equal shape"):
        InfoNCELoss()(z1, z2[:3])
    bad = z1.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        HCLLoss()(bad, z2)
    for t in (0.0, -1.0):
        for cls in (InfoNCELoss, DebiasedContrastiveLoss, HCLLoss, UnReMixLoss):
            with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
                cls(temperature=t)
    for tp in (-0.1, 1.0, 1.5):
        for cls in (DebiasedContrastiveLoss, HCLLoss, UnReMixLoss):
            with pytest.raises(ValueError, match=r"tau_plus .* \[0, 1\)"):
                cls(tau_plus=tp)
    with pytest.raises(ValueError, match="no valid negative"):
        DebiasedContrastiveLoss()(z1, z2, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch of one sample has no negative"):
        UnReMixLoss()(z1[:1], z2[:1])
    for w in [(0, 0, 0), (1, -1, 0), (1, 1), (float("nan"), 1, 1)]:
        with pytest.raises(ValueError, match="weights"):
            UnReMixLoss(weights=w)
    for k in (0, -2):
        with pytest.raises(ValueError, match="k .* positive integer or None"):
            UnReMixLoss(k=k)
    with pytest.raises(TypeError, match="k .* positive integer or None"):  # check_k: a type error, as for every k
        UnReMixLoss(k=1.5)
    with pytest.raises(ValueError, match="beta"):
        HCLLoss(beta=-1.0)
    with pytest.raises(ValueError, match="neg_labels"):
        HCLLoss()(z1, z2, torch.arange(4), neg=torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="embedding size"):
        HCLLoss()(z1, z2, neg=torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="one entry per sample"):
        HCLLoss()(z1, z2, torch.arange(3))


def test_repr_and_defaults():
    assert repr(InfoNCELoss()) == "InfoNCELoss(temperature=0.5)"
    u = UnReMixLoss()
    assert u.weights == (1.0, 1.0, 1.0) and u.k == 10 and u.detach_scores is True
    assert "beta=1.0" in repr(HCLLoss())
    np.testing.assert_equal(DebiasedContrastiveLoss().tau_plus, 0.1)


# --------------------------------------------------------------------- hyper-parameters (issue 20)
@pytest.mark.parametrize("cls,arg,bad", [
    (InfoNCELoss, "temperature", [float("nan"), float("inf"), 0.0, -0.5]),
    (DebiasedContrastiveLoss, "tau_plus", [float("nan"), float("inf"), -0.01, 1.0]),
    (HCLLoss, "beta", [float("nan"), float("inf"), -1.0]),
    (UnReMixLoss, "temperature", [float("nan"), float("-inf")]),
    (UnReMixLoss, "tau_plus", [float("nan"), 1.0]),
    (UnReMixLoss, "beta", [float("nan"), float("inf")]),
])
def test_non_finite_or_out_of_range_hyperparameters_name_the_argument(cls, arg, bad):
    for value in bad:
        with pytest.raises(ValueError, match=rf"^{arg} must be a finite number.*, got"):
            cls(**{arg: value})
    with pytest.raises(TypeError, match=rf"^{arg} must be a real number"):
        cls(**{arg: "0.5"})
    with pytest.raises(TypeError, match=rf"^{arg} must be a real number"):
        cls(**{arg: True})


def test_unremix_weights_and_k_are_checked():
    for w in [(float("inf"), 1, 1), (1, float("nan"), 0), (0, 0, 0), (-1, 2, 0), "111", 3.0]:
        with pytest.raises(ValueError, match="weights"):
            UnReMixLoss(weights=w)
    with pytest.raises(ValueError, match=r"weights has unknown names \['lambda1'\]"):
        UnReMixLoss(weights=dict(lambda1=1.0))
    for k in (0, -1):
        with pytest.raises(ValueError, match=r"^k \(neighbours per node of the batch kNN graph\)"):
            UnReMixLoss(k=k)
    for k in (2.0, True, "3"):  # not integers: TypeError, never truncated (graphneg.validation.check_k)
        with pytest.raises(TypeError, match=r"^k \(neighbours per node of the batch kNN graph\)"):
            UnReMixLoss(k=k)
    assert UnReMixLoss(k=np.int64(4)).k == 4 and isinstance(UnReMixLoss(k=np.int64(4)).k, int)
    with pytest.raises(TypeError, match="detach_scores must be True or False"):
        UnReMixLoss(detach_scores=1)


def test_unremix_named_weights_follow_the_paper_numbering():
    """weights=dict(uncertainty=l1, similarity=l2, representativeness=l3) equals the positional tuple
    (similarity, uncertainty, representativeness) = (l2, l1, l3); a missing name is 0."""
    z1, z2 = _views(b=5, d=4, seed=30)
    named = UnReMixLoss(weights=dict(uncertainty=2.0, similarity=0.5, representativeness=1.0))
    assert named.weights == (0.5, 2.0, 1.0)
    assert named.named_weights == {"similarity": 0.5, "uncertainty": 2.0, "representativeness": 1.0}
    torch.testing.assert_close(named(z1, z2), UnReMixLoss(weights=(0.5, 2.0, 1.0))(z1, z2), rtol=0, atol=0)
    # similarity alone (lambda2) is HCL with detached weights: the same value as HCLLoss
    sim_only = UnReMixLoss(0.4, 0.1, 1.5, weights=dict(similarity=1.0))
    assert sim_only.weights == (1.0, 0.0, 0.0)
    want = ref_loop(z1, z2, 0.4, 0.1, hcl_importance(1.5, 0.4))
    assert abs(float(sim_only(z1, z2)) - want) < 1e-10


def test_unremix_defaults_follow_the_paper_figure():
    u = UnReMixLoss()
    assert u.representativeness == "diversity" and u.k == 10 and u.uncertainty == "gradient"
    # the default is the neighbourhood form: diversity over the k nearest candidates (loop reference)
    z1, z2 = _views(b=7, d=4, seed=31)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    w = (1, 1, 1)
    want = ref_loop(z1, z2, 0.5, 0.1, _loop_unremix_importance(z, z, 0.5, 1.0, 3, w, "diversity"))
    assert abs(float(UnReMixLoss(k=3)(z1, z2)) - want) < 1e-10
    other = ref_loop(z1, z2, 0.5, 0.1, _loop_unremix_importance(z, z, 0.5, 1.0, 3, w, "density"))
    assert abs(float(UnReMixLoss(k=3)(z1, z2)) - other) > 1e-6  # the direction matters


def test_negative_pair_scores_leave_out_excluded_pairs():
    z1, z2 = _views(b=4, d=3, seed=32)
    labels = torch.tensor([0, 1, 0, 2])
    loss = UnReMixLoss(k=2)
    assert loss.negative_pair_scores() == {}
    loss(z1, z2, labels)
    lab = torch.cat([labels, labels])
    mask = lab[:, None] != lab[None, :]
    vals = loss.negative_pair_scores()
    assert set(vals) == set(loss.last_scores) and torch.equal(loss.last_neg_mask, mask)
    for key, v in vals.items():
        assert v.numel() == int(mask.sum()) and bool((v > 0).all())
        torch.testing.assert_close(v, loss.last_scores[key][mask])
