"""Fused gather ops, folded BatchNorm and chunked reductions of graphneg.nn.functional against their
plain formulas (values, torch.autograd.gradcheck in float64)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from graphneg.nn.functional import gather_distance, gather_dot, gather_lerp, gather_mul, gather_scale



def test_fused_ops_values_and_gradcheck():
    g = torch.Generator().manual_seed(3)
    n, e, d = 4, 9, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(n, 2, d, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(e, 2, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(e, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    ia = torch.randint(0, n, (e,), generator=g)
    ib = torch.randint(0, n, (e,), generator=g)
    torch.testing.assert_close(gather_mul(x, ia, ib), x[ia] * x[ib])
    torch.testing.assert_close(gather_dot(q, None, y, ib), (q * y[ib]).sum(-1))
    torch.testing.assert_close(gather_dot(y, ia, y, ib), (y[ia] * y[ib]).sum(-1))
    torch.testing.assert_close(gather_scale(y, ia, w), y[ia] * w[..., None])
    ib2 = torch.where(ia == ib, (ib + 1) % n, ib)
    torch.testing.assert_close(gather_distance(x, ia, ib2), F.pairwise_distance(x[ia], x[ib2]))
    rho = torch.rand(e, generator=g, dtype=torch.float64).requires_grad_(True)
    lam = torch.rand(6, d, generator=g, dtype=torch.float64).requires_grad_(True)
    il = torch.randint(0, 6, (e,), generator=g)
    r = rho[:, None] + (1 - rho[:, None]) * 0.7 * lam[il]
    torch.testing.assert_close(gather_lerp(x, ia, ib, rho, lam, il, 0.7), x[ia] + r * (x[ib] - x[ia]))
    gc = torch.autograd.gradcheck
    assert gc(lambda t: gather_mul(t, ia, ib), (x,))
    assert gc(lambda a, b: gather_dot(a, None, b, ib), (q, y))
    assert gc(lambda a: gather_dot(a, ia, a, ib), (y,))
    assert gc(lambda a, b: gather_scale(a, ia, b), (y, w))
    assert gc(lambda a: gather_distance(a, ia, ib2), (x,))
    assert gc(lambda a, b, c: gather_lerp(a, ia, ib, b, c, il, 0.7), (x, rho, lam))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_linear_equals_modules_train_and_eval(momentum):
    """lin(bn(x)) with the BatchNorm folded: values, gradients (x, BN weight, W, b) and the
    running statistics equal nn.BatchNorm1d followed by nn.Linear, in training and eval mode."""
    from graphneg.nn.functional import batch_norm_linear

    torch.manual_seed(0)
    x0 = torch.randn(37, 6, dtype=torch.float64) * 3 + 1
    bn_ref = torch.nn.BatchNorm1d(6, momentum=momentum).double()
    lin_ref = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        bn_ref.weight.uniform_(0.5, 2.0)
        bn_ref.bias.uniform_(-1.0, 1.0)
    bn, lin = copy.deepcopy(bn_ref), copy.deepcopy(lin_ref)
    for step in range(3):  # training: batch statistics, running stats updated each step
        xa, xb = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        ya, yb = batch_norm_linear(xa, bn, lin), lin_ref(bn_ref(xb))
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
        (ya.sin().sum()).backward()
        (yb.sin().sum()).backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-12)
        for p, q in zip(list(bn.parameters()) + list(lin.parameters()),
                        list(bn_ref.parameters()) + list(lin_ref.parameters())):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10)
        torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=1e-14)
        torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=0, atol=1e-14)
        assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == step + 1
        x0 = x0 * 0.9 + 0.3
    bn.eval(), bn_ref.eval()  # eval: running statistics, nothing updated
    with torch.no_grad():
        torch.testing.assert_close(batch_norm_linear(x0, bn, lin), lin_ref(bn_ref(x0)), rtol=0, atol=1e-12)
    assert int(bn.num_batches_tracked) == 3
    bn.train()
    with pytest.raises(ValueError, match="more than 1 row"):
        batch_norm_linear(x0[:1], bn, lin)


def test_group_squared_deviation_and_gather_cosine_equal_plain_formulas():
    from torch_geometric.utils import scatter

    from graphneg.nn.functional import gather_cosine, group_squared_deviation

    torch.manual_seed(1)
    x = torch.rand(50, 7, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 9, (50,))
    index[:9] = torch.arange(9)
    # plain formula: deviation from the group mean (gradient through the mean included)
    ref = (x - scatter(x, index, dim=0, dim_size=9, reduce="mean").index_select(0, index)).pow(2).sum()
    got = group_squared_deviation(x, index, 9, chunk_size=16)  # chunks of 16 rows: 4 chunks
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    g_ref, = torch.autograd.grad(ref.sqrt(), x)
    g_got, = torch.autograd.grad(got.sqrt(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-12)
    # cosine: same formula as F.cosine_similarity on the gathered rows, incl. a zero row (eps)
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, 5, dtype=torch.float64)
    b[3] = 0.0
    b.requires_grad_(True)
    idx = torch.randint(0, 6, (11,))
    ref = F.cosine_similarity(a.index_select(0, idx), b, dim=1)
    got = gather_cosine(a, idx, b)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    w = torch.randn(11, dtype=torch.float64)
    ga_ref, gb_ref = torch.autograd.grad((ref * w).sum(), (a, b))
    ga, gb = torch.autograd.grad((got * w).sum(), (a, b))
    # the zero row's gradient is ~1e8 (1 / eps): compare relative there
    torch.testing.assert_close(ga, ga_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-12, atol=1e-12)
