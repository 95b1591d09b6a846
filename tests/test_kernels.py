"""The compiled ops: dispatch/fallback, build diagnostics and cache (CPU), the backward
derivations (CPU, against torch autograd of the reference), and parity of the compiled
CUDA kernels with the reference (GPU tests, skipped without CUDA).

The CPU run of the real C++ kernel code is in test_kernels_compile.py (needs a build).
"""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nada_ops.kernels import loader
from nada_ops.kernels.autograd import CompiledOps, upfirdn2d_grad_args
from nada_ops.ops import backend, bias_act, upfirdn2d
from nada_ops.ops.bias_act import ACTIVATIONS, bias_act_reference
from nada_ops.ops.upfirdn2d import setup_filter, upfirdn2d_reference

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _restore_impl():
    yield
    backend.set_impl(None)


# ============================================================ dispatch on CPU

def test_auto_on_cpu_uses_reference_without_building(monkeypatch):
    def boom(op_name):
        raise AssertionError("the extension must not be built for CPU tensors")
    monkeypatch.setattr(loader, "get_extension", boom)
    monkeypatch.delenv("NADA_OPS_IMPL", raising=False)
    backend.set_impl("auto")
    torch.manual_seed(0)
    x, b = torch.randn(2, 6, 5, 5), torch.randn(6)
    assert torch.equal(bias_act(x, b, act="lrelu", clamp=0.7),
                       bias_act_reference(x, b, act="lrelu", clamp=0.7))
    f = setup_filter([1, 3, 3, 1])
    assert torch.equal(upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4),
                       upfirdn2d_reference(x, f, up=2, padding=[2, 1, 2, 1], gain=4))


def test_reference_forced_never_builds(monkeypatch):
    monkeypatch.setattr(loader, "get_extension", lambda op: pytest.fail("must not build"))
    backend.set_impl("reference")
    fake_cuda = SimpleNamespace(is_cuda=True, device=SimpleNamespace(type="cuda"), dtype=torch.float32)
    assert backend.compiled_module("bias_act", fake_cuda) is None


@pytest.mark.parametrize("how", ["set_impl", "env"])
def test_forced_compiled_on_cpu_errors_clearly(monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("NADA_OPS_IMPL", "compiled")
    else:
        backend.set_impl("compiled")
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(backend.CompiledOpsUnavailable, match=r"bias_act.*forced.*'cpu'.*CUDA"):
        bias_act(x, torch.zeros(3), act="lrelu")
    with pytest.raises(backend.CompiledOpsUnavailable, match=r"upfirdn2d.*forced.*CUDA"):
        upfirdn2d(x, setup_filter([1, 3, 3, 1]), up=2, padding=[2, 1, 2, 1])


def test_unknown_impl_rejected(monkeypatch):
    with pytest.raises(ValueError):
        backend.set_impl("fast")
    monkeypatch.setenv("NADA_OPS_IMPL", "fast")
    with pytest.raises(ValueError, match="NADA_OPS_IMPL"):
        backend.get_impl()


def _fake_cuda_tensor(dtype=torch.float32):
    return SimpleNamespace(is_cuda=True, device=SimpleNamespace(type="cuda"), dtype=dtype)


def test_build_failure_reported_once_then_reference(monkeypatch):
    calls = []

    def failing_load():
        calls.append(1)
        return None, "nvcc (the CUDA compiler) was not found"
    monkeypatch.setattr(loader, "_load", failing_load)
    loader._reset_for_tests()
    try:
        with pytest.warns(RuntimeWarning, match=r"unavailable, using the PyTorch reference.*nvcc"):
            assert backend.compiled_module("bias_act", _fake_cuda_tensor()) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second report would raise here
            assert backend.compiled_module("upfirdn2d", _fake_cuda_tensor()) is None
            assert loader.get_extension("bias_act") == (None, "nvcc (the CUDA compiler) was not found")
            backend.set_impl("compiled")
            with pytest.raises(backend.CompiledOpsUnavailable, match="unavailable: nvcc"):
                backend.compiled_module("bias_act", _fake_cuda_tensor())
        assert len(calls) == 1
    finally:
        loader._reset_for_tests()


def test_unsupported_dtype_falls_back(monkeypatch):
    ops = CompiledOps(raw=None)
    monkeypatch.setattr(loader, "get_extension", lambda op: (ops, None))
    backend.set_impl("auto")
    assert backend.compiled_module("bias_act", _fake_cuda_tensor(torch.float32)) is ops
    assert backend.compiled_module("bias_act", _fake_cuda_tensor(torch.int32)) is None
    backend.set_impl("compiled")
    with pytest.raises(backend.CompiledOpsUnavailable, match="dtype"):
        backend.compiled_module("bias_act", _fake_cuda_tensor(torch.complex64))


def test_filter_requiring_grad_takes_reference(monkeypatch):
    monkeypatch.setattr(backend, "compiled_module", lambda op, t: pytest.fail("must not dispatch"))
    x = torch.randn(1, 2, 6, 6)
    f = torch.rand(3, 3, requires_grad=True)
    y = upfirdn2d(x, f, padding=1)
    y.sum().backward()
    assert f.grad is not None


def test_load_on_this_machine_reports_reason_without_gpu():
    if HAS_CUDA:
        pytest.skip("a GPU is present")
    ops, why = loader._load()
    assert ops is None and "CUDA" in why


def test_import_does_not_build():
    code = textwrap.dedent("""
        import sys
        import nada_ops.ops, nada_ops.kernels, nada_ops.kernels.loader, nada_ops.stylegan.networks
        from nada_ops.kernels import loader
        assert not loader._state["tried"]
        assert "nada_ops.kernels.autograd" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ======================================================== build diagnostics

def test_missing_nvcc_is_named(monkeypatch, tmp_path):
    from torch.utils import cpp_extension
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    monkeypatch.setattr(loader, "DEFAULT_CUDA_HOMES", ())
    home, why = loader.find_cuda_home()
    assert home is None and "nvcc" in why and "CUDA_HOME" in why
    assert any("nvcc" in p for p in loader.toolchain_problems(with_cuda=True))
    with pytest.raises(loader.BuildError, match="nvcc"):
        loader.build(arch_list=["9.0"])


def test_cuda_home_found_with_headers(monkeypatch, tmp_path):
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (home / "include" / "cuda_runtime_api.h").write_text("")
    # A wrapper nvcc without headers next to it must not win over a real toolkit.
    wrapper = tmp_path / "wrapper" / "bin"
    wrapper.mkdir(parents=True)
    (wrapper / "nvcc").write_text("#!/bin/sh\n")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path / "wrapper"))
    monkeypatch.setattr(loader, "DEFAULT_CUDA_HOMES", (str(home),))
    # PATH only has the wrapper (CI puts a real toolkit's bin/ on PATH: keep it out of this test).
    monkeypatch.setattr(loader.shutil, "which", lambda name: str(wrapper / name) if name == "nvcc" else None)
    assert loader.find_cuda_home() == (str(home), None)


def test_missing_ninja_and_compiler_are_named(monkeypatch):
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    problems = loader.toolchain_problems(with_cuda=False)
    assert any("ninja" in p for p in problems)
    assert any("C++ compiler" in p and "no-such-compiler-xyz" in p for p in problems)
    with pytest.raises(loader.BuildError, match="ninja.*C\\+\\+ compiler"):
        loader.build(with_cuda=False)


def test_build_without_gpu_needs_an_arch(monkeypatch):
    if HAS_CUDA:
        pytest.skip("a GPU is present")
    monkeypatch.setattr(loader, "toolchain_problems", lambda with_cuda=True: [])
    monkeypatch.setattr(loader, "find_cuda_home", lambda: ("/nonexistent", None))
    monkeypatch.setattr(loader, "nvcc_version", lambda home: "13.0")
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    with pytest.raises(loader.BuildError, match="architecture"):
        loader.build()


def test_cache_key_and_location(monkeypatch, tmp_path):
    monkeypatch.setenv("NADA_OPS_CACHE", str(tmp_path / "c"))
    assert loader.cache_root() == tmp_path / "c"
    monkeypatch.delenv("NADA_OPS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loader.cache_root() == tmp_path / "xdg" / "nada_ops" / "kernels"
    key = loader.build_key(True, ["9.0"], "13.0")
    assert f"torch{torch.__version__}".replace("+", "+") in key
    assert f"cu{torch.version.cuda}" in key and "nvcc13.0" in key and "sm90" in key
    assert loader.build_key(True, ["8.6", "9.0+PTX"], "13.0") != key
    assert "cpuonly" in loader.build_key(False, [])
    # Any change of a source file gives a new folder (no stale library is ever loaded).
    copy = tmp_path / "src"
    copy.mkdir()
    for name in loader.SOURCES + loader.HEADERS:
        (copy / name).write_bytes((loader.KERNEL_DIR / name).read_bytes())
    monkeypatch.setattr(loader, "KERNEL_DIR", copy)
    assert loader.build_key(True, ["9.0"], "13.0") == key
    with open(copy / "upfirdn2d.cu", "a") as fh:
        fh.write("\n// changed\n")
    assert loader.build_key(True, ["9.0"], "13.0") != key


def test_device_arch_list_clamps_to_nvcc(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    caps = {0: (8, 6), 1: (13, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: caps[i])
    monkeypatch.setattr(loader, "nvcc_arches", lambda home: ["7.5", "8.0", "8.6", "9.0", "12.0"])
    assert loader.device_arch_list("/cuda") == ["12.0+PTX", "8.6"]


def test_file_lock_serialises_threads(tmp_path):
    lock = tmp_path / "cache" / "nada_build.lock"
    events = []

    def worker(i):
        with loader.file_lock(lock):
            events.append(("in", i))
            time.sleep(0.05)
            events.append(("out", i))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(events) == 8
    for k in range(0, 8, 2):  # strictly alternating in/out of the same worker
        assert events[k][0] == "in" and events[k + 1] == ("out", events[k][1])


@pytest.mark.skipif(os.name == "nt", reason="POSIX lock test")
def test_file_lock_excludes_other_processes(tmp_path):
    lock = tmp_path / "nada_build.lock"
    code = textwrap.dedent(f"""
        import sys, time
        from nada_ops.kernels.loader import file_lock
        from pathlib import Path
        with file_lock(Path({str(lock)!r})):
            print("locked", flush=True)
            time.sleep(1.5)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(TimeoutError):
            with loader.file_lock(lock, timeout=0.3):
                pass
        t0 = time.monotonic()
        with loader.file_lock(lock, timeout=30):
            waited = time.monotonic() - t0
        assert waited > 0.2
    finally:
        proc.wait(timeout=30)


# ======================================= backward derivations (CPU, reference)

def _pad_cases():
    return [(0, 0, 0, 0), (1, 1, 1, 1), (2, 1, 2, 1), (3, -1, 0, 2), (-1, -2, 1, 0), (0, 2, -2, 3)]


@pytest.mark.parametrize("up,down", [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((1, 1), (2, 2)), ((2, 1), (1, 3)),
                                     ((3, 2), (2, 1)), ((4, 4), (1, 1)), ((2, 2), (2, 2))])
@pytest.mark.parametrize("fshape", [(1, 1), (2, 2), (3, 4), (4, 4), (5, 2), (6,), (8,)])
def test_upfirdn2d_backward_is_upfirdn2d_of_dy(up, down, fshape):
    """dx = upfirdn2d(dy, f, up=down, down=up, pad', flip_filter toggled), same gain."""
    torch.manual_seed(hash((up, down, fshape)) % 1000)
    f = torch.randn(fshape, dtype=torch.float64)
    fh, fw = (fshape[0], fshape[-1])
    checked = 0
    for pad, flip, gain in itertools.product(_pad_cases(), [False, True], [1.0, 2.5]):
        x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
        px0, px1, py0, py1 = pad
        if 7 * up[1] + py0 + py1 < fh or 9 * up[0] + px0 + px1 < fw:
            continue
        y = upfirdn2d_reference(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
        dy = torch.randn_like(y)
        (dx_auto,) = torch.autograd.grad(y, x, dy)
        gux, gdx, gpx0, gpx1 = upfirdn2d_grad_args(9, y.shape[3], up[0], down[0], px0, fw)
        guy, gdy, gpy0, gpy1 = upfirdn2d_grad_args(7, y.shape[2], up[1], down[1], py0, fh)
        dx = upfirdn2d_reference(dy, f, up=(gux, guy), down=(gdx, gdy), padding=(gpx0, gpx1, gpy0, gpy1),
                                 flip_filter=not flip, gain=gain)
        assert dx.shape == x.shape
        torch.testing.assert_close(dx, dx_auto, rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked > 0


class RefKernels:
    """Stand-in for the compiled module: the raw kernel interface written with torch ops and
    an independent Python statement of the derivative formulas.  Lets the autograd
    Functions of CompiledOps be checked without any build."""

    with_cuda = False

    @staticmethod
    def _spec(idx):
        return next(s for s in ACTIVATIONS.values() if s.cuda_idx == idx)

    @staticmethod
    def _bias(b, dim, ndim):
        if b.numel() == 0:
            return 0
        return b.reshape([-1 if i == dim else 1 for i in range(ndim)])

    def bias_act_fwd(self, x, b, dim, act, alpha, gain, clamp):
        spec = self._spec(act)
        y = spec.func(x + self._bias(b, dim, x.ndim), alpha) * gain
        return y.clamp(-clamp, clamp) if clamp >= 0 else y

    def bias_act_grad(self, dy, ref, b, dim, act, alpha, gain, clamp, ref_is_x, order):
        name = self._spec(act).name
        if ref.numel() == 0:
            return dy * gain if order == 1 else torch.zeros_like(dy)
        if ref_is_x:
            u = ref + self._bias(b, dim, ref.ndim)
            s = torch.sigmoid(u)
            d1 = {"linear": torch.ones_like(u), "relu": (u > 0).to(u), "lrelu": torch.where(u > 0, 1.0, alpha),
                  "tanh": 1 - torch.tanh(u) ** 2, "sigmoid": s * (1 - s), "elu": torch.where(u > 0, 1.0, u.exp()),
                  "selu": torch.where(u > 0, 1.0507009873554805, 1.0507009873554805 * 1.6732632423543772 * u.exp()),
                  "softplus": torch.where(u > 20, 1.0, s), "swish": s + u * s * (1 - s)}
            d2 = {"tanh": -2 * torch.tanh(u) * (1 - torch.tanh(u) ** 2), "sigmoid": s * (1 - s) * (1 - 2 * s),
                  "elu": torch.where(u > 0, 0.0, u.exp()),
                  "selu": torch.where(u > 0, 0.0, 1.0507009873554805 * 1.6732632423543772 * u.exp()),
                  "softplus": torch.where(u > 20, 0.0, s * (1 - s)), "swish": s * (1 - s) * (2 + u * (1 - 2 * s))}
            mask = 1.0
            if clamp >= 0:
                v = self._spec(act).func(u, alpha) * gain
                mask = ((v >= -clamp) & (v <= clamp)).to(u)
            d = d1[name] if order == 1 else d2.get(name, torch.zeros_like(u))
            return dy * gain * d * mask
        y = ref
        mask = (y.abs() < clamp).to(y) if clamp >= 0 else 1.0
        t = y / gain
        d1 = {"linear": torch.ones_like(t), "relu": (t > 0).to(t), "lrelu": torch.where(t > 0, 1.0, alpha),
              "tanh": 1 - t * t, "sigmoid": t * (1 - t), "elu": torch.where(t > 0, 1.0, t + 1),
              "selu": torch.where(t > 0, 1.0507009873554805, t + 1.0507009873554805 * 1.6732632423543772),
              "softplus": 1 - (-t).exp()}
        d2 = {"tanh": -2 * t, "sigmoid": 1 - 2 * t, "elu": (t <= 0).to(t), "selu": (t <= 0).to(t),
              "softplus": (-t).exp()}
        if order == 1:
            return dy * gain * d1[name] * mask
        return dy * d2.get(name, torch.zeros_like(t)) * mask

    def upfirdn2d(self, x, fc, ux, uy, dx, dy, px0, px1, py0, py1):
        # fc is already a correlation filter with the gain: flip_filter=True keeps it as is.
        return upfirdn2d_reference(x, fc, up=(ux, uy), down=(dx, dy), padding=(px0, px1, py0, py1),
                                   flip_filter=True)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("clamp", [None, 0.6])
def test_bias_act_autograd_functions_with_stand_in_kernels(act, clamp):
    """First and second derivatives of the CompiledOps autograd wiring (stand-in kernels)
    equal torch autograd of the reference, and pass gradcheck/gradgradcheck."""
    ops = CompiledOps(RefKernels())
    spec = ACTIVATIONS[act]
    torch.manual_seed(3)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    c = -1.0 if clamp is None else clamp

    def fn(x, b):
        return ops.bias_act_autograd(x, b, dim=1, act=act, alpha=spec.alpha, gain=spec.def_gain, clamp=c)

    def fr(x, b):
        return bias_act_reference(x, b, dim=1, act=act, clamp=clamp)
    torch.testing.assert_close(fn(x, b), fr(x, b))
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
    dy = torch.randn(3, 4, 5, dtype=torch.float64)
    g_ops = torch.autograd.grad(fn(x, b), (x, b), dy)
    g_ref = torch.autograd.grad(fr(x, b), (x, b), dy)
    for a, r in zip(g_ops, g_ref):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("fshape", [(4, 4), (3, 2), (8,)])
def test_upfirdn2d_autograd_functions_with_stand_in_kernels(fshape):
    ops = CompiledOps(RefKernels())
    torch.manual_seed(4)
    f = torch.rand(fshape, dtype=torch.float64)
    for up, down, pad, flip, gain in [((2, 2), (1, 1), (2, 1, 2, 1), False, 4.0), ((1, 1), (2, 2), (1, 1, 1, 1), True, 1.0),
                                      ((2, 1), (1, 3), (3, -1, 0, 2), False, 0.5)]:
        x = torch.randn(1, 1, 7, 8, dtype=torch.float64, requires_grad=True)

        def fn(x):
            return ops.upfirdn2d_autograd(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
        y_ref = upfirdn2d_reference(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
        torch.testing.assert_close(fn(x), y_ref)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_bias_act_mixed_dtype_promotes_like_reference():
    ops = CompiledOps(RefKernels())
    x = torch.randn(2, 3, 4).half()
    b = torch.randn(3)
    y = ops.bias_act_autograd(x, b, dim=1, act="lrelu", alpha=0.2, gain=math.sqrt(2))
    assert y.dtype == bias_act_reference(x, b, act="lrelu").dtype


# ============================================================ GPU parity

TOL = {  # (rtol, atol) for inputs of unit scale; compiled vs reference in the same dtype
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (4e-2, 4e-2),
}


def _dtypes():
    out = [torch.float32, torch.float16, torch.float64]
    if HAS_CUDA and torch.cuda.is_bf16_supported():
        out.append(torch.bfloat16)
    return out


@pytest.fixture(scope="module")
def compiled_ops():
    if not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    ops, why = loader.get_extension("bias_act")
    if ops is None:
        if os.environ.get("NADA_OPS_REQUIRE_COMPILED"):
            pytest.fail(f"the compiled extension did not build: {why}")
        pytest.skip(f"the compiled extension did not build: {why}")
    return ops


def _both(fn, *tensors):
    """Run ``fn`` with the reference and with the compiled path on clones of ``tensors``;
    returns (outputs, grads) for both."""
    results = []
    for impl in ("reference", "compiled"):
        backend.set_impl(impl)
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
        y = fn(*leaves)
        results.append((y, leaves))
    backend.set_impl(None)
    return results


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", _dtypes(), ids=str)
@pytest.mark.parametrize("act", ["linear", "lrelu", "relu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
@pytest.mark.parametrize("shape,dim", [((4, 32, 16, 16), 1), ((8, 512), 1), ((3, 7, 5), 2), ((1000,), 0),
                                       ((2, 3, 1, 1), 1)])
@pytest.mark.parametrize("gain,clamp", [(None, None), (None, 0.5), (0.7, None), (2.0, 256.0)])
def test_gpu_bias_act_parity(compiled_ops, dtype, act, shape, dim, gain, clamp):
    torch.manual_seed(0)
    rtol, atol = TOL[dtype]
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(shape[dim], device="cuda", dtype=dtype, requires_grad=True)
    (y_r, (x_r, b_r)), (y_c, (x_c, b_c)) = _both(
        lambda x, b: bias_act(x, b, dim=dim, act=act, gain=gain, clamp=clamp), x, b)
    assert y_c.dtype == y_r.dtype and y_c.shape == y_r.shape
    torch.testing.assert_close(y_c, y_r, rtol=rtol, atol=atol)
    dy = torch.randn_like(y_r)
    gx_r, gb_r = torch.autograd.grad(y_r, (x_r, b_r), dy)
    gx_c, gb_c = torch.autograd.grad(y_c, (x_c, b_c), dy)
    # Elements within rounding of the clamp boundary may be clamped by one and not the other.
    keep = torch.ones_like(y_r, dtype=torch.bool)
    if clamp is not None:
        exact = bias_act_reference(x.detach().double(), b.detach().double(), dim=dim, act=act, gain=gain)
        keep = (exact.abs() - clamp).abs() > 8 * clamp * max(torch.finfo(dtype).eps, 1e-6)
    # Gradients from y (tanh, sigmoid, ...) see the output's rounding: twice the tolerance.
    g_rtol, g_atol = (rtol, atol) if dtype in (torch.float32, torch.float64) else (2 * rtol, 2 * atol)
    torch.testing.assert_close(gx_c[keep], gx_r[keep], rtol=g_rtol, atol=g_atol)
    if bool(keep.all()):
        scale = max(1.0, math.sqrt(x.numel() / shape[dim]))
        torch.testing.assert_close(gb_c, gb_r, rtol=g_rtol, atol=g_atol * scale)


@gpu
@needs_cuda
def test_gpu_bias_act_no_bias_and_noncontiguous(compiled_ops):
    torch.manual_seed(1)
    x = torch.randn(4, 16, 8, 8, device="cuda").transpose(1, 3)  # non-contiguous
    for b in (None, torch.randn(8, device="cuda")):
        (y_r, _), (y_c, _) = _both(lambda x: bias_act(x, b, dim=1, act="lrelu", clamp=1.0), x)
        torch.testing.assert_close(y_c, y_r, rtol=1e-5, atol=1e-5)
    empty = torch.randn(0, 8, 4, 4, device="cuda")
    backend.set_impl("compiled")
    assert bias_act(empty, torch.randn(8, device="cuda"), act="lrelu").shape == empty.shape


UPFIRDN_GRID = [
    # (x shape, f shape, up, down, padding)
    ((2, 8, 16, 16), (4, 4), 2, 1, (2, 1, 2, 1)),        # upsample2d with [1,3,3,1]
    ((2, 8, 33, 33), (4, 4), 1, 1, (1, 1, 1, 1)),        # conv-up FIR after the transposed conv
    ((2, 8, 16, 16), (4, 4), 1, 2, (1, 1, 1, 1)),        # downsample2d
    ((1, 3, 64, 64), (4, 4), 2, 1, (2, 1, 2, 1)),        # ToRGB image skip at 128 px
    ((2, 4, 9, 13), (3, 5), (2, 1), (1, 3), (3, -1, 0, 2)),
    ((2, 4, 12, 10), (8,), 2, 1, (4, 3, 4, 3)),          # separable 1D filter
    ((2, 4, 12, 10), (12,), 1, 2, (5, 5, 5, 5)),
    ((1, 2, 7, 7), (1, 1), 4, 4, 0),
    ((3, 5, 20, 17), (5, 5), 3, 2, (-2, 4, 1, -1)),
    ((1, 1, 5, 300), (2, 6), 1, 1, (0, 0, 1, 0)),        # wide rows: several tiles
    ((64, 32, 4, 4), (4, 4), 2, 1, (2, 1, 2, 1)),        # many small planes per tile
    ((1, 2, 16, 16), (24, 24), 1, 1, (12, 11, 12, 11)),  # big filter
]


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", _dtypes(), ids=str)
@pytest.mark.parametrize("case", range(len(UPFIRDN_GRID)))
@pytest.mark.parametrize("flip,gain", [(False, 1.0), (True, 3.0)])
def test_gpu_upfirdn2d_parity(compiled_ops, dtype, case, flip, gain):
    xs, fs, up, down, pad = UPFIRDN_GRID[case]
    torch.manual_seed(case)
    rtol, atol = TOL[dtype]
    x = torch.randn(xs, device="cuda", dtype=dtype, requires_grad=True)
    f = torch.rand(fs, device="cuda") + 0.1
    f = f / f.sum()
    (y_r, (x_r,)), (y_c, (x_c,)) = _both(
        lambda x: upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain), x)
    assert y_c.shape == y_r.shape and y_c.dtype == y_r.dtype
    scale = gain * max(1, math.prod(up if isinstance(up, tuple) else (up, up)))
    torch.testing.assert_close(y_c, y_r, rtol=rtol, atol=atol * scale)
    dy = torch.randn_like(y_r)
    (g_r,) = torch.autograd.grad(y_r, x_r, dy)
    (g_c,) = torch.autograd.grad(y_c, x_c, dy)
    torch.testing.assert_close(g_c, g_r, rtol=rtol, atol=atol * scale)


@gpu
@needs_cuda
def test_gpu_upfirdn2d_noncontiguous_and_channels_last(compiled_ops):
    f = setup_filter([1, 3, 3, 1], device="cuda")
    base = torch.randn(2, 16, 12, 12, device="cuda")
    for x in (base[:, ::2], base.to(memory_format=torch.channels_last), base[..., 1:-1, 2:]):
        (y_r, _), (y_c, _) = _both(lambda x: upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4), x)
        torch.testing.assert_close(y_c, y_r, rtol=1e-5, atol=1e-5)


@gpu
@needs_cuda
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_gpu_bias_act_gradcheck_float64(compiled_ops, act):
    torch.manual_seed(2)
    spec = ACTIVATIONS[act]
    for clamp in (-1.0, 0.8):
        x = torch.randn(2, 3, 4, 5, device="cuda", dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, device="cuda", dtype=torch.float64, requires_grad=True)

        def fn(x, b):
            return compiled_ops.bias_act_autograd(x, b, dim=1, act=act, alpha=spec.alpha, gain=spec.def_gain,
                                                  clamp=clamp)
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@gpu
@needs_cuda
@pytest.mark.parametrize("fshape,up,down,pad", [((4, 4), (2, 2), (1, 1), (2, 1, 2, 1)), ((3, 5), (2, 1), (1, 2), (1, 2, 0, -1)),
                                                ((6,), (1, 1), (2, 2), (2, 2, 2, 2))])
def test_gpu_upfirdn2d_gradcheck_float64(compiled_ops, fshape, up, down, pad):
    torch.manual_seed(5)
    f = torch.rand(fshape, device="cuda", dtype=torch.float64)
    x = torch.randn(2, 3, 7, 8, device="cuda", dtype=torch.float64, requires_grad=True)

    def fn(x):
        return compiled_ops.upfirdn2d_autograd(x, f, up=up, down=down, padding=pad, flip_filter=False, gain=1.5)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@gpu
@needs_cuda
@pytest.mark.parametrize("conv_clamp", [None, 256.0])
def test_gpu_whole_generator_parity(compiled_ops, conv_clamp):
    # Exact fp32 convolutions/matmuls: TF32 would turn 1-ulp differences into 1e-3 ones.
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        _generator_parity(conv_clamp)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _generator_parity(conv_clamp):
    from nada_ops.stylegan.config import StyleGAN2Config
    from nada_ops.stylegan.networks import Generator
    torch.manual_seed(0)
    cfg = StyleGAN2Config(img_resolution=64, z_dim=64, w_dim=64, channel_base=2048, channel_max=64,
                          num_mapping_layers=2, conv_clamp=conv_clamp)
    G = Generator(cfg).cuda()
    for p in G.parameters():  # non-zero noise strengths and biases exercise every path
        if p.ndim <= 1:
            p.data.normal_(0, 0.1)
    z = torch.randn(4, cfg.z_dim, device="cuda")
    noises = G.make_noises(4, device="cuda")
    out = {}
    for impl in ("reference", "compiled"):
        backend.set_impl(impl)
        G.zero_grad(set_to_none=True)
        img = G(z, noises=noises)
        (img * torch.linspace(-1, 1, img.numel(), device="cuda").reshape(img.shape)).sum().backward()
        out[impl] = (img.detach(), {n: p.grad.detach().clone() for n, p in G.named_parameters() if p.grad is not None})
    backend.set_impl(None)
    img_r, g_r = out["reference"]
    img_c, g_c = out["compiled"]
    torch.testing.assert_close(img_c, img_r, rtol=1e-4, atol=1e-4)
    assert g_r.keys() == g_c.keys()
    for name in g_r:
        torch.testing.assert_close(g_c[name], g_r[name], rtol=1e-3, atol=1e-4 * max(1.0, g_r[name].abs().max().item()),
                                   msg=lambda m: f"{name}: {m}")
    # fp16 synthesis (the trainer's mixed precision): looser, same code paths.
    ws = G.map(z)
    imgs = {}
    for impl in ("reference", "compiled"):
        backend.set_impl(impl)
        with torch.no_grad():
            imgs[impl] = G.synthesis(ws, noises=noises, dtype=torch.float16)
    backend.set_impl(None)
    scale = imgs["reference"].abs().max().item()
    torch.testing.assert_close(imgs["compiled"], imgs["reference"], rtol=2e-2, atol=2e-2 * max(scale, 1.0))
