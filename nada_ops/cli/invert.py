"""``python -m nada_ops invert``: photos to W / W+ latents by optimisation, or with a pSp / e4e /
ReStyle encoder (``--encoder FILE``, optionally refined by ``--refine-steps``), optionally
FFHQ-aligned first (``--align``: dlib, or ``--landmarks``)."""
from __future__ import annotations

import argparse
import sys

from ..limits import arg
from .common import ProgressPrinter, device_from_arg, generator_path


def _load_images(paths, resolution: int):
    """Image files -> one [N, 3, R, R] tensor in [-1, 1] at the generator's resolution
    (centre-cropped; decoded through the bounded reader, reduced before any float copy)."""
    import torch

    from ..io.images import read_image_batch
    arr = read_image_batch(paths, resolution, crop=True)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def run(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m nada_ops invert")
    p.add_argument("--generator", required=True, help="generator file, or a catalogue name (e.g. ffhq; "
                                                           "downloaded once into $NADA_MODELS_DIR/stylegan)")
    p.add_argument("--image", nargs="+", required=True, help="photo(s); non-square ones are center-cropped")
    p.add_argument("--out", required=True, help="latents file to write (.pt)")
    p.add_argument("--recon", default=None, help="PNG of target | reconstruction pairs (default: next to --out)")
    p.add_argument("--steps", type=arg("steps"), default=500)
    p.add_argument("--mode", choices=["w", "w+"], default="w")
    p.add_argument("--lr", type=arg("lr"), default=0.1)
    p.add_argument("--optimize-noise", action="store_true")
    p.add_argument("--noise-regularize", type=arg("noise_regularize"), default=1e5)
    p.add_argument("--clip", default=None, help="CLIP architecture for the perceptual loss, e.g. ViT-B-32")
    p.add_argument("--clip-weights", default=None,
                   help="local CLIP weights file or folder (default: the catalogue's weights for --clip, downloaded "
                        "once into $NADA_MODELS_DIR/open_clip, or a local file there)")
    p.add_argument("--perceptual-weight", type=arg("perceptual_weight"), default=1.0)
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--encoder", default=None, help="pSp / e4e / ReStyle checkpoint (.pt of the authors): encode "
                                                   "instead of optimising from the average latent")
    p.add_argument("--iterations", type=arg("encoder_iterations"), default=5, help="ReStyle passes (default 5)")
    p.add_argument("--refine-steps", type=arg("refine_steps"), default=0,
                   help="with --encoder: optimisation steps in W+ from the encoder's codes, at lr/10 (default 0)")
    p.add_argument("--align", action="store_true", help="FFHQ-align each photo first (writes <out>_aligned.png)")
    p.add_argument("--landmarks", default=None, help="JSON file of landmarks (68 dlib-order or 5 points per face; "
                                                     "one set, or one per image); default: detect with dlib")
    p.add_argument("--landmark-model", default=None,
                   help="dlib's shape_predictor_68_face_landmarks.dat (for detection)")
    p.add_argument("--face-index", type=arg("face_index"), default=None,
                   help="which face when a photo has several (0 = largest; default: the largest)")
    a = p.parse_args(argv)
    from ..inversion import InversionSettings, invert, prepare_target
    from ..stylegan.io import load_generator
    dev = device_from_arg(a.device)
    h = load_generator(generator_path(a.generator), device=dev)
    res = h.cfg.img_resolution
    if a.align:
        target = _aligned(a, res)
    else:
        target = prepare_target(_load_images(a.image, res), res)
    if a.encoder:
        return _encode(a, h, target, dev)
    clip = None
    if a.clip:
        from ..catalogue import clip_entry, clip_weights_for, default_folder
        from ..clip import load_clip
        from .common import ByteProgress, Stage, say
        arch, weights = a.clip, a.clip_weights
        if weights is None:   # the catalogue's OpenAI weights (downloaded once), or a local file
            arch, weights = clip_weights_for(a.clip, [str(default_folder("clip"))],
                                             progress=ByteProgress(f"download CLIP {a.clip}") if clip_entry(a.clip)
                                             else None, log=say)
        with Stage(f"loading CLIP {a.clip}"):
            clip = load_clip(arch, weights, device=dev, search_dirs=[str(default_folder("clip"))])
    s = InversionSettings(steps=a.steps, mode=a.mode, lr=a.lr, optimize_noise=a.optimize_noise,
                          noise_regularize=a.noise_regularize,
                          perceptual_weight=a.perceptual_weight if clip is not None else 0.0, seed=a.seed)
    if dev.type == "cpu":
        _estimate_cpu_time(h.G, clip, s, len(a.image))
    bar = ProgressPrinter("invert")
    r = invert(h.G, target, s, perceptual=clip, progress=lambda d, t, _p: bar(d, t))
    return _finish(a, h, r)


def _finish(a, h, r) -> int:
    import os

    import torch

    from ..latent_tools import save_latents
    from ..stylegan.sampling import save_image_grid
    r.latents.info["generator"] = h.name
    r.latents.info["images"] = [os.path.basename(x) for x in a.image]
    save_latents(r.latents, a.out)
    recon = a.recon or os.path.splitext(a.out)[0] + "_recon.png"
    pairs = torch.stack([r.target.cpu(), r.images.cpu().clamp(-1, 1)], dim=1).reshape(-1, *r.images.shape[1:])
    save_image_grid(pairs, recon, cols=2)
    mse0 = ", ".join(f"{float(v):.4f}" for v in r.mse_start)
    mse1 = ", ".join(f"{float(v):.4f}" for v in r.mse_final)
    if r.stopped_early:
        print(f"\nstopped after {r.steps_done} steps: saving the best latents so far", file=sys.stderr)
    print(f"wrote {a.out} and {recon}; pixel MSE start [{mse0}] -> final [{mse1}]")
    return 130 if r.stopped_early else 0


def _aligned(a, res: int):
    """--align: every photo FFHQ-aligned at the generator's resolution -> [N, 3, R, R] in [-1, 1]."""
    import json
    import os

    import numpy as np
    import torch

    from ..invert.align import align_photos
    from ..invert.landmarks import parse_landmarks
    from ..io.images import read_images
    from ..stylegan.sampling import save_image_grid
    photos = [np.asarray(im, dtype=np.uint8) for im in read_images(a.image)]
    given = None
    if a.landmarks:
        with open(a.landmarks, encoding="utf-8") as f:
            text = f.read(1_000_001)
        given = parse_landmarks(text, len(photos))
    arr, tfs = align_photos(photos, given, a.landmark_model, output_size=res,
                            face="index" if a.face_index is not None else "largest", face_index=a.face_index or 0)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    path = os.path.splitext(a.out)[0] + "_aligned.png"
    save_image_grid(x, path, cols=len(photos))
    for name, t in zip(a.image, tfs):
        print(f"{os.path.basename(name)}: face {t.face_index + 1} of {t.faces_found}, side {t.side:.0f} px, "
              f"rotation {t.angle:.1f} deg; transform {json.dumps(t.matrix)}")
    return x


def _encode(a, h, target, dev) -> int:
    import sys

    from ..invert.encoders import encode, load_encoder
    from ..inversion import InversionSettings, InversionResult, invert
    from ..latents import WLatents
    from ..stylegan.sampling import synthesize
    enc = load_encoder(a.encoder, device=dev)
    enc.check_generator(h.cfg, f"the generator {h.name}")
    print(enc.describe())
    for note in enc.notes + enc.compare_generator(h.G):
        print(f"note: {note}", file=sys.stderr)
    bar = ProgressPrinter("encode")
    n_iter = a.iterations if enc.cfg.iterative else 1
    r = encode(enc, h.G, target, iterations=n_iter, progress=lambda d, t, _p: bar(d, t))
    info = {"op": "encode", "method": enc.kind, "encoder": enc.name, "iterations": n_iter}
    if a.refine_steps > 0:
        clip = None
        if a.clip:
            from ..clip import load_clip
            clip = load_clip(a.clip, a.clip_weights, device=dev)
        s = InversionSettings(steps=a.refine_steps, mode="w+", lr=a.lr / 10, optimize_noise=a.optimize_noise,
                              noise_regularize=a.noise_regularize, initial_w_noise=0.0,
                              perceptual_weight=a.perceptual_weight if clip is not None else 0.0, seed=a.seed)
        bar = ProgressPrinter("refine")
        res = invert(h.G, target, s, perceptual=clip, init_ws=r.ws, progress=lambda d, t, _p: bar(d, t))
        res.latents.info.update({**info, "refine": dict(res.latents.info)})
        return _finish(a, h, res)
    ws = r.ws.detach()
    images = synthesize(h.G, ws)
    mse = ((images.float().clamp(-1, 1) - target.to(images.device)) ** 2).mean(dim=(1, 2, 3))
    res = InversionResult(latents=WLatents(ws=ws, is_wplus=r.is_wplus, info=info), images=images,
                          target=target, noises=None, mse_start=mse.cpu(), mse_final=mse.cpu(), steps_done=0)
    return _finish(a, h, res)


#: Above this estimated time on a CPU, say so (with what to change) before starting.
LONG_CPU_RUN_S = 15 * 60


def _estimate_cpu_time(G, clip, settings, n_images: int) -> None:
    from ..timing import clip_forward_seconds, generator_forward_seconds, invert_step_seconds
    from .common import format_duration, say
    t_g = generator_forward_seconds(G)
    t_c = clip_forward_seconds(clip) if clip is not None else 0.0
    per = invert_step_seconds(t_g, n_images, t_c)
    total = per * settings.steps
    say(f"estimate on this CPU: about {format_duration(per)} per step, {format_duration(total)} for "
        f"{settings.steps} steps and {n_images} image(s) (rough)")
    if total > LONG_CPU_RUN_S:
        say("note: that is a long run on a CPU; a GPU (--device cuda) takes a fraction of that. Or use fewer "
            "--steps (100-200 give a usable W latent), or fewer images at once. Ctrl-C stops and keeps the best "
            "latents so far.")
