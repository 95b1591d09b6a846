"""Ray backend: the units of a batch spread over the GPUs (or CPUs) of a Ray cluster.

- One actor (:class:`BatchWorker`) per GPU, or per ``gpus_per_unit`` of a GPU (0.5: two actors
  share a GPU, worth it for small units that leave a GPU idle while they load or encode), or
  per ``cpus_per_unit`` CPUs on a cluster without GPUs.  Each actor loads a model once and
  keeps it for the next units (:class:`~nada_ops.batch.work.ModelCache`).
- One task per unit, handed to the next free actor.  Outputs are written by the workers
  straight into the output folder, atomically (:mod:`nada_ops.fileio`): on a cluster of
  several machines that folder (and the input files) must be on storage every machine sees
  at the same path.
- A worker that dies (killed, out of memory, machine lost) is replaced and its unit is tried
  again (``retries`` times); the temporary files it was writing are removed at once.  A unit
  that fails with an error (a bad file, settings the generator refuses) is not retried: it
  is reported at the end and the other units go on.
- The pack's code goes to the workers with the tasks (Ray's ``py_modules``), together with
  the ``NADA_*`` environment settings; its dependencies (torch, open_clip, PyAV, ...) must be
  installed on every machine.

Ray is optional: ``pip install 'ray[default]'``.  Nothing here imports it until a batch runs.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque

from .backends import BatchReport, _Clock
from .work import ModelCache, UnitResult, run_unit, up_to_date

RAY_MISSING = ("--ray needs Ray, an optional dependency of the pack: pip install 'ray[default]' "
               "(or pip install 'stylegan-nada-nodes[ray]'); without --ray the batch runs in this process")


class RayUnavailableError(ValueError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(RAY_MISSING) from None
    return ray


class BatchWorker:
    """What runs inside each Ray actor (a plain class: the backend wraps it with ``ray.remote``)."""

    def __init__(self, use_gpu: bool, threads: int):
        import torch
        if threads > 0:
            torch.set_num_threads(threads)
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"a GPU was assigned to this worker but torch {torch.__version__} sees none")
        self.device = "cuda" if use_gpu else "cpu"
        self.cache = ModelCache()

    def hello(self) -> dict:
        import socket

        from ..fileio import writer_tag
        return {"tag": writer_tag(), "where": f"{socket.gethostname()}:{os.getpid()}"}

    def run(self, unit, overwrite: bool = False) -> UnitResult:
        return run_unit(unit, self.device, self.cache, None, None, overwrite)

    def loads(self) -> dict:
        """How many generators ('g') and CLIP models ('c') this worker has loaded."""
        return dict(self.cache.loads)


def runtime_env() -> dict:
    """The Ray job environment the workers need: the pack's code (``py_modules``: the same
    version on every machine) and the ``NADA_*`` settings of this process.  Pass it to
    ``ray.init(runtime_env=...)`` when starting Ray yourself before running a batch."""
    import nada_ops
    env = {k: v for k, v in os.environ.items() if k.startswith("NADA_")}
    return {"py_modules": [os.path.dirname(os.path.abspath(nada_ops.__file__))],
            "excludes": ["__pycache__", "*.pyc"], "env_vars": env}


class RayBackend:
    """Run units on Ray.  ``address``: 'auto' (a running cluster of this machine or ``RAY_ADDRESS``,
    else a local runtime started for this batch), 'local' (always a new local runtime) or a
    cluster address ('HOST:6379', 'ray://HOST:10001').  ``device``: 'auto' (GPUs where the cluster
    has them), 'cpu' or 'cuda'."""

    name = "ray"

    def __init__(self, address: str = "auto", device="auto", gpus_per_unit: float = 1.0,
                 cpus_per_unit: float = 1.0, workers: int | None = None, retries: int = 2,
                 num_cpus: int | None = None):
        self.address = address
        self.device = str(device)
        self.gpus_per_unit = float(gpus_per_unit)
        self.cpus_per_unit = float(cpus_per_unit)
        self.workers = workers
        self.retries = int(retries)
        self.num_cpus = num_cpus           # only for a local runtime started here

    # -------------------------------------------------------------------- connection
    def _connect(self, ray, log=None) -> bool:
        """Connect (or start a local runtime); True when this call must shut it down after."""
        if ray.is_initialized():
            return False
        how = "connected to the Ray cluster"
        kw = dict(log_to_driver=False, logging_level="warning", configure_logging=True, runtime_env=runtime_env())
        local = dict(include_dashboard=False, num_cpus=self.num_cpus)
        try:
            if self.address == "local":
                ray.init(address="local", **kw, **local)
                how = "started a local Ray runtime"
            elif self.address == "auto":
                found = _recorded_cluster()
                if found is not None and not _answers(found):
                    # a cluster that was killed without `ray stop` leaves its address behind: Ray would
                    # try it for minutes
                    ray.init(address="local", **kw, **local)
                    how = (f"the Ray cluster recorded at {found} (RAY_ADDRESS or the last `ray start`) does not "
                           "answer: started a local Ray runtime")
                else:
                    try:
                        ray.init(address="auto", **kw)
                    except (ConnectionError, RuntimeError):
                        ray.init(address="local", **kw, **local)
                        how = "no Ray cluster running here: started a local Ray runtime"
            else:
                if not self.address.startswith("ray://") and not _answers(self.address):
                    raise ConnectionError(f"nothing answers at {self.address}")
                ray.init(address=self.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnavailableError(f"--ray {self.address}: cannot connect to the Ray cluster ({str(e)[:300]})") \
                from None
        if log is not None:
            res = ray.cluster_resources()
            log(f"ray: {how} ({len(ray.nodes())} machine(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs)")
        return True

    def _plan(self, ray, n_units: int) -> tuple[bool, int, dict]:
        res = ray.cluster_resources()
        gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 0))
        dev = self.device.split(":")[0]
        if dev not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device {self.device}: on Ray use auto, cpu or cuda (Ray assigns the GPUs)")
        use_gpu = gpus > 0 and dev != "cpu"
        if dev == "cuda" and gpus == 0:
            raise ValueError("--device cuda: the Ray cluster has no GPUs (leave --device out to use its CPUs)")
        if use_gpu:
            slots = math.floor(gpus / self.gpus_per_unit + 1e-9)
        else:
            slots = math.floor(cpus / self.cpus_per_unit + 1e-9)
        if self.workers:
            slots = min(slots, self.workers) if slots > 0 else 0
        if slots < 1:
            need = f"{self.gpus_per_unit:g} GPU" if use_gpu else f"{self.cpus_per_unit:g} CPUs"
            raise ValueError(f"the Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs) has no room for one worker of {need}")
        opts = dict(num_cpus=self.cpus_per_unit, num_gpus=self.gpus_per_unit if use_gpu else 0,
                    max_restarts=0, max_task_retries=0)
        return use_gpu, max(1, min(slots, n_units)), opts

    # ----------------------------------------------------------------------------- run
    def run(self, units, on_status=None, on_result=None, log=None, progress_factory=None,
            overwrite: bool = False) -> BatchReport:
        ray = import_ray()
        from ray.exceptions import RayActorError, RayError
        started = self._connect(ray, log)
        t0 = time.time()
        actors = []
        try:
            # units already made are reported without starting a worker (a re-run of a big batch)
            done = {}
            for i, u in enumerate(units):
                r = None if overwrite else up_to_date(u)
                if r is not None:
                    done[i] = r
            todo = [i for i in range(len(units)) if i not in done]
            use_gpu, n_workers, opts = self._plan(ray, max(len(todo), 1))
            if not todo:
                n_workers = 0
            Actor = ray.remote(BatchWorker)
            threads = max(1, int(self.cpus_per_unit))

            def new_worker():
                a = Actor.options(**opts).remote(use_gpu, threads)
                actors.append(a)
                return {"actor": a, "hello": a.hello.remote()}

            free = [new_worker() for _ in range(n_workers)]
            if log is not None and n_workers:
                log(f"ray: {n_workers} worker(s), each with {opts['num_gpus']:g} GPU and {opts['num_cpus']:g} CPU(s), "
                    f"for {len(units)} unit(s)")
            report = BatchReport(backend=self.name, workers=n_workers)
            results: list = [None] * len(units)
            attempts = [0] * len(units)
            pending = deque(todo)
            inflight: dict = {}
            clock = _Clock(len(units), n_workers, on_status)
            for i, r in done.items():
                results[i] = r
                clock.finished(r)
                if on_result is not None:
                    on_result(r)
            if done and log is not None:
                log(f"{len(done)} unit(s) already made (their settings have not changed): skipped")
            last_emit = 0.0
            try:
                while pending or inflight:
                    while pending and free:
                        w, i = free.pop(), pending.popleft()
                        attempts[i] += 1
                        inflight[w["actor"].run.remote(units[i], overwrite)] = (w, i)
                    clock.status.running = len(inflight)
                    now = time.time()
                    if now - last_emit > 1.0:
                        clock.emit()
                        last_emit = now
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                    for ref in ready:
                        w, i = inflight.pop(ref)
                        u = units[i]
                        try:
                            r = ray.get(ref)
                        except RayActorError as e:
                            where = self._forget(ray, w, u)
                            actors.remove(w["actor"])
                            free.append(new_worker())
                            why = _short_reason(e)
                            if attempts[i] <= self.retries:
                                pending.appendleft(i)
                                clock.status.retried += 1
                                if log is not None:
                                    log(f"{u.name}: the worker{where} died ({why}); trying again "
                                        f"(attempt {attempts[i] + 1} of {self.retries + 1})")
                                continue
                            r = UnitResult(u.name, u.kind, u.folder, error=f"the worker running it died {attempts[i]} "
                                           f"time(s); last: {why}")
                        except RayError as e:          # e.g. the unit could not be sent or its result read
                            r = UnitResult(u.name, u.kind, u.folder, error=f"{type(e).__name__}: {str(e)[:500]}")
                            free.append(w)
                        else:
                            free.append(w)
                        r.attempts = attempts[i]
                        results[i] = r
                        clock.finished(r)
                        if on_result is not None:
                            on_result(r)
                        clock.status.running = len(inflight)
                        clock.emit()
                        last_emit = time.time()
            except BaseException:
                # interrupted: stop the workers, then remove what they were writing
                for w, i in list(inflight.values()):
                    ray.kill(w["actor"], no_restart=True)
                time.sleep(0.5)
                for w, i in list(inflight.values()):
                    self._forget(ray, w, units[i])
                raise
            clock.status.running = 0
            clock.emit()
            report.results = results
            report.seconds = time.time() - t0
            return report
        finally:
            for a in actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:   # noqa: BLE001 - already gone
                    pass
            if started:
                ray.shutdown()

    def _forget(self, ray, w, unit) -> str:
        """After a worker died: remove its temporary files from the unit's folders; ' (host:pid)'."""
        from ..fileio import remove_temporaries_of
        try:
            hello = ray.get(w["hello"], timeout=10)
        except Exception:     # noqa: BLE001 - it died before it started: it wrote nothing
            return ""
        for folder in unit.folders():
            remove_temporaries_of(folder, hello["tag"])
        return f" ({hello['where']})"


def _recorded_cluster() -> str | None:
    """HOST:PORT that ``ray.init(address='auto')`` would try (RAY_ADDRESS, or the cluster the last
    ``ray start`` on this machine recorded); None when none (or Ray's lookup is not available)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
        return canonicalize_bootstrap_address("auto")
    except Exception:      # noqa: BLE001 - a private helper of Ray: without it, Ray's own lookup decides
        return None


def _answers(address: str, timeout: float = 3.0) -> bool:
    """Whether something accepts a TCP connection at HOST:PORT (the cluster's GCS)."""
    import socket
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _short_reason(e) -> str:
    text = str(e).strip().splitlines()
    first = next((t for t in text if t.strip()), type(e).__name__)
    return f"{type(e).__name__}: {first[:200]}"
