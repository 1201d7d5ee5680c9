"""The readers of the four benchmarks: each a :class:`~graphneg.data.retrieval.base.RetrievalDataModule`
whose ``read_splits`` parses the official index files (layouts: :data:`graphneg.data.retrieval.LAYOUTS`)
into the official zero-shot splits, labels contiguous from 0 in ascending order of the official class id.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from graphneg.data.retrieval.base import RetrievalDataModule
from graphneg.data.retrieval.layouts import (
    LAYOUTS, Split, contiguous_labels, malformed_line, missing_file, parse_int, read_columns,
)


class CUB200DataModule(RetrievalDataModule):
    """CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species; classes 1-100 train
    (5,864 images), 101-200 test (5,924), as the official ``cub_convert.py``.

    ``root``: the ``CUB_200_2011`` folder (``images.txt``, ``image_class_labels.txt``, ``images/``) or its
    parent. Official batch: 27 classes x 3 images.
    """

    name = "cub200"

    def __init__(self, root: str, classes_per_batch: int = 27, samples_per_class: int = 3, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    def read_splits(self) -> Dict[str, Split]:
        base = self.root / "CUB_200_2011" if (self.root / "CUB_200_2011").is_dir() else self.root
        images_txt, labels_txt, images_dir = base / "images.txt", base / "image_class_labels.txt", base / "images"
        for f in (images_txt, labels_txt):
            if not f.is_file():
                raise missing_file(self.name, f)
        if not images_dir.is_dir():
            raise missing_file(self.name, images_dir, "folder")
        paths: Dict[int, str] = {}
        for no, parts in read_columns(self.name, images_txt, 2):
            paths[parse_int(self.name, images_txt, no, parts[0], " ".join(parts))] = " ".join(parts[1:])
        classes: Dict[int, int] = {}
        for no, parts in read_columns(self.name, labels_txt, 2):
            line = " ".join(parts)
            img, cls = parse_int(self.name, labels_txt, no, parts[0], line), parse_int(self.name, labels_txt, no, parts[1], line)
            if not 1 <= cls <= 200:
                raise malformed_line(self.name, labels_txt, no, line, f"class id {cls} is outside 1-200")
            classes[img] = cls
        if set(paths) != set(classes):
            diff = sorted(set(paths) ^ set(classes))[:5]
            raise ValueError(
                f"{self.name}: {images_txt.name} and {labels_txt.name} list different image ids (e.g. {diff}). "
                f"Expected layout: {LAYOUTS[self.name]}"
            )
        out = {}
        for split, keep in (("train", lambda c: c <= 100), ("test", lambda c: c > 100)):
            ids = [i for i in sorted(paths) if keep(classes[i])]
            out[split] = ([str(images_dir / paths[i]) for i in ids], contiguous_labels([classes[i] for i in ids]))
        return out


class Cars196DataModule(RetrievalDataModule):
    """Cars196 (Krause et al. 2013): 16,185 images of 196 car models; classes 1-98 train (8,054 images),
    99-196 test (8,131), as the official ``car_convert.py`` (the ``test`` flag of the annotations is not
    used by the retrieval protocol).

    ``root``: the folder holding ``cars_annos.mat`` (read with ``scipy.io.loadmat``) and ``car_ims/``.
    Official batch: 27 classes x 3 images.
    """

    name = "cars196"

    def __init__(self, root: str, classes_per_batch: int = 27, samples_per_class: int = 3, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    def read_splits(self) -> Dict[str, Split]:
        import numpy as np
        from scipy.io import loadmat

        mat, ims = self.root / "cars_annos.mat", self.root / "car_ims"
        if not mat.is_file():
            raise missing_file(self.name, mat)
        if not ims.is_dir():
            raise missing_file(self.name, ims, "folder")
        try:
            data = loadmat(str(mat), squeeze_me=True, struct_as_record=True)
        except Exception as err:  # scipy raises several types for a corrupt file
            raise ValueError(f"{self.name}: {mat} is not a readable MATLAB file ({err}). "
                             f"Expected layout: {LAYOUTS[self.name]}") from err
        ann = data.get("annotations")
        names = getattr(getattr(ann, "dtype", None), "names", None) or ()
        if ann is None or "relative_im_path" not in names or "class" not in names:
            raise ValueError(
                f"{self.name}: {mat} has no struct array 'annotations' with fields relative_im_path and class "
                f"(found variables {sorted(k for k in data if not k.startswith('__'))}, fields {list(names)}). "
                f"Expected layout: {LAYOUTS[self.name]}"
            )
        rel = [str(p) for p in np.atleast_1d(ann["relative_im_path"])]
        try:
            cls = [int(c) for c in np.atleast_1d(ann["class"])]
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.name}: {mat}: annotations.class must hold integers ({err})") from err
        bad = [c for c in cls if not 1 <= c <= 196]
        if bad:
            raise ValueError(f"{self.name}: {mat}: class ids must be in 1-196, got {bad[:5]}")
        out = {}
        for split, keep in (("train", lambda c: c <= 98), ("test", lambda c: c > 98)):
            ids = [i for i in range(len(rel)) if keep(cls[i])]
            # relative_im_path is 'car_ims/000001.jpg', relative to the folder of cars_annos.mat
            out[split] = ([str(self.root / rel[i]) for i in ids], contiguous_labels([cls[i] for i in ids]))
        return out


class SOPDataModule(RetrievalDataModule):
    """Stanford Online Products (Oh Song et al. 2016): 120,053 images of 22,634 products; the official
    ``Ebay_train.txt`` (59,551 images, 11,318 classes) / ``Ebay_test.txt`` (60,502 images, 11,316
    classes) split.

    ``root``: the ``Stanford_Online_Products`` folder (the two lists + ``bicycle_final/`` ...) or its
    parent. Official batch: 40 classes x 2 images. Evaluation: Recall@{1, 10, 100, 1000}.
    """

    name = "sop"

    def __init__(self, root: str, classes_per_batch: int = 40, samples_per_class: int = 2, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    def read_splits(self) -> Dict[str, Split]:
        sub = self.root / "Stanford_Online_Products"
        base = sub if sub.is_dir() else self.root
        out = {}
        for split, fname in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
            path = base / fname
            if not path.is_file():
                raise missing_file(self.name, path)
            rows = read_columns(self.name, path, 4, skip=1)
            paths, cls = [], []
            for no, parts in rows:
                line = " ".join(parts)
                parse_int(self.name, path, no, parts[0], line)
                cls.append(parse_int(self.name, path, no, parts[1], line))
                paths.append(str(base / " ".join(parts[3:])))
            out[split] = (paths, contiguous_labels(cls))
        return out


class InShopDataModule(RetrievalDataModule):
    """In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016): 52,712 images of 7,982 items; 25,882
    training images of 3,997 items; evaluation searches the 14,218 query images against the 12,612
    gallery images (3,985 items), Recall@{1, 10, 20, 30, 40, 50}.

    ``root``: the folder holding ``list_eval_partition.txt`` (or ``Eval/list_eval_partition.txt``) and
    ``img/`` (or ``Img/img/``). Query and gallery share one label space (official ``Inshop_Dataset``).
    ``val_dataloader`` returns ``[query_loader, gallery_loader]``. Official batch: 40 x 2.
    """

    name = "inshop"

    def __init__(self, root: str, classes_per_batch: int = 40, samples_per_class: int = 2, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    @property
    def eval_splits(self) -> Tuple[str, ...]:
        return ("query", "gallery")

    def read_splits(self) -> Dict[str, Split]:
        part = self.root / "list_eval_partition.txt"
        if not part.is_file() and (self.root / "Eval" / "list_eval_partition.txt").is_file():
            part = self.root / "Eval" / "list_eval_partition.txt"
        if not part.is_file():
            raise missing_file(self.name, part)
        img_base = self.root
        if not (self.root / "img").is_dir():
            if (self.root / "Img" / "img").is_dir():
                img_base = self.root / "Img"
            else:
                raise missing_file(self.name, self.root / "img", "folder")
        rows = read_columns(self.name, part, 3, skip=2)
        by_split: Dict[str, Tuple[List[str], List[int]]] = {"train": ([], []), "query": ([], []), "gallery": ([], [])}
        for no, parts in rows:
            line = " ".join(parts)
            rel, item, status = parts[0], parts[1], parts[2]
            if status not in by_split:
                raise malformed_line(self.name, part, no, line, f"evaluation_status {status!r} is not train/query/gallery")
            if not item.startswith("id_"):
                raise malformed_line(self.name, part, no, line, f"item_id {item!r} does not look like id_<8 digits>")
            by_split[status][0].append(str(img_base / rel))
            by_split[status][1].append(parse_int(self.name, part, no, item[3:], line))
        for s, (paths, _) in by_split.items():
            if not paths:
                raise ValueError(f"{self.name}: {part} has no '{s}' images. Expected layout: {LAYOUTS[self.name]}")
        train = (by_split["train"][0], contiguous_labels(by_split["train"][1]))
        nq = len(by_split["query"][1])
        joint = contiguous_labels(by_split["query"][1] + by_split["gallery"][1])
        return {
            "train": train,
            "query": (by_split["query"][0], joint[:nq]),
            "gallery": (by_split["gallery"][0], joint[nq:]),
        }


__all__ = ["CUB200DataModule", "Cars196DataModule", "InShopDataModule", "SOPDataModule"]
