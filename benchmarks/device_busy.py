"""How busy a mining worker keeps its device: the overlapped worker against a serial one (SIMULATED device).

    python benchmarks/device_busy.py [--images 600] [--json OUT]
    python benchmarks/device_busy.py --rss-sizes 300,3000 --proposals-per-image 8 --speedup 20 [--json OUT]

There is no accelerator here, so the two models are stand-ins that take a
simulated device for the time their rates say and return outputs of the right
shape; everything else is the real worker (``ShardMiner``) on real data at
real sizes. The stand-ins plug in where the worker gets its models (the
``ProposalGenerator`` interface and a ``LoadedClip``), nothing of the worker is
patched:

- proposals: ``--proposal-rate`` images/s (default 10, the README's assumed
  A100 rate for Mask2Former Swin-L at batch 8), ``--proposals-per-image``
  masks per image (default 100, ``--top-k``) at the image's resolution;
- CLIP: ``--clip-rate`` crops/s (default 800, ViT-L/14 on an A100), 768-dim
  embeddings of 224 px crops; text prompts at ``--text-rate``.

A model call holds the device (a lock) and sleeps, releasing the GIL as a
CUDA call does. The images are ``maskmine sample`` scenes resized to COCO's
640x480, with their generated captions (real NLTK nouns, real decode, crops,
JPEG/PNG/RLE encoding and tar writing). It prints and writes (``--json``)
``device_busy``: the fraction of wall time the simulated device is busy from
the first model call to the last, for the default (overlapped) worker, and
``serial_device_busy`` for a one-thread serial worker (``ShardJob.overlap=False``),
with images/s for each, the load average and the CPU count.

``--rss-sizes A,B`` instead mines A and then B images, each in a fresh
process with the overlapped worker, and reports each one's peak RSS and
their ratio (memory must not grow with the job). Figures only: on a shared
machine they move with the load, which is printed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from maskmine.pipelines.mine import MineConfig, plan_run, shard_job
from maskmine.transforms.clip_models import LoadedClip
from maskmine.transforms.masked_crop import CropConfig
from maskmine.transforms.proposals.base import ProposalGenerator
from maskmine.transforms.proposals.factory import ProposalSpec
from maskmine.transforms.records import ImageRecord, ProposalSet
from maskmine.transforms.shard_mining import ClipWithTextCache, ShardMiner
from maskmine.transforms.shards import ShardStats
from maskmine.transforms.worker_threads import set_torch_threads

COCO_SIZE = (640, 480)  # width, height: COCO's most common image size
EMBED_DIM = 768  # ViT-L/14's embedding


class SimulatedDevice:
    """One accelerator: a model call holds it for ``seconds`` (sleeping, so the GIL is free) and is recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[float, float, float]] = []  # (start, seconds asked, end)

    def run(self, seconds: float) -> None:
        with self._lock:
            start = time.perf_counter()
            time.sleep(seconds)
            self.calls.append((start, seconds, time.perf_counter()))

    def busy_fraction(self) -> float:
        """Busy time ÷ wall time from the first call's start to the last call's end.

        Busy time is what the calls asked for, not how long their threads slept:
        on a loaded machine a sleeping thread wakes late, and a real device
        would have been idle for that overshoot.
        """
        if not self.calls:
            return 0.0
        return self.busy_seconds() / (self.calls[-1][2] - self.calls[0][0])

    def busy_seconds(self) -> float:
        return sum(seconds for _, seconds, _ in self.calls)


class SimulatedProposals(ProposalGenerator):
    """Mask2Former's place in the worker: ``len(images) / rate`` seconds of device a batch, K masks an image.

    The masks are boxes of seeded random size and place (seeded by the image
    id, so reruns give the same masks), at the image's resolution, as the
    real generator returns them after its filters.
    """

    name = "simulated-mask2former"
    checkpoint = "simulated"

    def __init__(self, device: SimulatedDevice, rate: float, per_image: int) -> None:
        self.device, self.rate, self.per_image = device, rate, per_image

    def propose(self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]) -> list[ProposalSet]:
        self.device.run(len(images) / self.rate)
        return [self._masks(image, record.image_id) for image, record in zip(images, records)]

    def _masks(self, image: np.ndarray, image_id: int) -> ProposalSet:
        height, width = image.shape[:2]
        rng = np.random.default_rng(image_id)
        masks = np.zeros((self.per_image, height, width), dtype=bool)
        for k in range(self.per_image):
            h = max(2, int(height * rng.uniform(0.05, 0.9)))
            w = max(2, int(width * rng.uniform(0.05, 0.9)))
            y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            masks[k, y : y + h, x : x + w] = True
        scores = np.sort(rng.uniform(0.5, 1.0, self.per_image).astype(np.float32))[::-1].copy()
        return ProposalSet(masks=masks, scores=scores, backend=self.name, checkpoint=self.checkpoint)


class SimulatedClipModel(torch.nn.Module):
    """ViT-L/14's place in the worker: ``encode_image`` takes ``N / rate`` seconds of device, gives (N, 768)."""

    def __init__(self, device: SimulatedDevice, crop_rate: float, text_rate: float) -> None:
        super().__init__()
        self.device, self.crop_rate, self.text_rate = device, crop_rate, text_rate
        generator = torch.Generator().manual_seed(0)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(100.0)))
        self.image_projection = torch.randn(3 * 8 * 8, EMBED_DIM, generator=generator)
        self.token_projection = torch.randn(1, EMBED_DIM, generator=generator)

    def encode_image(self, crops: torch.Tensor) -> torch.Tensor:
        self.device.run(crops.shape[0] / self.crop_rate)
        size = crops.shape[-1]
        sampled = crops[:, :, :: size // 8, :: size // 8][:, :, :8, :8].reshape(crops.shape[0], -1)  # no CPU work to speak of
        return sampled.float() @ self.image_projection

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.device.run(tokens.shape[0] / self.text_rate)
        return torch.sin(tokens.float().sum(1, keepdim=True) * self.token_projection)


def simulated_clip(device: SimulatedDevice, crop_rate: float, text_rate: float) -> LoadedClip:
    import open_clip

    return LoadedClip(
        model=SimulatedClipModel(device, crop_rate, text_rate),
        tokenizer=open_clip.get_tokenizer("ViT-L-14"),
        crop_config=CropConfig(input_size=224),
        name="simulated-ViT-L-14",
        pretrained="simulated",
    )


def write_sample(folder: Path, images: int, distinct: int = 64) -> tuple[Path, Path]:
    """``images`` generated scenes at 640x480 with their captions (``distinct`` scenes, repeated under new ids)."""
    from PIL import Image

    from maskmine.transforms.sample_world.coco import caption_annotations, coco_file
    from maskmine.transforms.sample_world.generate import render

    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    entries, captions = [], []
    scenes = {}
    for index in range(images):
        source = index % distinct
        if source not in scenes:
            _, scene, caps = render(0, "train", source)
            path = image_dir / f"scene-{source:04d}.jpg"
            Image.fromarray(scene.image).resize(COCO_SIZE, Image.BICUBIC).save(path, quality=95)
            scenes[source] = (path, caps)
        path, caps = scenes[source]
        image_id = index + 1
        file_name = f"{image_id:012d}.jpg"
        os.link(path, image_dir / file_name)
        entries.append({"id": image_id, "file_name": file_name, "width": COCO_SIZE[0], "height": COCO_SIZE[1], "license": 1})
        captions.extend(caption_annotations(image_id, caps))
    for source in scenes.values():
        source[0].unlink()
    captions_file = folder / "captions.json"
    captions_file.write_text(json.dumps(coco_file("captions", entries, captions, "device_busy benchmark")))
    return captions_file, image_dir


@dataclass
class Run:
    worker: str  # "overlapped" or "serial"
    images: int
    wall_seconds: float
    images_per_second: float
    device_busy: float
    device_seconds: float
    pairs: int
    peak_rss_mib: float
    seconds_per_stage: dict[str, float] = field(default_factory=dict)  # thread time in each stage, all images
    load_average: list[float] = field(default_factory=list)


def mine(captions: Path, image_dir: Path, out: Path, args: argparse.Namespace, overlap: bool) -> Run:
    """Mine every image of ``captions`` into ``out`` with one worker (overlapped or serial) and the stand-ins."""
    from maskmine.transforms.nouns import ensure_nltk_data

    ensure_nltk_data()
    config = MineConfig(
        captions=str(captions), images=str(image_dir), out=str(out), proposals=ProposalSpec(backend="maskformer"),
        num_shards=args.shards, batch_size=args.batch_size, torch_threads=args.torch_threads,
    )
    plan = plan_run(config)
    set_torch_threads(args.torch_threads, 1)
    job = replace(shard_job(config, 1), overlap=overlap)
    device = SimulatedDevice()
    generator = SimulatedProposals(device, args.proposal_rate, args.proposals_per_image)
    clip = ClipWithTextCache(simulated_clip(device, args.clip_rate, args.text_rate))
    miner = ShardMiner(job, generator, clip, crop_workers=None if overlap else 1)
    start = time.perf_counter()
    stats = ShardStats()
    for shard in sorted(plan.pending):
        stats.add(miner.mine(shard))
    wall = time.perf_counter() - start
    return Run(
        worker="overlapped" if overlap else "serial", images=plan.images, wall_seconds=round(wall, 2),
        images_per_second=round(plan.images / wall, 3), device_busy=round(device.busy_fraction(), 3),
        device_seconds=round(device.busy_seconds(), 2), pairs=stats.samples,
        seconds_per_stage={k: round(v, 2) for k, v in sorted(stats.seconds.items())},
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        load_average=[round(v, 2) for v in os.getloadavg()],
    )


def settings(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("proposal_rate", "clip_rate", "text_rate", "proposals_per_image",
                                          "batch_size", "torch_threads", "shards")}


def busy_report(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="device-busy-") as tmp:
        captions, image_dir = write_sample(Path(tmp) / "data", args.images)
        overlapped = mine(captions, image_dir, Path(tmp) / "overlapped", args, overlap=True)
        serial = mine(captions, image_dir, Path(tmp) / "serial", args, overlap=False)
    return {
        "simulated": True,
        "what": "fraction of wall time a SIMULATED device is busy, first model call to last",
        "device_busy": overlapped.device_busy,
        "serial_device_busy": serial.device_busy,
        "images_per_second": overlapped.images_per_second,
        "serial_images_per_second": serial.images_per_second,
        "speedup": round(overlapped.images_per_second / serial.images_per_second, 3),
        "runs": [asdict(overlapped), asdict(serial)],
        "settings": settings(args),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }


def rss_report(args: argparse.Namespace) -> dict:
    """Each size mined by the overlapped worker in a fresh process; their peak RSS side by side."""
    runs = []
    for size in args.rss_sizes:
        with tempfile.TemporaryDirectory(prefix="device-busy-rss-") as tmp:
            out = Path(tmp) / "run.json"
            cmd = [sys.executable, __file__, "--single-run", "--images", str(size), "--json", str(out),
                   *[f"--{k.replace('_', '-')}={v}" for k, v in settings(args).items() if v is not None]]
            subprocess.run(cmd, check=True)
            runs.append(json.loads(out.read_text()))
    first, last = runs[0], runs[-1]
    return {
        "simulated": True,
        "what": "peak RSS of a fresh process mining N images with the overlapped worker (SIMULATED device)",
        "runs": runs,
        "rss_ratio": round(last["peak_rss_mib"] / first["peak_rss_mib"], 3),
        "settings": settings(args),
        "cpus": os.cpu_count(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600,
                   help="images to mine per worker (default 600: one shard of a default job, --images-per-shard 600; "
                        "a shard fills and drains the worker's pipeline once, so fewer images weigh that more)")
    p.add_argument("--shards", type=int, default=1, help="shards (default 1: one long shard, as a 600-image shard is)")
    p.add_argument("--batch-size", type=int, default=8, help="images per proposal batch (default 8)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads (default: all cores, one worker)")
    p.add_argument("--proposal-rate", type=float, default=10.0, help="simulated proposal model, images/s (default 10)")
    p.add_argument("--clip-rate", type=float, default=800.0, help="simulated CLIP image tower, crops/s (default 800)")
    p.add_argument("--text-rate", type=float, default=8000.0, help="simulated CLIP text tower, prompts/s (default 8000)")
    p.add_argument("--proposals-per-image", type=int, default=100, help="masks per image (default 100, --top-k)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="divide every simulated model time by this (RSS runs of thousands of images)")
    p.add_argument("--rss-sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="instead: peak RSS of fresh processes mining each of these image counts")
    p.add_argument("--single-run", action="store_true", help=argparse.SUPPRESS)  # one overlapped run (--rss-sizes)
    p.add_argument("--json", help="write the figures here as JSON")
    args = p.parse_args(argv)
    if args.speedup != 1.0:
        args.proposal_rate *= args.speedup
        args.clip_rate *= args.speedup
        args.text_rate *= args.speedup
        args.speedup = 1.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.single_run:
        with tempfile.TemporaryDirectory(prefix="device-busy-one-") as tmp:
            captions, image_dir = write_sample(Path(tmp) / "data", args.images)
            report = asdict(mine(captions, image_dir, Path(tmp) / "out", args, overlap=True))
    elif args.rss_sizes:
        report = rss_report(args)
    else:
        report = busy_report(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
