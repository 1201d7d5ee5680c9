"""Copy the TU-format graph datasets that the grakel wheel ships into datasets/tu/<NAME>/raw/.

    python datasets/prepare_tu.py                 # MUTAG and Cuneiform into datasets/tu
    python datasets/prepare_tu.py --root /data/tu MUTAG

Only missing files are copied; a file already in raw/ is never overwritten. If raw/ holds a file
that differs from grakel's copy while another file is missing, nothing is copied and the script
says which files differ (exit status 1). The copied files are then checked (node ids in range,
every edge inside one graph, line counts that agree).
"""
import argparse
import sys
from pathlib import Path

from graphneg.data.tu import check_tu_files, prepare_grakel_tu

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=["MUTAG", "Cuneiform"])
    p.add_argument("--root", default=str(Path(__file__).resolve().parent / "tu"))
    args = p.parse_args()
    failed = False
    for name in args.names:
        try:
            raw = prepare_grakel_tu(name, args.root)
            facts = check_tu_files(raw.parent.name, args.root)
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
            print(f"{name}: {err}", file=sys.stderr)
            failed = True
            continue
        print(name, "->", raw, f"({facts['num_graphs']} graphs, {facts['num_nodes']} nodes, "
              f"{facts['num_edges']} edge lines)")
    sys.exit(1 if failed else 0)
