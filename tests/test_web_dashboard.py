"""Backend side of the web front end (nodes/dashboard.py) and the front end's files:
history served for a reloaded page, the t-preview renderer, and JS syntax / structure checks
(node --check, node --test)."""
from __future__ import annotations

import gc
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
WEB_JS = sorted((ROOT / "web").rglob("*.js"))
NODE = shutil.which("node")


def _dash(comfy):
    __import__(f"{comfy.pack.__name__}.nodes.dashboard")
    return sys.modules[f"{comfy.pack.__name__}.nodes.dashboard"]


def test_history_has_what_a_reloaded_page_needs(comfy):
    dash = _dash(comfy)
    t = [0.0]
    rep = dash.TrainingReporter("42", total=10, num_ws=8, settings={"lr": 0.002}, clock=lambda: t[0])
    sent = []
    for step in range(1, 11):
        t[0] += 0.01   # faster than the throttle
        sent.append(rep.step(step, 1.0 / step, elapsed=step * 0.5, layers=[step % 8, 3]))
    # throttled: the first, then only the last step (previews would pass too)
    assert sent[0] and sent[-1] and not all(sent)
    h = dash.history("42")
    assert h["status"] == "running" and h["step"] == 10 and h["elapsed"] == 5.0
    assert [p[0] for p in h["points"]] == list(range(1, 11))       # every step, not only the sent ones
    assert h["layers"][0] == [1, 3] and len(h["layers"]) == 10
    rep.end("done", 10)
    h = dash.history("42")
    assert h["status"] == "done"
    json.dumps(h)                                                     # served as JSON
    assert dash.history("nope") is None
    events = [e for e, _ in comfy.messages]
    assert events[0] == "nada.train.start" and events[-1] == "nada.train.end"
    prog = [d for e, d in comfy.messages if e == "nada.train.progress"]
    assert all(d["node"] == "42" and d["run"] == rep.run for d in prog)


def test_new_run_replaces_history_and_late_steps_of_old_run_are_ignored(comfy):
    dash = _dash(comfy)
    old = dash.TrainingReporter("7", total=5, num_ws=4)
    new = dash.TrainingReporter("7", total=3, num_ws=4)
    old.step(1, 0.5, 0.1)
    new.step(1, 0.9, 0.1)
    h = dash.history("7")
    assert h["run"] == new.run and h["points"] == [[1, 0.9]] and h["total"] == 3


@pytest.fixture
def two_generators(comfy, tiny_G):
    from nada_ops.stylegan.io import save_generator
    from tests.conftest import randomize
    import copy
    save_generator(tiny_G, comfy.stylegan_dir / "a.safetensors")
    G2 = randomize(copy.deepcopy(tiny_G), seed=3)
    with torch.no_grad():
        for p in G2.synthesis.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    save_generator(G2, comfy.stylegan_dir / "b.safetensors")
    m = comfy.pack.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        a = m["NADALoadStyleGAN"]().load("a.safetensors", "cpu", "fp32")[0]
        b = m["NADALoadStyleGAN"]().load("b.safetensors", "cpu", "fp32")[0]
    return a, b


def _decode(data_url):
    import base64
    import io

    import numpy as np
    from PIL import Image
    assert data_url.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")).astype(float)


def test_blend_preview_renders_t_values_with_the_remembered_models(comfy, two_generators):
    dash = _dash(comfy)
    a, b = two_generators
    with pytest.raises(LookupError, match="queue the workflow"):
        dash.blend_preview("11", [0.5])
    dash.remember_blend_inputs("11", [a, b])
    out = dash.blend_preview("11", [0.0, 0.5, 1.0], seed=3, psi=0.7, count=2)
    assert [f["t"] for f in out["frames"]] == [0.0, 0.5, 1.0]
    imgs = [_decode(f["image"]) for f in out["frames"]]
    assert imgs[0].shape == (32, 64, 3)                             # 2 latents side by side, 32 px each
    assert abs(imgs[0] - imgs[2]).mean() > 5                          # A and B differ
    # t = 0 is model A itself: compare with A's own rendering of the same seeds
    from nada_ops.stylegan.sampling import make_grid, sample_latents, synthesize
    with torch.inference_mode():
        ref = synthesize(a.G, sample_latents(a.G, [3, 4], 0.7).ws, "const", 2)
    ref = ((make_grid(ref, cols=2).clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    # (JPEG of tiny, noisy random-generator images: compare against the JPEG of the reference)
    from PIL import Image
    import base64
    import io
    import numpy as np
    buf = io.BytesIO()
    Image.fromarray(ref.round().astype(np.uint8)).save(buf, format="JPEG", quality=85)
    ref_jpeg = _decode("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    assert abs(imgs[0] - ref_jpeg).max() <= 2
    assert abs(imgs[2] - ref_jpeg).mean() > 5
    assert out["latents"].startswith("seeds 3..4")
    # inputs untouched
    assert not any(p.requires_grad and p.grad is not None for p in a.G.parameters())


def test_blend_preview_uses_node_latents_and_only_weak_references(comfy, two_generators):
    dash = _dash(comfy)
    m = comfy.pack.NODE_CLASS_MAPPINGS
    with torch.inference_mode():   # own handles (the fixture's stay referenced by pytest)
        a = m["NADALoadStyleGAN"]().load("a.safetensors", "cpu", "fp32")[0]
        b = m["NADALoadStyleGAN"]().load("b.safetensors", "cpu", "fp32")[0]
        (lat,) = m["NADASampleW"]().sample(a, 5, 3, 0.7)
    dash.remember_blend_inputs("12", [a, b, a], lat)
    out = dash.blend_preview("12", [0.25, 0.75], count=4)
    assert out["latents"] == "node" and len(out["frames"]) == 2
    assert _decode(out["frames"][0]["image"]).shape == (32, 96, 3)  # count capped by the 3 latents
    del a, b, lat, out
    gc.collect()
    with pytest.raises(LookupError, match="no longer in memory"):
        dash.blend_preview("12", [0.5])


def test_blend_memory_is_bounded(comfy, two_generators):
    dash = _dash(comfy)
    a, b = two_generators
    for i in range(dash.BLEND_MAX_NODES + 5):
        dash.remember_blend_inputs(str(i), [a, b])
    assert len(dash._blend) == dash.BLEND_MAX_NODES
    dash.remember_blend_inputs(None, [a, b])           # nodes run outside ComfyUI: nothing recorded
    assert len(dash._blend) == dash.BLEND_MAX_NODES


# ------------------------------------------------------------------------- the JS files
def test_web_folder_holds_only_extension_js():
    """Every .js under web/ is loaded by ComfyUI as an extension: no tests or vendored code there."""
    names = {p.relative_to(ROOT / "web").as_posix() for p in WEB_JS}
    assert {"js/nada_dashboard.js", "js/dashboard_core.js", "js/nada_blend_preview.js"} <= names
    for p in WEB_JS:
        assert not re.search(r"\.(test|spec)\.js$", p.name), p
        text = p.read_text(encoding="utf-8")
        assert "node:test" not in text and "require(" not in text, p


def test_extension_imports_comfyui_scripts_from_the_right_place():
    """web/js/x.js is served as /extensions/<pack>/js/x.js: ComfyUI's scripts are three levels up."""
    for p in WEB_JS:
        for spec in re.findall(r"""^import .* from ["']([^"']+)["'];?$""", p.read_text(encoding="utf-8"), re.M):
            if "scripts/" in spec:
                assert spec in ("../../../scripts/app.js", "../../../scripts/api.js"), (p.name, spec)
            else:
                assert spec.startswith("./") and (p.parent / spec).is_file(), (p.name, spec)
    core = (ROOT / "web" / "js" / "dashboard_core.js").read_text(encoding="utf-8")
    assert "scripts/" not in core and "document" not in core and "window" not in core   # importable by node


def test_one_web_directory_declared():
    init = (ROOT / "__init__.py").read_text(encoding="utf-8")
    assert 'WEB_DIRECTORY = "./web"' in init
    py = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert not re.search(r"^\s*web\s*=", py, re.M), "declare the web folder once (WEB_DIRECTORY)"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.parametrize("path", WEB_JS + sorted((ROOT / "tests" / "js").rglob("*.mjs")),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_js_syntax(path):
    r = subprocess.run([NODE, "--check", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_js_unit_tests():
    r = subprocess.run([NODE, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"# fail 0", r.stdout), r.stdout[-2000:]
