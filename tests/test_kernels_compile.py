"""Builds the compiled extension and checks its code without a GPU.

* ``test_extension_compiles_with_nvcc`` proves that the CUDA sources compile and link with
  nvcc (CI: a CPU machine with the CUDA toolkit).  Without a GPU the build targets a single
  architecture (``$NADA_OPS_TEST_ARCH``, default 9.0); with a GPU it is the loader's build
  for the visible GPUs.  The build goes to the loader's cache, so a rerun only loads it.
* The other tests run the extension's CPU path: the same element functions (bias_act) and
  the same tile load/compute functions and tile plan (upfirdn2d) as the CUDA kernels, run
  block by block with one "thread".  They are compared with the PyTorch reference, and
  gradcheck/gradgradcheck the autograd wiring on top of them.  Without nvcc these tests
  use the CPU-only variant of the extension (needs a C++ compiler and ninja).

Skip everything with NADA_OPS_SKIP_COMPILE_TESTS=1.
"""
from __future__ import annotations

import itertools
import os
import time

import pytest
import torch

from nada_ops.kernels import loader
from nada_ops.kernels.autograd import CompiledOps
from nada_ops.ops.bias_act import ACTIVATIONS, bias_act_reference
from nada_ops.ops.upfirdn2d import _padding4, _pair, upfirdn2d_reference

pytestmark = [
    pytest.mark.compile,
    pytest.mark.skipif(bool(os.environ.get("NADA_OPS_SKIP_COMPILE_TESTS")), reason="NADA_OPS_SKIP_COMPILE_TESTS set"),
]

_BUILD: dict = {}


def _build(with_cuda: bool):
    """Build once per session (cached on disk by the loader)."""
    if with_cuda not in _BUILD:
        t0 = time.monotonic()
        try:
            if with_cuda:
                arches = None if torch.cuda.is_available() else [os.environ.get("NADA_OPS_TEST_ARCH", "9.0")]
                mod = loader.build(arch_list=arches, with_cuda=True)
            else:
                mod = loader.build(with_cuda=False)
            _BUILD[with_cuda] = (mod, None, time.monotonic() - t0)
        except loader.BuildError as exc:
            _BUILD[with_cuda] = (None, str(exc), time.monotonic() - t0)
    return _BUILD[with_cuda]


def _nvcc_available() -> bool:
    return not loader.toolchain_problems(with_cuda=True)


def test_extension_compiles_with_nvcc():
    problems = loader.toolchain_problems(with_cuda=True)
    if problems:
        pytest.skip("cannot compile the CUDA extension here: " + "; ".join(problems))
    mod, err, seconds = _build(True)
    assert mod is not None, err
    print(f"\nCUDA extension built/loaded in {seconds:.1f} s: {mod.__file__}")
    assert mod.with_cuda is True
    assert dict(mod.activations) == {name: spec.cuda_idx for name, spec in ACTIVATIONS.items()}


@pytest.fixture(scope="module")
def ops():
    if _nvcc_available():
        mod, err, _ = _build(True)
    elif not loader.toolchain_problems(with_cuda=False):
        mod, err, _ = _build(False)
    else:
        pytest.skip("no C++ tool chain: " + "; ".join(loader.toolchain_problems(with_cuda=False)))
    assert mod is not None, err
    return CompiledOps(mod, "test build (CPU path)")


# ------------------------------------------------------------------ bias_act

@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_cpu_path_bias_act_matches_reference_float64(ops, act):
    spec = ACTIVATIONS[act]
    torch.manual_seed(0)
    for clamp, (shape, dim), gain in itertools.product([None, 0.5], [((2, 5, 3, 4), 1), ((7,), 0), ((3, 2, 6), 2)],
                                                       [None, 0.6]):
        x = (torch.randn(shape, dtype=torch.float64) * 2).requires_grad_()
        b = torch.randn(shape[dim], dtype=torch.float64, requires_grad=True)
        y_r = bias_act_reference(x, b, dim=dim, act=act, gain=gain, clamp=clamp)
        y_c = ops.bias_act_autograd(x, b, dim=dim, act=act, alpha=spec.alpha,
                                    gain=spec.def_gain if gain is None else gain,
                                    clamp=-1.0 if clamp is None else clamp)
        torch.testing.assert_close(y_c, y_r, rtol=1e-12, atol=1e-12)
        dy = torch.randn_like(y_r)
        for g_c, g_r in zip(torch.autograd.grad(y_c, (x, b), dy), torch.autograd.grad(y_r, (x, b), dy)):
            torch.testing.assert_close(g_c, g_r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_cpu_path_bias_act_gradcheck(ops, act):
    spec = ACTIVATIONS[act]
    torch.manual_seed(1)
    for clamp in (-1.0, 0.7):
        x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, requires_grad=True)

        def fn(x, b):
            return ops.bias_act_autograd(x, b, dim=1, act=act, alpha=spec.alpha, gain=spec.def_gain, clamp=clamp)
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)],
                         ids=str)
def test_cpu_path_bias_act_low_precision(ops, dtype, tol):
    torch.manual_seed(2)
    x = torch.randn(2, 8, 6, 6).to(dtype)
    b = torch.randn(8).to(dtype)
    y = ops.bias_act_autograd(x, b, dim=1, act="lrelu", alpha=0.2, gain=2 ** 0.5, clamp=1.0)
    assert y.dtype == dtype
    exact = bias_act_reference(x.double(), b.double(), act="lrelu", clamp=1.0)
    # One rounding of the exact result (the kernel computes in float32).
    torch.testing.assert_close(y.double(), exact, rtol=tol, atol=tol)
    y_none = ops.bias_act_autograd(x.transpose(2, 3), None, act="linear", alpha=0.0, gain=1.0, clamp=-1.0)
    torch.testing.assert_close(y_none, x.transpose(2, 3))


def test_cpu_path_bias_act_checks_arguments(ops):
    raw = ops.raw
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="bias of shape"):
        raw.bias_act_fwd(x, torch.zeros(4), 1, 3, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="unknown activation"):
        raw.bias_act_fwd(x, torch.zeros(3), 1, 42, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        raw.bias_act_fwd(x.int(), torch.zeros(3).int(), 1, 1, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="swish needs the input"):
        raw.bias_act_grad(x, x, torch.zeros(0), 1, 9, 0.0, 1.0, -1.0, False, 1)


# ----------------------------------------------------------------- upfirdn2d

UPS = [1, 2, 3, (2, 1), (1, 4)]
DOWNS = [1, 2, (1, 3), (3, 2)]
PADS = [0, 1, (2, 1, 2, 1), (2, -1, 0, 3), (-1, -2, 1, 0)]


@pytest.mark.parametrize("fshape", [(1, 1), (3, 3), (4, 4), (2, 5), (4,), (8,)], ids=str)
def test_cpu_path_upfirdn2d_grid_float64(ops, fshape):
    torch.manual_seed(3)
    f = torch.randn(fshape, dtype=torch.float64)
    checked = 0
    for up, down, pad, (flip, gain) in itertools.product(UPS, DOWNS, PADS, [(False, 1.0), (True, 3.0)]):
        x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
        try:
            y_r = upfirdn2d_reference(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
        except RuntimeError:  # padded image smaller than the filter
            continue
        y_c = ops.upfirdn2d_autograd(x, f, up=_pair(up, "up"), down=_pair(down, "down"), padding=_padding4(pad),
                                     flip_filter=flip, gain=gain)
        assert y_c.shape == y_r.shape
        torch.testing.assert_close(y_c, y_r, rtol=1e-12, atol=1e-12)
        dy = torch.randn_like(y_r)
        torch.testing.assert_close(torch.autograd.grad(y_c, x, dy)[0], torch.autograd.grad(y_r, x, dy)[0],
                                   rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("xshape,fshape,up,down,pad", [
    ((1, 2, 3, 200), (4, 4), 2, 1, (2, 1, 2, 1)),          # several tiles along x
    ((1, 1, 150, 3), (3, 3), 1, 1, (1, 1, 1, 1)),          # several tiles along y
    ((40, 30, 4, 4), (4, 4), 2, 1, (2, 1, 2, 1)),          # many planes per tile
    ((1, 2, 20, 20), (40, 40), 1, 1, (20, 19, 20, 19)),    # filter large enough to shrink the tiles
    ((0, 3, 8, 8), (4, 4), 2, 1, (2, 1, 2, 1)),            # empty batch
], ids=["wide", "tall", "planes", "bigfilter", "empty"])
def test_cpu_path_upfirdn2d_tiling(ops, xshape, fshape, up, down, pad):
    torch.manual_seed(4)
    x = torch.randn(xshape, dtype=torch.float64)
    f = torch.rand(fshape, dtype=torch.float64)
    y_r = upfirdn2d_reference(x, f, up=up, down=down, padding=pad)
    y_c = ops.upfirdn2d_autograd(x, f, up=_pair(up, "up"), down=_pair(down, "down"), padding=_padding4(pad))
    torch.testing.assert_close(y_c, y_r, rtol=1e-12, atol=1e-12)


def test_cpu_path_upfirdn2d_plan(ops):
    plan = ops.raw.upfirdn2d_plan
    # 256x256 output of an upsample2d: 64x16 tiles, one plane each, 256 threads.
    tw, th, tp, tin_w, tin_h, threads, gx, gy, gz, smem = plan(512, 128, 128, 256, 256, 2, 2, 1, 1, 4, 4, 4)
    assert (tw, th, tp, threads, gx, gy, gz) == (64, 16, 1, 256, 4, 16, 512)
    assert tin_w >= (63 + 3) // 2 + 1 and smem <= 48 * 1024
    # 4x4 outputs: many planes share a tile; the grid's z extent is capped at 65535.
    tw, th, tp, *_rest, gz, smem = plan(10 ** 8, 2, 2, 4, 4, 2, 2, 1, 1, 4, 4, 4)
    assert (tw, th) == (4, 4) and tp == 64 and gz == 65535
    # A filter too large for shared memory is reported, not mis-computed.
    assert plan(1, 8, 8, 8, 8, 1, 1, 1, 1, 200, 200, 8)[-1] < 0
    x = torch.randn(1, 1, 300, 300, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="too large"):
        ops.raw.upfirdn2d(x, torch.ones(200, 200, dtype=torch.float64), 1, 1, 1, 1, 100, 99, 100, 99)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)],
                         ids=str)
def test_cpu_path_upfirdn2d_low_precision_and_layouts(ops, dtype, tol):
    torch.manual_seed(5)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f) / 64
    base = torch.randn(2, 6, 10, 10).to(dtype)
    for x in (base, base[:, ::2], base.to(memory_format=torch.channels_last), base[..., 1:, 2:]):
        y = ops.upfirdn2d_autograd(x, f, up=(2, 2), padding=(2, 1, 2, 1), gain=4.0)
        assert y.dtype == dtype
        exact = upfirdn2d_reference(x.double(), f.double(), up=2, padding=(2, 1, 2, 1), gain=4)
        torch.testing.assert_close(y.double(), exact, rtol=tol, atol=tol * 4)


def test_cpu_path_upfirdn2d_gradcheck(ops):
    torch.manual_seed(6)
    for fshape, up, down, pad in [((4, 4), (2, 2), (1, 1), (2, 1, 2, 1)), ((3, 5), (2, 1), (1, 2), (1, 2, 0, -1)),
                                  ((6,), (1, 1), (2, 2), (2, 2, 2, 2))]:
        f = torch.rand(fshape, dtype=torch.float64)
        x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)

        def fn(x):
            return ops.upfirdn2d_autograd(x, f, up=up, down=down, padding=pad, flip_filter=False, gain=1.5)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


# ------------------------------------------------------------ whole generator

@pytest.mark.parametrize("conv_clamp", [None, 256.0])
def test_cpu_path_whole_generator_parity(ops, monkeypatch, conv_clamp):
    """The generator with every bias_act/upfirdn2d call routed to the extension's CPU path
    (the code the CUDA kernels share) against the reference, forward and backward."""
    from nada_ops.ops import backend
    from nada_ops.stylegan.config import StyleGAN2Config
    from nada_ops.stylegan.networks import Generator

    calls = []

    def route(op_name, tensor):
        if backend.get_impl() == "compiled":
            calls.append(op_name)
            return ops
        return None
    monkeypatch.setattr(backend, "compiled_module", route)
    torch.manual_seed(0)
    cfg = StyleGAN2Config(img_resolution=32, z_dim=32, w_dim=32, channel_base=512, channel_max=32,
                          num_mapping_layers=2, conv_clamp=conv_clamp)
    G = Generator(cfg)
    for p in G.parameters():
        if p.ndim <= 1:
            p.data.normal_(0, 0.1)
    z = torch.randn(3, cfg.z_dim)
    noises = G.make_noises(3)
    out = {}
    try:
        for impl in ("reference", "compiled"):
            backend.set_impl(impl)
            G.zero_grad(set_to_none=True)
            img = G(z, noises=noises)
            (img * torch.linspace(-1, 1, img.numel()).reshape(img.shape)).sum().backward()
            out[impl] = (img.detach(), {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
    finally:
        backend.set_impl(None)
    assert {"bias_act", "upfirdn2d"} <= set(calls)
    (img_r, g_r), (img_c, g_c) = out["reference"], out["compiled"]
    torch.testing.assert_close(img_c, img_r, rtol=1e-4, atol=1e-5)
    assert g_r.keys() == g_c.keys()
    for name in g_r:
        torch.testing.assert_close(g_c[name], g_r[name], rtol=1e-3,
                                   atol=1e-5 * max(1.0, g_r[name].abs().max().item()), msg=lambda m: f"{name}: {m}")


# ------------------------------------------------- build robustness (tiny sources)

def _tiny_sources(tmp_path, ext_cpp: str):
    src = tmp_path / "src"
    src.mkdir()
    for name in loader.SOURCES + loader.HEADERS:
        (src / name).write_bytes((loader.KERNEL_DIR / name).read_bytes())
    (src / "ext.cpp").write_text(ext_cpp)
    return src


_TINY_EXT = """
#include <pybind11/pybind11.h>
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.attr("with_cuda") = false; }
"""


def test_concurrent_first_builds_share_one_compile(tmp_path):
    """Two processes building the same (tiny) extension into the same empty cache: both get
    a working module and the object file is compiled exactly once."""
    if loader.toolchain_problems(with_cuda=False):
        pytest.skip("; ".join(loader.toolchain_problems(with_cuda=False)))
    import json
    import subprocess
    import sys
    from pathlib import Path
    src = _tiny_sources(tmp_path, _TINY_EXT)
    cache = tmp_path / "cache"
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from nada_ops.kernels import loader\n"
        "loader.KERNEL_DIR = Path(sys.argv[1])\n"
        "t0 = time.time()\n"
        "mod = loader.build(with_cuda=False)\n"
        "print(json.dumps({'file': mod.__file__, 'start': t0, 'end': time.time(), 'cuda': mod.with_cuda}))\n")
    env = dict(os.environ, NADA_OPS_CACHE=str(cache))
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=root) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["file"] == results[1]["file"] and results[0]["cuda"] is False
    assert max(r["start"] for r in results) < min(r["end"] for r in results), "the two builds did not overlap"
    (build_dir,) = [d for d in cache.iterdir() if d.is_dir()]
    log = (build_dir / ".ninja_log").read_text().splitlines()
    assert sum(1 for line in log if "\text.o\t" in line) == 1, log


def test_compile_error_is_reported_with_the_compiler_message(tmp_path, monkeypatch):
    if loader.toolchain_problems(with_cuda=False):
        pytest.skip("; ".join(loader.toolchain_problems(with_cuda=False)))
    src = _tiny_sources(tmp_path, "#error deliberately broken\n" + _TINY_EXT)
    monkeypatch.setattr(loader, "KERNEL_DIR", src)
    monkeypatch.setenv("NADA_OPS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(loader.BuildError, match=r"(?s)failed:.*error.*deliberately broken"):
        loader.build(with_cuda=False)
