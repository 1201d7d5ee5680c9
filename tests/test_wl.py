"""graphneg.metrics.wl: the explicit WL subtree feature map against hand-computed counts, and its reader of
PyG graphs."""
import numpy as np
import pytest
import torch

from graphneg.metrics.wl import wl_features, wl_graphs


def test_wl_features_hand_computed():
    # path a-b-a (labels 0,1,0) and a triangle a,a,b; one refinement round
    path = ([0, 1, 0], [(0, 1), (1, 2)])
    tri = ([0, 0, 1], [(0, 1), (1, 2), (2, 0), (1, 0)])  # a repeated edge in the other direction
    x = wl_features([path, tri], rounds=1)
    # round 0: labels 0 and 1; round 1 path: (0,(1,)) x2, (1,(0,0)) x1;
    # triangle: (0,(0,1)) x2, (1,(0,0)) x1 -> shared label (1,(0,0))
    assert x.shape == (2, 5)
    ref = {"r0_0": (2, 2), "r0_1": (1, 1), "r1_0_1": (2, 0), "r1_1_00": (1, 1), "r1_0_01": (0, 2)}
    assert sorted(map(tuple, x.T.astype(int).tolist())) == sorted(ref.values())
    assert x.sum(1).tolist() == [6, 6]  # every node counted once per round
    assert wl_features([path], rounds=0).tolist() == [[2, 1]]
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        wl_features([path], rounds=-1)
    with pytest.raises(ValueError, match=r"graphs\[0\]: edge \(0, 3\)"):
        wl_features([([0, 1], [(0, 3)])], rounds=1)
    # isomorphic graphs get equal counts
    perm = ([0, 0, 1], [(0, 2), (2, 1)])  # path with the middle node relabelled to index 2
    assert np.array_equal(wl_features([path, perm], 2)[0], wl_features([path, perm], 2)[1])
    # a self-loop is ignored: the single node keeps an empty neighbour multiset
    assert wl_features([([5], [(0, 0)])], 1).tolist() == [[1, 1]]


def test_wl_graphs_reads_one_hot_labels_and_edges():
    from torch_geometric.data import Data

    g = Data(x=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), edge_index=torch.tensor([[0, 1], [1, 2]]))
    assert wl_graphs([g]) == [([0, 1, 0], [[0, 1], [1, 2]])]
    # the same path as hand-written tuples gives the same features
    assert np.array_equal(wl_features(wl_graphs([g]), 2), wl_features([([0, 1, 0], [(0, 1), (1, 2)])], 2))
    with pytest.raises(ValueError, match="no \\[N, F\\] node features"):
        wl_graphs([Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)])
