"""No host synchronisation in the contrastive losses' forward and backward (value checks off).

On CUDA a host sync comes from reading a tensor value on the host (``.item()``, ``bool(t)``,
``int(t)``, ``.tolist()``: the ATen op ``_local_scalar_dense``) or from an op whose output shape
depends on the data (``nonzero``, ``masked_select``, boolean-mask indexing, ``unique``).
``tests/sync_counter.py`` (a ``TorchDispatchMode``, shared with ``test_host_sync.py``) sees every ATen op
of the call, also on CPU, so these tests fail on any such op without a GPU.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from sync_counter import count_syncs  # noqa: E402  (the one sync detector of the tests)

from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss  # noqa: E402
from graphneg.validation import value_checks  # noqa: E402


def _batch(b=6, d=5, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, requires_grad=True)
    z2 = torch.randn(b, d, generator=g, requires_grad=True)
    neg = torch.randn(m, d, generator=g, requires_grad=True)
    return z1, z2, neg, torch.tensor([0, 1, 2, 0, 1, 3]), torch.tensor([2, 0, 4])


LOSSES = {
    "infonce": lambda: InfoNCELoss(),
    "dcl": lambda: DebiasedContrastiveLoss(),
    "hcl": lambda: HCLLoss(beta=1.0),
    "hcl_beta0": lambda: HCLLoss(beta=0.0),
    "unremix_default": lambda: UnReMixLoss(k=3),
    "unremix_all": lambda: UnReMixLoss(k=None, uncertainty="pseudo_label"),
    "unremix_density": lambda: UnReMixLoss(k=2, representativeness="density", detach_scores=False),
}


@pytest.mark.parametrize("form", ["views", "labels_and_extras", "pygcl"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_forward_and_backward_have_no_host_sync(name, form):
    z1, z2, neg, labels, neg_labels = _batch()
    loss = LOSSES[name]()
    with value_checks(False), count_syncs() as rep:
        if form == "views":
            out = loss(z1, z2)
        elif form == "labels_and_extras":
            out = loss(z1, z2, labels, neg=neg, neg_labels=neg_labels)
        else:
            eye = torch.eye(6)
            out = loss(anchor=z1, sample=torch.cat([z2, z1]), pos_mask=torch.cat([eye, 0 * eye], 1),
                       neg_mask=torch.cat([1 - eye, 1 - eye], 1))
        out.backward()
    assert len(rep) == 0, rep.message()
    assert torch.isfinite(out.detach()) and torch.isfinite(z1.grad).all()


def test_the_detector_sees_host_reads():
    """The detector is not blind: .item(), bool(), boolean indexing and nonzero are all caught."""
    x = torch.randn(4)
    with count_syncs() as rep:
        x.sum().item()
        bool(x[0] > 0)
        x[x > 0]
        torch.nonzero(x)
    assert len(rep) >= 4, rep.message()
    with value_checks(True), count_syncs() as on:  # with value checks the losses do read values
        UnReMixLoss(k=3)(*_batch()[:2], _batch()[3])
    assert len(on) > 0
