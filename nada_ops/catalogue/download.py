"""Downloading one file over HTTP(S) with the standard library only (``urllib``).

``download_file(url, dest, ...)`` fetches ``url`` into ``dest``:

- The bytes go to ``<folder>/.tmp-nada-downloads/<name>.partial`` (next to ``dest``, so the final
  rename is atomic). The folder name starts with ``.tmp``, so no model list of the pack or of
  ComfyUI shows it (:func:`nada_ops.fileio.is_temporary_name`), and its name is stable, so a
  later run (the command line or ComfyUI) resumes it.
- Resume: a partial file is continued with an HTTP ``Range`` request, guarded by ``If-Range``
  (the ETag or Last-Modified the server gave the first time): a server that ignores the range,
  or whose file changed, answers with the whole file, which then replaces the partial one.
  A connection cut in the middle of the body is resumed at once (at most ``max_resumes``
  times, and only while each try brings new bytes); every other failure is reported at once,
  with no retries, so an offline machine fails in seconds.
- Checks: the size the server announces against the expected size (before any byte is
  written), the received size, the SHA-256 where one is known, an HTML page where a model
  file was expected (Google Drive's confirmation and quota pages), and ``verify(path)``, a
  check of the content by the caller (e.g. "loads as an NVIDIA pickle"). Only a file that
  passed every check is renamed to ``dest``.
- One downloader per file: a lock file (with the owner's host and pid; a dead owner's lock is
  taken over) stops ComfyUI and the command line from writing the same partial file.
- Short timeouts: ``timeout`` seconds to resolve the host name, to connect and between two
  reads (``NADA_DOWNLOAD_TIMEOUT``, default 20 s).

Errors are :class:`DownloadError` with a message naming the file, the address and what went wrong.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PARTIAL_DIR = ".tmp-nada-downloads"
PARTIAL_SUFFIX = ".partial"
DEFAULT_TIMEOUT_S = 20.0
CHUNK = 1 << 20
#: Most bytes accepted when neither the server nor the catalogue says how large the file is.
MAX_UNKNOWN_SIZE = 32 * 2 ** 30
USER_AGENT = "stylegan-nada-comfyui (python urllib)"
_TRUE = {"1", "true", "yes", "on"}


class DownloadError(Exception):
    """A download failed or was refused; the message says which file, from where and why.
    ``discard``: the bytes received are not worth keeping for a resume (a web page, ...)."""

    def __init__(self, message: str, discard: bool = False):
        super().__init__(message)
        self.discard = discard


class _Cut(Exception):
    """The connection broke during the body (``received``: new bytes written by this try)."""

    def __init__(self, received: int, why: str):
        super().__init__(why)
        self.received = received
        self.why = why


class _Restart(Exception):
    """The partial file cannot be continued: start again from byte 0."""


def download_timeout() -> float:
    try:
        v = float(os.environ.get("NADA_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return v if v > 0 else DEFAULT_TIMEOUT_S


def offline_reason() -> str | None:
    """Why downloads are off, or None: ``NADA_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes/on."""
    for var in ("NADA_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var].strip()}"
    return None


def partial_path(dest) -> str:
    """Where the unfinished download of ``dest`` lives (hidden from model lists, stable across runs)."""
    dest = os.path.abspath(os.fspath(dest))
    return os.path.join(os.path.dirname(dest), PARTIAL_DIR, os.path.basename(dest) + PARTIAL_SUFFIX)


def partial_size(dest) -> int:
    try:
        return os.path.getsize(partial_path(dest))
    except OSError:
        return 0


def human_bytes(n) -> str:
    if n is None:
        return "? B"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


# ---------------------------------------------------------------------------- lock
class _Lock:
    """Exclusive ownership of one download (a lock file holding '<host> <pid>')."""

    def __init__(self, path: str, label: str):
        self.path, self.label = path, label
        self.held = False

    def __enter__(self):
        from ..fileio import _host_tag, _pid_alive
        me = f"{_host_tag()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(self.path, encoding="ascii", errors="replace") as fh:
                        host, _, pid = fh.read(100).strip().partition(" ")
                    age = time.time() - os.path.getmtime(self.path)
                except OSError:
                    continue
                alive = _pid_alive(int(pid)) if host == _host_tag() and pid.isdigit() else None
                unreadable = not pid.isdigit() and age > 60       # a writer killed before writing its pid
                unknown_and_old = alive is None and age > (24 * 3600 if host == _host_tag() else 7 * 24 * 3600)
                if alive is False or unreadable or unknown_and_old:
                    try:
                        os.unlink(self.path)
                    except OSError:
                        pass
                    continue
                raise DownloadError(
                    f"{self.label}: another process ({'pid ' + pid if pid else 'unknown'}"
                    f"{'' if host == _host_tag() else ' on another machine'}) is downloading this file "
                    f"right now (lock {self.path}); wait for it to finish, or delete the lock file if "
                    "that process is gone") from None
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(me)
            self.held = True
            return self
        raise DownloadError(f"{self.label}: cannot take the download lock {self.path}")

    def __exit__(self, *exc):
        if self.held:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        return False


# ---------------------------------------------------------------------------- network
def _check_resolves(url: str, timeout: float, label: str) -> None:
    """Resolve the host in a helper thread, so that a machine without a working DNS fails
    within ``timeout`` (``getaddrinfo`` has no timeout of its own). Skipped behind a proxy."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or urllib.request.getproxies().get(parts.scheme):
        return
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return                                      # an address, nothing to resolve
    except OSError:
        pass
    result: dict = {}

    def work():
        try:
            socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                               type=socket.SOCK_STREAM)
            result["ok"] = True
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=work, name="nada-dns", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise DownloadError(f"{label}: could not resolve the host {host!r} within {timeout:g} s "
                            "(no network, or no working DNS)")
    if "error" in result:
        e = result["error"]
        raise DownloadError(f"{label}: cannot resolve the host {host!r} ({getattr(e, 'strerror', None) or e}): "
                            "no network connection, or the name is wrong")


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None)
    if isinstance(r, BaseException):
        e = r
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host ({e.strerror or e})"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _content_range(value: str | None):
    """'bytes 100-199/1000' -> (100, 199, 1000); total may be None ('*')."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), None if m.group(3) == "*" else int(m.group(3))


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip()[:200].lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in h[:100]


def _read_meta(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.loads(fh.read(10_000))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_meta(path: str, meta: dict) -> None:
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    os.replace(tmp, path)


def _discard(*paths) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def _fetch_once(url, part, meta_path, meta, expected_size, timeout, progress, label, html_hint, log):
    """One HTTP request: append to (or restart) the partial file. Returns the file's final size;
    raises _Cut (connection broke mid-body), _Restart, or DownloadError."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and have:
                m = re.search(r"/(\d+)\s*$", e.headers.get("Content-Range") or "")    # 'bytes */1000'
                total = int(m.group(1)) if m else None
                if have == (total or expected_size or -1):
                    return have                     # the partial file was already complete
                raise _Restart() from None
            hint = {401: "the server wants a login", 403: "access refused (the file may no longer be public)",
                    404: "no such file there (it may have moved)",
                    429: "too many requests: try again later"}.get(e.code, "")
            raise DownloadError(f"{label}: the server answered HTTP {e.code} {e.reason} for {url}"
                                + (f" ({hint})" if hint else "")) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise DownloadError(f"{label}: cannot reach {urllib.parse.urlsplit(url).netloc} "
                            f"({_reason(e)}: no network connection, or the server is down)") from None
    with resp:
        status = getattr(resp, "status", 200)
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "text/html" in ctype:
            raise DownloadError(f"{label}: {url} answered with a web page, not the model file" + html_hint,
                                discard=True)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206 and have:
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != have:
                raise _Restart()
            offset, total = have, cr[2]
        else:
            if have and log is not None:
                log(f"{label}: the server sent the whole file instead of the missing part; starting again")
            offset, total = 0, length
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{label}: the server offers {total:,} bytes, but the file should have "
                                f"{expected_size:,} bytes ({url}); not downloaded")
        limit = expected_size or total or MAX_UNKNOWN_SIZE
        free = shutil.disk_usage(os.path.dirname(part)).free
        if total is not None and total - offset > free:
            raise DownloadError(f"{label}: needs {human_bytes(total - offset)} of disk space, "
                                f"{human_bytes(free)} free in {os.path.dirname(os.path.dirname(part))}")
        meta.clear()
        meta.update({"url": url, "total": total, "etag": resp.headers.get("ETag"),
                     "last_modified": resp.headers.get("Last-Modified")})
        _write_meta(meta_path, meta)
        done = offset
        with open(part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            fh.truncate()
            first = offset == 0
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
                    raise _Cut(done - offset, _reason(e)) from None
                if not chunk:
                    break
                if first:
                    first = False
                    if _looks_like_html(chunk):
                        raise DownloadError(f"{label}: {url} answered with a web page, not the model file"
                                            + html_hint, discard=True)
                if done + len(chunk) > limit:
                    raise DownloadError(f"{label}: the server sends more than {limit:,} bytes ({url}); stopped",
                                        discard=True)
                fh.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done < total:
            raise _Cut(done - offset, f"the connection closed after {done:,} of {total:,} bytes")
        return done


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(CHUNK * 4)
            if not b:
                return h.hexdigest()
            h.update(b)


def download_file(url: str, dest, *, expected_size: int | None = None, sha256: str | None = None,
                  verify=None, progress=None, timeout: float | None = None, max_resumes: int = 3,
                  label: str | None = None, html_hint: str = "", log=None) -> str:
    """Download ``url`` to ``dest`` (see the module text); returns ``dest``.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive; an exception it
    raises (Cancel in ComfyUI, Ctrl-C) stops the download and keeps the partial file for a later
    resume. ``verify(path)`` raises (ValueError, ...) when the finished file is not what was asked
    for. ``log(text)`` receives notices (a restarted download)."""
    dest = os.path.abspath(os.fspath(dest))
    label = label or os.path.basename(dest)
    timeout = timeout or download_timeout()
    why = offline_reason()
    if why:
        raise DownloadError(f"{label}: downloads are off ({why})")
    part = partial_path(dest)
    pdir = os.path.dirname(part)
    os.makedirs(pdir, exist_ok=True)
    meta_path = part + ".json"
    try:
        with _Lock(part + ".lock", label):
            meta = _read_meta(meta_path)
            if os.path.exists(part) and (meta.get("url") != url or
                                         (expected_size is not None and meta.get("total") not in (None, expected_size))):
                _discard(part, meta_path)               # a partial file of another address or version
                meta = {}
            _check_resolves(url, timeout, label)
            resumes = restarts = 0
            while True:
                try:
                    size = _fetch_once(url, part, meta_path, meta, expected_size, timeout, progress, label,
                                       html_hint, log)
                    break
                except DownloadError as e:
                    if e.discard:
                        _discard(part, meta_path)
                    raise
                except _Restart:
                    restarts += 1
                    _discard(part, meta_path)
                    meta = {}
                    if restarts > 1:
                        raise DownloadError(f"{label}: the server does not answer range requests consistently ({url})")
                except _Cut as c:
                    resumes += 1
                    if c.received == 0 or resumes > max_resumes:
                        raise DownloadError(
                            f"{label}: the download broke off ({c.why}); {human_bytes(partial_size(dest))} are kept "
                            "and the next try continues from there") from None
                    if log is not None:
                        log(f"{label}: connection lost ({c.why}); resuming at {human_bytes(os.path.getsize(part))}")
            try:
                if expected_size is not None and size != expected_size:
                    raise DownloadError(f"{label}: received {size:,} bytes, expected {expected_size:,} ({url})")
                if sha256:
                    got = sha256_of(part)
                    if got.lower() != sha256.lower():
                        raise DownloadError(f"{label}: the downloaded file's SHA-256 is {got}, expected {sha256} "
                                            f"({url}); the file was deleted")
                if verify is not None:
                    try:
                        verify(part)
                    except DownloadError:
                        raise
                    except Exception as e:                  # noqa: BLE001 - any content problem
                        problem = getattr(e, "problem", None) or str(e)
                        raise DownloadError(f"{label}: the downloaded file is not what was expected: {problem} "
                                            f"({url}); the file was deleted") from None
            except DownloadError:
                _discard(part, meta_path)
                raise
            from ..fileio import make_readable
            make_readable(part)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(part, dest)
            _discard(meta_path)
    finally:
        try:
            os.rmdir(pdir)                              # only when nothing else is in it
        except OSError:
            pass
    return dest
