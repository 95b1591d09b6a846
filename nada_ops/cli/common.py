"""What every command shares: progress bars and messages on stderr, the --device choice,
and turning generator / CLIP arguments into files (catalogue names are downloaded once)."""
from __future__ import annotations

import sys
import time

# A progress bar draws its line with '\r' and no newline; any other message first ends that line,
# so that messages never run into a bar (and the next bar starts on a fresh line).
_state = {"open": None}


def _end_open_line():
    s = _state["open"]
    if s is not None:
        s.write("\n")
        s.flush()
        _state["open"] = None


def say(text: str, stream=None) -> None:
    """A message on stderr (or ``stream``), on its own line even while a progress bar is drawn."""
    stream = stream or sys.stderr
    _end_open_line()
    stream.write(text + "\n")
    stream.flush()


def format_duration(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    if s < 90:
        return f"{max(seconds, 0):.1f} s" if seconds < 10 else f"{s} s"
    m, s = divmod(s, 60)
    if m < 90:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class UsageError(Exception):
    """A wrong command-line value; printed as 'error: ...' (exit status 2)."""


def available_devices() -> list[str]:
    import torch
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def device_from_arg(arg: str):
    """'auto' (CUDA when there is one), 'cpu', 'cuda', 'cuda:N', 'mps' as a torch.device; a device
    this machine does not have (or a misspelt one) is a UsageError naming the devices it has."""
    import torch
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    have = available_devices()
    aliases = {"gpu": "cuda", "nvidia": "cuda", "cuda0": "cuda:0"}
    try:
        dev = torch.device(arg)
    except (RuntimeError, ValueError):
        alt = aliases.get(arg.strip().lower())
        hint = f" (did you mean --device {alt}?)" if alt else ""
        raise UsageError(f"--device {arg}: unknown device{hint}; this machine has: auto, {', '.join(have)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "torch was built without CUDA" if torch.version.cuda is None else \
                f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
            raise UsageError(f"--device {arg}: no CUDA GPU here ({built}); this machine has: auto, "
                             f"{', '.join(have)}. Leave --device out (auto) to use the CPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {arg}: there are {torch.cuda.device_count()} CUDA device(s); "
                             f"this machine has: auto, {', '.join(have)}")
    elif dev.type == "mps" and "mps" not in have:
        raise UsageError(f"--device {arg}: no Apple GPU (MPS) here; this machine has: auto, {', '.join(have)}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {arg}: the pack runs on cpu, cuda or mps; this machine has: auto, "
                         f"{', '.join(have)}")
    return dev


class ProgressPrinter:
    """Minimal text progress bar on stderr (no extra dependency)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.time()

    def __call__(self, done, total, extra=None):
        frac = done / max(total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        el = time.time() - self.t0
        eta = el / frac - el if frac > 0 else 0
        msg = f"\r{self.label} [{bar}] {done}/{total} {el:6.1f}s eta {eta:6.1f}s"
        if extra:
            msg += f" {extra}"
        if _state["open"] is not None and _state["open"] is not self.stream:
            _end_open_line()
        self.stream.write(msg)
        _state["open"] = self.stream
        if done >= total:
            self.stream.write("\n")
            _state["open"] = None
        self.stream.flush()


class ByteProgress:
    """Download progress: '<label> [####----] 120.3 MB / 363.0 MB  8.1 MB/s eta 30 s'."""

    def __init__(self, label: str, stream=None, every_s: float = 0.2):
        self.label, self.stream, self.every = label, stream or sys.stderr, every_s
        self.t0 = time.time()
        self.last = 0.0
        self.first = None

    def __call__(self, done: int, total: int | None):
        from ..catalogue import human_bytes
        now = time.time()
        if self.first is None:
            self.first = (now, done)
        final = total is not None and done >= total
        if not final and now - self.last < self.every:
            return
        self.last = now
        t0, d0 = self.first
        rate = (done - d0) / max(now - t0, 1e-6)
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            eta = (total - done) / rate if rate > 0 else 0
            msg = (f"\r{self.label} [{bar}] {human_bytes(done)} / {human_bytes(total)} "
                   f"{human_bytes(rate)}/s eta {format_duration(eta)}   ")
        else:
            msg = f"\r{self.label} {human_bytes(done)} {human_bytes(rate)}/s   "
        if _state["open"] is not None and _state["open"] is not self.stream:
            _end_open_line()
        self.stream.write(msg)
        _state["open"] = self.stream
        if final:
            self.stream.write("\n")
            _state["open"] = None
        self.stream.flush()


class Stage:
    """``with Stage("loading generator ffhq"):`` prints 'loading generator ffhq ...' and then
    'done (2.3 s)' on the same line, or the time it took before an error."""

    def __init__(self, text: str, stream=None):
        self.text, self.stream = text, stream or sys.stderr

    def __enter__(self):
        _end_open_line()
        self.t0 = time.time()
        self.stream.write(self.text + " ... ")
        self.stream.flush()
        _state["open"] = self.stream
        return self

    def note(self, text: str) -> None:
        """Add to the stage line (e.g. what was loaded)."""
        if _state["open"] is self.stream:
            self.stream.write(text + " ")
            self.stream.flush()

    def __exit__(self, exc_type, exc, tb):
        dt = time.time() - self.t0
        if _state["open"] is self.stream:
            self.stream.write(("done" if exc is None else "failed") + f" ({format_duration(dt)})\n")
            self.stream.flush()
            _state["open"] = None
        return False


class note_interrupted_download:
    """``with note_interrupted_download():`` around a download: Ctrl-C says what was kept."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is KeyboardInterrupt:
            say("download stopped: the part received is kept (hidden, next to the models) and the next run "
                "continues it")
        return False


def generator_path(spec: str, download: bool = True) -> str:
    """A --generator value as a file: a path, or a catalogue name (downloaded once into
    ``$NADA_MODELS_DIR/stylegan``, with a progress bar)."""
    from ..catalogue import catalogue, local_path, resolve_generator
    entry = catalogue().find(spec, "stylegan") if not _is_file(spec) else None
    progress = None
    if entry is not None and not local_path(entry).is_file():
        progress = ByteProgress(f"download {entry.name}")
    with note_interrupted_download():
        return resolve_generator(spec, download=download, progress=progress, log=say)


def _is_file(p) -> bool:
    import os
    return os.path.isfile(p)
