"""Each benchmark protocol's metrics against a brute-force loop, ties included; the shared top-k kernel."""
import pytest
import torch

from graphneg.ops.knn import knn_index
from graphneg.metrics.retrieval import RECALL_KS, chunked_topk, nearest_neighbours, retrieval_metrics


def brute_force(q, ql, r=None, rl=None, ks=(1,)):
    """Loop reference with exact integer squared distances: neighbours ordered by (distance, index),
    the query itself excluded when the gallery is the query set; queries with R = 0 left out.
    Recall@K: hit in the first K; R-Precision and MAP@R: Musgrave et al. 2020, sec. 3.2."""
    same = r is None
    if same:
        r, rl = q, ql
    qi, ri = q.round().long().tolist(), r.round().long().tolist()
    ql, rl = ql.tolist(), rl.tolist()
    hits = {k: 0 for k in ks}
    ap = rp = 0.0
    n = 0
    for i, (qv, y) in enumerate(zip(qi, ql)):
        cand = [j for j in range(len(ri)) if not (same and j == i)]
        cand.sort(key=lambda j: (sum((a - b) ** 2 for a, b in zip(qv, ri[j])), j))
        rel = [rl[j] == y for j in cand]
        R = sum(rel)
        if R == 0:
            continue
        n += 1
        for k in ks:
            hits[k] += any(rel[:k])
        rp += sum(rel[:R]) / R
        correct, s = 0, 0.0
        for pos in range(R):
            if rel[pos]:
                correct += 1
                s += correct / (pos + 1)
        ap += s / R
    out = {f"recall@{k}": hits[k] / n for k in ks}
    out.update({"map@r": ap / n, "r_precision": rp / n, "num_queries": float(n)})
    return out


def _tied_set(n, dim, classes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, (n, dim), generator=g).float()  # values in {-1, 0, 1}: many exact ties
    x[5] = x[3]  # exact duplicates
    x[9] = x[3]
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _compare(got, want):
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key


@pytest.mark.parametrize("protocol", ["cub200", "cars196", "sop"])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_same_set_protocols_with_ties(protocol, chunk):
    x, y = _tied_set(60, 4, 8, seed=1)
    ks = RECALL_KS[protocol]
    got = retrieval_metrics(x, y, ks=ks, metric="euclidean", chunk_size=chunk, nmi=False)
    _compare(got, brute_force(x, y, ks=ks))


def test_inshop_query_gallery_with_ties_and_unmatched_queries():
    q, ql = _tied_set(40, 3, 9, seed=2)
    g, gl = _tied_set(70, 3, 7, seed=3)  # query classes 7 and 8 never occur in the gallery: left out
    ks = RECALL_KS["inshop"]
    got = retrieval_metrics(q, ql, ks=ks, ref_embeddings=g, ref_labels=gl, metric="euclidean", chunk_size=6,
                            nmi=False)
    want = brute_force(q, ql, g, gl, ks=ks)
    _compare(got, want)
    assert got["num_excluded"] == float((ql >= 7).sum())


def test_cosine_protocol_random_no_ties():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randint(0, 6, (50,), generator=g)
    got = retrieval_metrics(x, y, ks=(1, 2, 4, 8), nmi=False)
    # independent reference: cosine similarities, full stable argsort
    xn = torch.nn.functional.normalize(x, dim=1)
    s = xn @ xn.t()
    s.fill_diagonal_(float("-inf"))
    order = torch.sort(-s, dim=1, stable=True).indices[:, :-1]
    rel = y[order] == y[:, None]
    R = rel.sum(1)
    valid = R > 0
    for k in (1, 2, 4, 8):
        assert got[f"recall@{k}"] == pytest.approx(rel[valid, :k].any(1).double().mean().item(), abs=1e-12)
    ranks = torch.arange(1, 50, dtype=torch.float64)
    in_r = ranks[None] <= R[:, None]
    relr = (rel & in_r).double()
    ap = ((relr.cumsum(1) / ranks) * relr).sum(1) / R.clamp_min(1)
    assert got["map@r"] == pytest.approx(ap[valid].mean().item(), abs=1e-12)
    assert got["r_precision"] == pytest.approx((relr.sum(1) / R.clamp_min(1))[valid].mean().item(), abs=1e-12)


@pytest.mark.parametrize("max_block", [1, 13, 1 << 24])
def test_chunked_topk_matches_stable_sort(max_block):
    x, y = _tied_set(37, 3, 5, seed=5)
    k = 9
    s = -torch.cdist(x.double(), x.double()).pow(2)
    s.fill_diagonal_(float("-inf"))
    want = torch.sort(-s, dim=1, stable=True).indices[:, :k]  # ties: lowest index first
    got = torch.cat([i for _, _, i in chunked_topk(x, x, k, score="neg_sqeuclidean", exclude_self=True,
                                                     chunk_size=5, max_block_elements=max_block)])
    assert torch.equal(got, want)
    # and with same-label exclusion (the kNN-negative graph)
    s2 = s.masked_fill(y[:, None] == y[None, :], float("-inf"))
    want2 = torch.sort(-s2, dim=1, stable=True)
    got_v, got_i = zip(*[(v, i) for _, v, i in chunked_topk(
        x, x, k, score="neg_sqeuclidean", exclude_self=True, query_labels=y, ref_labels=y,
        exclude_same_label=True, chunk_size=4, max_block_elements=max_block)])
    got_v, got_i = torch.cat(got_v), torch.cat(got_i)
    finite = torch.isfinite(got_v)
    assert torch.equal(got_i[finite], want2.indices[:, :k][finite])
    assert torch.equal(finite, torch.isfinite(want2.values[:, :k]))


def test_knn_index_uses_the_kernel_tie_rule():
    # four identical points and one far away: every node's single neighbour is the lowest other index
    x = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    ei = knn_index(x, 1)
    nb = dict(zip(ei[1].tolist(), ei[0].tolist()))
    assert nb == {0: 1, 1: 0, 2: 0, 3: 0, 4: 0}


def test_faiss_backend_equals_torch():
    import faiss  # noqa: F401  (the dev extra installs faiss-cpu; a missing one fails, not skips)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(80, 8, generator=g), torch.randint(0, 10, (80,), generator=g)
    a = retrieval_metrics(x, y, ks=(1, 10, 100), nmi=False, backend="torch")
    b = retrieval_metrics(x, y, ks=(1, 10, 100), nmi=False, backend="faiss")
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9)
    i1 = torch.cat([i for _, i in nearest_neighbours(x, x, 5, True, backend="torch")])
    i2 = torch.cat([i for _, i in nearest_neighbours(x, x, 5, True, backend="faiss")])
    assert torch.equal(i1, i2)


def test_kernel_argument_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="k must be in"):
        next(chunked_topk(x, x, 5))
    with pytest.raises(ValueError, match="score must be"):
        next(chunked_topk(x, x, 1, score="l1"))
    with pytest.raises(ValueError, match="exclude_self needs"):
        next(chunked_topk(x, x[:3], 1, exclude_self=True))
    with pytest.raises(ValueError, match="chunk_size"):
        next(chunked_topk(x, x, 1, chunk_size=0))


@pytest.mark.gpu
def test_cuda_equals_cpu_with_ties():
    """Not run on the CPU reference machine (no device lent): the tie rule holds on CUDA too."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: a `gpu`-marked test, run with `nox -s gpu` on a CUDA machine")
    x, y = _tied_set(300, 4, 20, seed=7)
    for metric in ("euclidean",):  # integer coordinates: exact scores on both devices, so the same ties
        a = retrieval_metrics(x, y, ks=RECALL_KS["sop"], metric=metric, chunk_size=64, nmi=False)
        b = retrieval_metrics(x.cuda(), y.cuda(), ks=RECALL_KS["sop"], metric=metric, chunk_size=64, nmi=False)
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-12), (metric, key)
    i_cpu = torch.cat([i for _, _, i in chunked_topk(x, x, 17, score="neg_sqeuclidean", exclude_self=True)])
    i_gpu = torch.cat([i for _, _, i in chunked_topk(x.cuda(), x.cuda(), 17, score="neg_sqeuclidean",
                                                       exclude_self=True)])
    assert torch.equal(i_cpu, i_gpu.cpu())
