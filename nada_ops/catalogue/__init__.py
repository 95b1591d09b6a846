"""The catalogue of published models the pack can fetch by name, and where models live.

The data is ONE file, ``models.json`` next to this module: for each model its catalogue name
(and aliases), kind (``stylegan`` generator or ``clip`` weights), format, file name in the
models folder, download address, size and SHA-256 where the publisher states them (``null``
otherwise: the file is then checked by loading it as the stated format before it is put in
place), resolution, a description and its source (publisher, where the address is published,
licence). Nothing here downloads by itself: :func:`ensure` is called only for a name the
user asked for (``--generator ffhq``, ``python -m nada_ops download ffhq``, the catalogue
entries of Load StyleGAN in ComfyUI, the default CLIP models of ``adapt``).

Folders: the command line keeps models in ``$NADA_MODELS_DIR`` (default ``./models``) with
ComfyUI's layout: ``stylegan/`` for generators, ``open_clip/`` for CLIP weights (created on
demand); ComfyUI passes its own folders.

Settings (environment): ``NADA_MODELS_DIR`` (models folder of the command line),
``NADA_MODEL_MIRROR`` (a base address that replaces every catalogue address:
``<mirror>/<file name>``, for an internal mirror, or tests), ``NADA_OFFLINE=1`` or
``HF_HUB_OFFLINE=1`` (never download: a missing file is an error naming it and its folder),
``NADA_DOWNLOAD_TIMEOUT`` (seconds, default 20).
"""
from __future__ import annotations

import difflib
import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .download import (DownloadError, download_file, human_bytes, offline_reason, partial_path,  # noqa: F401
                       partial_size)

__all__ = ["Entry", "Catalogue", "catalogue", "DownloadError", "ModelUnavailableError", "models_root",
           "default_folder", "ensure", "resolve_generator", "clip_weights_for", "offline_reason",
           "FOLDER_OF_KIND", "KINDS"]

DATA_FILE = Path(__file__).with_name("models.json")
KINDS = ("stylegan", "clip")
#: kind -> sub-folder of the models folder (ComfyUI's folder keys: models/stylegan, models/open_clip)
FOLDER_OF_KIND = {"stylegan": "stylegan", "clip": "open_clip"}
FORMATS = {"stylegan": ("nvidia-pkl", "nvidia-tf-pkl", "rosinality-pt", "safetensors"),
           "clip": ("open_clip-safetensors",)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class ModelUnavailableError(DownloadError, FileNotFoundError):
    """A catalogue model is not on disk and cannot be downloaded now (offline, refused, failed)."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    format: str
    file: str
    url: str
    source: dict
    size: int | None = None
    sha256: str | None = None
    resolution: int | None = None
    description: str = ""
    aliases: tuple = ()
    conditional: bool = False
    open_clip: dict | None = None
    listed_size_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def licence(self) -> str:
        return self.source.get("licence", "")

    @property
    def licence_url(self) -> str:
        return self.source.get("licence_url", "")

    @property
    def folder_key(self) -> str:
        return FOLDER_OF_KIND[self.kind]

    def download_url(self) -> str:
        """The address to fetch: the published one, or ``$NADA_MODEL_MIRROR/<file>``."""
        mirror = os.environ.get("NADA_MODEL_MIRROR", "").strip()
        if mirror:
            return mirror.rstrip("/") + "/" + self.file
        return self.url

    def size_text(self) -> str:
        if self.size:
            return human_bytes(self.size)
        if self.listed_size_mb:
            return f"~{self.listed_size_mb:g} MB"
        return "size not published"


class Catalogue:
    def __init__(self, data: dict, where: str = "models.json"):
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise ValueError(f"{where}: expected an object with a 'models' list")
        sources = data.get("sources") or {}
        self.entries: list[Entry] = []
        self._by_key: dict[tuple[str, str], Entry] = {}
        for i, m in enumerate(data["models"]):
            self.entries.append(_entry(m, sources, f"{where}: model {i}"))
        files = set()
        for e in self.entries:                   # names and aliases are unique within a kind
            if (e.kind, e.file) in files:
                raise ValueError(f"{where}: two models are saved as {e.file!r}")
            files.add((e.kind, e.file))
            for key in {e.name, *e.aliases}:
                k = (e.kind, key.lower())
                if k in self._by_key:
                    raise ValueError(f"{where}: the name {key!r} is used twice ({self._by_key[k].name}, {e.name})")
                self._by_key[k] = e
        for e in self.entries:                   # then file names and stems, where no name took them
            base = os.path.basename(e.file)
            for key in (e.file, base, os.path.splitext(base)[0]):
                self._by_key.setdefault((e.kind, key.lower()), e)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def find(self, name: str, kind: str | None = None) -> Entry | None:
        """The entry called ``name`` (its name, an alias, its file name or file stem; any case)."""
        if not isinstance(name, str) or not name.strip():
            return None
        key = name.strip().replace("\\", "/").lower()
        for k in ([kind] if kind else KINDS):
            e = self._by_key.get((k, key))
            if e is not None:
                return e
        return None

    def suggest(self, name: str, kind: str | None = None, n: int = 3) -> list[str]:
        names = [e.name for e in self.entries if kind is None or e.kind == kind]
        return difflib.get_close_matches(name.lower(), names, n=n, cutoff=0.6)


def _entry(m, sources: dict, where: str) -> Entry:
    if not isinstance(m, dict):
        raise ValueError(f"{where}: not an object")
    try:
        name, kind, fmt, file, url = (m[k] for k in ("name", "kind", "format", "file", "url"))
    except KeyError as e:
        raise ValueError(f"{where}: missing {e.args[0]!r}") from None
    if kind not in KINDS or fmt not in FORMATS[kind]:
        raise ValueError(f"{where} ({name}): unknown kind/format {kind!r}/{fmt!r}")
    if not (isinstance(name, str) and _NAME.match(name)):
        raise ValueError(f"{where}: bad name {name!r}")
    if not (isinstance(file, str) and _NAME.match(file)) or ".." in file.split("/") or file.startswith("/"):
        raise ValueError(f"{where} ({name}): bad file name {file!r}")
    if not (isinstance(url, str) and url.startswith("https://")):
        raise ValueError(f"{where} ({name}): the address must be https://, got {url!r}")
    size, sha = m.get("size"), m.get("sha256")
    if size is not None and not (isinstance(size, int) and size > 0):
        raise ValueError(f"{where} ({name}): bad size {size!r}")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise ValueError(f"{where} ({name}): bad sha256 {sha!r}")
    src = sources.get(m.get("source"))
    if not isinstance(src, dict) or not src.get("licence"):
        raise ValueError(f"{where} ({name}): unknown source {m.get('source')!r} (every model needs a licence note)")
    known = {"name", "kind", "format", "file", "url", "size", "sha256", "resolution", "description", "aliases",
             "conditional", "open_clip", "listed_size_mb", "source"}
    return Entry(name=name, kind=kind, format=fmt, file=file, url=url, source=dict(src, key=m["source"]),
                 size=size, sha256=sha, resolution=m.get("resolution"), description=m.get("description", ""),
                 aliases=tuple(m.get("aliases") or ()), conditional=bool(m.get("conditional", False)),
                 open_clip=m.get("open_clip"), listed_size_mb=m.get("listed_size_mb"),
                 extra={k: v for k, v in m.items() if k not in known})


def catalogue() -> Catalogue:
    """The catalogue: the pack's ``models.json``, or the JSON file named by ``NADA_CATALOGUE``
    (same layout; a private catalogue, or the tests' one), read once per file."""
    path = os.environ.get("NADA_CATALOGUE") or str(DATA_FILE)
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        raise FileNotFoundError(f"NADA_CATALOGUE={path}: no such file") from None
    return _read_catalogue(path, mtime)


@functools.lru_cache(maxsize=4)
def _read_catalogue(path: str, mtime: float) -> Catalogue:
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    return Catalogue(data, path)


# ---------------------------------------------------------------------------- folders
def models_root() -> Path:
    """The command line's models folder: ``$NADA_MODELS_DIR``, default ``./models``."""
    return Path(os.environ.get("NADA_MODELS_DIR") or "models")


def default_folder(kind: str) -> Path:
    return models_root() / FOLDER_OF_KIND[kind]


def local_path(entry: Entry, folder=None) -> Path:
    return Path(folder if folder is not None else default_folder(entry.kind)) / entry.file


def status(entry: Entry, folder=None) -> tuple[str, int | None]:
    """('present', size) | ('partial', bytes so far) | ('absent', None)."""
    p = local_path(entry, folder)
    if p.is_file():
        return "present", p.stat().st_size
    n = partial_size(p)
    return ("partial", n) if n else ("absent", None)


# ---------------------------------------------------------------------------- content checks
def check_content(entry: Entry, path) -> None:
    """Raise ValueError unless ``path`` holds what ``entry`` says (read by the pack's bounded readers)."""
    if entry.kind == "stylegan":
        from ..stylegan.io import read_checkpoint
        res = read_checkpoint(path)
        if res.format != entry.format:
            raise ValueError(f"expected a {entry.format} generator, the file is a {res.format}")
        return
    from ..clip.models import read_state_dict_file
    sd = read_state_dict_file(path)
    if not any(k.startswith("visual.") for k in sd) or not any("token_embedding" in k or k.startswith("text.")
                                                              for k in sd):
        raise ValueError("not an open_clip CLIP model (no image and text towers in it)")


def where_to_get(entry: Entry, folder=None) -> str:
    folder = Path(folder if folder is not None else default_folder(entry.kind))
    sub = os.path.dirname(entry.file)
    return (f"fetch {entry.url} and save it as {folder.resolve() / entry.file}"
            + (f" (the folder {sub}/ inside {folder.resolve()})" if sub else "")
            + (f", or run `python -m nada_ops download {entry.name}` where there is internet"))


def _drive_hint(entry: Entry) -> str:
    if "drive.google.com" in entry.url or "drive.usercontent.google.com" in entry.url:
        return (" (Google Drive answers large files with a confirmation page, and with a quota page when many "
                "people downloaded it recently): open "
                + entry.source.get("published_at", entry.url) + " in a browser, download it there")
    return " (an error or login page?)"


def ensure(entry: Entry, folder=None, progress=None, log=None, timeout: float | None = None) -> Path:
    """The local file of ``entry``, downloaded into ``folder`` first when it is missing.

    Raises :class:`ModelUnavailableError` (a FileNotFoundError) when it is missing and cannot be
    downloaded now; the message names the file, the folder and the address to fetch it from."""
    path = local_path(entry, folder)
    if path.is_file():
        return path
    why = offline_reason()
    if why:
        raise ModelUnavailableError(f"{entry.file} is not in {path.parent.resolve()} and downloads are off ({why}): "
                                    + where_to_get(entry, folder))
    if log is not None:
        log(f"downloading {entry.name} ({entry.size_text()}) from {entry.download_url()} into {path.parent.resolve()}")
    try:
        download_file(entry.download_url(), path, expected_size=entry.size, sha256=entry.sha256,
                      verify=lambda p: check_content(entry, p), progress=progress, timeout=timeout,
                      label=entry.file, html_hint=_drive_hint(entry), log=log)
    except DownloadError as e:
        raise ModelUnavailableError(f"{e}. To continue, {where_to_get(entry, folder)}") from None
    return path


def missing(entries, folders: dict | None = None) -> list[tuple[Entry, Path]]:
    """Entries whose file is not on disk, with the path it would have."""
    out = []
    for e in entries:
        p = local_path(e, (folders or {}).get(e.kind))
        if not p.is_file():
            out.append((e, p))
    return out


def unavailable_message(items) -> str:
    """One message for several missing files (e.g. generator + CLIP models, offline)."""
    why = offline_reason()
    lines = [f"{len(items)} model file(s) missing and downloads are off ({why}):" if why else
             f"{len(items)} model file(s) missing:"]
    for e, p in items:
        lines.append(f"  - {e.name}: {e.file} into {p.parent.resolve()}/  <- {e.url}")
    lines.append("Put them there (or run `python -m nada_ops download NAME` where there is internet).")
    return "\n".join(lines)


def resolve_generator(spec: str, folder=None, download: bool = True, progress=None, log=None) -> str:
    """A generator argument -> a file path: an existing file as given; a catalogue name (``ffhq``)
    -> its file in ``folder`` (default ``$NADA_MODELS_DIR/stylegan``), downloaded first if
    needed and ``download``; a file name inside ``folder``. Otherwise FileNotFoundError."""
    spec = os.fspath(spec)
    if os.path.isfile(spec):
        return spec
    entry = catalogue().find(spec, "stylegan")
    if entry is not None:
        if not download and not local_path(entry, folder).is_file():
            raise ModelUnavailableError(f"{spec} is a catalogue model that is not downloaded yet: "
                                        + where_to_get(entry, folder))
        return str(ensure(entry, folder, progress, log))
    inside = Path(folder if folder is not None else default_folder("stylegan")) / spec
    if inside.is_file():
        return str(inside)
    if os.path.exists(spec):
        return spec                              # a folder or special file: the reader says what is wrong
    close = catalogue().suggest(os.path.basename(spec), "stylegan")
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise FileNotFoundError(f"{spec}: file does not exist, and it is not a catalogue name{hint}; "
                            "`python -m nada_ops models` lists the models it can download")


def clip_entry(name: str) -> Entry | None:
    from ..clip.models import canonical_name
    return catalogue().find(canonical_name(name), "clip") or catalogue().find(name, "clip")


def clip_weights_for(name: str, search_dirs, download: bool = True, progress=None, log=None):
    """(architecture, weights file or None) for the CLIP model ``name`` when the user gave no file:

    1. the catalogue's file for ``name`` in one of ``search_dirs`` -> (its open_clip architecture, path);
    2. any other local weights for ``name`` in ``search_dirs`` -> (name, None): the loader finds them;
    3. the catalogue's file, downloaded into the first of ``search_dirs`` (default
       ``$NADA_MODELS_DIR/open_clip``) -> (architecture, path);
    4. no catalogue entry -> (name, None): open_clip's own download (unless offline)."""
    from ..clip.models import find_local_weights
    dirs = [d for d in (search_dirs or []) if d is not None]
    entry = clip_entry(name)
    arch = (entry.open_clip or {}).get("name", name) if entry is not None else name
    if entry is not None:
        for d in dirs:
            if local_path(entry, d).is_file():
                return arch, str(local_path(entry, d))
    if dirs and find_local_weights(name, dirs) is not None:
        return name, None
    if entry is None:
        return name, None
    folder = dirs[0] if dirs else default_folder("clip")
    if not download:
        raise ModelUnavailableError(f"CLIP {name}: no weights in {', '.join(map(str, dirs)) or folder}: "
                                    + where_to_get(entry, folder))
    return arch, str(ensure(entry, folder, progress, log))
