"""Masked crops: ms per mask of the per-mask loop against the batched cut, at COCO size, on the CPU.

    python -m benchmarks.masked_crops [--masks 100] [--repeats 7] [--threads N] [--json OUT]

One 640x480 image and ``--masks`` proposal-like masks (seeded: ellipses whose areas are spread
log-uniformly from 0.05% to 40% of the image, ragged edges, some touching the border), cut with
OVSeg's crop (:func:`maskmine.transforms.masked_crop.masked_crops`, the default CropConfig: 224 px,
stretch, tight box) by ``strategy="loop"`` and ``strategy="batched"``, alternately, ``--repeats``
times each after one warm-up; the medians are printed as ms per mask, and their ratio. It also
prints the largest difference between the two paths' CLIP inputs. It runs on the CPU only: the GPU's
speed is not measured here (no GPU on the machine this was written on), and the per-device choice
``strategy="auto"`` makes (``BATCHED_DEVICE_TYPES``) rests on these CPU figures plus the expectation
that one batched cut beats K small kernel launches on a GPU. Timings on a shared, loaded machine
are noisy: compare the ratio of one run, not absolute figures across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from maskmine.transforms.masked_crop import BATCHED_DEVICE_TYPES, CropConfig, masked_crops

HEIGHT, WIDTH = 480, 640  # a COCO-sized image


def proposal_masks(count: int, seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """``count`` (H, W) masks shaped like proposals: ellipses of log-uniform area, ragged, some at the border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:height, :width]
    masks = np.zeros((count, height, width), dtype=bool)
    areas = np.exp(rng.uniform(np.log(0.0005), np.log(0.4), count)) * height * width
    for k, area in enumerate(areas):
        aspect = np.exp(rng.uniform(-1.0, 1.0))
        ry = max(1.0, np.sqrt(area / np.pi / aspect))
        rx = max(1.0, ry * aspect)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        mask &= rng.random((height, width)) > 0.02  # ragged, as thresholded soft masks are
        mask[min(int(cy), height - 1), min(int(cx), width - 1)] = True  # never empty
        masks[k] = mask
    return masks


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=100, help="masks per image (default 100, the mining top-k)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each path (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    masks = proposal_masks(args.masks, args.seed)
    config = CropConfig()
    loop = masked_crops(image, masks, config, strategy="loop")  # warm-up, and the reference
    batched = masked_crops(image, masks, config, strategy="batched")
    max_abs = max(float((a.clip_input - b.clip_input).abs().max()) for a, b in zip(loop, batched))
    same_masks = all(np.array_equal(a.mask, b.mask) and a.box == b.box for a, b in zip(loop, batched))
    times: dict[str, list[float]] = {"loop": [], "batched": []}
    for _ in range(args.repeats):
        for strategy in ("loop", "batched"):
            times[strategy].append(timed(lambda: masked_crops(image, masks, config, strategy=strategy)))
    ms = {k: 1000.0 * statistics.median(v) / args.masks for k, v in times.items()}
    result = {
        "device": "cpu",
        "image": [HEIGHT, WIDTH],
        "masks": args.masks,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "ms_per_mask": ms,
        "batched_over_loop": ms["batched"] / ms["loop"],
        "max_abs_clip_input_difference": max_abs,
        "masks_and_boxes_identical": same_masks,
        "auto_batches_on": list(BATCHED_DEVICE_TYPES),
        "gpu": "not measured (no GPU on this machine)",
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    print(f"CPU, {HEIGHT}x{WIDTH}, {args.masks} masks, {args.repeats} repeats, {torch.get_num_threads()} torch threads, "
          f"load average {result['load_average'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  loop    {ms['loop']:8.2f} ms/mask")
    print(f"  batched {ms['batched']:8.2f} ms/mask  ({result['batched_over_loop']:.2f}x the loop's time)")
    print(f"  largest |loop - batched| of the CLIP inputs: {max_abs:.2e}; masks and boxes identical: {same_masks}")
    print("  GPU: not measured here (no GPU)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
