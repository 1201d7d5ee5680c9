"""GCAHNG generator against loop references of the official ``GeneralPulling`` / ``DiverseLoss``.

References are written here from the official code (github PWenJay/GCA-HNG ``scripts/models.py``
``GeneralPulling``, ``GCA_HNG.forward``; ``scripts/loss.py`` ``DiverseLoss``) with Python loops over
the official chunked batch layout (``m`` chunks of ``C`` samples with the same class order).
"""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphneg.nn as gnn_pkg
from graphneg.graph import batch_graph
from graphneg.ops.labels import next_positive_index, rank_in_class
from graphneg.ops.random import counter_uniform, draw_seed
from graphneg.losses.gca_hng import generator_loss, node_loss
from graphneg.nn import GCAHNG

C, M, D = 4, 3, 8
B = C * M


def chunked_batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(M)  # official layout: chunk k holds classes 0..C-1
    z = torch.randn(B, D, generator=g, dtype=dtype)
    return z, y


def dense_lam(out, n):
    lam = torch.full((n, n, out.gnn.lam.size(1)), float("nan"), dtype=out.gnn.lam.dtype)
    lam[out.graph.edge_index[0], out.graph.edge_index[1]] = out.gnn.lam.detach()
    return lam


def official_pulling_pairs(z, lam, alpha, jm, pairs):
    """GeneralPulling, every (anchor, negative) pair, before the random mixing.

    positive of anchor (chunk k, class i) = (chunk k+1 mod m, class i); distances with
    F.pairwise_distance (eps 1e-6); lam' = lam[a, n] * exp(-alpha / jm);
    r = (d+ + (d- - d+) lam') / d-; z~ = z_a + r (z_n - z_a) if d+ < d- else z_n.
    """
    n_per = len(z) // C
    res = {}
    for a, n in pairs:
        chunk, cls = divmod(a, C)
        p = ((chunk + 1) % n_per) * C + cls
        dp = torch.linalg.vector_norm(z[a] - z[p] + 1e-6)
        dn = torch.linalg.vector_norm(z[a] - z[n] + 1e-6)
        lamp = lam[a, n] * math.exp(-alpha / jm)
        r = (dp + (dn - dp) * lamp) / dn
        res[(a, n)] = z[n] if dp >= dn else z[a] + r * (z[n] - z[a])
    return res


def pair_dict(out, values):
    return {(int(a), int(n)): values[i]
            for i, (a, n) in enumerate(zip(out.pairs.anchor.tolist(), out.pairs.negative.tolist()))}


def gen_loss(gen, out, clf):
    """The generator step's loss with the generator's own weights (as GCAHNGObjective calls it)."""
    return generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight)


def make_gen(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    kw.setdefault("heads", 2)
    return GCAHNG(D, num_classes=kw.pop("num_classes", C), **kw).double()


# generation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("edges,k", [("complete", None), ("knn", 2)])
def test_pairs_match_official_pulling(edges, k):
    z, y = chunked_batch(0)
    gen = make_gen(edges=edges, k=k, rw=None, alpha=4.0)
    out = gen(z, y, j_mean=2.5)
    lam = dense_lam(out, B)
    ours = pair_dict(out, out.pairs.x)
    ref = official_pulling_pairs(z, lam, 4.0, 2.5, list(ours))
    for key, val in ref.items():
        torch.testing.assert_close(ours[key], val, atol=1e-10, rtol=0)
    # rw=None returns every pair: its label is the negative's class, never the anchor's
    assert torch.equal(out.labels, y[out.pairs.negative])
    assert bool((out.labels != y[out.anchor_index]).all())
    if edges == "complete":
        expected = {(a, n) for a in range(B) for n in range(B) if y[a] != y[n]}
        assert set(ours) == expected
    assert torch.equal(out.pairs.anchor, out.graph.edge_index[0, out.pairs.edge])
    assert torch.equal(out.pairs.negative, out.graph.edge_index[1, out.pairs.edge])


def test_generated_negative_on_segment_and_real_negative_when_not_harder():
    z, y = chunked_batch(1)
    # class 0: samples far apart, so anchors of class 0 have d+ >= d- for close negatives
    z[0], z[C], z[2 * C] = 0.0, 0.0, 0.0
    z[C, 0], z[2 * C, 0] = 25.0, -25.0
    gen = make_gen(rw=None)
    out = gen(z, y)
    a, n = out.pairs.anchor, out.pairs.negative
    za, zn, zt = z[a], z[n], out.pairs.x.detach()
    pos = next_positive_index(y)
    d_pos = F.pairwise_distance(z[a], z[pos[a]])
    d_neg = F.pairwise_distance(za, zn)
    hard = d_pos < d_neg
    assert torch.equal(out.pairs.hard, hard)
    assert 0 < int((~hard).sum()) < hard.numel()
    assert torch.equal(zt[~hard], zn[~hard])  # exactly the real negative
    # channel-wise on the segment [z_a, z_n], with position t_d in [d+/d-, 1]
    lo, hi = torch.minimum(za, zn), torch.maximum(za, zn)
    assert bool(((zt >= lo - 1e-12) & (zt <= hi + 1e-12)).all())
    t = (zt - za) / (zn - za)
    assert bool((t[hard] >= (d_pos / d_neg)[hard, None] - 1e-9).all())
    assert bool((t[hard] <= 1 + 1e-9).all())


def test_zero_hardness_factor_puts_negative_at_positive_distance():
    # j_mean -> 0: lam' = lam * exp(-alpha / J) = 0, r = d+/d-, so |z~ - z_a| = d+ (HDML)
    z, y = chunked_batch(2)
    out = make_gen(rw=None)(z, y, j_mean=1e-4)
    a, hard = out.pairs.anchor, out.pairs.hard
    d_pos = F.pairwise_distance(z, z[next_positive_index(y)])[a]
    dist = (out.pairs.x.detach() - z[a]).norm(dim=1)
    torch.testing.assert_close(dist[hard], d_pos[hard], atol=1e-5, rtol=0)


def test_j_mean_tensor_equals_float_and_none_is_limit():
    z, y = chunked_batch(3)
    gen = make_gen(rw=None).eval()
    x1 = gen(z, y, j_mean=3.0).x
    x2 = gen(z, y, j_mean=torch.tensor(3.0)).x
    torch.testing.assert_close(x1, x2, atol=1e-12, rtol=0)
    torch.testing.assert_close(gen(z, y).x, gen(z, y, j_mean=1e12).x, atol=1e-9, rtol=0)


def test_lambda_in_unit_interval():
    z, y = chunked_batch(4)
    out = make_gen()(z * 30, y)
    assert bool((out.gnn.lam > 0).all()) and bool((out.gnn.lam < 1).all())


# positives, layout ------------------------------------------------------------------------------
def test_next_same_class_and_rank_any_order():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (23,), generator=g)
    pos, rank = next_positive_index(y), rank_in_class(y)
    for i in range(len(y)):
        same = [j for j in range(len(y)) if y[j] == y[i]]
        later = [j for j in same if j > i]
        assert int(pos[i]) == (later[0] if later else same[0])
        assert int(rank[i]) == same.index(i)
    z, yc = chunked_batch(0)
    pc = next_positive_index(yc)
    assert torch.equal(pc, (torch.arange(B) + C) % B)  # official: next chunk, same class


def test_batch_order_does_not_matter():
    z, y = chunked_batch(5)
    perm = torch.argsort(y, stable=True)  # class-sorted, same within-class order
    gen = make_gen(rw=None).eval()
    o1 = gen(z, y)
    o2 = gen(z[perm], y[perm])
    p1 = pair_dict(o1, o1.pairs.x.detach())
    p2 = pair_dict(o2, o2.pairs.x.detach())
    assert len(p1) == len(p2)
    for (a, n), v in p2.items():
        torch.testing.assert_close(v, p1[(int(perm[a]), int(perm[n]))], atol=1e-9, rtol=0)


# random weighting -------------------------------------------------------------------------------
def test_chain_matches_official_chained_mixing():
    z, y = chunked_batch(6)
    gen = make_gen(rw="chain")
    out = gen(z, y, j_mean=2.0, generator=torch.Generator().manual_seed(7), return_pairs=True)
    pairs = pair_dict(out, out.pairs.x.detach())
    # the official draws: one np.random.random() per (anchor chunk, step), shared by the chunk's anchors and
    # all classes; here draw (chunk r, step t) = counter_uniform(seed, r, t), seed drawn from the generator
    seed = draw_seed(torch.Generator().manual_seed(7))
    u = {(r, t - 1): float(counter_uniform(seed, torch.tensor(r), torch.tensor(t), dtype=torch.float64))
         for r in range(M) for t in range(1, M)}
    ref = {}
    for chunk in range(M):
        for i in range(C):
            a = chunk * C + i
            for j in range(C):
                if j == i:
                    continue  # own class: not a negative
                tmp = pairs[(a, j)]
                for step in range(1, M):
                    nh = pairs[(a, step * C + j)]
                    tmp = nh + u[(chunk, step - 1)] * (tmp - nh)
                ref[(a, j)] = tmp
    rows = {(int(a), int(c)): g for g, (a, c) in enumerate(zip(out.anchor_index, out.labels))}
    assert set(rows) == set(ref)  # one negative per (anchor, other class)
    for key, val in ref.items():
        torch.testing.assert_close(out.x[rows[key]].detach(), val, atol=1e-10, rtol=0)


@pytest.mark.parametrize("rw,edges,k", [("chain", "knn", 3), ("dirichlet", "complete", None),
                                        ("dirichlet", "knn", 3)])
def test_rw_weights_convex_and_mix(rw, edges, k):
    z, y = chunked_batch(7)
    gen = make_gen(rw=rw, edges=edges, k=k)
    out = gen(z, y, generator=torch.Generator().manual_seed(1), return_pairs=True)
    w = out.pairs.weight
    assert bool((w >= 0).all()) and bool((w <= 1).all())
    groups = {}
    for p, g in enumerate(out.pairs.group.tolist()):
        groups.setdefault(g, []).append(p)
    assert sorted(groups) == list(range(out.x.size(0)))
    for g, members in groups.items():
        assert abs(float(w[members].sum()) - 1.0) < 1e-9
        mix = sum(w[p] * out.pairs.x[p] for p in members)
        torch.testing.assert_close(out.x[g], mix, atol=1e-10, rtol=0)
        # all pairs of a group share the anchor and the negative class; label = that class
        assert {int(out.pairs.anchor[p]) for p in members} == {int(out.anchor_index[g])}
        assert {int(y[out.pairs.negative[p]]) for p in members} == {int(out.labels[g])}
    if edges == "complete":
        assert out.x.size(0) == B * (C - 1)
    # seeded draws are reproducible, other seeds differ
    again = gen.eval()(z, y, generator=torch.Generator().manual_seed(1))
    other = gen(z, y, generator=torch.Generator().manual_seed(2))
    still = gen(z, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.x, still.x) and not torch.equal(again.x, other.x)


# sparse graph -----------------------------------------------------------------------------------
def test_knn_graph_is_symmetrised_cosine_knn_plus_positives():
    z, y = chunked_batch(8)
    k = 2
    out = make_gen(edges="knn", k=k, rw=None)(z, y)
    adj = torch.zeros(B, B, dtype=torch.bool)
    adj[out.graph.edge_index[0], out.graph.edge_index[1]] = True
    assert out.graph.edge_index.size(1) == int(adj.sum())  # no duplicates
    corr = F.normalize(z, dim=1) @ F.normalize(z, dim=1).t()  # cosine (batch_graph's default)
    expected = y[:, None] == y[None, :]
    for i in range(B):
        cand = [j for j in range(B) if y[j] != y[i]]
        top = sorted(cand, key=lambda j: -float(corr[i, j]))[:k]
        for j in top:
            expected[i, j] = expected[j, i] = True
    assert torch.equal(adj, expected)
    assert out.graph.edge_index.size(1) <= 2 * B * k + M * M * C
    # pairs = every other-class edge a -> n
    other = {(int(a), int(n)) for a, n in out.graph.edge_index.t().tolist() if y[a] != y[n]}
    assert set(pair_dict(out, out.pairs.x)) == other


# losses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rw", ["chain", None])
def test_generator_loss_matches_reference(rw):
    z, y = chunked_batch(9)
    gen = make_gen(rw=rw, softmax_factor=20.0, dot_weight=10.0, div_weight=10.0)
    clf = nn.Linear(D, C).double()
    out = gen(z, y, generator=torch.Generator().manual_seed(0))
    terms = gen_loss(gen, out, clf)
    x = out.x.detach()
    logits = x @ clf.weight.detach().t() + clf.bias.detach()
    ce = -(logits.log_softmax(1)[torch.arange(len(x)), out.labels]).mean()
    za = z[out.anchor_index]
    sim = (1 - (za * x).sum(1) / (za.norm(dim=1) * x.norm(dim=1))).mean()
    lam = dense_lam(out, B)  # complete graph: lam[r, c] over all B x B edges
    mean_r = lam.mean(dim=1, keepdim=True)  # DiverseLoss: scatter_mean over r, tiled over c
    div = 1 - torch.sqrt(((lam - mean_r) ** 2).sum() / (B * B))
    torch.testing.assert_close(terms.softmax_ce.detach(), 20 * ce)
    torch.testing.assert_close(terms.similarity.detach(), sim)
    torch.testing.assert_close(terms.diversity.detach(), 1e-2 * div)
    torch.testing.assert_close(terms.total.detach(), 0.5 * (20 * ce + 10 * sim + 10 * 1e-2 * div))
    node = -(out.gnn.logits.detach().log_softmax(1)[torch.arange(B), y]).mean()
    torch.testing.assert_close(node_loss(out).detach(), node)


def test_sim_term_has_no_own_class_rows_official_mask_bug():
    # the official J_sim_mix mask zeroes rows i*B + j with j % C == i; the own-class rows of its
    # [B*C] output are k*C*C + i*C + i: they coincide only for m == 1
    official_mask = {i * B + j for i in range(C) for j in range(C * M) if j % C == i}
    own_rows = {k * C * C + i * C + i for k in range(M) for i in range(C)}
    assert official_mask != own_rows and not own_rows <= official_mask
    z, y = chunked_batch(10)
    out = make_gen(rw="chain")(z, y)
    assert bool((out.labels != y[out.anchor_index]).all())
    assert out.x.size(0) == B * (C - 1)


def test_training_steps_lower_generator_loss():
    z, y = chunked_batch(11, dtype=torch.float32)
    torch.manual_seed(0)
    gen = GCAHNG(D, num_classes=C, heads=2, rw=None, dropout=0.0)
    clf = nn.Linear(D, C)
    for p in clf.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = gen_loss(gen, gen(z, y, j_mean=1.0), clf).total
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 1e-3


def test_gradients_follow_the_official_three_step_update():
    z_in, y = chunked_batch(12, dtype=torch.float32)
    torch.manual_seed(0)
    backbone = nn.Linear(D, D)
    gen = GCAHNG(D, num_classes=C, heads=2, num_layers=2)
    clf = nn.Linear(D, C)
    node_head = {id(p) for p in list(gen.gnn.classifier.parameters()) + [gen.gnn.node_bn.weight]}
    edge_tail = {id(p) for p in list(gen.gnn.lin_lam.parameters()) + [gen.gnn.edge_bn.weight]
                 + list(gen.gnn.blocks[-1].node_to_edge.parameters())}
    trainable = [(n, p) for n, p in gen.named_parameters() if p.requires_grad]

    # GNN-only step on detached embeddings: the backbone gets nothing
    z = backbone(z_in)
    gen_loss(gen, gen(z.detach(), y), clf).total.backward()
    assert all(p.grad is None for p in backbone.parameters())
    for name, p in trainable:
        has = p.grad is not None and float(p.grad.abs().sum()) > 0
        assert has == (id(p) not in node_head), name
    assert all(p.grad is not None for p in clf.parameters())

    # metric step: lambda detached; node CE + a loss on the synthetic negatives
    gen.zero_grad()
    z = backbone(z_in)
    out = gen(z, y, detach_lam=True)
    (node_loss(out) + out.x.pow(2).mean()).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in backbone.parameters())
    for name, p in trainable:
        has = p.grad is not None and float(p.grad.abs().sum()) > 0
        assert has == (id(p) not in edge_tail), name


# API hygiene ------------------------------------------------------------------------------------
def test_dtype_device_follow_input_and_no_hardcoded_device():
    z, y = chunked_batch(13, dtype=torch.float64)
    out = make_gen()(z, y)
    assert out.x.dtype == torch.float64 and out.x.device == z.device
    for name in ["correlation", "node_attention", "edge_to_node", "node_to_edge", "gca_block",
                 "gca_gnn", "generator", "functional"]:
        src = inspect.getsource(getattr(gnn_pkg, name))
        assert "torch.range(" not in src and '"cuda"' not in src and "'cuda'" not in src, name
        assert ".cuda(" not in src, name


def test_repr():
    gen = GCAHNG(D, num_classes=C, heads=2, edges="knn", k=3, rw="dirichlet")
    assert repr(gen) == ("GCAHNG(8, num_classes=4, edges='knn', k=3, alpha=4.0, rw='dirichlet', "
                         "layers=2, heads=2)")


def test_generator_errors():
    z, y = chunked_batch(14, dtype=torch.float32)
    with pytest.raises(ValueError, match="edges must be one of"):
        GCAHNG(D, C, edges="dense")
    with pytest.raises(ValueError, match="needs a positive integer k"):
        GCAHNG(D, C, edges="knn")
    with pytest.raises(ValueError, match="k is only used with edges='knn'"):
        GCAHNG(D, C, k=3)
    with pytest.raises(ValueError, match="rw must be one of"):
        GCAHNG(D, C, rw="uniform")
    with pytest.raises(ValueError, match="alpha must be positive"):
        GCAHNG(D, C, alpha=0.0)
    gen = GCAHNG(D, C, heads=2)
    with pytest.raises(ValueError, match="embeddings have 5 channels"):
        gen(torch.randn(B, 5), y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=4\)"):
        gen(z, y + 1)
    with pytest.raises(ValueError, match="single class"):
        gen(z, torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="j_mean .* must be positive"):
        gen(z, y, j_mean=0.0)
    with pytest.raises(ValueError, match="labels must be a vector"):
        gen(z, y[:-1])


def test_hdml_interpolate_formula():
    g = torch.Generator().manual_seed(15)
    za = torch.randn(6, 4, generator=g, dtype=torch.float64)
    zn = torch.randn(6, 4, generator=g, dtype=torch.float64)
    lam = torch.rand(6, 4, generator=g, dtype=torch.float64)
    d_neg = (za - zn).norm(dim=1)
    d_pos = d_neg * torch.tensor([0.2, 0.5, 0.9, 1.0, 1.5, 0.0], dtype=torch.float64)
    zt, hard = gnn_pkg.hdml_interpolate(za, zn, d_pos, d_neg, lam, scale=0.3)
    for p in range(6):
        if d_pos[p] < d_neg[p]:
            r = (d_pos[p] + (d_neg[p] - d_pos[p]) * lam[p] * 0.3) / d_neg[p]
            torch.testing.assert_close(zt[p], za[p] + r * (zn[p] - za[p]))
            assert bool(hard[p])
        else:
            assert torch.equal(zt[p], zn[p]) and not bool(hard[p])


def test_state_dict_round_trip_with_shared_norms():
    z, y = chunked_batch(16)
    gen = make_gen(rw=None).eval()
    clone = make_gen(rw=None, seed=123).eval()
    clone.load_state_dict(gen.state_dict())
    assert clone.gnn.blocks[0].attention.norm is None  # the block applies its one norm (no module shared)
    torch.testing.assert_close(clone(z, y).x, gen(z, y).x, atol=0, rtol=0)


# the graph: given edge_index, one builder ------------------------------------------------------
def lam_dict(out):
    ei = out.graph.edge_index
    return {(int(s), int(t)): out.gnn.lam[e].detach() for e, (s, t) in enumerate(ei.t().tolist())}


@pytest.mark.parametrize("edges,k", [("complete", None), ("knn", 2), ("negative", None),
                                     ("knn_negative", 3)])
def test_batch_graph_is_the_generators_graph(edges, k):
    z, y = chunked_batch(20)
    gen = make_gen(edges=edges, k=k, rw="chain").eval()
    out = gen(z, y, generator=torch.Generator().manual_seed(3))
    graph = batch_graph(z, y, edges=gen.edges, k=gen.k)
    assert torch.equal(graph.edge_index, out.graph.edge_index)
    assert out.graph.x is z and torch.equal(out.graph.y, y)
    # the same graph passed explicitly gives the same result, bit for bit
    given = gen(z, y, generator=torch.Generator().manual_seed(3), edge_index=graph.edge_index)
    for a, b in ((out.x, given.x), (out.gnn.lam, given.gnn.lam), (out.gnn.logits, given.gnn.logits),
                 (out.pairs.weight, given.pairs.weight), (out.anchor_index, given.anchor_index)):
        assert torch.equal(a, b)


def test_given_complete_graph_in_official_order_equals_builtin_complete():
    # official edge order: r-major flatten of the dense [B, B] matrix (source, then target),
    # while batch_graph sorts by target: same graph, other order -> same values per edge / pair
    z, y = chunked_batch(21)
    gen = make_gen(rw=None, dropout=0.0)
    ar = torch.arange(B)
    official = torch.stack([ar.repeat_interleave(B), ar.repeat(B)])
    built = gen(z, y, j_mean=2.0)
    given = gen(z, y, j_mean=2.0, edge_index=official)
    assert torch.equal(given.graph.edge_index, official)
    lb, lg = lam_dict(built), lam_dict(given)
    assert set(lb) == set(lg) == {(r, c) for r in range(B) for c in range(B)}
    for key in lb:
        torch.testing.assert_close(lg[key], lb[key], atol=1e-12, rtol=0)
    pb, pg = pair_dict(built, built.pairs.x.detach()), pair_dict(given, given.pairs.x.detach())
    assert set(pb) == set(pg)
    for key in pb:
        torch.testing.assert_close(pg[key], pb[key], atol=1e-12, rtol=0)
    torch.testing.assert_close(given.gnn.logits, built.gnn.logits, atol=1e-12, rtol=0)


def test_generator_on_a_user_graph_follows_official_pulling():
    # any sparsity: a random graph; negatives of a = its other-class out-neighbours
    z, y = chunked_batch(22)
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(B, B, generator=g) < 0.3
    src, tgt = keep.nonzero(as_tuple=True)
    edge_index = torch.stack([src, tgt])
    gen = make_gen(rw=None)
    out = gen(z, y, j_mean=2.5, edge_index=edge_index)
    assert torch.equal(out.graph.edge_index, edge_index)
    expected = {(int(s), int(t)) for s, t in zip(src, tgt) if y[s] != y[t]}
    ours = pair_dict(out, out.pairs.x)
    assert set(ours) == expected
    ref = official_pulling_pairs(z, dense_lam(out, B), 4.0, 2.5, list(ours))
    for key, val in ref.items():
        torch.testing.assert_close(ours[key], val, atol=1e-10, rtol=0)


def test_given_edge_index_errors():
    z, y = chunked_batch(23)
    gen = make_gen(rw=None)
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        gen(z, y, edge_index=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer node indices"):
        gen(z, y, edge_index=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"lie in \[0, 12\)"):
        gen(z, y, edge_index=torch.tensor([[0, 12], [1, 2]]))
    with pytest.raises(TypeError, match="pass graph.edge_index"):
        gen(z, y, edge_index=batch_graph(z, y))
    same = batch_graph(z, y, edges="positive").edge_index
    with pytest.raises(ValueError, match="no edge between samples of different classes"):
        gen(z, y, edge_index=same)
    with pytest.raises(ValueError, match="edges='positive' joins same-class samples only"):
        GCAHNG(D, C, edges="positive")
    with pytest.raises(ValueError, match="edges='knn_negative' needs a positive integer k"):
        GCAHNG(D, C, edges="knn_negative")


# activation checkpointing ----------------------------------------------------------------------
@pytest.mark.parametrize("edges,k", [("complete", None), ("knn", 3)])
def test_checkpointed_generator_equals_plain_values_and_gradients(edges, k):
    # dropout on (0.1, official): the recomputation must redraw the same masks
    z0, y = chunked_batch(24)
    plain = make_gen(edges=edges, k=k, rw="chain", num_layers=2)
    ckpt = make_gen(edges=edges, k=k, rw="chain", num_layers=2, recompute_hidden=True)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.recompute_hidden and not plain.recompute_hidden and "recompute_hidden=True" in repr(ckpt)
    clf = nn.Linear(D, C).double()
    results = []
    for gen in (plain, ckpt):
        z = z0.clone().requires_grad_(True)
        torch.manual_seed(5)
        with pytest.warns(UserWarning, match="detach_lam=False on embeddings that require grad"):
            # every gradient path at once (lambda live on live embeddings), to compare them all
            out = gen(z, y, j_mean=2.0, generator=torch.Generator().manual_seed(1), detach_lam=False)
        loss = gen_loss(gen, out, clf).total + node_loss(out) + out.x.pow(2).mean()
        params = [q for q in gen.parameters() if q.requires_grad]
        grads = torch.autograd.grad(loss, [z] + params, allow_unused=True)
        results.append((out.x.detach(), out.gnn.lam.detach(), loss.detach(), grads))
    (x1, l1, s1, g1), (x2, l2, s2, g2) = results
    assert torch.equal(x1, x2) and torch.equal(l1, l2) and torch.equal(s1, s2)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    # dropout really was active (another seed gives other values)
    torch.manual_seed(6)
    assert not torch.equal(plain(z0, y, generator=torch.Generator().manual_seed(1)).x, x1)


def test_checkpoint_is_inactive_without_grad():
    z, y = chunked_batch(25)
    gen = make_gen(rw=None, recompute_hidden=True).eval()
    ref = make_gen(rw=None).eval()
    with torch.no_grad():
        torch.testing.assert_close(gen(z, y).x, ref(z, y).x, atol=0, rtol=0)


# pytorch-metric-learning interop ----------------------------------------------------------------
def pml_style_ms(emb, labels, tup, ref_emb, alpha=2.0, beta=50.0, base=0.5):
    """MultiSimilarityLoss of pytorch-metric-learning on an indices tuple, as a plain loop:
    cosine similarity between embeddings (anchors) and ref_emb, per anchor row
    1/alpha log(1 + sum_pos exp(-alpha (s - base))) + 1/beta log(1 + sum_neg exp(beta (s - base))),
    mean over the rows of embeddings (MeanReducer)."""
    a1, p, a2, n = (t.tolist() for t in tup)
    total = 0.0
    for a in range(len(emb)):
        cos = lambda j: F.cosine_similarity(emb[a], ref_emb[j], dim=0)  # noqa: E731
        pos = [cos(j) for i, j in zip(a1, p) if i == a]
        neg = [cos(j) for i, j in zip(a2, n) if i == a]
        lp = torch.log(1 + sum((torch.exp(-alpha * (s - base)) for s in pos), torch.tensor(0.0)))
        ln = torch.log(1 + sum((torch.exp(beta * (s - base)) for s in neg), torch.tensor(0.0)))
        total = total + lp / alpha + ln / beta
    return total / len(emb)


def pml_style_triplet(emb, tup, ref_emb, margin=0.2):
    """TripletMarginLoss of pytorch-metric-learning on triplets (a, p, n), as a plain loop:
    distances between L2-normalised vectors, relu(d_ap - d_an + margin), mean over the nonzero
    losses (AvgNonZeroReducer)."""
    e, r = F.normalize(emb, dim=1), F.normalize(ref_emb, dim=1)
    losses = [F.relu((e[a] - r[p]).norm() - (e[a] - r[n]).norm() + margin)
              for a, p, n in zip(*(t.tolist() for t in tup))]
    nonzero = [v for v in losses if float(v.detach()) > 0]
    return sum(nonzero) / len(nonzero)


def test_pml_indices_tuple_equals_graphneg_losses_with_synthetic_negatives():
    from graphneg.losses import MultiSimilarityLoss, TripletMarginLoss, pml_inputs, synthetic_indices_tuple

    z, y = chunked_batch(26)
    out = make_gen(rw="chain")(z, y, generator=torch.Generator().manual_seed(0))
    pairs = pml_inputs(out, "pairs")
    assert torch.equal(pairs.ref_emb[:B], z) and torch.equal(pairs.ref_emb[B:], out.x)
    # miner-safe: every synthetic negative has a class id of its own, above every real one
    assert torch.equal(pairs.ref_labels, torch.cat([y, int(y.max()) + 1 + torch.arange(len(out.x))]))
    a1, p, a2, n = pairs.indices_tuple
    assert bool((y[a1] == y[p]).all()) and bool((a1 != p).all()) and len(a1) == B * (M - 1)
    assert torch.equal(a2, out.anchor_index) and torch.equal(n, torch.arange(B, B + len(out.x)))
    ms = MultiSimilarityLoss(mining=False)(z, y, neg_embeddings=out.x, neg_labels=out.labels,
                                           anchor_index=out.anchor_index)
    torch.testing.assert_close(ms, pml_style_ms(z, y, pairs.indices_tuple, pairs.ref_emb))

    trip = synthetic_indices_tuple(z, y, out.x, out.labels, out.anchor_index, kind="triplets")
    a, p, n = trip.indices_tuple
    expected = {(ai, pi, B + g) for g, ai in enumerate(out.anchor_index.tolist())
                for pi in range(B) if pi != ai and y[pi] == y[ai]}
    assert set(zip(a.tolist(), p.tolist(), n.tolist())) == expected and len(a) == len(expected)
    tl = TripletMarginLoss(margin=0.2)(z, y, neg_embeddings=out.x, neg_labels=out.labels,
                                       anchor_index=out.anchor_index)
    torch.testing.assert_close(tl, pml_style_triplet(z, trip.indices_tuple, trip.ref_emb))
    with pytest.raises(ValueError, match="kind must be 'pairs' or 'triplets'"):
        pml_inputs(out, "quadruplets")


# floors and validation ---------------------------------------------------------------------------
def test_nn_imports_nothing_above_its_floor():
    """graphneg/nn/ sits below losses/, data/, models/ and the CLI: no import of them, lazy ones included."""
    import ast
    import pathlib

    above = ("graphneg.losses", "graphneg.models", "graphneg.data", "graphneg.cli", "graphneg.callbacks")
    root = pathlib.Path(gnn_pkg.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(above), f"{path.name} imports {name}"


def test_forward_validates_once():
    """One public call, one validation: with value checks on, the only value read by graphneg.validation is
    check_batch's single host sync (the graph builder and the GNN run with value checks off)."""
    from test_validation import record_host_syncs

    z, y = chunked_batch(27)
    gen = make_gen(rw=None)
    with record_host_syncs() as calls:
        gen(z, y)
    validation = [c for c in calls if c[1].replace("\\", "/").startswith("/validation/")]
    assert [fn for _, _, fn in validation] == ["check_batch"], calls
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=4\)"):
        gen(z, y + 1)
    with pytest.raises(ValueError, match="embeddings contain NaN or Inf"):
        gen(z * float("nan"), y)
    with pytest.warns(DeprecationWarning, match="use recompute_hidden"):
        old = make_gen(rw=None, checkpoint=True)
    assert old.recompute_hidden


@pytest.mark.parametrize("backward_inside", [True, False])
def test_gcahng_forward_and_backward_under_cpu_bf16_autocast_close_to_float32(backward_inside):
    # the whole generator (GNN layers with their custom backward functions, the fused generation ops)
    # under CPU bf16 autocast, backward inside the autocast region (Lightning's manual_backward) or after
    # it; reference: the same modules in float32 without autocast. Before the layers' backward switched
    # autocast off itself, the backward inside failed ("expected scalar type Float but found BFloat16").
    import warnings

    torch.manual_seed(0)
    gen = GCAHNG(16, 4, num_layers=2, heads=2, rw="chain", dropout=0.0)
    net = torch.nn.Linear(10, 16)
    x, y = torch.randn(12, 10), torch.arange(4).repeat(3)
    params = [p for p in [*net.parameters(), *gen.parameters()] if p.requires_grad]

    def run(autocast: bool, inside: bool):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # detach_lam=False warns: every gradient path at once, on purpose
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = gen(net(x), y, j_mean=2.0, generator=torch.Generator().manual_seed(1), detach_lam=False)
                loss = out.x.float().pow(2).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True) if inside else None
            grads = grads if inside else torch.autograd.grad(loss, params, allow_unused=True)
        return out.x.float().detach(), grads

    ref, ref_g = run(False, False)
    out, g = run(True, backward_inside)
    assert float((out - ref).norm()) <= 0.03 * float(ref.norm())  # bf16 rounding only
    used = [(a, b) for a, b in zip(g, ref_g) if b is not None]
    assert len(used) > len(params) // 2 and all(a is not None for a, _ in used)
    assert all(a.dtype == b.dtype == torch.float32 and bool(torch.isfinite(a).all()) for a, b in used)
    flat, ref_flat = torch.cat([a.flatten() for a, _ in used]), torch.cat([b.flatten() for _, b in used])
    assert float((flat - ref_flat).norm()) <= 0.03 * float(ref_flat.norm())
