"""Check a retrieval-benchmark folder and unpack the official archives found in it.

    python datasets/prepare.py cub200  datasets           # datasets/CUB_200_2011.tgz -> datasets/CUB_200_2011/
    python datasets/prepare.py cars196 datasets/cars196   # car_ims.tgz + cars_annos.mat
    python datasets/prepare.py sop     datasets           # Stanford_Online_Products.zip
    python datasets/prepare.py inshop  datasets/inshop    # img.zip + list_eval_partition.txt

Nothing is downloaded: put the archives you downloaded from the official pages into FOLDER. When the
folder already has the official layout (see datasets/README.md) it is only checked. Otherwise each
official archive present in FOLDER is extracted there: members with absolute paths, ``..`` or links are
refused, and files that already exist are never overwritten (they are kept and counted). Then the folder
is read with the benchmark's DataModule and the split sizes are printed next to the official ones.
Exit status 0 when the layout is valid, 1 otherwise (with the error naming the missing file).
For TU graph datasets see datasets/prepare_tu.py.
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

# name -> (DataModule class name, official archives, official split sizes {split: (images, classes)})
BENCHMARKS: Dict[str, Tuple[str, Tuple[str, ...], Dict[str, Tuple[int, int]]]] = {
    "cub200": ("CUB200DataModule", ("CUB_200_2011.tgz", "CUB_200_2011.tar.gz"),
               {"train": (5864, 100), "test": (5924, 100)}),
    "cars196": ("Cars196DataModule", ("car_ims.tgz", "car_ims.tar.gz"),
                {"train": (8054, 98), "test": (8131, 98)}),
    "sop": ("SOPDataModule", ("Stanford_Online_Products.zip",),
            {"train": (59551, 11318), "test": (60502, 11316)}),
    "inshop": ("InShopDataModule", ("img.zip", "Img/img.zip"),
               {"train": (25882, 3997), "query": (14218, 3985), "gallery": (12612, 3985)}),
}


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not (p.parts and ":" in p.parts[0])


def _members(archive: Path) -> Iterator[Tuple[str, bool, Callable[[], IO[bytes]]]]:
    """``(name, is_dir, open)`` for each member of a zip or tar archive, refusing unsafe members."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ValueError(f"{archive}: refusing symbolic link member {info.filename!r}")
                yield info.filename, info.is_dir(), (lambda info=info: zf.open(info))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for m in tf:
                if m.issym() or m.islnk() or not (m.isfile() or m.isdir()):
                    raise ValueError(f"{archive}: refusing member {m.name!r} (links and devices are not extracted)")
                yield m.name, m.isdir(), (lambda m=m: tf.extractfile(m))
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")


def extract(archive: Path, dest: Path) -> Tuple[int, int]:
    """Extract ``archive`` into ``dest`` without overwriting: returns ``(written, kept)`` file counts.

    Raises ``ValueError`` for a member that would land outside ``dest`` or is a link."""
    written = kept = 0
    for name, is_dir, open_member in _members(archive):
        if not _safe_name(name):
            raise ValueError(f"{archive}: refusing member {name!r} (absolute path or '..')")
        target = dest / name
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.exists():
            kept += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(target, "xb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        written += 1
    return written, kept


def check(name: str, folder: Path) -> Dict[str, Tuple[int, int]]:
    """Read ``folder`` with the benchmark's DataModule: ``{split: (images, classes)}``; raises the
    reader's ``FileNotFoundError`` / ``ValueError`` (naming the file and the expected layout)."""
    import graphneg.data as gd

    dm = getattr(gd, BENCHMARKS[name][0])(str(folder), num_workers=0)
    return {s: (len(paths), len(set(labels))) for s, (paths, labels) in dm._read().items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("folder")
    args = p.parse_args(argv)
    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        print(f"error: {folder} is not a folder; create it and put the official archives of {args.name} in it",
              file=sys.stderr)
        return 1
    try:
        sizes = check(args.name, folder)
        print(f"{args.name}: {folder} already has the official layout")
    except (FileNotFoundError, ValueError) as first_error:
        archives = [folder / a for a in BENCHMARKS[args.name][1] if (folder / a).is_file()]
        if not archives:
            print(f"error: {first_error}\nNo official archive ({', '.join(BENCHMARKS[args.name][1])}) found in "
                  f"{folder} either: download it from the dataset's page and put it there.", file=sys.stderr)
            return 1
        for a in archives:
            try:
                written, kept = extract(a, folder)
            except (ValueError, OSError, tarfile.TarError, zipfile.BadZipFile) as err:
                print(f"error: cannot unpack {a}: {err}", file=sys.stderr)
                return 1
            print(f"unpacked {a.name}: {written} files written, {kept} existing files kept")
        try:
            sizes = check(args.name, folder)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: after unpacking: {err}", file=sys.stderr)
            return 1
    official = BENCHMARKS[args.name][2]
    lines: List[str] = []
    for split, (n, c) in sizes.items():
        on, oc = official.get(split, (None, None))
        mark = "" if (n, c) == (on, oc) else "   <- differs from the official split (a subset?)"
        lines.append(f"  {split:8s} {n:6d} images {c:6d} classes   (official {on} / {oc}){mark}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
