"""The four benchmark readers on tiny fixture trees in the official layouts (tests/retrieval_fixtures.py)."""
import os

import pytest
import torch

from graphneg.data import CUB200DataModule, Cars196DataModule, InShopDataModule, SOPDataModule
from retrieval_fixtures import (
    CARS_TEST, CARS_TRAIN, CUB_TEST, CUB_TRAIN, INSHOP_EVAL_ITEMS, INSHOP_TRAIN_ITEMS, PER_CLASS, SOP_TEST,
    SOP_TRAIN, make_cars, make_cub, make_inshop, make_sop,
)

SMALL = dict(image_size=16, resize=20, num_workers=0, eval_batch_size=4)


def _ranks(ids):
    """Official class ids -> contiguous labels by ascending id, computed independently of the reader."""
    uniq = sorted(set(ids))
    return [uniq.index(c) for c in ids]


def _check_split(ds, expected_ids, n_classes):
    labels = ds.labels.tolist()
    assert len(ds) == len(expected_ids) == n_classes * PER_CLASS
    assert labels == _ranks(expected_ids)
    assert sorted(set(labels)) == list(range(n_classes))  # contiguous from 0


@pytest.mark.parametrize(
    "cls,maker,train,test",
    [(CUB200DataModule, make_cub, CUB_TRAIN, CUB_TEST), (Cars196DataModule, make_cars, CARS_TRAIN, CARS_TEST),
     (SOPDataModule, make_sop, SOP_TRAIN, SOP_TEST)],
)
def test_reader_splits_and_labels(tmp_path, cls, maker, train, test):
    root, expected = maker(tmp_path)
    dm = cls(str(root), classes_per_batch=2, samples_per_class=2, **SMALL)
    dm.setup("fit")
    assert all(c <= 100 for c in expected["train"]) or cls is SOPDataModule
    _check_split(dm.datasets["train"], expected["train"], len(train))
    _check_split(dm.datasets["test"], expected["test"], len(test))
    assert dm.num_train_classes == len(train)
    # images decode lazily to the evaluation crop / the training crop
    x, y = dm.datasets["test"][1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and int(y) == dm.datasets["test"].labels[1]
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 16, 16) and yb.unique().numel() == 2
    xe, _ = next(iter(dm.val_dataloader()))
    assert xe.shape == (4, 3, 16, 16)


def test_cub_split_by_class_id_and_root_itself(tmp_path):
    root, expected = make_cub(tmp_path)
    # root may be the CUB_200_2011 folder itself
    dm = CUB200DataModule(str(root / "CUB_200_2011"), **SMALL)
    dm.setup()
    assert len(dm.datasets["train"]) == len(CUB_TRAIN) * PER_CLASS
    # class 100 is the last training class, 101 the first test class (official 1-100 / 101-200)
    assert dm.datasets["train"].paths[-1].split(os.sep)[-2] == "100.Bird_100"
    assert dm.datasets["test"].paths[0].split(os.sep)[-2] == "101.Bird_101"


def test_cars_mat_read_with_scipy(tmp_path):
    root, expected = make_cars(tmp_path)
    dm = Cars196DataModule(str(root), **SMALL)
    dm.setup()
    # the paths follow the .mat order within each split
    from scipy.io import loadmat

    ann = loadmat(str(root / "cars_annos.mat"))["annotations"][0]
    rel = [str(a["relative_im_path"][0]) for a in ann if int(a["class"][0, 0]) > 98]
    assert [p[len(str(root)) + 1:] for p in dm.datasets["test"].paths] == rel


def test_inshop_train_query_gallery(tmp_path):
    root, expected = make_inshop(tmp_path)
    dm = InShopDataModule(str(root), classes_per_batch=2, samples_per_class=2, **SMALL)
    dm.setup()
    _check_split(dm.datasets["train"], expected["train"], len(INSHOP_TRAIN_ITEMS))
    q, g = dm.datasets["query"], dm.datasets["gallery"]
    assert len(q) == sum(v[0] for v in INSHOP_EVAL_ITEMS.values())
    assert len(g) == sum(v[1] for v in INSHOP_EVAL_ITEMS.values())
    # one label space for query and gallery, contiguous over their union (official Inshop_Dataset)
    joint = _ranks(expected["query"] + expected["gallery"])
    assert q.labels.tolist() == joint[: len(q)] and g.labels.tolist() == joint[len(q):]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2
    assert sum(b[0].size(0) for b in loaders[0]) == len(q) and sum(b[0].size(0) for b in loaders[1]) == len(g)


def test_inshop_eval_subfolder_layout(tmp_path):
    root, _ = make_inshop(tmp_path, eval_subdir=True)
    dm = InShopDataModule(str(root), **SMALL)
    dm.setup()
    assert len(dm.datasets["train"]) == len(INSHOP_TRAIN_ITEMS) * PER_CLASS


def test_num_workers_loads_in_worker_processes(tmp_path):
    root, _ = make_sop(tmp_path)
    dm = SOPDataModule(str(root), classes_per_batch=3, samples_per_class=2, image_size=16, resize=20,
                       num_workers=2, eval_batch_size=5)
    dm.setup()
    n = sum(b[0].size(0) for b in dm.val_dataloader())
    assert n == len(SOP_TEST) * PER_CLASS
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (6, 3, 16, 16)


def test_dataset_holds_paths_not_pixels(tmp_path):
    root, _ = make_cub(tmp_path)
    dm = CUB200DataModule(str(root), **SMALL)
    dm.setup()
    ds = dm.datasets["train"]
    assert set(vars(ds)) == {"paths", "labels", "transform"} and isinstance(ds.paths[0], str)


# ------------------------------------------------------------------ errors name the file and the layout
MISSING = [
    (CUB200DataModule, make_cub, "CUB_200_2011/images.txt"),
    (CUB200DataModule, make_cub, "CUB_200_2011/image_class_labels.txt"),
    (CUB200DataModule, make_cub, "CUB_200_2011/images"),
    (Cars196DataModule, make_cars, "cars_annos.mat"),
    (Cars196DataModule, make_cars, "car_ims"),
    (SOPDataModule, make_sop, "Stanford_Online_Products/Ebay_train.txt"),
    (SOPDataModule, make_sop, "Stanford_Online_Products/Ebay_test.txt"),
    (SOPDataModule, make_sop, "Stanford_Online_Products/bicycle_final"),
    (InShopDataModule, make_inshop, "list_eval_partition.txt"),
    (InShopDataModule, make_inshop, "img"),
]


@pytest.mark.parametrize("cls,maker,rel", MISSING, ids=[m[2] for m in MISSING])
def test_missing_file_names_file_and_layout(tmp_path, cls, maker, rel):
    import shutil

    root, _ = maker(tmp_path)
    target = root / rel
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError) as err:
        cls(str(root), **SMALL).setup()
    msg = str(err.value)
    assert "Expected layout" in msg
    # the missing file itself (or, for a folder of images, the first image inside it) is named
    assert os.path.basename(rel) in msg


def test_missing_root_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder .*nowhere.*Expected layout"):
        SOPDataModule(str(tmp_path / "nowhere"), **SMALL).setup()


def test_malformed_files(tmp_path):
    root, _ = make_cub(tmp_path / "cub")
    (root / "CUB_200_2011" / "image_class_labels.txt").write_text("1 1\n2 x\n")
    with pytest.raises(ValueError, match=r"image_class_labels.txt line 2 is malformed .*'x' is not an integer"):
        CUB200DataModule(str(root), **SMALL).setup()
    (root / "CUB_200_2011" / "image_class_labels.txt").write_text("1 201\n")
    with pytest.raises(ValueError, match="outside 1-200"):
        CUB200DataModule(str(root), **SMALL).setup()

    root, _ = make_sop(tmp_path / "sop")
    (root / "Stanford_Online_Products" / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n1 2\n")
    with pytest.raises(ValueError, match=r"Ebay_test.txt line 2 is malformed \(expected 4 fields, got 2\)"):
        SOPDataModule(str(root), **SMALL).setup()

    root, _ = make_inshop(tmp_path / "inshop")
    part = root / "list_eval_partition.txt"
    part.write_text(part.read_text().replace(" train", " val", 1))
    with pytest.raises(ValueError, match="evaluation_status 'val' is not train/query/gallery"):
        InShopDataModule(str(root), **SMALL).setup()

    from scipy.io import savemat

    root = tmp_path / "cars"
    (root / "car_ims").mkdir(parents=True)
    savemat(str(root / "cars_annos.mat"), {"something_else": [1, 2]})
    with pytest.raises(ValueError, match="no struct array 'annotations'.*something_else"):
        Cars196DataModule(str(root), **SMALL).setup()
    (root / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="cars_annos.mat is not a readable MATLAB file"):
        Cars196DataModule(str(root), **SMALL).setup()


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size <= resize"):
        CUB200DataModule("x", image_size=64, resize=32)
    with pytest.raises(ValueError, match="num_workers"):
        CUB200DataModule("x", num_workers=-1)
