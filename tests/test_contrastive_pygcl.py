"""graphneg's contrastive losses in PyGCL's call style: ``loss(anchor=, sample=, pos_mask=, neg_mask=)``.

PyGCL is not installed here; ``dual_branch`` below re-implements, from its documented behaviour, what
``GCL.models.DualBranchContrast(loss, mode='G2G' or 'L2L', intraview_negs=...)`` does with two views:
the same-scale sampler gives ``pos_mask = eye(B)``, ``neg_mask = 1 - pos_mask``; with
``intraview_negs`` the anchors are appended to the samples, with positives 0 and negatives
``1 - eye`` in that block; the loss is called once per direction and the two results averaged.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss


def same_scale_sampler(anchor, sample, intraview_negs):
    n = anchor.size(0)
    pos_mask = torch.eye(n, dtype=torch.float32)
    neg_mask = 1.0 - pos_mask
    if intraview_negs:
        sample = torch.cat([sample, anchor], dim=0)
        pos_mask = torch.cat([pos_mask, torch.zeros(n, n)], dim=1)
        neg_mask = torch.cat([neg_mask, 1.0 - torch.eye(n)], dim=1)
    return anchor, sample, pos_mask, neg_mask


def dual_branch(loss, g1, g2, intraview_negs=True):
    a1, s1, p1, n1 = same_scale_sampler(g1, g2, intraview_negs)
    a2, s2, p2, n2 = same_scale_sampler(g2, g1, intraview_negs)
    l1 = loss(anchor=a1, sample=s1, pos_mask=p1, neg_mask=n1)
    l2 = loss(anchor=a2, sample=s2, pos_mask=p2, neg_mask=n2)
    return (l1 + l2) * 0.5


def _views(b=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64)


LOSSES = {
    "infonce": lambda: InfoNCELoss(0.5),
    "dcl": lambda: DebiasedContrastiveLoss(0.5, 0.1),
    "hcl": lambda: HCLLoss(0.4, 0.1, 1.5),
    "unremix_default": lambda: UnReMixLoss(0.5, 0.1, 1.0, k=3),
    "unremix_all_candidates": lambda: UnReMixLoss(0.5, 0.1, 1.0, k=None),
    "unremix_density_pl": lambda: UnReMixLoss(0.5, 0.1, 1.0, k=4, representativeness="density",
                                              uncertainty="pseudo_label"),
    "unremix_named": lambda: UnReMixLoss(0.5, 0.05, 1.0, weights=dict(uncertainty=2, representativeness=1)),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_dual_branch_loop_equals_the_two_view_call(name):
    """In PyGCL's dual-branch loop (intraview negatives) every loss equals its own two-view call, in
    value and gradient: same anchors, positives, negatives and UnReMix neighbourhoods."""
    z1, z2 = _views(seed=1)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    direct = LOSSES[name]()(a1, a2)
    looped = dual_branch(LOSSES[name](), b1, b2)
    torch.testing.assert_close(looped, direct, rtol=1e-12, atol=1e-12)
    g_direct = torch.autograd.grad(direct, (a1, a2))
    g_looped = torch.autograd.grad(looped, (b1, b2))
    for gd, gl in zip(g_direct, g_looped):
        torch.testing.assert_close(gl, gd, rtol=1e-10, atol=1e-12)


def test_cross_view_negatives_match_references():
    """Without intraview negatives (PyGCL's default) each direction is InfoNCE over the other view only
    (cross-entropy of the [B, B] cosine logits) and HCL's estimator over those B - 1 negatives (loop)."""
    z1, z2 = _views(b=5, seed=2)
    t = 0.5
    s = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t()
    want = 0.5 * (F.cross_entropy(s / t, torch.arange(5)) + F.cross_entropy(s.t() / t, torch.arange(5)))
    torch.testing.assert_close(dual_branch(InfoNCELoss(t), z1, z2, intraview_negs=False), want)

    tau, beta = 0.1, 1.0

    def hcl_loop(sim):
        out = []
        for i in range(sim.size(0)):
            pos = math.exp(float(sim[i, i]) / t)
            negs = [float(sim[i, j]) for j in range(sim.size(1)) if j != i]
            n = len(negs)
            imp = [math.exp(beta * v / t) for v in negs]
            reweight = sum(w * math.exp(v / t) for w, v in zip(imp, negs)) / (sum(imp) / n)
            ng = max((reweight - tau * n * pos) / (1 - tau), n * math.exp(-1 / t))
            out.append(-math.log(pos / (pos + ng)))
        return sum(out) / len(out)

    want = 0.5 * (hcl_loop(s) + hcl_loop(s.t()))
    got = dual_branch(HCLLoss(t, tau, beta), z1, z2, intraview_negs=False)
    assert abs(float(got) - want) < 1e-10


def test_keyword_form_records_unremix_scores_and_partners():
    """The keyword form logs the same per-pair scores as the two-view call (rows of view 1, columns
    permuted to PyGCL's [view 2; view 1] sample order)."""
    z1, z2 = _views(b=4, seed=3)
    direct = UnReMixLoss(k=2)
    direct(z1, z2)
    keyword = UnReMixLoss(k=2)
    a, s, p, n = same_scale_sampler(z1, z2, True)
    keyword(anchor=a, sample=s, pos_mask=p, neg_mask=n)
    cols = torch.cat([torch.arange(4, 8), torch.arange(4)])  # sample j <-> two-view candidate cols[j]
    for key, v in direct.last_scores.items():
        torch.testing.assert_close(keyword.last_scores[key], v[:4][:, cols], rtol=1e-12, atol=1e-12)
    assert keyword.negative_pair_scores()["weights"].numel() == 4 * 6


def test_keyword_form_errors():
    z1, z2 = _views(b=3, seed=4)
    a, s, p, n = same_scale_sampler(z1, z2, False)
    loss = HCLLoss()
    with pytest.raises(TypeError, match="not both"):
        loss(z1, z2, anchor=a, sample=s, pos_mask=p, neg_mask=n)
    with pytest.raises(TypeError, match="needs neg_mask"):
        loss(anchor=a, sample=s, pos_mask=p)
    with pytest.raises(ValueError, match=r"pos_mask must be a tensor of shape \[M, N\] = \[3, 3\]"):
        loss(anchor=a, sample=s, pos_mask=p[:, :2], neg_mask=n)
    two = p.clone()
    two[0, 1] = 1.0
    with pytest.raises(ValueError, match="exactly one positive per anchor row"):
        loss(anchor=a, sample=s, pos_mask=two, neg_mask=1 - two)
    with pytest.raises(ValueError, match="without any negative"):
        loss(anchor=a, sample=s, pos_mask=p, neg_mask=torch.zeros_like(n))
    with pytest.raises(TypeError, match="needs two views"):
        loss(z1)
