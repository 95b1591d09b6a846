"""Work bounded by the request: lazy frame plans, validated job files and command-line values."""
import json
import os
import time
import tracemalloc

import pytest

from nada_ops import limits
from nada_ops.cli import main
from nada_ops.latents import parse_seeds
from nada_ops.render_jobs import job_from_dict, load_job_file
from nada_ops.video import _check_collect_size, plan_frames


def test_frame_plans_are_computed_per_frame():
    tracemalloc.start()
    try:
        t = time.perf_counter()
        p = plan_frames(10 ** 9, 3, "ease_in_out", loop=True)
        mid, last = p[5 * 10 ** 8], p[-1]
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.1 and peak < 100_000          # the list version built 10^9 plans up front
    assert len(p) == 10 ** 9 and mid.position == 2.0 and mid.latent_u == 1.0 and last.index == 10 ** 9 - 1
    small = plan_frames(7, 3, "smoothstep")
    assert list(small) == [small[i] for i in range(7)] == small[:]
    with pytest.raises(IndexError):
        small[7]
    with pytest.raises(ValueError, match="frames must be a whole number"):
        plan_frames(2.5, 2)


def test_collected_frames_must_fit_in_memory():
    with pytest.raises(ValueError, match=r"returning all 1000000 frames of 1024x1024 needs"):
        _check_collect_size(10 ** 6, 1024, 1024)
    _check_collect_size(10, 32, 32)


BASE = {"generators": ["a.pkl", "b.pkl"], "seeds": "0-3"}


@pytest.mark.parametrize("field,value,message", [
    ("frames", 10 ** 9, r"'frames' must be in 1..100000"),
    ("frames", [1], r"'frames' must be an integer .* got list \[1\]"),
    ("frames", "120", r"'frames' must be an integer .* got str"),
    ("frames", 2.5, r"'frames' must be a whole number"),
    ("frames", True, r"'frames' must be an integer .* got bool"),
    ("fps", 0, r"'fps' must be in 0.01..240"),
    ("fps", float("nan"), r"'fps' must be a finite number"),
    ("cols", -3, r"'cols' must be in 1..256"),
    ("batch", 10 ** 12, r"'batch' must be in 1..1024"),
    ("max_writers", 0, r"'max_writers' must be in 1..256"),
    ("quality", 80, r"'quality' must be in 0..51"),           # MP4 CRF
    ("noise_seed", -1, r"'noise_seed' must be in 0..4294967295"),
    ("psi", {"a": 1}, r"'psi' must be a number"),
    ("loop", "yes", r"'loop' must be true or false"),
    ("noise_mode", "loud", r"'noise_mode' must be one of"),
    ("format", 3, r"'format' must be one of"),
    ("seeds", "0-99999999", r"'seeds': seeds '0-99999999' name more than 10000 seeds"),
    ("seeds", [1, "2"], r"'seeds': seeds must be whole numbers"),
    ("generators", "a.pkl", r"'generators' must list at least 2 generator files .* got str"),
    ("generators", ["a.pkl", 3], r"'generators\[1\]' must be a string"),
    ("name", "../up", r"'name' '../up' must be a plain folder name"),
    ("layers", 5, r"'layers' must be a string"),
])
def test_job_file_fields_are_checked(tmp_path, field, value, message):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"jobs": [{**BASE, "name": "j", field: value}]}))
    t = time.perf_counter()
    with pytest.raises(ValueError, match=message) as e:
        load_job_file(path)
    assert time.perf_counter() - t < 0.5
    assert str(e.value).startswith(f"{path}: job 0 (")


def test_job_file_itself_is_bounded(tmp_path):
    def refused(content, message, name="j.json"):
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ValueError, match=message) as e:
            load_job_file(p)
        assert str(p) in str(e.value)

    refused(b" " * (limits.MAX_JOB_FILE_BYTES + 1), "larger than 4 MiB")
    refused(b"[" * 100_000 + b"]" * 100_000, "cannot read the JSON|not valid JSON")
    refused(b'{"jobs": [{"frames": ' + b"9" * 5000 + b"}]}", "cannot read the JSON|not valid JSON")
    refused(b"\xff\xfe{}", "not UTF-8")
    refused(json.dumps({"defaults": [1], "jobs": [BASE]}).encode(), "'defaults' must be a JSON object")
    refused(json.dumps([BASE] * (limits.MAX_JOBS + 1)).encode(), "1001 jobs, at most 1000")
    with pytest.raises(ValueError, match="does not exist"):
        load_job_file(tmp_path / "missing.json")
    if hasattr(os, "mkfifo"):                                    # would block forever on read
        os.mkfifo(tmp_path / "fifo.json")
        with pytest.raises(ValueError, match="not a regular file"):
            load_job_file(tmp_path / "fifo.json")
    job = job_from_dict({**BASE, "frames": 24.0, "seeds": [3, 1]}, "/base")
    assert job.frames == 24 and isinstance(job.frames, int) and job.generators == ["/base/a.pkl", "/base/b.pkl"]


def test_parse_seeds_is_bounded():
    t = time.perf_counter()
    for spec, message in [("0-4294967295", "more than 10000 seeds"), ("1," * 20_000, "more than 10000 seeds"),
                          ("4294967296", "out of range"), ("9" * 5000, "out of range"), ([True], "whole numbers"),
                          ([2 ** 40], "out of range"), (list(range(10_001)), "at most 10000")]:
        with pytest.raises(ValueError, match=message):
            parse_seeds(spec)
    assert time.perf_counter() - t < 0.5
    assert parse_seeds("0-2,7") == [0, 1, 2, 7] and parse_seeds(5) == [5]


@pytest.mark.parametrize("args,message", [
    (["--frames", "1000000000"], "argument --frames: '1000000000' is outside 1..100000"),
    (["--fps", "0"], "argument --fps: '0' is outside 0.01..240"),
    (["--cols", "-3"], "argument --cols: '-3' is outside 1..256"),
    (["--batch", "lots"], "argument --batch: expected an integer in 1..1024, got 'lots'"),
    (["--quality", "80"], "'quality' must be in 0..51"),
])
def test_cli_values_are_checked_before_any_work(tmp_path, capsys, args, message):
    base = ["render-transition", "--generators", "a.pkl", "b.pkl", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main(base + args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_other_commands_share_the_ranges(capsys):
    from nada_ops.cli.adapt import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--generator", "g", "--out", "o", "--iterations", "0"])
    assert "argument --iterations: '0' is outside 1..1000000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "--generator", "g", "--out", "o", "--psi", "inf"])
    assert "argument --psi: 'inf' is outside -10..10" in capsys.readouterr().err


def test_sample_separate_renders_one_batch_at_a_time(tmp_path, tiny_G, monkeypatch):
    import numpy as np
    from PIL import Image

    from nada_ops.stylegan import sampling
    from nada_ops.stylegan.io import save_generator
    save_generator(tiny_G, tmp_path / "g.safetensors")
    sizes = []
    orig = sampling.synthesize
    monkeypatch.setattr(sampling, "synthesize",
                        lambda G, ws, *a, **k: sizes.append(ws.shape[0]) or orig(G, ws, *a, **k))
    base = ["sample", "--generator", str(tmp_path / "g.safetensors"), "--psi", "0.5"]
    assert main(base + ["--seeds", "0-4", "--batch", "2", "--separate", "--out", str(tmp_path / "s")]) == 0
    assert sizes == [2, 2, 1] and len(os.listdir(tmp_path / "s")) == 5
    assert main(base + ["--seeds", "4", "--out", str(tmp_path / "one.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / "seed0004.png")),
                          np.asarray(Image.open(tmp_path / "one.png")))
