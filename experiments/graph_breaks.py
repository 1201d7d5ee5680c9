"""Count torch.compile graph breaks of GCAHNG.forward and a metric loss with value checks on / off.

    python experiments/graph_breaks.py

Value checks (NaN, label ranges, "two classes") read tensor values: a host sync and a graph break
each. The LightningModules check a batch once at their boundary and run the building blocks with
``graphneg.validation.value_checks(False)``; this script shows, side by side in one run, how many
breaks that removes and which remain (data-dependent shapes of the generator: nonzero, unique,
bincount, the chain weighting's step count). Uses ``torch._dynamo.explain`` (traces, no compile).
"""
import torch
import torch._dynamo as dynamo

from graphneg.losses import MultiSimilarityLoss
from graphneg.nn import GCAHNG
from graphneg.validation import value_checks


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    z, y = torch.randn(12, 8), torch.arange(4).repeat(3)
    cases = [(f"GCAHNG(rw={rw!r}, edges='complete').forward", GCAHNG(8, 4, num_layers=1, heads=2, rw=rw))
             for rw in (None, "chain")]
    cases.append(("MultiSimilarityLoss()(z, y)", MultiSimilarityLoss()))
    print("| call | graph breaks, value checks on | off | remaining reasons (off) |")
    print("|---|---|---|---|")
    for name, fn in cases:
        counts, reasons = [], set()
        for on in (True, False):
            dynamo.reset()
            with value_checks(on):
                out = dynamo.explain(fn)(z, y)
            counts.append(out.graph_break_count)
            if not on:
                reasons = {r.reason.split("\n")[0][:60] for r in out.break_reasons}
        print(f"| {name} | {counts[0]} | {counts[1]} | {'; '.join(sorted(reasons)) or '-'} |")


if __name__ == "__main__":
    main()
