"""End-to-end: the pack in a real ComfyUI, driven in Debian's headless chromium.

Skipped unless NADA_E2E_COMFYUI points at a ComfyUI checkout (a folder with main.py; it must
support --base-directory) and chromium + playwright-core are there. Run:

    npm install                                   # playwright-core only, no browser download
    apt-get install chromium                      # Debian's chromium (or NADA_E2E_CHROMIUM=...)
    NADA_E2E_COMFYUI=/path/to/ComfyUI NADA_E2E_PYTHON=/path/to/comfy-venv/bin/python \\
        pytest -m e2e tests/test_e2e_comfyui.py -s

The test makes a throw-away ComfyUI base directory (custom_nodes/stylegan_nada -> this checkout,
a small random generator in models/stylegan), starts `main.py --cpu` on a free port, and runs
tests/js/e2e/run_e2e.mjs: every example loads without missing nodes and keeps its widget values;
the text-adaptation example (with stand-in models: the random generator and untrained CLIP
weights, so nothing is downloaded) is queued and the dashboard must update live, survive a page
reload mid-training, end as 'done' with every iteration, and clean up when the node is removed.
Screenshots and result.json go to NADA_E2E_OUT (default: a pytest tmp dir). With
NADA_E2E_UPDATE_ASSETS=1 the screenshots also refresh docs/*.png and the examples' .jpg thumbnails.
All four examples run (image inputs as shipped; the inversion and transition examples load the
generator the image-guided example saved), Cancel is tested, the node search is tried, and every
failed request or console error that is not ComfyUI's own fails the test.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMFY = os.environ.get("NADA_E2E_COMFYUI", "")
CHROMIUM = os.environ.get("NADA_E2E_CHROMIUM", "/usr/bin/chromium")
PYTHON = os.environ.get("NADA_E2E_PYTHON", sys.executable)
MODEL_NAME = "nada_test_64px_random.safetensors"
MODEL_B_NAME = "nada_test_64px_random_b.safetensors"
PACK = Path(os.environ.get("NADA_E2E_PACK") or ROOT)   # the checkout installed into ComfyUI

pytestmark = pytest.mark.e2e


def _skip_reason() -> str | None:
    if not COMFY:
        return "set NADA_E2E_COMFYUI=/path/to/ComfyUI to run the end-to-end test"
    if not (Path(COMFY) / "main.py").is_file():
        return f"NADA_E2E_COMFYUI={COMFY} has no main.py"
    if "--base-directory" not in (Path(COMFY) / "comfy" / "cli_args.py").read_text(errors="ignore"):
        return "this ComfyUI has no --base-directory option (needs ComfyUI >= 0.3.10)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set NADA_E2E_CHROMIUM)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PACK / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (npm install)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _write_test_generator(path: Path, seed: int = 0) -> None:
    import torch
    from nada_ops.stylegan.config import StyleGAN2Config
    from nada_ops.stylegan.io import save_generator
    from nada_ops.stylegan.networks import Generator
    torch.manual_seed(seed)
    cfg = StyleGAN2Config(img_resolution=64, z_dim=128, w_dim=128, channel_base=4096, channel_max=128,
                          num_mapping_layers=4)
    save_generator(Generator(cfg).eval(), str(path), {"note": "random generator for the end-to-end test"})


def _write_example_stand_ins(base: Path) -> None:
    """Small stand-ins under the other examples' own file names (formats are read from the content):
    NVIDIA's AFHQ dog model, a StyleGAN3 pickle in NVIDIA's real structure, an e4e checkpoint in the
    authors' format that belongs to the stand-in generator, a clip2latent prior in the pack's format."""
    import shutil

    import torch
    from nada_ops.stylegan.io import load_generator
    from nada_ops.stylegan.networks import estimate_w_avg
    sys.path.insert(0, str(ROOT / "tests"))
    from sg3_helpers import tiny_sg3
    from writers.encoders import write_encoder_checkpoint
    from writers.nvidia_pickle import write_stylegan3_pickle
    sg = base / "models" / "stylegan"
    shutil.copy(sg / MODEL_NAME, sg / "afhqdog.pkl")
    G3 = tiny_sg3("t", seed=11, img_resolution=64, num_layers=4, num_critical=1, margin_size=2)
    with torch.no_grad():
        G3.mapping.w_avg.copy_(estimate_w_avg(G3, 256))
    write_stylegan3_pickle(G3, sg / "stylegan3-t-ffhqu-256x256.pkl", base / "module_src_was_executed")
    (base / "models" / "stylegan_encoders").mkdir(parents=True, exist_ok=True)
    write_encoder_checkpoint(base / "models" / "stylegan_encoders" / "e4e_ffhq_encode.pt", "Encoder4Editing",
                             load_generator(sg / MODEL_NAME).G, resolution=64)
    # a small untrained clip2latent prior for the stand-in generator and CLIP ViT-B/32 (512-d embeddings)
    from nada_ops.prior.config import PriorConfig
    from nada_ops.prior.formats import write_prior
    from nada_ops.prior.model import new_prior
    G = load_generator(sg / MODEL_NAME).G
    cfg = PriorConfig.preset("tiny", latent_dim=G.cfg.w_dim, cond_dim=512, dim=32, dim_head=16, depth=1)
    prior = new_prior(cfg, G.w_avg.clone(), torch.ones(G.cfg.w_dim), seed=0, name="stand-in",
                      provenance={"clip": {"name": "ViT-B-32", "embed_dim": 512},
                                  "generator": {"num_ws": G.cfg.num_ws}})
    (base / "models" / "stylegan_priors").mkdir(parents=True, exist_ok=True)
    write_prior(prior, base / "models" / "stylegan_priors" / "stylegan2-ffhq-1024x1024-vitb32.safetensors")


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    os.symlink(PACK, base / "custom_nodes" / "stylegan_nada")
    (base / "models" / "stylegan").mkdir(parents=True)
    for d in ("input", "output", "user", "temp"):
        (base / d).mkdir()
    # a returning user: no template browser popping up over the first screenshots
    (base / "user" / "default").mkdir()
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    _write_test_generator(base / "models" / "stylegan" / MODEL_NAME)
    _write_test_generator(base / "models" / "stylegan" / MODEL_B_NAME, seed=1)
    _write_example_stand_ins(base)
    port = _free_port()
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen(
        [PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
         "--disable-auto-launch", "--database-url", "sqlite:///:memory:"],
        cwd=COMFY, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited ({proc.returncode}):\n{(base / 'comfyui.log').read_text()[-4000:]}")
            try:
                info = _get(f"{url}/object_info/NADAAdaptGenerator")
                if "NADAAdaptGenerator" in info:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"ComfyUI did not come up:\n{(base / 'comfyui.log').read_text()[-4000:]}")
            time.sleep(2)
        yield {"url": url, "base": base, "log": base / "comfyui.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_pack_loads_without_import_errors(comfyui):
    text = comfyui["log"].read_text(errors="ignore")
    bad = [line for line in text.splitlines()
           if "stylegan_nada" in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not bad, "\n".join(bad)
    info = _get(f"{comfyui['url']}/object_info")
    pack_ids = [k for k in info if k.startswith("NADA")]
    assert "NADAAdaptGenerator" in pack_ids and "NADALoadStyleGAN" in pack_ids
    exts = _get(f"{comfyui['url']}/extensions")
    assert any(e.endswith("/stylegan_nada/js/nada_dashboard.js") for e in exts), exts


def test_dashboard_in_real_browser(comfyui, tmp_path):
    out = Path(os.environ.get("NADA_E2E_OUT") or tmp_path / "e2e")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NADA_E2E_URL": comfyui["url"], "NADA_E2E_OUT": str(out), "NADA_E2E_CHROMIUM": CHROMIUM,
           "NADA_E2E_MODEL": MODEL_NAME, "NADA_E2E_MODEL_B": MODEL_B_NAME}
    r = subprocess.run(["node", str(PACK / "tests" / "js" / "e2e" / "run_e2e.mjs")], cwd=PACK, env=env,
                       capture_output=True, text=True, timeout=int(os.environ.get("NADA_E2E_TIMEOUT_TOTAL", 2400)))
    print(r.stdout[-6000:])
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {"checks": []}
    failed = [c for c in result["checks"] if not c["ok"]]
    assert r.returncode == 0 and not failed, (
        f"e2e failed (screenshots in {out}):\n" + "\n".join(f"{c['name']}: {c['detail']}" for c in failed)
        + f"\n{r.stderr[-3000:]}\nComfyUI log tail:\n{comfyui['log'].read_text(errors='ignore')[-3000:]}")
    for sk in result.get("skipped", []):
        print(f"SKIPPED: {sk['name']}: {sk['why']}")
    # Cancel: the server log names the file that keeps the trained iterations
    log_text = comfyui["log"].read_text(errors="ignore")
    msg = (out / "cancel_message.txt").read_text() if (out / "cancel_message.txt").exists() else ""
    saved = msg.split("models/stylegan/")[-1].split(" ")[0] if "models/stylegan/" in msg else "?"
    assert saved != "?" and saved in log_text.replace("\\", "/"), (msg, log_text[-2000:])
    assert (comfyui["base"] / "models" / "stylegan" / saved).is_file()
    # the video core Save Video wrote embeds the workflow (as core video saving does)
    import av
    v = json.loads((out / "saved_video.json").read_text())
    mp4 = comfyui["base"] / "output" / v["subfolder"] / v["filename"]
    with av.open(str(mp4)) as c:
        meta = dict(c.metadata)
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 12 and json.loads(meta["workflow"])["nodes"] and "prompt" in meta
    if os.environ.get("NADA_E2E_UPDATE_ASSETS") == "1":
        update_assets(out)


def update_assets(out: Path) -> None:
    """Screenshots -> docs/*.png (shrunk) and example_workflows/<name>.jpg thumbnails."""
    from PIL import Image
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    for src, dst, width in (("dashboard_panel_training.png", "dashboard_panel_training.png", None),
                            ("dashboard_panel_done.png", "dashboard_panel_done.png", None),
                            ("dashboard_1_training.png", "dashboard_training.png", 1200),
                            ("dashboard_1b_after_reload.png", "dashboard_after_reload.png", 1200),
                            ("dashboard_2_done.png", "dashboard_done.png", 1200),
                            ("dashboard_panel_cancelled.png", "dashboard_panel_cancelled.png", None),
                            ("blend_preview_widget.png", "t_preview_widget.png", None)):
        p = out / src
        if not p.exists():
            continue
        im = Image.open(p).convert("RGB")
        if width and im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        im.save(docs / dst, optimize=True)
    thumbnails(out)


def _cards():
    """tools/cards.py: the drawing primitives of the example cards."""
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    import cards
    return cards


def _font(size, bold=False):
    return _cards().font(size, bold)


def thumbnails(out: Path) -> None:
    """640x360 template-browser cards for the examples this test runs (the issue-5 examples keep
    their own drawings): a title, the real dashboard panel or the loaded graph, a caption."""
    from PIL import Image, ImageDraw
    bg = (32, 32, 36)

    def card(title, caption, shot, box):
        im = Image.new("RGB", (640, 360), bg)
        d = ImageDraw.Draw(im)
        d.text((20, 14), title, fill=(240, 240, 240), font=_font(22, bold=True))
        src = Image.open(shot).convert("RGB")
        if box:
            src = src.crop(box)
        src.thumbnail((600, 262), Image.LANCZOS)
        im.paste(src, ((640 - src.width) // 2, 52))
        d.text((20, 326), caption, fill=(200, 200, 200), font=_font(14))
        return im

    panel = out / "dashboard_panel_done.png"
    if panel.exists():
        im = Image.new("RGB", (640, 360), bg)
        d = ImageDraw.Draw(im)
        d.text((20, 14), "Text-guided adaptation: photo -> zombie", fill=(240, 240, 240), font=_font(22, bold=True))
        src = Image.open(panel).convert("RGB")
        src.thumbnail((326, 290), Image.LANCZOS)
        im.paste(src, (20, 56))
        y = 70
        for line in ("Live dashboard on Adapt Generator:", "- iterations, loss, ETA", "- loss curve",
                     "- layers chosen per iteration", "  (adaptive freezing heat map)", "- latest preview:",
                     "  source row / adapted row", "", "Paper settings: lr 0.002, batch 2,", "300 iterations, k = 2/3"):
            d.text((364, y), line, fill=(210, 210, 210), font=_font(14))
            y += 24
        im.save(ROOT / "example_workflows" / "text_adaptation.jpg", quality=85, optimize=True)
    image_guided_card().save(ROOT / "example_workflows" / "image_guided_adaptation.jpg", quality=85, optimize=True)


def image_guided_card():
    """A drawn card: a few style images -> CLIP direction -> Adapt Generator -> adapted samples."""
    from PIL import Image
    cards = _cards()
    im, d = cards.canvas("Image-guided (few-shot) adaptation")

    # the example's own style images (example_inputs/pencil_sketch)
    sketches = sorted((ROOT / "example_inputs" / "pencil_sketch").glob("*.png"))[:3]
    for i, f in enumerate(sketches):
        sk = Image.open(f).convert("RGB").resize((96, 96), Image.LANCZOS)
        im.paste(sk, (24 + i * 12, 70 + i * 34))
        d.rectangle((24 + i * 12, 70 + i * 34, 120 + i * 12, 166 + i * 34), outline=(200, 200, 200))
    d.text((24, 250), "a few style images", fill=(210, 210, 210), font=_font(14))
    d.text((24, 270), "(Load Images from Folder)", fill=(160, 160, 160), font=_font(12))

    def box(*a):
        cards.box(d, *a)

    def arrow(*a):
        cards.arrow(d, *a)

    arrow(150, 182, 150)
    box(186, 110, 140, 80, "CLIP Direction", "16 generated source\nsamples -> your images")
    arrow(328, 360, 150)
    box(364, 110, 120, 80, "Adapt", "all layers, 300 it.\nno style mixing")
    arrow(486, 518, 150)
    for i in range(2):                      # adapted samples: drawn as sketch-like tiles
        for j in range(2):
            x, y = 522 + j * 52, 100 + i * 52
            d.rectangle((x, y, x + 48, y + 48), fill=(236, 236, 232), outline=(200, 200, 200))
            d.ellipse((x + 12, y + 8, x + 36, y + 40), outline=(70, 70, 70), width=2)
            for k in range(4):
                d.line((x + 14 + 5 * k, y + 10, x + 10 + 5 * k, y + 20), fill=(120, 120, 120))
    d.text((508, 210), "adapted samples", fill=(210, 210, 210), font=_font(13))
    d.text((20, 326), "four pencil sketches -> a pencil-sketch generator (paper, supplement C)",
           fill=(200, 200, 200), font=_font(14))
    return im
