"""datasets/prepare.py: checks a folder, unpacks official archives safely, never overwrites."""
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from retrieval_fixtures import make_cub, make_sop
from scripts import load_script


@pytest.fixture(scope="module")
def prepare():
    return load_script("datasets/prepare.py")


def test_unpacks_cub_tgz_then_checks(tmp_path, prepare, capsys):
    src, _ = make_cub(tmp_path / "src")
    dest = tmp_path / "dest"
    dest.mkdir()
    with tarfile.open(dest / "CUB_200_2011.tgz", "w:gz") as tf:
        tf.add(src / "CUB_200_2011", arcname="CUB_200_2011")
    # a file of the user's that the archive also holds is kept as it is
    mine = dest / "CUB_200_2011" / "images.txt"
    mine.parent.mkdir()
    mine.write_text((src / "CUB_200_2011" / "images.txt").read_text() + "\n")
    assert prepare.main(["cub200", str(dest)]) == 0
    out = capsys.readouterr().out
    n_files = sum(1 for p in (src / "CUB_200_2011").rglob("*") if p.is_file())
    assert f"{n_files - 1} files written, 1 existing files kept" in out
    assert mine.read_text().endswith("\n\n")  # not overwritten
    assert "train        15 images      5 classes" in out and "(official 5864 / 100)" in out
    # second run: already in the official layout, nothing unpacked
    assert prepare.main(["cub200", str(dest)]) == 0
    assert "already has the official layout" in capsys.readouterr().out


def test_unpacks_sop_zip(tmp_path, prepare, capsys):
    src, _ = make_sop(tmp_path / "src")
    dest = tmp_path / "dest"
    dest.mkdir()
    with zipfile.ZipFile(dest / "Stanford_Online_Products.zip", "w") as zf:
        for p in sorted((src / "Stanford_Online_Products").rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    assert prepare.main(["sop", str(dest)]) == 0
    assert "test          9 images      3 classes" in capsys.readouterr().out


def test_refuses_path_traversal(tmp_path, prepare, capsys):
    dest = tmp_path / "d"
    dest.mkdir()
    with tarfile.open(dest / "car_ims.tgz", "w:gz") as tf:
        data = b"x"
        info = tarfile.TarInfo("../evil.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert prepare.main(["cars196", str(dest)]) == 1
    assert "refusing member '../evil.txt'" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists()


def test_nothing_there_names_file_and_archive(tmp_path, prepare, capsys):
    assert prepare.main(["inshop", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "list_eval_partition.txt not found" in err and "img.zip" in err and "Expected layout" in err
