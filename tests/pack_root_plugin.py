"""pytest plugin, loaded with ``-p pack_root_plugin`` (pyproject.toml): the repository root is a
ComfyUI package (``__init__.py`` with relative imports) in a folder whose name need not be a
Python name (``git clone ... stylegan-nada``). pytest would collect it as a test package and
import that ``__init__.py`` under the folder's name, which fails; collect it as a plain folder
instead. The tests import the pack the way ComfyUI does (tests/conftest.py)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collect_directory(path, parent):
    if Path(path).resolve() == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
