"""Console progress bars (issue 12): same results with the bar on and off, nothing printed when off."""
import io
import sys

import pytest
import torch
from lightning.pytorch import LightningModule
from torch.utils.data import DataLoader, TensorDataset

import graphneg.progress as gp
from graphneg.callbacks import embed_loader
from graphneg.metrics.retrieval import retrieval_metrics


class _TTY(io.StringIO):
    def isatty(self):
        return True


def _data(n=300, d=8, classes=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_progress_enabled_rule(monkeypatch):
    monkeypatch.setattr(gp, "PROGRESS_THRESHOLD", 100)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal
    assert gp.progress_enabled(None, 101) is False
    assert gp.progress_enabled(True, 5) is True and gp.progress_enabled(False, 10 ** 9) is False
    monkeypatch.setattr(sys, "stdout", _TTY())
    assert gp.progress_enabled(None, 101) is True
    assert gp.progress_enabled(None, 100) is False  # "> threshold", not ">="
    assert gp.progress_enabled(None, None) is False  # unknown size counts as small
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        gp.progress_enabled("yes", 10)


def test_retrieval_metrics_same_with_and_without_bar(capsys, monkeypatch):
    emb, lab = _data()
    monkeypatch.setattr(gp, "PROGRESS_THRESHOLD", 10)  # 300 queries count as "large" under None
    off = retrieval_metrics(emb, lab, ks=(1, 2, 4), nmi=False, chunk_size=64, progress=False)
    auto = retrieval_metrics(emb, lab, ks=(1, 2, 4), nmi=False, chunk_size=64)  # pytest stdout: not a TTY
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # nothing printed when off / non-TTY
    on = retrieval_metrics(emb, lab, ks=(1, 2, 4), nmi=False, chunk_size=64, progress=True)
    assert on == off == auto  # exact equality of every metric
    # the reference: a dense Recall@1 (queries are their own gallery, self excluded)
    x = torch.nn.functional.normalize(emb, dim=1)
    s = x @ x.t()
    s.fill_diagonal_(float("-inf"))
    nn1 = s.argmax(1)
    keep = torch.bincount(lab, minlength=12)[lab] > 1
    assert off["recall@1"] == pytest.approx((lab[nn1] == lab)[keep].double().mean().item(), abs=1e-12)


def test_retrieval_bar_is_drawn_on_a_terminal(monkeypatch):
    # a TTY console: the bar really runs (rich renders to the given file) and the results do not change
    from rich.console import Console
    import rich.progress

    buf = _TTY()
    console = Console(file=buf, force_terminal=True, width=100)
    orig = rich.progress.Progress.__init__

    def init(self, *a, **k):
        k["console"] = console
        orig(self, *a, **k)

    monkeypatch.setattr(rich.progress.Progress, "__init__", init)
    monkeypatch.setattr(gp, "PROGRESS_THRESHOLD", 10)
    monkeypatch.setattr(sys, "stdout", buf)
    emb, lab = _data(seed=1)
    res = retrieval_metrics(emb, lab, ks=(1, 8), nmi=False, chunk_size=50)  # progress=None, TTY, large
    assert "retrieval" in buf.getvalue()
    assert res == retrieval_metrics(emb, lab, ks=(1, 8), nmi=False, chunk_size=50, progress=False)


class _Embedder(LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def embed_batch(self, batch):
        x, y = batch
        return self.lin(x), y


def test_embed_loader_same_with_and_without_bar(capsys, monkeypatch):
    torch.manual_seed(0)
    model = _Embedder()
    emb, lab = _data(n=130)
    loader = DataLoader(TensorDataset(emb, lab), batch_size=32)
    monkeypatch.setattr(gp, "PROGRESS_THRESHOLD", 10)
    e_off, l_off = embed_loader(model, loader, limit=100, progress=False)
    e_auto, _ = embed_loader(model, loader, limit=100)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    e_on, l_on = embed_loader(model, loader, limit=100, progress=True)
    assert torch.equal(e_on, e_off) and torch.equal(e_auto, e_off) and torch.equal(l_on, l_off)
    with torch.no_grad():
        ref = model.lin(emb[:100])
    torch.testing.assert_close(e_off, ref, rtol=0, atol=1e-6)
    assert torch.equal(l_off, lab[:100])


def test_second_live_display_does_not_fail():
    # inside another rich live display (e.g. Lightning's RichProgressBar) the work runs without a bar
    from rich.progress import Progress

    with Progress(transient=True) as outer:
        outer.add_task("fit", total=1)
        with gp.ProgressBar("inner", total=3, enabled=True) as bar:
            bar.advance(3)
        assert bar._progress is None
