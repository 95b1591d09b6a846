"""Autograd around the compiled kernels (pure Python, importable without a build).

The compiled module (see ``ext.cpp``) exposes three raw, non-differentiable kernels:

``bias_act_fwd(x, b, dim, act, alpha, gain, clamp)``
    ``y = clamp(act(x + b) * gain, -clamp, clamp)``; ``b`` may be an empty tensor (no bias),
    ``clamp < 0`` means no clamping.
``bias_act_grad(dy, ref, b, dim, act, alpha, gain, clamp, ref_is_x, order)``
    ``order=1``: ``dx = dy * gain * act'(x + b) * [not clamped]`` where ``ref`` is ``x``
    (``ref_is_x``, then ``b`` is used) or the forward output ``y``; ``order=2``: the derivative
    of that expression with respect to ``ref`` (times ``dy``).  ``ref`` may be empty for
    ``linear`` without clamp.
``upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)``
    with ``f`` a 2D filter in *correlation* orientation with the gain already applied.
``filtered_lrelu(x, b, f1, f2, mask, t_h, t_w, out_h, out_w, up_x, up_y, pad_x0, pad_y0, down_x, down_y,
q_x0, q_y0, mode, gain, slope, clamp)``
    one pass of ``filtered_lrelu.h`` (stage 1, activation or stored-mask derivative, stage 2).

:class:`CompiledOps` wraps any object with that interface (the compiled module, or a
stand-in in the tests) and provides the two differentiable entry points that the
dispatchers in ``nada_ops.ops`` call.

Backward of upfirdn2d (derivation, one axis; 2D is the product of two axes): with
``s(o) = o*down - p0`` the forward is ``y[o] = sum_i x[i] * fc[up*i - s(o)]``, hence
``dx[i] = sum_o dy[o] * fc[up*i + p0 - down*o]``.  An upfirdn2d of ``dy`` with up/down
swapped, filter ``fc'`` and padding ``p0'`` computes ``sum_o dy[o] * fc'[down*o + p0' - up*i]``;
both agree for ``fc'[k] = fc[fw-1-k]`` (the flipped filter, i.e. ``flip_filter`` toggled)
and ``p0' = fw - 1 - p0``.  The trailing padding ``p1' = in*up - out*down + p0 - up + 1``
makes the result exactly ``in`` long.  The backward is linear in ``dy`` and is itself an
upfirdn2d, so higher derivatives come for free.

Backward of filtered_lrelu (one axis again).  The forward pass is ``t = S1(x + b)`` (stage 1:
``t[j] = sum_k f1[k] xb[(j + k - p0) / up]``), ``v = act(t)``, ``y = S2(v)`` (stage 2:
``y[o] = sum_k f2[k] v[o*down + k - q0]``).  So ``dx = S1^T(act'(t) * S2^T(dy))``.  By the same
index argument as above, ``S2^T`` is a stage 1 with up' = down, p0' = f2_taps - 1 - q0 and the
flipped f2, producing exactly ``t`` values, and ``S1^T`` is a stage 2 with down' = up,
q0' = f1_taps - 1 - p0 and the flipped f1, producing exactly ``in`` values: the backward is one
pass of the same kernel, with ``act'`` read from the mask the forward stored (``mode 2``).
That pass is linear in its input and its adjoint is the same construction applied again
(transposing twice gives the forward geometry back): gradients of any order need no other code.
The second derivative of the leaky ReLU is zero, so nothing flows back into x through the mask.
"""
from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty([0])


def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every dimension but ``dim`` (``sum(dim=[])`` would reduce everything)."""
    dims = [i for i in range(t.ndim) if i != dim]
    return t.sum(dims) if dims else t


# ---------------------------------------------------------------------- bias_act

def bias_act_ref_kind(act: str, clamp: float) -> str:
    """Which tensor the backward keeps: 'x' (input and bias), 'y' (output) or '' (none)."""
    from ..ops.bias_act import ACTIVATIONS
    ref = ACTIVATIONS[act].ref
    if ref == "" and clamp >= 0:
        ref = "y"  # linear with clamp: the mask comes from the output
    return ref


class _BiasActGrad(torch.autograd.Function):
    """dx = bias_act'(ref) * dy; differentiable again (second order)."""

    @staticmethod
    def forward(ctx, dy, ref, b, ops, dim, act_idx, alpha, gain, clamp, ref_is_x, has_2nd):
        dx = ops.bias_act_grad(dy.contiguous(), ref, b, dim, act_idx, alpha, gain, clamp, ref_is_x, 1)
        ctx.save_for_backward(dy, ref, b)
        ctx.args = (ops, dim, act_idx, alpha, gain, clamp, ref_is_x, has_2nd)
        return dx

    @staticmethod
    def backward(ctx, d_dx):
        dy, ref, b = ctx.saved_tensors
        ops, dim, act_idx, alpha, gain, clamp, ref_is_x, has_2nd = ctx.args
        d_dy = d_ref = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActGrad.apply(d_dx, ref, b, *ctx.args)
        if has_2nd and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_ref = ops.bias_act_grad((d_dx * dy).contiguous(), ref, b, dim, act_idx, alpha, gain, clamp,
                                      ref_is_x, 2)
            if ref_is_x and b.numel() > 0 and ctx.needs_input_grad[2]:
                d_b = _sum_except(d_ref, dim)
        return d_dy, d_ref, d_b, None, None, None, None, None, None, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, ops, dim, act_idx, ref_kind, has_2nd, alpha, gain, clamp):
        y = ops.bias_act_fwd(x, b, dim, act_idx, alpha, gain, clamp)
        if ref_kind == "x":
            ctx.save_for_backward(x, b)
        elif ref_kind == "y":
            ctx.save_for_backward(y, b)
        else:
            ctx.save_for_backward(_empty(x), b)
        ctx.args = (ops, dim, act_idx, ref_kind, has_2nd, alpha, gain, clamp)
        return y

    @staticmethod
    def backward(ctx, dy):
        ref, b = ctx.saved_tensors
        ops, dim, act_idx, ref_kind, has_2nd, alpha, gain, clamp = ctx.args
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            b_for_grad = b if ref_kind == "x" else _empty(b)
            dx = _BiasActGrad.apply(dy, ref, b_for_grad, ops, dim, act_idx, alpha, gain, clamp,
                                    ref_kind == "x", has_2nd)
        if ctx.needs_input_grad[1]:
            db = _sum_except(dx, dim)
        return dx, db, None, None, None, None, None, None, None, None


# --------------------------------------------------------------------- upfirdn2d

def upfirdn2d_grad_args(in_size, out_size, up, down, pad0, taps):
    """Along one axis: (up', down', pad0', pad1') of the upfirdn2d that maps dy to dx
    (with the filter flipped, same gain).  See the module docstring for the derivation."""
    return down, up, taps - 1 - pad0, in_size * up - out_size * down + pad0 - up + 1


class _Upfirdn2d(torch.autograd.Function):
    """One pass with a 2D correlation filter ``fc`` (gain included)."""

    @staticmethod
    def forward(ctx, x, fc, ops, up, down, pad):
        y = ops.upfirdn2d(x, fc, up[0], up[1], down[0], down[1], pad[0], pad[1], pad[2], pad[3])
        ctx.save_for_backward(fc)
        ctx.args = (ops, up, down, pad, tuple(x.shape), tuple(y.shape))
        return y

    @staticmethod
    def backward(ctx, dy):
        (fc,) = ctx.saved_tensors
        ops, (ux, uy), (dx_, dy_), (px0, px1, py0, py1), xs, ys = ctx.args
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        fh, fw = fc.shape
        gux, gdx, gpx0, gpx1 = upfirdn2d_grad_args(xs[3], ys[3], ux, dx_, px0, fw)
        guy, gdy, gpy0, gpy1 = upfirdn2d_grad_args(xs[2], ys[2], uy, dy_, py0, fh)
        gx = _Upfirdn2d.apply(dy, fc.flip([0, 1]), ops, (gux, guy), (gdx, gdy), (gpx0, gpx1, gpy0, gpy1))
        return gx, None, None, None, None, None


# ----------------------------------------------------------------------- filtered_lrelu

class FLGeometry:
    """One pass of the filtered_lrelu kernel: sizes (in, t, out), stage-1 up/p0 with filter f1,
    stage-2 down/q0 with filter f2 (2D correlation filters, gains applied), activation constants."""

    __slots__ = ("in_hw", "t_hw", "out_hw", "up", "p0", "down", "q0", "f1", "f2", "gain", "slope", "clamp")

    def __init__(self, in_hw, t_hw, out_hw, up, p0, down, q0, f1, f2, gain, slope, clamp):
        self.in_hw, self.t_hw, self.out_hw = tuple(in_hw), tuple(t_hw), tuple(out_hw)
        self.up, self.p0, self.down, self.q0 = tuple(up), tuple(p0), tuple(down), tuple(q0)   # (x, y)
        self.f1, self.f2 = f1, f2
        self.gain, self.slope, self.clamp = float(gain), float(slope), float(clamp)

    def transposed(self) -> "FLGeometry":
        """The adjoint pass (see the module docstring): input = out, output = in."""
        f1h, f1w = self.f1.shape
        f2h, f2w = self.f2.shape
        p0 = (f2w - 1 - self.q0[0], f2h - 1 - self.q0[1])
        q0 = (f1w - 1 - self.p0[0], f1h - 1 - self.p0[1])
        return FLGeometry(self.out_hw, self.t_hw, self.in_hw, self.down, p0, self.up, q0, self.f2.flip([0, 1]),
                          self.f1.flip([0, 1]), self.gain, self.slope, self.clamp)

    def run(self, ops, x, b, mask, mode):
        (th, tw), (oh, ow) = self.t_hw, self.out_hw
        return ops.filtered_lrelu(x, b, self.f1, self.f2, mask, th, tw, oh, ow, self.up[0], self.up[1], self.p0[0],
                                  self.p0[1], self.down[0], self.down[1], self.q0[0], self.q0[1], mode, self.gain,
                                  self.slope, self.clamp)


class _FilteredLReluMasked(torch.autograd.Function):
    """The linear pass ``g -> S2(mask' * S1(g))`` (mode 2); its backward is the transposed pass."""

    @staticmethod
    def forward(ctx, g, mask, ops, geom):
        ctx.save_for_backward(mask)
        ctx.args = (ops, geom)
        return geom.run(ops, g.contiguous(), _empty(g), mask, 2)

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        ops, geom = ctx.args
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        return _FilteredLReluMasked.apply(dy, mask, ops, geom.transposed()), None, None, None


class _FilteredLRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, ops, geom):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        mask = (torch.zeros([x.shape[0] * x.shape[1], *geom.t_hw], dtype=torch.uint8, device=x.device)
                if need_grad else torch.empty([0], dtype=torch.uint8, device=x.device))
        y = geom.run(ops, x, b, mask, 1 if need_grad else 0)
        ctx.save_for_backward(mask)
        ctx.args = (ops, geom, x.shape[1])
        return y

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        ops, geom, channels = ctx.args
        dx = _FilteredLReluMasked.apply(dy, mask, ops, geom.transposed())
        db = dx.sum(dim=[0, 2, 3]) if ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), db, None, None


def _as_2d(f: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A 2D filter in the accumulation dtype of ``x`` (a separable 1D filter: its outer product,
    formed in that dtype)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        return torch.ones([1, 1], dtype=acc, device=x.device)
    f = f.detach().to(device=x.device, dtype=acc)
    return f.outer(f) if f.ndim == 1 else f


def correlation_filter(f: torch.Tensor, flip_filter: bool, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """The filter as the kernel wants it: correlation orientation, gain applied, accumulation dtype."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    fc = f.detach().to(acc)
    if not flip_filter:
        fc = fc.flip(list(range(fc.ndim)))
    return (fc * gain if gain != 1 else fc).contiguous()


class CompiledOps:
    """The differentiable ops on top of a raw kernel module."""

    SUPPORTED_DTYPES = SUPPORTED_DTYPES

    def __init__(self, raw, description: str = ""):
        self.raw = raw
        self.description = description

    def __repr__(self):
        return f"CompiledOps({self.description or self.raw!r})"

    def supports(self, x: torch.Tensor) -> bool:
        return x.dtype in SUPPORTED_DTYPES

    # ---------------------------------------------------------------- bias_act
    def bias_act_autograd(self, x: torch.Tensor, b: torch.Tensor | None, dim: int = 1, act: str = "linear",
                          alpha: float = 0.0, gain: float = 1.0, clamp: float = -1.0) -> torch.Tensor:
        from ..ops.bias_act import ACTIVATIONS
        spec = ACTIVATIONS[act]
        if b is not None:
            if not 0 <= dim < x.ndim:
                raise ValueError(f"bias_act: dim {dim} out of range for x of rank {x.ndim}")
            if b.ndim != 1 or b.shape[0] != x.shape[dim]:
                raise ValueError(f"bias_act: bias of shape {tuple(b.shape)} does not match "
                                 f"dimension {dim} of x {tuple(x.shape)}")
            if b.dtype != x.dtype:  # promote like ``x + b`` in the reference
                dt = torch.promote_types(x.dtype, b.dtype)
                x, b = x.to(dt), b.to(dt)
            b = b.contiguous()
        else:
            b = _empty(x)
            dim = 0
        ref_kind = bias_act_ref_kind(act, float(clamp))
        return _BiasAct.apply(x.contiguous(), b, self.raw, int(dim), int(spec.cuda_idx), ref_kind,
                              bool(spec.has_2nd_grad), float(alpha), float(gain), float(clamp))

    # --------------------------------------------------------------- upfirdn2d
    def upfirdn2d_autograd(self, x: torch.Tensor, f: torch.Tensor, up=(1, 1), down=(1, 1), padding=(0, 0, 0, 0),
                           flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"upfirdn2d: x must be NCHW, got shape {tuple(x.shape)}")
        if f.ndim not in (1, 2):
            raise ValueError(f"upfirdn2d: filter must be 1D or 2D, got shape {tuple(f.shape)}")
        (ux, uy), (dx_, dy_) = (int(up[0]), int(up[1])), (int(down[0]), int(down[1]))
        px0, px1, py0, py1 = (int(p) for p in padding)
        if min(ux, uy, dx_, dy_) < 1:
            raise ValueError("upfirdn2d: up and down factors must be >= 1")
        fh, fw = (f.shape[0], f.shape[1]) if f.ndim == 2 else (f.shape[0], f.shape[0])
        for size, u, d, p0, p1, taps in ((x.shape[2], uy, dy_, py0, py1, fh), (x.shape[3], ux, dx_, px0, px1, fw)):
            if size * u + p0 + p1 - taps < 0:
                raise ValueError(f"upfirdn2d: the padded image is smaller than the filter "
                                 f"(x {tuple(x.shape)}, filter {tuple(f.shape)}, padding {tuple(padding)})")
        if f.ndim == 2:
            fc = correlation_filter(f, flip_filter, float(gain), x.dtype).to(x.device)
            return _Upfirdn2d.apply(x, fc, self.raw, (ux, uy), (dx_, dy_), (px0, px1, py0, py1))
        # Separable 1D filter: one pass along x (with the whole gain), then one along y.
        fc = correlation_filter(f, flip_filter, 1.0, x.dtype).to(x.device)
        fcx = (fc * float(gain))[None, :].contiguous()
        fcy = fc[:, None].contiguous()
        x = _Upfirdn2d.apply(x, fcx, self.raw, (ux, 1), (dx_, 1), (px0, px1, 0, 0))
        return _Upfirdn2d.apply(x, fcy, self.raw, (1, uy), (1, dy_), (0, 0, py0, py1))

    # ---------------------------------------------------------- filtered_lrelu
    def filtered_lrelu_autograd(self, x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None,
                                b: torch.Tensor | None, up: int = 1, down: int = 1, padding=(0, 0, 0, 0),
                                gain: float = 2 ** 0.5, slope: float = 0.2, clamp: float | None = None,
                                flip_filter: bool = False) -> torch.Tensor:
        """``nada_ops.ops.filtered_lrelu`` on the kernel: separable (1D) filters become their 2D outer
        product, the upsampling filter gets the gain ``up**2``; arguments are validated by the caller."""
        from ..ops.filtered_lrelu import filter_taps
        px0, px1, py0, py1 = (int(p) for p in padding)
        fuw, fuh = filter_taps(fu)
        fdw, fdh = filter_taps(fd)
        n, c, h, w = x.shape
        t_w, t_h = w * up + px0 + px1 - fuw + 1, h * up + py0 + py1 - fuh + 1
        out_w, out_h = (t_w - fdw) // down + 1, (t_h - fdh) // down + 1
        f1 = correlation_filter(_as_2d(fu, x), flip_filter, float(up * up), x.dtype)
        f2 = correlation_filter(_as_2d(fd, x), flip_filter, 1.0, x.dtype)
        geom = FLGeometry((h, w), (t_h, t_w), (out_h, out_w), (up, up), (px0, py0), (down, down), (0, 0), f1, f2,
                          gain, slope, -1.0 if clamp is None else float(clamp))
        if b is None:
            b = _empty(x)
        else:
            b = b.to(x.dtype).contiguous()
        return _FilteredLRelu.apply(x, b, self.raw, geom)
