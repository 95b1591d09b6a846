"""The official StyleGAN-NADA training loop (rinongal/StyleGAN-nada, ZSSGAN), timed with random
weights at the settings of issue 11, for side-by-side figures with bench_adapt.py.

The official code is NOT part of this pack and never committed: give the folder of a checkout
(``--official-dir``, default ``.ref/StyleGAN-nada``; benchmarks/gpu_session.sh says how to make it).
What this script adds around it, and nothing else:
- ``clip``: the official code imports OpenAI's ``clip`` package (``clip.load`` downloads weights;
  it is not on PyPI under that name).  A stand-in module gives ``clip.load(name, device)`` /
  ``clip.tokenize`` with open_clip's SAME architectures and random weights, in float16 on CUDA
  with float32 LayerNorms exactly as ``clip.load`` builds OpenAI's models on a GPU, wrapped so that
  ``model(image, text)`` returns logits as OpenAI's CLIP does, and the preprocessing transforms
  ``clip.load`` returns (bicubic resize, centre crop, to-RGB, to-tensor, normalise).
- a random rosinality-format generator checkpoint (``g_ema``), written to a temporary folder.
- ``--their-ops reference`` (CPU): their compiled ``op`` package replaced by pure-PyTorch
  stand-ins (the pack's own bias_act / upfirdn2d references, and their own ``conv2d_gradfix.py``);
  ``compiled`` (default on CUDA) lets their code build its CUDA ops as it always does.
The loop itself is theirs (train.py: ``net(sample_z)``, ``net.zero_grad()``, ``loss.backward()``,
``g_optim.step()``, Adam with their 0.8 ratio), including the adaptive layer selection.

    python benchmarks/bench_official.py --official-dir .ref/StyleGAN-nada --res 1024 --modes all adaptive
    python benchmarks/bench_official.py --device cpu --res 64 --iters 2 --warmup 1 --clip ViT-B-32 --their-ops reference
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class _OpenAIStyleCLIP(torch.nn.Module):
    """open_clip model answering like OpenAI's ``clip.model.CLIP``."""

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.visual = m.visual
        self.logit_scale = m.logit_scale

    @property
    def dtype(self):
        return next(self.m.visual.parameters()).dtype

    def encode_image(self, image):
        return self.m.encode_image(image.type(self.dtype))

    def encode_text(self, text):
        return self.m.encode_text(text)

    def forward(self, image, text):
        a = self.encode_image(image)
        b = self.encode_text(text)
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        logits = self.logit_scale.exp() * a @ b.t()
        return logits, logits.t()


def install_clip_standin():
    import open_clip
    from torchvision import transforms as TV

    def load(name, device="cpu", jit=False):
        arch = name.replace("/", "-")
        dev = torch.device(device)
        prec = "fp16" if dev.type == "cuda" else "fp32"     # what clip.load does: fp16 on a GPU
        m = open_clip.create_model(arch, pretrained=None, precision=prec, device=dev)
        m.eval()
        size = m.visual.image_size if isinstance(m.visual.image_size, int) else m.visual.image_size[0]
        pre = TV.Compose([TV.Resize(size, interpolation=TV.InterpolationMode.BICUBIC), TV.CenterCrop(size),
                          lambda im: im.convert("RGB"), TV.ToTensor(), TV.Normalize(OPENAI_MEAN, OPENAI_STD)])
        return _OpenAIStyleCLIP(m).to(dev), pre

    mod = types.ModuleType("clip")
    mod.load = load
    mod.tokenize = lambda texts, context_length=77, truncate=False: open_clip.tokenize(texts, context_length)
    sys.modules["clip"] = mod


def install_reference_ops(zssgan_dir):
    """Their ``op`` package without compilation (CPU): plain PyTorch of the same maths (the pack's upfirdn2d)."""
    from nada_ops.ops import upfirdn2d as our_upfirdn2d

    def fused_leaky_relu(x, bias=None, negative_slope=0.2, scale=2 ** 0.5):
        if bias is not None:
            b = bias.reshape([1, -1] + [1] * (x.ndim - 2))
            x = x + b
        return torch.nn.functional.leaky_relu(x, negative_slope) * scale

    class FusedLeakyReLU(torch.nn.Module):
        def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(channel)) if bias else None
            self.negative_slope, self.scale = negative_slope, scale

        def forward(self, x):
            return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)

    def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
        p = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
        # rosinality convolves with the kernel (flips it), as NVIDIA does with flip_filter=False
        return our_upfirdn2d(x, kernel, up=up, down=down, padding=list(p), flip_filter=False, gain=1)

    spec = importlib.util.spec_from_file_location("op.conv2d_gradfix", os.path.join(zssgan_dir, "op",
                                                                                    "conv2d_gradfix.py"))
    gradfix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gradfix)
    gradfix.enabled = False
    op = types.ModuleType("op")
    op.FusedLeakyReLU, op.fused_leaky_relu, op.upfirdn2d, op.conv2d_gradfix = (FusedLeakyReLU, fused_leaky_relu,
                                                                                upfirdn2d, gradfix)
    sys.modules["op"] = op
    sys.modules["op.conv2d_gradfix"] = gradfix


def import_official(official_dir, their_ops):
    zssgan = os.path.join(official_dir, "ZSSGAN")
    if not os.path.isdir(zssgan):
        raise SystemExit(f"no ZSSGAN folder in {official_dir!r}: clone rinongal/StyleGAN-nada there "
                         "(see benchmarks/gpu_session.sh)")
    for p in (official_dir, zssgan):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        import cv2  # noqa: F401  (their utils import it for writing images)
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")
    install_clip_standin()
    if their_ops == "reference":
        install_reference_ops(zssgan)
    from ZSSGAN.model.ZSSGAN import ZSSGAN
    from ZSSGAN.model.sg2_model import Generator
    from options.train_options import TrainOptions
    from utils.training_utils import mixing_noise
    return ZSSGAN, Generator, TrainOptions, mixing_noise


def bench(mods, res, mode, dev, clip_names, iters, warmup, batch, tmp):
    ZSSGAN, Generator, TrainOptions, mixing_noise = mods
    torch.manual_seed(0)
    ckpt = os.path.join(tmp, f"g{res}.pt")
    if not os.path.exists(ckpt):
        g = Generator(res, 512, 8, channel_multiplier=2)
        torch.save({"g_ema": g.state_dict()}, ckpt)
        del g
    argv = ["--size", str(res), "--batch", str(batch), "--frozen_gen_ckpt", ckpt, "--output_dir", tmp,
            "--source_class", "photo", "--target_class", "sketch", "--lambda_direction", "1.0",
            "--phase", "None", "--clip_models", *[c.replace("-", "/") for c in clip_names],
            "--clip_model_weights", *["1.0"] * len(clip_names), "--mixing", "0.9"]
    if mode == "adaptive":
        n_latent = 2 * (res.bit_length() - 1) - 2
        argv += ["--auto_layer_k", str(min(12, n_latent)), "--auto_layer_iters", "1", "--auto_layer_batch", "8"]
    else:
        argv += ["--auto_layer_k", "0", "--auto_layer_iters", "0"]
    args = TrainOptions().parser.parse_args(argv)
    args.train_gen_ckpt = args.train_gen_ckpt or args.frozen_gen_ckpt
    args.target_img_list = None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    net = ZSSGAN(args)
    g_reg_ratio = args.g_reg_every / (args.g_reg_every + 1)
    g_optim = torch.optim.Adam(net.generator_trainable.parameters(), lr=args.lr * g_reg_ratio,
                               betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    times = []
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        net.train()
        sample_z = mixing_noise(args.batch, 512, args.mixing, dev)
        [_, _], loss = net(sample_z)
        net.zero_grad()
        loss.backward()
        g_optim.step()
        _ = f"Clip loss: {loss}"          # their loop prints the loss every iteration (a host sync)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    steps = times[warmup:]
    out = {"impl": "official", "res": res, "mode": mode, "batch": batch, "clip": clip_names,
           "median_s_per_iter": statistics.median(steps), "iters_timed": len(steps)}
    if dev.type == "cuda":
        out["peak_alloc_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(dev) / 2 ** 20
    del net, g_optim
    return out


def bench_sampling(mods, res, dev, batches, iters, tmp):
    """Official generator images/s (their Generator, their ops, float32 as their code runs it)."""
    _, Generator, _, _ = mods
    torch.manual_seed(0)
    g = Generator(res, 512, 8, channel_multiplier=2).to(dev).eval()
    rows = []
    for b in batches:
        z = torch.randn(b, 512, device=dev)
        with torch.no_grad():
            for _ in range(2):
                g([z])
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            for _ in range(iters):
                g([z])
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        dt = (time.perf_counter() - t) / iters
        rows.append({"impl": "official", "what": "sampling", "res": res, "batch": b, "img_per_s": b / dt})
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--official-dir", default=os.path.join(ROOT, ".ref", "StyleGAN-nada"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=[1024, 256])
    p.add_argument("--modes", nargs="+", default=["all", "adaptive"])
    p.add_argument("--clip", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--sample-res", type=int, nargs="*", default=[])
    p.add_argument("--sample-batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--their-ops", choices=["compiled", "reference"], default=None)
    p.add_argument("--json", default=None, help="write the rows to this file")
    a = p.parse_args()
    dev = torch.device(a.device)
    ops = a.their_ops or ("compiled" if dev.type == "cuda" else "reference")
    mods = import_official(os.path.abspath(a.official_dir), ops)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in a.res:
            for mode in a.modes:
                if mode == "adaptive" and res != max(a.res):
                    continue          # the issue compares adaptive at the top resolution only
                r = bench(mods, res, mode, dev, a.clip, a.iters, a.warmup, a.batch, tmp)
                r["their_ops"] = ops
                rows.append(r)
                print(json.dumps(r), flush=True)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        for res in a.sample_res:
            for r in bench_sampling(mods, res, dev, a.sample_batches, 5, tmp):
                rows.append(r)
                print(json.dumps(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
