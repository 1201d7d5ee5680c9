"""Load a repository script that is not part of the package (``datasets/``, ``experiments/``) as a module."""
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str) -> ModuleType:
    """``ROOT / relative_path`` executed as a fresh module named ``graphneg_<stem>``."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"graphneg_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
