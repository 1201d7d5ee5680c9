"""Two processes on gloo: gradients through graphneg.distributed.gather equal the single-process run
(lightly's distributed-test pattern)."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from graphneg.distributed import gather, is_distributed
from graphneg.losses import InfoNCELoss

pytestmark = pytest.mark.distributed
WORLD, B, D = 2, 4, 5


def loss_fn(z1_local, z2_local, z1_all, z2_all, rank):
    """InfoNCE of the local anchors whose extra negatives are the other processes' samples."""
    others = torch.ones(z1_all.size(0), dtype=torch.bool)
    others[rank * B:(rank + 1) * B] = False
    neg = torch.cat([z1_all[others], z2_all[others]])
    return InfoNCELoss(temperature=0.5)(z1_local, z2_local, neg=neg)


def _worker(rank, init_file, data, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        z1 = data[0][rank * B:(rank + 1) * B].clone().requires_grad_(True)
        z2 = data[1][rank * B:(rank + 1) * B].clone().requires_grad_(True)
        assert is_distributed()
        loss = loss_fn(z1, z2, gather(z1), gather(z2), rank)
        (loss / WORLD).backward()  # DDP's average over processes
        torch.save({"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gather_gradients_match_single_process(tmp_path):
    torch.manual_seed(0)
    data = torch.randn(2, WORLD * B, D, dtype=torch.float64)
    mp.spawn(_worker, args=(str(tmp_path / "init"), data, str(tmp_path)), nprocs=WORLD, join=True)
    # single process: the same objective, mean over the per-rank losses, computed on the full batch
    z1, z2 = data[0].clone().requires_grad_(True), data[1].clone().requires_grad_(True)
    losses = [loss_fn(z1[r * B:(r + 1) * B], z2[r * B:(r + 1) * B], z1, z2, r) for r in range(WORLD)]
    torch.stack(losses).mean().backward()
    for r in range(WORLD):
        res = torch.load(tmp_path / f"{r}.pt")
        torch.testing.assert_close(res["loss"], losses[r].detach())
        torch.testing.assert_close(res["g1"], z1.grad[r * B:(r + 1) * B])
        torch.testing.assert_close(res["g2"], z2.grad[r * B:(r + 1) * B])
    # without the gathered gradient the result would differ: the negatives' gradient is not negligible
    z1d = data[0].clone().requires_grad_(True)
    z2d = data[1].clone().requires_grad_(True)
    loss_fn(z1d[:B], z2d[:B], torch.cat([z1d[:B], z1d[B:].detach()]), torch.cat([z2d[:B], z2d[B:].detach()]),
            0).backward()
    assert not torch.allclose(z1d.grad[:B] / WORLD, z1.grad[:B])


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    assert gather(x) is x and not is_distributed()
