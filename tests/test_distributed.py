"""Multi-process negatives on gloo: two processes with ``gather_distributed=True`` equal one process on
the concatenated batch (losses and DDP-averaged gradients), for equal and unequal local batch sizes.

One process group for the whole module (lightly's distributed-test pattern, spawned once by the
``results`` fixture): every case runs inside it and saves its losses and gradients; the tests compare
them with single-process references computed here. DDP's gradient averaging is reproduced by
averaging the ranks' parameter gradients.
"""
import os
import zlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import graphneg.losses as L
from graphneg.distributed import all_sizes, gather, is_distributed, local_offset
from graphneg.losses import HCLLoss, InfoNCELoss, MultiSimilarityLoss, UnReMixLoss
from graphneg.losses.gca_hng import generator_loss, node_loss
from graphneg.nn import GCAHNG

pytestmark = pytest.mark.distributed
WORLD, D_IN, D = 2, 6, 5
DebiasedLoss = getattr(L, "DebiasedContrastiveLoss", None) or L.DCLLoss  # renamed by another branch

# name -> (loss factory, local batch sizes, supervised, extra negatives per rank or None)
CONTRASTIVE = {
    "infonce_equal": (lambda g: InfoNCELoss(0.5, gather_distributed=g), (4, 4), False, None),
    "dcl_equal_labels": (lambda g: DebiasedLoss(0.5, tau_plus=0.1, gather_distributed=g), (4, 4), True, None),
    "hcl_equal_neg": (lambda g: HCLLoss(0.5, tau_plus=0.1, beta=1.0, gather_distributed=g), (4, 4), False,
                      (3, 2)),
    "unremix_equal": (lambda g: UnReMixLoss(0.5, 0.1, 1.0, (1, 1, 1), k=3, representativeness="density",
                                            gather_distributed=g), (4, 4), False, None),
    "unremix_equal_labels": (lambda g: UnReMixLoss(0.5, 0.1, 1.0, (1, 1, 1), k=3, gather_distributed=g), (4, 4),
                             True, None),
    "infonce_unequal": (lambda g: InfoNCELoss(0.5, gather_distributed=g), (7, 4), False, None),
    "dcl_unequal": (lambda g: DebiasedLoss(0.5, tau_plus=0.1, gather_distributed=g), (7, 4), True, None),
    "hcl_unequal": (lambda g: HCLLoss(0.5, tau_plus=0.1, beta=1.0, gather_distributed=g), (7, 4), False, None),
    "unremix_unequal": (lambda g: UnReMixLoss(0.5, 0.1, 1.0, (1, 1, 1), k=3, gather_distributed=g), (7, 4), False,
                        None),
    # the issue-10 variants: diversity reads each gathered column's own positive (ContrastivePairs.partner),
    # the pseudo-label uncertainty the positive's similarities; extra negatives have no partner
    "unremix_diversity_pl_neg": (lambda g: UnReMixLoss(0.5, 0.1, 1.0, (1, 1, 1), k=3, representativeness="diversity",
                                                       uncertainty="pseudo_label", gather_distributed=g),
                                 (4, 4), False, (3, 2)),
    "unremix_diversity_all_unequal": (lambda g: UnReMixLoss(0.5, 0.1, 1.0, (1, 1, 1), k=None,
                                                            representativeness="diversity",
                                                            uncertainty="pseudo_label", gather_distributed=g),
                                      (7, 4), True, None),
    # the default representativeness (diversity, k nearest on the batch kNN graph) with labels and extras
    "unremix_default_labels_neg_unequal": (lambda g: UnReMixLoss(0.5, 0.1, 1.0, k=3, gather_distributed=g),
                                           (5, 3), True, (2, 3)),
}
GCA = {"gca_equal": (8, 8), "gca_unequal": (12, 4)}
NUM_CLASSES = 4


def _seed(name):  # str hash() differs between processes
    return zlib.crc32(name.encode()) % 1000


def _data(seed, n, m=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "x1": torch.randn(n, D_IN, generator=g, dtype=torch.float64),
        "x2": torch.randn(n, D_IN, generator=g, dtype=torch.float64),
        "y": torch.randint(0, 3, (n,), generator=g),
        "xn": torch.randn(m, D_IN, generator=g, dtype=torch.float64),
        "yn": torch.randint(0, 3, (m,), generator=g),
    }


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Linear(D_IN, D).double()


def _rows(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def contrastive_loss(name, gathered, data, rows=slice(None), neg_rows=slice(None), device="cpu"):
    """The loss of one case on ``data[rows]`` (a rank's batch) or on the whole batch (rows=all)."""
    factory, _, supervised, extra = CONTRASTIVE[name]
    data = {k: v.to(device) for k, v in data.items()}
    net = _net(_seed(name)).to(device)
    loss_fn = factory(gathered)
    kw = {}
    if supervised:
        kw["labels"] = data["y"][rows]
    if extra is not None:
        kw["neg"] = net(data["xn"][neg_rows])
        if supervised:
            kw["neg_labels"] = data["yn"][neg_rows]
    loss = loss_fn(net(data["x1"][rows]), net(data["x2"][rows]), **kw)
    return loss, list(net.parameters()), loss_fn


def gca_setup(seed, device="cpu"):
    torch.manual_seed(seed)
    net = torch.nn.Linear(D_IN, D).double()
    gen = GCAHNG(D, NUM_CLASSES, num_layers=1, heads=1, rw="chain", dropout=0.0,
                 gather_distributed=True).double()
    cls = torch.nn.Linear(D, NUM_CLASSES).double()
    return net.to(device), gen.to(device), cls.to(device)


def gca_loss(seed, x, y):
    """Global generator objective: metric loss with synthetic negatives + node CE + generator loss."""
    net, gen, cls = gca_setup(seed, x.device)
    # detach_lam=False: every gradient path at once (lambda live on live embeddings; warns), to compare them all
    out = gen(net(x), y, j_mean=2.0, generator=torch.Generator().manual_seed(7), detach_lam=False)
    ms = MultiSimilarityLoss(mining=True)(out.graph.x, out.graph.y, neg_embeddings=out.x, neg_labels=out.labels,
                               anchor_index=out.anchor_index)
    loss = ms + node_loss(out) + generator_loss(out, cls, gen.softmax_factor, gen.dot_weight, gen.div_weight).total
    return loss, [*net.parameters(), *gen.parameters(), *cls.parameters()], out


EVAL_SIZES = (5, 2)  # per-rank evaluation shards of unequal size (a sharded evaluation set)


def _eval_shard(rank, device="cpu"):
    """Rank ``rank``'s evaluation embeddings [B_r, 3] (row ``i`` of the global set holds ``i``) and labels."""
    start = sum(EVAL_SIZES[:rank])
    rows = torch.arange(start, start + EVAL_SIZES[rank], device=device)
    return rows[:, None].double().expand(-1, 3).contiguous(), rows % 3


def eval_gather_case(rank, device):
    """The evaluation gathers of MetricLearningModule (EmbeddingEvalMixin) and the probes (EmbeddingProbe)
    on a stand-in module whose Trainer runs WORLD processes: both go through gather_layout / gather_rows."""
    from types import SimpleNamespace

    from graphneg.callbacks import EmbeddingProbe
    from graphneg.models.metric import EmbeddingEvalMixin

    emb, lab = _eval_shard(rank, device)
    module = SimpleNamespace(trainer=SimpleNamespace(world_size=WORLD))
    alone = SimpleNamespace(trainer=SimpleNamespace(world_size=1))  # one process per Trainer: never gathered
    out = {
        "module": EmbeddingEvalMixin._gather(module, emb, lab),
        "probe": EmbeddingProbe._gather(module, emb, lab),
        "alone": EmbeddingProbe._gather(alone, emb, lab) + EmbeddingEvalMixin._gather(alone, emb, lab),
    }
    return {k: tuple(t.cpu() for t in v) for k, v in out.items()}


def _grads(params):
    return [torch.zeros_like(p).cpu() if p.grad is None else p.grad.detach().cpu() for p in params]


def _worker(rank, init_file, out_dir, backend="gloo"):
    """All cases in one process group; ``backend="nccl"`` runs them on ``cuda:rank`` (tests/test_gpu.py)."""
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    try:
        res = {"is_distributed": is_distributed()}
        # the gather itself: unequal rows, offsets, gradient = sum over ranks of d(loss_r)/d(rows)
        sizes = (3, 1)
        x = torch.full((sizes[rank], 2), float(rank + 1), dtype=torch.float64, device=device, requires_grad=True)
        lab = torch.arange(sizes[rank], device=device) + 10 * rank
        xa, la, off = gather(x, lab, return_offset=True)
        ((rank + 1) * xa).sum().backward()  # loss_r = (r + 1) * sum(gathered)
        res["gather"] = (xa.detach().cpu(), la.cpu(), off, x.grad.cpu(), all_sizes(sizes[rank], device),
                         local_offset(sizes[rank], device))
        res["eval_gather"] = eval_gather_case(rank, device)
        for name, (_, bs, _, extra) in CONTRASTIVE.items():
            data = _data(_seed(name), sum(bs), 0 if extra is None else sum(extra))
            neg_rows = slice(None) if extra is None else _rows(extra, rank)
            loss, params, loss_fn = contrastive_loss(name, True, data, _rows(bs, rank), neg_rows, device)
            (loss * WORLD * bs[rank] / sum(bs)).backward()  # == loss for equal sizes
            hist = {}
            if hasattr(loss_fn, "negative_pair_scores"):  # what the score histograms log on this rank
                hist = {k: v.cpu() for k, v in loss_fn.negative_pair_scores().items()}
            res[name] = (loss.detach().cpu(), _grads(params), hist)
        for name, bs in GCA.items():
            g = torch.Generator().manual_seed(11)
            x = torch.randn(sum(bs), D_IN, generator=g, dtype=torch.float64).to(device)
            y = torch.arange(NUM_CLASSES).repeat(sum(bs) // NUM_CLASSES).to(device)
            loss, params, out = gca_loss(3, x[_rows(bs, rank)], y[_rows(bs, rank)])
            loss.backward()
            res[name] = (loss.detach().cpu(), _grads(params), out.x.detach().cpu())
        torch.save(res, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_cases(tmp, backend="gloo"):
    """Spawn the two ranks once and load what each saved."""
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp), backend), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("dist"))


def check_gather(results):
    for rank, res in enumerate(results):
        assert res["is_distributed"]
        xa, la, off, grad, sizes, off2 = res["gather"]
        expected = torch.tensor([[1.0, 1.0]] * 3 + [[2.0, 2.0]], dtype=torch.float64)
        torch.testing.assert_close(xa, expected)
        assert la.tolist() == [0, 1, 2, 10]
        assert off == off2 == (0, 3)[rank] and sizes == [3, 1]
        # d/dx_r of sum_r' (r' + 1) * sum(gathered) = 1 + 2 on every local entry
        torch.testing.assert_close(grad, torch.full_like(grad, 3.0))


def check_contrastive(results, name):
    """Ranks' losses (weighted by batch size) and averaged gradients == one process on the whole batch."""
    _, bs, _, extra = CONTRASTIVE[name]
    data = _data(_seed(name), sum(bs), 0 if extra is None else sum(extra))
    loss, params, loss_fn = contrastive_loss(name, False, data)  # one process, concatenated batch
    loss.backward()
    losses = torch.stack([r[name][0] for r in results])
    weights = torch.tensor(bs, dtype=losses.dtype) / sum(bs)
    torch.testing.assert_close((weights * losses).sum(), loss.detach(), rtol=1e-5, atol=1e-5)
    if bs[0] == bs[1]:  # equal sizes: the plain mean of the ranks' losses (what DDP optimises)
        torch.testing.assert_close(losses.mean(), loss.detach(), rtol=1e-5, atol=1e-5)
    else:  # the ranks' losses really differ, so the weighting is what makes them agree
        assert not torch.allclose(losses.mean(), loss.detach(), rtol=1e-5, atol=1e-5)
    for i, grad in enumerate(_grads(params)):  # DDP: average of the ranks' gradients
        avg = sum(r[name][1][i] for r in results) / WORLD
        torch.testing.assert_close(avg, grad, rtol=1e-5, atol=1e-5)


def check_score_histograms(results, name):
    """The UnReMix score histogram values of each rank (negative pairs of its anchors, gathered
    candidates) are exactly the single-process scores of those anchors' negative pairs: no zeros of
    excluded pairs, nothing missing."""
    _, bs, _, extra = CONTRASTIVE[name]
    data = _data(_seed(name), sum(bs), 0 if extra is None else sum(extra))
    _, _, loss_fn = contrastive_loss(name, False, data)
    full, mask = loss_fn.last_scores, loss_fn.last_neg_mask  # [2 B_tot, C]: rows [z1_all; z2_all]
    assert full and mask.shape[0] == 2 * sum(bs)
    for rank, res in enumerate(results):
        r = _rows(bs, rank)
        rows = torch.cat([torch.arange(sum(bs))[r], sum(bs) + torch.arange(sum(bs))[r]])
        hist = res[name][2]
        assert set(hist) == set(full)
        for key, scores in full.items():
            want = scores[rows][mask[rows]]
            assert hist[key].shape == want.shape, key
            torch.testing.assert_close(hist[key], want, rtol=1e-5, atol=1e-6)
            assert bool((hist[key] > 0).all()), key


def check_gca(results, name):
    """Every rank's global GCA-HNG loss and negatives, and the averaged gradients == one process."""
    bs = GCA[name]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(sum(bs), D_IN, generator=g, dtype=torch.float64)
    y = torch.arange(NUM_CLASSES).repeat(sum(bs) // NUM_CLASSES)
    loss, params, out = gca_loss(3, x, y)  # no process group here: gather is the identity
    loss.backward()
    for r in results:  # every rank computes the same global loss and negatives
        torch.testing.assert_close(r[name][0], loss.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r[name][2], out.x.detach(), rtol=1e-5, atol=1e-5)
    for i, grad in enumerate(_grads(params)):
        avg = sum(r[name][1][i] for r in results) / WORLD
        torch.testing.assert_close(avg, grad, rtol=1e-5, atol=1e-5)
    assert sum(int(gr.abs().sum() > 0) for gr in _grads(params)) > len(params) // 2  # mostly used


def test_gather_unequal_sizes_values_offsets_and_gradients(results):
    check_gather(results)


def check_eval_gather(results):
    """Every rank holds all ranks' shards in rank order, unequal sizes and all (no padding rows, nothing
    lost), for the module's evaluation and the probes; a one-process Trainer keeps its own shard."""
    want = [torch.cat(t) for t in zip(*(_eval_shard(r) for r in range(WORLD)))]  # written out: rows 0..6
    assert want[0][:, 0].tolist() == list(range(sum(EVAL_SIZES))) and want[1].tolist() == [0, 1, 2, 0, 1, 2, 0]
    for rank, res in enumerate(results):
        for key in ("module", "probe"):
            emb, lab = res["eval_gather"][key]
            torch.testing.assert_close(emb, want[0])
            assert torch.equal(lab, want[1]), key
        local = _eval_shard(rank)
        for got, ref in zip(res["eval_gather"]["alone"], local + local):
            assert torch.equal(got, ref)


def test_evaluation_and_probe_gather_unequal_shards(results):
    check_eval_gather(results)


@pytest.mark.parametrize("name", list(CONTRASTIVE))
def test_contrastive_gathered_equals_single_process(results, name):
    check_contrastive(results, name)


def test_contrastive_without_gathered_gradient_differs(results):
    """The other ranks' candidates matter: local-only losses give another result."""
    name = "infonce_equal"
    _, bs, _, _ = CONTRASTIVE[name]
    data = _data(_seed(name), sum(bs))
    local = [contrastive_loss(name, False, data, _rows(bs, r))[0] for r in range(WORLD)]
    assert not torch.allclose(torch.stack(local).mean(), torch.stack([r[name][0] for r in results]).mean())


@pytest.mark.parametrize("name", [n for n in CONTRASTIVE if n.startswith("unremix")])
def test_unremix_score_histograms_gathered_equal_single_process(results, name):
    check_score_histograms(results, name)


@pytest.mark.parametrize("name", list(GCA))
def test_gcahng_gathered_equals_single_process(results, name):
    check_gca(results, name)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    assert gather(x) is x and not is_distributed()
    y = torch.arange(3)
    xs, ys, off = gather(x, y, return_offset=True)
    assert xs is x and ys is y and off == 0 and local_offset(3) == 0 and all_sizes(3) == [3]


def test_gather_bad_input():
    with pytest.raises(ValueError, match="same number of rows"):
        gather(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="0-d tensor"):
        gather(torch.tensor(1.0))
    with pytest.raises(TypeError, match="expects tensors"):
        gather([1, 2])
    with pytest.raises(TypeError, match="gather_distributed must be True or False"):
        InfoNCELoss(gather_distributed="yes")
    with pytest.raises(TypeError, match="gather_distributed must be True or False"):
        GCAHNG(4, 2, gather_distributed=1)


def test_gather_distributed_is_a_no_op_in_one_process():
    torch.manual_seed(0)
    z1, z2, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    for cls in (InfoNCELoss, DebiasedLoss, HCLLoss, UnReMixLoss):
        a = cls(gather_distributed=True)(z1, z2, y)
        b = cls()(z1, z2, y)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "gather_distributed=True" in repr(HCLLoss(gather_distributed=True))


def test_mnist_metric_datamodule_splits_batches_and_eval_over_ranks():
    """Under DDP (Lightning's sampler off) each rank draws its own C x m batches and evaluates a disjoint
    shard; the shards together are the test set once (no duplicates in the gathered evaluation)."""
    from types import SimpleNamespace

    from graphneg.data import MNIST5kDataModule

    batches, shards = [], []
    for rank in range(WORLD):
        dm = MNIST5kDataModule(classes_per_batch=5, samples_per_class=4, limit_per_class=40)
        dm.setup("fit")
        dm.trainer = SimpleNamespace(world_size=WORLD, global_rank=rank)
        batches.append([tuple(b) for b in dm.train_dataloader().batch_sampler])
        shards.append(torch.cat([y for _, y in dm.val_dataloader()]))
        n_test, all_labels = len(dm.test_set), dm.test_set.labels
    assert batches[0] and batches[1] and not set(batches[0]) & set(batches[1])
    assert sum(s.numel() for s in shards) == n_test
    torch.testing.assert_close(torch.cat(shards).sort().values, torch.as_tensor(all_labels).sort().values)


def test_negative_pair_mask_for_gathered_candidates_matches_loop():
    """Rank with rows [offset, offset + B) of a gathered batch of B_tot: a loop over (anchor, column)."""
    from graphneg.losses.contrastive import negative_pair_mask

    b, offset, b_tot, m = 2, 3, 6, 2
    glob = torch.tensor([0, 1, 2, 0, 1, 1])
    local = glob[offset:offset + b]
    extra = torch.tensor([2, 0])
    mask = negative_pair_mask(b, local, None, m, extra, offset=offset, global_batch_size=b_tot,
                              global_labels=glob)
    col_labels = torch.cat([glob, glob, extra])
    expected = torch.zeros(2 * b, 2 * b_tot + m, dtype=torch.bool)
    for i in range(2 * b):
        view, row = divmod(i, b)
        own, pos = view * b_tot + offset + row, (1 - view) * b_tot + offset + row
        for j in range(2 * b_tot + m):
            expected[i, j] = j not in (own, pos) and bool(col_labels[j] != local[row])
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="must fit in global_batch_size"):
        negative_pair_mask(b, offset=5, global_batch_size=6)
    with pytest.raises(ValueError, match="pass global_labels"):
        negative_pair_mask(b, local, offset=0, global_batch_size=6)


def test_gather_layout_in_one_process_is_the_local_layout():
    """Outside a process group gathering is never on: the layout is this process's rows alone."""
    from graphneg.distributed import GatherLayout, gather_layout, gather_rows

    for enabled in (True, False):
        lay = gather_layout(5, enabled)
        assert lay == GatherLayout.single(5) and not lay.gathered
        assert (lay.local_rows, lay.global_rows, lay.offset, lay.local_slice) == (5, 5, 0, slice(0, 5))
    x, y = torch.randn(5, 2), torch.arange(5)
    xs, ys = gather_rows(lay, x, y)
    assert xs is x and ys is y and gather_rows(lay, x) is x
    with pytest.raises(ValueError, match="has 4 rows but the layout says this process has 5"):
        gather_rows(lay, x[:4])
    with pytest.raises(TypeError, match="layout must be a GatherLayout"):
        gather_rows((5,), x)
    with pytest.raises(TypeError, match="enabled .* must be True or False"):
        gather_layout(5, 1)


def test_gather_layout_arithmetic():
    """Rank 1 of three processes with 4, 3 and 2 rows: rows 4..6 of 9."""
    from graphneg.distributed import GatherLayout

    lay = GatherLayout((4, 3, 2), rank=1)
    assert lay.gathered and lay.world_size == 3
    assert (lay.local_rows, lay.global_rows, lay.offset) == (3, 9, 4)
    assert list(range(9))[lay.local_slice] == [4, 5, 6]


def test_contrastive_pairs_record_an_explicit_layout():
    """No None sentinel: one process gives the local layout, the candidates start with the anchors, and
    every candidate names its own positive view (extra negatives: -1)."""
    from graphneg.distributed import GatherLayout
    from graphneg.losses.contrastive import contrastive_pairs

    z1, z2, neg = torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4)
    for flag in (True, False):
        pairs = contrastive_pairs(z1, z2, neg=neg, gather_distributed=flag)
        assert pairs.layout == GatherLayout.single(3) and pairs.anchors_first
        assert pairs.partner.tolist() == [3, 4, 5, 0, 1, 2, -1, -1]
        assert pairs.self_index.tolist() == list(range(6)) and pairs.pos_index.tolist() == [3, 4, 5, 0, 1, 2]
