"""TU graph-classification datasets on disk: the raw files' layout, the copies shipped by grakel, and
the checks of the raw files before PyG reads them (:class:`graphneg.data.tu.TUDataModule` uses them).

* :func:`prepare_grakel_tu` copies MUTAG / Cuneiform from the installed ``grakel`` wheel into the TU
  layout (never overwriting a file that differs);
* :func:`check_tu_files` checks the raw files (node ids in range, every edge inside one graph, line
  counts that agree), each error naming the file and line;
* :func:`tu_fingerprint` keys the processed cache on the raw files' content.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

__all__ = ["GRAKEL_TU_DATASETS", "TU_REQUIRED", "TU_OPTIONAL", "canonical_grakel_name", "tu_layout_message",
           "prepare_grakel_tu", "check_tu_files", "tu_fingerprint"]

#: TU datasets shipped by the grakel wheel (``grakel/tests/data/<NAME>``).
GRAKEL_TU_DATASETS = ("MUTAG", "Cuneiform")

#: raw files every TU dataset has, and the optional ones (``<NAME>_<suffix>.txt``)
TU_REQUIRED = ("A", "graph_indicator", "graph_labels")
TU_OPTIONAL = ("node_labels", "node_attributes", "edge_labels", "edge_attributes", "graph_attributes")


def canonical_grakel_name(name: str) -> Optional[str]:
    """The grakel spelling of a TU name (case-insensitive), or ``None`` when grakel does not ship it."""
    for known in GRAKEL_TU_DATASETS:
        if name.lower() == known.lower():
            return known
    return None


def tu_layout_message(name: str, root: Union[str, Path]) -> str:
    """The error text for a missing TU dataset: the expected files and where to get them."""
    raw = Path(root) / name / "raw"
    req = ", ".join(f"{name}_{s}.txt" for s in TU_REQUIRED)
    opt = ", ".join(f"{name}_{s}.txt" for s in TU_OPTIONAL)
    return (
        f"TU dataset {name!r} not found: expected the raw TU files in {raw}/ : {req} "
        f"(optional: {opt}). Unzip the dataset from https://chrsmrrs.github.io/datasets/ so that "
        f"{raw / (name + '_A.txt')} exists; nothing is downloaded. Offline copies of "
        f"{' and '.join(GRAKEL_TU_DATASETS)} come with grakel: graphneg.data.tu.prepare_grakel_tu(name, root)."
    )


def prepare_grakel_tu(name: str, root: Union[str, Path] = "datasets/tu") -> Path:
    """Copy a TU dataset shipped by the installed ``grakel`` wheel into ``<root>/<NAME>/raw/``.

    ``grakel`` ships the real TU files of MUTAG (188 graphs, 2 classes) and Cuneiform (267 graphs,
    30 classes) under ``grakel/tests/data/<NAME>/``; copied into the raw layout,
    ``torch_geometric.datasets.TUDataset(root, NAME)`` loads them without network access.
    Returns the raw folder.

    A file already in the raw folder is **never overwritten**: only missing files are copied
    (each written to a temporary name first, then renamed, so an interrupted copy leaves no
    half-written file). If a file present there differs from grakel's copy (your own edit or
    another version) and some other file is missing, nothing is copied and ``ValueError`` says
    which files differ and which are missing: mixing the two versions would give an inconsistent
    dataset.

    Raises:
        ValueError: ``name`` is not one of :data:`GRAKEL_TU_DATASETS`, or the raw folder holds
            files that differ from grakel's copy while others are missing.
        ModuleNotFoundError: grakel is not installed.
        FileNotFoundError: the installed grakel has no ``tests/data/<NAME>`` folder.
    """
    canonical = canonical_grakel_name(str(name))
    if canonical is None:
        raise ValueError(
            f"grakel ships only {GRAKEL_TU_DATASETS} as TU files, got {name!r}; place other datasets "
            f"by hand: {tu_layout_message(str(name), root)}"
        )
    import importlib.util

    spec = importlib.util.find_spec("grakel")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "prepare_grakel_tu needs the grakel package (its wheel ships the MUTAG and Cuneiform TU "
            "files): pip install grakel, or install graphneg with the 'demo' extra "
            "(pip install 'graphneg[demo]')"
        )
    src = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data" / canonical
    files = sorted(src.glob(f"{canonical}_*.txt")) if src.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"the installed grakel has no TU files for {canonical} under {src}; reinstall grakel "
            "(pip install --force-reinstall grakel) or place the files by hand: "
            + tu_layout_message(canonical, root)
        )
    raw = Path(root) / canonical / "raw"
    missing = [f for f in files if not (raw / f.name).exists()]
    if not missing:
        return raw
    differing = [f.name for f in files
                 if (raw / f.name).exists() and (raw / f.name).read_bytes() != f.read_bytes()]
    if differing:
        raise ValueError(
            f"{raw} holds files that differ from the copy in the grakel wheel ({', '.join(differing)}: "
            f"your own edit or another version) but lacks {', '.join(f.name for f in missing)}. "
            "graphneg never overwrites your files and does not mix them with grakel's: put the missing "
            f"files into {raw} yourself, or move the folder away to get grakel's complete copy"
        )
    raw.mkdir(parents=True, exist_ok=True)
    for f in missing:
        dst = raw / f.name
        tmp = raw / f".{f.name}.{os.getpid()}.tmp"
        tmp.write_bytes(f.read_bytes())
        if dst.exists():  # appeared meanwhile (another process): keep it
            tmp.unlink()
        else:
            os.replace(tmp, dst)
    return raw


def tu_fingerprint(name: str, root: Union[str, Path] = "datasets/tu") -> str:
    """SHA-256 (first 16 hex digits) of the names and bytes of ``<root>/<name>/raw/<name>_*.txt``.

    The processed cache of :class:`TUDataModule` is stored under ``processed/<fingerprint>``, so a
    change to any raw file selects a new cache and the data are processed again.
    """
    raw = Path(root) / name / "raw"
    h = hashlib.sha256()
    for path in sorted(raw.glob(f"{name}_*.txt")):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _read_tu_table(path: Path, kind: type, what: str) -> np.ndarray:
    """Rows of comma-separated numbers of one TU file as a 2-D array, errors naming file and line.

    Mirrors PyG's reader (``torch_geometric.io.read_txt_array``: ``text.split("\\n")[:-1]``,
    ``int`` / ``float`` per comma-separated field), so what passes here parses there.
    """
    text = path.read_text()
    if text and not text.endswith("\n"):
        raise ValueError(
            f"{path}: the file does not end with a newline; PyG's TU reader would silently drop its last "
            "line. Add a newline at the end of the file"
        )
    lines = text.split("\n")[:-1]
    rows: List[List] = []
    width = None
    for i, line in enumerate(lines, start=1):  # once per cache miss, as PyG's own reader
        try:
            row = [kind(v) for v in line.split(",")]
        except ValueError:
            raise ValueError(
                f"{path}, line {i}: {line!r} is not {what} (comma-separated "
                f"{'integers' if kind is int else 'numbers'})"
            ) from None
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ValueError(f"{path}, line {i}: {len(row)} values, but line 1 has {width}")
        rows.append(row)
    dtype = np.int64 if kind is int else np.float64
    return np.asarray(rows, dtype=dtype).reshape(len(rows), width or 0)


def check_tu_files(name: str, root: Union[str, Path] = "datasets/tu") -> Dict[str, int]:
    """Check the raw TU files of ``<root>/<name>/raw`` before they are processed.

    * ``_graph_indicator.txt``: one graph id per node, ids ``1..G`` in non-decreasing order with
      no graph left empty (PyG slices the nodes of graph ``g`` as one contiguous block);
    * ``_A.txt``: two node ids ``i, j`` per line, each in ``1..N`` (``N`` = lines of the indicator)
      and both nodes in the same graph (PyG would otherwise shift the edge into a wrong node);
    * ``_graph_labels.txt`` / ``_graph_attributes.txt``: ``G`` lines; node labels / attributes:
      ``N`` lines; edge labels / attributes: one line per line of ``_A.txt``.

    Every error is a ``ValueError`` naming the file and, for a bad entry, the line.
    Returns ``{"num_nodes": N, "num_edges": E, "num_graphs": G}``.
    """
    raw = Path(root) / name / "raw"
    path = {s: raw / f"{name}_{s}.txt" for s in TU_REQUIRED + TU_OPTIONAL}
    for s in TU_REQUIRED:
        if not path[s].is_file():
            raise FileNotFoundError(tu_layout_message(name, root))
    ind_path = path["graph_indicator"]
    ind = _read_tu_table(ind_path, int, "a graph id")
    if ind.shape[1] != 1:
        raise ValueError(f"{ind_path}, line 1: expected one graph id per line, got {ind.shape[1]} values")
    ind = ind[:, 0]
    n = ind.size
    if n == 0:
        raise ValueError(f"{ind_path} is empty: expected one graph id (1-based) per node")
    bad = np.flatnonzero(ind < 1)
    if bad.size:
        raise ValueError(f"{ind_path}, line {bad[0] + 1}: graph id {ind[bad[0]]} < 1 (TU graph ids start at 1)")
    bad = np.flatnonzero(np.diff(ind) < 0)
    if bad.size:
        i = bad[0] + 1
        raise ValueError(
            f"{ind_path}, line {i + 1}: graph id {ind[i]} after {ind[i - 1]}; the nodes of each graph "
            "must be listed together in increasing graph order"
        )
    g = int(ind[-1])
    present = np.zeros(g + 1, dtype=bool)
    present[ind] = True
    empty = np.flatnonzero(~present[1:])
    if empty.size:
        raise ValueError(f"{ind_path}: graph {empty[0] + 1} has no node (ids must run 1..{g} without gaps)")

    a_path = path["A"]
    edges = _read_tu_table(a_path, int, "an edge 'i, j'")
    if edges.shape[0] and edges.shape[1] != 2:
        raise ValueError(f"{a_path}, line 1: expected two node ids 'i, j' per line, got {edges.shape[1]} values")
    edges = edges.reshape(-1, 2)
    out = np.flatnonzero(((edges < 1) | (edges > n)).any(axis=1))
    if out.size:
        i = out[0]
        raise ValueError(
            f"{a_path}, line {i + 1}: edge {edges[i, 0]}, {edges[i, 1]} names a node outside 1..{n} "
            f"(node ids are 1-based lines of {ind_path.name}, which has {n} lines)"
        )
    gs, gt = ind[edges[:, 0] - 1], ind[edges[:, 1] - 1]
    cross = np.flatnonzero(gs != gt)
    if cross.size:
        i = cross[0]
        raise ValueError(
            f"{a_path}, line {i + 1}: edge {edges[i, 0]}, {edges[i, 1]} joins node {edges[i, 0]} of graph "
            f"{gs[i]} and node {edges[i, 1]} of graph {gt[i]}; an edge must stay inside one graph "
            f"({ind_path.name})"
        )
    e = edges.shape[0]
    expected = {"graph_labels": (g, "graphs"), "graph_attributes": (g, "graphs"),
                "node_labels": (n, "nodes"), "node_attributes": (n, "nodes"),
                "edge_labels": (e, "edges"), "edge_attributes": (e, "edges")}
    for s, (count, unit) in expected.items():
        if not path[s].is_file():
            continue
        kind = float if s.endswith("attributes") else int
        rows = _read_tu_table(path[s], kind, "a label" if kind is int else "an attribute vector").shape[0]
        if rows != count:
            raise ValueError(
                f"{path[s]}: {rows} lines, but the dataset has {count} {unit} (one line per "
                f"{unit[:-1]}: {ind_path.name} lists {n} nodes in {g} graphs, {a_path.name} {e} edges)"
            )
    return {"num_nodes": n, "num_edges": e, "num_graphs": g}
