"""The CIFAR-100 / STL-10 readers used with verify_checksums=False decode the official formats: items
equal the arrays written into tiny fake folders (CIFAR-10 is covered in test_image_parts.py)."""
import pickle

import numpy as np
import pytest

from graphneg.data.vision import CIFAR100DataModule, CIFARFiles, STL10DataModule, STL10Files


def _write_fake_cifar100(root, n=5, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [0] * n}, f)
        out[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"]}, f)
    return out


def test_cifar100_files_match_the_written_arrays(tmp_path):
    written = _write_fake_cifar100(tmp_path)
    ds = CIFARFiles(str(tmp_path / "cifar-100-python"), ["train"], "meta", "fine_label_names")
    data, fine = written["train"]
    assert len(ds) == 5 and ds.classes[3] == "c3" and ds.class_to_idx["c7"] == 7
    for i in range(5):
        image, label = ds[i]
        # row i: R plane, G plane, B plane of 32 x 32 -> an H x W x 3 image
        ref = data[i].reshape(3, 32, 32).transpose(1, 2, 0)
        assert np.array_equal(np.asarray(image), ref) and label == fine[i]
    dm = CIFAR100DataModule(root=str(tmp_path), batch_size=2, num_workers=0, verify_checksums=False)
    dm.setup("fit")
    assert len(dm.train_set) == 5 and len(dm.test_set) == 5 and dm.classes[0] == "c0"
    assert [dm.test_set[i][1] for i in range(5)] == written["test"][1]


def _write_fake_stl10(root, n_train=3, n_test=2, n_unlabeled=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)  # [N, C, H, W]
        # the files store each channel column-major: W and H swapped
        np.transpose(images, (0, 1, 3, 2)).tofile(folder / f"{part}_X.bin")
        labels = None
        if part != "unlabeled":
            labels = rng.integers(1, 11, size=n, dtype=np.uint8)  # 1-based on disk
            labels.tofile(folder / f"{part}_y.bin")
        out[part] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    return out


def test_stl10_files_match_the_written_arrays(tmp_path):
    written = _write_fake_stl10(tmp_path)
    ds = STL10Files(str(tmp_path / "stl10_binary"), "train+unlabeled")
    assert len(ds) == 7 and ds.classes[9] == "k9"
    train_x, train_y = written["train"]
    unl_x, _ = written["unlabeled"]
    for i in range(7):
        image, label = ds[i]
        src = train_x[i] if i < 3 else unl_x[i - 3]
        assert np.array_equal(np.asarray(image), src.transpose(1, 2, 0))
        assert label == (int(train_y[i]) - 1 if i < 3 else -1)
    dm = STL10DataModule(root=str(tmp_path), batch_size=2, num_workers=0, verify_checksums=False)
    dm.setup("fit")
    assert len(dm.train_set) == 7 and len(dm.memory_set) == 3 and len(dm.test_set) == 2
    assert [dm.test_set[i][1] for i in range(2)] == [int(v) - 1 for v in written["test"][1]]
    v1, v2, y = dm.train_set[4]
    assert v1.shape == v2.shape == (3, 96, 96) and y == -1
    # the torchvision path (official MD5 sums) rejects the fake files with the hint
    with pytest.raises(RuntimeError, match="verify_checksums=False"):
        STL10DataModule(root=str(tmp_path), num_workers=0).setup("fit")
