"""Execution backends: one interface, ``backend.run(units, ...) -> BatchReport``.

- :class:`InProcessBackend` (the default): units one after another in this process, on one
  device, models cached across units.  Needs nothing beyond the pack.
- :class:`~nada_ops.batch.ray_backend.RayBackend` (``--ray auto|ADDRESS``): one actor per GPU
  (or per CPU slot), each caching its models; see that module.

Both report progress the same way: ``on_status(BatchStatus)`` whenever a unit starts,
finishes or fails (done / running / failed, ETA), and ``on_result(UnitResult)`` per unit.  A
unit that fails is reported and the others go on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from .work import ModelCache, UnitResult, run_unit


@dataclass
class BatchStatus:
    total: int
    done: int = 0          # finished, written or already up to date
    running: int = 0
    failed: int = 0
    retried: int = 0       # attempts repeated after a worker died
    elapsed: float = 0.0
    eta: float | None = None   # seconds, None until a unit has finished

    @property
    def finished(self) -> bool:
        return self.done + self.failed >= self.total


@dataclass
class BatchReport:
    results: list = field(default_factory=list)     # UnitResult, in the units' order
    seconds: float = 0.0
    backend: str = "in-process"
    workers: int = 1

    @property
    def failed(self) -> list:
        return [r for r in self.results if r.error is not None]

    @property
    def written(self) -> int:
        return sum(len(r.written) for r in self.results)

    @property
    def skipped(self) -> int:
        return sum(len(r.skipped) for r in self.results)


class _Clock:
    """Counts for :class:`BatchStatus` and an ETA from the units finished so far."""

    def __init__(self, total: int, parallel: int, on_status):
        self.status = BatchStatus(total)
        self.t0 = time.time()
        self.parallel = max(int(parallel), 1)
        self.work_s = 0.0
        self.worked = 0
        self.on_status = on_status

    def emit(self):
        s = self.status
        s.elapsed = time.time() - self.t0
        if self.worked:
            remaining = s.total - s.done - s.failed
            s.eta = self.work_s / self.worked * remaining / min(self.parallel, max(remaining, 1))
        if self.on_status is not None:
            self.on_status(replace(s))      # a snapshot: the counts go on changing

    def finished(self, r: UnitResult):
        s = self.status
        if r.error is None:
            s.done += 1
        else:
            s.failed += 1
        if r.written:                  # skipped units take no time: they would spoil the estimate
            self.work_s += r.seconds
            self.worked += 1


class InProcessBackend:
    """Units one after another in this process (``device``: a torch device)."""

    name = "in-process"

    def __init__(self, device="cpu", cache: ModelCache | None = None):
        self.device = device
        self.cache = cache if cache is not None else ModelCache()

    def run(self, units, on_status=None, on_result=None, log=None, progress_factory=None,
            overwrite: bool = False) -> BatchReport:
        report = BatchReport(backend=self.name, workers=1)
        clock = _Clock(len(units), 1, on_status)
        t0 = time.time()
        for i, u in enumerate(units):
            clock.status.running = 1
            clock.emit()
            label = f"[{i + 1}/{len(units)}] {u.name or u.kind}"
            prog = progress_factory(label) if progress_factory else None
            r = run_unit(u, self.device, self.cache, prog, log, overwrite)
            if r.error is None and r.skipped and not r.written and log is not None:
                log(f"{label}: all {len(r.skipped)} output(s) exist, skipped")
            clock.status.running = 0
            clock.finished(r)
            report.results.append(r)
            if on_result is not None:
                on_result(r)
            clock.emit()
        report.seconds = time.time() - t0
        return report


def make_backend(ray: str | None = None, device="cpu", **ray_options):
    """The in-process backend, or with ``ray`` ('auto', 'local' or a cluster address) the Ray one."""
    if not ray:
        return InProcessBackend(device)
    from .ray_backend import RayBackend
    return RayBackend(ray, device=device, **ray_options)
