"""``python -m nada_ops adapt``: StyleGAN-NADA from the command line."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..limits import arg
from .common import UsageError


def _parse_clip(specs: list[str]) -> list[tuple[str, float]]:
    out = []
    for s in specs:
        name, _, w = s.partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise UsageError(f"--clip {s!r}: expected NAME or NAME:WEIGHT, e.g. ViT-B-32:1.0") from None
        out.append((name, weight))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nada_ops adapt",
                                description="Adapt a StyleGAN2 or StyleGAN3 generator to a new domain with CLIP guidance.")
    p.add_argument("--generator", required=True,
                   help="source generator: a .pkl / .pt / .safetensors file, or a catalogue name (e.g. ffhq, afhqdog; "
                        "`python -m nada_ops models` lists them), downloaded once into $NADA_MODELS_DIR/stylegan "
                        "(default ./models/stylegan)")
    p.add_argument("--source", default="photo", help="source domain text")
    p.add_argument("--target", default=None, help="target domain text")
    p.add_argument("--target-images", default=None,
                   help="few-shot: folder or glob of target-domain images (instead of --target)")
    p.add_argument("--num-source-samples", type=arg("num_source_samples"), default=16,
                   help="generated source images (few-shot)")
    p.add_argument("--templates", choices=["nada", "imagenet", "single"], default="nada")
    p.add_argument("--clip", action="append", default=None,
                   help="CLIP model NAME[:WEIGHT], repeatable (default: ViT-B-32:1 ViT-B-16:1, the paper's; their "
                        "OpenAI weights are taken from the catalogue: downloaded once into the first --clip-dir)")
    p.add_argument("--clip-weights", action="append", default=[],
                   help="NAME=FILE weights for a CLIP model (OpenAI .pt or open_clip .safetensors/.bin), "
                        "or NAME=random for benchmarks")
    p.add_argument("--clip-dir", action="append", default=[],
                   help="folder to search for CLIP weights (like ComfyUI's models/open_clip; default "
                        "$NADA_MODELS_DIR/open_clip, i.e. ./models/open_clip)")
    p.add_argument("--iterations", type=arg("iterations"), default=300)
    p.add_argument("--batch", type=arg("train_batch"), default=2)
    p.add_argument("--lr", type=arg("lr"), default=0.002)
    p.add_argument("--reference-lr-scale", action="store_true",
                   help="scale lr and Adam betas by 0.8 like the reference implementation")
    p.add_argument("--mixing", type=arg("mixing"), default=0.9,
                   help="style-mixing probability (0 for sketches/animals)")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--schedule", choices=["all", "adaptive", "manual"], default="all")
    p.add_argument("--k", type=arg("k"), default=None, help="adaptive: W+ indices per iteration")
    p.add_argument("--layers", default="", help="manual: groups coarse/middle/fine and/or W+ indices")
    p.add_argument("--n-w", type=arg("n_w"), default=8)
    p.add_argument("--n-i", type=arg("n_i"), default=1)
    p.add_argument("--lambda-global", type=arg("lambda_global"), default=0.0)
    p.add_argument("--preview-every", type=arg("preview_every"), default=50,
                   help="write a sample grid every N iterations")
    p.add_argument("--sample-dir", default=None, help="where sample grids go (default: next to --out)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the generator every N iterations as OUT.stepNNNNNN.safetensors (0 = off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "exact", "fast", "bf16"], default="auto",
                   help="arithmetic of the training step: exact = float32 everywhere (TF32 off); fast = TF32, CLIP and "
                        "the generator's top 4 resolutions in float16 (NVIDIA's settings), float32 master weights; "
                        "bf16 = fast with bfloat16; auto (default) = fast on a CUDA GPU, exact elsewhere")
    p.add_argument("--capture", choices=["auto", "none", "cuda_graph", "compile"], default="auto",
                   help="how the iterations run: auto (default) = the whole iteration as one CUDA graph on a GPU, "
                        "plain elsewhere; none; cuda_graph; compile (torch.compile the generator and CLIP towers)")
    p.add_argument("--out", required=True, help="output .safetensors")
    return p


#: Above this estimated training time on a CPU, say so (with what to change) before starting.
LONG_CPU_RUN_S = 15 * 60


def run(argv) -> int:
    a = build_parser().parse_args(argv)

    from ..catalogue import (catalogue, clip_entry, clip_weights_for, default_folder, local_path, missing,
                             offline_reason, unavailable_message, ModelUnavailableError)
    from ..clip.direction import text_direction
    from ..clip.ensemble import ClipEnsemble
    from ..clip.models import load_clip
    from ..clip.templates import expand_templates
    from ..stylegan.io import load_generator, save_generator
    from ..stylegan.sampling import save_image_grid
    from ..nada.guidance import few_shot_direction, guidance_from
    from ..nada.schedule import schedule_from_options
    from ..nada.trainer import AdaptSettings, adapt
    from .common import (ByteProgress, ProgressPrinter, Stage, device_from_arg, format_duration, generator_path,
                         note_interrupted_download, say)

    if (a.target is None) == (a.target_images is None):
        raise UsageError("give exactly one of --target TEXT or --target-images FOLDER/GLOB")
    if a.save_every < 0:
        raise UsageError("--save-every must be >= 0")
    dev = device_from_arg(a.device)
    clip_dirs = a.clip_dir or [str(default_folder("clip"))]

    # What is needed from the catalogue and not here yet? Offline, say all of it at once.
    weights = {}
    for s in a.clip_weights:
        name, _, path = s.partition("=")
        if not path:
            raise UsageError(f"--clip-weights {s!r}: expected NAME=FILE")
        weights[name] = path
    clip_list = [(n, w) for n, w in _parse_clip(a.clip or ["ViT-B-32:1.0", "ViT-B-16:1.0"]) if w != 0]
    if not clip_list:
        raise UsageError("--clip: give at least one CLIP model with a non-zero weight")
    if offline_reason():
        need = []
        g_entry = None if os.path.isfile(a.generator) else catalogue().find(a.generator, "stylegan")
        if g_entry is not None:
            need += missing([g_entry], {"stylegan": default_folder("stylegan")})
        for name, _ in clip_list:
            e = clip_entry(name)
            if name not in weights and e is not None and not any(local_path(e, d).is_file() for d in clip_dirs):
                from ..clip.models import find_local_weights
                if find_local_weights(name, clip_dirs) is None:
                    need += missing([e], {"clip": clip_dirs[0]})
        if need:
            raise ModelUnavailableError(unavailable_message(need))

    gen_file = generator_path(a.generator)
    with Stage(f"loading generator {gen_file}") as st:
        handle = load_generator(gen_file, device=dev)
        cfg = handle.cfg
        st.note(f"{cfg.img_resolution}x{cfg.img_resolution}, "
                f"{sum(p.numel() for p in handle.G.parameters()) / 1e6:.1f}M parameters, on {dev};")

    models = []
    for name, w in clip_list:
        if name in weights:
            arch, path = name, weights[name]
        else:
            e = clip_entry(name)
            progress = ByteProgress(f"download CLIP {name}") if e is not None else None
            with note_interrupted_download():
                arch, path = clip_weights_for(name, clip_dirs, progress=progress, log=say)
        where = path or f"a file for {name} in {', '.join(clip_dirs)} (or open_clip's download)"
        with Stage(f"loading CLIP {name} ({where})"):
            models.append((load_clip(arch, path, device=dev, search_dirs=clip_dirs), w))
    ens = ClipEnsemble(models)

    if a.target is not None:
        n_prompts = len(expand_templates("x", a.templates))
        with Stage(f"encoding 2 x {n_prompts} prompt(s) ('{a.source}' -> '{a.target}') with "
                   f"{len(ens)} CLIP model(s)"):
            direction = text_direction(ens, a.source, a.target, a.templates)
    else:
        files = _image_files(a.target_images)
        with Stage(f"encoding {len(files)} target image(s) and {a.num_source_samples} generated source image(s)"):
            direction = few_shot_direction(ens, files, handle.G, a.num_source_samples)

    schedule = schedule_from_options(cfg, a.schedule, a.layers, a.k, a.n_w, a.n_i)
    settings = AdaptSettings(iterations=a.iterations, batch_size=a.batch, lr=a.lr,
                             reference_lr_scale=a.reference_lr_scale, mixing_prob=a.mixing, seed=a.seed,
                             preview_every=a.preview_every, lambda_global=a.lambda_global, precision=a.precision,
                             capture=a.capture)
    guidance = guidance_from(ens, direction)

    if dev.type == "cpu":
        _estimate_cpu_time(handle.G, ens, settings, schedule, say, format_duration)

    sample_dir = a.sample_dir or os.path.splitext(a.out)[0] + "_samples"
    bar = ProgressPrinter("adapt")
    stop = {"flag": False}
    timing = {"t_start": None, "told": False}

    def on_sigint(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        say("stopping after this iteration (Ctrl-C again to abort without saving)")

    def progress(info):
        import time
        now = time.time()
        if info.step == 1:
            timing["t_start"] = now            # the first iteration includes warm-up: measure from here
        elif not timing["told"] and timing["t_start"] is not None and \
                (info.step >= 3 or now - timing["t_start"] > 30) and info.step < info.total:
            per = (now - timing["t_start"]) / (info.step - 1)
            timing["told"] = True
            say(f"measured {format_duration(per)} per iteration: about {format_duration(per * (info.total - info.step))}"
                f" for the remaining {info.total - info.step} iterations")
        bar(info.step, info.total, f"loss {info.loss:.4f}")
        if info.preview is not None:
            os.makedirs(sample_dir, exist_ok=True)
            save_image_grid(info.preview, os.path.join(sample_dir, f"step{info.step:06d}.png"),
                            cols=info.preview.shape[0] // 2)
        if stop["flag"]:
            raise KeyboardInterrupt

    out_stem = os.path.splitext(a.out)[0]

    def snapshot(step, G_train, loss):
        entry = {"op": "nada_adapt", "direction": direction.provenance, "settings": settings.to_dict(),
                 "schedule": schedule.to_dict(), "iterations_done": step, "final_loss": loss, "snapshot": True}
        save_generator(handle.derive(G_train, name=f"{os.path.basename(out_stem)}-step{step}", history_entry=entry),
                       f"{out_stem}.step{step:06d}.safetensors")

    say(f"training {settings.iterations} iteration(s), batch {settings.batch_size}, {schedule.mode} layers, "
        f"on {dev} (Ctrl-C stops and saves what was trained)")
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = adapt(handle.G, guidance, settings, schedule, progress=progress, snapshot_every=a.save_every,
                       on_snapshot=snapshot)
    finally:
        signal.signal(signal.SIGINT, old)
    entry = result.history_entry(direction.provenance, settings, schedule,
                                 [f"{k} (weight {w:g})" for _, w, k in guidance.models()])
    out_handle = handle.derive(result.G, name=os.path.splitext(os.path.basename(a.out))[0], history_entry=entry)
    out = a.out
    if result.stop_exception is not None:
        if result.steps_done == 0:
            say(f"error: {result.stop_exception}")
            return 1
        out = os.path.splitext(a.out)[0] + f".partial-step{result.steps_done}.safetensors"
    save_generator(out_handle, out)
    if result.stop_exception is not None:
        why = "interrupted" if result.interrupted else f"stopped: {result.stop_exception}"
        say(f"{why}; the {result.steps_done} iterations trained so far were saved to {out}")
        return 130 if result.interrupted else 1
    say(f"wrote {out} ({result.steps_done} iterations, {result.seconds:.1f}s, final loss {result.losses[-1]:.4f})"
        + (f"; samples in {sample_dir}" if settings.preview_every else ""), sys.stdout)
    if result.runtime:
        rt = result.runtime
        say(f"precision {rt['precision']}; {rt['path']}; ops {rt['ops']}"
            + "".join(f"; {n}" for n in rt["notes"]))
    return 0


def _estimate_cpu_time(G, ens, settings, schedule, say, format_duration) -> None:
    """Before a CPU run: time one forward of the generator and of each CLIP model and say how
    long the run will take (with what to change when that is long)."""
    from ..timing import adapt_iteration_seconds, clip_forward_seconds, generator_forward_seconds
    t_g = generator_forward_seconds(G)
    t_c = [clip_forward_seconds(m) for m in ens.models]
    codes = schedule.n_w if schedule.mode == "adaptive" else 0
    per = adapt_iteration_seconds(t_g, t_c, settings.batch_size, codes)
    total = per * settings.iterations
    say(f"estimate on this CPU: about {format_duration(per)} per iteration, {format_duration(total)} for "
        f"{settings.iterations} iterations (rough; measured after the first iterations)")
    if total > LONG_CPU_RUN_S:
        say(f"note: that is a long run on a CPU. A GPU does an iteration at {G.cfg.img_resolution} px in a "
            "fraction of a second (--device cuda where there is one); or use fewer --iterations, "
            "--schedule all instead of adaptive, one CLIP model (--clip ViT-B-32), or a smaller generator "
            "(e.g. --generator ffhq-256).")


def _image_files(spec: str) -> list[str]:
    from ..batch.jobs import image_files
    try:
        return image_files(spec, where="--target-images")
    except ValueError as e:
        raise UsageError(str(e)) from None
