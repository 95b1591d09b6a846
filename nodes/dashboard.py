"""Training telemetry for the web dashboard (web/js/nada_dashboard.js).

Messages (websocket, via PromptServer.send_sync), all keyed by the node id:
- ``nada.train.start``: {node, run, total, num_ws, settings}
- ``nada.train.progress``: {node, run, step, total, loss, elapsed, eta, layers, num_ws,
  preview (data URL of a JPEG, only on preview steps)}; throttled to MIN_INTERVAL seconds
  except preview steps and the last step.
- ``nada.train.snapshot``: {node, run, step, loss, file} (a generator saved during training;
  ``file`` relative to models/stylegan, loadable with Load StyleGAN)
- ``nada.train.end``: {node, run, status ('done' | 'interrupted' | 'error'), steps, message, saved}
  (``saved``: the partial generator kept by a stopped run, relative to models/stylegan, or "")
The history of the latest run per node is kept in memory and served at
``GET /nada/train/{node}`` so a reloaded page can redraw what happened so far
({node, run, total, num_ws, status, message, settings, points: [[step, loss]], layers: [list | None]
per point, preview, step, elapsed, snapshots}); a node without a recorded run answers 200 with
``{node, run: null, status: 'idle'}``.
"""
from __future__ import annotations

import base64
import io
import threading
import time
import uuid
import weakref

from . import _comfy as C

MIN_INTERVAL = 0.25
MAX_POINTS = 5000

_history: dict[str, dict] = {}
_lock = threading.Lock()


def history(node_id: str) -> dict | None:
    with _lock:
        h = _history.get(str(node_id))
        return None if h is None else {**h, "points": list(h["points"]), "layers": list(h["layers"]),
                                       "snapshots": list(h["snapshots"])}


def _jpeg_data_url(pil_image, max_side=512) -> str:
    im = pil_image.copy()
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class TrainingReporter:
    def __init__(self, node_id, total: int, num_ws: int, settings: dict | None = None, clock=time.monotonic):
        self.node = str(node_id) if node_id is not None else "unknown"
        self.run = uuid.uuid4().hex[:12]
        self.total = int(total)
        self.num_ws = int(num_ws)
        self.clock = clock
        self._last = -1e9
        with _lock:
            _history[self.node] = {"node": self.node, "run": self.run, "total": self.total, "num_ws": self.num_ws,
                                   "status": "running", "points": [], "layers": [], "preview": None,
                                   "settings": settings or {}, "snapshots": [], "saved": ""}
        C.send_message("nada.train.start", {"node": self.node, "run": self.run, "total": self.total,
                                            "num_ws": self.num_ws, "settings": settings or {}})

    def step(self, step: int, loss: float, elapsed: float, layers=None, preview_pil=None) -> bool:
        """Record a step; send a message unless throttled. Returns True when sent."""
        preview = _jpeg_data_url(preview_pil) if preview_pil is not None else None
        with _lock:
            h = _history.get(self.node)
            if h is not None and h["run"] == self.run:
                if len(h["points"]) < MAX_POINTS:
                    h["points"].append([step, loss])
                    h["layers"].append(list(layers) if layers is not None else None)
                if preview:
                    h["preview"] = preview
                h["step"] = step
                h["elapsed"] = elapsed
        now = self.clock()
        if preview is None and step < self.total and now - self._last < MIN_INTERVAL:
            return False
        self._last = now
        eta = elapsed / step * (self.total - step) if step else None
        C.send_message("nada.train.progress", {
            "node": self.node, "run": self.run, "step": step, "total": self.total, "loss": loss,
            "elapsed": elapsed, "eta": eta, "layers": list(layers) if layers is not None else None,
            "num_ws": self.num_ws, "preview": preview})
        return True

    def snapshot(self, step: int, loss: float, file: str) -> None:
        entry = {"step": int(step), "loss": float(loss), "file": str(file)}
        with _lock:
            h = _history.get(self.node)
            if h is not None and h["run"] == self.run:
                h["snapshots"].append(entry)
        C.send_message("nada.train.snapshot", {"node": self.node, "run": self.run, **entry})

    def end(self, status: str, steps: int, message: str = "", saved: str = "") -> None:
        with _lock:
            h = _history.get(self.node)
            if h is not None and h["run"] == self.run:
                h["status"] = status
                h["message"] = message
                h["saved"] = saved
        C.send_message("nada.train.end", {"node": self.node, "run": self.run, "status": status, "steps": steps,
                                          "message": message, "saved": saved})


# ------------------------------------------------------------------ t preview (model blending)
# Interpolate Models / Render Domain Transition call remember_blend_inputs() with the generators
# (and latents) they ran with; POST /nada/blend_preview/{node} then renders a few t values with
# those models, so a slider in the front end (web/js/nada_blend_preview.js) can preview t without
# re-running the graph. Only weak references are kept: the models stay in memory only as long as
# ComfyUI's own cache holds them.
BLEND_MAX_NODES = 8
BLEND_MAX_FRAMES = 9
BLEND_MAX_LATENTS = 4
_blend: dict[str, dict] = {}
_render_lock = threading.Lock()


def remember_blend_inputs(node_id, handles, latents=None) -> None:
    """Record the generator handles (2 or more, in path order) and optional latents of a node run."""
    if node_id is None:
        return
    try:
        entry = {"handles": [weakref.ref(h) for h in handles if h is not None],
                 "latents": weakref.ref(latents) if latents is not None else None}
    except TypeError:
        return
    with _lock:
        _blend.pop(str(node_id), None)
        _blend[str(node_id)] = entry
        while len(_blend) > BLEND_MAX_NODES:
            _blend.pop(next(iter(_blend)))


def blend_preview(node_id, ts, seed: int = 0, psi: float = 0.7, count: int = 1, max_side: int = 256) -> dict:
    """Render the blend of the node's last models at each t in ``ts`` (0 = first model, 1 = last;
    with more than two models t runs along the whole sequence). Latents: the node's own (first
    ``count``), else ``count`` seeds from ``seed`` with truncation ``psi``. Raises LookupError
    when the node has not run (or its models have left ComfyUI's cache)."""
    import torch

    from ..nada_ops.interpolate import GeneratorPath
    from ..nada_ops.stylegan.sampling import make_grid, sample_latents, synthesize
    with _lock:
        entry = _blend.get(str(node_id))
    if entry is None:
        raise LookupError("this node has not run yet: queue the workflow once, then preview t")
    handles = [r() for r in entry["handles"]]
    if len(handles) < 2 or any(h is None for h in handles):
        raise LookupError("the models of the last run are no longer in memory: queue the workflow again")
    lat = entry["latents"]() if entry["latents"] is not None else None
    ts = [min(max(float(t), 0.0), 1.0) for t in list(ts)[:BLEND_MAX_FRAMES]]
    count = max(1, min(int(count), BLEND_MAX_LATENTS))
    first = handles[0]
    with _render_lock, torch.inference_mode():
        device = first.G.w_avg.device if hasattr(first.G, "w_avg") else next(first.G.parameters()).device
        path = GeneratorPath([h.G for h in handles], names=[h.name for h in handles], device=device)
        if lat is not None:
            ws = lat.ws[:count]
        else:
            ws = sample_latents(first.G, [(int(seed) + i) % 2 ** 32 for i in range(count)], float(psi)).ws
        ws = ws.to(device)
        count = ws.shape[0]
        frames = []
        for t in ts:
            G = path.set_u(t)
            img = synthesize(G, ws, "const", count, getattr(first, "dtype", torch.float32))
            grid = make_grid(img, cols=img.shape[0])
            arr = ((grid.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            from PIL import Image
            frames.append({"t": t, "image": _jpeg_data_url(Image.fromarray(arr), max_side)})
        del path
    return {"node": str(node_id), "names": [h.name for h in handles], "frames": frames,
            "latents": "node" if lat is not None else f"seeds {seed}..{seed + count - 1}, psi {psi}"}


def register_routes() -> None:
    """GET /nada/train/{node} -> JSON history of the node's latest run (ComfyUI only)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    inst = getattr(PromptServer, "instance", None)
    if inst is None or getattr(inst, "routes", None) is None or getattr(register_routes, "_done", False):
        return

    @inst.routes.get("/nada/train/{node}")
    async def _get_history(request):
        # "No run yet" is the normal state of a freshly loaded workflow: a 200 with run=null
        # (browsers log every non-2xx answer as a console error).
        node = request.match_info["node"]
        h = history(node)
        return web.json_response(h if h is not None else {"node": str(node), "run": None, "status": "idle"})

    @inst.routes.post("/nada/blend_preview/{node}")
    async def _blend_preview(request):
        import asyncio
        import functools
        try:
            body = await request.json()
            ts = body.get("t", [0.5])
            ts = ts if isinstance(ts, list) else [ts]
            job = functools.partial(blend_preview, request.match_info["node"], ts, int(body.get("seed", 0)),
                                    float(body.get("psi", 0.7)), int(body.get("count", 1)))
        except (ValueError, TypeError, AttributeError) as e:
            return web.json_response({"error": f"bad request: {e}"}, status=400)
        try:
            out = await asyncio.get_running_loop().run_in_executor(None, job)
        except LookupError as e:   # not run yet / models gone: a normal state, not an HTTP error
            return web.json_response({"node": request.match_info["node"], "frames": [], "message": str(e)})
        except Exception as e:  # a preview must never take the server down
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=500)
        return web.json_response(out)

    register_routes._done = True
