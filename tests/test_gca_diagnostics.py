"""GCA-HNG ablation option (fixed_lambda = HDML interpolation) and the per-epoch diagnostics."""
import math

import pytest
import torch
import torch.nn.functional as F

from graphneg.ops.labels import next_positive_index
from graphneg.losses import generator_diagnostics
from graphneg.nn import GCAHNG


def batch(seed=0, classes=4, m=3, dim=8):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(classes * m, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(classes).repeat(m)  # chunk layout c0 c1 c2 c3 c0 ...
    return emb, labels


def dense_hdml(emb, labels, lam, alpha, j_mean):
    """Loop reference of HDML's interpolation (Zheng et al. 2019, Eq. 4) with a constant lambda:
    z~ = z_a + (d+ + (d- - d+) lam e^{-alpha/J}) / d- (z_n - z_a) if d+ < d- else z_n;
    the positive of a is the next same-class sample in batch order (cyclic); distances are
    F.pairwise_distance's ||x - y + 1e-6|| as in the official code."""
    b = emb.size(0)
    out = {}
    for a in range(b):
        same = [j for j in range(b) if labels[j] == labels[a]]
        pos = same[(same.index(a) + 1) % len(same)]
        dp = float((emb[a] - emb[pos] + 1e-6).norm())
        for n in range(b):
            if labels[n] == labels[a]:
                continue
            dn = float((emb[a] - emb[n] + 1e-6).norm())
            if dp < dn:
                r = (dp + (dn - dp) * lam * math.exp(-alpha / j_mean)) / dn
                out[(a, n)] = emb[a] + r * (emb[n] - emb[a])
            else:
                out[(a, n)] = emb[n].clone()
    return out


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_fixed_lambda_is_dense_hdml(lam):
    emb, labels = batch()
    torch.manual_seed(0)
    gen = GCAHNG(8, num_classes=4, num_layers=1, heads=2, rw=None, fixed_lambda=lam).double()
    out = gen(emb, labels, j_mean=2.5)
    ref = dense_hdml(emb, labels, lam, alpha=4.0, j_mean=2.5)
    assert out.x.size(0) == len(ref)
    got = {(int(a), int(n)): out.x[i] for i, (a, n) in enumerate(zip(out.pairs.anchor, out.pairs.negative))}
    assert set(got) == set(ref)
    for key, v in ref.items():
        torch.testing.assert_close(got[key], v, rtol=1e-12, atol=1e-12)
    # the learned lambda (default) gives other negatives on the hard pairs
    gen.fixed_lambda = None
    learned = gen(emb, labels, j_mean=2.5)
    assert not torch.allclose(learned.x, out.x)
    assert "fixed_lambda=" in repr(GCAHNG(8, 4, fixed_lambda=lam))


def test_fixed_lambda_errors():
    with pytest.raises(ValueError, match="fixed_lambda must lie in"):
        GCAHNG(8, 4, fixed_lambda=1.5)


@pytest.mark.parametrize("rw", [None, "dirichlet", "chain"])
def test_diagnostics_match_loop_reference(rw):
    emb, labels = batch(1)
    torch.manual_seed(0)
    gen = GCAHNG(8, num_classes=4, num_layers=1, heads=2, rw=rw).double()
    out = gen(emb, labels, j_mean=3.0, generator=torch.Generator().manual_seed(0))
    d = generator_diagnostics(out, scale=torch.tensor(math.exp(-4.0 / 3.0)))
    # loop references
    cs = [float(F.cosine_similarity(emb[int(a)], out.x[g], dim=0)) for g, a in enumerate(out.anchor_index)]
    src = [0.0] * out.x.size(0)
    for p in range(out.pairs.edge.numel()):
        a, n, g = int(out.pairs.anchor[p]), int(out.pairs.negative[p]), int(out.pairs.group[p])
        src[g] += float(out.pairs.weight[p]) * float(F.cosine_similarity(emb[a], emb[n], dim=0))
    hard = []
    for p in range(out.pairs.edge.numel()):
        a, n = int(out.pairs.anchor[p]), int(out.pairs.negative[p])
        pos = int(next_positive_index(labels)[a])
        hard.append(float((emb[a] - emb[pos] + 1e-6).norm()) < float((emb[a] - emb[n] + 1e-6).norm()))
    lam = out.gnn.lam.index_select(0, out.pairs.edge).flatten().tolist()
    mu = sum(lam) / len(lam)
    sd = math.sqrt(sum((v - mu) ** 2 for v in lam) / (len(lam) - 1))
    assert float(d["cos_anchor_synthetic"]) == pytest.approx(sum(cs) / len(cs), abs=1e-10)
    assert float(d["cos_anchor_source"]) == pytest.approx(sum(src) / len(src), abs=1e-10)
    assert float(d["hardness_gain"]) == pytest.approx(sum(cs) / len(cs) - sum(src) / len(src), abs=1e-10)
    assert float(d["hard_fraction"]) == pytest.approx(sum(hard) / len(hard))
    assert float(d["lambda_mean"]) == pytest.approx(mu, abs=1e-10)
    assert float(d["lambda_std"]) == pytest.approx(sd, abs=1e-10)
    assert float(d["lambda_scale"]) == pytest.approx(math.exp(-4.0 / 3.0))
    # synthetic negatives lie on anchor->negative segments and are at least as hard on average
    assert float(d["hardness_gain"]) >= -1e-12
    dfix = generator_diagnostics(out, fixed_lambda=0.4)
    assert float(dfix["lambda_mean"]) == 0.4 and float(dfix["lambda_std"]) == 0.0


def test_module_logs_diagnostics_each_epoch(tmp_path):
    import lightning as L

    from graphneg.data import MNIST5kPairsDataModule
    from graphneg.losses import NPairLoss
    from graphneg.models import MetricLearningModule, SmallCNN

    L.seed_everything(0)
    dm = MNIST5kPairsDataModule(split="val", class_split="halves", val_train_classes=range(0, 6),
                                val_classes=range(40, 44), images_per_class=6, classes_per_batch=6, samples_per_class=2,
                                eval_batch_size=64)
    gen = GCAHNG(8, num_classes=6, num_layers=1, heads=2)
    mod = MetricLearningModule(SmallCNN(1, 8, width=4), NPairLoss(), generator=gen, num_classes=6, eval_nmi=False)
    L.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, enable_progress_bar=False,
              enable_model_summary=False, logger=False, enable_checkpointing=False, accelerator="cpu").fit(mod, dm)
    metrics = mod.trainer.callback_metrics
    for k in ("cos_anchor_synthetic", "cos_anchor_source", "hardness_gain", "hard_fraction", "lambda_mean",
              "lambda_std", "lambda_scale", "loss_real", "loss_synthetic"):
        assert torch.isfinite(metrics[f"gca/{k}"]), k
    assert 0.0 <= float(metrics["gca/hard_fraction"]) <= 1.0
    # first epoch: J_mean = 1e6 so exp(-alpha / J_mean) ~ 1
    assert float(metrics["gca/lambda_scale"]) == pytest.approx(math.exp(-4.0 / 1e6))
    assert float(metrics["gca/loss_real"]) == pytest.approx(float(metrics["train/J_m_epoch"]), rel=1e-6)


def test_without_node_loss_and_synthetic_term_the_encoder_steps_as_the_plain_loss(tmp_path):
    """node_loss_weight=0 and synthetic_beta=0 (weight 1 - exp(0) = 0 on J_syn) leave only J_m in the
    metric step: one step moves the encoder exactly as the plain module does."""
    import lightning as L

    from graphneg.data import MNIST5kPairsDataModule
    from graphneg.losses import NPairLoss
    from graphneg.models import MetricLearningModule, SmallCNN

    def fit(with_gen):
        L.seed_everything(0)
        dm = MNIST5kPairsDataModule(split="val", class_split="halves", val_train_classes=range(0, 6),
                                    val_classes=range(40, 44), images_per_class=6, classes_per_batch=6,
                                    samples_per_class=2)
        enc = SmallCNN(1, 8, width=4)
        kw = dict(generator=GCAHNG(8, num_classes=6, num_layers=1, heads=2), num_classes=6, node_loss_weight=0.0,
                  synthetic_beta=0.0) if with_gen else {}
        mod = MetricLearningModule(enc, NPairLoss(), eval_nmi=False, **kw)
        torch.manual_seed(1)  # the same augmentation draws whatever the generator's init consumed
        L.Trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0, enable_progress_bar=False,
                  enable_model_summary=False, logger=False, enable_checkpointing=False,
                  accelerator="cpu").fit(mod, dm)
        return enc.state_dict()

    plain, gca = fit(False), fit(True)
    for k in plain:
        torch.testing.assert_close(gca[k], plain[k], rtol=0, atol=0, msg=k)
