"""Time the audit's pixel-space nearest-neighbour search (chunked matmuls) on random images.

    python benchmarks/audit_nearest.py --queries 4500 --keys 9000 --size 28 [--device cuda] [--mirror]

Prints one line: sizes, device, seconds, image pairs per second, and the time that rate gives for
45,000 synthetic against 90,000 training images (the issue's target scale). Random images cost
the same as real ones: the work is the same matrix products.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synthaug.reference.metrics import nearest_by_correlation
from synthaug.core.runtime import pick_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4500)
    parser.add_argument("--keys", type=int, default=9000)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--device")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.size, args.size, args.channels)
    queries = rng.integers(0, 256, (args.queries, *shape), dtype=np.uint8)
    keys = rng.integers(0, 256, (args.keys, *shape), dtype=np.uint8)
    device = pick_device(args.device)
    nearest_by_correlation(queries[:8], keys[:8], args.mirror, device)  # warm-up (CUDA context, kernels)
    began = time.perf_counter()
    nearest_by_correlation(queries, keys, args.mirror, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    pairs = args.queries * args.keys * (2 if args.mirror else 1)
    target = 45_000 * 90_000 * (2 if args.mirror else 1)
    print(
        f"{args.queries} x {args.keys} images of {args.size}x{args.size}x{args.channels}{' (+ mirror)' if args.mirror else ''} "
        f"on {device} (torch threads {torch.get_num_threads()}): {seconds:.2f} s, {pairs / seconds:.3g} pairs/s; "
        f"45,000 x 90,000 at this rate: {target / (pairs / seconds) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
