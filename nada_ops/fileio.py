"""Atomic file writes: nothing a user made is ever left half-written under its final name."""
from __future__ import annotations

import os
import tempfile


def make_readable(path) -> None:
    """mkstemp creates files as 0600; give a finished file the usual 0666 & ~umask."""
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def temp_path_beside(path, suffix: str | None = None) -> str:
    """A new empty temporary file in ``path``'s folder (created), for a later os.replace."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix if suffix is not None else os.path.splitext(path)[1],
                               dir=folder)
    os.close(fd)
    return tmp


def atomic_write(path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` on a temporary file in the destination folder, then rename
    it over ``path``. A crash or interrupt never leaves a partial file under the final name."""
    tmp = temp_path_beside(path)
    try:
        write_fn(tmp)
        make_readable(tmp)
        os.replace(tmp, os.fspath(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
