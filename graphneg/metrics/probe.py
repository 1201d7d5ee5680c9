"""Downstream evaluation of frozen embeddings: weighted kNN, linear probe, logistic-regression probe.

* :func:`knn_predict` / :func:`knn_accuracy` / :func:`knn_loo_accuracy` (leave-one-out): the weighted k-nearest-neighbour classifier of Wu et
  al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (CVPR 2018,
  Sec. 3.4): cosine similarities ``s_i`` of a query to its ``k`` nearest training embeddings, weights
  ``alpha_i = exp(s_i / t)``, class score ``w_c = sum_i alpha_i [y_i = c]``, prediction
  ``argmax_c w_c``. This is the online monitor of SimCLR-CIFAR implementations and of HCL (official
  code ``image/main.py`` ``test()``: ``k = 200``, ``t`` = the training temperature ``0.5``; Wu et al.
  use ``t = 0.07``; we default to ``0.1``). Queries are processed in chunks so memory stays
  ``O(chunk_size * N_train)``; the neighbours come from graphneg's one kNN kernel
  (:func:`graphneg.ops.knn.chunked_topk`, ties lowest bank index first).
* :func:`linear_probe`: the linear evaluation protocol (SimCLR Sec. 4 / appendix B.6; HCL
  ``image/linear.py``: a ``Linear`` layer on the frozen encoder trained with Adam, cross-entropy, 100
  epochs, lr 1e-3, weight decay 1e-6, batch 512). Here the layer is trained on *pre-computed*
  embeddings (no augmentation), standardised with the training mean/std, which makes a larger default
  learning rate (1e-2) stable and the result independent of the embedding scale.
* :func:`logistic_probe`: the same protocol solved by scikit-learn's L2-regularised multinomial
  ``LogisticRegression`` (L-BFGS); deterministic, no learning rate to tune, convenient for small
  embedding sets (the graph protocol's SVC is the analogous scikit-learn route).

``knn_accuracy``, ``linear_probe`` and ``logistic_probe`` return the top-1 accuracy on the test
embeddings as a Python float in ``[0, 1]``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from graphneg.ops.knn import chunked_topk
from graphneg.validation import check_embeddings, check_k, check_labels

__all__ = ["knn_predict", "knn_accuracy", "knn_loo_accuracy", "linear_probe", "logistic_probe"]


def _check_pair(train_emb: Tensor, train_labels, test_emb: Tensor, test_labels):
    check_embeddings(train_emb, "train_emb")
    check_embeddings(test_emb, "test_emb")
    if train_emb.size(1) != test_emb.size(1):
        raise ValueError(
            f"train_emb and test_emb must have the same feature size, got {train_emb.size(1)} and "
            f"{test_emb.size(1)}; embed both sets with the same encoder"
        )
    if train_emb.size(0) == 0 or test_emb.size(0) == 0:
        raise ValueError("train_emb and test_emb must hold at least one embedding each")
    train_labels = check_labels(train_labels, train_emb.size(0), "train_labels").to(train_emb.device)
    test_labels = check_labels(test_labels, test_emb.size(0), "test_labels").to(test_emb.device)
    if bool((train_labels < 0).any()) or bool((test_labels < 0).any()):
        raise ValueError(
            "labels must be non-negative class ids; drop unlabeled samples (label -1, e.g. STL-10's "
            "unlabeled split) before evaluating"
        )
    return train_labels.long(), test_labels.long().to(train_emb.device)


def _num_classes(train_labels: Tensor, test_labels: Tensor, num_classes: Optional[int]) -> int:
    found = int(torch.maximum(train_labels.max(), test_labels.max())) + 1
    if num_classes is None:
        return found
    if num_classes < found:
        raise ValueError(f"num_classes={num_classes} but the labels go up to {found - 1}")
    return num_classes


@torch.no_grad()
def knn_predict(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    num_classes: Optional[int] = None,
    exclude_self: bool = False,
) -> Tensor:
    r"""Predicted class ``[M]`` of each query under the weighted kNN rule (Wu et al. 2018, Sec. 3.4).

    For each query ``q``: ``s_j = cos(q, x_j)`` over the training embeddings, keep the ``k`` largest
    (``k`` is capped at ``N_train``), weights ``alpha_j = exp(s_j / temperature)``, class score
    ``w_c = sum_j alpha_j [y_j = c]``, prediction ``argmax_c w_c`` (lowest class id on ties), as HCL's
    ``test()`` (official code ``image/main.py``). Queries are processed ``chunk_size`` at a time, so
    memory is ``O(chunk_size * N_train)``; runs on the device of ``train_emb``.

    Args:
        train_emb: ``[N, D]`` bank embeddings; train_labels: ``[N]`` class ids (``>= 0``).
        test_emb: ``[M, D]`` query embeddings.
        k: number of neighbours (HCL: 200).
        temperature: ``t`` in ``exp(s / t)`` (Wu et al.: 0.07; HCL: 0.5).
        chunk_size: queries per chunk.
        num_classes: number of classes (default: ``max train label + 1``).
        exclude_self: leave-one-out: query ``j`` is bank row ``j`` (``test_emb`` holds the same rows
            as ``train_emb``) and is left out of its own neighbours (``k`` is capped at ``N - 1``);
            see :func:`knn_loo_accuracy`.
    """
    check_embeddings(train_emb, "train_emb")
    check_embeddings(test_emb, "test_emb")
    if train_emb.size(1) != test_emb.size(1):
        raise ValueError(
            f"train_emb and test_emb must have the same feature size, got {train_emb.size(1)} and "
            f"{test_emb.size(1)}; embed both sets with the same encoder"
        )
    if train_emb.size(0) == 0:
        raise ValueError("train_emb must hold at least one embedding")
    train_labels = check_labels(train_labels, train_emb.size(0), "train_labels").to(train_emb.device).long()
    if bool((train_labels < 0).any()):
        raise ValueError(
            "train_labels must be non-negative class ids; drop unlabeled samples (label -1, e.g. "
            "STL-10's unlabeled split) from the kNN bank"
        )
    k = check_k(k, "k")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if exclude_self and test_emb.shape != train_emb.shape:
        raise ValueError(
            f"exclude_self=True (leave-one-out) needs the queries to be the bank itself, got test_emb of shape "
            f"{tuple(test_emb.shape)} and train_emb of shape {tuple(train_emb.shape)}"
        )
    if exclude_self and train_emb.size(0) < 2:
        raise ValueError("leave-one-out kNN (exclude_self=True) needs at least two embeddings")
    device = train_emb.device
    c = _num_classes(train_labels, train_labels, num_classes)
    k = min(k, train_emb.size(0) - int(exclude_self))
    bank = F.normalize(train_emb.float(), dim=1)
    queries = F.normalize(test_emb.float().to(device), dim=1)
    preds = []
    for _, top_sim, top_idx in chunked_topk(  # the one kNN kernel (ties: lowest bank index first)
        queries, bank, k, score="dot", exclude_self=exclude_self, chunk_size=chunk_size
    ):
        weights = (top_sim / temperature).exp()                 # [B, k]
        scores = torch.zeros(top_idx.size(0), c, device=device)
        scores.scatter_add_(1, train_labels[top_idx], weights)  # [B, C]
        preds.append(scores.argmax(dim=1))
    if not preds:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(preds)


def knn_accuracy(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    num_classes: Optional[int] = None,
) -> float:
    r"""Top-1 accuracy in ``[0, 1]`` of the weighted kNN classifier (:func:`knn_predict`).

    Wu et al. 2018, Sec. 3.4; HCL official code ``image/main.py`` ``test()`` (k = 200). Arguments as
    :func:`knn_predict`; ``test_labels``: ``[M]`` class ids.
    """
    train_labels, test_labels = _check_pair(train_emb, train_labels, test_emb, test_labels)
    if num_classes is None:
        num_classes = _num_classes(train_labels, test_labels, None)
    pred = knn_predict(train_emb, train_labels, test_emb, k, temperature, chunk_size, num_classes)
    return float((pred == test_labels).float().mean())


def knn_loo_accuracy(
    embeddings: Tensor,
    labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    num_classes: Optional[int] = None,
) -> float:
    r"""Leave-one-out accuracy in ``[0, 1]`` of the weighted kNN classifier on one labelled set.

    Every embedding is classified by its ``k`` nearest *other* embeddings with the rule of
    :func:`knn_predict` (Wu et al. 2018, Sec. 3.4): ``knn_predict(embeddings, labels, embeddings,
    exclude_self=True)``. The monitor of :class:`graphneg.callbacks.KNNProbe` when no reference
    (training) set is available. ``O(chunk_size * N)`` memory; runs on the embeddings' device.
    """
    check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, embeddings.size(0), "labels").to(embeddings.device).long()
    pred = knn_predict(embeddings, labels, embeddings, k, temperature, chunk_size, num_classes, exclude_self=True)
    return float((pred == labels).float().mean())


def _standardise(train: Tensor, test: Tensor, eps: float = 1e-8):
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, unbiased=False, keepdim=True).clamp_min(eps)
    return (train - mean) / std, (test - mean) / std


def linear_probe(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_labels: Tensor,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-6,
    batch_size: Optional[int] = 512,
    seed: int = 0,
    num_classes: Optional[int] = None,
    standardize: bool = True,
) -> float:
    r"""Top-1 test accuracy of a linear classifier trained on frozen embeddings.

    A ``[D, C]`` linear layer (zero-initialised, so the convex problem's result only depends on
    ``seed`` through the mini-batch order) minimises the cross-entropy with Adam for ``epochs`` passes
    over the standardised training embeddings (HCL ``image/linear.py``: Adam, lr 1e-3, wd 1e-6, 100
    epochs, batch 512 on augmented images; see the module docstring for why lr is 1e-2 here).

    Args:
        train_emb, train_labels, test_emb, test_labels: as :func:`knn_accuracy`.
        epochs: passes over the training set.
        lr, weight_decay: Adam hyper-parameters.
        batch_size: mini-batch size; ``None`` (or ``>= N``) trains full-batch.
        seed: seed of the mini-batch order (a local generator; the global RNG is untouched).
        num_classes: number of classes (default ``max label + 1``).
        standardize: standardise every feature with the training mean / std.

    Returns:
        accuracy in ``[0, 1]``. Runs on the device of ``train_emb``; gradients never reach the inputs.
        Callable in any grad mode (also under ``torch.inference_mode``, e.g. from a Lightning
        evaluation hook): the training runs under ``torch.inference_mode(False)`` and
        ``torch.enable_grad()`` on copies of the inputs.
    """
    train_labels, test_labels = _check_pair(train_emb, train_labels, test_emb, test_labels)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (full batch), got {batch_size!r}")
    device = train_emb.device
    c = _num_classes(train_labels, test_labels, num_classes)
    # The probe is an optimisation of its own: it always runs with autograd on, also when called from
    # an evaluation hook under torch.inference_mode (Lightning's validation / test loops). Inference
    # tensors cannot be saved for backward, so the inputs are copied once outside inference mode.
    with torch.inference_mode(False), torch.enable_grad():
        x_train = train_emb.detach().float().clone()
        x_test = test_emb.detach().float().to(device).clone()
        train_labels = train_labels.clone()
        if standardize:
            x_train, x_test = _standardise(x_train, x_test)
        n, d = x_train.shape
        bs = n if batch_size is None else min(batch_size, n)

        weight = torch.zeros(d, c, device=device, requires_grad=True)
        bias = torch.zeros(c, device=device, requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(device) if bs < n else None
            for start in range(0, n, bs):
                idx = order[start:start + bs] if order is not None else slice(None)
                loss = F.cross_entropy(x_train[idx] @ weight + bias, train_labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    with torch.no_grad():
        pred = (x_test @ weight + bias).argmax(dim=1)
        return float((pred == test_labels).float().mean())


def logistic_probe(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_labels: Tensor,
    C: float = 1.0,
    max_iter: int = 1000,
    standardize: bool = True,
) -> float:
    r"""Top-1 test accuracy of scikit-learn's ``LogisticRegression`` on frozen embeddings.

    Alternative to :func:`linear_probe`: L2-regularised multinomial logistic regression (inverse
    regularisation ``C``), solved to convergence by L-BFGS on the CPU (deterministic, no learning rate
    to tune; suited to embedding sets up to ~1e5 x 2048). Features are standardised with the training
    mean/std (``StandardScaler``) when ``standardize``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_labels, test_labels = _check_pair(train_emb, train_labels, test_emb, test_labels)
    if not C > 0:
        raise ValueError(f"C (inverse regularisation strength) must be > 0, got {C}")
    x_train = train_emb.detach().float().cpu().numpy()
    x_test = test_emb.detach().float().cpu().numpy()
    y_train = train_labels.cpu().numpy()
    y_test = test_labels.cpu().numpy()
    if len(set(y_train.tolist())) < 2:
        raise ValueError("logistic_probe needs at least two classes in train_labels")
    if standardize:
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())
