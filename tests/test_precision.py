"""Mixed precision on CPU autocast: every loss and GCA-HNG stay within the stated tolerance of float32
(graphneg.precision), compute in float32 inside, and N-pair no longer overflows in float16."""
import pytest
import torch

import graphneg.losses as L
from graphneg.losses import (
    HCLLoss,
    InfoNCELoss,
    MultiSimilarityLoss,
    NPairLoss,
    ProxyAnchorLoss,
    TripletMarginLoss,
    UnReMixLoss,
)
from graphneg.losses.gca_hng import generator_loss, node_loss
from graphneg.nn import GCAHNG
from graphneg.precision import full_precision, to_float32

DebiasedLoss = getattr(L, "DebiasedContrastiveLoss", None) or L.DCLLoss  # renamed by another branch
# stated tolerances (relative to the float32 loss), see graphneg/precision.py
RTOL = {torch.bfloat16: 5e-3, torch.float16: 1e-3}
RTOL_GCA = {torch.bfloat16: 2e-2, torch.float16: 5e-3}
Y = torch.arange(6).repeat(4)


def _proxy():
    torch.manual_seed(1)
    return ProxyAnchorLoss(6, 16)


LOSSES = {  # name -> factory(labels) -> loss(z1, z2)
    "infonce": lambda y: (lambda a, b: InfoNCELoss(0.2)(a, b)),
    "dcl": lambda y: (lambda a, b: DebiasedLoss(0.2)(a, b, y)),
    "hcl": lambda y: (lambda a, b: HCLLoss(0.2)(a, b)),
    "unremix": lambda y: (lambda a, b: UnReMixLoss(0.2, k=4)(a, b)),
    "npair": lambda y: (lambda a, b: NPairLoss()(a, y)),
    "multi_similarity": lambda y: (lambda a, b: MultiSimilarityLoss(mining=True)(a, y)),
    "triplet": lambda y: (lambda a, b: TripletMarginLoss()(a, y)),
    "proxy_anchor": lambda y: (lambda a, b, p=_proxy(): p.to(a.device)(a, y)),
}


def _net_and_data(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    return net, torch.randn(24, 16), torch.randn(24, 16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_under_autocast_within_tolerance_of_float32(name, dtype):
    for seed in range(3):
        net, x1, x2 = _net_and_data(seed)
        fn = LOSSES[name](Y)
        ref = fn(net(x1), net(x2))
        with torch.autocast("cpu", dtype=dtype):
            z1, z2 = net(x1), net(x2)
            assert z1.dtype == dtype  # the network really ran in 16 bits
            val = fn(z1, z2)
        assert val.dtype == torch.float32
        torch.testing.assert_close(val, ref, rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_inside_autocast_is_float32_on_the_same_values(name):
    """Given 16-bit values, the loss equals the float32 evaluation of those values: no 16-bit op
    inside (without the float32 island, bf16 matmuls/exps would change it by ~1e-3)."""
    net, x1, x2 = _net_and_data(0)
    fn = LOSSES[name](Y)
    z1 = net(x1).detach().bfloat16().requires_grad_(True)
    z2 = net(x2).detach().bfloat16().requires_grad_(True)
    ref = fn(z1.detach().float(), z2.detach().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        val = fn(z1, z2)
    torch.testing.assert_close(val, ref, rtol=1e-6, atol=1e-6)
    val.backward()
    assert z1.grad is not None and z1.grad.dtype == torch.bfloat16 and torch.isfinite(z1.grad.float()).all()


def _npair_reference(z, y):
    """Dense float64 loop: N-pair with the next same-class positive, all other-class negatives."""
    z = z.double()
    n, total, reg = z.size(0), 0.0, 0.0
    for a in range(n):
        same = [j for j in range(n) if y[j] == y[a]]
        p = same[(same.index(a) + 1) % len(same)]
        negs = [j for j in range(n) if y[j] != y[a]]
        logits = torch.stack([z[a] @ z[p]] + [z[a] @ z[j] for j in negs])
        total += torch.logsumexp(logits, 0) - z[a] @ z[p]
        reg += z[a] @ z[a] + z[p] @ z[p]
    return total / n + 0.25 * 3e-3 * reg / n


def test_npair_float16_large_norms_no_overflow():
    torch.manual_seed(0)
    y = torch.arange(4).repeat(2)
    z = torch.nn.functional.normalize(torch.randn(8, 8), dim=1) * 300.0  # norms 300 > sqrt(65504)
    zh = z.half()
    assert torch.isinf(zh @ zh.t()).any()  # what float16 arithmetic would do
    val = NPairLoss()(zh, y)
    assert torch.isfinite(val) and val.dtype == torch.float32
    torch.testing.assert_close(val.double(), _npair_reference(zh.float(), y), rtol=1e-5, atol=1e-3)
    lin = torch.nn.Linear(8, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(8) * 300.0)
        lin.bias.zero_()
    with torch.autocast("cpu", dtype=torch.float16):  # 16-mixed: the network output is float16
        out = lin(torch.nn.functional.normalize(torch.randn(8, 8), dim=1))
        assert out.dtype == torch.float16
        assert torch.isfinite(NPairLoss()(out, y))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
def test_gcahng_under_autocast_within_tolerance_of_float32(dtype):
    torch.manual_seed(0)  # the batch first: its values do not depend on how the generator draws its init
    net = torch.nn.Linear(8, 16)
    x, y = torch.randn(12, 8), torch.arange(4).repeat(3)
    gen = GCAHNG(16, num_classes=4, num_layers=2, heads=4, rw=None, dropout=0.0)
    cls = torch.nn.Linear(16, 4)

    def run():
        emb = net(x)
        out = gen(emb, y)
        ms = MultiSimilarityLoss(mining=True)(out.graph.x, y, neg_embeddings=out.x, neg_labels=out.labels,
                                   anchor_index=out.anchor_index)
        gen_loss = generator_loss(out, cls, gen.softmax_factor, gen.dot_weight, gen.div_weight)
        return out, gen_loss.total, node_loss(out), ms

    ref = run()
    with torch.autocast("cpu", dtype=dtype):
        val = run()
    out, ref_out = val[0], ref[0]
    assert out.x.dtype == torch.float32 and out.graph.x.dtype == torch.float32
    assert torch.equal(out.pairs.hard, ref_out.pairs.hard)
    torch.testing.assert_close(out.x, ref_out.x, rtol=0, atol=RTOL_GCA[dtype] * ref_out.x.abs().max().item())
    for v, r in zip(val[1:], ref[1:]):
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, r, rtol=RTOL_GCA[dtype], atol=0)


def test_full_precision_helpers():
    class M(torch.nn.Module):
        @full_precision
        def forward(self, a, b=None):
            return a @ a.t(), b

    a = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
        out, b = M()(a.bfloat16(), b=torch.ones(2, dtype=torch.float16))
    assert out.dtype == torch.float32 and b.dtype == torch.float32
    x64 = torch.ones(2, dtype=torch.float64)
    assert to_float32(x64) is x64 and to_float32(3) == 3
