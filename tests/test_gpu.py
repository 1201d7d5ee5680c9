"""Device checks, run with `nox -s gpu` (marker `gpu`, deselected by default): the same computation on
CUDA and on CPU gives the same numbers. They fail, not skip, when no CUDA device is present; the
two-rank NCCL test skips (reason stated) on a machine with a single GPU."""
import pytest
import torch

from graphneg.graph import batch_graph
from graphneg.losses import MultiSimilarityLoss, UnReMixLoss
from graphneg.metrics import retrieval_metrics
from graphneg.nn import GCAHNG

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with `nox -s gpu` on one)"
    return torch.device("cuda")


def test_gcahng_and_losses_match_cpu(cuda):
    torch.manual_seed(0)
    gen = GCAHNG(32, num_classes=4, num_layers=2, heads=4, rw=None, dropout=0.0).eval()
    emb, y = torch.randn(24, 32), torch.arange(4).repeat(6)
    out_cpu = gen(emb, y, j_mean=2.0)
    loss_cpu = MultiSimilarityLoss(mining=True)(emb, y, neg_embeddings=out_cpu.x, neg_labels=out_cpu.labels,
                                        anchor_index=out_cpu.anchor_index)
    gen_cuda = gen.to(cuda)
    out_gpu = gen_cuda(emb.to(cuda), y.to(cuda), j_mean=2.0)
    loss_gpu = MultiSimilarityLoss(mining=True)(emb.to(cuda), y.to(cuda), neg_embeddings=out_gpu.x,
                                        neg_labels=out_gpu.labels, anchor_index=out_gpu.anchor_index)
    torch.testing.assert_close(out_gpu.x.cpu(), out_cpu.x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-4, atol=1e-4)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    ur = UnReMixLoss(k=4)
    torch.testing.assert_close(ur(z1.to(cuda), z2.to(cuda)).cpu(), ur(z1, z2), rtol=1e-4, atol=1e-5)


def test_graph_and_retrieval_match_cpu(cuda):
    torch.manual_seed(1)
    x, y = torch.randn(50, 6), torch.randint(0, 5, (50,))
    for mode, k in (("knn", 4), ("knn_negative", 3), ("negative", None)):
        a = batch_graph(x, y, edges=mode, k=k).edge_index
        b = batch_graph(x.to(cuda), y.to(cuda), edges=mode, k=k).edge_index.cpu()
        assert torch.equal(a, b), mode
    r_cpu = retrieval_metrics(x, y, nmi=False)
    r_gpu = retrieval_metrics(x.to(cuda), y.to(cuda), nmi=False)
    assert r_cpu == pytest.approx(r_gpu)


def test_ddp_nccl_two_gpus_match_single_process(tmp_path):
    """The gloo cases of tests/test_distributed.py on NCCL, one rank per GPU (what Lightning's
    ``--trainer.strategy ddp --trainer.devices 2`` runs): gathered losses and DDP-averaged gradients equal
    one process on the whole batch, for equal and unequal local batch sizes."""
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with `nox -s gpu` on one)"
    if torch.cuda.device_count() < 2:
        pytest.skip(f"DDP over NCCL needs 2 CUDA devices, found {torch.cuda.device_count()} (NCCL cannot "
                    "put two ranks on one GPU); the same cases run on gloo in tests/test_distributed.py")
    import test_distributed as td

    results = td.run_cases(tmp_path, backend="nccl")
    td.check_gather(results)
    for name in td.CONTRASTIVE:
        td.check_contrastive(results, name)
    for name in td.GCA:
        td.check_gca(results, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
def test_losses_under_cuda_autocast_within_tolerance(cuda, dtype):
    """CUDA autocast (Lightning bf16-mixed / 16-mixed): the stated tolerances of graphneg.precision."""
    import test_precision as tp

    for name in tp.LOSSES:
        net, x1, x2 = tp._net_and_data(0)
        ref = tp.LOSSES[name](tp.Y)(net(x1), net(x2))
        net, fn = net.to(cuda), tp.LOSSES[name](tp.Y.to(cuda))
        with torch.autocast("cuda", dtype=dtype):
            z1, z2 = net(x1.to(cuda)), net(x2.to(cuda))
            assert z1.dtype == dtype
            val = fn(z1, z2)
        assert val.dtype == torch.float32, name
        torch.testing.assert_close(val.cpu(), ref, rtol=tp.RTOL[dtype], atol=0, msg=name)
