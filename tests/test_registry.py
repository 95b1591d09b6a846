"""Ready for the Comfy Registry: valid pyproject.toml, a .comfyignore that keeps development files
(tests, the test-side pickle writers, benchmarks, tools, CI) out of the published package, and no
subprocess / exec / eval / pickle.load in what is published (its scanner flags them)."""
import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _published_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    patterns = [l.strip() for l in (ROOT / ".comfyignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]

    def ignored(path):
        for pat in patterns:
            if pat.endswith("/") and (path.startswith(pat) or f"/{pat}" in f"/{path}"):
                return True
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(Path(path).name, pat):
                return True
        return False
    return [f for f in tracked.stdout.splitlines() if not ignored(f)]


def test_pyproject_is_a_valid_registry_entry():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", project["name"]) and len(project["name"]) < 100
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"] == {"file": "LICENSE"} and (ROOT / "LICENSE").is_file()
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert all(v != "" for v in comfy.values()), "empty [tool.comfy] values"
    assert "web" not in comfy, "WEB_DIRECTORY is declared in __init__.py: declaring it twice loads the JS twice"
    assert re.fullmatch(r"[<>=!~]=?\s*\d+\.\d+(\.\d+)?", comfy["requires-comfyui"])
    assert not any(d.split("=")[0].split(">")[0].strip().lower() in ("torch", "torchvision")
                   for d in project["dependencies"]), "ComfyUI owns torch"


def test_development_files_are_not_published():
    pub = _published_files()
    assert pub and "__init__.py" in pub and "nodes/adapt.py" in pub and "example_workflows/text_adaptation.json" in pub
    assert "example_inputs/pencil_sketch/sketch_1.png" in pub
    for prefix in ("tests/", "benchmarks/", "tools/", ".ci/"):
        assert not [f for f in pub if f.startswith(prefix)], prefix


def test_published_code_has_no_subprocess_exec_eval_or_pickle_load():
    bad = []
    for f in _published_files():
        if not f.endswith(".py"):
            continue
        text = (ROOT / f).read_text(encoding="utf-8")
        for pat in (r"^\s*(import subprocess|from subprocess)", r"\bpickle\.loads?\(", r"(^|[^.\w])(exec|eval)\(",
                    r"\bos\.system\(", r"\btorch\.utils\.cpp_extension\._"):
            if re.search(pat, text, re.M):
                bad.append(f"{f}: {pat}")
    assert not bad, bad


def test_cuda_toolkit_version_is_read_from_its_files(tmp_path):
    from nada_ops.kernels import loader
    j = tmp_path / "j"
    j.mkdir()
    (j / "version.json").write_text('{"cuda": {"version": "12.4.1"}, "cuda_nvcc": {"version": "12.4.131"}}')
    d = tmp_path / "d" / "dist-info" / "nvidia_cuda_nvcc-13.0.88.dist-info"
    d.mkdir(parents=True)
    h = tmp_path / "h" / "include"
    h.mkdir(parents=True)
    (h / "cuda.h").write_text("#pragma once\n#define CUDA_VERSION 11080\n")
    t = tmp_path / "t"
    t.mkdir()
    (t / "version.txt").write_text("CUDA Version 10.2.89\n")
    assert loader.nvcc_version(str(j)) == "12.4"
    assert loader.nvcc_version(str(tmp_path / "d")) == "13.0"
    assert loader.nvcc_version(str(tmp_path / "h")) == "11.8"
    assert loader.nvcc_version(str(t)) == "10.2"
    assert loader.nvcc_version(str(tmp_path / "none")) == "unknown" and loader.nvcc_arches(str(tmp_path / "none")) == []
    a13 = loader.nvcc_arches(str(tmp_path / "d"))
    assert "7.0" not in a13 and {"7.5", "9.0", "10.0", "12.0"} <= set(a13)   # CUDA 13 dropped sm_70
    a118 = loader.nvcc_arches(str(tmp_path / "h"))
    assert "9.0" in a118 and "10.0" not in a118 and "7.0" in a118


def test_suite_runs_from_a_clone_whose_folder_is_no_python_name(tmp_path):
    """README: `git clone ... stylegan-nada`. pytest must not import the pack's __init__.py as a
    test package named after that folder (tests/pack_root_plugin.py)."""
    import shutil
    import sys
    dst = tmp_path / "stylegan-nada"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__",
                                                             "*.png", "*.jpg", "benchmarks"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_nodes_core.py::test_registration_and_prefixes"],
                       cwd=dst, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
