"""Ranges of the values a user hands the pack in job files and on the command line.

One table (:data:`RANGES`) serves both: :func:`check` validates a value that came from JSON
(type and range, with a message naming where it came from and the field), :func:`arg`
makes the matching ``argparse`` type.  The bounds are what a sane request can need, far
above any real use, and low enough that a typo (``--frames 10000000000``) is refused at
once instead of running for days or filling the memory.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

UINT32 = 2 ** 32 - 1


@dataclass(frozen=True)
class Range:
    kind: type          # int or float
    lo: float
    hi: float
    what: str = ""      # shown in messages, e.g. "video frames"

    def describe(self) -> str:
        lo = f"{self.lo:g}" if self.kind is float else str(int(self.lo))
        hi = f"{self.hi:g}" if self.kind is float else str(int(self.hi))
        return f"{lo}..{hi}"


RANGES: dict[str, Range] = {
    # video / render jobs
    "frames": Range(int, 1, 100_000, "frames per video"),
    "fps": Range(float, 0.01, 240.0, "frames per second"),
    "batch": Range(int, 1, 1024, "images rendered at once"),
    "cols": Range(int, 1, 256, "grid columns"),
    "max_writers": Range(int, 1, 256, "files encoded at the same time"),
    "quality": Range(int, 0, 100, "MP4 CRF 0..51 / WebP quality 0..100"),
    "crf": Range(int, 0, 51, "H.264 CRF"),
    "webp_quality": Range(int, 0, 100, "WebP quality"),
    "noise_seed": Range(int, 0, UINT32, "noise seed"),
    "loop_count": Range(int, 0, 65535, "animation repeats (0 = forever)"),
    # latents
    "psi": Range(float, -10.0, 10.0, "truncation psi"),
    "cutoff": Range(int, 0, 64, "W+ entries truncated"),
    "class_idx": Range(int, 0, 1_000_000, "class label"),
    "crossover": Range(int, 0, 64, "first W+ index of the mixing seed"),
    "seed": Range(int, 0, UINT32, "seed"),
    "strength": Range(float, -1000.0, 1000.0, "edit strength"),
    "blend_t": Range(float, -10.0, 10.0, "blend position (0 = A, 1 = B)"),
    "translate": Range(float, -4.0, 4.0, "StyleGAN3 input translation (image sizes)"),
    "rotate": Range(float, -360.0, 360.0, "StyleGAN3 input rotation (degrees)"),
    # inversion
    "steps": Range(int, 1, 1_000_000, "optimisation steps"),
    "lr": Range(float, 1e-9, 100.0, "learning rate"),
    "noise_regularize": Range(float, 0.0, 1e12, "noise regularisation weight"),
    "perceptual_weight": Range(float, 0.0, 1e6, "perceptual loss weight"),
    "encoder_iterations": Range(int, 1, 100, "ReStyle encoder passes"),
    "refine_steps": Range(int, 0, 1_000_000, "optimisation steps after the encoder"),
    "face_index": Range(int, 0, 10_000, "face in a photo (0 = largest)"),
    # adaptation
    "iterations": Range(int, 1, 1_000_000, "training iterations"),
    "train_batch": Range(int, 1, 256, "images per training step"),
    "num_source_samples": Range(int, 1, 4096, "generated source images"),
    "mixing": Range(float, 0.0, 1.0, "style-mixing probability"),
    "k": Range(int, 1, 64, "W+ entries trained per iteration"),
    "n_w": Range(int, 1, 4096, "latents for the layer selection"),
    "n_i": Range(int, 1, 10_000, "layer-selection optimisation steps"),
    "lambda_global": Range(float, 0.0, 1e6, "global CLIP loss weight"),
    "preview_every": Range(int, 0, 1_000_000, "iterations between sample grids (0 = none)"),
    # latent mapper
    "mapper_lambda": Range(float, 0.0, 1e6, "latent-mapper loss weight"),
    # batch backends (render farms)
    "gpus_per_unit": Range(float, 0.01, 64.0, "GPUs per batch worker (fractions share a GPU)"),
    "cpus_per_unit": Range(float, 0.01, 1024.0, "CPUs per batch worker"),
    "workers": Range(int, 1, 100_000, "batch workers"),
    "retries": Range(int, 0, 100, "tries again after a worker died"),
    # clip2latent priors
    "pairs": Range(int, 1, 100_000_000, "training pairs"),
    "shard_size": Range(int, 1, 200_000, "pairs per shard file"),
    "train_steps": Range(int, 1, 100_000_000, "prior training steps"),
    "prior_batch": Range(int, 1, 65_536, "pairs per training step"),
    "weight_decay": Range(float, 0.0, 10.0, "AdamW weight decay"),
    "ema_beta": Range(float, 0.0, 0.999999, "EMA decay"),
    "ema_every": Range(int, 1, 1_000_000, "steps between EMA updates"),
    "ema_start": Range(int, 0, 100_000_000, "steps before the EMA starts"),
    "cond_noise": Range(float, 0.0, 100.0, "condition noise scale"),
    "cond_drop": Range(float, 0.0, 0.99, "condition dropout probability"),
    "checkpoint_every": Range(int, 0, 100_000_000, "steps between checkpoints (0 = only at the end)"),
    "val_every": Range(int, 0, 100_000_000, "steps between validations (0 = only at the end)"),
    "val_images": Range(int, 0, 4096, "held-out validation images"),
    "mix_shards": Range(int, 1, 1024, "shards shuffled together"),
    "per_prompt": Range(int, 1, 1024, "images per prompt"),
    "candidates": Range(int, 1, 256, "latents drawn per image for CLIP re-ranking"),
    "guidance": Range(float, -100.0, 100.0, "classifier-free guidance scale"),
    "prior_steps": Range(int, 1, 100_000, "diffusion sampling steps"),
}

#: Most seeds one request may name (each one becomes a rendered image or video).
MAX_SEEDS = 10_000
#: Generators one transition may pass through (each one is held in memory).
MAX_GENERATORS = 32
#: Job files: bytes read, jobs run, characters in a text field.
MAX_JOB_FILE_BYTES = 4 * 1024 * 1024
MAX_JOBS = 1000
MAX_TEXT_CHARS = 4096


def check(name: str, value, where: str = "", optional: bool = False, field: str | None = None):
    """``value`` (e.g. from JSON) as the int/float that ``RANGES[name]`` allows; ValueError
    naming ``where`` and the field otherwise.  Booleans and strings are not numbers; a float
    with an integral value is accepted for an int field (``120.0``)."""
    r = RANGES[name]
    label = f"{where}: " if where else ""
    label += f"'{field or name}'"
    if value is None:
        if optional:
            return None
        raise ValueError(f"{label} is required ({r.what}, {r.describe()})")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if r.kind is int else "a number"
        raise ValueError(f"{label} must be {kind} ({r.what}, {r.describe()}), got {type(value).__name__} "
                         f"{_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number ({r.describe()}), got {value}")
    if r.kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{label} must be a whole number ({r.describe()}), got {value}")
            value = int(value)
    else:
        value = float(value)
    if not r.lo <= value <= r.hi:
        raise ValueError(f"{label} must be in {r.describe()} ({r.what}), got {_short(value)}")
    return value


def arg(name: str):
    """An ``argparse`` type for ``RANGES[name]``: parses the text and checks the range."""
    r = RANGES[name]

    def parse(text: str):
        try:
            v = r.kind(text)
        except (TypeError, ValueError):
            kind = "an integer" if r.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind} in {r.describe()}, got {_short(text)}") from None
        try:
            return check(name, v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_short(text)} is outside {r.describe()} ({r.what})") from None
    parse.__name__ = name        # argparse shows it in "invalid <name> value"
    return parse


def check_text(value, where: str, field: str, optional: bool = False, max_chars: int = MAX_TEXT_CHARS):
    """A short string (a path, a name, a layer list): type and length checked."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: '{field}' must be a string, got {type(value).__name__} {_short(value)}")
    if len(value) > max_chars:
        raise ValueError(f"{where}: '{field}' is {len(value)} characters long, at most {max_chars} allowed")
    if "\0" in value:
        raise ValueError(f"{where}: '{field}' contains a NUL character")
    return value


def physical_memory_bytes() -> int | None:
    """Installed memory, when the OS tells (Linux, macOS); None otherwise."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(need_bytes: int, what: str, hint: str = "") -> None:
    """Refuse, before allocating, a request whose result alone exceeds the installed
    memory (it would swap for hours or be killed); no check where the OS does not tell."""
    have = physical_memory_bytes()
    if have is not None and need_bytes > have:
        raise ValueError(f"{what} needs {need_bytes / 2 ** 30:.1f} GiB, more than this machine's "
                         f"{have / 2 ** 30:.1f} GiB of memory" + (f": {hint}" if hint else ""))


def _short(v, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."
