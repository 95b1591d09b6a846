"""The model catalogue and its downloader, against a local HTTP server on 127.0.0.1 serving small
real checkpoints (NVIDIA pickle, rosinality .pt, open_clip safetensors) written by the tests."""
from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from nada_ops.clip.tiny import TINY_NAME as TINY_CLIP_ARCH   # what tests/model_server.py registers
from nada_ops.catalogue import (ModelUnavailableError, catalogue, clip_weights_for, ensure, resolve_generator,
                                status)
from nada_ops.catalogue import download as dl
from nada_ops.fileio import is_temporary_name

pytestmark = pytest.mark.usefixtures("one_thread")
pytest_plugins = ("model_server",)      # the served / server fixtures


def test_published_catalogue_is_well_formed():
    cat = catalogue()
    names = {e.name for e in cat}
    # NVIDIA's StyleGAN2 generators in the PyTorch format, the StyleGAN-NADA models and the paper's CLIP models
    for n in ("ffhq", "afhqdog", "afhqcat", "afhqwild", "metfaces", "brecahad", "cifar10", "lsundog-256",
              "lsun-church", "lsun-car", "lsun-cat", "lsun-horse",
              "ada-ffhq", "ada-afhqdog", "nada-ffhq", "nada-sketch", "nada-pixar", "ViT-B-32", "ViT-B-16"):
        assert n in names, n
    assert cat.find("ffhq").url == ("https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/"
                                    "files/stylegan2-ffhq-1024x1024.pkl")
    assert cat.find("ada-afhqdog").url == "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl"
    assert cat.find("cifar10").conditional
    for e in cat:
        assert e.url.startswith("https://") and e.licence and e.licence_url, e.name
        assert not os.path.isabs(e.file) and ".." not in e.file
        if e.sha256:   # checksums only where a Git LFS pointer states them: the URL is pinned to that commit
            assert re.search(r"/resolve/[0-9a-f]{40}/", e.url), e.name
        if e.source["key"].startswith("nvidia"):
            assert "Source Code License-NC" in e.licence and e.sha256 is None and e.size is None
    assert cat.find("ViT-B/32") is cat.find("ViT-B-32") and cat.find("ViT-B-32").open_clip["tag"] == "openai"
    # every catalogue file lands where ComfyUI lists models: stylegan/ and open_clip/
    assert {e.folder_key for e in cat} == {"stylegan", "open_clip"}


def _no_debris(folder):
    left = [os.path.relpath(os.path.join(r, f), folder) for r, ds, fs in os.walk(folder) for f in fs + ds]
    return [p for p in left if is_temporary_name(p)]


# ---------------------------------------------------------------------------- downloads
def test_download_once_then_from_disk(server, tmp_path):
    from nada_ops.stylegan.io import load_generator
    seen = []
    path = resolve_generator("ffhq", progress=lambda d, t: seen.append((d, t)))
    assert path == str(tmp_path / "models" / "stylegan" / "stylegan2-ffhq-1024x1024.pkl")
    assert load_generator(path).cfg.img_resolution == 32
    assert seen[-1][0] == seen[-1][1] == os.path.getsize(path)
    n = len(server.requests)
    assert resolve_generator("ffhq") == path and len(server.requests) == n      # loaded from disk, no request
    assert resolve_generator("stylegan2-ffhq-1024x1024.pkl") == path          # the file name works too
    assert _no_debris(tmp_path / "models") == []
    # a catalogue file in a sub-folder (StyleGAN-NADA models)
    sketch = resolve_generator("nada-sketch")
    assert sketch.endswith(os.path.join("stylegan", "stylegan-nada", "sketch.pt"))
    assert load_generator(sketch).source_format == "rosinality-pt"


def test_connection_cut_mid_body_resumes_with_range(server, tmp_path):
    server.cut_once["stylegan2-ffhq-1024x1024.pkl"] = 5000
    path = resolve_generator("ffhq")            # size and SHA-256 known for this entry: both checked
    assert [r["range"] for r in server.requests] == [None, "bytes=5000-"]
    assert server.requests[1]["status"] == 206 and server.requests[1]["if_range"]
    assert dl.sha256_of(path) == catalogue().find("ffhq").sha256


def test_resume_across_runs_and_partial_file_is_hidden(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "CHUNK", 4096)
    entry = catalogue().find("ffhq-nosum")

    def stop_after_two_chunks(done, total):
        if done >= 8192:
            raise KeyboardInterrupt          # Ctrl-C / ComfyUI's Cancel
    with pytest.raises(KeyboardInterrupt):
        ensure(entry, progress=stop_after_two_chunks)
    folder = tmp_path / "models" / "stylegan"
    assert status(entry, folder) == ("partial", 8192)
    listed = [os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs]
    assert listed and all(is_temporary_name(p) for p in listed)   # nothing a model list would show
    assert not any(p.endswith((".pkl", ".pt", ".safetensors")) for p in listed)
    ensure(entry)                                                  # the next run continues
    assert server.requests[-1]["range"] == "bytes=8192-" and server.requests[-1]["status"] == 206
    assert status(entry, folder)[0] == "present" and _no_debris(folder) == []


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    server.cut_once["stylegan2-ffhq-1024x1024.pkl"] = 3000
    path = resolve_generator("ffhq")
    assert [(r["range"], r["status"]) for r in server.requests] == [(None, 200), ("bytes=3000-", 200)]
    assert dl.sha256_of(path) == catalogue().find("ffhq").sha256


def test_changed_file_on_the_server_is_not_spliced(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "CHUNK", 4096)
    entry = catalogue().find("ffhq-nosum")
    with pytest.raises(KeyboardInterrupt):
        ensure(entry, progress=lambda d, t: (_ for _ in ()).throw(KeyboardInterrupt()))
    server.etag_salt = "v2"                   # the server's file changed: If-Range no longer matches
    path = ensure(entry)
    assert server.requests[-1]["status"] == 200 and server.requests[-1]["range"]
    assert path.read_bytes() == (server.root / entry.file).read_bytes()


def test_404_and_refused_connection_fail_fast_naming_file_and_folder(server, tmp_path, monkeypatch):
    server.status["stylegan2-ffhq-1024x1024.pkl"] = 404
    with pytest.raises(ModelUnavailableError) as e:
        resolve_generator("ffhq")
    msg = str(e.value)
    assert "HTTP 404" in msg and "stylegan2-ffhq-1024x1024.pkl" in msg
    assert str((tmp_path / "models" / "stylegan").resolve()) in msg and "https://example.invalid/ffhq/" in msg
    assert len(server.requests) == 1                               # no retries
    with socket.socket() as s:                                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NADA_MODEL_MIRROR", f"http://127.0.0.1:{port}")
    t0 = time.time()
    with pytest.raises(ModelUnavailableError, match="connection refused"):
        resolve_generator("ffhq")
    assert time.time() - t0 < 5
    assert not (tmp_path / "models" / "stylegan" / "stylegan2-ffhq-1024x1024.pkl").exists()


def test_unresolvable_host_fails_within_the_timeout(server, monkeypatch):
    monkeypatch.setenv("NADA_MODEL_MIRROR", "http://nada-no-such-host.invalid")
    monkeypatch.setenv("NADA_DOWNLOAD_TIMEOUT", "2")
    t0 = time.time()
    with pytest.raises(ModelUnavailableError, match="resolve the host"):
        resolve_generator("ffhq")
    assert time.time() - t0 < 6


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "NADA_OFFLINE"])
def test_offline_setting_never_touches_the_network(server, tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ModelUnavailableError) as e:
        resolve_generator("ffhq")
    assert f"{var}=1" in str(e.value) and "stylegan2-ffhq-1024x1024.pkl" in str(e.value)
    assert str((tmp_path / "models" / "stylegan").resolve()) in str(e.value)
    assert server.requests == []


def test_size_checksum_html_and_content_are_checked(server, tmp_path, monkeypatch):
    folder = tmp_path / "models" / "stylegan"
    server.extra_bytes = 10                   # the server offers a different size than the catalogue states
    with pytest.raises(ModelUnavailableError, match="offers .* bytes, but the file should have"):
        resolve_generator("ffhq")
    server.extra_bytes = 0
    cat = json.loads(open(os.environ["NADA_CATALOGUE"]).read())
    cat["models"][0]["sha256"] = "0" * 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cat))
    monkeypatch.setenv("NADA_CATALOGUE", str(bad))
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        resolve_generator("ffhq")
    assert status(catalogue().find("ffhq"), folder) == ("absent", None)     # nothing kept
    server.html = True
    with pytest.raises(ModelUnavailableError, match="web page") as e:
        resolve_generator("drive-model")
    assert "Google Drive" in str(e.value) and "browser" in str(e.value)
    server.html = False
    with pytest.raises(ModelUnavailableError, match="not what was expected"):   # content: not a rosinality .pt
        resolve_generator("wrong-kind")
    assert _no_debris(folder) == [] and not any(folder.rglob("*.safetensors"))


def test_one_downloader_per_file(server, tmp_path):
    from nada_ops.fileio import _host_tag
    entry = catalogue().find("ffhq")
    part = dl.partial_path(tmp_path / "models" / "stylegan" / entry.file)
    os.makedirs(os.path.dirname(part))
    with open(part + ".lock", "w") as fh:
        fh.write(f"{_host_tag()} {os.getpid()}")       # a live process (this one) holds it
    with pytest.raises(ModelUnavailableError, match="another process"):
        ensure(entry)
    with open(part + ".lock", "w") as fh:
        fh.write(f"{_host_tag()} 999999999")            # a dead process: the lock is taken over
    assert ensure(entry).is_file()


def test_clip_weights_from_the_catalogue(server, tmp_path):
    from nada_ops.clip.models import load_clip
    clip_dir = tmp_path / "models" / "open_clip"
    arch, path = clip_weights_for("ViT-B-32", [clip_dir])
    assert arch == TINY_CLIP_ARCH and path == str(clip_dir / "ViT-B-32-openai.safetensors")
    m = load_clip(arch, path)
    assert m.encode_text(["a photo"]).shape == (1, 32)
    assert clip_weights_for("ViT-B/32", [clip_dir]) == (arch, path)              # on disk now: no request
    assert clip_weights_for("RN50", [clip_dir]) == ("RN50", None)               # not in the catalogue


# ---------------------------------------------------------------------------- the README's main job
README_MAIN_JOB = ["adapt", "--generator", "ffhq", "--source", "photo", "--target", "pencil sketch",
                   "--out", "sketch.safetensors"]


def test_readme_main_job_on_a_fresh_machine(server, tmp_path, monkeypatch, capsys):
    """The README's command as written: the generator and the default CLIP models come from the
    catalogue (the local server stands in for the published addresses), into ./models."""
    import shlex

    from nada_ops.cli import main
    from nada_ops.stylegan.io import load_generator
    readme = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/README.md")
    text = open(readme, encoding="utf-8").read()
    assert "python -m nada_ops " + shlex.join(README_MAIN_JOB) in text.replace('"pencil sketch"', "'pencil sketch'")
    monkeypatch.delenv("NADA_MODELS_DIR")
    monkeypatch.chdir(tmp_path)
    assert main(README_MAIN_JOB) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    for what in ("download ffhq", "download CLIP ViT-B-32", "download CLIP ViT-B-16", "loading generator",
                 "loading CLIP ViT-B-32", "encoding 2 x 79 prompt(s)", "estimate on this CPU", "per iteration",
                 "training 300 iteration(s)"):
        assert what in err, what
    h = load_generator(tmp_path / "sketch.safetensors")
    assert h.provenance["history"][-1]["direction"]["target"] == "pencil sketch"
    for f in ("stylegan/stylegan2-ffhq-1024x1024.pkl", "open_clip/ViT-B-32-openai.safetensors",
              "open_clip/ViT-B-16-openai.safetensors"):
        assert (tmp_path / "models" / f).is_file(), f
    n = len(server.requests)
    assert main(README_MAIN_JOB[:-1] + ["again.safetensors", "--iterations", "1"]) == 0
    assert len(server.requests) == n                          # second run: everything from disk


def test_readme_main_job_offline_fails_in_seconds_naming_files_and_folders(server, tmp_path, monkeypatch, capsys):
    from nada_ops.cli import main
    monkeypatch.delenv("NADA_MODELS_DIR")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    assert main(README_MAIN_JOB) == 1
    assert time.time() - t0 < 5
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and server.requests == []
    for f, folder in (("stylegan2-ffhq-1024x1024.pkl", "stylegan"), ("ViT-B-32-openai.safetensors", "open_clip"),
                      ("ViT-B-16-openai.safetensors", "open_clip")):
        assert f in err and str((tmp_path / "models" / folder).resolve()) in err, f
    # no network at all (nothing listens): also a message in seconds, naming the file and the folder
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NADA_MODEL_MIRROR", f"http://127.0.0.1:{port}")
    t0 = time.time()
    assert main(README_MAIN_JOB) == 1
    assert time.time() - t0 < 5
    err = capsys.readouterr().err
    assert "connection refused" in err and "stylegan2-ffhq-1024x1024.pkl" in err
    assert str((tmp_path / "models" / "stylegan").resolve()) in err and "Traceback" not in err


def test_models_download_and_info_commands(server, tmp_path, capsys):
    from nada_ops.cli import main
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ffhq\s+stylegan\s+32\s+-\s", out, re.M) and "ViT-B-32" in out
    assert str((tmp_path / "models").resolve()) in out
    assert main(["info", "nada-sketch"]) == 0                       # a catalogue name: shown, not downloaded
    assert "not downloaded yet" in capsys.readouterr().out and server.requests == []
    assert main(["download", "ffhq", "ViT-B-32"]) == 0
    err = capsys.readouterr().err
    assert "ffhq: saved" in err and "licence: test licence" in err
    assert (tmp_path / "models" / "open_clip" / "ViT-B-32-openai.safetensors").is_file()
    assert main(["download", "ffhq"]) == 0 and "already here" in capsys.readouterr().err
    assert main(["models", "--here", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"ffhq", "ViT-B-32"} and all(r["status"] == "present" for r in rows)
    assert main(["info", "ffhq"]) == 0 and "32x32" in capsys.readouterr().out
    assert main(["download", "ffqh"]) == 2 and "did you mean ffhq" in capsys.readouterr().err


def test_ctrl_c_during_a_download_says_what_was_kept_and_the_next_run_continues(server, monkeypatch, capsys):
    from nada_ops.cli import common, main
    monkeypatch.setattr(dl, "CHUNK", 4096)
    draw = common.ByteProgress.__call__

    def ctrl_c_after_8k(self, done, total):
        draw(self, done, total)
        if done >= 8192:
            raise KeyboardInterrupt
    monkeypatch.setattr(common.ByteProgress, "__call__", ctrl_c_after_8k)
    assert main(["download", "ffhq"]) == 130
    err = capsys.readouterr().err
    assert "download stopped: the part received is kept" in err and "\ninterrupted\n" in err
    monkeypatch.setattr(common.ByteProgress, "__call__", draw)
    assert main(["download", "ffhq"]) == 0
    assert server.requests[-1]["range"] == "bytes=8192-"
