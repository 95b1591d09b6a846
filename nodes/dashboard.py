"""Training telemetry for the web dashboard (web/js/nada_dashboard.js).

Messages (websocket, via PromptServer.send_sync), all keyed by the node id:
- ``nada.train.start``: {node, run, total, num_ws, settings}
- ``nada.train.progress``: {node, run, step, total, loss, elapsed, eta, layers, num_ws,
  preview (data URL of a JPEG, only on preview steps)}; throttled to MIN_INTERVAL seconds
  except preview steps and the last step.
- ``nada.train.end``: {node, run, status ('done' | 'interrupted' | 'error'), steps, message}
The history of the latest run per node is kept in memory and served at
``GET /nada/train/{node}`` so a reloaded page can redraw what happened so far.
"""
from __future__ import annotations

import base64
import io
import threading
import time
import uuid

from . import _comfy as C

MIN_INTERVAL = 0.25
MAX_POINTS = 5000

_history: dict[str, dict] = {}
_lock = threading.Lock()


def history(node_id: str) -> dict | None:
    with _lock:
        h = _history.get(str(node_id))
        return None if h is None else {**h, "points": list(h["points"]), "layers": list(h["layers"])}


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
                                   "settings": settings or {}}
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

    def end(self, status: str, steps: int, message: str = "") -> None:
        with _lock:
            h = _history.get(self.node)
            if h is not None and h["run"] == self.run:
                h["status"] = status
                h["message"] = message
        C.send_message("nada.train.end", {"node": self.node, "run": self.run, "status": status, "steps": steps,
                                          "message": message})


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
        h = history(request.match_info["node"])
        if h is None:
            return web.json_response({"error": "no training run recorded for this node"}, status=404)
        return web.json_response(h)

    register_routes._done = True
