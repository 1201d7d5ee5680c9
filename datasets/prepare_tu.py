"""Copy the TU-format graph datasets that the grakel wheel ships into datasets/tu/<NAME>/raw/.

    python datasets/prepare_tu.py                 # MUTAG and Cuneiform into datasets/tu
    python datasets/prepare_tu.py --root /data/tu MUTAG
"""
import argparse
from pathlib import Path

from graphneg.data.tu import prepare_grakel_tu

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=["MUTAG", "Cuneiform"])
    p.add_argument("--root", default=str(Path(__file__).resolve().parent / "tu"))
    args = p.parse_args()
    for name in args.names:
        print(name, "->", prepare_grakel_tu(name, args.root))
