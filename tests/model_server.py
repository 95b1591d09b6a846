"""A local HTTP server on 127.0.0.1 (a thread with http.server) serving model files written by the
tests, with switchable misbehaviour: cut the connection mid-body, ignore Range, answer with an HTML
page, lie about the size. Used by tests/test_catalogue.py."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from conftest import randomize, tiny_config

from nada_ops.clip.tiny import TINY_NAME as TINY_CLIP_ARCH  # noqa: E402


class ModelServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[dict] = []          # {"path", "range", "if_range", "status"}
        self.cut_once: dict[str, int] = {}      # path -> cut the body after N bytes (once)
        self.ignore_range = False
        self.html = False
        self.extra_bytes = 0                    # serve the file plus this many bytes (a different file)
        self.status: dict[str, int] = {}        # path -> forced status (404, 403, ...)
        self.etag_salt = ""                     # change it to make the file "change" on the server
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rec = {"path": self.path, "range": self.headers.get("Range"),
                       "if_range": self.headers.get("If-Range"), "status": None}
                server.requests.append(rec)
                path = self.path.split("?")[0].lstrip("/")
                if path in server.status:
                    rec["status"] = server.status[path]
                    self.send_error(server.status[path])
                    return
                if server.html:
                    body = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>"
                    rec["status"] = 200
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                f = server.root / path
                if not f.is_file():
                    rec["status"] = 404
                    self.send_error(404)
                    return
                data = f.read_bytes() + b"\0" * server.extra_bytes
                etag = '"' + hashlib.sha1(data + server.etag_salt.encode()).hexdigest() + '"'
                start = 0
                rng = self.headers.get("Range")
                ok_range = rng and not server.ignore_range and self.headers.get("If-Range") in (None, etag)
                if ok_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        rec["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    rec["status"] = 206
                else:
                    self.send_response(200)
                    rec["status"] = 200
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                body = data[start:]
                cut = server.cut_once.pop(path, None)
                try:
                    if cut is not None:
                        self.wfile.write(body[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):   # the client stopped reading (on purpose)
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False


# ---------------------------------------------------------------------------- fixtures
def _tiny_generator(seed=0):
    from nada_ops.stylegan.networks import Generator
    torch.manual_seed(seed)
    return randomize(Generator(tiny_config()).eval(), seed)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """Files on the server (real formats) + a catalogue JSON whose entries point at them."""
    from writers.nvidia_pickle import write_nvidia_pickle

    from nada_ops.catalogue import download as dl
    from nada_ops.clip.tiny import build_tiny_open_clip, register_tiny_config
    from nada_ops.stylegan.formats.rosinality_pt import write_rosinality
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("server")
    G = _tiny_generator()
    write_nvidia_pickle(G, root / "stylegan2-ffhq-1024x1024.pkl", root / "marker")
    (root / "stylegan-nada").mkdir()
    write_rosinality(_tiny_generator(1), root / "stylegan-nada" / "sketch.pt")
    register_tiny_config(tmp_path_factory.mktemp("clipcfg"), TINY_CLIP_ARCH)
    for i, f in enumerate(("ViT-B-32-openai.safetensors", "ViT-B-16-openai.safetensors")):
        save_file({k: v.contiguous() for k, v in build_tiny_open_clip(seed=i).state_dict().items()}, str(root / f))
    pkl = root / "stylegan2-ffhq-1024x1024.pkl"
    src = {"licence": "test licence", "licence_url": "https://example.org/licence", "published_at": "tests"}
    models = [
        dict(name="ffhq", kind="stylegan", format="nvidia-pkl", file=pkl.name,
             url="https://example.invalid/ffhq/" + pkl.name, size=pkl.stat().st_size,
             sha256=dl.sha256_of(pkl), resolution=32, source="t"),
        dict(name="ffhq-nosum", kind="stylegan", format="nvidia-pkl", file=pkl.name.replace(".pkl", "-copy.pkl"),
             url="https://example.invalid/x.pkl", resolution=32, source="t"),
        dict(name="nada-sketch", kind="stylegan", format="rosinality-pt", file="stylegan-nada/sketch.pt",
             url="https://example.invalid/sketch.pt", resolution=32, source="t"),
        dict(name="wrong-kind", kind="stylegan", format="rosinality-pt", file="ViT-B-32-openai.safetensors",
             url="https://example.invalid/clip.safetensors", source="t"),
        dict(name="drive-model", kind="stylegan", format="rosinality-pt", file="drive.pt",
             url="https://drive.usercontent.google.com/download?id=x&export=download&confirm=t", source="t"),
    ] + [dict(name=arch, kind="clip", format="open_clip-safetensors", file=f"{arch}-openai.safetensors",
              url=f"https://example.invalid/{arch}.safetensors", source="t",
              open_clip={"name": TINY_CLIP_ARCH, "tag": "openai"}) for arch in ("ViT-B-32", "ViT-B-16")]
    (root / "ffhq-nosum").mkdir()
    cat = tmp_path_factory.mktemp("cat") / "catalogue.json"
    cat.write_text(json.dumps({"sources": {"t": src}, "models": models}))
    # the copy entry is served under its own name
    (root / pkl.name.replace(".pkl", "-copy.pkl")).write_bytes(pkl.read_bytes())
    return root, cat


@pytest.fixture
def server(served, tmp_path, monkeypatch):
    root, cat = served
    for var in ("HF_HUB_OFFLINE", "NADA_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NADA_CATALOGUE", str(cat))
    monkeypatch.setenv("NADA_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NADA_DOWNLOAD_TIMEOUT", "5")
    with ModelServer(root) as s:
        monkeypatch.setenv("NADA_MODEL_MIRROR", s.url)
        yield s
