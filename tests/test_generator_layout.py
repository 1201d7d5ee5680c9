"""GCA-HNG's padded layout (static shapes, no host sync) against the compact one, and the counter-based
draws of its random weighting against independent references.

References: the compact layout (tested against loops from the official code in tests/test_generator.py);
a pure-Python ``lowbias32`` (C. Wellons, hash-prospector, 2018) with Python integers; the chained mixing
of the official ``GeneralPulling`` and the Dirichlet normalisation written as loops here.
"""
import math

import pytest
import torch

from graphneg.graph import batch_graph
from graphneg.losses.gca_hng import generator_diagnostics, generator_loss, node_loss
from graphneg.nn import GCAHNG
from graphneg.nn.generation import chain_weights, dirichlet_weights
from graphneg.ops.random import counter_uniform, draw_seed, lowbias32

MASK = 0xFFFFFFFF


def py_lowbias32(x: int) -> int:
    x &= MASK
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    x ^= x >> 16
    return x


def py_counter_uniform(seed: int, *counters: int) -> float:
    def absorb(h, w):
        return py_lowbias32(((h ^ w) + 0x9E3779B9) & MASK)

    h = absorb(seed, 0)
    for c in counters:
        h = absorb(absorb(h, c & MASK), (c >> 32) & MASK)
    return ((h >> 8) + 0.5) / 2 ** 24


# ---------------------------------------------------------------------------------------- counter draws
def test_lowbias32_equals_python_reference():
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(0, 2 ** 32, (2000,), generator=g, dtype=torch.int64)
    xs = torch.cat([xs, torch.tensor([0, 1, MASK, 0x80000000, 0xDEADBEEF])])
    assert lowbias32(xs).tolist() == [py_lowbias32(int(x)) for x in xs]
    assert py_lowbias32(1) == 0x688990C0  # a known value of the published function


def test_counter_uniform_equals_python_reference_incl_64_bit_counters():
    r = torch.tensor([0, 1, 7, 2 ** 31, 2 ** 33 + 5, 2 ** 40])
    t = torch.tensor([0, 3, 1, 9, 2, 2 ** 32 + 1])
    for seed in (0, 1, 2 ** 32 - 1):
        got = counter_uniform(torch.tensor(seed), r, t, dtype=torch.float64).tolist()
        ref = [py_counter_uniform(seed, int(a), int(b)) for a, b in zip(r, t)]
        assert got == ref


def test_counter_uniform_is_uniform_and_independent_across_neighbouring_counters():
    """Moments, a 20-bin chi-square and the correlation of neighbouring draws (rows, columns, transposed)
    over 250k draws of 4 seeds; bounds at about 4.5 standard errors."""
    n = 500
    for seed in range(4):
        u = counter_uniform(torch.tensor(seed), torch.arange(n)[:, None], torch.arange(n)[None, :],
                            dtype=torch.float64)
        assert float(u.min()) > 0 and float(u.max()) < 1
        assert abs(float(u.mean()) - 0.5) < 4.5 * math.sqrt(1 / 12 / n ** 2)
        assert abs(float(u.var()) - 1 / 12) < 4.5 * math.sqrt(1 / 180 / n ** 2)
        hist = torch.histc(u.float(), 20, 0, 1)
        chi2 = float(((hist - n * n / 20) ** 2 / (n * n / 20)).sum())
        assert chi2 < 50  # 19 degrees of freedom: P(chi2 > 50) < 2e-4
        for a, b in ((u[:, :-1], u[:, 1:]), (u[:-1], u[1:]), (u, u.t())):
            corr = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
            assert abs(corr) < 4.5 / n


def test_a_draw_depends_on_its_counters_only_and_the_seed_follows_the_generator():
    seed = torch.tensor(11)
    full = counter_uniform(seed, torch.arange(30)[:, None], torch.arange(40)[None, :])
    some = counter_uniform(seed, torch.tensor([3, 29, 0]), torch.tensor([39, 0, 7]))
    assert torch.equal(some, full[[3, 29, 0], [39, 0, 7]])
    other = counter_uniform(torch.tensor(12), torch.arange(30)[:, None], torch.arange(40)[None, :])
    assert not torch.equal(full, other)
    a = draw_seed(torch.Generator().manual_seed(5))
    assert a.dtype == torch.int64 and a.dim() == 0 and 0 <= int(a) < 2 ** 32
    assert int(a) == int(draw_seed(torch.Generator().manual_seed(5)))
    assert int(a) == int(torch.randint(0, 2 ** 32, (), generator=torch.Generator().manual_seed(5)))


# ---------------------------------------------------------------------------------------- weights
def _random_groups(seed, num_pairs=60, num_groups=9):
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, num_groups, (num_pairs,), generator=g) * 7 + 3  # arbitrary, sparse ids
    perm = torch.randperm(num_pairs, generator=g)
    group = group[perm]
    step = torch.zeros_like(group)
    for gid in group.unique().tolist():  # steps 0..K-1 within each group, in random positions
        idx = (group == gid).nonzero().view(-1)
        step[idx[torch.randperm(idx.numel(), generator=g)]] = torch.arange(idx.numel())
    chunk_of = {gid: int(torch.randint(0, 4, (), generator=g)) for gid in group.unique().tolist()}
    chunk = torch.tensor([chunk_of[int(x)] for x in group])
    return group, step, chunk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chain_weights_equal_the_official_chained_mixing_loop(seed):
    """Official GeneralPulling: tmp = z_0; tmp = z_t + u_t (tmp - z_t), t = 1..K-1, u_t the draw of the
    anchor's chunk at step t. With one-hot z_t the result's coordinates are the weights."""
    group, step, chunk = _random_groups(seed)
    s = torch.tensor(1234 + seed)
    w = chain_weights(step, chunk, dtype=torch.float64, group=group, seed=s)
    for gid in group.unique().tolist():
        idx = (group == gid).nonzero().view(-1)
        k = idx.numel()
        by_step = {int(step[i]): int(i) for i in idx}
        r = int(chunk[idx[0]])
        eye = torch.eye(k, dtype=torch.float64)
        tmp = eye[0]
        for t in range(1, k):
            u = py_counter_uniform(int(s), r, t)
            tmp = eye[t] + u * (tmp - eye[t])
        got = torch.stack([w[by_step[t]] for t in range(k)])
        torch.testing.assert_close(got, tmp, atol=1e-12, rtol=0)
    assert torch.equal(w, chain_weights(step, chunk, dtype=torch.float64, group=group, seed=s))


def test_chain_weights_old_signature_is_a_clear_error():
    t = torch.zeros(3, dtype=torch.long)
    with pytest.raises(TypeError, match="group"):  # Python's: missing keyword-only argument 'group'
        chain_weights(t, t, t)
    with pytest.raises(TypeError, match="no longer passed"):  # (step, size, chunk) of the former signature
        chain_weights(t, t, t, group=t)


def test_dirichlet_weights_normalise_exponential_draws_per_group():
    group, _, _ = _random_groups(4)
    counter = torch.arange(group.numel()) * 5 + 2
    s = torch.tensor(77)
    w = dirichlet_weights(group, int(group.max()) + 1, dtype=torch.float64, seed=s, counter=counter)
    e = [-math.log1p(-py_counter_uniform(77, int(c))) for c in counter]
    for gid in group.unique().tolist():
        idx = (group == gid).nonzero().view(-1).tolist()
        total = sum(e[i] for i in idx)
        torch.testing.assert_close(w[idx], torch.tensor([e[i] / total for i in idx], dtype=torch.float64),
                                   atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------- layouts
def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 3, 3, 1, 2, 2, 0, 4])  # uneven classes, one singleton
    return torch.randn(y.numel(), 8, generator=g, dtype=torch.float64), y


def _run(static, rw, edges, k, fixed_lambda=None, edge_index=None):
    z, y = _batch()
    torch.manual_seed(1)
    gen = GCAHNG(8, num_classes=6, heads=2, rw=rw, edges=edges, k=k, static_shapes=static,
                 fixed_lambda=fixed_lambda).double()
    torch.manual_seed(2)
    clf = torch.nn.Linear(8, 6).double()
    z = z.clone().requires_grad_(True)
    out = gen(z.detach(), y, j_mean=2.0, generator=torch.Generator().manual_seed(3), return_pairs=True,
              edge_index=edge_index)
    terms = generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight)
    (terms.total + node_loss(out)).backward()
    grads = {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}
    return out, terms, grads, generator_diagnostics(out)


CASES = [("complete", None, "chain", None), ("complete", None, "dirichlet", None), ("complete", None, None, None),
         ("knn", 2, "chain", None), ("knn", 2, None, None), ("complete", None, "chain", 1.0),
         ("given", None, "chain", None), ("given", None, None, None)]


@pytest.mark.parametrize("edges,k,rw,fixed", CASES)
def test_padded_layout_equals_compact_values_gradients_and_diagnostics(edges, k, rw, fixed):
    edge_index = None
    if edges == "given":  # a sparse user graph (random 40 % of the ordered pairs)
        z, y = _batch()
        keep = torch.rand(y.numel(), y.numel(), generator=torch.Generator().manual_seed(9)) < 0.4
        edge_index = keep.nonzero().t()
        edges = "complete"
    comp, t_c, g_c, d_c = _run(False, rw, edges, k, fixed, edge_index)
    pad, t_p, g_p, d_p = _run(True, rw, edges, k, fixed, edge_index)
    assert comp.mask is None and comp.pairs.valid is None
    n = comp.x.size(0)
    assert pad.mask.dtype == torch.bool and int(pad.mask.sum()) == n
    assert bool(pad.mask[:n].all()) and not bool(pad.mask[n:].any())  # real rows first
    e, b = pad.graph.edge_index.size(1), pad.graph.num_nodes
    assert pad.x.size(0) == (e if rw is None else min(e, b * min(6 - 1, b - 1)))  # the documented bound
    assert torch.equal(pad.x[:n], comp.x) and bool((pad.x[n:] == 0).all())
    assert torch.equal(pad.labels[:n], comp.labels) and torch.equal(pad.anchor_index[:n], comp.anchor_index)
    assert bool((pad.labels[n:] == 0).all()) and bool((pad.anchor_index[n:] == 0).all())
    again = pad.compact()
    assert torch.equal(again.x, comp.x) and again.mask is None
    for name in ("anchor", "negative", "edge", "group", "weight", "hard", "x"):
        assert torch.equal(getattr(again.pairs, name), getattr(comp.pairs, name)), name
    for name in ("total", "softmax_ce", "similarity", "diversity"):
        torch.testing.assert_close(getattr(t_p, name), getattr(t_c, name), atol=1e-12, rtol=1e-12)
    assert g_p.keys() == g_c.keys()
    for name in g_c:
        torch.testing.assert_close(g_p[name], g_c[name], atol=1e-12, rtol=1e-10)
    for name in d_c:
        torch.testing.assert_close(d_p[name], d_c[name], atol=1e-12, rtol=1e-10)


def test_default_layout_follows_the_device(monkeypatch):
    from graphneg.nn import generator as generator_mod

    z, y = _batch()
    gen = GCAHNG(8, num_classes=6, heads=2).double()
    assert gen(z, y).mask is None  # CPU: compact
    monkeypatch.setattr(generator_mod, "COMPACT_DEVICE_TYPES", set())
    assert gen(z, y).mask is not None  # elsewhere (CUDA): padded
    with pytest.raises(TypeError, match="static_shapes"):
        GCAHNG(8, num_classes=6, static_shapes="yes")
    assert "static_shapes=True" in repr(GCAHNG(8, num_classes=6, static_shapes=True))


def test_padded_layout_of_a_graph_without_cross_class_edges_is_all_padding_and_refused_when_checking():
    from graphneg.validation import value_checks

    z, y = _batch()
    same = batch_graph(z, y, edges="positive").edge_index
    gen = GCAHNG(8, num_classes=6, heads=2, static_shapes=True).double()
    with pytest.raises(ValueError, match="no edge between samples of different classes"):
        gen(z, y, edge_index=same)
    with value_checks(False):
        out = gen(z, y, edge_index=same)
    assert not bool(out.mask.any()) and bool((out.x == 0).all()) and out.compact().x.size(0) == 0


def _compiled_generator_step(backend, dtype=torch.float32):
    """Eager and ``torch.compile(fullgraph=True)`` results of the padded generator step (forward, generator
    loss, node loss), value checks off, the same seed draw: ``(loss, x, grads)`` twice."""
    from graphneg.validation import value_checks

    torch.manual_seed(0)
    y, z = torch.arange(4).repeat(3), torch.randn(12, 8, dtype=dtype)
    torch.manual_seed(1)
    gen = GCAHNG(8, 4, num_layers=1, heads=2, rw="chain", static_shapes=True, dropout=0.0).to(dtype)
    clf = torch.nn.Linear(8, 4).to(dtype)
    params = [p for p in gen.parameters() if p.requires_grad]

    def step(z, y):
        out = gen(z, y, j_mean=torch.tensor(2.0, dtype=dtype))
        terms = generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight)
        return terms.total + node_loss(out), out.x

    results = []
    with value_checks(False):
        for fn in (step, torch.compile(step, fullgraph=True, backend=backend)):
            torch.manual_seed(5)
            loss, x = fn(z, y)
            results.append((loss, x, torch.autograd.grad(loss, params, allow_unused=True)))
    return results


def _assert_same_step(eager, compiled, **tol):
    (loss, x, grads), (c_loss, c_x, c_grads) = eager, compiled
    torch.testing.assert_close(c_loss, loss, **tol)
    torch.testing.assert_close(c_x, x, **tol)
    for a, b in zip(grads, c_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, **tol)


def test_padded_generator_step_compiles_in_one_graph_and_equals_eager():
    """torch.compile(fullgraph=True) of the generator step in the padded layout with value checks off: no
    graph break at all (compact layout: 1, in compact()); the compiled step gives the eager values and
    gradients (the same seed draw, so the same chain weights)."""
    _assert_same_step(*_compiled_generator_step("aot_eager"))


@pytest.mark.slow
def test_padded_generator_step_compiles_with_inductor_like_eager():
    """The same with inductor's generated kernels, in float64 (its fused float32 kernels round differently)."""
    _assert_same_step(*_compiled_generator_step("inductor", torch.float64), atol=1e-10, rtol=1e-8)


class _NoMaskLoss(torch.nn.Module):
    """A user's synthetic-negative loss without neg_mask: the mean anchor-to-negative distance."""

    accepts_synthetic = True

    def forward(self, embeddings, labels, *, neg_embeddings=None, neg_labels=None, anchor_index=None):
        if neg_embeddings is None:
            return embeddings.pow(2).sum(1).mean()
        return (embeddings[anchor_index] - neg_embeddings).norm(dim=1).mean()


@pytest.mark.parametrize("loss", ["ms", "npair", "triplet", "pml_ms", "no_mask"])
def test_objective_metric_step_is_the_same_in_both_layouts(loss):
    """GCAHNGObjective.metric_loss: the padded layout (neg_mask to graphneg losses, compacted for PML's
    tuple and for a loss without neg_mask) gives the compact layout's losses and gradients."""
    from graphneg.losses import GCAHNGObjective, MultiSimilarityLoss, NPairLoss, TripletMarginLoss

    def make():
        if loss == "pml_ms":
            from pytorch_metric_learning import losses as pml_losses
            return pml_losses.MultiSimilarityLoss()
        return {"ms": lambda: MultiSimilarityLoss(mining=True), "npair": lambda: NPairLoss(anchors="official"),
                "triplet": TripletMarginLoss, "no_mask": _NoMaskLoss}[loss]()

    z, y = _batch(5)
    y = torch.arange(5).repeat(3)  # official layout, so N-pair's official anchors exist
    z = z[: y.numel()].float()
    results = []
    for static in (False, True):
        torch.manual_seed(0)
        obj = GCAHNGObjective(GCAHNG(8, num_classes=5, heads=2, static_shapes=static, dropout=0.0), make())
        obj.j_gen_mean.fill_(2.0)
        emb = z.clone().requires_grad_(True)
        step = obj.metric_loss(emb, y)
        step.total.backward()
        results.append((step, emb.grad, [p.grad for p in obj.generator.parameters()]))
    (c, gc, pc), (p, gp, pp) = results
    assert c.negatives.mask is None and p.negatives.mask is not None
    for name in ("total", "real", "synthetic", "synthetic_raw", "node"):
        torch.testing.assert_close(getattr(p, name), getattr(c, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gp, gc, rtol=1e-5, atol=1e-6)
    for a, b in zip(pp, pc):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_static_groups_number_keys_as_torch_unique_does(seed):
    """Reference: torch.unique(key[present], return_inverse=True) (the compact layout's former grouping)."""
    from graphneg.nn.generation import static_groups

    g = torch.Generator().manual_seed(seed)
    key = torch.randint(0, 12, (40,), generator=g) * 1000 + 7
    present = torch.rand(40, generator=g) < 0.7
    rows = 16
    group, mask, row_key = static_groups(key, present, rows)
    uniq, inverse = torch.unique(key[present], return_inverse=True)
    assert torch.equal(group[present], inverse)
    assert bool((group[~present] == rows).all())
    assert torch.equal(mask, torch.arange(rows) < uniq.numel())
    assert torch.equal(row_key[: uniq.numel()], uniq) and bool((row_key[uniq.numel():] == -1).all())
