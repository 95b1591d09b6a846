import subprocess
import sys

from PIL import Image

from conftest import ROOT
from nada_ops.cli import main
from nada_ops.stylegan.io import save_generator


def test_sample_and_info(tmp_path, tiny_G, capsys):
    g = tmp_path / "g.safetensors"
    save_generator(tiny_G, g)
    out = tmp_path / "grid.png"
    assert main(["sample", "--generator", str(g), "--seeds", "0-3", "--psi", "0.7", "--out", str(out)]) == 0
    im = Image.open(out)
    assert im.size == (64, 64)  # 2x2 grid of 32px
    assert main(["info", str(g)]) == 0
    assert "num_ws (W+ entries): 8" in capsys.readouterr().out


def test_bad_file_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"")
    assert main(["info", str(bad)]) == 1
    assert "bad.pkl: file is empty" in capsys.readouterr().err


def test_module_entry_point(tmp_path, tiny_G):
    g = tmp_path / "g.safetensors"
    save_generator(tiny_G, g)
    r = subprocess.run([sys.executable, "-m", "nada_ops", "info", str(g)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "32x32" in r.stdout


def test_user_errors_are_messages_not_tracebacks(tmp_path, tiny_G, capsys):
    g = tmp_path / "g.safetensors"
    save_generator(tiny_G, g)
    assert main(["sample", "--generator", str(g), "--seeds", "5-1", "--out", str(tmp_path / "x.png")]) == 1
    assert "error: seed range '5-1' is descending" in capsys.readouterr().err


def test_the_library_never_imports_the_command_line():
    """nada_ops/cli/ is one package, one module per command; the library never imports it."""
    import re
    lib = ROOT / "nada_ops"
    offenders = []
    for f in lib.rglob("*.py"):
        if f.parts[len(lib.parts)] == "cli":
            continue
        text = f.read_text(encoding="utf-8")
        if re.search(r"^\s*(from\s+(\.+|nada_ops\.)cli\b|import\s+nada_ops\.cli\b)", text, re.M):
            offenders.append(str(f.relative_to(ROOT)))
    assert offenders == ["nada_ops/__main__.py"], offenders
    from nada_ops.cli import COMMANDS
    import importlib
    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(f"nada_ops.cli.{module}").run), name
