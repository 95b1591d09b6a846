import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from nada_ops.stylegan.io import load_generator, save_generator
from nada_ops.stylegan.networks import z_from_seeds


def _nodes(comfy):
    return comfy.pack.NODE_CLASS_MAPPINGS


def test_registration_and_prefixes(comfy):
    m = _nodes(comfy)
    assert all(k.startswith("NADA") for k in m)
    for cls in m.values():
        spec = cls.INPUT_TYPES()
        types = [v[0] for sect, part in spec.items() if sect != "hidden" for v in part.values()]
        for t in types:
            if isinstance(t, str) and t.isupper() and t not in ("INT", "FLOAT", "STRING", "BOOLEAN", "IMAGE", "MASK"):
                assert t.startswith("NADA_"), t
        assert hasattr(cls, cls.FUNCTION)
    assert comfy.pack.WEB_DIRECTORY == "./web"
    import folder_paths
    assert "stylegan" in folder_paths.folder_names_and_paths


def test_load_sample_synthesize_save_in_inference_mode(comfy, tiny_G):
    save_generator(tiny_G, comfy.stylegan_dir / "tiny.safetensors")
    m = _nodes(comfy)
    assert "tiny.safetensors" in m["NADALoadStyleGAN"].INPUT_TYPES()["required"]["model"][0]
    with torch.inference_mode():
        (gen, info) = m["NADALoadStyleGAN"]().load("tiny.safetensors", "auto", "fp32")
        assert "32x32" in info
        (lat,) = m["NADASampleW"]().sample(gen, seed=3, batch_size=3, truncation_psi=0.7)
        (img,) = m["NADASynthesize"]().render(gen, lat, "const", 2)
        assert img.shape == (3, 32, 32, 3) and img.dtype == torch.float32 and img.device.type == "cpu"
        assert 0 <= img.min() and img.max() <= 1
        # same as rendering with the library directly
        ref = tiny_G(z_from_seeds([3, 4, 5], 32), truncation_psi=0.7)
        assert torch.allclose(img, ((ref.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1), atol=1e-5)
        assert comfy.progress and comfy.progress[-1][0] == 3
        out = m["NADASaveGenerator"]().save(gen, "sub/copy")
        out2 = m["NADASaveGenerator"]().save(gen, "sub/copy")
    p1, p2 = out["result"][0], out2["result"][0]
    assert p1 != p2 and os.path.exists(p1) and os.path.exists(p2)
    assert p1.startswith(str(comfy.stylegan_dir))
    assert load_generator(p1).provenance["source_file"] == "tiny.safetensors"


def test_save_prefix_cannot_escape(comfy, tiny_G):
    mod = sys.modules[comfy.pack.__name__ + ".nodes.generator"]
    p = mod.unique_path(str(comfy.stylegan_dir), "../../escape/name", ".safetensors")
    assert os.path.realpath(p).startswith(os.path.realpath(comfy.stylegan_dir))


def test_sample_with_mixing_and_class(comfy, tiny_G):
    save_generator(tiny_G, comfy.stylegan_dir / "tiny.safetensors")
    m = _nodes(comfy)
    with torch.inference_mode():
        (gen, _) = m["NADALoadStyleGAN"]().load("tiny.safetensors", "cpu", "fp32")
        (lat,) = m["NADASampleW"]().sample(gen, 0, 2, 1.0, mix_seed=9, mix_crossover=4)
        assert lat.is_wplus
        with pytest.raises(ValueError, match="not class-conditional"):
            m["NADASampleW"]().sample(gen, 0, 2, 1.0, class_label=3)


def test_interrupt_stops_synthesis(comfy, tiny_G):
    save_generator(tiny_G, comfy.stylegan_dir / "tiny.safetensors")
    m = _nodes(comfy)
    with torch.inference_mode():
        (gen, _) = m["NADALoadStyleGAN"]().load("tiny.safetensors", "cpu", "fp32")
        (lat,) = m["NADASampleW"]().sample(gen, 0, 4, 1.0)
        comfy.interrupt = True
        with pytest.raises(comfy.mm.InterruptProcessingException):
            m["NADASynthesize"]().render(gen, lat, "const", 1)


def test_import_is_fast_and_light():
    """Importing the pack compiles nothing and loads no model or open_clip."""
    code = (
        "import importlib.util, sys, time, types\n"
        "t=time.time()\n"
        f"spec=importlib.util.spec_from_file_location('anypack', r'{ROOT / '__init__.py'}', "
        f"submodule_search_locations=[r'{ROOT}'])\n"
        "m=importlib.util.module_from_spec(spec); sys.modules['anypack']=m; spec.loader.exec_module(m)\n"
        "print(len(m.NODE_CLASS_MAPPINGS), 'open_clip' in sys.modules, "
        "any('cpp_extension' in k for k in sys.modules if k.startswith('torch.utils.cpp')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n, oc, cpp = r.stdout.split()
    assert int(n) >= 4 and oc == "False" and cpp == "False"


def test_loader_reloads_when_the_file_changes(comfy, tiny_G):
    p = comfy.stylegan_dir / "tiny.safetensors"
    save_generator(tiny_G, p)
    node = comfy.pack.NODE_CLASS_MAPPINGS["NADALoadStyleGAN"]
    a = node.IS_CHANGED("tiny.safetensors", "cpu", "fp32")
    assert a == node.IS_CHANGED("tiny.safetensors", "cpu", "fp32")
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert node.IS_CHANGED("tiny.safetensors", "cpu", "fp32") != a
