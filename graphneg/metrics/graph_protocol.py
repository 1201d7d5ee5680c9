"""Graph-level evaluation protocol of InfoGraph / GraphCL / HCL: frozen embeddings -> SVC with
stratified k-fold cross-validation and an inner grid search over ``C``."""
from __future__ import annotations

import warnings
from typing import Dict, Sequence, Union

import numpy as np
import torch

__all__ = ["svc_protocol", "stratified_half", "layer_readout"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def _to_numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def svc_protocol(embeddings: ArrayLike, labels: ArrayLike, folds: int = 10,
                 C_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1, 10, 100, 1000), seed: int = 0,
                 search: bool = True, kernel: str = "rbf", inner_folds: int = 5,
                 n_jobs: Union[int, None] = None, scale: bool = False) -> Dict[str, object]:
    r"""Accuracy of an SVC on frozen graph embeddings, ``folds``-fold stratified cross-validation.

    Source: InfoGraph (Sun et al., ICLR 2020, Sec. 5.1) and its official ``evaluate_embedding.py``
    ``svc_classify``, unchanged in HCL (``graph/evaluate_embedding.py``) and GraphCL: labels are
    encoded with ``LabelEncoder``; ``StratifiedKFold(10, shuffle=True)``; on every training split a
    ``GridSearchCV(SVC(), {"C": [1e-3, ..., 1e3]}, cv=5, scoring="accuracy")`` picks ``C`` and the
    refitted classifier is scored on the held-out fold. The reference builds ``SVC()`` with
    scikit-learn's default kernel, i.e. **RBF** (``gamma="scale"``), not a linear one; ``kernel``
    defaults to ``"rbf"`` for that reason (pass ``"linear"`` for a linear SVM). No feature scaling,
    as in the reference. ``search=False`` uses ``SVC(C=10)`` as the reference does.

    ``scale=True`` (an option, not the reference) standardises every embedding dimension before
    the SVC, ``x' = (x - mean) / std`` with the mean and the population std (``ddof=0``) of the
    **training split only** (scikit-learn ``StandardScaler`` in a ``Pipeline`` refitted inside every
    outer and inner fold, so no statistic of a held-out graph is used; a constant dimension keeps
    std 1). Useful when a few dimensions dominate the RBF distance (e.g. sum-pooled readouts of
    unscaled node attributes); GraphCL / InfoGraph do not scale.

    Choices the reference leaves open (documented): the outer and inner splits are shuffled with
    ``random_state=seed`` (reproducible; the reference uses ``random_state=None``); ``std`` is the
    population standard deviation (``ddof=0``) of the fold accuracies.

    Small classes: stratification needs every class in every fold. If the smallest class has
    ``m < folds`` members, ``folds`` is reduced to ``m`` with a ``UserWarning`` (e.g. Cuneiform,
    classes of 8); the inner grid search likewise uses at most as many folds as the smallest
    class of the training split holds (at least 2). A class with a single member raises
    ``ValueError``.

    Args:
        embeddings: ``[N, D]`` array or tensor.
        labels: ``[N]`` class labels (any hashable values).
        folds: outer folds (10 in the protocol).
        C_grid: grid of ``C`` values searched on each training split.
        seed: random state of the fold shuffles.
        search: run the inner grid search (``False``: fixed ``C=10``).
        kernel: SVC kernel (``"rbf"`` as the reference, or ``"linear"``, ...).
        inner_folds: folds of the inner grid search (5 in the reference).
        n_jobs: passed to ``GridSearchCV``.
        scale: standardise the embeddings per dimension on each training split (see above).

    Returns:
        ``{"mean": float, "std": float, "accs": list of per-fold accuracies, "folds": int,
        "C": list of the chosen C per fold}``.
    """
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, StandardScaler
    from sklearn.svm import SVC

    x = _to_numpy(embeddings)
    y_raw = _to_numpy(labels)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape [N, D], got {tuple(x.shape)}")
    if y_raw.ndim == 2 and y_raw.shape[1] == 1:
        y_raw = y_raw.reshape(-1)
    if y_raw.ndim != 1 or y_raw.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must be a vector with one entry per embedding row: expected shape [{x.shape[0]}], "
            f"got {tuple(y_raw.shape)}"
        )
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or Inf values; check the encoder")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if isinstance(inner_folds, bool) or not isinstance(inner_folds, int) or inner_folds < 2:
        raise ValueError(f"inner_folds must be an integer >= 2, got {inner_folds!r}")
    if not isinstance(scale, bool):
        raise ValueError(f"scale must be True or False, got {scale!r}")
    C_grid = [float(c) for c in C_grid]
    if search and (len(C_grid) == 0 or any(c <= 0 for c in C_grid)):
        raise ValueError(f"C_grid must hold positive values, got {C_grid}")

    y = LabelEncoder().fit_transform(y_raw)
    counts = np.bincount(y)
    if counts.size < 2:
        raise ValueError("labels hold a single class; the SVC protocol needs at least two classes")
    smallest = int(counts.min())
    if smallest < 2:
        rare = LabelEncoder().fit(y_raw).classes_[counts < 2].tolist()
        raise ValueError(
            f"class(es) {rare} have a single member; stratified cross-validation needs at least 2 "
            "per class: drop those graphs or merge the classes"
        )
    if smallest < folds:
        warnings.warn(
            f"svc_protocol: the smallest class has {smallest} members < folds={folds}; using "
            f"{smallest} stratified folds instead", UserWarning, stacklevel=2,
        )
        folds = smallest

    def svc(**params):
        """A fresh SVC, behind a per-split StandardScaler with ``scale=True``."""
        model = SVC(kernel=kernel, **params)
        return make_pipeline(StandardScaler(), model) if scale else model

    c_name = "svc__C" if scale else "C"  # C's name for GridSearchCV (pipeline step "svc")
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    accs, chosen = [], []
    for train_idx, test_idx in outer.split(x, y):
        x_tr, y_tr = x[train_idx], y[train_idx]
        if search:
            train_counts = np.bincount(y_tr)
            present = train_counts[train_counts > 0]
            k_inner = max(2, min(inner_folds, int(present.min())))
            inner = StratifiedKFold(n_splits=k_inner, shuffle=True, random_state=seed)
            clf = GridSearchCV(svc(), {c_name: C_grid}, cv=inner, scoring="accuracy", n_jobs=n_jobs)
            with warnings.catch_warnings():
                # a class with one training member cannot appear in every inner fold
                warnings.filterwarnings("ignore", message="The least populated class")
                clf.fit(x_tr, y_tr)
            chosen.append(float(clf.best_params_[c_name]))
        else:
            clf = svc(C=10.0)
            clf.fit(x_tr, y_tr)
            chosen.append(10.0)
        accs.append(float(accuracy_score(y[test_idx], clf.predict(x[test_idx]))))
    accs_arr = np.asarray(accs)
    return {"mean": float(accs_arr.mean()), "std": float(accs_arr.std()), "accs": accs,
            "folds": folds, "C": chosen}


def stratified_half(labels: ArrayLike, seed: int = 12345) -> torch.Tensor:
    """Sorted indices of a fixed stratified half of the samples: for every class (in sorted order) a
    random permutation of its members (one ``torch.Generator`` seeded with ``seed``, drawn class after
    class) and its first ``ceil(n_c / 2)`` members. Reconstructed: the validation split on which the
    UnReMix study (``experiments/unremix_study.py``) chose its graph recipes, so that the choice never
    sees the other half's SVC folds."""
    labels = torch.as_tensor(_to_numpy(labels))
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {tuple(labels.shape)}")
    g = torch.Generator().manual_seed(int(seed))
    idx = []
    for c in labels.unique():
        members = (labels == c).nonzero(as_tuple=True)[0]
        members = members[torch.randperm(members.numel(), generator=g)]
        idx.append(members[: (members.numel() + 1) // 2])
    return torch.cat(idx).sort().values


def layer_readout(embeddings: ArrayLike, num_layers: int, readout: str = "concat"):
    """The part of a concatenated per-layer readout ``[N, L * H]`` (GIN / InfoGraph / GraphCL encoders,
    :class:`graphneg.models.GINEncoder`: layer ``l``'s pooled output in columns ``l*H .. (l+1)*H``) handed
    to :func:`svc_protocol`: ``"concat"`` all of it (the reference, InfoGraph Eq. 3-4), ``"last"`` the last
    layer's ``H`` columns; ``"layer<i>"`` (0-based) the readout of layer ``i``."""
    width = embeddings.shape[1]
    if num_layers < 1 or width % num_layers:
        raise ValueError(f"num_layers={num_layers} does not divide the embedding width {width}; pass the "
                         "encoder's num_layers")
    h = width // num_layers
    if readout == "concat":
        return embeddings
    if readout == "last":
        return embeddings[:, width - h:]
    if readout.startswith("layer") and readout[5:].isdigit() and int(readout[5:]) < num_layers:
        i = int(readout[5:])
        return embeddings[:, i * h:(i + 1) * h]
    raise ValueError(f"readout must be 'concat', 'last' or 'layer<i>' with i < {num_layers}, got {readout!r}")
