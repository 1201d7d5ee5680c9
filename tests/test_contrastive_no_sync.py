"""No host synchronisation in the contrastive losses' forward and backward (value checks off).

On CUDA a host sync comes from reading a tensor value on the host (``.item()``, ``bool(t)``,
``int(t)``, ``.tolist()``: the ATen op ``_local_scalar_dense``) or from an op whose output shape
depends on the data (``nonzero``, ``masked_select``, boolean-mask indexing, ``unique``). A
``TorchDispatchMode`` sees every ATen op of the call, also on CPU, so this test records them and
fails on any such op: it runs without a GPU.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss
from graphneg.validation import value_checks

aten = torch.ops.aten
SYNC_OPS = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
    aten.is_nonzero.default, aten.equal.default,
}
SYNC_PACKETS = {aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.repeat_interleave}


class SyncDetector(TorchDispatchMode):
    """Records the ATen ops of a call that need a host read of tensor values."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bool_index = func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()) if i is not None)
        if func in SYNC_OPS or func.overloadpacket in SYNC_PACKETS or bool_index:
            self.syncs.append(str(func))
        return func(*args, **kwargs)


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
    det = SyncDetector()
    with value_checks(False), det:
        if form == "views":
            out = loss(z1, z2)
        elif form == "labels_and_extras":
            out = loss(z1, z2, labels, neg=neg, neg_labels=neg_labels)
        else:
            eye = torch.eye(6)
            out = loss(anchor=z1, sample=torch.cat([z2, z1]), pos_mask=torch.cat([eye, 0 * eye], 1),
                       neg_mask=torch.cat([1 - eye, 1 - eye], 1))
        out.backward()
    assert det.syncs == [], det.syncs
    assert torch.isfinite(out.detach()) and torch.isfinite(z1.grad).all()


def test_the_detector_sees_host_reads():
    """The detector is not blind: .item(), bool(), boolean indexing and nonzero are all caught."""
    x = torch.randn(4)
    det = SyncDetector()
    with det:
        x.sum().item()
        bool(x[0] > 0)
        x[x > 0]
        torch.nonzero(x)
    assert len(det.syncs) >= 4, det.syncs
    with value_checks(True), SyncDetector() as on:  # with value checks the losses do read values
        UnReMixLoss(k=3)(*_batch()[:2], _batch()[3])
    assert on.syncs
