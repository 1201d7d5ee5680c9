"""Count torch.compile graph breaks of the GCA-HNG layers, GCAHNG.forward and a metric loss, with value
checks on / off, and list where each remaining break of the generator happens.

    python experiments/graph_breaks.py

Value checks (NaN, label ranges, "two classes") read tensor values: a host sync and a graph break
each. The LightningModules check a batch once at their boundary and run the building blocks with
``graphneg.validation.value_checks(False)``; this script shows, side by side in one run, how many
breaks that removes and which remain. The layers of ``graphneg.nn`` must have none (they compile
with ``fullgraph=True``, tests/test_nn_*.py); the generator's remaining breaks are data-dependent
shapes. Uses ``torch._dynamo.explain`` (traces forward, and the backward of custom autograd
Functions, without compiling).
"""
import os

import torch
import torch._dynamo as dynamo

from graphneg.losses import MultiSimilarityLoss
from graphneg.nn import GCAGNN, GCABlock, CorrelationEdgeEncoder, EdgeToNodeConv, NodeAttentionConv, NodeToEdgeConv
from graphneg.nn import GCAHNG
from graphneg.validation import value_checks


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def where(reason) -> str:
    """The innermost graphneg frame of a break: ``file:line (function): source``."""
    frames = [f for f in reason.user_stack if "graphneg" in f.filename]
    if not frames:
        return "?"
    f = frames[-1]
    return f"`{os.path.relpath(f.filename, ROOT)}:{f.lineno}` ({f.name}): `{(f.line or '').strip()}`"


def why(reason) -> str:
    """First line of the reason, with the operator dynamo names in its debug context."""
    text = reason.reason
    head = text.split("\n")[0][:70]
    marker = "Developer debug context: "
    if marker in text:
        head += f" ({text.split(marker)[1].split(chr(10))[0].strip()[:40]})"
    return head


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    z, y = torch.randn(12, 8), torch.arange(4).repeat(3)
    src, tgt = torch.arange(12).repeat_interleave(12), torch.arange(12).repeat(12)
    ei, e = torch.stack([src, tgt]), torch.randn(144, 8)
    mask = y[src] != y[tgt]
    cases = [
        ("CorrelationEdgeEncoder()(x, edge_index)", CorrelationEdgeEncoder(), (z, ei), {}),
        ("NodeAttentionConv(8, heads=2)(x, edge_index, attn_mask=)", NodeAttentionConv(8, heads=2), (z, ei),
         dict(attn_mask=mask)),
        ("EdgeToNodeConv(8)(x, edge_index, edge_attr)", EdgeToNodeConv(8), (z, ei, e), {}),
        ("NodeToEdgeConv(8, recompute_hidden=True)(x, edge_index, edge_attr)",
         NodeToEdgeConv(8, recompute_hidden=True), (z, ei, e), {}),
        ("GCABlock(8, heads=2)(x, edge_index, edge_attr, labels=)", GCABlock(8, heads=2), (z, ei, e), dict(labels=y)),
        ("GCAGNN(8, 4, heads=2, recompute_hidden=True)(x, edge_index, labels=)",
         GCAGNN(8, 4, num_layers=1, heads=2, recompute_hidden=True), (z, ei), dict(labels=y)),
    ]
    cases += [(f"GCAHNG(rw={rw!r}, edges='complete', static_shapes={st}).forward",
               GCAHNG(8, 4, num_layers=1, heads=2, rw=rw, static_shapes=st), (z, y), {})
              for st in (False, True) for rw in (None, "chain", "dirichlet")]
    cases.append(("MultiSimilarityLoss(mining=True)(z, y)", MultiSimilarityLoss(mining=True), (z, y), {}))
    print("| call | graph breaks, value checks on | off (reasons recorded) | remaining reasons (off) |")
    print("|---|---|---|---|")
    listing = []
    for name, fn, args, kwargs in cases:
        counts, reasons = [], []
        for on in (True, False):
            dynamo.reset()
            with value_checks(on):
                out = dynamo.explain(fn)(*args, **kwargs)
            counts.append(out.graph_break_count)
            if not on:
                reasons = out.break_reasons
        short = sorted({r.reason.split("\n")[0][:60] for r in reasons})
        print(f"| {name} | {counts[0]} | {counts[1]} ({len(reasons)}) | {'; '.join(short) or '-'} |")
        for r in reasons:
            listing.append((name, where(r), why(r)))
    print("\nRemaining breaks with value checks off, in trace order:\n")
    print("| call | where (innermost graphneg frame) | reason |")
    print("|---|---|---|")
    for name, at, reason in listing:
        print(f"| {name} | {at} | {reason} |")


if __name__ == "__main__":
    main()
