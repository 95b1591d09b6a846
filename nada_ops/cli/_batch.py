"""What the batch commands (``render-transition``, ``sweep``) share: the backend options
(``--ray ...``), one progress line for the whole batch, and the summary of failed units.
(A helper module, not a command.)"""
from __future__ import annotations

import sys
import time

from ..limits import arg
from .common import ProgressPrinter, _end_open_line, _state, format_duration, say


def add_backend_options(p) -> None:
    g = p.add_argument_group("batch backend (default: this process; Ray is optional, see the README)")
    g.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run the units on Ray: 'auto' (the cluster `ray start` began on this machine, or "
                        "RAY_ADDRESS, else a local runtime), 'local' (a new local runtime) or a cluster address "
                        "(HOST:6379, ray://HOST:10001). Needs pip install 'ray[default]'")
    g.add_argument("--gpus-per-unit", type=arg("gpus_per_unit"), default=1.0,
                   help="Ray: GPUs per worker; 0.5 puts two workers on each GPU (for small units)")
    g.add_argument("--cpus-per-unit", type=arg("cpus_per_unit"), default=1.0,
                   help="Ray: CPUs per worker (its torch threads)")
    g.add_argument("--workers", type=arg("workers"), default=None,
                   help="Ray: at most this many workers (default: as many as the cluster's GPUs, or CPUs, allow)")
    g.add_argument("--retries", type=arg("retries"), default=2,
                   help="Ray: tries again when a worker dies running a unit")


class StatusLine:
    """'batch [#####-----] 3/10 done, 2 running, 1 failed | 45 s, eta 1 min 10 s' on stderr."""

    def __init__(self, label: str = "batch", stream=None, every_s: float = 0.5):
        self.label, self.stream, self.every = label, stream or sys.stderr, every_s
        self.last = 0.0
        self.closed = False

    def __call__(self, s) -> None:
        now = time.time()
        final = s.finished
        if self.closed or (not final and now - self.last < self.every and s.running):
            return
        self.closed = final
        self.last = now
        frac = (s.done + s.failed) / max(s.total, 1)
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        msg = f"\r{self.label} [{bar}] {s.done}/{s.total} done, {s.running} running, {s.failed} failed"
        if s.retried:
            msg += f", {s.retried} retried"
        msg += f" | {format_duration(s.elapsed)}"
        if s.eta is not None and not final:
            msg += f", eta {format_duration(s.eta)}"
        if _state["open"] is not None and _state["open"] is not self.stream:
            _end_open_line()
        self.stream.write(msg + "   ")
        _state["open"] = self.stream
        if final:
            self.stream.write("\n")
            _state["open"] = None
        self.stream.flush()


def run_units(units, a, device, overwrite: bool = False):
    """Run ``units`` on the backend the options chose; returns the BatchReport."""
    from ..batch import make_backend
    if a.ray:
        backend = make_backend(a.ray, device=device, gpus_per_unit=a.gpus_per_unit, cpus_per_unit=a.cpus_per_unit,
                               workers=a.workers, retries=a.retries)
        def worker_messages(r):         # what each unit said in its worker (why outputs were made again, ...)
            for m in r.messages:
                say(m)
        return backend.run(units, on_status=StatusLine(), on_result=worker_messages, log=say, overwrite=overwrite)
    backend = make_backend(None, device=device)
    return backend.run(units, log=say, progress_factory=ProgressPrinter, overwrite=overwrite)


def report_failures(report, single: bool = False) -> int:
    """Say which units failed and why; the exit status (0 or 1)."""
    failed = report.failed
    for r in failed:
        where = "" if single else f"{r.name}: "
        say(f"error: {where}{r.error}")
        if r.details:
            say(r.details.rstrip())
    if failed and not single:
        say(f"{len(failed)} of {len(report.results)} unit(s) failed; the others finished. Run the same command "
            "again to retry them (finished outputs are kept)")
    return 1 if failed else 0
