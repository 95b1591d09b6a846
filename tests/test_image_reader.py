"""nada_ops.io.images: bounded decoding of untrusted images, and its use by the CLI."""
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from nada_ops.io.images import ImageFileError, read_image, read_image_batch, read_images


def _png_with_header(path, w, h):
    """A PNG that declares w x h pixels in a few dozen bytes (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_modes_are_read_as_a_viewer_shows_them(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255                       # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    a = np.asarray(read_image(tmp_path / "rgba.png"))
    assert a.shape == (8, 8, 3) and tuple(a[0, 0]) == (255, 0, 0) and tuple(a[7, 7]) == (255, 255, 255)

    la = Image.fromarray(np.stack([np.full((4, 4), 10, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")
    assert tuple(np.asarray(read_image(tmp_path / "la.png"))[0, 0]) == (255, 255, 255)

    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png")
    assert tuple(np.asarray(read_image(tmp_path / "p.png"))[0, 0]) == (0, 255, 0)

    # 16-bit greyscale: scaled to 8 bits (Pillow's own conversion would make it white)
    Image.fromarray(np.full((4, 4), 30000, np.uint16)).save(tmp_path / "g16.png")
    v = np.asarray(read_image(tmp_path / "g16.png"))[0, 0]
    assert tuple(v) == (117, 117, 117)


def test_exif_orientation_and_first_frame(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6                           # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").size == (20, 40)
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(read_image(tmp_path / "anim.gif"))[0, 0])[0] > 200


def test_jpeg_is_decoded_at_reduced_scale(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin
    Image.new("RGB", (1600, 1200), (30, 60, 90)).save(tmp_path / "big.jpg", quality=80)
    decoded = []
    orig_load = JpegImagePlugin.JpegImageFile.load

    def load(self):
        decoded.append(self.size)
        return orig_load(self)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    out = read_image(tmp_path / "big.jpg", max_side=100)
    assert min(out.size) == 100 and out.size == (133, 100)
    assert decoded and decoded[0][0] <= 400                 # 1/4 scale or smaller, never 1600 wide


def test_bad_files_give_an_error_naming_the_file(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    for name, problem in [("trunc.png", "truncated or corrupt"), ("text.png", "not an image file"),
                          ("empty.jpg", "file is empty"), ("folder.png", "is not a file"),
                          ("missing.png", "does not exist")]:
        with pytest.raises(ImageFileError, match=problem) as e:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_bomb_header_is_refused_before_decoding(tmp_path):
    bomb = _png_with_header(tmp_path / "bomb.png", 100_000, 100_000)       # 10 gigapixels in ~100 bytes
    assert bomb.stat().st_size < 200
    t = time.perf_counter()
    with pytest.raises(ImageFileError, match="bomb.png") as e:
        read_image(bomb, max_side=32)
    assert time.perf_counter() - t < 0.5
    assert "too large" in str(e.value) or "megapixels" in str(e.value)
    # under Pillow's own threshold but over ours: refused from the header as well
    mid = _png_with_header(tmp_path / "mid.png", 12_000, 12_000)
    t = time.perf_counter()
    with pytest.raises(ImageFileError, match=r"12000x12000 = 144 megapixels, more than the limit of 100"):
        read_image(mid, max_pixels=100_000_000)
    assert time.perf_counter() - t < 0.5


def test_batch_at_a_common_size_and_file_count_limit(tmp_path):
    Image.new("RGB", (90, 30), (255, 0, 0)).save(tmp_path / "wide.png")
    Image.new("L", (20, 50), 128).save(tmp_path / "tall.png")
    b = read_image_batch([tmp_path / "wide.png", tmp_path / "tall.png"], 32)
    assert b.shape == (2, 32, 32, 3) and b.dtype == np.uint8
    assert tuple(b[0, 16, 16]) == (255, 0, 0) and tuple(b[1, 0, 0]) == (128, 128, 128)
    with pytest.raises(ValueError, match="2 image files given .* at most 1"):
        read_images([tmp_path / "wide.png", tmp_path / "tall.png"], max_files=1)


def test_cli_reduces_images_before_any_float_copy(tmp_path):
    """The invert CLI used to make a full-size float32 copy of every photo (144 MP -> 1.7 GB)
    before resizing it to the generator's 32 px."""
    from nada_ops.cli import _load_images
    Image.new("RGB", (3000, 2000), (0, 128, 255)).save(tmp_path / "photo.png")
    tracemalloc.start()
    try:
        x = _load_images([tmp_path / "photo.png"], 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tuple(x.shape) == (1, 3, 32, 32)
    assert float(x[0, 2, 0, 0]) == pytest.approx(1.0) and float(x[0, 0, 0, 0]) == pytest.approx(-1.0)
    assert peak < 8 * 2 ** 20           # the full-size float32 copy alone was 72 MB


def test_cli_invert_names_a_bad_image(tmp_path, tiny_G, capsys):
    from nada_ops.cli import main
    from nada_ops.stylegan.io import save_generator
    save_generator(tiny_G, tmp_path / "g.safetensors")
    (tmp_path / "x.jpg").write_text("hello")
    rc = main(["invert", "--generator", str(tmp_path / "g.safetensors"), "--image", str(tmp_path / "x.jpg"),
               "--steps", "1", "--out", str(tmp_path / "lat.pt")])
    assert rc == 1
    assert f"error: {tmp_path / 'x.jpg'}: not an image file" in capsys.readouterr().err
