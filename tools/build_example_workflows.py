"""Write the example workflows (example_workflows/*.json, ComfyUI's UI format) from the node
definitions, so that widget values, sockets and links always match the nodes.

Run after changing a node's inputs or an example: python tools/build_example_workflows.py
(tests/test_examples.py checks the committed files against the nodes; the thumbnails are
made by the end-to-end test with NADA_E2E_UPDATE_ASSETS=1).

Layout: every example fits a 1600 x 1000 browser window at its saved zoom (clear of ComfyUI's
bars and minimap), nodes never overlap (title bars included), each node is at least as large as
ComfyUI makes it, and nothing sits below Adapt Generator (its panel grows when training starts).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "example_workflows"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
TITLE_H = 30          # LiteGraph title bar (not part of a node's size)
SLOT_H = 20           # one input/output row
WIDGET_H = 24         # one widget row (20 + 4 spacing)
# What the saved view must fit into, in canvas pixels: a 1600 x 1000 browser window minus ComfyUI's
# side bar (~70 px) and top bars (~80 px), and above its minimap (bottom right, ~300 px tall).
VIEW = (1500, 620)
#: Nodes whose training panel grows when a run starts: nothing may sit below them.
PANEL_NODES = ("NADAAdaptGenerator", "NADATrainLatentMapper")

SOURCE = "stylegan2-ffhq-1024x1024.pkl"
ADAPTED = "nada/pencil_sketch_00001.safetensors"
CLIP_FILES = {
    "ViT-B-32": ("ViT-B-32-openai.safetensors",
                 "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"),
    "ViT-B-16": ("ViT-B-16-openai.safetensors",
                 "https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_model.safetensors"),
}

# Core ComfyUI nodes used by the examples: (socket inputs, outputs, widgets with defaults)
CORE = {
    "SaveImage": ([("images", "IMAGE")], [], [("filename_prefix", "ComfyUI")]),
    "PreviewImage": ([("images", "IMAGE")], [], []),
    "SaveVideo": ([("video", "VIDEO")], [], [("filename_prefix", "video/ComfyUI"), ("format", "auto"),
                                            ("codec", "auto")]),
}


def load_pack():
    name = "nada_pack_for_examples"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name].NODE_CLASS_MAPPINGS


def node_widgets(cls) -> list[tuple[str | None, object]]:
    """(name, default) in the order ComfyUI's front end lays the widgets out; an INT with
    control_after_generate is followed by its control combo (name None)."""
    out = []
    types = cls.INPUT_TYPES()
    for part in ("required", "optional"):
        for name, spec in types.get(part, {}).items():
            t, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(t, (list, tuple)) or t in WIDGET_TYPES:
                default = opts.get("default", t[0] if isinstance(t, (list, tuple)) and t else None)
                out.append((name, default))
                if t == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
                    out.append((None, "fixed"))
    return out


def node_sockets(cls) -> list[tuple[str, str]]:
    types = cls.INPUT_TYPES()
    out = []
    for part in ("required", "optional"):
        for name, spec in types.get(part, {}).items():
            t = spec[0]
            if not (isinstance(t, (list, tuple)) or t in WIDGET_TYPES):
                out.append((name, t))
    return out


class Workflow:
    def __init__(self, mappings, scale: float):
        self.m = mappings
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.scale = scale            # at most; finish() zooms out until everything fits
        self.offset = [0, 0]

    def add(self, type_, pos, size=None, widgets=None, inputs=None, title=None, models=None, min_height=0):
        """``inputs``: {socket name: (source node dict, output index)}; ``widgets``: {name: value}."""
        nid = len(self.nodes) + 1
        widgets = dict(widgets or {})
        if type_ in self.m:
            cls = self.m[type_]
            wl = node_widgets(cls)
            names = [n for n, _ in wl if n is not None]
            unknown = set(widgets) - set(names)
            assert not unknown, (type_, unknown)
            values = [widgets.get(n, d) if n is not None else "fixed" for n, d in wl]
            sockets = node_sockets(cls)
            outs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))
            n_widgets = len(names)
        elif type_ in CORE:
            sock, outs, wl = CORE[type_]
            sockets = sock
            values = [widgets.get(n, d) for n, d in wl]
            n_widgets = len(wl)
        else:   # MarkdownNote
            sockets, outs, values, n_widgets = [], [], [widgets["text"]], 0
        rows = max(len(sockets), len(outs))
        auto_h = rows * SLOT_H + n_widgets * WIDGET_H + 12 + min_height
        w, h = size if size else (320, auto_h)
        node = {"id": nid, "type": type_, "pos": list(pos), "size": [w, max(h, auto_h)], "flags": {},
                "order": 0, "mode": 0,
                "inputs": [{"name": n, "type": t, "link": None} for n, t in sockets],
                "outputs": [{"name": n, "type": t, "links": []} for n, t in outs],
                "properties": {"Node name for S&R": type_} if type_ != "MarkdownNote" else {},
                "widgets_values": values}
        if models:
            node["properties"]["models"] = models
        if title:
            node["title"] = title
        self.nodes.append(node)
        for name, (src, slot) in (inputs or {}).items():
            self.connect(src, slot, node, name)
        return node

    def connect(self, src, slot, dst, name):
        lid = len(self.links) + 1
        di = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == name)
        t = src["outputs"][slot]["type"]
        assert dst["inputs"][di]["type"] in (t, "*"), (dst["type"], name, t)
        dst["inputs"][di]["link"] = lid
        src["outputs"][slot]["links"].append(lid)
        src["outputs"][slot]["slot_index"] = slot
        self.links.append([lid, src["id"], slot, dst["id"], di, t])

    def below(self, node, gap=40):
        """Position under ``node`` (its title bar and body), same column."""
        return [node["pos"][0], node["pos"][1] + node["size"][1] + TITLE_H + gap]

    def extent(self) -> tuple[float, float, float, float]:
        """Bounding box of all nodes, title bars included: (x0, y0, x1, y1)."""
        x0 = min(n["pos"][0] for n in self.nodes)
        y0 = min(n["pos"][1] - TITLE_H for n in self.nodes)
        x1 = max(n["pos"][0] + n["size"][0] for n in self.nodes)
        y1 = max(n["pos"][1] + n["size"][1] for n in self.nodes)
        return x0, y0, x1, y1

    def finish(self) -> dict:
        # the training panel grows when a run starts: nothing may sit below Adapt Generator
        for a in (n for n in self.nodes if n["type"] in PANEL_NODES):
            below = [n["type"] for n in self.nodes if n is not a and n["pos"][1] > a["pos"][1]
                     and n["pos"][0] < a["pos"][0] + a["size"][0] and a["pos"][0] < n["pos"][0] + n["size"][0]]
            assert not below, f"nodes below {a['type']} would be covered when its panel grows: {below}"
        # the saved view shows the whole graph (with a margin)
        x0, y0, x1, y1 = self.extent()
        self.scale = min(self.scale, int(min(VIEW[0] / (x1 - x0 + 40), VIEW[1] / (y1 - y0 + 40)) * 100) / 100)
        self.offset = [round(20 / self.scale - x0), round(20 / self.scale - y0)]
        # execution order: topological over the links
        deps = {n["id"]: {l[1] for l in self.links if l[3] == n["id"]} for n in self.nodes}
        order, done = [], set()
        while len(order) < len(self.nodes):
            ready = [i for i in sorted(deps) if i not in done and deps[i] <= done]
            assert ready, "cycle"
            for i in ready:
                order.append(i)
                done.add(i)
        for n in self.nodes:
            n["order"] = order.index(n["id"])
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": self.scale, "offset": self.offset}}, "version": 0.4}


def clip_loader(wf, pos, both=True, title=None):
    a_file, a_url = CLIP_FILES["ViT-B-32"]
    b_file, b_url = CLIP_FILES["ViT-B-16"]
    models = [{"name": a_file, "url": a_url, "directory": "open_clip"}]
    widgets = {"clip_a": "ViT-B-32", "weights_a": a_file, "weight_a": 1.0}
    if both:
        models.append({"name": b_file, "url": b_url, "directory": "open_clip"})
        widgets.update({"clip_b": "ViT-B-16", "weights_b": b_file, "weight_b": 1.0})
    else:
        widgets.update({"clip_b": "none", "weights_b": "auto", "weight_b": 0.0})
    return wf.add("NADALoadCLIP", pos, widgets=widgets, models=models, title=title)


MODELS_NOTE = f"""**Model files**: with internet access nothing to do: *Load StyleGAN* downloads `{SOURCE}` into
`ComfyUI/models/stylegan/` on the first run (it is in the pack's catalogue) and *Load CLIP* the CLIP weights into
`ComfyUI/models/open_clip/`. Offline, put them in place, then press *R* to refresh the lists:

- `ComfyUI/models/stylegan/{SOURCE}`: NVIDIA's StyleGAN2 FFHQ 1024 px generator in the PyTorch format (published
  with the *stylegan3* release, NVIDIA NGC catalog:
  `https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/{SOURCE}`; NVIDIA Source Code
  License-NC, non-commercial). Any other StyleGAN2 generator works too: `ffhq.pkl` of *stylegan2-ada-pytorch*, a
  rosinality / StyleGAN-NADA `.pt` (e.g. `stylegan2-ffhq-config-f.pt`), the TensorFlow pickles of the original
  StyleGAN2 release, or a `.safetensors` saved by this pack. Pickles are read without running any code from them.
- `ComfyUI/models/open_clip/`: OpenAI's CLIP weights as safetensors, `{CLIP_FILES['ViT-B-32'][0]}` and
  `{CLIP_FILES['ViT-B-16'][0]}` (ComfyUI offers to download them when the workflow opens: they are open_clip's
  `open_clip_model.safetensors` from Hugging Face, `timm/vit_base_patch32_clip_224.openai` and
  `timm/vit_base_patch16_clip_224.openai`). OpenAI's own `ViT-B-32.pt` / `ViT-B-16.pt` work too (choose them in
  *Load CLIP*, or `auto`)."""


def text_adaptation(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 900], widgets={"text": f"""# Text-guided domain adaptation (StyleGAN-NADA)

Trains a copy of the generator so that its images move from *source_text* to *target_text* in CLIP space
(Gal et al. 2021). Press **Run** and watch *Adapt Generator*: loss curve, iterations and ETA, the latest preview
(top row: source, bottom row: adapted) and, with adaptive layer freezing, which W+ layers were trained at each
iteration.

{MODELS_NOTE}

**Typical settings (paper, sec. 4 and Table 3)**: learning rate 0.002, batch 2; iterations 50-300 for style and
texture (sketch, painting), 150-400 for identity and small shape changes (zombie, werewolf), ~2000 for animals;
style mixing 0.9 for most face styles, 0 for sketches, cubism and animals. Pick the matching preset in
*Layer Freeze Schedule* and set iterations / mixing on *Adapt Generator* to match.

On a GPU, 300 iterations at 1024 px take a few minutes; on a CPU lower the iterations or use a smaller model.
`save_every` keeps intermediate generators in `models/stylegan/nada-snapshots/` (the paper's advice: train long,
pick the best). Cancel keeps what was trained in `models/stylegan/nada-partial/`. An unchanged graph does not
retrain.

The adapted generator is saved to `models/stylegan/nada/` by *Save Generator* (it then appears in *Load StyleGAN*).
"""})
    gen = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": SOURCE})
    clip = clip_loader(wf, wf.below(gen))
    direction = wf.add("NADACLIPDirection", [830, 20], widgets={"source_text": "photo", "target_text": "zombie"},
                       inputs={"clip": (clip, 0)})
    sched = wf.add("NADALayerFreezeSchedule", wf.below(direction),
                   widgets={"preset": "identity / small shape (adaptive, 2/3 of layers)", "mode": "adaptive"})
    adapt = wf.add("NADAAdaptGenerator", [1190, 20], size=[400, 0],
                   widgets={"iterations": 300, "mixing_prob": 0.9, "save_every": 100},
                   inputs={"generator": (gen, 0), "clip": (clip, 0), "direction": (direction, 0),
                           "schedule": (sched, 0)})
    wf.add("NADASaveGenerator", [1630, 20], widgets={"filename_prefix": "nada/photo_to_zombie"},
           inputs={"generator": (adapt, 0)})
    lat = wf.add("NADASampleW", wf.below(sched), widgets={"seed": 0, "batch_size": 4, "truncation_psi": 0.7},
                 inputs={"generator": (gen, 0)}, title="Sample W (the same seeds for both)")
    src = wf.add("NADASynthesize", [1630, 200], widgets={"batch_size": 4},
                 inputs={"generator": (gen, 0), "latents": (lat, 0)}, title="Source images")
    ada = wf.add("NADASynthesize", wf.below(src), widgets={"batch_size": 4},
                 inputs={"generator": (adapt, 0), "latents": (lat, 0)}, title="Adapted images")
    wf.add("PreviewImage", [1990, 20], size=[320, 400], inputs={"images": (src, 0)}, title="Source samples")
    wf.add("SaveImage", [1990, 490], size=[320, 400], widgets={"filename_prefix": "nada/zombie"},
           inputs={"images": (ada, 0)}, title="Adapted samples (same seeds)")
    return wf.finish()


def image_guided_adaptation(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 900], widgets={"text": f"""# Image-guided (few-shot) adaptation

Instead of a text prompt, the target domain is given by a few example images (paper, supplement C): the CLIP
direction goes from the mean embedding of N generated source samples (N_s = 16) to the mean embedding of the
images. Use 1-10 images of one style (paintings of one artist, a cartoon style, ...).

**The style images**: *Load Images from Folder* reads every image of a folder. This example uses
`examples/pencil_sketch`, four pencil sketches of faces that come with the pack, so it runs as it is. For your own
style, make a folder `ComfyUI/input/<name>/`, put the images in it, press *R* and pick `input/<name>` (sizes may
differ: each image is made square at `size`).

{MODELS_NOTE}

**Settings**: sketch-like styles train all layers without style mixing (preset *sketch / painting*), 300
iterations at lr 0.002, batch 2. Watch the preview on *Adapt Generator* and Cancel when it looks right: what was
trained is kept in `models/stylegan/nada-partial/`. The result is saved as `models/stylegan/{ADAPTED}`, which the
inversion and transition examples use.
"""})
    gen = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": SOURCE})
    clip = clip_loader(wf, wf.below(gen), both=False)
    images = wf.add("NADALoadImages", wf.below(clip), widgets={"folder": "examples/pencil_sketch", "size": 224},
                    title="Load Images from Folder (the target style)")
    sched = wf.add("NADALayerFreezeSchedule", wf.below(images),
                   widgets={"preset": "sketch / painting (all layers, no mixing)", "mode": "all"})
    direction = wf.add("NADACLIPDirection", [830, 20], size=[340, 0],
                       widgets={"source_text": "photo", "target_text": "(unused: target_images connected)",
                                "templates": "single", "num_source_samples": 16},
                       inputs={"clip": (clip, 0), "target_images": (images, 0), "generator": (gen, 0)})
    adapt = wf.add("NADAAdaptGenerator", [1210, 20], size=[400, 0],
                   widgets={"iterations": 300, "mixing_prob": 0.0},
                   inputs={"generator": (gen, 0), "clip": (clip, 0), "direction": (direction, 0),
                           "schedule": (sched, 0)})
    wf.add("NADASaveGenerator", [1650, 20], widgets={"filename_prefix": ADAPTED.rsplit("_", 1)[0]},
           inputs={"generator": (adapt, 0)})
    lat = wf.add("NADASampleW", wf.below(direction), widgets={"seed": 0, "batch_size": 4, "truncation_psi": 0.7},
                 inputs={"generator": (gen, 0)})
    ada = wf.add("NADASynthesize", [1650, 200], widgets={"batch_size": 4},
                 inputs={"generator": (adapt, 0), "latents": (lat, 0)}, title="Adapted images")
    wf.add("SaveImage", wf.below(ada), size=[320, 400], widgets={"filename_prefix": "nada/pencil_sketch"},
           inputs={"images": (ada, 0)}, title="Adapted samples")
    return wf.finish()


def invert_photo_to_adapted(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 900], widgets={"text": f"""# A photo in an adapted domain

*Invert Image* finds the latents that make the **source** generator reproduce a photo (W: editable, W+: closer
match); because NADA keeps the latent spaces aligned, the same latents show the same person in the **adapted**
generator.

**The photo**: so that the example runs as it is, the "photo" is made in the graph (*Sample W* + *Synthesize*:
a face of the source generator). For your own photo, replace *The photo* with *Load Images from Folder*
(`input/<folder>` with your photos, `size` = the generator's resolution, 1024 for FFHQ) or core *Load Image*.
Crop and align it like the generator's training data (FFHQ: aligned faces, eyes level, face centred) or the
reconstruction will be poor.

{MODELS_NOTE}
- `ComfyUI/models/stylegan/{ADAPTED}`: the adapted generator, here the one the *image-guided adaptation* example
  saves (run it first), or any generator you adapted, or a StyleGAN-NADA checkpoint from the paper's authors
  (rosinality `.pt`, e.g. `sketch.pt`, `pixar.pt`): pick it in the second loader. Source and adapted model must
  have the same architecture.
- CLIP (`models/open_clip/`) is used here for the perceptual loss; delete *Load CLIP* for the pixel loss alone.
"""})
    src = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": SOURCE}, title="Load StyleGAN (source)")
    ada = wf.add("NADALoadStyleGAN", wf.below(src), widgets={"model": ADAPTED}, title="Load StyleGAN (adapted)")
    clip = clip_loader(wf, wf.below(ada), both=False)
    plat = wf.add("NADASampleW", [830, 20], widgets={"seed": 42, "batch_size": 1, "truncation_psi": 0.5},
                  inputs={"generator": (src, 0)}, title="Sample W (for the stand-in photo)")
    photo = wf.add("NADASynthesize", wf.below(plat), widgets={"batch_size": 1},
                   inputs={"generator": (src, 0), "latents": (plat, 0)}, title="The photo (replace with yours)")
    inv = wf.add("NADAInvertImage", [1190, 20], size=[360, 0],
                 widgets={"steps": 300, "mode": "W+"},
                 inputs={"generator": (src, 0), "image": (photo, 0), "clip": (clip, 0)})
    wf.add("PreviewImage", [1590, 20], size=[320, 360], inputs={"images": (inv, 1)},
           title="Reconstruction (source model)")
    out = wf.add("NADASynthesize", wf.below(inv), widgets={"batch_size": 1},
                 inputs={"generator": (ada, 0), "latents": (inv, 0)}, title="The photo in the adapted domain")
    wf.add("SaveImage", [1590, 450], size=[320, 380], widgets={"filename_prefix": "nada/photo_in_adapted_domain"},
           inputs={"images": (out, 0)})
    return wf.finish()


def transition_video(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 800], widgets={"text": f"""# Source -> adapted transition video

*Render Domain Transition* keeps the latents fixed and blends the generators' WEIGHTS from A to B (NADA
supplement F); add generator_c / generator_d for A -> B -> C tours, `loop` for seamless loops, `latents_end` or a
latent direction to move the latents too. The frames are encoded as they are rendered (memory does not grow with
the number of frames) and the H.264 video goes to core *Save Video* (which embeds this workflow in the MP4).
*Render Domain Transition* can also write the MP4 / WebP / GIF itself (`save_format`).

{MODELS_NOTE}
- `ComfyUI/models/stylegan/{ADAPTED}`: the adapted generator (saved by the *image-guided adaptation* example; or
  any adapted generator or StyleGAN-NADA `.pt` of the same architecture).

Batch rendering without the UI: `python -m nada_ops render-transition --generators A B --seeds 0-15 --frames 120
--out DIR/` (resumable; `--job jobs.json` for many runs).
"""})
    a = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": SOURCE}, title="Load StyleGAN (A: source)")
    b = wf.add("NADALoadStyleGAN", wf.below(a), widgets={"model": ADAPTED}, title="Load StyleGAN (B: adapted)")
    lat = wf.add("NADASampleW", wf.below(b), widgets={"seed": 7, "batch_size": 4, "truncation_psi": 0.7},
                 inputs={"generator": (a, 0)})
    rt = wf.add("NADARenderTransition", [830, 20], size=[380, 0],
                widgets={"frames": 96, "fps": 24.0, "save_format": "none", "filename_prefix": "nada/transition",
                         "return_frames": False},
                inputs={"generator_a": (a, 0), "generator_b": (b, 0), "latents": (lat, 0)})
    wf.add("SaveVideo", [1250, 20], size=[400, 480], widgets={"filename_prefix": "nada/transition"},
           inputs={"video": (rt, 2)})
    return wf.finish()

AFHQ_DOG = "afhqdog.pkl"
AFHQ_NOTE = f"""**Model files** (put them in place, then press *R* to refresh the lists):

- `ComfyUI/models/stylegan/{AFHQ_DOG}`: NVIDIA's StyleGAN2-ADA AFHQ Dog generator (512 px, PyTorch format) from
  the *stylegan2-ada-pytorch* pretrained networks:
  `https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/{AFHQ_DOG}`. Pickles are read without running
  any code from them.
- `ComfyUI/models/open_clip/`: OpenAI's CLIP weights as safetensors, `{CLIP_FILES['ViT-B-32'][0]}` and
  `{CLIP_FILES['ViT-B-16'][0]}` (ComfyUI offers to download them when the workflow opens: open_clip's
  `open_clip_model.safetensors` from Hugging Face, `timm/vit_base_patch32_clip_224.openai` and
  `timm/vit_base_patch16_clip_224.openai`). OpenAI's own `ViT-B-32.pt` / `ViT-B-16.pt` work too."""


def latent_mapper_dog_to_cat(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 940], widgets={"text": f"""# Dog -> cat: adapt, then mine with a latent mapper

Large shape changes need two stages (StyleGAN-NADA, sec. 4.3, Figs. 7 and 24):

1. **Adapt Generator** with the animal preset (*Layer Freeze Schedule*: adaptive, k = 3; 2000 iterations, no style
   mixing). The adapted generator makes cats, but some latents still give dog-like or in-between animals.
2. **Train Latent Mapper** on the adapted generator: a StyleCLIP latent mapper learns to move every latent to where
   the generator shows a cat (CLIP loss + lambda_L2 0.5 + the embedding-norm loss lambda_norm 0.2 of eq. 5, which
   keeps the CLIP embedding norms from growing; that growth comes with artefacts such as open mouths and big
   tongues). Its latents are sampled fresh every iteration: no dataset needed.

The same seeds are rendered with the adapted generator before and after the mapper (*Apply Latent Mapper*). Both
training nodes show their loss curve and preview while they run; Cancel keeps what was trained. The adapted
generator is saved to `models/stylegan/nada/`, the mapper to `models/stylegan_mappers/`
(*Load Latent Mapper* lists it; it also reads StyleCLIP's `.pt` mapper checkpoints).

{AFHQ_NOTE}

**Time**: on a GPU the adaptation takes several minutes and the mapper's 10,000 iterations about as long again
(StyleCLIP trains mappers for up to 50,000); on a CPU lower both a lot. Watch the previews.

Command line: `python -m nada_ops adapt ... --schedule adaptive --k 3 --mixing 0 --iterations 2000`, then
`python -m nada_ops mapper train --generator adapted.safetensors --target cat --out cat_mapper.safetensors` and
`python -m nada_ops mapper apply --mapper cat_mapper.safetensors --generator adapted.safetensors --seeds 0-7 --out
grid.png`.
"""})
    gen = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": AFHQ_DOG})
    clip = clip_loader(wf, wf.below(gen))
    lat = wf.add("NADASampleW", wf.below(clip), widgets={"seed": 0, "batch_size": 4, "truncation_psi": 0.7},
                 inputs={"generator": (gen, 0)}, title="Sample W (the same seeds before and after)")
    direction = wf.add("NADACLIPDirection", [830, 20], widgets={"source_text": "dog", "target_text": "cat"},
                       inputs={"clip": (clip, 0)})
    sched = wf.add("NADALayerFreezeSchedule", wf.below(direction),
                   widgets={"preset": "animal / large shape (adaptive k=3)", "mode": "adaptive", "k": 3})
    save_g = wf.add("NADASaveGenerator", wf.below(sched), widgets={"filename_prefix": "nada/dog_to_cat"})
    adapt = wf.add("NADAAdaptGenerator", [1190, 20], size=[400, 0],
                   widgets={"iterations": 2000, "mixing_prob": 0.0},
                   inputs={"generator": (gen, 0), "clip": (clip, 0), "direction": (direction, 0),
                           "schedule": (sched, 0)})
    wf.connect(adapt, 0, save_g, "generator")
    mapper = wf.add("NADATrainLatentMapper", [1630, 20], size=[400, 0], widgets={"target_text": "cat"},
                    inputs={"generator": (adapt, 0), "clip": (clip, 0)})
    wf.add("NADASaveLatentMapper", [2070, 20], widgets={"filename_prefix": "dog_to_cat"},
           inputs={"mapper": (mapper, 0)})
    mapped = wf.add("NADAApplyLatentMapper", [2070, 160], inputs={"mapper": (mapper, 0), "latents": (lat, 0)})
    before = wf.add("NADASynthesize", wf.below(mapped), widgets={"batch_size": 4},
                    inputs={"generator": (adapt, 0), "latents": (lat, 0)}, title="Adapted (before the mapper)")
    after = wf.add("NADASynthesize", wf.below(before), widgets={"batch_size": 4},
                   inputs={"generator": (adapt, 0), "latents": (mapped, 0)}, title="Adapted + mapper (after)")
    wf.add("PreviewImage", [2430, 20], size=[320, 330], inputs={"images": (before, 0)},
           title="Before the mapper")
    wf.add("SaveImage", [2430, 420], size=[320, 330], widgets={"filename_prefix": "nada/dog_to_cat_mapped"},
           inputs={"images": (after, 0)}, title="After the mapper (same seeds)")
    return wf.finish()


ENCODER = "e4e_ffhq_encode.pt"
#: Landmarks (5 points: eyes, nose tip, mouth corners) of a face that is already FFHQ-aligned at 1024 px:
#: the FFHQ rule maps exactly this face onto the whole 1024 x 1024 square.
ALIGNED_1024_LANDMARKS = "[[383.5, 484.9], [639.5, 484.9], [511.5, 620.0], [411.5, 750.9], [611.5, 750.9]]"


def encode_photo_to_adapted(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 900], widgets={"text": f"""# A photo in an adapted domain, in a second

*Align Face* crops the face like FFHQ, *Invert Image* with an **e4e encoder** turns it into W+ latents in one
pass (no optimization), and the same latents are rendered by the **source** generator (the reconstruction) and
by an **adapted** one; *Paste Face Back* puts the adapted face into the photo (the paper edits real photos this
way: ReStyle in sec. 5.2, e4e in the supplement).

**The photo**: so that the example runs as it is, the "photo" is made in the graph (a face of the source
generator, already aligned; the landmarks on *Align Face* are those of an aligned 1024 px face). For your own
photos: put them in `ComfyUI/input/<folder>/`, replace *The photo* with *Load Images from Folder* (`input/<folder>`,
`size` 1024-2048, `crop` *pad* so that the whole photo is kept), and clear the `landmarks` text so that dlib finds the face (`pip install dlib-bin`, and
dlib's `shape_predictor_68_face_landmarks.dat` in `ComfyUI/models/face_landmarks/`), or type the landmarks of your
photo (5 points: eyes, nose tip, mouth corners).

{MODELS_NOTE}
- `ComfyUI/models/stylegan_encoders/{ENCODER}`: the e4e FFHQ encoder of *encoder4editing* (its README links
  it). ReStyle's `restyle_e4e_ffhq_encode.pt` / `restyle_psp_ffhq_encode.pt` (method *ReStyle*) and pSp's
  `psp_ffhq_encode.pt` (method *pSp*) work too. Encoders are read without running code from the file. They
  belong to the FFHQ config-f generator they were trained with (`stylegan2-ffhq-config-f.pt`); the info output
  of *Invert Image* says when the connected generator is a different one.
- `ComfyUI/models/stylegan/{ADAPTED}`: the adapted generator (the *image-guided adaptation* example saves it), or
  any generator adapted from the same source, e.g. StyleGAN-NADA's released `.pt` models.

For a closer likeness set `refine_steps` (100-300 optimization steps from the encoder's latents).
"""})
    src = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": SOURCE}, title="Load StyleGAN (source)")
    ada = wf.add("NADALoadStyleGAN", wf.below(src), widgets={"model": ADAPTED}, title="Load StyleGAN (adapted)")
    plat = wf.add("NADASampleW", wf.below(ada), widgets={"seed": 42, "batch_size": 1, "truncation_psi": 0.5},
                  inputs={"generator": (src, 0)}, title="Sample W (for the stand-in photo)")
    photo = wf.add("NADASynthesize", wf.below(plat), widgets={"batch_size": 1},
                   inputs={"generator": (src, 0), "latents": (plat, 0)}, title="The photo (replace with yours)")
    align = wf.add("NADAAlignFace", [830, 20], size=[340, 0],
                   widgets={"size": 1024, "landmarks": ALIGNED_1024_LANDMARKS}, inputs={"image": (photo, 0)})
    inv = wf.add("NADAInvertImage", [1210, 20], size=[360, 0],
                 widgets={"method": "e4e", "encoder": ENCODER, "mode": "W+"},
                 inputs={"generator": (src, 0), "image": (align, 0)})
    out = wf.add("NADASynthesize", wf.below(align), widgets={"batch_size": 1},
                 inputs={"generator": (ada, 0), "latents": (inv, 0)}, title="The photo in the adapted domain")
    paste = wf.add("NADAPasteFace", wf.below(out), size=[340, 0],
                   inputs={"photo": (photo, 0), "face": (out, 0), "transform": (align, 1)})
    wf.add("PreviewImage", [1610, 20], size=[300, 330], inputs={"images": (inv, 1)},
           title="Reconstruction (source model)")
    wf.add("SaveImage", [1610, 400], size=[300, 330], widgets={"filename_prefix": "nada/encoded_in_adapted_domain"},
           inputs={"images": (out, 0)}, title="Adapted (same latents)")
    wf.add("SaveImage", wf.below(inv), size=[360, 330], widgets={"filename_prefix": "nada/pasted_into_photo"},
           inputs={"images": (paste, 0)}, title="Pasted into the photo")
    return wf.finish()


SG3_SOURCE = "stylegan3-t-ffhqu-256x256.pkl"
SG3_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"


def stylegan3_adaptation(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[420, 900], widgets={"text": f"""# StyleGAN3: sample, adapt, transition

NVIDIA's alias-free StyleGAN3 (config T: translation equivariant, R: also rotation) with this pack's own
implementation: sample it (the *Synthesize Images* widgets translate / rotate the Fourier-feature input, like
NVIDIA's visualiser), adapt it with a text prompt and layer freezing, and render a source -> adapted transition.

**StyleGAN3 generator** in `ComfyUI/models/stylegan/`: NVIDIA's published pickles (NGC catalog,
`{SG3_NGC}<file>`):
- `{SG3_SOURCE}` (FFHQ-U faces, 256 px: quick to adapt), `stylegan3-r-ffhqu-256x256.pkl`
- `stylegan3-t-ffhqu-1024x1024.pkl`, `stylegan3-r-ffhqu-1024x1024.pkl`, `stylegan3-t-ffhq-1024x1024.pkl`
- `stylegan3-t-metfacesu-1024x1024.pkl`, `stylegan3-r-metfacesu-1024x1024.pkl` (MetFaces-U portraits)
- `stylegan3-t-afhqv2-512x512.pkl`, `stylegan3-r-afhqv2-512x512.pkl` (AFHQv2 cats, dogs, wild animals)

or community StyleGAN3 pickles (e.g. a 256 px LHQ landscape model). They are read without running any code from
them; pick yours in *Load StyleGAN* and in *Render Domain Transition* the adapted one follows by itself.

**CLIP** in `ComfyUI/models/open_clip/`: `{CLIP_FILES['ViT-B-32'][0]}` and `{CLIP_FILES['ViT-B-16'][0]}`
(ComfyUI offers the download when the workflow opens).

**Layer freezing on StyleGAN3**: 16 W+ entries at every resolution (0: the Fourier input, 1-14: layers L0-L13,
15: ToRGB; the input and ToRGB stay frozen). The preset here trains only the fine layers (textures and colours)
and keeps pose and geometry; *texture / style (all layers)* changes more, the adaptive presets pick layers per
iteration as in the paper.
"""})
    gen = wf.add("NADALoadStyleGAN", [470, 20], widgets={"model": SG3_SOURCE}, title="Load StyleGAN (StyleGAN3)")
    clip = clip_loader(wf, wf.below(gen))
    lat = wf.add("NADASampleW", wf.below(clip), widgets={"seed": 0, "batch_size": 4, "truncation_psi": 0.7},
                 inputs={"generator": (gen, 0)})
    direction = wf.add("NADACLIPDirection", [830, 20],
                       widgets={"source_text": "photo", "target_text": "watercolor painting"},
                       inputs={"clip": (clip, 0)})
    sched = wf.add("NADALayerFreezeSchedule", wf.below(direction),
                   widgets={"preset": "StyleGAN3: fine layers only (keep pose and geometry)", "mode": "manual",
                            "manual_layers": "fine"})
    src = wf.add("NADASynthesize", wf.below(sched), widgets={"batch_size": 4, "rotate": 10.0},
                 inputs={"generator": (gen, 0), "latents": (lat, 0)}, title="Source images (input rotated 10 deg)")
    adapt = wf.add("NADAAdaptGenerator", [1190, 20], size=[400, 0],
                   widgets={"iterations": 200, "mixing_prob": 0.0},
                   inputs={"generator": (gen, 0), "clip": (clip, 0), "direction": (direction, 0),
                           "schedule": (sched, 0)})
    wf.add("NADASaveGenerator", [1630, 20], widgets={"filename_prefix": "nada/stylegan3_watercolor"},
           inputs={"generator": (adapt, 0)})
    ada = wf.add("NADASynthesize", [1630, 200], widgets={"batch_size": 4},
                 inputs={"generator": (adapt, 0), "latents": (lat, 0)}, title="Adapted images")
    rt = wf.add("NADARenderTransition", wf.below(ada), size=[340, 0],
                widgets={"frames": 48, "fps": 24.0, "save_format": "none", "filename_prefix": "nada/sg3_transition",
                         "return_frames": False},
                inputs={"generator_a": (gen, 0), "generator_b": (adapt, 0), "latents": (lat, 0)})
    wf.add("PreviewImage", [2010, 20], size=[320, 330], inputs={"images": (src, 0)}, title="Source samples")
    wf.add("SaveImage", wf.below(wf.nodes[-1]), size=[320, 330], widgets={"filename_prefix": "nada/sg3_watercolor"},
           inputs={"images": (ada, 0)}, title="Adapted samples (same seeds)")
    wf.add("SaveVideo", [2370, 20], size=[360, 420], widgets={"filename_prefix": "nada/sg3_transition"},
           inputs={"video": (rt, 2)})
    return wf.finish()


PRIOR_FILE = "stylegan2-ffhq-1024x1024-vitb32.safetensors"
ZOMBIE = "nada/photo_to_zombie_00001.safetensors"


def text_to_image_prior(m):
    wf = Workflow(m, scale=0.8)
    wf.add("MarkdownNote", [20, 20], size=[440, 980], widgets={"text": f"""# Text -> image with any generator (clip2latent)

A clip2latent prior (Pinkney & Li 2022) turns the CLIP embedding of a prompt into latents of the generator it was
trained on. StyleGAN-NADA keeps adapted generators in the source's latent space, so the SAME latents render the
prompt with the source and with every generator adapted from it: here the source, the pencil-sketch and the zombie
generators of the other examples, side by side.

*Text to Latents*: guidance 2 and 25 steps as in the paper; each kept latent is the best of `candidates` by CLIP
similarity to the prompt (the paper draws 16; fewer is faster). `truncation` < 1 gives cleaner, less varied faces;
`mix_crossover` 8 varies colours and fine texture.

{MODELS_NOTE}
- `ComfyUI/models/stylegan/{ADAPTED}` (the *image-guided adaptation* example saves it) and
  `ComfyUI/models/stylegan/{ZOMBIE}` (the *text adaptation* example saves it), or any generators adapted from
  the same source.
- `ComfyUI/models/stylegan_priors/{PRIOR_FILE}`: the prior, made once from the source generator with the pack's
  command line (pairs streamed to disk, training resumable; the paper: 1M pairs, ~500k steps, about 9 h on an
  A100):

  `python -m nada_ops prior make-pairs --generator ComfyUI/models/stylegan/{SOURCE} --clip-dir ComfyUI/models/open_clip --out pairs/ffhq`

  `python -m nada_ops prior train --pairs pairs/ffhq --work runs/ffhq-prior --generator ComfyUI/models/stylegan/{SOURCE} --clip-dir ComfyUI/models/open_clip --out ComfyUI/models/stylegan_priors/{PRIOR_FILE}`

  clip2latent's released FFHQ prior (`ffhq-sg2-510.ckpt` with its `ffhq-sg2-510.yaml` beside it, Hugging Face
  `lambdalabs/clip2latent`), made for NVIDIA's StyleGAN2 FFHQ 1024 px generator, loads too: pick it in
  *Load Prior*.
"""})
    src = wf.add("NADALoadStyleGAN", [500, 20], widgets={"model": SOURCE}, title="Load StyleGAN (source)")
    sk = wf.add("NADALoadStyleGAN", wf.below(src), widgets={"model": ADAPTED}, title="Load StyleGAN (pencil sketch)")
    zb = wf.add("NADALoadStyleGAN", wf.below(sk), widgets={"model": ZOMBIE}, title="Load StyleGAN (zombie)")
    clip = clip_loader(wf, wf.below(zb), both=False)
    prior = wf.add("NADALoadPrior", [860, 20], size=[340, 0], widgets={"model": PRIOR_FILE})
    t2l = wf.add("NADATextToLatents", wf.below(prior), size=[340, 0], min_height=60,
                 widgets={"prompt": "a photograph of a smiling woman with curly red hair", "images_per_prompt": 4,
                          "candidates": 8, "guidance": 2.0, "steps": 25},
                 inputs={"prior": (prior, 0), "clip": (clip, 0), "generator": (src, 0)})
    x_syn, x_img = 1240, 1600
    previews = []
    for i, (gen, what) in enumerate(((src, "source"), (sk, "pencil sketch"), (zb, "zombie"))):
        syn = wf.add("NADASynthesize", [x_syn, 20 + i * 330], widgets={"batch_size": 4},
                     inputs={"generator": (gen, 0), "latents": (t2l, 0)}, title=f"Synthesize ({what})")
        previews.append(wf.add("PreviewImage" if i else "SaveImage", [x_img, 20 + i * 330], size=[420, 290],
                               widgets={} if i else {"filename_prefix": "nada/text_to_image"},
                               inputs={"images": (syn, 0)}, title=f"{what.capitalize()}"))
    return wf.finish()


EXAMPLES = {
    "text_adaptation": text_adaptation,
    "image_guided_adaptation": image_guided_adaptation,
    "invert_photo_to_adapted": invert_photo_to_adapted,
    "transition_video": transition_video,
    "encode_photo_to_adapted": encode_photo_to_adapted,
    "stylegan3_adaptation": stylegan3_adaptation,
    "latent_mapper_dog_to_cat": latent_mapper_dog_to_cat,
    "text_to_image_prior": text_to_image_prior,
}


def build(mappings=None) -> dict[str, dict]:
    m = mappings or load_pack()
    return {name: fn(m) for name, fn in EXAMPLES.items()}


def main():
    OUT.mkdir(exist_ok=True)
    for name, wf in build().items():
        (OUT / f"{name}.json").write_text(json.dumps(wf, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {OUT / name}.json")


if __name__ == "__main__":
    main()
