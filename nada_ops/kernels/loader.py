"""Just-in-time build and loading of the compiled ops (bias_act, upfirdn2d, filtered_lrelu).

Nothing here runs at import.  :func:`get_extension` is called by the dispatcher
(``nada_ops.ops.backend``) the first time a compiled op is wanted for a CUDA tensor:

1. the tool chain is checked (nvcc under a CUDA toolkit, ninja, a C++ compiler), so
   that a failure says *what* is missing;
2. the sources are compiled with ``torch.utils.cpp_extension.load`` + ninja for the
   architectures of the visible GPUs into a cache folder keyed by torch version, torch's
   CUDA version, nvcc version, Python ABI, GPU architectures and a hash of the sources and
   flags -- ``$NADA_OPS_CACHE`` or ``~/.cache/nada_ops/kernels/<key>``;
3. the build runs under an exclusive file lock in that folder, so concurrent first uses
   (several processes) wait for one build instead of corrupting it; a later process finds
   the library up to date and only loads it (ninja has nothing to do);
4. on failure the reason is reported ONCE (a ``RuntimeWarning`` plus a log record) and
   ``(None, reason)`` is returned for the rest of the process: the dispatcher then uses the
   PyTorch reference.

``python -m nada_ops.kernels.build`` uses :func:`build` to compile without a GPU (CI).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent
SOURCES = ("ext.cpp", "bias_act.cu", "upfirdn2d.cu", "filtered_lrelu.cu")
HEADERS = ("common.h", "bias_act.h", "upfirdn2d.h", "filtered_lrelu.h")
OPS = ("bias_act", "upfirdn2d", "filtered_lrelu")
EXT_PREFIX = "nada_ops_kernels"
IS_WINDOWS = os.name == "nt"
DEFAULT_CUDA_HOMES = ("/usr/local/cuda",)


class BuildError(RuntimeError):
    """The extension could not be built or loaded; the message says why."""


# ----------------------------------------------------------------- tool chain

def _has_cuda_headers(home: str) -> bool:
    return os.path.isfile(os.path.join(home, "include", "cuda_runtime_api.h"))


def _nvcc_in(home: str) -> str | None:
    exe = os.path.join(home, "bin", "nvcc.exe" if IS_WINDOWS else "nvcc")
    return exe if os.path.isfile(exe) else None


def find_cuda_home() -> tuple[str | None, str | None]:
    """(CUDA toolkit folder with bin/nvcc and include/cuda_runtime_api.h, None) or (None, reason)."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append((os.environ[var], f"${var}"))
    try:
        from torch.utils import cpp_extension
        if cpp_extension.CUDA_HOME:
            candidates.append((cpp_extension.CUDA_HOME, "torch.utils.cpp_extension.CUDA_HOME"))
    except Exception:  # pragma: no cover - torch always has it
        pass
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append((os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "nvcc on PATH"))
        candidates.append((os.path.dirname(os.path.dirname(nvcc)), "nvcc on PATH"))
    candidates += [(home, "default location") for home in DEFAULT_CUDA_HOMES]
    seen, tried = set(), []
    for home, origin in candidates:
        if home in seen:
            continue
        seen.add(home)
        if _nvcc_in(home) and _has_cuda_headers(home):
            return home, None
        tried.append(f"{home} ({origin})")
    return None, ("nvcc (the CUDA compiler) was not found: no CUDA toolkit with bin/nvcc and "
                  f"include/cuda_runtime_api.h among {', '.join(tried) or 'the usual places'}; "
                  "install the CUDA toolkit matching torch.version.cuda and set CUDA_HOME")


def find_cxx() -> tuple[str | None, str | None]:
    name = os.environ.get("CXX") or ("cl" if IS_WINDOWS else "c++")
    exe = shutil.which(name)
    if exe:
        return exe, None
    return None, (f"no C++ compiler: {name!r} is not on PATH (install g++/clang, or MSVC on Windows, "
                  "or set CXX)")


def toolchain_problems(with_cuda: bool = True) -> list[str]:
    """Human-readable list of what is missing to build the extension (empty: all there)."""
    problems = []
    if with_cuda:
        _, why = find_cuda_home()
        if why:
            problems.append(why)
    from torch.utils import cpp_extension
    if not cpp_extension.is_ninja_available():
        problems.append("ninja was not found (pip install ninja)")
    _, why = find_cxx()
    if why:
        problems.append(why)
    return problems


def nvcc_version(cuda_home: str) -> str:
    """'MAJOR.MINOR' of the CUDA toolkit in ``cuda_home``, read from its files (no process is
    started): version.json (CUDA >= 11.1), the pip-installed nvcc's dist-info, include/cuda.h,
    or version.txt (older toolkits). 'unknown' if none says."""
    import json
    home = Path(cuda_home)
    try:
        data = json.loads((home / "version.json").read_text(encoding="utf-8"))
        for key in ("cuda_nvcc", "cuda"):
            v = data.get(key, {}).get("version") if isinstance(data.get(key), dict) else None
            m = re.match(r"(\d+)\.(\d+)", str(v or ""))
            if m:
                return f"{int(m.group(1))}.{int(m.group(2))}"
    except (OSError, ValueError):
        pass
    try:
        for d in sorted((home / "dist-info").glob("nvidia_cuda_nvcc-*.dist-info")):
            m = re.match(r"nvidia_cuda_nvcc-(\d+)\.(\d+)", d.name)
            if m:
                return f"{int(m.group(1))}.{int(m.group(2))}"
    except OSError:
        pass
    try:
        m = re.search(r"#define\s+CUDA_VERSION\s+(\d+)", (home / "include" / "cuda.h").read_text(errors="ignore"))
        if m:
            v = int(m.group(1))
            return f"{v // 1000}.{(v % 1000) // 10}"
    except OSError:
        pass
    try:
        m = re.search(r"(\d+)\.(\d+)", (home / "version.txt").read_text(errors="ignore"))
        if m:
            return f"{int(m.group(1))}.{int(m.group(2))}"
    except OSError:
        pass
    return "unknown"


#: Real GPU architectures nvcc has known, and (first toolkit, last toolkit) that compiles for them.
_ARCH_SUPPORT = {
    "5.0": ((6, 0), (12, 99)), "5.2": ((7, 0), (12, 99)), "5.3": ((7, 0), (12, 99)),
    "6.0": ((8, 0), (12, 99)), "6.1": ((8, 0), (12, 99)), "6.2": ((8, 0), (12, 99)),
    "7.0": ((9, 0), (12, 99)), "7.2": ((10, 0), (12, 99)), "7.5": ((10, 0), (99, 0)),
    "8.0": ((11, 0), (99, 0)), "8.6": ((11, 1), (99, 0)), "8.7": ((11, 4), (99, 0)),
    "8.9": ((11, 8), (99, 0)), "9.0": ((11, 8), (99, 0)), "10.0": ((12, 8), (99, 0)),
    "10.3": ((12, 9), (99, 0)), "11.0": ((13, 0), (99, 0)), "12.0": ((12, 8), (99, 0)),
    "12.1": ((12, 9), (99, 0)),
}


def nvcc_arches(cuda_home: str) -> list[str]:
    """Real architectures the toolkit in ``cuda_home`` compiles for, as 'X.Y', from its version
    (NVIDIA's release notes; no process is started). Empty if the version is unknown."""
    v = nvcc_version(cuda_home)
    m = re.match(r"(\d+)\.(\d+)$", v)
    if not m:
        return []
    ver = (int(m.group(1)), int(m.group(2)))
    return sorted((a for a, (lo, hi) in _ARCH_SUPPORT.items() if lo <= ver <= hi),
                  key=lambda a: tuple(int(x) for x in a.split(".")))


def device_arch_list(cuda_home: str | None = None) -> list[str]:
    """TORCH_CUDA_ARCH_LIST entries for the visible GPUs (a GPU newer than nvcc gets the
    newest arch nvcc knows, plus PTX for the driver to JIT)."""
    import torch
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    known = nvcc_arches(cuda_home) if cuda_home else []
    known_caps = sorted(tuple(int(v) for v in a.split(".")) for a in known)
    out = []
    for cap in caps:
        if known_caps and cap not in known_caps:
            older = [k for k in known_caps if k <= cap]
            if older:
                out.append(f"{older[-1][0]}.{older[-1][1]}+PTX")
                continue
        out.append(f"{cap[0]}.{cap[1]}")
    return sorted(set(out))


# ---------------------------------------------------------------------- cache

def cache_root() -> Path:
    if os.environ.get("NADA_OPS_CACHE"):
        return Path(os.environ["NADA_OPS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nada_ops" / "kernels"


def source_paths() -> list[str]:
    return [str(KERNEL_DIR / s) for s in SOURCES]


def compile_flags(with_cuda: bool) -> tuple[list[str], list[str]]:
    """(C++ flags, nvcc flags).  No fast-math: precise exp/tanh keep parity with the reference."""
    defs = ["-DNADA_WITH_CUDA"] if with_cuda else []
    if IS_WINDOWS:
        cflags = ["/O2"] + [d.replace("-D", "/D") for d in defs]
    else:
        cflags = ["-O3"] + defs
    return cflags, (["-O3", "-lineinfo"] + defs if with_cuda else [])


def source_hash(with_cuda: bool, arch_list: list[str]) -> str:
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((KERNEL_DIR / name).read_bytes())
    h.update(repr(compile_flags(with_cuda)).encode())
    h.update(repr(sorted(arch_list)).encode())
    return h.hexdigest()[:12]


def build_key(with_cuda: bool, arch_list: list[str], nvcc_ver: str | None = None) -> str:
    """Folder name of one build: torch / CUDA / nvcc / Python / GPU archs / source hash."""
    import torch
    py = sys.implementation.cache_tag or "py"
    if with_cuda:
        archs = "sm" + "_".join(a.replace(".", "").replace("+PTX", "ptx") for a in sorted(arch_list))
        cuda = f"cu{torch.version.cuda or 'none'}-nvcc{nvcc_ver or 'unknown'}"
    else:
        archs, cuda = "cpuonly", "nocuda"
    raw = f"torch{torch.__version__}-{cuda}-{py}-{archs}-{source_hash(with_cuda, arch_list)}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", raw)


# ----------------------------------------------------------------------- lock

@contextlib.contextmanager
def file_lock(path: Path, timeout: float | None = None):
    """Exclusive inter-process lock on ``path`` (released by the OS if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    start = time.monotonic()
    try:
        if IS_WINDOWS:  # pragma: no cover - not testable here
            import msvcrt
            while True:
                try:
                    fh.seek(0)
                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if timeout is not None and time.monotonic() - start > timeout:
                        raise TimeoutError(f"timed out waiting for the build lock {path}")
                    time.sleep(0.5)
        else:
            import fcntl
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if timeout is not None and time.monotonic() - start > timeout:
                        raise TimeoutError(f"timed out waiting for the build lock {path}")
                    time.sleep(0.2)
        yield
    finally:
        try:
            if IS_WINDOWS:  # pragma: no cover
                import msvcrt
                fh.seek(0)
                with contextlib.suppress(OSError):
                    msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        finally:
            fh.close()


@contextlib.contextmanager
def _build_environment(cuda_home: str | None, arch_list: list[str]):
    """TORCH_CUDA_ARCH_LIST and the CUDA toolkit that cpp_extension uses, for one build."""
    from torch.utils import cpp_extension
    old_env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    old_home = cpp_extension.CUDA_HOME
    try:
        if arch_list:
            os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(arch_list)
        if cuda_home:
            # cpp_extension resolves CUDA_HOME once, at its import; a wrapper script named
            # nvcc on PATH (e.g. /usr/local/bin/nvcc) makes it pick a folder without headers.
            cpp_extension.CUDA_HOME = cuda_home
        yield
    finally:
        if old_env is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old_env
        cpp_extension.CUDA_HOME = old_home


def _short_error(exc: BaseException, lines: int = 25) -> str:
    text = str(exc).strip()
    parts = text.splitlines()
    # Keep the compiler's own error lines when the output is long.
    errs = [l for l in parts if re.search(r"\berror\b|fatal|not found|No such file", l, re.I)]
    if len(parts) > lines:
        keep = errs[:lines] if errs else parts[-lines:]
        text = "\n".join([parts[0]] + ["..."] + keep)
    return text


# ---------------------------------------------------------------------- build

def build(arch_list: list[str] | None = None, with_cuda: bool = True, build_dir: str | os.PathLike | None = None,
          load: bool = True, verbose: bool = False):
    """Compile the extension (and import it when ``load``).

    ``arch_list``: TORCH_CUDA_ARCH_LIST entries such as ``['9.0']`` (default: the visible GPUs,
    or $TORCH_CUDA_ARCH_LIST).  ``with_cuda=False`` builds the CPU-only test variant (only a
    C++ compiler needed).  Returns the imported module, or the path of the built library when
    ``load`` is False.  Raises :class:`BuildError` with the reason on failure.
    """
    problems = toolchain_problems(with_cuda)
    if problems:
        raise BuildError("; ".join(problems))
    cuda_home = nvcc_ver = None
    arch_list = list(arch_list or [])
    if with_cuda:
        cuda_home, _ = find_cuda_home()
        nvcc_ver = nvcc_version(cuda_home)
        if not arch_list:
            env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
            if env and env != "native":
                arch_list = [a for a in re.split(r"[;\s,]+", env) if a]
            else:
                import torch
                if not torch.cuda.is_available():
                    raise BuildError("no GPU is visible and no architecture was given (pass arch_list, "
                                     "e.g. ['9.0'], or set TORCH_CUDA_ARCH_LIST)")
                arch_list = device_arch_list(cuda_home)
    key = build_key(with_cuda, arch_list, nvcc_ver)
    out_dir = Path(build_dir) if build_dir is not None else cache_root() / key
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{EXT_PREFIX}_{key.rsplit('-', 1)[-1]}" + ("" if with_cuda else "_cpu")
    from torch.utils import cpp_extension
    cflags, cuda_flags = compile_flags(with_cuda)
    t0 = time.monotonic()
    if not any(out_dir.glob(f"{name}.*")):
        logger.warning("nada_ops: compiling the %s kernels for %s into %s (once; about 2 minutes)",
                       "CUDA" if with_cuda else "CPU test", ",".join(arch_list) or "cpu", out_dir)
    with file_lock(out_dir / "nada_build.lock"), _build_environment(cuda_home, arch_list):
        sources = source_paths() if with_cuda else [str(KERNEL_DIR / "ext.cpp")]
        kwargs = dict(name=name, sources=sources, extra_cflags=cflags, extra_cuda_cflags=cuda_flags or None,
                      extra_include_paths=[str(KERNEL_DIR)], build_directory=str(out_dir), verbose=verbose,
                      with_cuda=with_cuda)
        try:
            if load:
                mod = cpp_extension.load(**kwargs)
            else:
                mod = None
                _compile_only(cpp_extension, **kwargs)
        except Exception as exc:
            raise BuildError(f"building the extension in {out_dir} failed: {_short_error(exc)}") from exc
    logger.info("nada_ops kernels ready in %.1f s (%s)", time.monotonic() - t0, out_dir)
    if not load:
        return str(_find_library(out_dir, name))
    return mod


def _find_library(out_dir: Path, name: str) -> Path:
    for suffix in (".so", ".pyd", ".dll", ".dylib"):
        p = out_dir / f"{name}{suffix}"
        if p.exists():
            return p
    raise BuildError(f"no library named {name} was produced in {out_dir}")


def _compile_only(cpp_extension, *, name, build_directory, **kwargs):
    """Build the library without needing to import it (machines without a CUDA driver): the
    public ``cpp_extension.load`` builds, then imports; an import failure after a successful
    build is fine here."""
    try:
        cpp_extension.load(name=name, build_directory=build_directory, **kwargs)
    except (ImportError, OSError):
        if not any(Path(build_directory).glob(f"{name}.*")):
            raise


# ------------------------------------------------------------- process state

_state_lock = threading.Lock()
_state: dict = {"tried": False, "ops": None, "error": None}


def _reset_for_tests() -> None:
    with _state_lock:
        _state.update(tried=False, ops=None, error=None)


def _report_failure(reason: str) -> None:
    msg = ("nada_ops: the compiled CUDA ops (bias_act, upfirdn2d, filtered_lrelu) are unavailable, using the "
           f"PyTorch reference instead. Reason: {reason}")
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


def get_extension(op_name: str):
    """Return ``(ops, None)`` when the compiled op is usable, else ``(None, reason)``.

    ``ops`` is a :class:`nada_ops.kernels.autograd.CompiledOps` (``bias_act_autograd``,
    ``upfirdn2d_autograd``).  The first call builds or loads the extension; a failure is
    reported once and remembered for the process.
    """
    if op_name not in OPS:
        return None, f"unknown compiled op {op_name!r} (known: {', '.join(OPS)})"
    with _state_lock:
        if not _state["tried"]:
            _state["tried"] = True
            ops, err = _load()
            _state.update(ops=ops, error=err)
            if err:
                _report_failure(err)
        return _state["ops"], _state["error"]


def _load():
    import torch
    if not torch.cuda.is_available():
        return None, "CUDA is not available in this PyTorch build or no GPU is visible"
    if torch.version.cuda is None:
        return None, f"this PyTorch ({torch.__version__}) is not a CUDA build"
    logger.info("nada_ops: loading the compiled CUDA ops (compiled on first use; this can take a few minutes)")
    try:
        mod = build(verbose=os.environ.get("NADA_OPS_VERBOSE_BUILD", "") not in ("", "0"))
    except BuildError as exc:
        return None, str(exc)
    except Exception as exc:  # anything unexpected must not break generation
        return None, f"unexpected error while building the extension: {type(exc).__name__}: {_short_error(exc)}"
    from .autograd import CompiledOps
    return CompiledOps(mod, description=getattr(mod, "__file__", "")), None
