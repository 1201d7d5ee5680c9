"""SVC protocol of InfoGraph / HCL: separable data, chance level, agreement with a direct
scikit-learn re-derivation, small-class handling."""
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from graphneg.metrics.graph_protocol import svc_protocol


def _blobs(n_per_class=20, classes=3, dim=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 5
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_separable_embeddings_near_one():
    x, y = _blobs()
    res = svc_protocol(torch.tensor(x, dtype=torch.float32), torch.tensor(y), folds=5,
                       C_grid=(0.1, 1, 10), seed=0)
    assert res["mean"] >= 0.95
    assert len(res["accs"]) == 5 and res["folds"] == 5
    assert res["std"] == pytest.approx(float(np.std(res["accs"])))
    lin = svc_protocol(x, y, folds=5, C_grid=(1,), kernel="linear")
    assert lin["mean"] >= 0.95


def test_random_labels_near_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(160, 10))
    y = rng.integers(0, 2, size=160)
    res = svc_protocol(x, y, folds=4, C_grid=(0.1, 1, 10), seed=0)
    assert abs(res["mean"] - 0.5) < 0.12


def test_matches_direct_sklearn_protocol():
    x, y = _blobs(n_per_class=15, classes=2, spread=8.0, seed=2)  # overlapping: accuracy < 1
    labels = np.where(y == 1, 7, -1)  # arbitrary label values, encoded internally
    # fixed C (search=False): the reference's SVC(C=10) on shuffled stratified folds
    res = svc_protocol(x, labels, folds=5, seed=3, search=False)
    ref = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=3).split(x, y):
        ref.append(accuracy_score(y[te], SVC(C=10).fit(x[tr], y[tr]).predict(x[te])))
    assert res["accs"] == pytest.approx(ref)
    assert res["mean"] == pytest.approx(np.mean(ref))
    assert res["mean"] < 1.0
    # one-value grid: the search can only pick it
    one = svc_protocol(x, labels, folds=5, seed=3, C_grid=(0.5,))
    ref_half = [accuracy_score(y[te], SVC(C=0.5).fit(x[tr], y[tr]).predict(x[te]))
                for tr, te in StratifiedKFold(5, shuffle=True, random_state=3).split(x, y)]
    assert one["accs"] == pytest.approx(ref_half) and one["C"] == [0.5] * 5


def test_small_classes_reduce_folds_or_raise():
    x, y = _blobs(n_per_class=12, classes=2, seed=4)
    x = np.concatenate([x, x[:3] + 20.0])
    y = np.concatenate([y, [2, 2, 2]])  # a class of 3 members
    with pytest.warns(UserWarning, match="smallest class has 3 members"):
        res = svc_protocol(x, y, folds=10, C_grid=(1,))
    assert res["folds"] == 3 and len(res["accs"]) == 3
    y_single = y.copy()
    y_single[-1] = 5
    with pytest.raises(ValueError, match=r"class\(es\) \[5\] have a single member"):
        svc_protocol(x, y_single, folds=3, C_grid=(1,))
    with pytest.raises(ValueError, match="one entry per embedding row"):
        svc_protocol(x, y[:-1])
    with pytest.raises(ValueError, match="single class"):
        svc_protocol(x, np.zeros(len(x), dtype=int))
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        svc_protocol(x, y, folds=1)


def test_scale_standardises_on_the_training_split_only():
    # one informative dimension drowned by a huge uninformative one: unscaled RBF fails, scaled works
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 20)
    x = np.stack([y + 0.1 * rng.normal(size=40), 1e4 * rng.normal(size=40)], axis=1)
    res = svc_protocol(x, y, folds=5, seed=0, search=False, scale=True)
    # reference: hand-written z-scoring with the training fold's mean and population std
    ref = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        mu, sd = x[tr].mean(0), x[tr].std(0)
        clf = SVC(C=10).fit((x[tr] - mu) / sd, y[tr])
        ref.append(accuracy_score(y[te], clf.predict((x[te] - mu) / sd)))
    assert res["accs"] == pytest.approx(ref)
    assert res["mean"] >= 0.95
    assert svc_protocol(x, y, folds=5, seed=0, search=False)["mean"] < 0.8
    # with the grid search the chosen C is reported as for the unscaled protocol
    grid = svc_protocol(x, y, folds=5, seed=0, C_grid=(0.1, 10), scale=True)
    assert set(grid["C"]) <= {0.1, 10.0} and grid["mean"] >= 0.95
    with pytest.raises(ValueError, match="scale must be True or False"):
        svc_protocol(x, y, scale="yes")


def test_stratified_half_against_a_loop():
    from graphneg.metrics.graph_protocol import stratified_half

    labels = torch.tensor([2, 0, 1, 0, 2, 2, 0, 1, 0, 2, 2])
    got = stratified_half(labels, seed=7)
    # reference: one generator, classes in sorted order, first ceil(n/2) of each class's permutation
    g = torch.Generator().manual_seed(7)
    ref = []
    for c in (0, 1, 2):
        members = [i for i, y in enumerate(labels.tolist()) if y == c]
        perm = torch.randperm(len(members), generator=g).tolist()
        ref += [members[p] for p in perm[: (len(members) + 1) // 2]]
    assert got.tolist() == sorted(ref)
    assert [int((labels[got] == c).sum()) for c in (0, 1, 2)] == [2, 1, 3]  # ceil(4/2), ceil(2/2), ceil(5/2)
    assert got.tolist() == stratified_half(labels.numpy(), seed=7).tolist()
    with pytest.raises(ValueError, match="labels must be 1-D"):
        stratified_half(labels.view(1, -1))


def test_layer_readout_slices_the_concatenated_layers():
    from graphneg.metrics.graph_protocol import layer_readout

    emb = torch.arange(2 * 6.0).view(2, 6)  # 3 layers x 2 channels
    assert layer_readout(emb, 3) is emb
    assert layer_readout(emb, 3, "last").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert layer_readout(emb, 3, "layer1").tolist() == [[2.0, 3.0], [8.0, 9.0]]
    with pytest.raises(ValueError, match="does not divide"):
        layer_readout(emb, 4)
    with pytest.raises(ValueError, match="readout must be"):
        layer_readout(emb, 3, "layer3")
