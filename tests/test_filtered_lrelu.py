"""filtered_lrelu (StyleGAN3's alias-free leaky ReLU): the reference against an independent
NumPy reading of the specification, the dispatch rules, the autograd wiring of the compiled op
(with a pure-PyTorch stand-in for the kernel: no build needed), the extension's CPU run of the
CUDA kernel's tile code (needs a C++ tool chain; marked ``compile``), and GPU parity (``gpu``).

The reference equals NVIDIA's ``_filtered_lrelu_ref`` (checked outside CI with NVIDIA's code:
float64 to 1e-12, float32 bit for bit, values and gradients; README *Verification*)."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from nada_ops.kernels import loader
from nada_ops.kernels.autograd import CompiledOps, FLGeometry
from nada_ops.ops import backend, filtered_lrelu
from nada_ops.ops.filtered_lrelu import filtered_lrelu_reference
from nada_ops.ops.upfirdn2d import upfirdn2d_reference

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _restore_impl():
    yield
    backend.set_impl(None)


def _filters(fu_kind, fd_kind, up, down, gen, dtype=torch.float32):
    def one(kind, factor):
        if kind == "none":
            return None
        n = 6 * factor if factor > 1 else 3
        shape = [n] if kind == "1d" else [n, n]
        return torch.randn(shape, generator=gen, dtype=dtype)
    return one(fu_kind, up), one(fd_kind, down)


# ----------------------------------------------------------------- the specification
def _spec_numpy(x, fu, fd, b, up, down, pad, gain, slope, clamp):
    """The docstring of nada_ops.ops.filtered_lrelu, step by step with explicit loops (float64)."""
    x = x + b[None, :, None, None]
    n, c, h, w = x.shape
    px0, px1, py0, py1 = pad
    fu2 = np.ones((1, 1)) if fu is None else (np.outer(fu, fu) if fu.ndim == 1 else fu)
    fd2 = np.ones((1, 1)) if fd is None else (np.outer(fd, fd) if fd.ndim == 1 else fd)
    xu = np.zeros((n, c, h * up, w * up))
    xu[:, :, ::up, ::up] = x
    big = np.zeros((n, c, h * up + 2 * 64, w * up + 2 * 64))
    big[:, :, 64:64 + h * up, 64:64 + w * up] = xu
    xp = big[:, :, 64 - py0: 64 + h * up + py1, 64 - px0: 64 + w * up + px1]

    def conv_valid(a, f):        # true convolution, output where the filter lies inside
        fh, fw = f.shape
        out = np.zeros((n, c, a.shape[2] - fh + 1, a.shape[3] - fw + 1))
        for i in range(fh):
            for j in range(fw):
                out += f[fh - 1 - i, fw - 1 - j] * a[:, :, i:i + out.shape[2], j:j + out.shape[3]]
        return out
    t = conv_valid(xp, fu2) * up * up
    t = np.where(t > 0, t, t * slope) * gain
    if clamp is not None:
        t = np.clip(t, -clamp, clamp)
    return conv_valid(t, fd2)[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,fu_kind,fd_kind,clamp", [
    (2, 2, "1d", "1d", None), (4, 2, "1d", "2d", 0.5), (1, 1, "none", "none", None), (2, 1, "2d", "1d", 0.7),
    (1, 2, "none", "2d", None)])
def test_reference_is_the_specification(up, down, fu_kind, fd_kind, clamp):
    g = torch.Generator().manual_seed(up * 10 + down)
    fu, fd = _filters(fu_kind, fd_kind, up, down, g, torch.float64)
    x = torch.randn(2, 3, 12, 11, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    pad = (9, 8, 10, 7) if up > 1 else (1, 2, 0, 1)
    backend.set_impl("reference")
    y = filtered_lrelu_reference(x, fu, fd, b, up=up, down=down, padding=pad, gain=1.3, slope=0.2, clamp=clamp)
    want = _spec_numpy(x.numpy(), None if fu is None else fu.numpy(), None if fd is None else fd.numpy(), b.numpy(),
                       up, down, pad, 1.3, 0.2, clamp)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


def test_reference_gradients():
    g = torch.Generator().manual_seed(0)
    fu, fd = torch.rand(4, generator=g, dtype=torch.float64), torch.rand(3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(x, b):
        return filtered_lrelu_reference(x, fu, fd, b, up=2, down=2, padding=(2, 1, 2, 1), gain=1.4, clamp=2.0)
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)


def test_arguments_are_checked():
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="bias"):
        filtered_lrelu(x, b=torch.zeros(3))
    with pytest.raises(ValueError, match="up and down"):
        filtered_lrelu(x, up=0)
    with pytest.raises(ValueError, match="no output pixels"):
        filtered_lrelu(x, torch.ones(12), up=2, padding=-20)
    with pytest.raises(ValueError, match="gain"):
        filtered_lrelu(x, gain=0.0)


# ----------------------------------------------------------------- dispatch
def test_cpu_and_auto_use_the_reference(monkeypatch):
    monkeypatch.setattr(loader, "get_extension", lambda op: pytest.fail("must not build for CPU tensors"))
    x = torch.randn(1, 2, 6, 6)
    backend.set_impl("auto")
    assert torch.equal(filtered_lrelu(x, torch.ones(4) / 4, up=2, padding=3),
                       filtered_lrelu_reference(x, torch.ones(4) / 4, up=2, padding=3))
    backend.set_impl("compiled")
    with pytest.raises(backend.CompiledOpsUnavailable, match=r"filtered_lrelu.*forced.*CUDA"):
        filtered_lrelu(x)


def test_auto_keeps_the_reference_until_the_kernel_has_run_on_a_gpu(monkeypatch):
    """backend.AUTO_COMPILED: 'auto' takes bias_act/upfirdn2d compiled, filtered_lrelu not (yet)."""
    ops = CompiledOps(raw=None)
    monkeypatch.setattr(loader, "get_extension", lambda op: (ops, None))
    fake = type("T", (), {"is_cuda": True, "dtype": torch.float32, "device": torch.device("cpu")})()
    backend.set_impl("auto")
    assert backend.compiled_module("bias_act", fake) is ops
    assert backend.compiled_module("filtered_lrelu", fake) is None
    backend.set_impl("compiled")
    assert backend.compiled_module("filtered_lrelu", fake) is ops


def test_filters_requiring_grad_take_the_reference(monkeypatch):
    real = backend.compiled_module

    def no_fused(op, t):
        assert op != "filtered_lrelu", "must not dispatch filtered_lrelu"
        return real(op, t)
    monkeypatch.setattr(backend, "compiled_module", no_fused)
    f = torch.rand(4, requires_grad=True)
    filtered_lrelu(torch.randn(1, 1, 5, 5), f, up=2, padding=3).sum().backward()
    assert f.grad is not None


# ------------------------------------------------ autograd wiring with a stand-in kernel
class StandInKernel:
    """The raw kernel's interface (nada_ops/kernels/filtered_lrelu.h) in plain PyTorch, written
    from the header's equations with upfirdn2d_reference: lets CI check the Python side (filter
    preparation, the transposed geometry of the backward, masks, double backward) without a build."""

    def filtered_lrelu(self, x, b, f1, f2, mask, t_h, t_w, out_h, out_w, up_x, up_y, pad_x0, pad_y0, down_x,
                       down_y, q_x0, q_y0, mode, gain, slope, clamp):
        n, c, h, w = x.shape
        if b.numel():
            x = x + b.reshape(1, -1, 1, 1)
        (f1h, f1w), (f2h, f2w) = f1.shape, f2.shape
        pad = [pad_x0, t_w - (w * up_x + pad_x0 - f1w + 1), pad_y0, t_h - (h * up_y + pad_y0 - f1h + 1)]
        u = upfirdn2d_reference(x.to(f1.dtype), f1, up=(up_x, up_y), padding=pad, flip_filter=True)
        m = mask.reshape(n, c, t_h, t_w) if mask.numel() else None
        if mode == 2:
            table = torch.tensor([0.0, gain * slope, gain], dtype=u.dtype)
            v = u * table[m.long()]
        else:
            v = torch.where(u > 0, u, u * slope) * gain
            clamped = (v.abs() > clamp) if clamp >= 0 else torch.zeros_like(v, dtype=torch.bool)
            if clamp >= 0:
                v = v.clamp(-clamp, clamp)
            if mode == 1:
                m.copy_(torch.where(clamped, 0, torch.where(u > 0, 2, 1)).to(torch.uint8))
        q = [q_x0, (out_w - 1) * down_x + f2w - t_w - q_x0, q_y0, (out_h - 1) * down_y + f2h - t_h - q_y0]
        y = upfirdn2d_reference(v, f2, down=(down_x, down_y), padding=q, flip_filter=True)
        return y.to(x.dtype)


CASES = [(2, 2, "1d", "1d", None, (9, 8, 9, 8)), (4, 2, "1d", "2d", 0.6, (-6, -9, -6, -9)),
         (2, 2, "1d", "1d", 0.8, (-11, -12, -11, -12)), (1, 1, "none", "none", None, (0, 0, 0, 0)),
         (2, 1, "2d", "none", None, (3, 2, 1, 4)), (1, 2, "1d", "1d", None, (6, 5, 7, 4))]


def _check_against_reference(ops, dtype=torch.float64, cases=CASES, tol=1e-10):
    g = torch.Generator().manual_seed(1)
    for up, down, fk, dk, clamp, pad in cases:
        fu, fd = _filters(fk, dk, up, down, g)
        size = 26 if min(pad) < -8 else (20 if min(pad) < -4 else 9)
        x = torch.randn(1, 2, size, size - 1, generator=g, dtype=dtype).requires_grad_(True)
        b = torch.randn(2, generator=g, dtype=dtype).requires_grad_(True)
        kw = dict(up=up, down=down, padding=pad, gain=1.4, slope=0.2, clamp=clamp)
        backend.set_impl("reference")
        y1 = filtered_lrelu_reference(x, fu, fd, b, **kw)
        y2 = ops.filtered_lrelu_autograd(x, fu, fd, b, **kw)
        assert y1.shape == y2.shape
        torch.testing.assert_close(y2, y1, rtol=tol, atol=tol)
        dy = torch.randn(y1.shape, generator=g, dtype=dtype).requires_grad_(True)
        g1 = torch.autograd.grad(y1, [x, b], dy, create_graph=True)
        g2 = torch.autograd.grad(y2, [x, b], dy, create_graph=True)
        for a, c in zip(g1, g2):
            torch.testing.assert_close(c, a, rtol=tol, atol=tol)
        w = torch.randn(x.shape, generator=g, dtype=dtype)
        h1, = torch.autograd.grad((g1[0] * w).sum(), dy)            # d(dx)/d(dy): the transposed pass
        h2, = torch.autograd.grad((g2[0] * w).sum(), dy)
        torch.testing.assert_close(h2, h1, rtol=tol, atol=tol)


def test_autograd_wiring_with_stand_in_kernel():
    _check_against_reference(CompiledOps(StandInKernel()))


def test_transposed_geometry_is_an_involution():
    f1, f2 = torch.randn(12, 12), torch.randn(6, 5)
    geo = FLGeometry((36, 36), (84, 84), (37, 38), (2, 2), (9, 8), (2, 2), (0, 0), f1, f2, 1.4, 0.2, -1)
    back = geo.transposed().transposed()
    assert (back.in_hw, back.t_hw, back.out_hw, back.up, back.p0, back.down, back.q0) == \
        (geo.in_hw, geo.t_hw, geo.out_hw, geo.up, geo.p0, geo.down, geo.q0)
    assert torch.equal(back.f1, f1) and torch.equal(back.f2, f2)


# ----------------------------------------------------------------- the extension's CPU run
def _cpu_ops():
    from test_kernels_compile import _build, _nvcc_available
    if os.environ.get("NADA_OPS_SKIP_COMPILE_TESTS"):
        pytest.skip("NADA_OPS_SKIP_COMPILE_TESTS set")
    if _nvcc_available():
        mod, err, _ = _build(True)
    elif not loader.toolchain_problems(with_cuda=False):
        mod, err, _ = _build(False)
    else:
        pytest.skip("no C++ tool chain: " + "; ".join(loader.toolchain_problems(with_cuda=False)))
    assert mod is not None, err
    return CompiledOps(mod, "test build (CPU path)")


@pytest.mark.compile
def test_cpu_path_matches_reference_float64():
    """The CUDA kernel's tile functions (run by the extension on the CPU) against the reference:
    values, gradients, double backward."""
    _check_against_reference(_cpu_ops())


@pytest.mark.compile
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)], ids=str)
def test_cpu_path_low_precision(dtype, tol):
    ops = _cpu_ops()
    g = torch.Generator().manual_seed(2)
    fu, fd = _filters("1d", "2d", 2, 2, g)
    fu, fd = fu / fu.sum(), fd / fd.sum()
    x = torch.randn(2, 4, 16, 16, generator=g)
    b = torch.randn(4, generator=g)
    kw = dict(up=2, down=2, padding=(9, 8, 9, 8), gain=2 ** 0.5, slope=0.2, clamp=1.5)
    backend.set_impl("reference")
    x, b = x.to(dtype), b.to(dtype)              # the same (rounded) input for both
    ref = filtered_lrelu_reference(x.double(), fu, fd, b.double(), **kw)
    got = ops.filtered_lrelu_autograd(x, fu, fd, b, **kw)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)


@pytest.mark.compile
def test_cpu_path_mask_plan_layout_and_checks():
    ops = _cpu_ops()
    raw = ops.raw
    # the plan keeps the scratch within 48 KB, also for config R's 4x upsampling (24 taps, 2D)
    for args in [(512, 36, 36, 2, 2, 2, 2, 12, 12, 12, 12), (64, 1044, 1044, 2, 2, 2, 2, 12, 12, 12, 12),
                 (1024, 84, 84, 4, 4, 2, 2, 24, 24, 12, 12), (3, 5, 7, 1, 1, 1, 1, 1, 1, 1, 1)]:
        tw, th, tp, ttw, tth, txw, txh, threads, gx, gy, gz, smem = raw.filtered_lrelu_plan(*args, 4)
        assert 0 < smem <= 48 * 1024 and threads == 256
        assert gx * tw >= args[2] and gy * th >= args[1] and ttw == (tw - 1) * args[5] + args[10]
    # non-contiguous input, no bias, forward without grad (mode 0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 12, 10, generator=g, dtype=torch.float64).transpose(2, 3)
    f = torch.randn(12, generator=g)
    backend.set_impl("reference")
    torch.testing.assert_close(ops.filtered_lrelu_autograd(x, f, f, None, up=2, down=2, padding=(9, 8, 9, 8)),
                               filtered_lrelu_reference(x, f, f, None, up=2, down=2, padding=(9, 8, 9, 8)))
    f64 = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="mask"):
        raw.filtered_lrelu(x.contiguous(), torch.empty(0, dtype=torch.float64), f64, f64,
                           torch.zeros(1, dtype=torch.uint8), 10, 12, 10, 12, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1.0, 0.2, -1.0)
    with pytest.raises(RuntimeError, match="filters must be"):
        raw.filtered_lrelu(x.contiguous(), torch.empty(0, dtype=torch.float64), f64.float(), f64,
                           torch.empty(0, dtype=torch.uint8), 10, 12, 10, 12, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1.0, 0.2, -1.0)


@pytest.mark.compile
def test_cpu_path_whole_stylegan3_generator(monkeypatch):
    """A StyleGAN3 generator (config R: radial filters) with every filtered_lrelu routed to the
    extension's CPU path, against the reference: images and parameter gradients."""
    from sg3_helpers import tiny_sg3
    ops = _cpu_ops()

    def route(op_name, tensor):
        return ops if backend.get_impl() == "compiled" and op_name == "filtered_lrelu" else None
    monkeypatch.setattr(backend, "compiled_module", route)
    G = tiny_sg3("r", seed=4, num_layers=4, num_critical=1, margin_size=3).train()
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    out = {}
    for impl in ("reference", "compiled"):
        backend.set_impl(impl)
        G.zero_grad(set_to_none=True)
        img = G(z)
        (img * torch.linspace(-1, 1, img.numel()).reshape(img.shape)).sum().backward()
        out[impl] = (img.detach(), {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
    (img_r, g_r), (img_c, g_c) = out["reference"], out["compiled"]
    torch.testing.assert_close(img_c, img_r, rtol=1e-4, atol=1e-5)
    assert g_r.keys() == g_c.keys()
    for name in g_r:
        torch.testing.assert_close(g_c[name], g_r[name], rtol=1e-3, atol=1e-5 * max(1.0, g_r[name].abs().max().item()))


# ----------------------------------------------------------------- GPU (skipped without CUDA)
@pytest.fixture(scope="module")
def gpu_ops():
    if not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    ops, why = loader.get_extension("filtered_lrelu")
    if ops is None:
        if os.environ.get("NADA_OPS_REQUIRE_COMPILED"):
            pytest.fail(f"the compiled extension did not build: {why}")
        pytest.skip(f"the compiled extension did not build: {why}")
    return ops


_GPU_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_gpu_parity(gpu_ops, dtype, case):
    up, down, fk, dk, clamp, pad = CASES[case]
    g = torch.Generator().manual_seed(case)
    fu, fd = _filters(fk, dk, up, down, g)
    fu = None if fu is None else (fu / fu.sum()).cuda()
    fd = None if fd is None else (fd / fd.sum()).cuda()
    size = 40 if min(pad) < -4 else 33
    x = torch.randn(3, 5, size, size + 3, generator=g).to(dtype)     # rounded once, used by both
    b = torch.randn(5, generator=g).to(dtype)
    x, b = x.cuda().requires_grad_(True), b.cuda().requires_grad_(True)
    kw = dict(up=up, down=down, padding=pad, gain=2 ** 0.5, slope=0.2, clamp=clamp)
    backend.set_impl("reference")
    y_r = filtered_lrelu(x.double(), fu, fd, b.double(), **kw)
    backend.set_impl("compiled")
    y_c = filtered_lrelu(x, fu, fd, b, **kw)
    tol = _GPU_TOL[dtype]
    torch.testing.assert_close(y_c.double(), y_r, rtol=tol, atol=tol)
    dy = torch.randn_like(y_c)
    gx_c, gb_c = torch.autograd.grad(y_c, [x, b], dy)
    gx_r, gb_r = torch.autograd.grad(y_r, [x, b], dy.double())
    torch.testing.assert_close(gx_c.double(), gx_r.double(), rtol=tol, atol=tol * 10)
    torch.testing.assert_close(gb_c.double(), gb_r.double(), rtol=tol * 10, atol=tol * x.numel() ** 0.5)


@pytest.mark.gpu
def test_gpu_gradcheck_float64(gpu_ops):
    g = torch.Generator().manual_seed(7)
    fu, fd = (f.cuda() for f in _filters("1d", "2d", 2, 2, g))
    x = torch.randn(1, 2, 7, 6, generator=g, dtype=torch.float64).cuda().requires_grad_(True)
    b = torch.randn(2, generator=g, dtype=torch.float64).cuda().requires_grad_(True)
    backend.set_impl("compiled")

    def fn(x, b):
        return filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=(9, 8, 9, 8), clamp=3.0)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["t", "r"])
def test_gpu_whole_stylegan3_generator(gpu_ops, kind):
    """Our StyleGAN3 at 256 px (NVIDIA's layer design, narrow): compiled vs reference, fp32 and
    the fp16 top layers, forward and backward."""
    from nada_ops.stylegan.config import StyleGAN3Config
    from nada_ops.stylegan.networks_sg3 import StyleGAN3Generator
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        extra = dict(conv_kernel=1, use_radial_filters=True) if kind == "r" else {}
        cfg = StyleGAN3Config(img_resolution=256, z_dim=64, w_dim=64, channel_base=4096, channel_max=64, **extra)
        G = StyleGAN3Generator(cfg).cuda()
        z = torch.randn(4, 64, device="cuda")
        out = {}
        for impl in ("reference", "compiled"):
            backend.set_impl(impl)
            G.zero_grad(set_to_none=True)
            img = G(z)
            (img * torch.linspace(-1, 1, img.numel(), device="cuda").reshape(img.shape)).sum().backward()
            out[impl] = (img.detach(), {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
            with torch.no_grad():
                out[impl + "16"] = G.synthesis(G.map(z), dtype=torch.float16)
        torch.testing.assert_close(out["compiled"][0], out["reference"][0], rtol=1e-4, atol=1e-4)
        for name, gr in out["reference"][1].items():
            torch.testing.assert_close(out["compiled"][1][name], gr, rtol=1e-3,
                                       atol=1e-4 * max(1.0, gr.abs().max().item()))
        scale = max(1.0, out["reference16"].abs().max().item())
        torch.testing.assert_close(out["compiled16"], out["reference16"], rtol=2e-2, atol=2e-2 * scale)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
