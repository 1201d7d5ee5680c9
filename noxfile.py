"""Sessions: `nox -s demo`, `nox -s tests` (the CI command), `nox -s slow`, `nox -s scatter`,
`nox -s bench`, `nox -s gpu`, `nox -s device`.

Installs follow constraints.txt (the torch / torchvision pair measured to import together on the
reference machine); edit that file for another platform.
"""
import os

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

CONSTRAINTS = ("-c", "constraints.txt")
# Quieter, reproducible CPU runs; users can override in their shell.
ENV = {"PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning"}


def _install(session, extras):
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session
def demo(session):
    """Install graphneg and run the demo (experiments/demo.py): N-pair vs N-pair + GCA-HNG (the paper's
    pairing) and GCA-HNG with a constant lambda = 1 on MNIST-5k pairs, 3 seeds, with raw-pixel and
    untrained-network rows and a one-line verdict computed from the paired MAP@R differences."""
    _install(session, "demo")
    session.run("python", "experiments/demo.py", *session.posargs, env=ENV)


@nox.session
def tests(session):
    """The default test suite (slow and gpu markers deselected); fails when no test runs."""
    _install(session, "dev")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env=ENV)


@nox.session
def slow(session):
    """Longer training checks (few-epoch improvements over an untrained encoder)."""
    _install(session, "dev")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-m", "slow", *session.posargs, env=ENV)


@nox.session
def scatter(session):
    """The test suite with the optional torch-scatter backend (compiles from source, ~7 min on 2 cores)."""
    _install(session, "dev")
    session.install(*CONSTRAINTS, "--no-build-isolation", "torch-scatter")
    session.run("python", "-c", "import torch_scatter, torch_geometric.typing as t; assert t.WITH_TORCH_SCATTER")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env=ENV)


@nox.session
def bench(session):
    """Speed / memory benchmarks; tables go to experiments/results/."""
    _install(session, "dev")
    for script in ("experiments/bench_losses.py", "experiments/bench_gca.py", "experiments/bench_retrieval_eval.py",
                   "experiments/bench_synthetic_losses.py"):
        session.run("python", script, *session.posargs, env=ENV)


@nox.session
def gpu(session):
    """Tests marked `gpu` (run on a CUDA machine)."""
    _install(session, "dev")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *session.posargs, env=ENV)


@nox.session
def device(session):
    """The prepared accelerator check (experiments/device_check.py): `nox -s device -- --out DIR` on a CUDA
    machine (under 8 minutes on one GPU; report.json + report.md in DIR); `-- --out DIR --small` on the CPU."""
    _install(session, "dev")
    args = session.posargs or ["--out", "experiments/results/device_check"]
    session.run("python", "experiments/device_check.py", *args, env=ENV)
