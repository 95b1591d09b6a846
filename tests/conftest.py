"""Shared fixtures: tiny random generators, and the pack imported as ComfyUI imports it
(as a package under an arbitrary name) with stand-ins for ComfyUI's modules."""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nada_ops.stylegan.config import StyleGAN2Config  # noqa: E402
from nada_ops.stylegan.networks import Generator  # noqa: E402


def tiny_config(**kw) -> StyleGAN2Config:
    base = dict(img_resolution=32, z_dim=32, w_dim=32, channel_base=512, channel_max=32, num_mapping_layers=2)
    base.update(kw)
    return StyleGAN2Config(**base)


def randomize(G: Generator, seed: int = 0) -> Generator:
    """Make every parameter/buffer non-trivial (noise strengths, biases, w_avg)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith("noise_strength") or name.endswith(".bias") or name.endswith("w_avg"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return G


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    thread pool makes them several times slower (opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg():
    return tiny_config()


@pytest.fixture
def tiny_G():
    torch.manual_seed(0)
    return randomize(Generator(tiny_config()).eval())


class FakeComfy:
    """Stand-ins for folder_paths / comfy.model_management / comfy.utils / server."""

    def __init__(self, base: Path):
        self.base = base
        self.models_dir = base / "models"
        self.output = base / "output"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.output.mkdir(parents=True, exist_ok=True)
        self.input = base / "input"
        self.input.mkdir(parents=True, exist_ok=True)
        self.progress: list = []
        self.messages: list = []
        self.message_sids: list = []
        self.freed: list = []          # (bytes, device) asked of comfy.model_management.free_memory
        self.empty_cache_calls = 0
        self.interrupt = False

    def install(self, monkeypatch):
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.models_dir)
        fp.folder_names_and_paths = {}
        exts = {".pkl", ".pt", ".pth", ".safetensors", ".bin", ".npy"}

        def add_model_folder_path(name, path, is_default=False):
            fp.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)

        def get_folder_paths(name):
            return list(fp.folder_names_and_paths[name][0])

        def get_filename_list(name):
            out = []
            paths, ex = fp.folder_names_and_paths[name]
            for p in paths:
                for root, _, files in os.walk(p):
                    for f in files:
                        if not ex or os.path.splitext(f)[1] in ex:
                            out.append(os.path.relpath(os.path.join(root, f), p))
            return sorted(out)

        def get_full_path_or_raise(name, filename):
            for p in fp.folder_names_and_paths.get(name, ([], None))[0]:
                full = os.path.join(p, filename)
                if os.path.isfile(full):
                    return full
            raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")

        fp.add_model_folder_path = add_model_folder_path
        fp.get_folder_paths = get_folder_paths
        fp.get_filename_list = get_filename_list
        fp.get_full_path_or_raise = get_full_path_or_raise
        def get_full_path(name, filename):
            try:
                return get_full_path_or_raise(name, filename)
            except FileNotFoundError:
                return None

        fp.get_full_path = get_full_path
        fp.get_output_directory = lambda: str(self.output)
        fp.get_input_directory = lambda: str(self.input)
        fp.get_temp_directory = lambda: str(self.base / "temp")
        monkeypatch.setitem(sys.modules, "folder_paths", fp)

        comfy = types.ModuleType("comfy")
        mm = types.ModuleType("comfy.model_management")

        class InterruptProcessingException(Exception):
            pass

        fake = self

        def throw_exception_if_processing_interrupted():
            if fake.interrupt:
                fake.interrupt = False
                raise InterruptProcessingException()

        mm.InterruptProcessingException = InterruptProcessingException
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.intermediate_device = lambda: torch.device("cpu")
        mm.OOM_EXCEPTION = torch.OutOfMemoryError

        def soft_empty_cache(*a, **k):
            fake.empty_cache_calls += 1

        def free_memory(memory_required, device, keep_loaded=()):
            fake.freed.append((memory_required, torch.device(device)))

        mm.soft_empty_cache = soft_empty_cache
        mm.free_memory = free_memory
        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                fake.progress.append((value, total, preview))

        utils.ProgressBar = ProgressBar
        comfy.model_management = mm
        comfy.utils = utils
        monkeypatch.setitem(sys.modules, "comfy", comfy)
        monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
        monkeypatch.setitem(sys.modules, "comfy.utils", utils)

        server = types.ModuleType("server")

        class PromptServer:
            instance = None

        class _Inst:
            client_id = "client-A"       # ComfyUI sets this to the client of the running prompt

            def send_sync(self, event, data, sid=None):
                fake.messages.append((event, data))
                fake.message_sids.append(sid)

        PromptServer.instance = _Inst()
        server.PromptServer = PromptServer
        monkeypatch.setitem(sys.modules, "server", server)

        # comfy_api's VIDEO value (core Save Video reads it through these methods)
        api = types.ModuleType("comfy_api")
        latest = types.ModuleType("comfy_api.latest")

        class VideoFromFile:
            def __init__(self, file):
                self.file = file

            def get_stream_source(self):
                return self.file

            def get_dimensions(self):
                import av
                with av.open(self.file) as c:
                    st = c.streams.video[0]
                    return st.width, st.height

        latest.InputImpl = types.SimpleNamespace(VideoFromFile=VideoFromFile)
        api.latest = latest
        monkeypatch.setitem(sys.modules, "comfy_api", api)
        monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
        self.mm = mm
        return self


_PACK_COUNTER = [0]


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """Fake ComfyUI environment + the pack imported under a fresh arbitrary package name."""
    fake = FakeComfy(tmp_path / "comfyui").install(monkeypatch)
    _PACK_COUNTER[0] += 1
    name = f"custom_pack_{_PACK_COUNTER[0]}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, mod)
    spec.loader.exec_module(mod)
    fake.pack = mod
    fake.stylegan_dir = Path(sys.modules["folder_paths"].get_folder_paths("stylegan")[0])
    fake.stylegan_dir.mkdir(parents=True, exist_ok=True)
    return fake
