"""batch_graph against dense masks built here."""
import pytest
import torch

from graphneg.graph import batch_graph
from graphneg.ops.knn import knn_index


def edge_set(edge_index):
    return {(int(s), int(t)) for s, t in edge_index.t()}


def dense_set(mask):
    # mask[i, j] means edge j -> i
    n = mask.size(0)
    return {(j, i) for i in range(n) for j in range(n) if mask[i, j]}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g)
    y = torch.tensor([0, 1, 0, 2, 1, 2, 0])
    return x, y


@pytest.mark.parametrize("loop", [False, True])
def test_complete_negative_positive(batch, loop):
    x, y = batch
    n = x.size(0)
    eye = torch.eye(n, dtype=torch.bool)
    same = torch.tensor([[bool(y[i] == y[j]) for j in range(n)] for i in range(n)])
    expect = {
        "complete": torch.ones(n, n, dtype=torch.bool) if loop else ~eye,
        "negative": ~same,
        "positive": (same | eye) if loop else (same & ~eye),
    }
    for mode, mask in expect.items():
        data = batch_graph(x, y, edges=mode, loop=loop)
        assert edge_set(data.edge_index) == dense_set(mask), mode
        assert data.edge_index.size(1) == int(mask.sum())
        # sorted by target then source
        key = data.edge_index[1] * n + data.edge_index[0]
        assert torch.equal(key, key.sort().values)
        assert data.x is x and torch.equal(data.y, y) and data.num_nodes == n


def brute_knn(x, k, y=None, negatives_only=False, loop=False):
    xn = torch.nn.functional.normalize(x, dim=1)
    n = x.size(0)
    edges = set()
    for i in range(n):
        cands = []
        for j in range(n):
            if j == i and not loop:
                continue
            if negatives_only and y[i] == y[j]:
                continue
            cands.append((float(xn[i] @ xn[j]), j))
        cands.sort(key=lambda t: -t[0])
        for _, j in cands[:k]:
            edges.add((j, i))
    return edges


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_knn_matches_brute_force(batch, chunk):
    x, y = batch
    for k in (1, 2, 4):
        data = batch_graph(x, edges="knn", k=k, chunk_size=chunk)
        assert edge_set(data.edge_index) == brute_knn(x, k)
        assert data.edge_index.size(1) == x.size(0) * k
    data = batch_graph(x, y, edges="knn_negative", k=3, chunk_size=chunk)
    assert edge_set(data.edge_index) == brute_knn(x, 3, y, negatives_only=True)
    # no same-class edge in knn_negative
    s, t = data.edge_index
    assert bool((y[s] != y[t]).all())


def test_knn_k_larger_than_candidates(batch):
    x, y = batch
    # class 0 has 3 members -> each node has at most 4 other-class nodes
    data = batch_graph(x, y, edges="knn_negative", k=100)
    assert edge_set(data.edge_index) == edge_set(batch_graph(x, y, edges="negative").edge_index)
    data = batch_graph(x, edges="knn", k=100)
    assert data.edge_index.size(1) == 7 * 6


def test_pearson_knn():
    x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.5], [3.0, 2.0, 1.0], [0.0, 0.0, 5.0]])
    # Pearson: x0 and x1 are nearly perfectly correlated, x2 anti-correlated with x0
    ei = knn_index(x, 1, metric="pearson")
    nbr = dict((int(t), int(s)) for s, t in ei.t())
    assert nbr[0] == 1 and nbr[1] == 0


def test_errors(batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"shape \[B, D\]"):
        batch_graph(x[None])
    with pytest.raises(ValueError, match="NaN"):
        batch_graph(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"expected shape \[7\]"):
        batch_graph(x, y[:5])
    with pytest.raises(ValueError, match="single class"):
        batch_graph(x, torch.zeros(7, dtype=torch.long), edges="negative")
    with pytest.raises(ValueError, match="needs labels"):
        batch_graph(x, edges="positive")
    with pytest.raises(ValueError, match="edges must be one of"):
        batch_graph(x, edges="full")
    with pytest.raises(ValueError, match="positive integer"):
        batch_graph(x, edges="knn")


def test_gradients_flow_through_x(batch):
    x, _ = batch
    x = x.clone().requires_grad_(True)
    data = batch_graph(x, edges="knn", k=2)
    data.x.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_complete_has_self_loops_by_default(batch):
    # the default (loop=None) of "complete" is the dense B x B graph of GCA-HNG, diagonal included
    x, y = batch
    n = x.size(0)
    assert edge_set(batch_graph(x, y).edge_index) == {(j, i) for i in range(n) for j in range(n)}
    assert edge_set(batch_graph(x, y, loop=False).edge_index) == {
        (j, i) for i in range(n) for j in range(n) if i != j}


@pytest.mark.parametrize("loop", [None, False])
@pytest.mark.parametrize("metric", ["cosine", "pearson"])
def test_labelled_knn_is_class_aware(batch, loop, metric):
    # with labels, "knn" = symmetrised k nearest other-class nodes + all same-class pairs
    # (self-loops unless loop=False): GCA-HNG's sparse graph
    x, y = batch
    n, k = x.size(0), 2
    feats = x - x.mean(dim=1, keepdim=True) if metric == "pearson" else x
    xn = torch.nn.functional.normalize(feats, dim=1)
    expect = set()
    for i in range(n):
        cands = sorted((j for j in range(n) if y[j] != y[i]), key=lambda j: -float(xn[i] @ xn[j]))
        for j in cands[:k]:
            expect |= {(j, i), (i, j)}
        for j in range(n):
            if y[j] == y[i] and (j != i or loop is None):
                expect.add((j, i))
    data = batch_graph(x, y, edges="knn", k=k, loop=loop, metric=metric)
    assert edge_set(data.edge_index) == expect
    assert data.edge_index.size(1) == len(expect)  # no duplicates
    key = data.edge_index[1] * n + data.edge_index[0]
    assert torch.equal(key, key.sort().values)  # sorted by target, then source
    # without labels "knn" stays the plain directed kNN graph
    assert edge_set(batch_graph(x, edges="knn", k=k).edge_index) == brute_knn(x, k)


def test_k_errors(batch):
    x, y = batch
    with pytest.raises(ValueError, match="k is only used with edges='knn' or edges='knn_negative'"):
        batch_graph(x, y, edges="complete", k=3)
    with pytest.raises(ValueError, match="edges='knn_negative' must be a positive integer, got 0"):
        batch_graph(x, y, edges="knn_negative", k=0)
    with pytest.raises(TypeError, match="fractional or boolean value is not truncated"):
        batch_graph(x, y, edges="knn", k=2.5)
