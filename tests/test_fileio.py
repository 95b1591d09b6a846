"""Saves leave nothing a loader would list: not after success, an error, or kill -9."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT
from nada_ops import fileio
from nada_ops.fileio import atomic_write, clean_stale_temporaries, is_temporary_name

MODEL_EXTS = (".pkl", ".pt", ".pth", ".safetensors", ".npy", ".mp4", ".gif", ".webp", ".png")


def listed(folder):
    """What an extension-based loader (ComfyUI's model lists: recursive walk) would show."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, f), folder) for f in files if f.endswith(MODEL_EXTS)]
    return sorted(out)


_KILLED_WRITER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from nada_ops.fileio import atomic_write
def write(tmp):
    with open(tmp, "wb") as fh:
        fh.write(b"x" * 1000)
    # like safetensors' save_file: its own temporary next to the path it was given
    with open(os.path.join(os.path.dirname(tmp), ".tmpAbC123"), "wb") as fh:
        fh.write(b"y" * 1000)
    print("writing", flush=True)
    time.sleep(60)
atomic_write(os.path.join(sys.argv[2], "model.safetensors"), write)
"""


@pytest.mark.skipif(os.name != "posix", reason="kill -9")
def test_killed_writer_leaves_nothing_listed_and_is_cleaned(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "real.safetensors").write_bytes(b"ok")
    (folder / ".tmp-abcd1234.safetensors").write_bytes(b"")       # debris of an older version
    (folder / ".tmp-nada-not-ours").mkdir()                        # a name we did not make
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(ROOT), str(folder)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"writing"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    debris = [d for d in os.listdir(folder) if d.startswith(f"{fileio.TEMP_PREFIX}") and d != ".tmp-nada-not-ours"]
    assert len(debris) == 1 and str(p.pid) in debris[0]
    assert sorted(os.listdir(folder / debris[0])) == [".tmpAbC123", "partial"]
    # nothing of it has a model extension, and the pack's own lists hide the old debris too
    assert listed(folder) == [".tmp-abcd1234.safetensors", "real.safetensors"]
    assert [f for f in listed(folder) if not is_temporary_name(f)] == ["real.safetensors"]

    # a fresh folder is kept (its writer might just have died a moment ago) ...
    atomic_write(folder / "other.pt", lambda tmp: torch.save({}, tmp))
    assert debris[0] in os.listdir(folder)
    # ... an old one is removed by the next save into the folder; what is not ours stays
    old = time.time() - 2 * fileio.STALE_AFTER_S
    for f in os.listdir(folder / debris[0]):
        os.utime(folder / debris[0] / f, (old, old))
    os.utime(folder / debris[0], (old, old))
    atomic_write(folder / "other.pt", lambda tmp: torch.save({}, tmp))
    assert sorted(os.listdir(folder)) == [".tmp-abcd1234.safetensors", ".tmp-nada-not-ours", "other.pt",
                                          "real.safetensors"]


def test_cleaning_spares_live_writers_and_foreign_hosts(tmp_path, monkeypatch):
    now = time.time() + 10 * fileio.STALE_AFTER_S
    mine = os.path.dirname(fileio.temp_path_beside(tmp_path / "a.pt"))        # this process: alive
    other = tmp_path / f"{fileio.TEMP_PREFIX}00000000-1-zz"                   # another host (tag differs)
    other.mkdir()
    (other / "partial").write_bytes(b"")
    assert clean_stale_temporaries(tmp_path, now=now) == []
    assert clean_stale_temporaries(tmp_path, now=now + fileio.FOREIGN_STALE_AFTER_S) == [str(other)]
    assert os.path.isdir(mine)
    fileio.discard_temp(os.path.join(mine, fileio.PARTIAL_NAME))
    assert os.listdir(tmp_path) == []


def test_is_temporary_name():
    for n in [".tmp-nada-0a1b2c3d-42-x/partial", ".tmp-nada-0a1b2c3d-42-x", ".tmp-x1y2z3.safetensors",
              "sub/.tmpAbC123", "sub\\.tmp-q.pt"]:
        assert is_temporary_name(n), n
    for n in ["model.safetensors", "sub/model.tmp.pt", "my.tmp-model.pkl", "tmp/model.pt"]:
        assert not is_temporary_name(n), n


def test_every_save_leaves_only_its_file(tmp_path, tiny_G):
    from nada_ops.latent_tools import save_latents
    from nada_ops.latents import WLatents
    from nada_ops.stylegan.io import save_generator
    from nada_ops.stylegan.sampling import save_image_grid
    from nada_ops.video import open_writer
    save_generator(tiny_G, tmp_path / "g.safetensors")
    save_latents(WLatents(ws=torch.zeros(1, 8, 32)), tmp_path / "l.pt")
    save_image_grid(torch.zeros(1, 3, 8, 8), tmp_path / "i.png")
    for ext in ("mp4", "gif", "webp"):
        with open_writer(tmp_path / f"v.{ext}", fps=10) as w:
            w.write(np.zeros((8, 8, 3), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors", "i.png", "l.pt", "v.gif", "v.mp4", "v.webp"]
    # a failing writer leaves nothing, and nothing is left under the final name
    def half_then_fail(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "bad.safetensors", half_then_fail)
    with pytest.raises(ValueError, match="fps"):
        open_writer(tmp_path / "z.mp4", fps=0)
    with pytest.raises(ValueError, match="quality"):
        open_writer(tmp_path / "z.mp4", quality=80)            # CRF is 0..51
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors", "i.png", "l.pt", "v.gif", "v.mp4", "v.webp"]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux accepts any bytes in a file name")
def test_saves_into_a_non_utf8_folder(tmp_path, tiny_G):
    from nada_ops.latent_tools import save_latents
    from nada_ops.latents import WLatents
    from nada_ops.stylegan.io import save_generator
    from nada_ops.video import open_writer, probe_video
    folder = os.path.join(str(tmp_path), os.fsdecode(b"caf\xe9-\xff"))
    save_generator(tiny_G, os.path.join(folder, "g.safetensors"))
    save_latents(WLatents(ws=torch.zeros(1, 8, 32)), os.path.join(folder, "l.pt"))
    for ext in ("mp4", "gif", "webp"):
        with open_writer(os.path.join(folder, f"v.{ext}"), fps=10) as w:
            for v in (0, 200):
                w.write(np.full((8, 8, 3), v, np.uint8))
        assert probe_video(os.path.join(folder, f"v.{ext}"))["frames"] == 2
    assert sorted(os.listdir(folder)) == ["g.safetensors", "l.pt", "v.gif", "v.mp4", "v.webp"]
    assert all(os.path.getsize(os.path.join(folder, f)) > 0 for f in os.listdir(folder))


def test_model_lists_hide_debris(comfy):
    (comfy.stylegan_dir / "a.safetensors").write_bytes(b"x")
    (comfy.stylegan_dir / ".tmp-k2j3h4g5.safetensors").write_bytes(b"")
    (comfy.stylegan_dir / ".tmp-nada-0a1b2c3d-7-q").mkdir()
    (comfy.stylegan_dir / ".tmp-nada-0a1b2c3d-7-q" / "x.pt").write_bytes(b"")
    C = sys.modules[f"{comfy.pack.__name__}.nodes._comfy"]
    assert C.list_files("stylegan") == ["a.safetensors"]
