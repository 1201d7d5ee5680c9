"""The official file layouts of the four retrieval benchmarks and the readers' helpers for their index files.

:data:`LAYOUTS` is quoted in every error message (and in ``datasets/README.md``); the helpers turn a missing
file or a malformed line into an error naming the file, the line and the expected layout.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

#: The expected layout of each dataset, quoted in every error message (and in datasets/README.md).
LAYOUTS: Dict[str, str] = {
    "cub200": (
        "CUB-200-2011 (CUB_200_2011.tgz): <root>/CUB_200_2011/ (or <root> itself) holding images.txt "
        "('<image_id> <relative path>' per line), image_class_labels.txt ('<image_id> <class_id 1-200>' "
        "per line) and images/<NNN.Class_Name>/<file>.jpg"
    ),
    "cars196": (
        "Cars196 (car_ims.tgz + cars_annos.mat): <root>/cars_annos.mat (MATLAB struct array "
        "'annotations' with fields relative_im_path, class 1-196) and <root>/car_ims/<NNNNNN>.jpg"
    ),
    "sop": (
        "Stanford Online Products (Stanford_Online_Products.zip): <root>/Stanford_Online_Products/ (or "
        "<root> itself) holding Ebay_train.txt and Ebay_test.txt (header 'image_id class_id "
        "super_class_id path', then one image per line) and the folders they name (bicycle_final/, ...)"
    ),
    "inshop": (
        "In-Shop Clothes Retrieval (DeepFashion, Img/img.zip + Eval/list_eval_partition.txt): "
        "<root>/list_eval_partition.txt or <root>/Eval/list_eval_partition.txt (first line the image "
        "count, second the header 'image_name item_id evaluation_status', then '<img/...jpg> <id_<8 digits>> "
        "<train|query|gallery>' per line) and <root>/img/ (or <root>/Img/img/)"
    ),
}


def missing_file(name: str, path: Path, what: str = "file") -> FileNotFoundError:
    """The error for a missing ``what`` (file / folder / image) of dataset ``name``, quoting its layout."""
    return FileNotFoundError(f"{name}: {what} {path} not found. Expected layout: {LAYOUTS[name]}")


def malformed_line(name: str, path: Path, line_no: int, line: str, why: str) -> ValueError:
    """The error for line ``line_no`` of ``path`` that cannot be read (``why``), quoting the layout."""
    return ValueError(
        f"{name}: {path} line {line_no} is malformed ({why}): {line.strip()[:120]!r}. "
        f"Expected layout: {LAYOUTS[name]}"
    )


def read_columns(name: str, path: Path, ncols: int, skip: int = 0) -> List[Tuple[int, List[str]]]:
    """Whitespace-separated rows with at least ``ncols`` fields, ``(line number, fields)``; blank lines
    are skipped."""
    if not path.is_file():
        raise missing_file(name, path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if no <= skip or not line.strip():
                continue
            parts = line.split()
            if len(parts) < ncols:
                raise malformed_line(name, path, no, line, f"expected {ncols} fields, got {len(parts)}")
            rows.append((no, parts))
    if not rows:
        raise ValueError(f"{name}: {path} lists no images. Expected layout: {LAYOUTS[name]}")
    return rows


def parse_int(name: str, path: Path, no: int, value: str, line: str) -> int:
    """``int(value)``, or the malformed-line error naming line ``no`` of ``path``."""
    try:
        return int(value)
    except ValueError:
        raise malformed_line(name, path, no, line, f"{value!r} is not an integer") from None


def contiguous_labels(class_ids: Sequence[int]) -> List[int]:
    """Official class ids -> 0..C-1 in ascending id order."""
    lut = {c: i for i, c in enumerate(sorted(set(class_ids)))}
    return [lut[c] for c in class_ids]


def check_first_image(name: str, paths: Sequence[str]) -> None:
    """A missing-image error when the first listed image does not exist (the archive is not unpacked)."""
    if paths and not os.path.isfile(paths[0]):
        raise missing_file(name, Path(paths[0]), "image")


Split = Tuple[List[str], List[int]]


__all__ = [
    "LAYOUTS", "Split", "check_first_image", "contiguous_labels", "malformed_line", "missing_file", "parse_int",
    "read_columns",
]
