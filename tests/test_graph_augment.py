"""Graph augmentations (GraphCL families) as PyG transforms: validity, ratios, reproducibility."""
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import Compose

from graphneg.data.graph_augment import (
    AttributeMask,
    EdgePerturb,
    NodeDrop,
    RandomChoice,
    SubgraphSample,
    TwoViews,
    collate_views,
    reseed_augmentations,
)


def _undirected_graph(n=30, m=45, num_edge_types=3, seed=0, connected=True):
    """Random simple undirected graph; x[:, 0] holds the node id (to trace nodes), the other
    columns are positive random features; symmetric one-hot edge_attr; graph-level y."""
    g = torch.Generator().manual_seed(seed)
    pairs = set()
    if connected:  # a random spanning tree first
        for v in range(1, n):
            u = int(torch.randint(0, v, (1,), generator=g))
            pairs.add((u, v))
    while len(pairs) < m:
        u, v = (int(t) for t in torch.randint(0, n, (2,), generator=g))
        if u != v:
            pairs.add((min(u, v), max(u, v)))
    pairs = sorted(pairs)
    types = torch.randint(0, num_edge_types, (len(pairs),), generator=g)
    src, dst, attr = [], [], []
    for (u, v), t in zip(pairs, types.tolist()):
        onehot = [0.0] * num_edge_types
        onehot[t] = 1.0
        src += [u, v]
        dst += [v, u]
        attr += [onehot, onehot]
    x = torch.cat([torch.arange(n, dtype=torch.float).view(-1, 1),
                   torch.rand(n, 4, generator=g) + 0.5], dim=1)
    return Data(x=x, edge_index=torch.tensor([src, dst]), edge_attr=torch.tensor(attr),
                y=torch.tensor([1]))


def _edge_dict(data, ids=None):
    """{(original id of source, original id of target): edge_attr tuple} (loop reference)."""
    ids = data.x[:, 0].long().tolist() if ids is None else ids
    out = {}
    for e in range(data.edge_index.size(1)):
        i, j = data.edge_index[:, e].tolist()
        out[(ids[i], ids[j])] = tuple(data.edge_attr[e].tolist())
    return out


def _assert_valid(data):
    n = data.num_nodes
    assert n >= 1
    assert data.x.size(0) == n
    if data.edge_index.numel():
        assert int(data.edge_index.min()) >= 0 and int(data.edge_index.max()) < n
    assert data.edge_attr.size(0) == data.edge_index.size(1)


def _same(a, b):
    return (torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
            and torch.equal(a.edge_attr, b.edge_attr))


def test_node_drop_ratio_induced_subgraph_and_seed():
    data = _undirected_graph()
    x0, ei0 = data.x.clone(), data.edge_index.clone()
    out = NodeDrop(0.2, seed=3)(data)
    _assert_valid(out)
    assert out.num_nodes == 30 - 6  # floor(0.2 * 30) dropped
    kept = out.x[:, 0].long().tolist()
    assert kept == sorted(kept)  # original order preserved
    # rows follow their node
    assert torch.equal(out.x, x0[torch.tensor(kept)])
    # induced subgraph: exactly the original edges between kept nodes, with their attributes
    orig = _edge_dict(data)
    expected = {k: v for k, v in orig.items() if k[0] in kept and k[1] in kept}
    assert _edge_dict(out) == expected
    assert torch.equal(out.y, data.y)
    # input untouched, reproducible, seed-dependent
    assert torch.equal(data.x, x0) and torch.equal(data.edge_index, ei0)
    assert _same(out, NodeDrop(0.2, seed=3)(data))
    assert not torch.equal(out.x, NodeDrop(0.2, seed=4)(data).x)


def test_node_drop_keeps_one_node():
    data = _undirected_graph(n=5, m=6)
    out = NodeDrop(1.0, seed=0)(data)
    assert out.num_nodes == 1 and out.edge_index.size(1) == 0
    single = Data(x=torch.ones(1, 2), edge_index=torch.empty(2, 0, dtype=torch.long))
    assert NodeDrop(0.9, seed=0)(single).num_nodes == 1


def test_edge_perturb_undirected_counts_and_attributes():
    data = _undirected_graph(n=30, m=60)
    m = 60
    out = EdgePerturb(0.25, seed=1)(data)
    _assert_valid(out)
    assert torch.equal(out.x, data.x)
    orig, new = _edge_dict(data), _edge_dict(out)
    # undirected with symmetric attributes
    for (i, j), a in new.items():
        assert new[(j, i)] == a
    und_orig = {k for k in orig if k[0] < k[1]}
    und_new = {k for k in new if k[0] < k[1]}
    kept = und_orig & und_new
    added = und_new - und_orig
    k = int(0.25 * m)
    # exactly k undirected edges removed; at most k added (duplicates discarded), within tolerance
    assert len(und_orig - und_new) == k
    assert 0 < len(added) <= k and len(added) >= k - 3
    assert all(i != j for i, j in added)
    assert all(new[e] == orig[e] for e in kept)
    assert all(new[e] == (0.0, 0.0, 0.0) for e in added)
    # sorted by (source, target), no duplicates
    key = out.edge_index[0] * 30 + out.edge_index[1]
    assert torch.equal(key, torch.unique(key))
    assert _same(out, EdgePerturb(0.25, seed=1)(data))
    assert not torch.equal(out.edge_index, EdgePerturb(0.25, seed=2)(data).edge_index)


def test_edge_perturb_directed():
    g = torch.Generator().manual_seed(0)
    n = 20
    ei = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])  # directed ring: not undirected
    ei = torch.cat([ei, torch.stack([torch.arange(0, n, 2), (torch.arange(0, n, 2) + 5) % n])], 1)
    data = Data(x=torch.rand(n, 3, generator=g), edge_index=ei, edge_attr=torch.rand(ei.size(1), 2))
    out = EdgePerturb(0.3, seed=0)(data)
    _assert_valid(out)
    e = ei.size(1)
    orig = {tuple(p): tuple(a) for p, a in zip(ei.t().tolist(), data.edge_attr.tolist())}
    new = {tuple(p): tuple(a) for p, a in zip(out.edge_index.t().tolist(), out.edge_attr.tolist())}
    assert len(set(orig) - set(new)) == int(0.3 * e)
    added = set(new) - set(orig)
    assert 0 < len(added) <= int(0.3 * e)
    assert all(new[p] == orig[p] for p in set(orig) & set(new))
    assert all(new[p] == (0.0, 0.0) for p in added)
    # a directed input stays directed: some edge lacks its reverse
    assert any((j, i) not in new for (i, j) in new)


@pytest.mark.parametrize("fill", ["zero", "mean", "gaussian"])
def test_attribute_mask_rows(fill):
    data = _undirected_graph(n=40, m=50)
    x0 = data.x.clone()
    out = AttributeMask(0.3, fill=fill, seed=7)(data)
    _assert_valid(out)
    assert torch.equal(out.edge_index, data.edge_index)
    assert torch.equal(data.x, x0)  # no in-place change
    changed = (out.x != x0).any(dim=1)
    assert int(changed.sum()) == int(0.3 * 40)
    assert torch.equal(out.x[~changed], x0[~changed])
    masked = out.x[changed]
    if fill == "zero":
        assert torch.equal(masked, torch.zeros_like(masked))
    elif fill == "mean":
        ref = torch.stack([x0[:, c].sum() / 40 for c in range(x0.size(1))])
        assert torch.allclose(masked, ref.expand_as(masked), atol=1e-6)
    else:  # N(0.5, 0.5^2) entries
        assert masked.std() > 0.2 and abs(float(masked.mean()) - 0.5) < 0.3
    again = AttributeMask(0.3, fill=fill, seed=7)(data)
    assert torch.equal(out.x, again.x)


def test_attribute_mask_feature_channels():
    data = _undirected_graph(n=10, m=12)
    data.x = torch.rand(10, 20) + 0.1
    out = AttributeMask(0.25, mode="feature", seed=0)(data)
    zero_cols = (out.x == 0).all(dim=0)
    assert int(zero_cols.sum()) == 5
    assert torch.equal(out.x[:, ~zero_cols], data.x[:, ~zero_cols])


def _components(n, edges):
    adj = {v: set() for v in range(n)}
    for i, j in edges:
        adj[i].add(j)
        adj[j].add(i)
    seen, comps = set(), 0
    for s in range(n):
        if s in seen:
            continue
        comps += 1
        stack = [s]
        seen.add(s)
        while stack:
            v = stack.pop()
            for w in adj[v] - seen:
                seen.add(w)
                stack.append(w)
    return comps


def test_subgraph_sample_connected_and_induced():
    data = _undirected_graph(n=50, m=70, connected=True)
    for seed in range(5):
        out = SubgraphSample(0.4, seed=seed)(data)
        _assert_valid(out)
        assert out.num_nodes == 20
        kept = out.x[:, 0].long().tolist()
        expected = {k: v for k, v in _edge_dict(data).items() if k[0] in kept and k[1] in kept}
        assert _edge_dict(out) == expected
        # grown by BFS from one node of a connected graph: the subgraph is connected
        assert _components(out.num_nodes, out.edge_index.t().tolist()) == 1
    assert _same(SubgraphSample(0.4, seed=9)(data), SubgraphSample(0.4, seed=9)(data))


def test_subgraph_sample_restarts_on_small_components():
    # 10 disjoint edges: every component has 2 nodes, 0.8 * 20 = 16 nodes need restarts
    ei = torch.tensor([[2 * k, 2 * k + 1] for k in range(10)]).t()
    ei = torch.cat([ei, ei.flip(0)], dim=1)
    data = Data(x=torch.arange(20, dtype=torch.float).view(-1, 1), edge_index=ei,
                edge_attr=torch.ones(ei.size(1), 1))
    out = SubgraphSample(0.8, seed=0)(data)
    _assert_valid(out)
    assert out.num_nodes == 16
    assert SubgraphSample(0.01, seed=0)(data).num_nodes == 1  # never empty


def test_random_choice_and_compose():
    data = _undirected_graph()
    only_first = RandomChoice([NodeDrop(0.5, seed=0), AttributeMask(0.5, seed=0)], probs=[1, 0], seed=0)
    assert all(only_first(data).num_nodes == 15 for _ in range(5))
    choice = RandomChoice([NodeDrop(0.5), AttributeMask(0.5)], seed=1)
    sizes = [choice(data).num_nodes for _ in range(200)]
    frac_drop = sum(s == 15 for s in sizes) / 200
    assert 0.35 < frac_drop < 0.65
    composed = Compose([NodeDrop(0.2, seed=0), AttributeMask(0.5, seed=1)])
    out = composed(data)
    _assert_valid(out)
    assert out.num_nodes == 24 and int((out.x == 0).all(dim=1).sum()) == 12


def test_two_views_collate_and_reseed():
    graphs = [_undirected_graph(n=8 + k, m=10 + k, seed=k) for k in range(6)]
    for k, g in enumerate(graphs):
        g.y = torch.tensor([k])

    def make():
        views = TwoViews(RandomChoice([NodeDrop(0.3), SubgraphSample(0.6), EdgePerturb(0.3)]),
                         AttributeMask(0.3))
        assert reseed_augmentations(views, 11) == 5  # RandomChoice + its 3 + AttributeMask
        return views

    views_a, views_b = make(), make()
    pairs_a = [views_a(g) for g in graphs]
    pairs_b = [views_b(g) for g in graphs]
    b1, b2 = collate_views(pairs_a)
    assert isinstance(b1, Batch) and isinstance(b2, Batch)
    assert b1.num_graphs == b2.num_graphs == 6
    assert torch.equal(b1.y, torch.arange(6)) and torch.equal(b2.y, torch.arange(6))
    for (p1, p2), (q1, q2) in zip(pairs_a, pairs_b):  # same seeds -> same views
        assert _same(p1, q1) and _same(p2, q2)
    for g, (v1, v2) in zip(graphs, pairs_a):  # second view: structure kept, features masked
        assert torch.equal(v2.edge_index, g.edge_index)
    # the same augmentation used for both views gives two different draws
    same_aug = TwoViews(NodeDrop(0.5, seed=0))
    v1, v2 = same_aug(graphs[-1])
    assert not torch.equal(v1.x, v2.x)
    # torch DataLoader of pairs
    loader = torch.utils.data.DataLoader([views_a(g) for g in graphs], batch_size=4,
                                         collate_fn=collate_views)
    first, second = next(iter(loader))
    assert first.num_graphs == second.num_graphs == 4


def test_bad_inputs():
    data = _undirected_graph(n=6, m=6)
    with pytest.raises(ValueError, match="NodeDrop: p must be a finite number in \\[0, 1\\]"):
        NodeDrop(1.5)
    with pytest.raises(ValueError, match=r"SubgraphSample: ratio must be a finite number in \(0, 1\]"):
        SubgraphSample(0.0)
    with pytest.raises(ValueError, match="either generator or seed"):
        EdgePerturb(0.1, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError, match="single graphs"):
        NodeDrop(0.2)(Batch.from_data_list([data, data]))
    with pytest.raises(ValueError, match="needs node features"):
        AttributeMask(0.2)(Data(edge_index=data.edge_index, num_nodes=6))
    with pytest.raises(ValueError, match="mode must be one of"):
        AttributeMask(0.2, mode="edge")
    with pytest.raises(ValueError, match="probs must be"):
        RandomChoice([NodeDrop(0.1)], probs=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"\(view1, view2\) pairs"):
        collate_views([data, data])
