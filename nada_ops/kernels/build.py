"""Build the compiled ops ahead of time, with or without a GPU.

    python -m nada_ops.kernels.build --arch 9.0            # CI: prove that it compiles
    python -m nada_ops.kernels.build                       # the visible GPUs, into the cache
    python -m nada_ops.kernels.build --cpu-only            # CPU test variant (no nvcc needed)

Without ``--build-dir`` the library lands in the same cache folder that the
just-in-time loader uses, so a later first use only loads it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nada_ops.kernels.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", default=[],
                    help="CUDA architecture such as 9.0 or 8.6+PTX (repeatable; default: visible GPUs "
                         "or $TORCH_CUDA_ARCH_LIST)")
    ap.add_argument("--cpu-only", action="store_true", help="build the CPU-only test variant")
    ap.add_argument("--build-dir", default=None, help="build folder (default: the loader's cache)")
    ap.add_argument("--no-load", action="store_true", help="compile only, do not import the library")
    ap.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (sets MAX_JOBS)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    if args.jobs:
        os.environ["MAX_JOBS"] = str(args.jobs)
    arches = [a for spec in args.arch for a in spec.replace(",", ";").split(";") if a]
    from . import loader

    t0 = time.monotonic()
    try:
        result = loader.build(arch_list=arches or None, with_cuda=not args.cpu_only, build_dir=args.build_dir,
                              load=not args.no_load, verbose=args.verbose)
    except loader.BuildError as exc:
        print(f"nada_ops.kernels.build: FAILED: {exc}", file=sys.stderr)
        return 1
    dt = time.monotonic() - t0
    where = result if isinstance(result, str) else getattr(result, "__file__", result)
    print(f"nada_ops.kernels.build: OK in {dt:.1f} s: {where}")
    if not isinstance(result, str):
        print(f"  with_cuda={result.with_cuda} activations={sorted(result.activations)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
