"""What every command shares: the progress printer and the --device choice."""
from __future__ import annotations

import sys
import time


def device_from_arg(arg: str):
    """'auto' (CUDA when there is one), 'cpu', 'cuda', 'cuda:N', ... as a torch.device."""
    import torch
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(arg)


class ProgressPrinter:
    """Minimal text progress bar on stderr (no extra dependency)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.time()

    def __call__(self, done, total, extra=None):
        frac = done / max(total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        el = time.time() - self.t0
        eta = el / frac - el if frac > 0 else 0
        msg = f"\r{self.label} [{bar}] {done}/{total} {el:6.1f}s eta {eta:6.1f}s"
        if extra:
            msg += f" {extra}"
        self.stream.write(msg)
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
