"""graphneg.ops.knn, the one kNN kernel, against a brute-force reference written here: for each query,
all allowed references stably sorted by descending score (ties lowest index first)."""
import pytest
import torch

from graphneg.ops import knn as knn_mod
from graphneg.ops.knn import chunked_topk, knn_index


def brute_topk(q, r, k, score="dot", exclude_self=False, ql=None, rl=None, exclude_same_label=False):
    qd, rd = q.double(), r.double()
    vals, idxs = [], []
    for i in range(q.size(0)):
        if score == "dot":
            s = rd @ qd[i]
        else:
            s = -((rd - qd[i]) ** 2).sum(1)
        s = s.float() if score == "dot" else s
        allowed = torch.ones(r.size(0), dtype=torch.bool)
        if exclude_self:
            allowed[i] = False
        if exclude_same_label:
            allowed &= rl != ql[i]
        items = [(float(s[j]) if allowed[j] else float("-inf"), j) for j in range(r.size(0))]
        items.sort(key=lambda t: (-t[0], t[1]))  # descending score, lowest index first
        vals.append([v for v, _ in items[:k]])
        idxs.append([j for _, j in items[:k]])
    return torch.tensor(vals, dtype=torch.float64), torch.tensor(idxs)


def run(q, r, k, **kw):
    out = list(chunked_topk(q, r, k, **kw))
    starts = [s for s, _, _ in out]
    assert starts == sorted(starts) and starts[0] == 0
    return torch.cat([v for _, v, _ in out]), torch.cat([i for _, _, i in out])


def tied_embeddings(n, seed):
    """Integer-valued embeddings: exact float32 dot products with many ties at every rank."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, 3), generator=g).float()


@pytest.mark.parametrize("selection", ["twopass", "prefilter", "auto"])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_ties_lowest_index_first_equal_to_brute_force(selection, chunk):
    x = tied_embeddings(90, 0)
    for k in (1, 5, 11):  # 90 < 4096: "auto" takes the two-pass selection
        v, i = run(x, x, k, exclude_self=True, chunk_size=chunk, selection=selection)
        bv, bi = brute_topk(x, x, k, exclude_self=True)
        assert torch.equal(i, bi), (selection, k)
        torch.testing.assert_close(v.double(), bv, rtol=0, atol=0)


@pytest.mark.parametrize("selection", ["twopass", "prefilter"])
def test_label_exclusion_and_short_rows(selection):
    # class 0 holds 60 of 70 nodes: its rows have only 10 allowed references, so k = 12 leaves -inf
    # columns at the end (lowest index first among them, as the stable order says)
    x = tied_embeddings(70, 1)
    lab = torch.zeros(70, dtype=torch.long)
    lab[::7] = 1
    v, i = run(x, x, 12, exclude_self=True, query_labels=lab, ref_labels=lab, exclude_same_label=True,
               selection=selection, chunk_size=16)
    bv, bi = brute_topk(x, x, 12, exclude_self=True, ql=lab, rl=lab, exclude_same_label=True)
    assert torch.equal(i, bi)
    assert torch.equal(torch.isinf(v), torch.isinf(bv))
    torch.testing.assert_close(v.double()[torch.isfinite(v)], bv[torch.isfinite(bv)], rtol=0, atol=0)


@pytest.mark.parametrize("selection", ["twopass", "prefilter"])
def test_neg_sqeuclidean_and_separate_gallery(selection):
    g = torch.Generator().manual_seed(2)
    q, r = torch.randn(13, 4, generator=g), torch.randn(200, 4, generator=g)
    v, i = run(q, r, 9, score="neg_sqeuclidean", selection=selection, chunk_size=5)
    bv, bi = brute_topk(q, r, 9, score="neg_sqeuclidean")
    assert torch.equal(i, bi)
    torch.testing.assert_close(v.double(), bv, rtol=1e-5, atol=1e-5)


def test_prefilter_falls_back_on_massive_ties(monkeypatch):
    # all references identical: every score ties, the prefilter's candidates are the whole row;
    # the fallback must still give the lowest indices (and the cap must be what triggers it)
    x = torch.ones(64, 2)
    calls = []
    real = knn_mod._select_twopass
    monkeypatch.setattr(knn_mod, "_select_twopass", lambda s, k: calls.append(1) or real(s, k))
    for k in (1, 3):  # k = 1: 63 tied candidates a row > 32 k, the fallback; k = 3: the prefilter sorts them
        calls.clear()
        _, i = run(x, x, k, exclude_self=True, selection="prefilter")
        assert bool(calls) == (k == 1), "the two-pass fallback ran iff the candidates exceed the cap"
        expect = torch.tensor([[j for j in range(64) if j != row][:k] for row in range(64)])
        assert torch.equal(i, expect)


def test_prefilter_candidate_count_near_k_for_continuous_scores():
    """The bound that makes the prefilter cheap: about 1.2 k candidates a row, checked on random data."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(32, 20000, generator=g)
    k = 100
    m = 20000 // (4 * k)
    gmax = s.view(32, m, -1).amax(1)
    t = gmax.topk(k, dim=1).values[:, -1:]
    counts = (s >= t).sum(1).double()
    assert counts.min() >= k
    assert counts.mean() < 1.6 * k
    q = s[:4, :2000]
    v, i = run(q, torch.eye(2000), 40, selection="prefilter")  # scores = the rows of q themselves
    ref = q.sort(dim=1, descending=True, stable=True)
    assert torch.equal(i, ref.indices[:, :40]) and torch.equal(v, ref.values[:, :40])


def test_bad_arguments():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="selection must be"):
        next(chunked_topk(x, x, 2, selection="fast"))
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\]"):
        next(chunked_topk(x, x, 6))


def brute_knn_edges(x, k, labels=None, negatives_only=False, loop=False):
    xn = torch.nn.functional.normalize(x.double(), dim=1)
    n = x.size(0)
    edges = []
    for i in range(n):
        cands = [j for j in range(n) if (loop or j != i) and not (negatives_only and labels[j] == labels[i])]
        cands.sort(key=lambda j: (-float(xn[i] @ xn[j]), j))
        edges += [(j, i) for j in cands[:k]]
    edges.sort(key=lambda e: (e[1], e[0]))
    return torch.tensor(edges, dtype=torch.long).t()


@pytest.mark.parametrize("negatives_only,loop", [(False, False), (False, True), (True, False)])
def test_knn_index_equals_brute_force(negatives_only, loop):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=g)
    lab = torch.randint(0, 3, (40,), generator=g)
    lab[:30] = 0  # class 0: 10 or fewer other-class nodes for k = 12 -> short rows
    ei = knn_index(x, 12, labels=lab, negatives_only=negatives_only, loop=loop, chunk_size=7)
    assert torch.equal(ei, brute_knn_edges(x, 12, lab, negatives_only, loop))


def test_knn_index_cuda_path_on_cpu(monkeypatch):
    """The sync-free selection (what CUDA runs) gives the same edges as the CPU's prefilter, which "auto"
    takes on the CPU from N = 4096 references on (counted)."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4100, 8, generator=g)
    calls = []
    real = knn_mod._select_prefilter
    monkeypatch.setattr(knn_mod, "_select_prefilter", lambda *a: calls.append(1) or real(*a))
    a = knn_index(x, 16, chunk_size=2048)
    assert len(calls) == 3  # 4100 queries in blocks of 2048: the prefilter ran on each
    monkeypatch.setattr(knn_mod, "PREFILTER_DEVICE_TYPES", set())
    b = knn_index(x, 16, chunk_size=2048)
    assert len(calls) == 3  # the CUDA selection: no prefilter
    assert torch.equal(a, b)
    small = x[:300]
    assert torch.equal(knn_index(small, 16), brute_knn_edges(small, 16))
