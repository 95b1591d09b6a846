"""Command line: ``python -m nada_ops <command> ...`` (the same work as the nodes, outside ComfyUI).

One module per command (``run(argv) -> exit code``), imported only when its command runs; the
library never imports this package.
"""
from __future__ import annotations

import importlib
import sys

from .common import ProgressPrinter, device_from_arg  # noqa: F401  (shared by the commands)

#: command -> (module in this package, one-line help)
COMMANDS = {
    "info": ("info", "print the architecture and provenance of a generator file"),
    "sample": ("sample", "render seeds to an image grid (and/or separate images)"),
    "adapt": ("adapt", "StyleGAN-NADA: adapt a generator to a new domain with CLIP guidance (text or images)"),
    "invert": ("invert", "invert photos into W/W+ latents (optimization); writes latents .pt + reconstruction PNG"),
    "interpolate-models": ("interpolate", "blend two generators in weight space: (1 - t) A + t B -> .safetensors"),
    "render-transition": ("render", "render domain-transition videos (generators A -> B -> ...), resumable; "
                                    "or a job file"),
    "models": ("models", "list the models the pack can download by name, and which are here"),
    "download": ("download", "download catalogue models by name (e.g. ffhq, afhqdog, ViT-B-32) into the models folder"),
    "mapper": ("mapper", "latent mapper on an adapted generator (StyleGAN-NADA sec. 4.3): train | apply"),
    "sweep": ("sweep", "adapt one generator to many prompts / a grid of settings (optionally + transitions); "
                       "--ray for many GPUs"),
    "prior": ("prior", "clip2latent text -> latents priors: make-pairs | train | sample | info"),
}


def _load_images(paths, resolution: int):
    from .invert import _load_images as load
    return load(paths, resolution)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m nada_ops <command> [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:20s} {help_}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}; try --help", file=sys.stderr)
        return 2
    from ..catalogue import DownloadError
    from ..stylegan.formats import CheckpointError
    from .common import UsageError, say
    try:
        module = importlib.import_module(f".{COMMANDS[name][0]}", __name__)
        return module.run(rest) or 0
    except UsageError as e:
        say(f"error: {e}")
        return 2
    except (CheckpointError, FileNotFoundError, ValueError, DownloadError) as e:
        # bad model files, missing models or CLIP weights, failed downloads, invalid settings:
        # a clear message, no traceback
        say(f"error: {e}")
        return 1
    except SystemExit as e:
        if isinstance(e.code, str):              # raise SystemExit("message") in a command
            say(e.code if e.code.startswith("error:") else f"error: {e.code}")
            return 2
        raise
    except KeyboardInterrupt:
        say("interrupted")
        return 130
