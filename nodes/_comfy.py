"""The only place that touches ComfyUI's modules (imported lazily, so that the node
classes can also be exercised by tests with stand-ins for ComfyUI)."""
from __future__ import annotations

import os

import torch

STYLEGAN_FOLDER = "stylegan"
CLIP_FOLDER = "open_clip"
DIRECTION_FOLDER = "latent_directions"
ENCODER_FOLDER = "stylegan_encoders"
LANDMARK_FOLDER = "face_landmarks"
MAPPER_FOLDER = "stylegan_mappers"
PRIOR_FOLDER = "stylegan_priors"
MODEL_EXTENSIONS = {".pkl", ".pt", ".pth", ".safetensors"}

# Custom types (pack-prefixed: type names are global in ComfyUI).
GENERATOR = "NADA_GENERATOR"
LATENTS = "NADA_LATENTS"
CLIP = "NADA_CLIP"
DIRECTION = "NADA_DIRECTION"
SCHEDULE = "NADA_FREEZE_SCHEDULE"
FACE_TRANSFORM = "NADA_FACE_TRANSFORM"
CATEGORY = "StyleGAN-NADA"

#: Words every node of the pack is found by in ComfyUI's node search (plus its own).
PACK_ALIASES = ("stylegan", "stylegan2", "gan", "nada", "stylegan-nada", "domain adaptation")


def aliases(*own: str) -> list[str]:
    """SEARCH_ALIASES of a node: its own words, then the pack's."""
    return list(dict.fromkeys([*own, *PACK_ALIASES]))


def folder_paths():
    import folder_paths as fp  # ComfyUI module
    return fp


def register_model_folders() -> None:
    """Register models/stylegan, models/open_clip, models/latent_directions unless the user
    already configured them (extra_model_paths.yaml is read before packs load)."""
    try:
        fp = folder_paths()
    except ImportError:
        return
    for key, exts in ((STYLEGAN_FOLDER, MODEL_EXTENSIONS),
                      (CLIP_FOLDER, {".pt", ".bin", ".safetensors", ".pth"}),
                      (DIRECTION_FOLDER, {".npy", ".pt", ".pth"}),
                      (ENCODER_FOLDER, {".pt", ".pth"}),
                      (LANDMARK_FOLDER, {".dat"}),
                      (MAPPER_FOLDER, {".safetensors", ".pt", ".pth"}),
                      (PRIOR_FOLDER, {".safetensors", ".ckpt", ".pt", ".pth"})):
        default = os.path.join(fp.models_dir, key)
        if key in fp.folder_names_and_paths:
            paths, known = fp.folder_names_and_paths[key]
            if default not in paths:
                paths.append(default)
            fp.folder_names_and_paths[key] = (paths, set(known) | set(exts))
        else:
            fp.folder_names_and_paths[key] = ([default], set(exts))


def list_files(key: str) -> list[str]:
    from ..nada_ops.fileio import is_temporary_name   # never list a writer's unfinished file
    try:
        return sorted(f for f in folder_paths().get_filename_list(key) if not is_temporary_name(f))
    except (ImportError, KeyError):
        return []


# ------------------------------------------------------------------ the pack's model catalogue
_CATALOGUE_KIND = {STYLEGAN_FOLDER: "stylegan", CLIP_FOLDER: "clip"}


def catalogue_files(key: str) -> list[str]:
    """File names of the catalogue's models for folder ``key`` that are NOT on disk yet (offered
    after the local files; the node downloads them on first use). Empty for other folders, or
    when ComfyUI runs offline (HF_HUB_OFFLINE / NADA_OFFLINE)."""
    from ..nada_ops.catalogue import catalogue, offline_reason
    kind = _CATALOGUE_KIND.get(key)
    if kind is None or offline_reason():
        return []
    try:
        local = {f.replace("\\", "/") for f in list_files(key)}      # ComfyUI lists 'sub\\file' on Windows
        return [e.file for e in catalogue().of_kind(kind) if e.file not in local]
    except (OSError, ValueError):
        return []


def list_files_and_catalogue(key: str) -> list[str]:
    """The files in models/<key>, then the catalogue's models not downloaded yet."""
    local = list_files(key)
    return local + catalogue_files(key)


def download_progress(label: str):
    """A download progress callback ``(done_bytes, total_bytes)`` on ComfyUI's progress bar (in
    MB); it raises ComfyUI's interrupt exception on Cancel (the partial file is kept for later)."""
    bar = Progress(1)
    mb = 1_000_000

    def progress(done: int, total: int | None):
        bar(max(done // mb, 0), max((total or done) // mb, 1))
    return progress


def model_path_or_download(key: str, name: str) -> str:
    """The full path of ``name`` in models/<key>; a catalogue model that is not there yet is
    downloaded into the first models/<key> folder first (ComfyUI's progress bar, Cancel)."""
    import logging

    from ..nada_ops.catalogue import catalogue
    try:
        return full_path(key, name)
    except FileNotFoundError:
        entry = catalogue().find(name, _CATALOGUE_KIND.get(key)) if key in _CATALOGUE_KIND else None
        if entry is None or entry.file != name.replace("\\", "/"):
            raise
    from ..nada_ops.catalogue import ensure
    log = logging.getLogger("stylegan_nada")
    path = ensure(entry, first_folder(key), progress=download_progress(entry.name),
                  log=lambda m: log.info("%s", m))
    log.info("downloaded %s (licence: %s)", path, entry.licence)
    return str(path)


def full_path(key: str, name: str) -> str:
    fp = folder_paths()
    if hasattr(fp, "get_full_path_or_raise"):
        return fp.get_full_path_or_raise(key, name)
    p = fp.get_full_path(key, name)
    if p is None:
        raise FileNotFoundError(f"{name} not found in models/{key}")
    return p


def first_folder(key: str) -> str:
    fp = folder_paths()
    paths = fp.get_folder_paths(key)
    if not paths:
        raise RuntimeError(f"no folder is registered for models/{key}")
    return paths[0]


def output_dir() -> str:
    return folder_paths().get_output_directory()


def input_dir() -> str:
    return folder_paths().get_input_directory()


def temp_dir() -> str:
    return folder_paths().get_temp_directory()


def intermediate_device() -> torch.device:
    """Where ComfyUI keeps IMAGE tensors between nodes (the CPU unless --gpu-only)."""
    try:
        import comfy.model_management as mm
        return mm.intermediate_device()
    except (ImportError, AttributeError):
        return torch.device("cpu")


def torch_device(choice: str = "auto") -> torch.device:
    if choice and choice != "auto":
        return torch.device(choice)
    try:
        import comfy.model_management as mm
        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_choices() -> list[str]:
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return out


def soft_empty_cache() -> None:
    try:
        import comfy.model_management as mm
        mm.soft_empty_cache()
    except ImportError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def interrupt_requested() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def is_interrupt(exc: BaseException) -> bool:
    try:
        import comfy.model_management as mm
        return isinstance(exc, mm.InterruptProcessingException)
    except ImportError:
        return False


class Progress:
    """Progress bar + preview on the node; checks for interrupt at every update."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = max(int(total), 1)
        self.node_id = node_id
        try:
            import comfy.utils
            self._bar = comfy.utils.ProgressBar(self.total)
        except ImportError:
            self._bar = None

    def __call__(self, step: int, total: int | None = None, preview=None) -> None:
        interrupt_requested()
        if self._bar is None:
            return
        total = total or self.total
        if preview is not None:
            self._bar.update_absolute(step, total, ("JPEG", preview, 512))
        else:
            self._bar.update_absolute(step, total)


def send_message(event: str, data: dict) -> None:
    """Custom websocket message to the browser that queued the running prompt (no-op outside
    ComfyUI). ComfyUI sets ``PromptServer.instance.client_id`` to that client while a prompt
    runs; other open browsers do not receive our messages."""
    try:
        from server import PromptServer
    except ImportError:
        return
    inst = getattr(PromptServer, "instance", None)
    if inst is not None:
        inst.send_sync(event, data, getattr(inst, "client_id", None))


# ------------------------------------------------------------------ memory cooperation
def make_room(bytes_needed: int, device) -> None:
    """Ask ComfyUI to unload models other graphs left on ``device`` until about
    ``bytes_needed`` are free (ComfyUI only manages its own models; ours are not in its list)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    free = getattr(mm, "free_memory", None)
    if free is not None and bytes_needed > 0:
        free(int(bytes_needed), torch.device(device))


class heavy_work:
    """``with heavy_work("Invert Image", device, bytes, "inversion"):`` makes room first, turns an
    out-of-memory error into :class:`nada_ops.memory.OutOfMemory` (what to change), and gives
    cached memory back to the device afterwards so the next prompt starts clean."""

    def __init__(self, what: str, device, bytes_needed: int = 0, job: str = ""):
        self.what, self.device, self.bytes, self.job = what, device, bytes_needed, job

    def __enter__(self):
        make_room(self.bytes, self.device)
        return self

    def __exit__(self, exc_type, exc, tb):
        from ..nada_ops.memory import OutOfMemory, advice_for, is_out_of_memory
        if exc is not None and is_out_of_memory(exc) and not isinstance(exc, OutOfMemory):
            err = OutOfMemory(self.what, self.device, advice_for(self.job), exc)
            # Drop the failed frames (and the tensors they hold) before the error travels up
            # to ComfyUI, so the memory is really released for the next prompt.
            exc.__traceback__ = None
            del tb
            soft_empty_cache()
            raise err from None
        soft_empty_cache()
        return False


# ------------------------------------------------------------------ video
def video_from_file(path: str):
    """ComfyUI's VIDEO value for a file (comfy_api's VideoFromFile); None without comfy_api."""
    try:
        from comfy_api.latest import InputImpl
        return InputImpl.VideoFromFile(path)
    except ImportError:
        pass
    try:
        from comfy_api.input_impl import VideoFromFile
        return VideoFromFile(path)
    except ImportError:
        return None


def metadata_disabled() -> bool:
    try:
        from comfy.cli_args import args
        return bool(getattr(args, "disable_metadata", False))
    except ImportError:
        return False


def workflow_metadata(prompt=None, extra_pnginfo=None) -> dict:
    """What core Save Video embeds in a file: the workflow (extra_pnginfo) and the prompt, as JSON
    strings; empty when ComfyUI runs with --disable-metadata."""
    import json
    if metadata_disabled():
        return {}
    out = {}
    if isinstance(extra_pnginfo, dict):
        for k, v in extra_pnginfo.items():
            out[str(k)] = v if isinstance(v, str) else json.dumps(v)
    if prompt is not None:
        out["prompt"] = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return out
