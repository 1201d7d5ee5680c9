"""GCAHNGObjective (graphneg.losses.gca_hng): the official three-step update's losses and state.

References: the official GCA_HNG.forward / train.py (PWenJay/GCA-HNG) written as hand computations here,
pytorch-metric-learning's own losses and miners for the PML route."""
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from graphneg.losses import GCAHNGObjective, MultiSimilarityLoss, NPairLoss, pml_inputs
from graphneg.losses.gca_hng import generator_loss, node_loss, takes_synthetic_negatives
from graphneg.nn import GCAHNG

C, M, D = 4, 3, 8


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(C * M, 6, generator=g)
    return x, torch.arange(C).repeat(M)


def setup(loss=None, seed=0, **kw):
    torch.manual_seed(seed)
    encoder = nn.Linear(6, D)
    gen = GCAHNG(D, num_classes=C, num_layers=1, heads=2, rw="chain", dropout=0.0)
    obj = GCAHNGObjective(gen, MultiSimilarityLoss(mining=True) if loss is None else loss, **kw)
    return encoder, obj


def grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


@pytest.mark.parametrize("loss", [MultiSimilarityLoss(mining=True), pml_losses.MultiSimilarityLoss()], ids=["graphneg", "pml"])
def test_metric_loss_never_trains_the_generator(loss):
    """Official step 1: lambda is detached, so J_m + w J_syn send nothing to the generator; only the node
    CE J_gce reaches the GNN (and the encoder), as in the official jmetric."""
    x, y = batch()
    encoder, obj = setup(loss, node_loss_weight=0.0)
    obj.metric_loss(encoder(x), y).total.backward()
    gen_params = list(obj.generator.parameters())
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in gen_params)
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in encoder.parameters())
    # with J_gce: the generator's gradient is exactly the node CE's gradient
    encoder, obj = setup(loss)
    step = obj.metric_loss(encoder(x), y)
    trainable = [p for p in obj.generator.parameters() if p.requires_grad]
    ref = torch.autograd.grad(step.node, trainable, retain_graph=True, allow_unused=True)
    step.total.backward()
    assert any(r is not None for r in ref)
    for p, r in zip(trainable, ref):
        if r is None:
            assert p.grad is None or float(p.grad.abs().max()) == 0.0
        else:
            torch.testing.assert_close(p.grad, r, rtol=0, atol=1e-7)
    assert float(step.node.detach()) == pytest.approx(float(node_loss(step.negatives).detach()))


def test_metric_step_equals_the_official_formula():
    """jmetric = J_m + (1 - exp(-beta / J_gen)) J_syn + J_gce with the running means (official values)."""
    x, y = batch(1)
    encoder, obj = setup(NPairLoss(), synthetic_beta=30.0, node_loss_weight=0.5)
    obj.j_mean.fill_(2.5)
    obj.j_gen_mean.fill_(12.0)
    emb = encoder(x)
    step = obj.metric_loss(emb, y)
    out = step.negatives
    loss = NPairLoss()
    j_m = loss(emb, y)
    j_syn = loss(out.graph.x, out.graph.y, neg_embeddings=out.x, neg_labels=out.labels, anchor_index=out.anchor_index)
    w = 1.0 - math.exp(-30.0 / 12.0)
    torch.testing.assert_close(step.real, j_m)
    torch.testing.assert_close(step.synthetic_raw, j_syn)
    torch.testing.assert_close(step.total, j_m + w * j_syn + 0.5 * node_loss(out))
    assert float(step.synthetic_weight) == pytest.approx(w)
    assert float(obj.hardness_scale) == pytest.approx(math.exp(-4.0 / 2.5))
    # the synthetic negatives were generated with that scale: lam' = lam * exp(-alpha / J_mean)
    ref = obj.generator(emb.detach(), y, j_mean=2.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.x, ref.x)


def test_classifier_and_generator_steps_touch_only_their_part():
    x, y = batch(2)
    encoder, obj = setup()
    emb = encoder(x)
    ce = obj.classifier_loss(emb, y)
    torch.testing.assert_close(ce, 10.0 * F.cross_entropy(obj.classifier(emb), y))  # official: 10 * ce1(...)
    ce.backward()
    assert all(p.grad is None for p in encoder.parameters()) and obj.classifier.weight.grad is not None
    assert all(p.grad is None for p in obj.generator.parameters())
    terms = obj.generator_loss(emb, y)
    g = obj.generator
    ref = generator_loss(terms.negatives, obj.classifier, g.softmax_factor, g.dot_weight, g.div_weight)
    torch.testing.assert_close(terms.total, ref.total)
    terms.total.backward()
    assert all(p.grad is None for p in encoder.parameters())  # generated from detached embeddings
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in g.gnn.lin_lam.parameters())


def test_running_means_roll_per_epoch_as_official():
    """train.py: J_avg.update(max(jm, 1e-6)) each step, J_avg.avg = mean of the epoch at its end, 1e6 before."""
    encoder, obj = setup()
    seen_m, seen_g = [], []
    for seed in range(3):
        x, y = batch(seed)
        emb = encoder(x)
        seen_m.append(max(float(obj.metric_loss(emb, y).real), 1e-6))
        seen_g.append(max(float(obj.generator_loss(emb, y).total), 1e-6))
        assert float(obj.j_mean) == 1e6 and float(obj.j_gen_mean) == 1e6  # the first epoch: initial value
    obj.eval()  # evaluation calls do not count
    obj.metric_loss(encoder(batch(5)[0]), batch(5)[1])
    obj.train()
    obj.end_epoch()
    assert float(obj.j_mean) == pytest.approx(sum(seen_m) / 3, rel=1e-6)
    assert float(obj.j_gen_mean) == pytest.approx(sum(seen_g) / 3, rel=1e-6)
    assert int(obj.completed_epochs) == 1 and float(obj.j_mean_count) == 0.0
    obj.end_epoch()  # an epoch without steps keeps the means
    assert float(obj.j_mean) == pytest.approx(sum(seen_m) / 3, rel=1e-6)
    assert float(obj.synthetic_weight) == pytest.approx(1.0 - math.exp(-30.0 / (sum(seen_g) / 3)), rel=1e-6)


def test_state_dict_resumes_exactly():
    """The running sums, the means and the random-weighting generator travel in state_dict."""
    x, y = batch(3)
    encoder, a = setup(seed=0)
    emb = encoder(x).detach()
    a.metric_loss(emb, y)
    a.generator_loss(emb, y)
    assert "_extra_state" in a.state_dict()
    _, b = setup(seed=9)  # other weights and another random-weighting state
    b.rw_generator.manual_seed(123)
    b.load_state_dict(a.state_dict())
    sa, sb = a.metric_loss(emb, y), b.metric_loss(emb, y)
    torch.testing.assert_close(sa.total, sb.total, rtol=0, atol=0)
    torch.testing.assert_close(sa.negatives.x, sb.negatives.x, rtol=0, atol=0)  # the same chain draws
    torch.testing.assert_close(a.generator_loss(emb, y).total, b.generator_loss(emb, y).total, rtol=0, atol=0)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_generator_defaults_to_the_official_detach_points_and_warns_otherwise():
    x, y = batch(4)
    encoder, obj = setup()
    gen = obj.generator
    emb = encoder(x)
    params = [p for p in gen.parameters() if p.requires_grad]
    # live embeddings: lambda detached (the metric step), so out.x carries no gradient to the generator
    out = gen(emb, y)
    g = torch.autograd.grad(out.x.pow(2).sum(), params, allow_unused=True)
    assert all(v is None or float(v.abs().max()) == 0.0 for v in g)
    # detached embeddings: lambda live (the generator step)
    out = gen(emb.detach(), y)
    g = torch.autograd.grad(out.x.pow(2).sum(), params, allow_unused=True)
    assert any(v is not None and float(v.abs().max()) > 0 for v in g)
    with pytest.warns(UserWarning, match="detach_lam=False on embeddings that require grad"):
        gen(emb, y, detach_lam=False)


def test_pml_route_equals_graphneg_synthetic_term():
    """J_syn through pytorch-metric-learning's MultiSimilarityLoss (indices_tuple / ref_emb) equals graphneg's
    MultiSimilarityLoss without mining on the same synthetic negatives (two independent implementations)."""
    x, y = batch(6)
    encoder, obj = setup(pml_losses.MultiSimilarityLoss())
    assert obj.synthetic_route == "pml" and not takes_synthetic_negatives(obj.loss)
    emb = encoder(x)
    step = obj.metric_loss(emb, y)
    out = step.negatives
    ref = MultiSimilarityLoss(mining=False)(emb, y, neg_embeddings=out.x, neg_labels=out.labels,
                                            anchor_index=out.anchor_index)
    torch.testing.assert_close(step.synthetic_raw, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(step.real, pml_losses.MultiSimilarityLoss()(emb, y))
    # PML converts the pairs to triplets itself: TripletMarginLoss gets (positive of a, synthetic negative of a)
    trip = pml_losses.TripletMarginLoss(margin=0.2)
    t = pml_inputs(out)
    e, r = F.normalize(emb, dim=1), F.normalize(t.ref_emb, dim=1)
    vals = [F.relu((e[a] - e[p]).norm() - (e[a] - r[len(y) + k]).norm() + 0.2)
            for k, a in enumerate(out.anchor_index.tolist()) for p in range(len(y)) if p != a and y[p] == y[a]]
    nonzero = [v for v in vals if float(v) > 0]  # PML's AvgNonZeroReducer
    torch.testing.assert_close(trip(emb, y, t.indices_tuple, t.ref_emb, t.ref_labels), sum(nonzero) / len(nonzero))


def test_pml_miner_never_takes_a_synthetic_negative_for_a_positive():
    """A PML miner on (emb, labels, ref_emb, ref_labels) pairs by label equality: with the source class as
    label most of its positives were synthetic negatives; pml_inputs gives them class ids of their own."""
    x, y = batch(7)
    encoder, obj = setup()
    emb = encoder(x).detach()
    out = obj.generator(emb, y, generator=torch.Generator().manual_seed(0))
    t = pml_inputs(out)
    miner = pml_miners.MultiSimilarityMiner(epsilon=10.0)  # epsilon 10: every pair of the right kind is mined
    a1, p, a2, n = miner(emb, y, t.ref_emb, t.ref_labels)
    b = len(y)
    assert len(a1) > 0 and bool((p < b).all()) and bool((y[a1] == t.ref_labels[p]).all())
    # the miner's positive rule (same label, any reference row), written as a loop over the reference set
    expected = {(i, j) for i in range(b) for j in range(len(t.ref_labels)) if int(y[i]) == int(t.ref_labels[j])}
    assert set(zip(a1.tolist(), p.tolist())) == expected
    assert bool((n >= 0).all()) and set(range(b, len(t.ref_labels))) <= set(n.tolist())  # synthetic: negatives
    # the trap the labels avoid: with the source class as label the synthetic rows become positives
    trap = torch.cat([y, out.labels])
    a1, p, _, _ = miner(emb, y, t.ref_emb, trap)
    assert int((p >= b).sum()) > int((p < b).sum())


def test_objective_arguments_are_checked():
    gen = GCAHNG(D, num_classes=C, num_layers=1, heads=2)
    with pytest.raises(ValueError, match="num_classes=5 differs from the generator's num_classes=4"):
        GCAHNGObjective(gen, MultiSimilarityLoss(mining=True), num_classes=5)
    with pytest.raises(ValueError, match="synthetic_beta must be a finite number >= 0"):
        GCAHNGObjective(gen, MultiSimilarityLoss(mining=True), synthetic_beta=-1.0)
    with pytest.raises(TypeError, match="generator must be a torch.nn.Module"):
        GCAHNGObjective("GCAHNG", MultiSimilarityLoss(mining=True))
    obj = GCAHNGObjective(gen, MultiSimilarityLoss(mining=True))
    assert (obj.num_classes, obj.embedding_dim) == (C, D) and obj.synthetic_route == "graphneg"
    assert tuple(obj.classifier.weight.shape) == (C, D)
    # clip_gradients: official clip_grad_value_ at 10
    lin = nn.Linear(2, 2)
    lin.weight.grad = torch.tensor([[20.0, -30.0], [1.0, 0.5]])
    obj.clip_gradients(lin)
    assert torch.equal(lin.weight.grad, torch.tensor([[10.0, -10.0], [1.0, 0.5]]))
