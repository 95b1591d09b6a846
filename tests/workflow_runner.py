"""Run a UI-format workflow (what users load and share) the way ComfyUI executes it:

- converted to the API prompt the front end sends (widget values in front-end order, links);
- nodes executed once each in dependency order, inside ``torch.inference_mode()``, and the SAME
  output objects handed to every consumer (ComfyUI's output cache does that);
- hidden inputs (UNIQUE_ID, PROMPT, EXTRA_PNGINFO) filled in as ComfyUI fills them;
- core nodes replaced by small stand-ins that check what they receive.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def builder():
    """tools/build_example_workflows.py (imported once): the one place that knows how ComfyUI's
    front end lays out a node's widgets (the end-to-end test checks it against the real one)."""
    import sys
    name = "nada_build_examples"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "build_example_workflows.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def to_api(wf: dict, mappings: dict) -> dict:
    """UI workflow -> API prompt {id: {class_type, inputs}}."""
    b = builder()
    links = {l[0]: l for l in wf["links"]}
    api = {}
    for n in wf["nodes"]:
        t = n["type"]
        if t in ("MarkdownNote", "Note"):
            continue
        inputs = {}
        if t in mappings:
            names = [name for name, _ in b.node_widgets(mappings[t])]
        else:
            names = [name for name, _ in b.CORE[t][2]]
        assert len(names) == len(n["widgets_values"]), (t, names, n["widgets_values"])
        inputs.update({k: v for k, v in zip(names, n["widgets_values"]) if k is not None})
        for inp in n["inputs"]:
            if inp.get("link") is not None:
                lk = links[inp["link"]]
                inputs[inp["name"]] = [str(lk[1]), lk[2]]
        api[str(n["id"])] = {"class_type": t, "inputs": inputs}
    return api


class CoreStandIns:
    """Core ComfyUI nodes: they check their inputs like the real ones would need them."""

    def __init__(self):
        self.saved_images = []
        self.videos = []

    def run(self, t, kw):
        if t in ("SaveImage", "PreviewImage"):
            img = kw["images"]
            assert isinstance(img, torch.Tensor) and img.ndim == 4 and img.shape[-1] == 3, img.shape
            assert img.dtype == torch.float32 and img.device.type == "cpu"
            assert float(img.min()) >= 0 and float(img.max()) <= 1
            img.cpu().numpy()             # what SaveImage does first
            self.saved_images.append(img)
            return ()
        if t == "SaveVideo":
            v = kw["video"]
            w, h = v.get_dimensions()     # what core Save Video calls first
            assert w > 0 and h > 0
            self.videos.append(v)
            return ()
        raise KeyError(f"no stand-in for core node {t}")


def run_workflow(wf: dict, mappings: dict, overrides: dict | None = None, core: CoreStandIns | None = None):
    """Execute ``wf``; ``overrides``: {class_type: {input: value}} (stand-in models, fewer steps).
    Returns ({node id: outputs}, core stand-ins)."""
    prompt = to_api(wf, mappings)
    for node in prompt.values():
        node["inputs"].update((overrides or {}).get(node["class_type"], {}))
    core = core or CoreStandIns()
    extra_pnginfo = {"workflow": wf}
    results: dict[str, tuple] = {}

    def run(nid):
        if nid in results:
            return results[nid]
        node = prompt[nid]
        t = node["class_type"]
        kw = {k: (run(v[0])[v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        if t in mappings:
            cls = mappings[t]
            hidden = cls.INPUT_TYPES().get("hidden", {})
            for name, kind in hidden.items():
                kw[name] = {"UNIQUE_ID": nid, "PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo}.get(kind)
            if hasattr(cls, "VALIDATE_INPUTS"):
                ok = cls.VALIDATE_INPUTS(**{k: v for k, v in kw.items() if not isinstance(v, tuple)})
                assert ok is True, ok
            res = getattr(cls(), cls.FUNCTION)(**kw)
            out = res["result"] if isinstance(res, dict) else res
            assert len(out) == len(cls.RETURN_TYPES), t
        else:
            out = core.run(t, kw)
        results[nid] = out
        return out

    with torch.inference_mode():
        for nid in prompt:
            run(nid)
    json.dumps(prompt)    # what the front end sent is plain JSON
    return results, core
