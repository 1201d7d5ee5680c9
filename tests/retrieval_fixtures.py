"""Tiny fixture trees in the official distributed layouts of CUB-200-2011, Cars196, SOP and In-Shop.

Real file formats: JPEG images (PIL), whitespace text lists, and for Cars196 a MATLAB struct array written
with scipy.io.savemat. Each writer returns the ``root`` to pass to the DataModule and the expected splits
as ``{split: [official class id per image, in file order]}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

PER_CLASS = 3
CUB_TRAIN, CUB_TEST = (1, 2, 3, 4, 100), (101, 150, 200)
CARS_TRAIN, CARS_TEST = (1, 2, 3, 4, 98), (99, 120, 196)
SOP_TRAIN, SOP_TEST = (1, 2, 3, 4, 5), (11319, 11320, 11321)


def write_jpeg(path: Path, seed: int, size=(40, 30), mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, format="JPEG")


def make_cub(tmp: Path) -> Tuple[Path, Dict[str, List[int]]]:
    """``tmp/CUB_200_2011/{images.txt, image_class_labels.txt, images/NNN.Name/*.jpg}``; returns ``tmp``
    (the parent, which the reader accepts too)."""
    base = tmp / "CUB_200_2011"
    lines, labels, order = [], [], []
    i = 0
    for c in CUB_TRAIN + CUB_TEST:
        for j in range(PER_CLASS):
            i += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{j:04d}.jpg"
            write_jpeg(base / "images" / rel, seed=i, mode="L" if i == 2 else "RGB")  # one grey image
            lines.append(f"{i} {rel}")
            labels.append(f"{i} {c}")
            order.append(c)
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return tmp, {"train": [c for c in order if c <= 100], "test": [c for c in order if c > 100]}


def make_cars(tmp: Path) -> Tuple[Path, Dict[str, List[int]]]:
    """``tmp/cars_annos.mat`` (struct array ``annotations``: relative_im_path, bbox_*, class, test) and
    ``tmp/car_ims/NNNNNN.jpg``, as the official ``cars_annos.mat``."""
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    classes = [c for c in CARS_TRAIN + CARS_TEST for _ in range(PER_CLASS)]
    rng = np.random.default_rng(0)
    classes = [classes[i] for i in rng.permutation(len(classes))]  # the official file is not class-sorted
    ann = np.zeros((1, len(classes)), dtype=[(f, "O") for f in fields])
    for i, c in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_jpeg(tmp / rel, seed=100 + i)
        ann[0, i] = (rel, np.array([[1]]), np.array([[1]]), np.array([[30]]), np.array([[20]]),
                     np.array([[c]], dtype=np.uint8), np.array([[i % 2]], dtype=np.uint8))
    names = np.array([[f"Car {k}" for k in range(1, 197)]], dtype=object)
    savemat(str(tmp / "cars_annos.mat"), {"annotations": ann, "class_names": names})
    return tmp, {"train": [c for c in classes if c <= 98], "test": [c for c in classes if c > 98]}


def make_sop(tmp: Path) -> Tuple[Path, Dict[str, List[int]]]:
    """``tmp/Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, bicycle_final/, chair_final/}``."""
    base = tmp / "Stanford_Online_Products"
    out = {}
    i = 0
    for split, classes in (("train", SOP_TRAIN), ("test", SOP_TEST)):
        rows = ["image_id class_id super_class_id path"]
        order = []
        for c in classes:
            folder = "bicycle_final" if c % 2 else "chair_final"
            for j in range(PER_CLASS):
                i += 1
                rel = f"{folder}/{111085122000 + c}_{j}.JPG"
                write_jpeg(base / rel, seed=200 + i)
                rows.append(f"{i} {c} {1 if c % 2 else 2} {rel}")
                order.append(c)
        (base / f"Ebay_{split}.txt").write_text("\n".join(rows) + "\n")
        out[split] = order
    return tmp, out


INSHOP_TRAIN_ITEMS = (2, 7, 12, 16, 40)
# item -> (query images, gallery images); item 90 only in the gallery (a distractor)
INSHOP_EVAL_ITEMS = {33: (1, 2), 45: (2, 1), 58: (1, 2), 90: (0, 2)}


def make_inshop(tmp: Path, eval_subdir: bool = False) -> Tuple[Path, Dict[str, List[int]]]:
    """``tmp/list_eval_partition.txt`` (or ``tmp/Eval/...``) and ``tmp/img/WOMEN/Dresses/id_<8 digits>/*.jpg``."""
    rows: List[str] = []
    out: Dict[str, List[int]] = {"train": [], "query": [], "gallery": []}
    k = 0

    def add(item: int, status: str, n: int) -> None:
        nonlocal k
        for _ in range(n):
            k += 1
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{k:02d}_1_front.jpg"
            write_jpeg(tmp / rel, seed=300 + k)
            rows.append(f"{rel}  id_{item:08d}  {status}")
            out[status].append(item)

    for item in INSHOP_TRAIN_ITEMS:
        add(item, "train", PER_CLASS)
    for item, (nq, ng) in INSHOP_EVAL_ITEMS.items():
        add(item, "query", nq)
        add(item, "gallery", ng)
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n"
    part = tmp / "Eval" / "list_eval_partition.txt" if eval_subdir else tmp / "list_eval_partition.txt"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_text(text)
    return tmp, out


MAKERS = {"cub200": make_cub, "cars196": make_cars, "sop": make_sop, "inshop": make_inshop}
