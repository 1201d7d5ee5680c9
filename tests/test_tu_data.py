"""TU data from the grakel wheel, TUDataModule (pairs of views, evaluation loaders, degree
features, missing-folder error), data safety (user files never overwritten, bad TU files reported
with file and line, processed cache keyed on the raw content) and the GIN encoder against a dense
reference."""
import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from graphneg.data.tu import CappedOneHotDegree, TUDataModule, check_tu_files, prepare_grakel_tu
from graphneg.models.gin import GINEncoder

GRAKEL_DATA = Path(importlib.util.find_spec("grakel").submodule_search_locations[0]) / "tests" / "data"


@pytest.fixture(scope="module")
def tu_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tu")


@pytest.fixture(scope="module")
def mutag(tu_root):
    dm = TUDataModule("MUTAG", root=str(tu_root), batch_size=32, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _file_labels(path):
    return [int(line) for line in path.read_text().split()]


def test_prepare_grakel_tu_copies_raw_files(tmp_path):
    raw = prepare_grakel_tu("mutag", tmp_path)
    assert raw == tmp_path / "MUTAG" / "raw"
    names = sorted(p.name for p in raw.iterdir())
    expected = sorted(p.name for p in (GRAKEL_DATA / "MUTAG").glob("MUTAG_*.txt"))
    assert names == expected
    for req in ("MUTAG_A.txt", "MUTAG_graph_indicator.txt", "MUTAG_graph_labels.txt"):
        assert (raw / req).read_bytes() == (GRAKEL_DATA / "MUTAG" / req).read_bytes()
    with pytest.raises(ValueError, match="grakel ships only"):
        prepare_grakel_tu("PROTEINS", tmp_path)


def test_mutag_datamodule_facts(mutag):
    labels_file = _file_labels(GRAKEL_DATA / "MUTAG" / "MUTAG_graph_labels.txt")
    assert len(labels_file) == 188
    assert len(mutag) == 188
    assert mutag.num_classes == 2
    node_labels = _file_labels(GRAKEL_DATA / "MUTAG" / "MUTAG_node_labels.txt")
    assert mutag.num_features == max(node_labels) + 1  # one-hot node labels (7 atom types)
    # labels in file order: -1 -> 0, 1 -> 1 (sorted label encoding)
    expected = torch.tensor([0 if v == -1 else 1 for v in labels_file])
    assert torch.equal(mutag.labels, expected)
    # evaluation loaders: all graphs, file order, plain (same node count as the indicator file)
    indicator = _file_labels(GRAKEL_DATA / "MUTAG" / "MUTAG_graph_indicator.txt")
    for loader in (mutag.val_dataloader(), mutag.test_dataloader(), mutag.predict_dataloader()):
        batches = list(loader)
        assert all(isinstance(b, Batch) for b in batches)
        assert torch.equal(torch.cat([b.y for b in batches]), expected)
        assert sum(b.num_nodes for b in batches) == len(indicator)


def test_mutag_train_pairs_reproducible(mutag, tu_root):
    v1, v2 = next(iter(mutag.train_dataloader()))
    assert isinstance(v1, Batch) and isinstance(v2, Batch)
    assert v1.num_graphs == v2.num_graphs == 32
    assert torch.equal(v1.y, v2.y)  # the two views of the same graphs
    for v in (v1, v2):
        assert v.x.size(1) == 7 and int(v.edge_index.max()) < v.num_nodes
    # same seed -> same batches; another seed -> other batches
    same = TUDataModule("MUTAG", root=str(tu_root), batch_size=32, seed=0)
    w1, w2 = next(iter(same.train_dataloader()))
    assert torch.equal(v1.edge_index, w1.edge_index) and torch.equal(v2.x, w2.x)
    other = TUDataModule("MUTAG", root=str(tu_root), batch_size=32, seed=1)
    o1, _ = next(iter(other.train_dataloader()))
    assert not (o1.edge_index.shape == v1.edge_index.shape and torch.equal(o1.edge_index, v1.edge_index))
    # node dropping removes floor(0.2 * N) nodes of every graph, in both views
    node_drop = TUDataModule("MUTAG", root=str(tu_root), batch_size=188, augment="node_drop",
                             aug_ratio=0.2, seed=0)
    d1, d2 = next(iter(node_drop.train_dataloader()))
    orig_nodes = sum(mutag.dataset[i].num_nodes for i in range(188))
    dropped = sum(int(0.2 * mutag.dataset[i].num_nodes) for i in range(188))
    assert d1.num_nodes == d2.num_nodes == orig_nodes - dropped


def test_missing_dataset_error(tmp_path):
    dm = TUDataModule("PROTEINS", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"PROTEINS[/\\]raw.*PROTEINS_A\.txt.*PROTEINS_graph_indicator\.txt"):
        dm.setup()
    assert not (tmp_path / "PROTEINS").exists()  # nothing downloaded or created
    with pytest.raises(ValueError, match="unknown augmentation"):
        TUDataModule("MUTAG", root=str(tmp_path), augment="rotate")


def _write_toy_tu(root):
    """Three featureless graphs in the raw TU layout: a path 1-2-3, a star 4-(5,6,7), an edge 8-9."""
    raw = root / "TOY" / "raw"
    raw.mkdir(parents=True)
    und = [(1, 2), (2, 3), (4, 5), (4, 6), (4, 7), (8, 9)]
    lines = [f"{a}, {b}" for a, b in und] + [f"{b}, {a}" for a, b in und]
    (raw / "TOY_A.txt").write_text("\n".join(lines) + "\n")
    (raw / "TOY_graph_indicator.txt").write_text("\n".join(["1"] * 3 + ["2"] * 4 + ["3"] * 2) + "\n")
    (raw / "TOY_graph_labels.txt").write_text("0\n1\n0\n")
    return {0: [1, 2, 1], 1: [3, 1, 1, 1], 2: [1, 1]}  # degrees per graph


def test_featureless_dataset_gets_one_hot_degree(tmp_path):
    degrees = _write_toy_tu(tmp_path)
    dm = TUDataModule("TOY", root=str(tmp_path), batch_size=3, augment="none")
    assert len(dm) == 3 and dm.num_classes == 2
    assert dm.num_features == 3 + 1  # largest degree 3
    for gid, deg in degrees.items():
        x = dm.dataset[gid].x
        ref = torch.zeros(len(deg), 4)
        for v, d in enumerate(deg):
            ref[v, d] = 1.0
        assert torch.equal(x, ref)
    a, b = next(iter(dm.train_dataloader()))
    assert a.x.size(1) == 4 and b.num_graphs == 3
    capped = TUDataModule("TOY", root=str(tmp_path), max_degree_cap=2)
    assert capped.num_features == 3
    assert isinstance(capped.feature_transform, CappedOneHotDegree)
    star = capped.dataset[1].x
    assert torch.equal(star[0], torch.tensor([0.0, 0.0, 1.0]))  # degree 3 clamped to 2


def _dense_gin_reference(enc, x, edge_index, batch, num_graphs):
    """GIN forward written densely: h <- BN(ReLU(MLP((I + A) h))), BN with batch statistics,
    then a per-graph loop sum of every layer, concatenated."""
    n = x.size(0)
    adj = torch.zeros(n, n)
    for e in range(edge_index.size(1)):
        j, i = edge_index[:, e].tolist()
        adj[i, j] += 1.0
    h = x
    layers = []
    for conv, norm in zip(enc.convs, enc.norms):
        lin1, lin2 = conv.nn[0], conv.nn[2]
        z = h + adj @ h
        z = torch.relu(z @ lin1.weight.t() + lin1.bias) @ lin2.weight.t() + lin2.bias
        z = torch.relu(z)
        mean, var = z.mean(0), z.var(0, unbiased=False)
        h = (z - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
        layers.append(h)
    out = torch.zeros(num_graphs, enc.out_channels)
    for g in range(num_graphs):
        for l, h_l in enumerate(layers):
            s = torch.zeros(h_l.size(1))
            for v in range(n):
                if int(batch[v]) == g:
                    s = s + h_l[v]
            out[g, l * h_l.size(1):(l + 1) * h_l.size(1)] = s
    return out, torch.cat(layers, dim=1)


def test_gin_encoder_matches_dense_reference():
    torch.manual_seed(0)
    graphs = []
    for k, n in enumerate([5, 7, 4]):
        ei = torch.randint(0, n, (2, 2 * n))
        graphs.append(Data(x=torch.randn(n, 6), edge_index=ei))
    batch = Batch.from_data_list(graphs)
    enc = GINEncoder(6, hidden_channels=8, num_layers=3).train()
    assert enc.out_channels == 24
    g, nodes = enc.forward_data(batch, return_node_embeddings=True)
    assert g.shape == (3, 24) and nodes.shape == (16, 24)
    ref_g, ref_nodes = _dense_gin_reference(enc, batch.x, batch.edge_index, batch.batch, 3)
    assert torch.allclose(g, ref_g, atol=1e-4)
    assert torch.allclose(nodes, ref_nodes, atol=1e-5)
    # mean pooling: the sum divided by the graph sizes
    enc_mean = GINEncoder(6, hidden_channels=8, num_layers=3, pooling="mean").train()
    enc_mean.load_state_dict(enc.state_dict())
    sizes = torch.tensor([5.0, 7.0, 4.0]).view(-1, 1)
    assert torch.allclose(enc_mean.forward_data(batch), ref_g / sizes, atol=1e-4)
    # a single graph without a batch vector
    enc.eval()
    single = enc(graphs[0].x, graphs[0].edge_index)
    assert single.shape == (1, 24)
    assert torch.allclose(single, enc.forward_data(Batch.from_data_list(graphs))[:1], atol=1e-5)


def test_gin_encoder_on_mutag_and_errors(mutag):
    enc = GINEncoder(mutag.num_features, 32, 3)
    v1, v2 = next(iter(mutag.train_dataloader()))
    assert enc.forward_data(v1).shape == (32, 96)
    with pytest.raises(ValueError, match=r"in_channels"):
        enc(torch.randn(4, 3), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="pooling must be one of"):
        GINEncoder(7, pooling="attention")
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        GINEncoder(7, num_layers=0)


# ----------------------------------------------------------------------------- data safety
def test_prepare_never_overwrites_user_files(tmp_path):
    raw = prepare_grakel_tu("MUTAG", tmp_path)
    labels = raw / "MUTAG_graph_labels.txt"
    lines = labels.read_text().split("\n")
    lines[0] = "1" if lines[0] == "-1" else "-1"  # the user relabels graph 1: a different size
    edited = "\n".join(lines).encode()
    labels.write_bytes(edited)
    assert labels.stat().st_size != (GRAKEL_DATA / "MUTAG" / labels.name).stat().st_size
    # nothing missing: the edited file is kept
    prepare_grakel_tu("MUTAG", tmp_path)
    assert labels.read_bytes() == edited
    # a required file missing + an edited one: refuse, copy nothing, leave the edit byte-identical
    (raw / "MUTAG_A.txt").unlink()
    dm = TUDataModule("MUTAG", root=str(tmp_path))
    with pytest.raises(ValueError, match=r"differ from the copy in the grakel wheel \(MUTAG_graph_labels\.txt.*"
                                         r"lacks MUTAG_A\.txt.*never overwrites your files"):
        dm.setup()
    assert labels.read_bytes() == edited
    assert not (raw / "MUTAG_A.txt").exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temporary file left
    # with the user's edit undone, only the missing file is copied, byte-equal to grakel's
    labels.write_bytes((GRAKEL_DATA / "MUTAG" / labels.name).read_bytes())
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    prepare_grakel_tu("MUTAG", tmp_path)
    assert (raw / "MUTAG_A.txt").read_bytes() == (GRAKEL_DATA / "MUTAG" / "MUTAG_A.txt").read_bytes()
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir() if p.name in before} == before


def test_changed_raw_file_invalidates_the_processed_cache(tmp_path):
    _write_toy_tu(tmp_path)
    dm = TUDataModule("TOY", root=str(tmp_path), augment="none")
    dm.prepare_data()
    assert dm.labels.tolist() == [0, 1, 0]
    assert dm.dataset[2].num_nodes == 2
    # the user edits the raw files: graph 3 gets a third node and a new label
    raw = tmp_path / "TOY" / "raw"
    (raw / "TOY_graph_labels.txt").write_text("0\n1\n1\n")
    (raw / "TOY_graph_indicator.txt").write_text("\n".join(["1"] * 3 + ["2"] * 4 + ["3"] * 3) + "\n")
    (raw / "TOY_A.txt").write_text((raw / "TOY_A.txt").read_text() + "9, 10\n10, 9\n")
    fresh = TUDataModule("TOY", root=str(tmp_path), augment="none")
    assert fresh.labels.tolist() == [0, 1, 1]  # the new content, not the stale cache
    assert fresh.dataset[2].num_nodes == 3
    assert sorted(fresh.dataset[2].edge_index.t().tolist()) == [[0, 1], [1, 0], [1, 2], [2, 1]]
    caches = sorted(p.name for p in (tmp_path / "TOY" / "processed").iterdir())
    assert len(caches) == 2 and fresh.dataset.fingerprint in caches
    # unchanged raw files reuse their cache (same fingerprint, nothing re-processed)
    again = TUDataModule("TOY", root=str(tmp_path), augment="none")
    assert again.dataset.fingerprint == fresh.dataset.fingerprint and again.labels.tolist() == [0, 1, 1]


def _toy_error(tmp_path, edit):
    """Write the toy dataset, apply ``edit(raw)``, and return the ValueError TUDataModule raises."""
    _write_toy_tu(tmp_path)
    edit(tmp_path / "TOY" / "raw")
    with pytest.raises(ValueError) as err:
        TUDataModule("TOY", root=str(tmp_path), augment="none").setup()
    return str(err.value)


def _append(name, text):
    return lambda raw: (raw / name).write_text((raw / name).read_text() + text)


@pytest.mark.parametrize("edit, expected", [
    # nodes 3 (graph 1) and 4 (graph 2): the edge added on line 13 crosses two graphs
    (_append("TOY_A.txt", "3, 4\n"),
     r"TOY_A\.txt, line 13: edge 3, 4 joins node 3 of graph 1 and node 4 of graph 2"),
    (_append("TOY_A.txt", "9, 10\n"), r"TOY_A\.txt, line 13: edge 9, 10 names a node outside 1\.\.9"),
    (_append("TOY_A.txt", "0, 1\n"), r"TOY_A\.txt, line 13: edge 0, 1 names a node outside 1\.\.9"),
    (_append("TOY_A.txt", "1; 2\n"), r"TOY_A\.txt, line 13: '1; 2' is not an edge"),
    (_append("TOY_A.txt", "1, 2, 3\n"), r"TOY_A\.txt, line 13: 3 values, but line 1 has 2"),
    (lambda raw: (raw / "TOY_A.txt").write_text("1, 2\n2, 1"),
     r"TOY_A\.txt: the file does not end with a newline"),
    (lambda raw: (raw / "TOY_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n2\n2\n3\n1\n"),
     r"TOY_graph_indicator\.txt, line 9: graph id 1 after 3"),
    (lambda raw: (raw / "TOY_graph_indicator.txt").write_text("1\n1\n1\n3\n3\n3\n3\n4\n4\n"),
     r"TOY_graph_indicator\.txt: graph 2 has no node"),
    (lambda raw: (raw / "TOY_graph_labels.txt").write_text("0\n1\n"),
     r"TOY_graph_labels\.txt: 2 lines, but the dataset has 3 graphs"),
    (lambda raw: (raw / "TOY_node_labels.txt").write_text("0\n" * 8),
     r"TOY_node_labels\.txt: 8 lines, but the dataset has 9 nodes"),
    (lambda raw: (raw / "TOY_edge_labels.txt").write_text("0\n" * 11),
     r"TOY_edge_labels\.txt: 11 lines, but the dataset has 12 edges"),
    (lambda raw: (raw / "TOY_graph_labels.txt").write_text("0\n1.5\n0\n"),
     r"TOY_graph_labels\.txt, line 2: '1\.5' is not a label"),
], ids=["cross-graph edge", "node id > N", "node id 0", "bad separator", "three ids", "no final newline",
        "unsorted indicator", "empty graph", "graph label count", "node label count", "edge label count",
        "fractional label"])
def test_bad_tu_files_are_reported_with_file_and_line(tmp_path, edit, expected):
    msg = _toy_error(tmp_path, edit)
    assert re.search(expected, msg), msg
    assert str(tmp_path / "TOY" / "raw") in msg  # the full path of the file


def test_check_tu_files_counts(tmp_path):
    _write_toy_tu(tmp_path)
    assert check_tu_files("TOY", tmp_path) == {"num_nodes": 9, "num_edges": 12, "num_graphs": 3}
    raw = prepare_grakel_tu("MUTAG", tmp_path)
    lines = lambda s: len((raw / f"MUTAG_{s}.txt").read_text().split("\n")) - 1  # noqa: E731
    assert check_tu_files("MUTAG", tmp_path) == {
        "num_nodes": lines("graph_indicator"), "num_edges": lines("A"), "num_graphs": lines("graph_labels")}


def test_standardize_node_attr_against_the_raw_file(tu_root):
    dm = TUDataModule("Cuneiform", root=str(tu_root), use_node_attr=True, standardize_node_attr=True,
                      augment="attr_mask", seed=0)
    raw_dm = TUDataModule("Cuneiform", root=str(tu_root), use_node_attr=True)
    x = torch.cat([g.x for g in dm.dataset])  # copies the raw files from the grakel wheel
    x_raw = torch.cat([g.x for g in raw_dm.dataset])
    # independent reference: the attribute file itself, z-scored column by column in a loop
    rows = [[float(v) for v in line.split(",")]
            for line in (tu_root / "Cuneiform" / "raw" / "Cuneiform_node_attributes.txt").read_text().splitlines()
            if line.strip()]
    a = len(rows[0])
    ref = torch.zeros(len(rows), a, dtype=torch.float64)
    for f in range(a):
        col = [r[f] for r in rows]
        mu = sum(col) / len(col)
        sd = (sum((c - mu) ** 2 for c in col) / len(col)) ** 0.5
        for i, c in enumerate(col):
            ref[i, f] = (c - mu) / sd
    assert x.shape == x_raw.shape and dm.num_features == raw_dm.num_features
    assert torch.allclose(x[:, :a].double(), ref, atol=1e-4)
    assert torch.equal(x[:, a:], x_raw[:, a:])  # node-label one-hots untouched
    assert x_raw[:, :a].abs().max() > 5  # the raw attributes are not on a unit scale
    v1, _ = next(iter(dm.train_dataloader()))  # the training views are standardised too
    assert v1.x[:, :a].abs().max() < 10
    with pytest.raises(ValueError, match="needs use_node_attr=True"):
        TUDataModule("Cuneiform", root=str(tu_root), standardize_node_attr=True)
    with pytest.raises(ValueError, match="has no continuous node attributes"):
        TUDataModule("MUTAG", root=str(tu_root), use_node_attr=True, standardize_node_attr=True).setup()
