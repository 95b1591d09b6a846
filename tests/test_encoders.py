"""pSp / e4e / ReStyle encoders: checkpoints in the authors' format (small random networks of the
same architecture code path), recognition from the content, bad files, generator checks,
encoding and ReStyle's iterations. Parity with the authors' code is reported in the README."""
import hashlib
import math

import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.invert.encoders import (EncoderFileError, EncoderMismatchError, encode, file_key, load_encoder,
                                      _reference_state)
from nada_ops.invert.networks import EncoderConfig
from nada_ops.stylegan.networks import Generator, estimate_w_avg
from writers.encoders import write_encoder_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = randomize(Generator(tiny_config()).eval(), 0)
    with torch.no_grad():
        g.mapping.w_avg.copy_(estimate_w_avg(g, 256))
    return g.requires_grad_(False)


@pytest.fixture(scope="module")
def photos():
    return torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _direct(net, x):
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("etype,kind,iterative", [
    ("GradualStyleEncoder", "pSp", False),
    ("Encoder4Editing", "e4e", False),
    ("ProgressiveBackboneEncoder", "ReStyle-e4e", True),
    ("ResNetBackboneEncoder", "ReStyle-pSp", True),
    ("ResNetGradualStyleEncoder", "ReStyle-pSp", True),
    ("SingleStyleCodeEncoder", "e4e", False),
])
def test_authors_format_is_recognised_and_encodes(tmp_path, G, photos, etype, kind, iterative):
    path = tmp_path / "enc.pt"
    net = write_encoder_checkpoint(path, etype, G)
    enc = load_encoder(path)
    assert enc.kind == kind and enc.cfg.iterative == iterative and enc.encoder_type == etype
    assert enc.cfg == net.cfg                       # architecture recovered from the tensors alone
    assert not enc.compare_generator(G)             # the decoder in the file is G
    r = encode(enc, G, photos, iterations=3)
    assert r.ws.shape == (2, G.cfg.num_ws, G.cfg.w_dim) and torch.isfinite(r.ws).all()
    x = torch.nn.functional.interpolate(photos, size=(256, 256), mode="bilinear", antialias=True)
    avg = G.w_avg[None, None]
    if not iterative:
        assert len(r.steps) == 1
        torch.testing.assert_close(r.ws, _direct(net, x) + avg)
        if etype == "SingleStyleCodeEncoder":
            assert not r.is_wplus and torch.equal(r.ws[:, 0], r.ws[:, -1])
        if etype == "Encoder4Editing":   # progressive: every entry = the base w + its own delta
            d = r.ws - r.ws[:, :1]
            assert d[:, 0].abs().max() == 0 and d[:, 1:].abs().max() > 0
    else:
        # ReStyle: step 1 reads the photo and the average image, then each step corrects the previous codes
        assert len(r.steps) == 3
        y0 = torch.nn.functional.adaptive_avg_pool2d(G.synthesis(avg.expand(1, G.cfg.num_ws, -1)), 256)
        torch.testing.assert_close(r.steps[0], _direct(net, torch.cat([x, y0.expand(2, -1, -1, -1)], 1)) + avg)
        y1 = torch.nn.functional.adaptive_avg_pool2d(G.synthesis(r.steps[0]), 256)
        torch.testing.assert_close(r.steps[1], _direct(net, torch.cat([x, y1], 1)) + r.steps[0])
        assert not torch.equal(r.steps[1], r.steps[2])


def test_options_decide_only_what_the_tensors_cannot(tmp_path, G, photos):
    """pSp adds latent_avg only with start_from_latent_avg; opts that contradict the tensors are refused."""
    p = tmp_path / "psp.pt"
    net = write_encoder_checkpoint(p, "GradualStyleEncoder", G, opts={"start_from_latent_avg": False})
    enc = load_encoder(p)
    x = torch.nn.functional.interpolate(photos, size=(256, 256), mode="bilinear", antialias=True)
    torch.testing.assert_close(encode(enc, G, photos).ws, _direct(net, x))
    old = tmp_path / "old_psp.pt"           # pSp's first releases saved no encoder_type
    ck = torch.load(p, weights_only=True)
    del ck["opts"]["encoder_type"]
    torch.save(ck, old)
    assert load_encoder(old).kind == "pSp"
    bad = tmp_path / "bad.pt"
    write_encoder_checkpoint(bad, "GradualStyleEncoder", G, opts={"encoder_type": "ResNetBackboneEncoder"})
    with pytest.raises(EncoderFileError, match="ResNet"):
        load_encoder(bad)
    write_encoder_checkpoint(bad, "GradualStyleEncoder", G, opts={"encoder_type": "BackboneEncoder"})
    with pytest.raises(EncoderFileError, match="lacks the FPN|has the FPN|reads 3 channels"):
        load_encoder(bad)
    write_encoder_checkpoint(bad, "GradualStyleEncoder", G, opts={"output_size": 64})
    with pytest.raises(EncoderFileError, match="do not fit the 64 px"):
        load_encoder(bad)


def test_bad_files_get_clear_errors(tmp_path, G):
    from nada_ops.stylegan.formats.rosinality_pt import write_rosinality
    gen = tmp_path / "generator.pt"
    write_rosinality(G, gen)
    with pytest.raises(EncoderFileError, match="generator checkpoint, not an encoder"):
        load_encoder(gen)
    good = tmp_path / "e4e.pt"
    write_encoder_checkpoint(good, "Encoder4Editing", G)
    data = good.read_bytes()
    cut = tmp_path / "truncated.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EncoderFileError, match="truncated.pt"):
        load_encoder(cut)
    nopts = tmp_path / "noopts.pt"
    torch.save({"state_dict": torch.load(good, weights_only=True)["state_dict"]}, nopts)
    with pytest.raises(EncoderFileError, match="no 'opts'"):
        load_encoder(nopts)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"encoder.foo.weight": torch.zeros(3)}, "opts": {"encoder_type": "Encoder4Editing"}},
               other)
    with pytest.raises(EncoderFileError, match="neither an IR-SE stem"):
        load_encoder(other)
    sketch = tmp_path / "sketch.pt"
    from writers.encoders import tiny_encoder_config
    cfg = tiny_encoder_config("GradualStyleEncoder")
    from dataclasses import replace
    write_encoder_checkpoint(sketch, "GradualStyleEncoder", G, cfg=replace(cfg, in_channels=1),
                             opts={"input_nc": 1, "label_nc": 1})
    with pytest.raises(EncoderFileError, match="sketches or segmentation"):
        load_encoder(sketch)
    nan = tmp_path / "nan.pt"
    ck = torch.load(good, weights_only=True)
    ck["state_dict"]["encoder.styles.0.linear.weight"][0, 0] = float("nan")
    torch.save(ck, nan)
    with pytest.raises(EncoderFileError, match="NaN"):
        load_encoder(nan)
    missing = tmp_path / "missing.pt"
    ck = torch.load(good, weights_only=True)
    del ck["state_dict"]["encoder.styles.3.linear.bias"]
    torch.save(ck, missing)
    with pytest.raises(EncoderFileError, match="incomplete"):
        load_encoder(missing)


def test_code_in_the_file_is_never_run(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "opts": Evil()}, p, pickle_module=pickle)
    with pytest.raises(EncoderFileError, match="evil.pt"):
        load_encoder(p)


def test_encoder_and_generator_must_belong_together(tmp_path, G, photos):
    p = tmp_path / "e4e.pt"
    write_encoder_checkpoint(p, "Encoder4Editing", G)
    enc = load_encoder(p)
    big = Generator(tiny_config(img_resolution=64)).eval()
    with pytest.raises(EncoderMismatchError, match="32 px generator with 8 W\\+ entries.*64 px with 10"):
        encode(enc, big, photos)
    other = randomize(Generator(tiny_config()).eval(), 5)
    notes = enc.compare_generator(other)
    assert notes and "mapping network differs" in notes[0]


def test_full_size_layout_is_the_authors(tmp_path):
    """IR-SE50 e4e / pSp at 1024 px, built on the meta device: exactly the authors' tensor names and
    shapes (569 tensors, 267,161,024 values; fingerprint taken from their code), and ResNet-34."""
    cfg = EncoderConfig(backbone="ir_se", style_source="fpn", progressive=True, in_channels=3, stem_width=64,
                        stage_units=(3, 4, 14, 3), stage_widths=(64, 128, 256, 512), se_hidden=(4, 8, 16, 32),
                        n_styles=18, w_dim=512, head_convs=(4,) * 3 + (5,) * 4 + (6,) * 11)
    shapes = {file_key(k, cfg.backbone): v for k, v in _reference_state(cfg).items()}
    text = "".join(f"{k}:{list(v)}\n" for k, v in sorted(shapes.items()))
    assert len(shapes) == 569 and sum(math.prod(v) for v in shapes.values()) == 267_161_024
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "f1f5096591c416f7"
    rn = EncoderConfig(backbone="resnet34", style_source="flat", progressive=True, in_channels=6, stem_width=64,
                       stage_units=(3, 4, 6, 3), stage_widths=(64, 128, 256, 512), n_styles=16, w_dim=512,
                       head_convs=(4,) * 16)
    shapes = {file_key(k, rn.backbone): v for k, v in _reference_state(rn).items()}
    text = "".join(f"{k}:{list(v)}\n" for k, v in sorted(shapes.items()))
    assert len(shapes) == 341 and sum(math.prod(v) for v in shapes.values()) == 176_541_376
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "455737162a6eca4b"    # ReStyle's ResNet-34 e4e


@pytest.mark.parametrize("opts,match", [
    ({"output_size": 2 ** 40}, "resolution of"),
    ({"output_size": "1024"}, "resolution of"),
    ({"encoder_type": ["Encoder4Editing"]}, "encoder_type"),
    ({"encoder_type": "BackboneEncoderUsingLastLayerIntoWPlus"}, "not supported"),
    ({"input_nc": 6}, "input_nc"),
])
def test_hostile_or_wrong_options_are_refused(tmp_path, G, opts, match):
    p = tmp_path / "enc.pt"
    write_encoder_checkpoint(p, "Encoder4Editing", G, opts=opts)
    with pytest.raises(EncoderFileError, match=match):
        load_encoder(p)
