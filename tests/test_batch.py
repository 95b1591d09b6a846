"""Batch jobs in this process: the job model (kinds, defaults, YAML, validation), resume and redo by
settings fingerprint, failing units that do not stop the others, the sweep command, and the
message when --ray is asked for without Ray."""
import json
import os
import sys

import pytest

from batch_helpers import assert_same_outputs, files_of, job_file, write_inputs
from nada_ops.batch import InProcessBackend, load_batch_file
from nada_ops.batch.work import ModelCache, prepare_units
from nada_ops.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("batch_inputs"))


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The job file run once in this process (shared by the tests that compare with it)."""
    out = tmp_path_factory.mktemp("batch_ref") / "out"
    units = load_batch_file(job_file(inputs), str(out))
    prepare_units(units)
    cache = ModelCache()
    report = InProcessBackend("cpu", cache).run(units)
    assert not report.failed, [r.error for r in report.failed]
    assert cache.loads == {"g": 3, "c": 1}   # a, b, the adapted one (its transition), CLIP: each loaded once
    return out


def test_job_file_kinds_and_defaults(inputs, tmp_path):
    units = load_batch_file(job_file(inputs), str(tmp_path / "o"))
    assert [(u.kind, u.name) for u in units] == [("transition", "ab"), ("transition", "ab_mp4"),
                                                 ("sample-grid", "grid_b"), ("adapt", "sketch")]
    assert units[1].spec.format == "mp4" and units[0].spec.format == "gif" and units[0].spec.frames == 3
    ad = units[3].spec
    assert ad.iterations == 1 and ad.generator == str(inputs / "a.safetensors")
    assert ad.clip_weights == {"tiny-vit": str(inputs / "tiny.safetensors")}
    assert ad.transition["format"] == "webp" and ad.transition["seeds"] == "0"
    assert units[3].folder == str(tmp_path / "o" / "sketch")
    assert units[3].folders() == [str(tmp_path / "o" / "sketch"), str(tmp_path / "o" / "sketch" / "transition")]
    # the same in YAML
    yaml = pytest.importorskip("yaml")
    data = json.loads(job_file(inputs).read_text())
    (inputs / "jobs.yaml").write_text(yaml.safe_dump(data))
    assert [u.name for u in load_batch_file(inputs / "jobs.yaml", str(tmp_path / "o"))] == [u.name for u in units]


@pytest.mark.parametrize("content, message", [
    ({"jobs": [{"kind": "render", "generators": ["a", "b"], "seeds": "0"}]}, "'kind' must be one of"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "x", "frames": 3}]}, "unknown key(s) ['frames']"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl"}]}, "exactly one of 'target'"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "photo"}]}, "are the same text"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "x", "iterations": 0}]}, "'iterations' must be in"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "x", "clip": ["ViT-B-32:x"]}]}, "NAME:WEIGHT"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "x", "transition": {"generators": []}}]},
     "must not set ['generators']"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "x", "transition": {"frames": -1}}]},
     "transition: 'frames'"),
    ({"jobs": [{"kind": "adapt", "generator": "a.pkl", "target": "x", "precision": "turbo"}]}, "'precision' must be"),
    ({"jobs": [{"kind": "sample-grid", "generator": "a.pkl", "seeds": "0-99999999"}]}, "'seeds'"),
    ({"jobs": [{"kind": "sample-grid", "generator": "a.pkl", "name": "../x"}]}, "plain folder name"),
    ({"defaults": {"adapt": []}, "jobs": [{"generators": ["a", "b"], "seeds": "0"}]}, "'defaults.adapt'"),
    ({"jobs": [{"kind": "sample-grid", "generator": "a.pkl", "name": "x"},
               {"generators": ["a", "b"], "seeds": "0", "name": "x"}]}, "two jobs are named 'x'"),
])
def test_job_file_errors_name_the_job_and_field(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(content))
    with pytest.raises(ValueError) as e:
        load_batch_file(p, str(tmp_path / "o"))
    assert message in str(e.value) and str(p) in str(e.value)


def test_yaml_aliases_refused(tmp_path):
    pytest.importorskip("yaml")
    p = tmp_path / "jobs.yml"
    p.write_text("defaults: &d {frames: 3}\njobs:\n  - {generators: [a, b], seeds: '0'}\n  - *d\n")
    with pytest.raises(ValueError, match="YAML aliases"):
        load_batch_file(p, str(tmp_path / "o"))


def test_rerun_skips_done_and_redoes_changed(inputs, reference, tmp_path):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    units = load_batch_file(job_file(inputs), str(out))
    prepare_units(units)
    again = InProcessBackend("cpu").run(units)
    assert again.written == 0 and again.skipped == 7
    # a changed sample grid is made again; the adaptation's grid seeds only redo its PNG
    changed = job_file(inputs, "changed.json", grid={"psi": 0.5})
    data = json.loads(changed.read_text())
    data["jobs"][3]["sample_seeds"] = "0-2"
    changed.write_text(json.dumps(data))
    units = load_batch_file(changed, str(out))
    prepare_units(units)
    msgs = []
    r = InProcessBackend("cpu").run(units, log=msgs.append)
    written = {x.name: x.written for x in r.results}
    assert written == {"ab": [], "ab_mp4": [], "grid_b": ["grid.png"], "sketch": ["sketch.png"]}
    assert any("grid_b: making grid.png again: the settings changed" in m for m in msgs)
    assert (out / "grid_b" / "grid.png").read_bytes() != (reference / "grid_b" / "grid.png").read_bytes()


def test_failing_unit_does_not_stop_the_others(inputs, tmp_path, capsys):
    data = {"defaults": {"frames": 2, "seeds": "0", "format": "gif"},
            "jobs": [{"kind": "sample-grid", "name": "missing", "generator": "nothere.safetensors"},
                     {"name": "ab", "generators": ["a.safetensors", "b.safetensors"]}]}
    p = inputs / "failing.json"
    p.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert main(["render-transition", "--job", str(p), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "error: missing: " in err and "nothere.safetensors" in err and "1 of 2 unit(s) failed" in err
    assert files_of(out) == ["ab/job.json", "ab/seed0000.gif"]


def test_in_process_matches_reference_through_the_command_line(inputs, reference, tmp_path):
    out = tmp_path / "out"
    assert main(["render-transition", "--job", str(job_file(inputs)), "--out", str(out), "--device", "cpu"]) == 0
    assert_same_outputs(reference, out)


def test_sweep_prompts_and_grid(inputs, tmp_path, capsys):
    out = tmp_path / "sweep"
    base = ["sweep", "--generator", str(inputs / "a.safetensors"), "--prompt", "sketch", "--prompt", "Zombie face!",
            "--iterations", "1", "--clip", "tiny-vit:1", "--clip-weights", f"tiny-vit={inputs / 'tiny.safetensors'}",
            "--clip-config", str(inputs / "cfg" / "tiny-vit.json"), "--templates", "single", "--sample-seeds", "0",
            "--transition", "--frames", "2", "--seeds", "0", "--format", "gif", "--out", str(out), "--device", "cpu",
            "--precision", "exact"]
    args = base + ["--grid", "lr=0.002,0.004"]
    assert main(args) == 0, capsys.readouterr().err
    names = sorted(os.listdir(out))
    assert names == ["sketch_lr0.002", "sketch_lr0.004", "zombie_face_lr0.002", "zombie_face_lr0.004"]
    assert files_of(out / "sketch_lr0.004") == ["job.json", "sketch_lr0.004.png", "sketch_lr0.004.safetensors",
                                               "transition/grid.gif", "transition/job.json"]
    from nada_ops.stylegan.io import load_generator
    h = load_generator(out / "zombie_face_lr0.004" / "zombie_face_lr0.004.safetensors")
    hist = h.provenance["history"][-1]
    assert hist["direction"]["target"] == "Zombie face!" and hist["settings"]["lr"] == 0.004
    assert hist["settings"]["precision"] == "exact"
    capsys.readouterr()
    assert main(args) == 0                                             # everything done: skipped
    assert "sketch_lr0.002: 0 written, 3 up to date" in capsys.readouterr().out
    assert main(base + ["--grid", "lr=x"]) == 2
    assert "--grid lr: expected a number" in capsys.readouterr().err
    assert main(base + ["--grid", "size=1,2"]) == 2
    assert "KEY one of lr, iterations" in capsys.readouterr().err


def test_ray_missing_is_a_clear_message(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)          # as if Ray were not installed
    rc = main(["render-transition", "--generators", str(inputs / "a.safetensors"), str(inputs / "b.safetensors"),
               "--seeds", "0", "--frames", "2", "--format", "gif", "--out", str(tmp_path / "o"), "--ray", "auto"])
    assert rc == 1
    assert "pip install 'ray[default]'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "seed0000.gif")


def test_temporaries_of_a_dead_writer_are_removed_at_once(tmp_path):
    from nada_ops import fileio
    mine = fileio.temp_path_beside(tmp_path / "x.gif")
    other = tmp_path / f"{fileio.TEMP_PREFIX}{fileio.writer_tag()}0-abc"       # pid 10x larger: not this writer
    other.mkdir()
    removed = fileio.remove_temporaries_of(tmp_path, fileio.writer_tag())
    assert removed == [os.path.dirname(mine)] and other.exists()
