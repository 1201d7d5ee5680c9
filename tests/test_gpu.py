"""Device checks, run with `nox -s gpu` or experiments/device_check.py (marker `gpu`, deselected by default):
the same computation on CUDA and on the CPU gives the same numbers.

Without CUDA every test skips with that reason. Tolerances (float32 on both devices; TF32 is off for
matmuls by default in PyTorch and these tests assert it stays off):
* exact (``torch.equal``) where the arithmetic is exact: dot products of small-integer embeddings in the
  kNN kernel (ties included: both devices break them lowest index first), edge lists of kNN graphs;
* ``rtol=1e-4, atol=1e-5`` for forward values (different GEMM / reduction orders: float32 rounding,
  ~1e-6 relative, amplified by a few layers);
* ``rtol=1e-3`` and ``atol = 1e-4 * max|grad|`` for gradients (CUDA's ``scatter_add`` / ``index_add``
  accumulate with atomics in a run-dependent order);
* retrieval metrics within 1e-3 absolute (a near-tie swapped by rounding moves one query of thousands);
* autocast: the tolerances of ``graphneg.precision`` (tests/test_precision.py ``RTOL`` / ``RTOL_GCA``).
The two-rank NCCL test skips (reason stated) on a machine with a single GPU.
"""
import copy

import pytest
import torch

from graphneg.graph import batch_graph
from graphneg.losses.gca_hng import generator_loss, node_loss
from graphneg.losses import (
    DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss,
    TripletMarginLoss, UnReMixLoss,
)
from graphneg.metrics import retrieval_metrics
from graphneg.metrics.probe import knn_predict
from graphneg.nn import GCAHNG
from graphneg.nn.generator import COMPACT_DEVICE_TYPES
from graphneg.ops.knn import chunked_topk, knn_index
from test_autocast_backward import check_gca_autocast_step

pytestmark = pytest.mark.gpu

FWD = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the gpu tests compare CUDA with the CPU (run them with `nox -s gpu` "
                    "or experiments/device_check.py on a GPU machine)")
    assert not torch.backends.cuda.matmul.allow_tf32, "TF32 matmuls would change float32 results by ~1e-3"
    return torch.device("cuda")


def assert_grads_close(a, b, name=""):
    assert (a is None) == (b is None), name
    if a is None:
        return
    a = a.detach().cpu()
    scale = b.abs().max().item() if b.numel() else 0.0
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * scale + 1e-8, msg=name)


def _gca_setup(edges="complete", k=None):
    torch.manual_seed(0)
    gen = GCAHNG(32, num_classes=6, num_layers=2, heads=4, rw="chain", dropout=0.0, edges=edges, k=k)
    clf = torch.nn.Linear(32, 6)
    z = torch.randn(18, 32)
    y = torch.arange(6).repeat(3)
    return gen, clf, z, y


def _gca_run(gen, clf, z, y, device):
    gen, clf = gen.to(device), clf.to(device)
    z = z.to(device).requires_grad_(True)
    out = gen(z, y.to(device), j_mean=2.0, generator=torch.Generator().manual_seed(0))
    loss = generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight).total + node_loss(out)
    loss.backward()
    grads = {n: p.grad for n, p in gen.named_parameters()}
    return out, loss.detach(), z.grad, grads


@pytest.mark.parametrize("static_shapes", [None, False])
@pytest.mark.parametrize("edges,k", [("complete", None), ("knn", 4)])
def test_gcahng_step_values_and_gradients_match_cpu(cuda, edges, k, static_shapes):
    """Every layer of the generator (correlation encoder, node attention, edge->node, node->edge, the
    GCA blocks, the lambda head) through one training step: values, and the gradients of each parameter.
    On CUDA the default layout is the padded one (``out.mask``), the CPU's the compact one: the real rows
    and pairs are compared (``compact()``); ``static_shapes=False`` runs the compact layout on CUDA too."""
    gen, clf, z, y = _gca_setup(edges, k)
    gen.static_shapes = static_shapes
    gen_c, clf_c = copy.deepcopy(gen), copy.deepcopy(clf)
    out_cpu, loss_cpu, zg_cpu, g_cpu = _gca_run(gen, clf, z, y, torch.device("cpu"))
    out_gpu, loss_gpu, zg_gpu, g_gpu = _gca_run(gen_c, clf_c, z, y, cuda)
    assert (out_gpu.mask is not None) == (static_shapes is None and cuda.type not in COMPACT_DEVICE_TYPES)
    assert torch.equal(out_gpu.graph.edge_index.cpu(), out_cpu.graph.edge_index)
    real = out_gpu.compact()
    assert torch.equal(real.pairs.hard.cpu(), out_cpu.pairs.hard)
    assert torch.equal(real.anchor_index.cpu(), out_cpu.anchor_index)
    assert torch.equal(real.labels.cpu(), out_cpu.labels)
    torch.testing.assert_close(real.x.cpu(), out_cpu.x, **FWD)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, **FWD)
    assert_grads_close(zg_gpu, zg_cpu, "embeddings")
    for name in g_cpu:
        assert_grads_close(g_gpu[name], g_cpu[name], name)


def test_generator_with_ms_loss_matches_cpu(cuda):
    torch.manual_seed(0)
    gen = GCAHNG(32, num_classes=4, num_layers=2, heads=4, rw=None, dropout=0.0).eval()
    emb, y = torch.randn(24, 32), torch.arange(4).repeat(6)
    out_cpu = gen(emb, y, j_mean=2.0)
    loss_cpu = MultiSimilarityLoss(mining=True)(emb, y, neg_embeddings=out_cpu.x, neg_labels=out_cpu.labels,
                                                anchor_index=out_cpu.anchor_index)
    gen_cuda = gen.to(cuda)
    out_gpu = gen_cuda(emb.to(cuda), y.to(cuda), j_mean=2.0)  # padded on CUDA: the mask goes to the loss
    loss_gpu = MultiSimilarityLoss(mining=True)(emb.to(cuda), y.to(cuda), neg_embeddings=out_gpu.x,
                                                neg_labels=out_gpu.labels, anchor_index=out_gpu.anchor_index,
                                                neg_mask=out_gpu.mask)
    torch.testing.assert_close(out_gpu.compact().x.cpu(), out_cpu.x, **FWD)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, **FWD)


def _metric_losses():
    torch.manual_seed(3)
    return {"ms": MultiSimilarityLoss(mining=True), "npair": NPairLoss(), "triplet": TripletMarginLoss(),
            "proxy_anchor": ProxyAnchorLoss(6, 16)}


@pytest.mark.parametrize("name", ["ms", "npair", "triplet", "proxy_anchor"])
def test_metric_losses_values_and_gradients_match_cpu(cuda, name):
    loss_cpu = _metric_losses()[name]
    loss_gpu = copy.deepcopy(loss_cpu).to(cuda)
    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(24, 16, generator=g), torch.arange(6).repeat(4)
    zc = z.clone().requires_grad_(True)
    zg = z.to(cuda).requires_grad_(True)
    vc, vg = loss_cpu(zc, y), loss_gpu(zg, y.to(cuda))
    vc.backward()
    vg.backward()
    torch.testing.assert_close(vg.detach().cpu(), vc.detach(), **FWD)
    assert_grads_close(zg.grad, zc.grad, name)
    for (n, pc), (_, pg) in zip(loss_cpu.named_parameters(), loss_gpu.named_parameters()):
        assert_grads_close(pg.grad, pc.grad, f"{name}.{n}")


@pytest.mark.parametrize("name", ["infonce", "dcl", "hcl", "unremix"])
def test_contrastive_losses_values_and_gradients_match_cpu(cuda, name):
    make = {"infonce": InfoNCELoss, "dcl": DebiasedContrastiveLoss, "hcl": HCLLoss,
            "unremix": lambda: UnReMixLoss(k=4)}[name]
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)

    def run(dev):
        z1, z2 = a.to(dev).requires_grad_(True), b.to(dev).requires_grad_(True)
        val = make()(z1, z2)
        val.backward()
        return val.detach().cpu(), z1.grad, z2.grad

    ref, got = run(torch.device("cpu")), run(cuda)
    torch.testing.assert_close(got[0], ref[0], **FWD)
    assert_grads_close(got[1], ref[1], "z1")
    assert_grads_close(got[2], ref[2], "z2")


def test_knn_kernel_exact_with_ties_on_cuda(cuda):
    """Small-integer embeddings: exact float32 dot products on both devices, many ties. CUDA runs the
    sync-free two-pass selection, the CPU the prefilter: identical neighbours (ties lowest index first)."""
    g = torch.Generator().manual_seed(6)
    x = torch.randint(-2, 3, (300, 4), generator=g).float()
    lab = torch.randint(0, 5, (300,), generator=g)
    for kw in ({}, {"exclude_self": True}, {"exclude_self": True, "query_labels": lab, "ref_labels": lab,
                                             "exclude_same_label": True}):
        for k in (1, 7, 30):
            cpu = list(chunked_topk(x, x, k, chunk_size=64, **kw))
            kw_c = {key: (v.to(cuda) if torch.is_tensor(v) else v) for key, v in kw.items()}
            for selection in ("auto", "prefilter"):
                gpu = list(chunked_topk(x.to(cuda), x.to(cuda), k, chunk_size=64, selection=selection, **kw_c))
                assert torch.equal(torch.cat([i for _, _, i in gpu]).cpu(), torch.cat([i for _, _, i in cpu]))
                assert torch.equal(torch.cat([v for _, v, _ in gpu]).cpu(), torch.cat([v for _, v, _ in cpu]))


def test_graph_knn_index_and_probe_match_cpu(cuda):
    torch.manual_seed(1)
    x, y = torch.randn(50, 6), torch.randint(0, 5, (50,))
    for mode, k in (("knn", 4), ("knn_negative", 3), ("negative", None)):
        a = batch_graph(x, y, edges=mode, k=k).edge_index
        b = batch_graph(x.to(cuda), y.to(cuda), edges=mode, k=k).edge_index.cpu()
        assert torch.equal(a, b), mode
    assert torch.equal(knn_index(x.to(cuda), 5).cpu(), knn_index(x, 5))
    pc = knn_predict(x, y, x, k=5, exclude_self=True)
    pg = knn_predict(x.to(cuda), y.to(cuda), x.to(cuda), k=5, exclude_self=True)
    assert pg.device.type == cuda.type
    assert torch.equal(pg.cpu(), pc)


def test_retrieval_matches_cpu_in_bounded_device_memory(cuda):
    """The evaluation runs on the device: metrics as on the CPU; the peak allocation beyond the inputs is
    the normalised copy plus one bounded block (``max_block_elements`` scores, ~11 bytes each with the
    two-pass selection's int32 key and masks) plus the [c, K] top-k buffers, whatever N is."""
    g = torch.Generator().manual_seed(7)
    n, d, block = 20000, 64, 1 << 22
    x, y = torch.randn(n, d, generator=g), torch.randint(0, 2000, (n,), generator=g)
    ks = (1, 10, 100)
    ref = retrieval_metrics(x, y, ks=ks, nmi=False, max_block_elements=block)
    xc, yc = x.to(cuda), y.to(cuda)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    got = retrieval_metrics(xc, yc, ks=ks, nmi=False, max_block_elements=block)
    peak = torch.cuda.max_memory_allocated() - base
    bound = n * d * 4 + 16 * block + 64 * 2**20
    assert peak < bound, f"peak {peak / 2**20:.0f} MiB above the bound {bound / 2**20:.0f} MiB"
    for key in ref:
        assert abs(got[key] - ref[key]) < 1e-3, key


def test_ddp_nccl_two_gpus_match_single_process(tmp_path):
    """The gloo cases of tests/test_distributed.py on NCCL, one rank per GPU (what Lightning's
    ``--trainer.strategy ddp --trainer.devices 2`` runs): gathered losses and DDP-averaged gradients equal
    one process on the whole batch, for equal and unequal local batch sizes."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
def test_gcahng_step_under_cuda_autocast_within_tolerance(cuda, dtype):
    check_gca_autocast_step(cuda, dtype)


def test_gca_hng_metric_and_generator_steps_have_no_host_sync_on_cuda(cuda):
    """issue 21: the GCA-HNG objective's three steps on CUDA (default, padded layout) with value checks off,
    counted by tests/sync_counter.py (the sync-forcing ops, and CUDA's own sync debug mode)."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from sync_counter import count_syncs

    from graphneg.losses import GCAHNGObjective
    from graphneg.validation import value_checks

    torch.manual_seed(0)
    obj = GCAHNGObjective(GCAHNG(32, num_classes=6, num_layers=2, heads=4), MultiSimilarityLoss(mining=True)).to(cuda)
    z = torch.randn(18, 32, device=cuda, requires_grad=True)
    y = torch.arange(6, device=cuda).repeat(3)
    obj.metric_loss(z, y)  # warm-up (lazy initialisations, cuBLAS handles)
    with value_checks(False), count_syncs() as rep:
        step = obj.metric_loss(z, y)
        step.total.backward()
        obj.classifier_loss(z, y).backward()
        obj.generator_loss(z, y).total.backward()
        obj.diagnostics(step)
    assert step.negatives.mask is not None  # the padded layout
    assert len(rep) == 0 and not rep.cuda_warnings, rep.message()
