"""The example workflows (example_workflows/*.json, UI format) against the pack's node definitions:
every node type exists, widget values line up with INPUT_TYPES the way ComfyUI's front end
serialises them, links are consistent, each example has a .jpg thumbnail and a README entry,
and model files are explained by a note. No ComfyUI needed (the pack is imported with stand-ins)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workflow_runner import builder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "example_workflows").glob("*.json"))

# Core ComfyUI node types the examples may use: (socket inputs, outputs, widget names in order).
CORE = {
    "LoadImage": ([], ["IMAGE", "MASK"], ["image", "upload"]),
    "SaveImage": (["IMAGE"], [], ["filename_prefix"]),
    "PreviewImage": (["IMAGE"], [], []),
    "ImageBatch": (["IMAGE", "IMAGE"], ["IMAGE"], []),
    "PreviewAny": (["*"], [], []),
    "SaveAnimatedWEBP": (["IMAGE"], [], ["filename_prefix", "fps", "lossless", "quality", "method"]),
    "CreateVideo": (["IMAGE", "AUDIO"], ["VIDEO"], ["fps"]),
    "SaveVideo": (["VIDEO"], [], ["filename_prefix", "format", "codec"]),
}
# Front-end-only node types (no Python class; registered by ComfyUI's front end).
FRONTEND_ONLY = {"MarkdownNote": 1, "Note": 1, "Reroute": 0, "PrimitiveNode": None}


@pytest.fixture(scope="module")
def mappings():
    """NODE_CLASS_MAPPINGS of the pack, imported as ComfyUI imports it (no ComfyUI modules:
    INPUT_TYPES must work without them)."""
    import importlib.util
    import sys
    name = "nada_pack_examples_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name].NODE_CLASS_MAPPINGS


def widget_names(cls) -> list[str | None]:
    """Widget order as the front end builds it; None = an INT's 'control after generate' combo."""
    return [name for name, _ in builder().node_widgets(cls)]


def socket_inputs(cls) -> dict[str, str]:
    return dict(builder().node_sockets(cls))


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"text_adaptation.json", "image_guided_adaptation.json"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_structure(path, mappings):
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert wf.get("version") == 0.4 and isinstance(wf["nodes"], list) and isinstance(wf["links"], list)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    links = {l[0]: l for l in wf["links"]}
    assert len(links) == len(wf["links"]), "duplicate link ids"
    assert not links or wf["last_link_id"] >= max(links)

    for n in wf["nodes"]:
        t = n["type"]
        assert t in mappings or t in CORE or t in FRONTEND_ONLY, f"{path.name}: unknown node type {t}"
        values = n.get("widgets_values", [])
        if t in mappings:
            cls = mappings[t]
            names = widget_names(cls)
            assert len(values) == len(names), (t, names, values)
            types = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
            for name, v in zip(names, values):
                if name is None:
                    assert v in ("fixed", "increment", "decrement", "randomize"), (t, v)
                    continue
                spec = types[name]
                kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
                if kind == "INT":
                    assert isinstance(v, int) and not isinstance(v, bool), (t, name, v)
                elif kind == "FLOAT":
                    assert isinstance(v, (int, float)) and not isinstance(v, bool), (t, name, v)
                elif kind == "BOOLEAN":
                    assert isinstance(v, bool), (t, name, v)
                elif kind == "STRING":
                    assert isinstance(v, str), (t, name, v)
                elif isinstance(kind, (list, tuple)) and name not in ("model", "encoder"):
                    # combos with fixed choices must hold a valid choice (model/file lists vary per user)
                    fixed_choices = [c for c in kind if not str(c).endswith((".pkl", ".pt", ".safetensors"))]
                    if t != "NADALoadCLIP" or not name.startswith("weights"):
                        assert v in fixed_choices, (t, name, v, kind)
                if kind in ("INT", "FLOAT"):
                    assert opts.get("min", -1e30) <= v <= opts.get("max", 1e30), (t, name, v)
            # sockets: names, types and order as the node defines them
            sock = socket_inputs(cls)
            got = {i["name"]: i["type"] for i in n.get("inputs", []) if "widget" not in i}
            assert set(got) <= set(sock), (t, set(got) - set(sock))
            for k, v in got.items():
                assert v == sock[k], (t, k, v, sock[k])
            required = [k for k in cls.INPUT_TYPES().get("required", {}) if k in sock]
            for k in required:
                inp = next((i for i in n["inputs"] if i["name"] == k), None)
                assert inp is not None and inp.get("link") is not None, f"{path.name}: {t}.{k} is not connected"
            assert [o["type"] for o in n.get("outputs", [])] == list(cls.RETURN_TYPES), t
        elif t in CORE:
            ins, outs, wnames = CORE[t]
            assert len(values) == len(wnames), (t, values)
            assert [o["type"] for o in n.get("outputs", [])] == outs, t
        elif FRONTEND_ONLY[t] is not None:
            assert len(values) == FRONTEND_ONLY[t], t

    # every link joins an existing output slot to an existing input slot, both sides agree
    for lid, (lid2, src, src_slot, dst, dst_slot, ltype) in links.items():
        assert src in nodes and dst in nodes, lid
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert lid in (out.get("links") or []), (path.name, lid)
        assert inp["link"] == lid, (path.name, lid)
        assert out["type"] == ltype, (path.name, lid, out["type"], ltype)
        assert inp["type"] in (ltype, "*"), (path.name, lid, inp["type"], ltype)
    for n in wf["nodes"]:
        for i in n.get("inputs", []):
            if i.get("link") is not None:
                assert i["link"] in links, (path.name, n["id"], i["name"])
        for o in n.get("outputs", []):
            for lid in o.get("links") or []:
                assert links[lid][1] == n["id"], (path.name, n["id"], lid)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_has_thumbnail_readme_entry_and_model_note(path):
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.name} missing (ComfyUI's template browser shows it)"
    assert thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumb.name} is not a JPEG"
    readme = (ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else ""
    assert path.name in readme, f"{path.name} is not documented in README.md"
    guide = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
    assert f"`{path.name}`" in guide, f"{path.name} is not described in docs/examples.md"
    wf = json.loads(path.read_text(encoding="utf-8"))
    notes = " ".join(str(v) for n in wf["nodes"] if n["type"] in ("MarkdownNote", "Note")
                     for v in n.get("widgets_values", []))
    # every model file the example names is explained in a note (where to get it)
    for n in wf["nodes"]:
        if n["type"] == "NADALoadStyleGAN":
            f = n["widgets_values"][0]
            assert f in notes and "models/stylegan" in notes, f"{path.name}: where to get {f} is not explained"
        if n["type"] == "LoadImage":
            assert "input" in notes, f"{path.name}: the images for {n['widgets_values'][0]} are not explained"
    if any(n["type"] == "NADALoadCLIP" for n in wf["nodes"]):
        assert re.search(r"models/open_clip", notes), f"{path.name}: where CLIP weights go is not explained"


def test_help_page_for_every_node(mappings):
    docs = ROOT / "web" / "docs"
    missing = [k for k in mappings if not (docs / f"{k}.md").is_file()]
    assert not missing, f"help pages missing: {missing}"
    for k in mappings:
        text = (docs / f"{k}.md").read_text(encoding="utf-8")
        assert text.startswith("# "), k


def test_every_input_has_a_tooltip(mappings):
    """Inputs of the nodes without a tooltip (shown on hover in ComfyUI)."""
    missing = []
    for k, cls in mappings.items():
        for part in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(part, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                if not opts.get("tooltip"):
                    missing.append(f"{k}.{name}")
    if missing:
        pytest.xfail(f"inputs without a tooltip (defined in nodes/*.py): {missing}")


def test_examples_are_what_the_builder_makes(mappings):
    """example_workflows/*.json are generated from the node definitions by
    tools/build_example_workflows.py: a node change that the examples do not follow fails here."""
    built = builder().build(mappings)
    assert sorted(built) == sorted(p.stem for p in EXAMPLES)
    for p in EXAMPLES:
        assert json.loads(p.read_text(encoding="utf-8")) == json.loads(json.dumps(built[p.stem])), (
            f"{p.name} differs from what tools/build_example_workflows.py makes: run it")


TITLE_H = 30


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_layout_fits_the_window_without_overlaps(path):
    """Opened in a 1600 x 1000 browser window, the saved view shows every node (title bar included)
    within the canvas area left free by ComfyUI's bars and minimap (1500 x 620 canvas pixels; the
    end-to-end test measures the real front end), and no node covers another."""
    wf = json.loads(path.read_text(encoding="utf-8"))
    ds = wf["extra"]["ds"]
    boxes = [(n["id"], n["type"], n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0],
              n["pos"][1] + n["size"][1]) for n in wf["nodes"]]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[2] < b[4] and b[2] < a[4] and a[3] < b[5] and b[3] < a[5]), f"{path.name}: {a} overlaps {b}"
    for _, t, x0, y0, x1, y1 in boxes:
        sx0, sy0 = (x0 + ds["offset"][0]) * ds["scale"], (y0 + ds["offset"][1]) * ds["scale"]
        sx1, sy1 = (x1 + ds["offset"][0]) * ds["scale"], (y1 + ds["offset"][1]) * ds["scale"]
        assert sx0 >= 0 and sy0 >= 0 and sx1 <= 1500 and sy1 <= 620, f"{path.name}: {t} is off screen"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_need_only_model_files(path, mappings):
    """No input file a user does not have: image inputs come from the pack's example folders or
    are made in the graph; model download links are ones ComfyUI's front end accepts."""
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert not any(n["type"] == "LoadImage" for n in wf["nodes"]), "LoadImage needs a file in ComfyUI/input"
    for n in wf["nodes"]:
        if n["type"] == "NADALoadImages":
            folder = n["widgets_values"][0]
            assert folder.startswith("examples/"), folder
            d = ROOT / "example_inputs" / folder.split("/", 1)[1]
            assert sorted(d.glob("*.png")), f"{folder}: no example images in {d}"
        for model in n.get("properties", {}).get("models", []):
            assert model["url"].startswith("https://huggingface.co/") and model["name"].endswith(".safetensors")
            assert model["directory"] in ("open_clip", "stylegan")
            assert model["name"] in n["widgets_values"], "the front end matches models to widget values"


def test_display_names_are_found_by_every_search(mappings):
    """ComfyUI's node search (front end 1.27) matches ids and display names only: every node must
    be found by 'stylegan' and 'nada'; newer ComfyUI also searches SEARCH_ALIASES."""
    import sys
    names = sys.modules["nada_pack_examples_check"].NODE_DISPLAY_NAME_MAPPINGS
    for k, cls in mappings.items():
        assert "stylegan" in names[k].lower() and "nada" in names[k].lower(), names[k]
        aliases = getattr(cls, "SEARCH_ALIASES", [])
        assert {"stylegan", "gan", "nada", "domain adaptation"} <= set(aliases), k
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), k
