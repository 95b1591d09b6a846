"""Batch jobs on a local Ray runtime (2 CPUs): the same outputs as in this process, a worker
killed in the middle of a unit is replaced and its unit redone with nothing half-written left,
re-runs skip finished units and redo changed ones.  Skipped when Ray is not installed
(requirements-dev.txt installs it for CI)."""
import json
import os
import signal
import threading
import time

import pytest

from batch_helpers import assert_same_outputs, files_of, job_file, write_inputs
from nada_ops.batch import InProcessBackend, load_batch_file, prepare_units
from nada_ops.batch.ray_backend import RayBackend, runtime_env
from nada_ops.cli import main

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ray_runtime():
    """One local runtime for the module (started once: it takes a few seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning",
             runtime_env=runtime_env())
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("ray_inputs"))


def _in_process(units):
    prepare_units(units)
    r = InProcessBackend("cpu").run(units)
    assert not r.failed, [x.error for x in r.failed]


def test_ray_same_outputs_then_skips_and_redoes(ray_runtime, inputs, tmp_path, capsys):
    ref, out = tmp_path / "ref", tmp_path / "ray"
    _in_process(load_batch_file(job_file(inputs), str(ref)))
    units = load_batch_file(job_file(inputs), str(out))
    prepare_units(units)
    statuses = []
    report = RayBackend("auto", device="cpu").run(units, on_status=statuses.append)
    assert not report.failed, [x.error for x in report.failed]
    assert report.workers == 2 and report.backend == "ray"
    assert {r.worker for r in report.results} != {None}
    assert_same_outputs(ref, out)
    assert statuses[-1].done == 4 and statuses[-1].failed == 0 and statuses[-1].running == 0
    assert max(s.running for s in statuses) == 2                    # two units at a time on 2 CPUs
    # the command line, on the runtime already there (--ray auto): everything is up to date
    jf = job_file(inputs, "changed.json", grid={"psi": 0.5})
    (inputs / "same.json").write_text(job_file(inputs).read_text())
    capsys.readouterr()
    assert main(["render-transition", "--job", str(inputs / "same.json"), "--out", str(out), "--ray", "auto",
                 "--device", "cpu"]) == 0
    assert "0 file(s) written, 7 already there" in capsys.readouterr().out
    # one unit's settings changed: only that unit is made again
    before = {f: os.path.getmtime(out / f) for f in files_of(out)}
    assert main(["render-transition", "--job", str(jf), "--out", str(out), "--ray", "auto", "--device", "cpu"]) == 0
    assert "1 file(s) written, 6 already there" in capsys.readouterr().out
    changed = [f for f in files_of(out) if os.path.getmtime(out / f) != before.get(f)]
    assert changed == ["grid_b/grid.png", "grid_b/job.json"]


def test_killed_worker_is_replaced_and_failed_unit_reported(ray_runtime, inputs, tmp_path):
    data = {"jobs": [{"name": "long", "generators": ["a.safetensors", "b.safetensors"], "seeds": "0-1",
                      "frames": 90, "format": "gif", "batch": 2},
                     {"kind": "sample-grid", "name": "grid_a", "generator": "a.safetensors", "seeds": "0-1"}]}
    jf = inputs / "long.json"
    jf.write_text(json.dumps(data))
    ref, out = tmp_path / "ref", tmp_path / "ray"
    _in_process(load_batch_file(jf, str(ref)))
    # and a unit that fails for good (no retry): reported, the others go on
    data["jobs"].append({"kind": "sample-grid", "name": "missing", "generator": "nothere.safetensors"})
    jf.write_text(json.dumps(data))
    units = load_batch_file(jf, str(out))
    killed, logs, result = [], [], {}

    def run():
        result["report"] = RayBackend("auto", device="cpu", retries=1).run(units, log=logs.append)
    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 60
    folder = out / "long"
    while not killed and time.time() < deadline and t.is_alive():
        # a writer at work: its private temporary folder names its process
        tmps = [e for e in (os.listdir(folder) if folder.is_dir() else []) if e.startswith(".tmp-nada-")]
        for e in tmps:
            pid = int(e.split("-")[3])
            if any(f.endswith(".gif") for f in os.listdir(folder)):
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            break
        time.sleep(0.01)
    t.join(120)
    assert killed, "the unit finished before it could be interrupted"
    report = result["report"]
    assert [r.name for r in report.failed] == ["missing"] and report.failed[0].attempts == 1
    assert "nothere.safetensors: generator file not found" in report.failed[0].error
    long = report.results[0]
    assert long.error is None and long.attempts == 2, long
    assert str(killed[0]) not in long.worker                     # a new worker finished it
    assert any("long: the worker" in m and "died" in m and "trying again" in m for m in logs), logs
    assert_same_outputs(ref, out)                                # nothing half-written, no temporaries
