"""ContrastiveModule / GraphContrastiveModule: short CLI fits on the offline data (MNIST-5k, MUTAG from
grakel) with TensorBoard scalars + UnReMix histograms, checkpoints that reload, one-line loss switches,
the ablation overrides, the configs of experiments/unremix, the probe callbacks of graphneg.callbacks,
and the helpers against loop references.
Slow tests (``-m slow``): a few epochs of training with each loss beat the untrained encoder."""
import glob
import json
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from graphneg.callbacks import EmbeddingProbe, KNNProbe, LinearProbe, SVCProbe
from graphneg.cli import cli_main
from graphneg.data import MNIST5kDataModule, TUDataModule
from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss
from graphneg.losses.contrastive import negative_pair_mask
from graphneg.metrics import knn_accuracy, svc_protocol
from graphneg.metrics.probe import knn_loo_accuracy, linear_probe
from graphneg.models import ContrastiveModule, GINEncoder, GraphContrastiveModule, SmallCNN
from graphneg.models.contrastive import build_projector, encoder_dim

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = os.path.join(HERE, "..", "experiments", "unremix")
MNIST_CFG = os.path.join(CFG, "mnist5k_unremix.yaml")
MUTAG_CFG = os.path.join(CFG, "mutag_unremix.yaml")
SCORES = ("similarity", "uncertainty", "representativeness", "weights")

def callbacks_arg(*specs):
    """``--trainer.callbacks=[...]``: replaces the config's probe callbacks (class name, init_args)."""
    return "--trainer.callbacks=" + json.dumps(
        [{"class_path": f"graphneg.callbacks.{name}", "init_args": args} for name, args in specs])


def probe(trainer, cls):
    (found,) = [c for c in trainer.callbacks if type(c) is cls]
    return found


MNIST_SMALL = [
    "--data.init_args.limit_per_class=20", "--data.init_args.batch_size=32", "--data.init_args.num_workers=0",
    "--model.init_args.encoder.init_args.width=8", "--model.init_args.projector_dims=[16, 8]",
    callbacks_arg(("KNNProbe", {"k": 5, "temperature": 0.1}), ("LinearProbe", {"epochs": 5})),
    "--model.init_args.projector_max=16",
    "--trainer.limit_train_batches=2", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
]


def graph_small(root):
    return [
        f"--data.init_args.root={root}", "--data.init_args.batch_size=32",
        "--model.init_args.encoder.init_args.hidden_channels=8",
        callbacks_arg(("SVCProbe", {"val_folds": 3, "folds": 3, "val_C_grid": [1.0], "C_grid": [1.0, 10.0]})),
        "--trainer.limit_train_batches=2", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1", "--trainer.check_val_every_n_epoch=1",
    ]


def read_events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def scalar(acc, tag):
    return acc.Scalars(tag)[-1].value


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ CLI fits
def test_image_fit_logs_histograms_probe_and_reloads(tmp_path):
    cli = cli_main(["fit", "--config", MNIST_CFG, f"--trainer.default_root_dir={tmp_path}", *MNIST_SMALL])
    model, dm = cli.model, cli.datamodule
    logdir = cli.trainer.logger.log_dir
    assert glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    acc = read_events(logdir)
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss_step", "train/loss_epoch", "train/pos_cos", "val/knn_top1", "probe/knn_top1",
                "probe/linear_top1"):
        assert tag in tags, (tag, tags)
    assert any(t.startswith("lr-") for t in tags)
    # UnReMix score histograms over the negative pairs of the last batch: 2B (2B - 2) values
    hists = set(acc.Tags()["histograms"])
    b = 32
    for name in SCORES:
        h = acc.Histograms(f"unremix/{name}")[-1].histogram_value
        assert h.num == 2 * b * (2 * b - 2)
        assert h.min > 0
    assert {f"unremix/{n}" for n in SCORES} <= hists
    assert os.path.isfile(os.path.join(logdir, "projector_config.pbtxt"))

    # the end-of-fit kNN probe equals an independent recomputation from the final encoder
    model.eval()
    with torch.no_grad():
        bank = model.encoder(torch.stack([dm.train_eval_set[i][0] for i in range(len(dm.train_eval_set))]))
        query = model.encoder(torch.stack([dm.test_set[i][0] for i in range(len(dm.test_set))]))
    ref = knn_accuracy(bank, dm.train_eval_set.labels, query, dm.test_set.labels, k=5, temperature=0.1)
    assert probe(cli.trainer, KNNProbe).results["probe/knn_top1"] == pytest.approx(ref, abs=1e-6)
    assert scalar(acc, "probe/knn_top1") == pytest.approx(ref, abs=1e-6)
    # one epoch: the validation after it saw the final encoder too (bank: train_eval_dataloader)
    assert scalar(acc, "val/knn_top1") == pytest.approx(ref, abs=1e-6)
    assert 0.0 <= scalar(acc, "probe/linear_top1") <= 1.0

    last = os.path.join(logdir, "checkpoints", "last.ckpt")
    reloaded = ContrastiveModule.load_from_checkpoint(
        last, encoder=SmallCNN(1, 0, width=8), loss=UnReMixLoss(), weights_only=False
    )
    assert same_state(reloaded, model)
    assert reloaded.hparams.projector_dims == [16, 8]


def test_graph_fit_logs_svc_histograms_and_reloads(tmp_path):
    cli = cli_main(["fit", "--config", MUTAG_CFG, f"--trainer.default_root_dir={tmp_path}",
                    *graph_small(tmp_path / "tu")])
    model, dm = cli.model, cli.datamodule
    logdir = cli.trainer.logger.log_dir
    acc = read_events(logdir)
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss_step", "train/loss_epoch", "val/svc_acc", "val/svc_std", "probe/svc_acc",
                "probe/svc_std"):
        assert tag in tags, (tag, tags)
    # 188 graphs, batches of 32: the histograms come from the second batch (32 graphs)
    for name in SCORES:
        assert acc.Histograms(f"unremix/{name}")[-1].histogram_value.num == 64 * 62

    # the full-protocol probe equals svc_protocol on independently computed embeddings
    model.eval()
    from torch_geometric.data import Batch

    graphs = Batch.from_data_list([dm.dataset[i] for i in range(len(dm.dataset))])
    with torch.no_grad():
        emb = model.encoder(graphs.x, graphs.edge_index, graphs.batch, num_graphs=graphs.num_graphs)
    ref = svc_protocol(emb, graphs.y, folds=3, C_grid=(1.0, 10.0), seed=0)
    assert probe(cli.trainer, SVCProbe).results["probe/svc_acc"] == pytest.approx(ref["mean"], abs=1e-9)
    assert scalar(acc, "probe/svc_acc") == pytest.approx(ref["mean"], abs=1e-6)
    ref_val = svc_protocol(emb, graphs.y, folds=3, C_grid=(1.0,), seed=0)  # the fast validation setting
    assert scalar(acc, "val/svc_acc") == pytest.approx(ref_val["mean"], abs=1e-6)

    last = os.path.join(logdir, "checkpoints", "last.ckpt")
    reloaded = GraphContrastiveModule.load_from_checkpoint(
        last, encoder=GINEncoder(7, 8, 3), loss=UnReMixLoss(), weights_only=False
    )
    assert same_state(reloaded, model)

    # the test stage runs the full protocol on the reloaded weights
    cli_t = cli_main(["test", "--config", MUTAG_CFG, f"--trainer.default_root_dir={tmp_path}",
                      f"--ckpt_path={last}", *graph_small(tmp_path / "tu")])
    res = cli_t.trainer.callback_metrics
    assert float(res["test/svc_acc"]) == pytest.approx(ref["mean"], abs=1e-6)


@pytest.mark.parametrize("loss_cls", [InfoNCELoss, DebiasedContrastiveLoss, HCLLoss, UnReMixLoss])
def test_loss_is_one_config_line(loss_cls):
    cli = cli_main(["--config", MNIST_CFG, f"--model.init_args.loss.class_path=graphneg.losses.{loss_cls.__name__}",
                    "--trainer.logger=false"], run=False)
    assert type(cli.model.loss) is loss_cls
    assert cli.model.loss.temperature == 0.5  # the config's temperature is kept


def test_switched_loss_trains_without_histograms(tmp_path):
    cli = cli_main(["fit", "--config", MNIST_CFG, f"--trainer.default_root_dir={tmp_path}",
                    "--model.init_args.loss.class_path=graphneg.losses.HCLLoss", *MNIST_SMALL,
                    callbacks_arg(("KNNProbe", {"k": 5, "at_fit_end": False}))])
    assert isinstance(cli.model.loss, HCLLoss)
    acc = read_events(cli.trainer.logger.log_dir)
    assert "train/loss_epoch" in acc.Tags()["scalars"]
    assert not acc.Tags()["histograms"]  # HCL has no UnReMix scores


ABLATION = {"sim": (1, 0, 0), "unc": (0, 1, 0), "rep": (0, 0, 1), "sim_unc": (1, 1, 0), "sim_rep": (1, 0, 1),
            "unc_rep": (0, 1, 1), "sim_unc_rep": (1, 1, 1)}


def test_ablation_overrides_set_the_weights():
    files = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(CFG, "ablation", "*.yaml")))
    assert files == sorted(ABLATION)
    for name, weights in ABLATION.items():
        base = os.path.join(CFG, "mutag.yaml" if name != "sim" else "cifar10.yaml")
        cli = cli_main(["--config", base, "--config", os.path.join(CFG, "ablation", f"{name}.yaml"),
                        "--trainer.logger=false"], run=False)
        loss = cli.model.loss
        assert isinstance(loss, UnReMixLoss)
        assert loss.weights == tuple(float(w) for w in weights)
        assert (loss.temperature, loss.tau_plus, loss.beta) == (0.5, 0.1, 1.0)


def test_named_weights_and_the_default_direction_through_the_cli(tmp_path):
    """A config can name the weights in the paper's terms; the configs' loss follows the diversity default."""
    override = tmp_path / "named.yaml"
    override.write_text(
        "model:\n  init_args:\n    loss:\n      class_path: graphneg.losses.UnReMixLoss\n      init_args:\n"
        "        weights: {uncertainty: 2.0, similarity: 1.0, representativeness: 0.5}\n"
    )
    cli = cli_main(["--config", os.path.join(CFG, "mutag.yaml"), "--config", str(override),
                    "--trainer.logger=false"], run=False)
    loss = cli.model.loss
    assert loss.weights == (1.0, 2.0, 0.5)  # (similarity, uncertainty, representativeness)
    assert loss.representativeness == "diversity" and loss.k == 10


def test_all_unremix_configs_instantiate(tmp_path):
    expected = {"cifar10": ("CIFAR10DataModule", "CifarResNet"), "cifar100": ("CIFAR100DataModule", "CifarResNet"),
                "stl10": ("STL10DataModule", "CifarResNet"), "mnist5k_unremix": ("MNIST5kDataModule", "SmallCNN")}
    tu = ("mutag", "ptc_mr", "enzymes", "imdb_binary", "imdb_multi", "dd", "reddit_binary", "proteins",
          "mutag_unremix", "cuneiform_unremix")
    names = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(CFG, "*.yaml")))
    assert names == sorted(list(expected) + list(tu))
    for name in names:
        cli = cli_main(["--config", os.path.join(CFG, f"{name}.yaml"), "--trainer.logger=false"], run=False)
        model, dm = cli.model, cli.datamodule
        assert isinstance(model.loss, UnReMixLoss) and model.loss.weights == (1.0, 1.0, 1.0)
        if name in expected:
            assert (type(dm).__name__, type(model.encoder).__name__) == expected[name]
        else:
            assert isinstance(model, GraphContrastiveModule) and isinstance(model.encoder, GINEncoder)
            assert (model.encoder.hidden_channels, model.encoder.num_layers, dm.batch_size) == (32, 3, 128)
            # in_channels left to GraphContrastiveModule.setup() (tests/test_cli.py fits MUTAG that way)
            assert model.encoder.in_channels is None
        if name.startswith("cifar") or name == "stl10":  # the HCL image setting
            assert dm.batch_size == 256 and model.hparams.lr == 1e-3 and model.hparams.weight_decay == 1e-6
            assert model.projector.in_dim == 512 and model.projector.hidden_dim == 512
            assert model.projector.out_dim == 128


def test_in_channels_mismatch_is_reported(tmp_path):
    with pytest.raises(ValueError, match=r"in_channels=7"):
        cli_main(["fit", "--config", MUTAG_CFG, f"--trainer.default_root_dir={tmp_path}",
                  "--model.init_args.encoder.init_args.in_channels=5", *graph_small(tmp_path / "tu")])


# ------------------------------------------------------------------------------------ units
def test_training_step_is_the_loss_of_the_projected_views():
    torch.manual_seed(0)
    v1, v2 = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for supervised in (False, True):
        model = ContrastiveModule(SmallCNN(1, 0, width=4), DebiasedContrastiveLoss(0.5, 0.1), projector_dims=(8, 4),
                                  supervised=supervised)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = model.training_step((v1, v2, y), 0)
        z1 = model.projector(model.encoder(v1))
        z2 = model.projector(model.encoder(v2))
        ref = DebiasedContrastiveLoss(0.5, 0.1)(z1, z2, y if supervised else None)
        assert torch.allclose(got, ref, atol=1e-6)
    unsup = DebiasedContrastiveLoss(0.5, 0.1)(z1, z2)
    assert not torch.allclose(ref, unsup)  # the labels changed the loss
    model = ContrastiveModule(SmallCNN(1, 0, width=4), InfoNCELoss(), projector_dims=(8, 4), supervised=True)
    with pytest.raises(ValueError, match="supervised=True"):
        model.training_step((v1, v2), 0)


def test_graph_training_step_uses_forward_data(tmp_path):
    dm = TUDataModule("MUTAG", root=str(tmp_path), batch_size=8, seed=0)
    dm.setup()
    v1, v2 = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = GraphContrastiveModule(GINEncoder(7, 8, 2), InfoNCELoss(0.2))
    assert [m.out_features for m in model.projector.modules() if isinstance(m, torch.nn.Linear)] == [16, 16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = model.training_step((v1, v2), 0)
    ref = InfoNCELoss(0.2)(model.projector(model.encoder.forward_data(v1)), model.projector(model.encoder.forward_data(v2)))
    assert torch.allclose(got, ref, atol=1e-6)


def test_negative_pair_mask_matches_loop():
    b = 4
    labels = torch.tensor([0, 1, 0, 2])
    for lab in (None, labels):
        mask = negative_pair_mask(b, lab)
        ref = torch.zeros(2 * b, 2 * b, dtype=torch.bool)
        full = None if lab is None else torch.cat([lab, lab])
        for i in range(2 * b):
            for j in range(2 * b):
                ref[i, j] = j != i and j != (i + b) % (2 * b) and (full is None or full[i] != full[j])
        assert torch.equal(mask, ref)
    # with M = 3 extra negatives (columns 2B..2B+2), excluded by their labels; the one mask of the losses
    from graphneg.losses.contrastive import contrastive_pairs

    neg_labels = torch.tensor([1, 5, 0])
    for lab, nl in ((None, None), (labels, neg_labels)):
        mask = negative_pair_mask(b, lab, num_extra=3, neg_labels=nl)
        ref = torch.zeros(2 * b, 2 * b + 3, dtype=torch.bool)
        rows = None if lab is None else torch.cat([lab, lab])
        cols = None if lab is None else torch.cat([lab, lab, nl])
        for i in range(2 * b):
            for j in range(2 * b + 3):
                ref[i, j] = j != i and j != (i + b) % (2 * b) and (rows is None or rows[i] != cols[j])
        assert torch.equal(mask, ref)
        z = torch.randn(2 * b + 3, 5)
        pairs = contrastive_pairs(z[:b], z[b:2 * b], lab, neg=z[2 * b:], neg_labels=nl)
        assert torch.equal(pairs.neg_mask, ref)
    with pytest.raises(ValueError, match="need neg_labels with 3 class ids"):
        negative_pair_mask(b, labels, num_extra=3)


def test_dcl_loss_is_a_deprecated_alias_of_debiased_contrastive_loss():
    from graphneg.losses import DCLLoss

    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    with pytest.warns(FutureWarning, match="use graphneg.losses.DebiasedContrastiveLoss"):
        old = DCLLoss(0.4, 0.1)
    assert isinstance(old, DebiasedContrastiveLoss)
    assert torch.equal(old(z1, z2), DebiasedContrastiveLoss(0.4, 0.1)(z1, z2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DebiasedContrastiveLoss()  # the new name does not warn
    # the alias takes exactly its target's arguments (the README's multi-GPU list names it)
    import inspect

    assert inspect.signature(DCLLoss.__init__) == inspect.signature(DebiasedContrastiveLoss.__init__)
    with pytest.warns(FutureWarning, match="deprecated"):
        multi = DCLLoss(temperature=0.4, tau_plus=0.1, gather_distributed=True)
    assert multi.gather_distributed and multi.tau_plus == 0.1 and multi.temperature == 0.4
    assert torch.equal(multi(z1, z2), DebiasedContrastiveLoss(0.4, 0.1)(z1, z2))  # one process: no gather


def test_knn_loo_matches_loop_over_held_out_samples():
    torch.manual_seed(0)
    emb = torch.randn(30, 5)
    lab = torch.randint(0, 3, (30,))
    for k in (1, 4, 50):
        ref = 0.0
        for i in range(30):
            keep = torch.arange(30) != i
            ref += knn_accuracy(emb[keep], lab[keep], emb[i:i + 1], lab[i:i + 1], k=k, temperature=0.2,
                                num_classes=3)
        assert knn_loo_accuracy(emb, lab, k=k, temperature=0.2, chunk_size=7) == pytest.approx(ref / 30)
    with pytest.raises(ValueError, match="at least two"):
        knn_loo_accuracy(emb[:1], lab[:1])
    from graphneg.metrics.probe import knn_predict

    with pytest.raises(ValueError, match="queries to be the bank itself"):
        knn_predict(emb, lab, emb[:5], exclude_self=True)


def test_linear_probe_under_inference_mode_equals_the_plain_call():
    """Lightning's evaluation hooks run under torch.inference_mode; the probe trains all the same."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.arange(40) % 3
    ref = linear_probe(x[:30], y[:30], x[30:], y[30:], epochs=20, batch_size=8, seed=1)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors
        got = linear_probe(xi[:30], yi[:30], xi[30:], yi[30:], epochs=20, batch_size=8, seed=1)
    assert got == ref


def test_projector_and_encoder_dims():
    assert encoder_dim(SmallCNN(1, 0, width=4)) == 16
    assert encoder_dim(SmallCNN(1, 10, width=4)) == 10
    assert encoder_dim(GINEncoder(3, 8, 2)) == 16
    head = build_projector(16, (32, 32, 4), batch_norm=False)
    x = torch.randn(5, 16)
    ref = head.net[4](F.relu(head.net[2](F.relu(head.net[0](x)))))
    assert torch.allclose(head(x), ref)
    assert isinstance(build_projector(16, ()), torch.nn.Identity)
    with pytest.raises(ValueError, match="share one width"):
        build_projector(16, (32, 16, 4))
    with pytest.raises(ValueError, match="explicit projector"):
        ContrastiveModule(torch.nn.Sequential(torch.nn.Flatten()), InfoNCELoss())


def test_bad_arguments_are_reported():
    enc = SmallCNN(1, 0, width=4)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ContrastiveModule(enc, InfoNCELoss(), optimizer="rmsprop")
    with pytest.raises(ValueError, match="scheduler must be one of"):
        ContrastiveModule(enc, InfoNCELoss(), scheduler="step")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        KNNProbe(k=0)
    with pytest.raises(ValueError, match="KNNProbe: temperature must be a finite number > 0"):
        KNNProbe(temperature=0.0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        LinearProbe(epochs=0)
    with pytest.raises(ValueError, match="loss must be a contrastive loss"):
        ContrastiveModule(enc, "infonce")
    with pytest.raises(TypeError, match="eval"):  # the validation monitor is a callback now
        GraphContrastiveModule(GINEncoder(3, 4, 1), InfoNCELoss(), eval="svc")
    with pytest.raises(ValueError, match="val_folds"):
        SVCProbe(val_folds=1)
    with pytest.raises(ValueError, match="C_grid must hold positive"):
        SVCProbe(C_grid=(0.0, 1.0))
    model = ContrastiveModule(enc, InfoNCELoss())
    with pytest.raises(ValueError, match=r"\(view1, view2\)"):
        model.training_step(torch.randn(4, 1, 8, 8), 0)


def test_optimizers_follow_the_config():
    enc = SmallCNN(1, 0, width=4)
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        opt = ContrastiveModule(enc, InfoNCELoss(), optimizer=name, lr=0.3, weight_decay=0.01).configure_optimizers()
        assert type(opt) is cls
        assert opt.defaults["lr"] == 0.3 and opt.defaults["weight_decay"] == 0.01
    out = ContrastiveModule(enc, InfoNCELoss(), scheduler="cosine", lr=0.2).configure_optimizers()
    sched = out["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and out["lr_scheduler"]["interval"] == "step"


class _NoBankDataModule:
    """Only a test loader: the probes' evaluate() must fall back to leave-one-out kNN / a half split."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def test_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=10)


def test_evaluate_without_reference_set_uses_leave_one_out():
    torch.manual_seed(0)
    x = torch.randn(40, 1, 8, 8)
    y = torch.arange(40) % 4
    model = ContrastiveModule(SmallCNN(1, 0, width=4), InfoNCELoss())
    knn = KNNProbe(k=5).evaluate(model, _NoBankDataModule(x, y))
    lin = LinearProbe(epochs=3, seed=4).evaluate(model, _NoBankDataModule(x, y))
    assert model.training  # restored after the evaluation
    model.eval()
    with torch.no_grad():
        emb = model.encoder(x)
    assert knn["knn_top1"] == pytest.approx(knn_loo_accuracy(emb, y, k=5, temperature=0.1))
    # the fallback linear probe: a seeded half / half split of the evaluation embeddings
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(4))
    ref = linear_probe(emb[perm[:20]], y[perm[:20]], emb[perm[20:]], y[perm[20:]], epochs=3, seed=4, num_classes=4)
    assert lin["linear_top1"] == pytest.approx(ref, abs=1e-6)


class _MemoryTestDataModule:
    """Training views + ``[memory, test]`` evaluation loaders (``val_with_memory=True`` layout)."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.v1, self.v2 = torch.randn(16, 1, 8, 8, generator=g), torch.randn(16, 1, 8, 8, generator=g)
        self.mem_x, self.mem_y = torch.randn(30, 1, 8, 8, generator=g), torch.arange(30) % 3
        self.test_x, self.test_y = torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 3

    def lightning(self):
        import lightning as L

        me = self
        TD, DL = torch.utils.data.TensorDataset, torch.utils.data.DataLoader

        class DM(L.LightningDataModule):
            def train_dataloader(self):
                return DL(TD(me.v1, me.v2), batch_size=8)

            def val_dataloader(self):
                return [DL(TD(me.mem_x, me.mem_y), batch_size=7), DL(TD(me.test_x, me.test_y), batch_size=6)]

            def test_dataloader(self):
                return self.val_dataloader()

        return DM()


def test_probe_callbacks_in_validation_and_test_match_the_probe_functions(tmp_path):
    """KNNProbe / LinearProbe / SVCProbe on a Trainer: loader 0 is the reference set, the last the queries;
    every logged value equals the probe function on embeddings computed here from the final encoder."""
    import lightning as L

    data = _MemoryTestDataModule()
    torch.manual_seed(0)
    model = ContrastiveModule(SmallCNN(1, 0, width=4), InfoNCELoss(), projector_dims=(8, 4), projector_max=5)
    probes = [KNNProbe(k=4, temperature=0.2, at_fit_end=False),
              LinearProbe(epochs=4, batch_size=16, seed=2, on_validation=True, at_fit_end=False),
              SVCProbe(folds=3, C_grid=(1.0, 10.0), val_folds=2, val_C_grid=(1.0,), at_fit_end=False)]
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=1, callbacks=probes,
                        default_root_dir=tmp_path)
    trainer.fit(model, data.lightning())
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    trainer.test(model, data.lightning(), verbose=False)
    test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    model.eval()
    with torch.no_grad():
        bank, query = model.encoder(data.mem_x), model.encoder(data.test_x)
    knn = knn_accuracy(bank, data.mem_y, query, data.test_y, k=4, temperature=0.2)
    lin = linear_probe(bank, data.mem_y, query, data.test_y, epochs=4, batch_size=16, seed=2)
    svc_val = svc_protocol(query, data.test_y, folds=2, C_grid=(1.0,), seed=0)
    svc_test = svc_protocol(query, data.test_y, folds=3, C_grid=(1.0, 10.0), seed=0)
    assert val["val/knn_top1"] == pytest.approx(knn, abs=1e-6) and test["test/knn_top1"] == pytest.approx(knn, abs=1e-6)
    assert val["val/linear_top1"] == pytest.approx(lin, abs=1e-6)
    assert test["test/linear_top1"] == pytest.approx(lin, abs=1e-6)
    assert val["val/svc_acc"] == pytest.approx(svc_val["mean"], abs=1e-6)
    assert test["test/svc_acc"] == pytest.approx(svc_test["mean"], abs=1e-6)
    assert test["test/svc_std"] == pytest.approx(svc_test["std"], abs=1e-6)
    assert probes[0].results["val/knn_top1"] == pytest.approx(knn, abs=1e-6)
    # the projector snapshot keeps the first projector_max query embeddings (not the reference set)
    emb, lab, img = model._last_eval
    assert torch.allclose(emb, query[:5], atol=1e-6) and torch.equal(lab, data.test_y[:5])
    assert torch.equal(img, data.test_x[:5])


class _BankDataModule(_NoBankDataModule):
    """A test loader and a reference loader (MNIST5kDataModule's train_eval_dataloader)."""

    def __init__(self, x, y, bank_x, bank_y):
        super().__init__(x, y)
        self.bank_x, self.bank_y = bank_x, bank_y

    def train_eval_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.bank_x, self.bank_y), batch_size=7)


def test_probe_reference_limit_takes_the_first_reference_samples():
    torch.manual_seed(1)
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 3
    bx, by = torch.randn(25, 1, 8, 8), torch.arange(25) % 3
    model = ContrastiveModule(SmallCNN(1, 0, width=4), InfoNCELoss())
    model.eval()
    with torch.no_grad():
        q, b = model.encoder(x), model.encoder(bx)
    dm = _BankDataModule(x, y, bx, by)
    for limit, n in ((None, 25), (10, 10)):  # 10: one and a half loader batches of 7
        got = KNNProbe(k=3, reference_limit=limit).evaluate(model, dm)["knn_top1"]
        assert got == pytest.approx(knn_accuracy(b[:n], by[:n], q, y, k=3, temperature=0.1))
    with pytest.raises(ValueError, match="reference_limit"):
        KNNProbe(reference_limit=0)


def test_probe_needs_the_embedding_outputs():
    class NoEmbed(torch.nn.Module):
        training = False

    with pytest.raises(TypeError, match="embed_batch"):
        KNNProbe().evaluate(NoEmbed(), _NoBankDataModule(torch.randn(4, 1, 8, 8), torch.arange(4)))
    with pytest.raises(TypeError, match="'embeddings': h"):
        KNNProbe()._collect(torch.zeros(3), 0)
    assert isinstance(KNNProbe(), EmbeddingProbe)


# ------------------------------------------------------------------------------------ slow
SLOW_EPOCHS = 5


class _CachedViews:
    """MNIST-5k (stratified split) for the slow tests: training views pre-computed per epoch from the
    raw digits (normalised once, by the views), evaluation through MNIST5kDataModule's loaders."""

    def __init__(self, per_class=100, epochs=SLOW_EPOCHS, seed=0):
        from graphneg.data.image_augment import digit_views

        self.base = MNIST5kDataModule(mode="contrastive", split="stratified", eval_batch_size=1000)
        self.base.setup()
        lab = self.base.train_set.labels
        keep = torch.cat([(lab == c).nonzero(as_tuple=True)[0][:per_class] for c in range(10)]).sort().values
        images, self.labels = self.base.train_set.images[keep], lab[keep]
        views = digit_views(crop_scale=(0.3, 1.0), strength=0.5)
        torch.manual_seed(seed)
        self.cache = []
        for _ in range(epochs):
            pairs = [views(img.float() / 255.0) for img in images]
            self.cache.append((torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])))

    def datamodule(self):
        import lightning as L

        cache, labels, base = self.cache, self.labels, self.base

        class DM(L.LightningDataModule):
            def train_dataloader(self):
                v1, v2 = cache[self.trainer.current_epoch % len(cache)]
                g = torch.Generator().manual_seed(self.trainer.current_epoch)
                return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(v1, v2, labels), batch_size=64,
                                                   shuffle=True, drop_last=True, generator=g)

            def train_eval_dataloader(self):
                return base.train_eval_dataloader()

            def test_dataloader(self):
                return base.test_dataloader()

        return DM()


@pytest.fixture(scope="module")
def mnist_views():
    return _CachedViews()


@pytest.mark.slow
@pytest.mark.parametrize("loss_cls", [InfoNCELoss, DebiasedContrastiveLoss, HCLLoss, UnReMixLoss])
def test_training_beats_the_untrained_encoder_on_mnist(loss_cls, mnist_views, tmp_path):
    import lightning as L

    L.seed_everything(0, verbose=False)
    dm = mnist_views.datamodule()
    # the plain Linear head this test was written with: SmallCNN's default became GCA-HNG's BatchNorm1d +
    # Linear head (issue 18), with which 5 epochs lift kNN top-1 by only 0.026 (InfoNCE, seed 0)
    model = ContrastiveModule(SmallCNN(1, 64, width=16, head="linear"), loss_cls(), projector_dims=(128, 64),
                              lr=2e-3, log_histograms=False)
    knn = KNNProbe(k=20)
    before = knn.evaluate(model, dm)["knn_top1"]
    trainer = L.Trainer(max_epochs=SLOW_EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        reload_dataloaders_every_n_epochs=1, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    after = knn.evaluate(model, dm)["knn_top1"]
    assert after > before + 0.03, (loss_cls.__name__, before, after)


@pytest.mark.slow
@pytest.mark.parametrize("loss_cls", [InfoNCELoss, DebiasedContrastiveLoss, HCLLoss, UnReMixLoss])
def test_training_keeps_the_svc_accuracy_on_mutag(loss_cls, tmp_path):
    """20 epochs (GraphCL's schedule) with each loss, SVC protocol, mean over 3 seeds.

    Not "trained > untrained": on MUTAG the random GIN's SVC accuracy (87.8 +- 1.6 over 3 seeds) is
    already at the level of the trained encoders (85-88%, experiments/results/contrastive_comparison.md),
    and which side wins changes with the seed and even with the thread count. What holds, and is
    checked: training with every loss keeps the accuracy within 4 points of the untrained encoder (no
    collapse of the representation) and far above the majority class (66.5%).
    """
    import lightning as L

    before, after = [], []
    for seed in (0, 1, 2):
        dm = TUDataModule("MUTAG", root=str(tmp_path), batch_size=128, seed=seed)
        dm.setup()
        L.seed_everything(seed, verbose=False)
        model = GraphContrastiveModule(GINEncoder(dm.num_features, 32, 3), loss_cls(),
                                       log_histograms=False)
        svc = SVCProbe(seed=seed)
        before.append(svc.evaluate(model, dm)["svc_acc"])
        L.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                  default_root_dir=tmp_path).fit(model, dm)
        after.append(svc.evaluate(model, dm)["svc_acc"])
    mean_before, mean_after = sum(before) / 3, sum(after) / 3
    assert mean_after > mean_before - 0.04, (loss_cls.__name__, before, after)
    assert mean_after > 0.665 + 0.1, (loss_cls.__name__, after)


def test_probes_at_fit_end_embed_each_set_once_and_match_evaluate(tmp_path):
    """KNNProbe + LinearProbe at the end of one fit share the embeddings: the test and the reference
    set are embedded once (counted in embed_batch), and each value equals the probe's own evaluate()."""
    import lightning as L

    g = torch.Generator().manual_seed(3)
    v1, v2 = torch.randn(16, 1, 8, 8, generator=g), torch.randn(16, 1, 8, 8, generator=g)
    x, y = torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 4
    bank_x, bank_y = torch.randn(28, 1, 8, 8, generator=g), torch.arange(28) % 4
    TD, DL = torch.utils.data.TensorDataset, torch.utils.data.DataLoader

    class DM(L.LightningDataModule):
        def train_dataloader(self):
            return DL(TD(v1, v2), batch_size=8)

        def test_dataloader(self):
            return DL(TD(x, y), batch_size=10)

        def train_eval_dataloader(self):
            return DL(TD(bank_x, bank_y), batch_size=7)

    torch.manual_seed(0)
    model = ContrastiveModule(SmallCNN(1, 0, width=4), InfoNCELoss(), projector_dims=(8, 4))
    seen = []
    plain_embed = model.embed_batch
    model.embed_batch = lambda batch: seen.append(batch[0].size(0)) or plain_embed(batch)
    probes = [KNNProbe(k=3), LinearProbe(epochs=3, seed=1)]
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=probes,
                        default_root_dir=tmp_path)
    trainer.fit(model, DM())
    assert sum(seen) == 20 + 28  # each set once, not once per probe (it was 2 x (20 + 28))
    seen.clear()
    assert probes[0].results["probe/knn_top1"] == pytest.approx(probes[0].evaluate(model, DM())["knn_top1"], abs=1e-7)
    assert probes[1].results["probe/linear_top1"] == pytest.approx(
        probes[1].evaluate(model, DM())["linear_top1"], abs=1e-7)
    assert sum(seen) == 2 * (20 + 28)  # evaluate() outside a fit shares nothing
    from graphneg.callbacks import _FIT_END_EMBEDDINGS
    assert trainer not in _FIT_END_EMBEDDINGS  # dropped at on_fit_end
