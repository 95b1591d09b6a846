import json
import os
import struct

import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.stylegan.formats import CheckpointError
from nada_ops.stylegan.io import detect_format, load_generator, save_generator
from nada_ops.stylegan.networks import Generator, z_from_seeds


def _images(G, psi=0.7):
    with torch.no_grad():
        return G(z_from_seeds([0, 1, 2], G.cfg.z_dim), truncation_psi=psi)


def test_roundtrip_bit_identical(tmp_path, tiny_G):
    p = tmp_path / "g.safetensors"
    save_generator(tiny_G, p, provenance={"note": "test"})
    h = load_generator(p)
    assert h.source_format == "safetensors"
    assert h.provenance["note"] == "test"
    assert torch.equal(_images(tiny_G), _images(h.G))
    assert h.cfg == tiny_G.cfg


def test_roundtrip_conditional_and_clamp(tmp_path):
    G = randomize(Generator(tiny_config(c_dim=3, conv_clamp=256.0, img_resolution=64, channel_base=1024)))
    p = tmp_path / "c.safetensors"
    save_generator(G, p)
    h = load_generator(p)
    assert h.cfg.c_dim == 3 and h.cfg.conv_clamp == 256.0
    c = torch.eye(3)[[1]]
    z = z_from_seeds([7], 32)
    assert torch.equal(G(z, c), h.G(z, c))


def test_detect_by_content_not_extension(tmp_path, tiny_G):
    p = tmp_path / "model.pkl"  # wrong extension on purpose
    save_generator(tiny_G, p)
    assert detect_format(p) == "safetensors"
    assert load_generator(p).source_format == "safetensors"


def test_save_is_atomic_and_leaves_no_temp(tmp_path, tiny_G):
    p = tmp_path / "g.safetensors"
    save_generator(tiny_G, p)
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors"]


def _write_raw(path, header: dict, data: bytes = b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("content,msg", [
    (b"", "empty"),
    (b"\x00\x01garbage-bytes-that-mean-nothing" * 10, "not a recognised"),
    (os.urandom(4096), "not a recognised|safetensors|pickle"),
])
def test_bad_files(tmp_path, content, msg):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=msg) as e:
        load_generator(p)
    assert "bad.safetensors" in str(e.value)


def test_truncated_file(tmp_path, tiny_G):
    p = tmp_path / "g.safetensors"
    save_generator(tiny_G, p)
    data = p.read_bytes()
    t = tmp_path / "trunc.safetensors"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.safetensors.*truncated"):
        load_generator(t)


def _meta_file(tmp_path, tiny_G, **meta_over):
    p = tmp_path / "g.safetensors"
    save_generator(tiny_G, p)
    from safetensors import safe_open
    with safe_open(str(p), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_over)
    meta = {k: v for k, v in meta.items() if v is not None}
    from safetensors.torch import save_file
    q = tmp_path / "edited.safetensors"
    save_file(tensors, str(q), metadata=meta)
    return q


def test_wrong_architecture_metadata(tmp_path, tiny_G):
    arch = tiny_G.cfg.to_dict()
    arch["channel_base"] = 1024
    q = _meta_file(tmp_path, tiny_G, architecture=json.dumps(arch))
    with pytest.raises(CheckpointError, match="edited.safetensors.*shape"):
        load_generator(q)


def test_non_power_of_two_resolution_metadata(tmp_path, tiny_G):
    arch = tiny_G.cfg.to_dict()
    arch["img_resolution"] = 48
    q = _meta_file(tmp_path, tiny_G, architecture=json.dumps(arch))
    with pytest.raises(CheckpointError, match="img_resolution.*power of two"):
        load_generator(q)


def test_missing_and_foreign_metadata(tmp_path, tiny_G):
    q = _meta_file(tmp_path, tiny_G, format="something-else")
    with pytest.raises(CheckpointError, match="'format'"):
        load_generator(q)
    q = _meta_file(tmp_path, tiny_G, architecture="{not json")
    with pytest.raises(CheckpointError, match="architecture.*JSON"):
        load_generator(q)
    arch = tiny_G.cfg.to_dict()
    arch["bogus_field"] = 1
    q = _meta_file(tmp_path, tiny_G, architecture=json.dumps(arch))
    with pytest.raises(CheckpointError, match="bogus_field"):
        load_generator(q)


def test_nan_weights_rejected(tmp_path, tiny_G):
    G = Generator(tiny_G.cfg)
    G.load_state_dict(tiny_G.state_dict())
    with torch.no_grad():
        G.synthesis.b8.conv1.weight[0, 0, 0, 0] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_generator(G, p)
    with pytest.raises(CheckpointError, match="NaN"):
        load_generator(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nope.pkl")
    with pytest.raises(CheckpointError, match="folder"):
        load_generator(tmp_path)


def test_saved_file_has_normal_permissions(tmp_path, tiny_G):
    """Atomic saves go through mkstemp (mode 0600); the final file gets 0666 & ~umask."""
    old = os.umask(0o022)
    try:
        p = tmp_path / "perm.safetensors"
        save_generator(tiny_G, p)
    finally:
        os.umask(old)
    assert (os.stat(p).st_mode & 0o777) == 0o644


# ------------------------------------------------------------------ our own writer
def test_writer_is_byte_deterministic_and_readable_by_the_safetensors_library(tmp_path):
    """Saving the same generator twice gives the same bytes (the safetensors library writes its
    metadata in hash order, so batch re-runs could not be compared byte for byte), and the
    file is a valid safetensors file for the library's own reader."""
    from safetensors import safe_open

    from nada_ops.stylegan.formats.safetensors_io import write_safetensors_generator
    G = randomize(Generator(tiny_config()))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    prov = {"z": 1, "a": [1, 2], "name": "été"}
    write_safetensors_generator(G, a, prov)
    write_safetensors_generator(G, b, dict(reversed(list(prov.items()))))
    assert a.read_bytes() == b.read_bytes()
    sd = G.state_dict()
    with safe_open(str(a), framework="pt") as f:
        assert set(f.keys()) == set(sd)
        for k in sd:
            assert torch.equal(f.get_tensor(k), sd[k].float()), k
        assert f.metadata()["format"] == "nada-stylegan2"


def test_writer_dtypes_shapes_and_padding(tmp_path):
    from safetensors.torch import load_file

    from nada_ops.io.safetensors_files import read_safetensors, write_safetensors
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=g), "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(), "f64": torch.randn(1, generator=g).double(),
        "i64": torch.arange(5), "u8": torch.arange(3, dtype=torch.uint8), "b": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
        "strided": torch.randn(4, 6, generator=g).t(),          # not contiguous
    }
    p = tmp_path / "t.safetensors"
    write_safetensors(p, tensors, {"k": "v"})
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8:8 + n].rstrip(b" ").endswith(b"}")
    ours, meta = read_safetensors(p)
    theirs = load_file(str(p))
    assert meta == {"k": "v"}
    for k, t in tensors.items():
        assert ours[k].dtype == t.dtype and torch.equal(ours[k], t), k
        assert torch.equal(theirs[k], t), k
    with pytest.raises(TypeError):
        write_safetensors(tmp_path / "x.safetensors", {"a": torch.zeros(1)}, {"k": 1})


def test_foreign_or_newer_pack_files_are_named_clearly(tmp_path, tiny_G):
    """A safetensors file of another kind (a mapper) or of a newer format version is refused with
    the field, the value and what was expected."""
    from nada_ops.io.safetensors_files import read_safetensors, write_safetensors
    p = tmp_path / "g.safetensors"
    save_generator(tiny_G, p)
    sd, meta = read_safetensors(p)
    write_safetensors(tmp_path / "m.safetensors", sd, {**meta, "format": "nada-latent-mapper"})
    with pytest.raises(CheckpointError, match=r"'format' is .*nada-latent-mapper.*expected one of "
                                              r"\['nada-stylegan2', 'nada-stylegan3'\].*StyleGAN generator"):
        load_generator(tmp_path / "m.safetensors")
    write_safetensors(tmp_path / "v.safetensors", sd, {**meta, "format_version": "99"})
    with pytest.raises(CheckpointError, match=r"'format_version' is .*99.*reads '1'"):
        load_generator(tmp_path / "v.safetensors")
