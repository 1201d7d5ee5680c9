"""The README's plain-PyTorch GCA-HNG loop runs, and one step of it is one step of MetricLearningModule.

README_EXAMPLE is the snippet the README shows (keep them identical)."""
import copy

import lightning as L
import torch

README_EXAMPLE = '''
import torch
from pytorch_metric_learning import losses as pml
from graphneg.losses import GCAHNGObjective
from graphneg.nn import GCAHNG

x, y = torch.randn(120, 1, 28, 28), torch.arange(10).repeat(12)      # stand-in data: 10 classes
loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=30)  # C x m batches: 10 classes x 3
encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64))
objective = GCAHNGObjective(GCAHNG(dim=64, num_classes=10), pml.MultiSimilarityLoss())
opt_enc = torch.optim.AdamW(encoder.parameters(), lr=1e-3, weight_decay=1e-4)
opt_gen = torch.optim.AdamW(objective.generator.parameters(), lr=3e-4, weight_decay=1e-4)
opt_cls = torch.optim.AdamW(objective.classifier.parameters(), lr=1e-3)
for epoch in range(2):
    for xb, yb in loader:
        emb = encoder(xb)
        opt_enc.zero_grad(); opt_gen.zero_grad()
        objective.metric_loss(emb, yb).total.backward()   # 1: J_m + w J_syn + J_gce, lambda detached
        objective.clip_gradients(encoder, objective.generator); opt_enc.step(); opt_gen.step()
        opt_cls.zero_grad(); objective.classifier_loss(emb, yb).backward(); opt_cls.step()  # 2: classifier
        opt_gen.zero_grad(); objective.generator_loss(emb, yb).total.backward()           # 3: generator only
        objective.clip_gradients(objective.generator); opt_gen.step()
    objective.end_epoch()                                  # running means of J_m and J_gen
'''

# everything before the loop: the objects the loop trains
SETUP = README_EXAMPLE.split("for epoch in range(2):")[0]


def run(code):
    ns = {}
    exec(compile(code, "README_EXAMPLE", "exec"), ns)
    return ns


def test_readme_example_trains():
    torch.manual_seed(0)
    ns = run(README_EXAMPLE)
    obj = ns["objective"]
    assert int(obj.completed_epochs) == 2 and obj.synthetic_route == "pml"
    # the running means rolled to the epochs' means of J_m / J_gen (no longer the initial 1e6)
    assert 0 < float(obj.j_mean) < 10 and 0 < float(obj.j_gen_mean) < 1e3
    assert all(torch.isfinite(p).all() for p in ns["encoder"].parameters())


def test_one_step_equals_metric_learning_module(tmp_path):
    """One batch through the README loop and through MetricLearningModule (same weights, same random
    state at the step): every parameter and the objective's running sums agree to 1e-6."""
    from graphneg.models import MetricLearningModule

    one_step = README_EXAMPLE.replace("for epoch in range(2):", "loader = [next(iter(loader))]\nfor epoch in range(1):")
    torch.manual_seed(0)
    setup = run(SETUP)
    iter(setup["loader"])  # a DataLoader iterator draws its base seed from the global generator
    rng = torch.get_rng_state()  # the global random state at the loop's first step (GNN dropout draws)
    torch.manual_seed(0)
    plain = run(one_step)

    class SameRandomState(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            torch.set_rng_state(rng)

    module = MetricLearningModule(copy.deepcopy(setup["encoder"]), copy.deepcopy(setup["objective"].loss),
                                  generator=copy.deepcopy(setup["objective"].generator), scheduler="none",
                                  eval_nmi=False)
    module.objective.classifier.load_state_dict(setup["objective"].classifier.state_dict())
    data = torch.utils.data.DataLoader(list(zip(setup["x"], setup["y"])), batch_size=30)
    L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              callbacks=[SameRandomState()]).fit(module, data)

    before = dict(setup["encoder"].named_parameters())
    moved = False
    for name, p in plain["encoder"].named_parameters():
        torch.testing.assert_close(module.encoder.get_parameter(name), p, rtol=0, atol=1e-6)
        moved |= not torch.equal(p, before[name])
    assert moved
    for mine, theirs in ((module.objective.generator, plain["objective"].generator),
                         (module.objective.classifier, plain["objective"].classifier)):
        for (name, a), b in zip(mine.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    # the README loop rolled its running means after the step (end_epoch); the module rolls at the next epoch
    for key in ("j_mean", "j_gen_mean"):
        torch.testing.assert_close(getattr(module.objective, key + "_sum"), getattr(plain["objective"], key),
                                   rtol=0, atol=1e-6)


def _readme_python_blocks():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_shows_this_loop_and_its_other_snippets_run(capsys):
    """README.md shows README_EXAMPLE verbatim (run above), and every other Python block of the README runs."""
    blocks = _readme_python_blocks()
    assert README_EXAMPLE.strip() in [b.strip() for b in blocks], "README.md must show README_EXAMPLE verbatim"
    others = [b for b in blocks if b.strip() != README_EXAMPLE.strip()]
    assert others, "README.md has no other Python block"
    torch.manual_seed(0)
    for block in others:
        run(block)
    assert "recall@1" in capsys.readouterr().out  # the API snippet prints its retrieval metrics
