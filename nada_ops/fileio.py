"""Atomic file writes that never leave anything a loader would list.

Every file the pack writes (models, latents, directions, images, videos, job settings) is
written inside a private temporary folder next to the destination, then renamed into place:

    <folder>/.tmp-nada-<host>-<pid>-<random>/partial      ->  os.replace  ->  <folder>/<name>

- Nothing under the final name is ever half-written.
- Nothing in the temporary folder carries a model, image or video extension, so a loader
  that lists files by extension (ComfyUI's model lists) never shows it, even after the
  writer was killed (``kill -9``, power loss). Libraries that make their own temporary file
  next to the path they are given (safetensors >= 0.5 ``save_file`` writes ``.tmpXXXXXX`` in
  the target's folder and renames it) make it inside the private folder too.
- A writer removes its folder when it finishes or fails. Folders left by writers that died
  are removed by the next write into the same folder (:func:`clean_stale_temporaries`),
  only when the name says they are ours, the writing process is gone (same host) and
  nothing in them changed for :data:`STALE_AFTER_S` seconds; folders whose writer cannot
  be checked (written from another machine sharing the folder, or on Windows) wait
  :data:`FOREIGN_STALE_AFTER_S`.
- :func:`is_temporary_name` is the rule every file list of the pack applies (it also hides
  the ``.tmp-XXXX.<ext>`` files older versions left behind; those are never deleted, since
  nothing in their name says who wrote them).
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import tempfile
import time

TEMP_PREFIX = ".tmp-nada-"
#: Name of the file inside a private temporary folder (no extension on purpose).
PARTIAL_NAME = "partial"
#: A dead writer's folder is removed once nothing in it changed for this long (same host).
STALE_AFTER_S = 600.0
#: ... when the writer cannot be checked (another host sharing the folder, e.g. a render farm; Windows).
FOREIGN_STALE_AFTER_S = 7 * 24 * 3600.0

_TEMP_DIR = re.compile(r"^\.tmp-nada-([0-9a-f]{8})-(\d+)-[A-Za-z0-9_]+$")


def make_readable(path) -> None:
    """Temporary files may be created 0600 (safetensors' Rust tempfile, mkstemp); give a
    finished file the usual 0666 & ~umask."""
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def is_temporary_name(name) -> bool:
    """True when ``name`` (a file name or a relative path, ``/`` or ``\\`` separated) is, or
    lies inside, a temporary file of a writer: ours (``.tmp-nada-...``), those of older
    versions (``.tmp-XXXX.ext``) and those of libraries (``.tmpXXXXXX``, safetensors/Rust)."""
    s = os.fsdecode(name) if isinstance(name, bytes) else str(os.fspath(name))
    return any(part.startswith(".tmp") for part in re.split(r"[\\/]", s) if part)


def _pid_alive(pid: int) -> bool | None:
    """True / False for a process of this machine; None when it cannot be told (Windows:
    ``os.kill`` there would terminate the process, not probe it)."""
    if os.name != "posix" or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:              # PermissionError: it exists, under another user
        return True
    return True


def _newest_mtime(folder: str) -> float | None:
    """Latest mtime of the folder and its direct entries; None when the folder holds
    anything other than plain files (then it is not ours to remove)."""
    newest = os.lstat(folder).st_mtime
    with os.scandir(folder) as it:
        for e in it:
            est = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(est.st_mode):
                return None
            newest = max(newest, est.st_mtime)
    return newest


def clean_stale_temporaries(folder, now: float | None = None) -> list[str]:
    """Remove the temporary folders of dead writers in ``folder`` (see the module text).
    Never raises; returns the paths removed."""
    removed: list[str] = []
    folder = os.fspath(folder)
    now = time.time() if now is None else now
    host = _host_tag()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_DIR.match(e.name)
        if not m:
            continue
        try:
            if not e.is_dir(follow_symlinks=False):
                continue
            pid = int(m.group(2))
            alive = _pid_alive(pid) if m.group(1) == host else None
            if alive or (m.group(1) == host and pid == os.getpid()):
                continue
            newest = _newest_mtime(e.path)
            if newest is None:
                continue
            if now - newest < (STALE_AFTER_S if alive is False else FOREIGN_STALE_AFTER_S):
                continue
            for f in os.scandir(e.path):
                os.unlink(f.path)
            os.rmdir(e.path)
            removed.append(e.path)
        except OSError:
            continue
    return removed


def writer_tag() -> str:
    """'<host>-<pid>' of this process, as its temporary folders are named (a batch worker
    reports it, so that its temporaries can be removed once it is known to be dead)."""
    return f"{_host_tag()}-{os.getpid()}"


def remove_temporaries_of(folder, tag: str) -> list[str]:
    """Remove at once the temporary folders in ``folder`` of the writer ``tag`` (from
    :func:`writer_tag`), which the caller knows is dead (e.g. a batch worker that Ray reported
    dead); only plain files inside are removed.  Never raises; returns the paths removed."""
    removed: list[str] = []
    try:
        entries = [e for e in os.scandir(os.fspath(folder)) if e.name.startswith(f"{TEMP_PREFIX}{tag}-")]
    except OSError:
        return removed
    for e in entries:
        try:
            if not _TEMP_DIR.match(e.name) or not e.is_dir(follow_symlinks=False) or _newest_mtime(e.path) is None:
                continue
            for f in os.scandir(e.path):
                os.unlink(f.path)
            os.rmdir(e.path)
            removed.append(e.path)
        except OSError:
            continue
    return removed


def temp_path_beside(path, suffix: str | None = None) -> str:
    """A path for a new temporary file, to be renamed over ``path`` later with
    :func:`commit_temp` (or dropped with :func:`discard_temp`).

    The file lives in a new private folder in ``path``'s folder (created as needed) and is
    named without an extension (``suffix`` is accepted for compatibility and ignored:
    writers name the format explicitly). Stale folders of dead writers are removed first."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    clean_stale_temporaries(folder)
    d = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-", dir=folder)
    return os.path.join(d, PARTIAL_NAME)


def _is_private_temp(tmp: str) -> bool:
    d = os.path.dirname(tmp)
    return os.path.basename(tmp) == PARTIAL_NAME and bool(_TEMP_DIR.match(os.path.basename(d)))


def discard_temp(tmp) -> None:
    """Delete a temporary file from :func:`temp_path_beside` and everything in its private
    folder (e.g. a library's own temporary file). Never raises."""
    tmp = os.fspath(tmp)
    try:
        os.unlink(tmp)
    except OSError:
        pass
    if not _is_private_temp(tmp):
        return
    d = os.path.dirname(tmp)
    try:
        for f in os.scandir(d):
            if not f.is_dir(follow_symlinks=False):
                os.unlink(f.path)
        os.rmdir(d)
    except OSError:
        pass


def commit_temp(tmp, path) -> str:
    """Rename a finished temporary file over ``path`` and remove its private folder."""
    tmp, path = os.fspath(tmp), os.fspath(path)
    make_readable(tmp)
    os.replace(tmp, path)
    discard_temp(tmp)
    return path


def atomic_write(path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` on a temporary file next to ``path``, then rename it over
    ``path``. A crash or interrupt never leaves a partial file under the final name, nor any
    file a loader lists by extension."""
    tmp = temp_path_beside(path)
    try:
        write_fn(tmp)
        if not os.path.isfile(tmp):
            raise OSError(f"{os.fspath(path)}: the writer produced no file")
        commit_temp(tmp, path)
    except BaseException:
        discard_temp(tmp)
        raise
