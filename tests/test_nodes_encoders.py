"""Invert Image with an encoder, Align Face and Paste Face Back, called as ComfyUI calls them
(inside torch.inference_mode(), with the fake ComfyUI of conftest)."""
import json

import numpy as np
import pytest
import torch

from nada_ops.stylegan.io import save_generator
from test_face_align import face_landmarks
from writers.encoders import write_encoder_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(comfy, tiny_G):
    save_generator(tiny_G, comfy.stylegan_dir / "tiny.safetensors")
    enc_dir = comfy.models_dir / "stylegan_encoders"
    enc_dir.mkdir(parents=True)
    write_encoder_checkpoint(enc_dir / "e4e_tiny.pt", "Encoder4Editing", tiny_G)
    write_encoder_checkpoint(enc_dir / "restyle_tiny.pt", "ProgressiveBackboneEncoder", tiny_G, seed=1)
    m = comfy.pack.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        (gen, _) = m["NADALoadStyleGAN"]().load("tiny.safetensors", "cpu", "fp32")
    return comfy, m, gen


def test_invert_image_with_encoders(setup):
    comfy, m, gen = setup
    inv = m["NADAInvertImage"]
    choices = inv.INPUT_TYPES()["optional"]["encoder"][0]
    assert choices == ["none", "e4e_tiny.pt", "restyle_tiny.pt"]       # models/stylegan_encoders is registered
    assert inv.IS_CHANGED(method="optimize", encoder="e4e_tiny.pt") == ""
    assert inv.IS_CHANGED(method="e4e", encoder="e4e_tiny.pt").startswith("e4e_tiny.pt-")   # file version
    photo = torch.rand(2, 40, 36, 3, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in gen.G.state_dict().items()}
    with torch.inference_mode():
        lat, recon, info = inv().invert(gen, photo, 10, "W", 0.1, 1.0, False, 0, method="e4e",
                                        encoder="e4e_tiny.pt")
        assert lat.ws.shape == (2, 8, 32) and lat.is_wplus and recon.shape == (2, 32, 32, 3)
        assert "e4e encoder" in info and "pixel MSE" in info and "note" not in info
        lat2, _, info2 = inv().invert(gen, photo, 10, "W", 0.1, 1.0, False, 0, method="ReStyle",
                                      encoder="restyle_tiny.pt", encoder_iterations=2, refine_steps=3)
        assert "2 ReStyle iterations" in info2 and "refined by 3/3" in info2
        assert lat2.info["method"] == "ReStyle-e4e" and lat2.info["refine"]["steps"] == 3
        # the latents work in the next node (and are not inference-only objects for training)
        (img,) = m["NADASynthesize"]().render(gen, lat2, "const", 2)
        with pytest.raises(ValueError, match="ReStyle-e4e encoder, not e4e: choose method 'ReStyle'"):
            inv().invert(gen, photo, 10, "W", 0.1, 1.0, False, 0, method="e4e", encoder="restyle_tiny.pt")
        with pytest.raises(ValueError, match="choose an encoder file"):
            inv().invert(gen, photo, 10, "W", 0.1, 1.0, False, 0, method="pSp", encoder="none")
    for k, v in gen.G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert img.shape == (2, 32, 32, 3)
    assert comfy.progress


def test_align_then_paste_back(setup):
    comfy, m, gen = setup
    lm = face_landmarks((100, 95), 40, 8)
    photo = torch.rand(1, 200, 220, 3, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        aligned, tf, info = m["NADAAlignFace"]().align(photo, 64, "largest", 0, True,
                                                       landmarks=json.dumps(lm.tolist()))
        assert aligned.shape == (1, 64, 64, 3) and "given landmarks" in info and "rotation 8.0" in info
        faces = torch.zeros(3, 32, 32, 3)                 # e.g. several renders for one photo
        (pasted,) = m["NADAPasteFace"]().paste(photo, faces, tf, 0.05, 0.0)
    assert pasted.shape == (3, 200, 220, 3)
    assert torch.equal(pasted[0, :5, :5], photo[0, :5, :5])            # outside the face: the photo
    assert float(pasted[0, 95, 100].max()) < 0.01                        # the face centre: the pasted face
    with torch.inference_mode(), pytest.raises(ValueError, match="2 photos but 1 transforms"):
        m["NADAPasteFace"]().paste(torch.cat([photo, photo]), faces[:2], tf, 0.05, 0.0)
    if not _dlib():
        with torch.inference_mode(), pytest.raises(Exception, match="dlib"):
            m["NADAAlignFace"]().align(photo, 64, "largest", 0, True)


def _dlib():
    from nada_ops.invert.landmarks import dlib_available
    return dlib_available()


def test_cli_invert_with_encoder(tmp_path, tiny_G):
    from nada_ops.cli import main
    from nada_ops.latent_tools import load_latents
    from PIL import Image
    gpath = tmp_path / "g.safetensors"
    save_generator(tiny_G, gpath)
    epath = tmp_path / "e4e.pt"
    write_encoder_checkpoint(epath, "Encoder4Editing", tiny_G)
    lm = face_landmarks((60, 55), 25, -5)
    img = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((120, 130, 3)) * 255).astype(np.uint8)).save(img)
    lm_file = tmp_path / "lm.json"
    lm_file.write_text(json.dumps(lm.tolist()))
    out = tmp_path / "lat.pt"
    rc = main(["invert", "--generator", str(gpath), "--encoder", str(epath), "--image", str(img), "--align",
               "--landmarks", str(lm_file), "--refine-steps", "2", "--out", str(out)])
    assert rc == 0
    lat = load_latents(out)
    assert lat.ws.shape == (1, 8, 32) and lat.info["method"] == "e4e"
    assert (tmp_path / "lat_recon.png").is_file() and (tmp_path / "lat_aligned.png").is_file()


def test_cli_info_describes_an_encoder(tmp_path, tiny_G, capsys):
    from nada_ops.cli import main
    p = tmp_path / "restyle.pt"
    write_encoder_checkpoint(p, "ResNetProgressiveBackboneEncoder", tiny_G)
    assert main(["info", str(p)]) == 0
    assert "ReStyle-e4e encoder (ResNetProgressiveBackboneEncoder, ResNet-34 backbone" in capsys.readouterr().out
