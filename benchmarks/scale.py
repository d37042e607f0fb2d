"""Scale-out benchmark: images/s on 1 vs 2 local workers, memory per worker, and a full-job estimate.

    python -m benchmarks.scale [--coco DIR] [--limit 80] [--json PATH]

Measures, on this machine, with coco-gt proposals and the tiny random CLIP
(the real models cannot be downloaded here):

1. ``maskmine mine`` on the DirectRunner in multi_processing mode with
   --direct_num_workers 1 and 2, and on a local dask.distributed cluster of
   1 and 2 worker processes (one thread each): images/s, the 2-vs-1 ratio,
   and the resident-memory high-water mark of each worker process (sampled
   with psutil for the Direct workers, ``getrusage`` on the Dask workers);
2. per-image CPU costs of the stages that stay on CPU at full scale
   (decode, nouns, masked crop at CLIP ViT-L/14's 224 px per proposal, JPEG/PNG
   /RLE encoding per pair, shard writing), and the CPU time of one CLIP
   ViT-L/14 image-tower forward pass (random weights: same arithmetic);
3. an ESTIMATE of the wall time and GPU count of the full 118K-image job with
   Mask2Former Swin-L + CLIP ViT-L/14, combining (2) with GPU throughputs that
   are ASSUMPTIONS (flags below), since this machine has no GPU.

Timing is not a test; on a shared 2-core machine the ratio is noisy and at
most 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
FULL_IMAGES = 118_287  # COCO train2017 images with captions


@dataclass
class RunResult:
    runner: str
    workers: int
    images: int
    wall_seconds: float
    images_per_second: float
    worker_peak_rss_mib: list[float] = field(default_factory=list)
    seconds_per_stage: dict[str, float] = field(default_factory=dict)
    pairs: int = 0


class RssSampler:
    """Peak RSS of every descendant process of this one, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.cmdline: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = self._psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                    if child.pid not in self.cmdline:
                        self.cmdline[child.pid] = " ".join(child.cmdline())
                except self._psutil.Error:
                    continue
                self.peak[child.pid] = max(rss, self.peak.get(child.pid, 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def workers_mib(self, marker: str) -> list[float]:
        """Peaks of the Python processes whose command line holds ``marker`` (not their shell wrappers)."""
        return sorted(
            round(v / 2**20, 1) for pid, v in self.peak.items()
            if marker in self.cmdline.get(pid, "") and "python" in self.cmdline[pid].split(" ")[0]
        )


def mine_config(coco: Path, out: Path, limit: int, labels: str):
    from maskmine.pipelines.mine import MineConfig
    from maskmine.transforms.clip_models import ClipSpec
    from maskmine.transforms.proposals.factory import ProposalSpec

    return MineConfig(
        captions=str(coco / "annotations" / "captions_train2017.json"),
        instances=str(coco / "annotations" / "instances_train2017.json"),
        images=str(coco / "train2017"),
        out=str(out),
        proposals=ProposalSpec(backend="coco-gt", device="cpu"),
        clip=ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu"),
        labels=labels,
        num_shards=4,
        limit=limit,
        batch_size=4,
    )


def _result(runner: str, workers: int, stats: dict, wall: float, rss: list[float]) -> RunResult:
    return RunResult(
        runner=runner, workers=workers, images=stats["images_read"], wall_seconds=round(wall, 2),
        images_per_second=round(stats["images_read"] / wall, 3), worker_peak_rss_mib=rss,
        seconds_per_stage=stats["seconds_per_stage"], pairs=stats["pairs"],
    )


def bench_direct(coco: Path, work: Path, limit: int, labels: str, workers: int) -> RunResult:
    from maskmine.pipelines.mine import run_mining

    out = work / f"direct-{workers}"
    args = ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    with RssSampler() as sampler:
        start = time.perf_counter()
        stats = run_mining(mine_config(coco, out, limit, labels), args, progress=False)
        wall = time.perf_counter() - start
    return _result("direct-multi_processing", workers, stats, wall, sampler.workers_mib("sdk_worker_main"))


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def bench_dask(coco: Path, work: Path, limit: int, labels: str, workers: int) -> RunResult:
    import distributed

    from maskmine.pipelines.mine import run_mining
    from maskmine.pipelines.runners import check_dask_cluster

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    if os.environ.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    if os.environ.get("NLTK_DATA"):
        env["NLTK_DATA"] = os.environ["NLTK_DATA"]
    with distributed.LocalCluster(
        n_workers=workers, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, env=env
    ) as cluster:
        check_dask_cluster(cluster.scheduler_address)  # workers import maskmine before the clock starts
        out = work / f"dask-{workers}"
        args = ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address]
        start = time.perf_counter()
        stats = run_mining(mine_config(coco, out, limit, labels), args, progress=False)
        wall = time.perf_counter() - start
        with distributed.Client(cluster.scheduler_address) as client:
            peaks = client.run(_peak_rss_kib)
    return _result("dask", workers, stats, wall, sorted(round(v / 1024, 1) for v in peaks.values()))


@dataclass
class CpuCosts:
    """Measured CPU seconds of the CPU-side work, per unit."""

    decode_per_image: float
    nouns_per_image: float
    crop_per_proposal: float  # masked crop + CLIP normalisation at 224 px
    encode_per_pair: float  # JPEG crop + PNG mask + COCO RLE
    write_per_pair: float  # tar + Parquet + manifest
    proposals_per_image_coco_gt: float
    pairs_per_image: float
    vit_l14_forward_per_crop: float  # CPU, this machine, for contrast


def measure_cpu_costs(coco: Path, reference: RunResult, limit: int, threads: int) -> CpuCosts:
    """Micro-measure per-unit CPU costs (warm, one process): decode, nouns, crops at 224 px, pair encoding,
    a ViT-L/14 forward; shard writing per pair comes from the reference run's stage seconds."""
    import torch

    from maskmine.transforms.clip_models import load_clip
    from maskmine.transforms.coco_reader import read_captioned_images
    from maskmine.transforms.image_io import read_image
    from maskmine.transforms.masked_crop import clip_batch, masked_crops
    from maskmine.transforms.pairing import encode_jpg, encode_png, mask_columns
    from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator

    torch.set_num_threads(threads)
    records = read_captioned_images(
        str(coco / "annotations" / "captions_train2017.json"), str(coco / "annotations" / "instances_train2017.json"),
        5, min(limit, 24),
    )
    start = time.perf_counter()
    images = [read_image(str(coco / "train2017" / r.file_name)) for r in records]
    decode_s = (time.perf_counter() - start) / len(records)
    from maskmine.transforms.nouns import extract_nouns

    extract_nouns(records[0].captions)  # warm-up: loads the tagger and WordNet
    start = time.perf_counter()
    for r in records:
        extract_nouns(r.captions)
    nouns_s = (time.perf_counter() - start) / len(records)
    proposals = build_proposal_generator(ProposalSpec(backend="coco-gt")).generate(images, records)
    clip = load_clip("ViT-L-14", "none", "cpu")  # random weights: the arithmetic of the real model
    config = clip.crop_config
    crops, n_props = [], 0
    start = time.perf_counter()
    for image, props in zip(images, proposals):
        made = masked_crops(image, props.masks, config) if len(props.masks) else []
        if made:
            clip_batch(made)
        crops += [(c, m) for c, m in zip(made, props.masks)]
        n_props += len(made)
    crop_s = (time.perf_counter() - start) / max(1, n_props)
    sample = crops[:100]
    start = time.perf_counter()
    for crop, mask in sample:
        encode_jpg(crop.pixels), encode_png(crop.mask), mask_columns(mask)
    encode_s = (time.perf_counter() - start) / max(1, len(sample))
    batch = clip_batch([c for c, _ in crops[:4]])
    with torch.inference_mode():
        clip.model.encode_image(batch[:1])  # warm-up
        start = time.perf_counter()
        clip.model.encode_image(batch)
        vit_s = (time.perf_counter() - start) / len(batch)
    return CpuCosts(
        decode_per_image=decode_s,
        nouns_per_image=nouns_s,
        crop_per_proposal=crop_s,
        encode_per_pair=encode_s,
        write_per_pair=reference.seconds_per_stage.get("write", 0.0) / max(1, reference.pairs),
        proposals_per_image_coco_gt=n_props / max(1, len(images)),
        pairs_per_image=reference.pairs / max(1, reference.images),
        vit_l14_forward_per_crop=vit_s,
    )


@dataclass
class Assumptions:
    """GPU throughputs NOT measured here (no GPU in this session); override them with flags."""

    gpu: str
    proposal_images_per_second: float  # Mask2Former Swin-L, per GPU
    clip_crops_per_second: float  # CLIP ViT-L/14 image tower at 224 px, per GPU
    proposals_per_image: float  # crops CLIP embeds per image (maskmine keeps top-k=100 at most)
    pairs_per_image: float  # the issue: ~1.3M pairs / 118K images
    cpu_cores_per_gpu: int
    efficiency: float  # fraction of ideal throughput reached end to end (stragglers, I/O, startup)


def estimate(costs: CpuCosts, a: Assumptions, gpu_counts: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict:
    """GPU-hours, CPU core-hours and wall hours of the full job for several GPU counts."""
    gpu_s = 1 / a.proposal_images_per_second + a.proposals_per_image / a.clip_crops_per_second
    cpu_s = (
        costs.decode_per_image + costs.nouns_per_image
        + a.proposals_per_image * costs.crop_per_proposal
        + a.pairs_per_image * (costs.encode_per_pair + costs.write_per_pair)
    )
    rows = []
    for g in gpu_counts:
        gpu_wall = FULL_IMAGES * gpu_s / g
        cpu_wall = FULL_IMAGES * cpu_s / (g * a.cpu_cores_per_gpu)
        wall = max(gpu_wall, cpu_wall) / a.efficiency
        rows.append({"gpus": g, "wall_hours": round(wall / 3600, 2),
                     "bound_by": "GPU" if gpu_wall >= cpu_wall else "CPU"})
    return {
        "gpu_seconds_per_image": round(gpu_s, 4),
        "cpu_seconds_per_image": round(cpu_s, 4),
        "gpu_hours": round(FULL_IMAGES * gpu_s / 3600, 1),
        "cpu_core_hours": round(FULL_IMAGES * cpu_s / 3600, 1),
        "cpu_cores_per_gpu_to_keep_it_busy": round(cpu_s / gpu_s, 1),
        "cpu_only_vit_l14_core_hours": round(FULL_IMAGES * a.proposals_per_image * costs.vit_l14_forward_per_crop / 3600),
        "by_gpu_count": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--coco", default=str(REPO.parent / "shared" / "data" / "coco-mini"), help="coco-mini folder")
    p.add_argument("--limit", type=int, default=80, help="images per run (default 80: all of coco-mini)")
    p.add_argument("--labels", default="nouns", choices=("nouns", "categories"))
    p.add_argument("--skip-dask", action="store_true")
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="OMP_NUM_THREADS of every worker process (default 1; 0 leaves the environment alone)")
    p.add_argument("--json", help="also write the figures as JSON here")
    a = p.add_argument_group("ASSUMED GPU throughputs (not measured here)")
    a.add_argument("--gpu", default="A100-40GB")
    a.add_argument("--proposal-rate", type=float, default=10.0,
                   help="Mask2Former Swin-L images/s per GPU (default 10: the Mask2Former paper reports ~4 FPS "
                   "on a V100 at batch 1 fp32; assumed ~2.5x on an A100 with bf16 and batches of 8)")
    a.add_argument("--clip-rate", type=float, default=800.0,
                   help="CLIP ViT-L/14 crops/s per GPU (default 800: ~81 GFLOPs per 224 px image, an A100 "
                   "at ~20%% of its 312 bf16 TFLOP/s)")
    a.add_argument("--proposals-per-image", type=float, default=100.0, help="crops embedded per image (default 100 = --top-k)")
    a.add_argument("--pairs-per-image", type=float, default=11.0, help="pairs written per image (default 11: 1.3M / 118K)")
    a.add_argument("--cpu-cores-per-gpu", type=int, default=12, help="CPU cores per GPU worker (default 12, e.g. a2-highgpu-1g)")
    a.add_argument("--efficiency", type=float, default=0.98,
                   help="end-to-end fraction of ideal throughput (default 0.98: the simulated device's busy fraction "
                        "over a 600-image shard, benchmarks.device_busy at 8dd270e; stragglers and start-up not included)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401 - its import sets its own log levels; quiet them after it

    for noisy in ("distributed", "apache_beam", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("NLTK_DATA", str(Path(args.coco).parent / "nltk_data"))
    # One BLAS/OpenMP thread per worker process (Direct subprocesses and Dask workers inherit it):
    # with more, N workers on N cores oversubscribe them and OpenMP spin-waits.
    if args.threads_per_worker:
        os.environ["OMP_NUM_THREADS"] = str(args.threads_per_worker)
    coco = Path(args.coco)
    work = Path(tempfile.mkdtemp(prefix="maskmine-bench-scale-"))
    results: list[RunResult] = []
    try:
        for workers in (1, 2):
            results.append(bench_direct(coco, work, args.limit, args.labels, workers))
            print(_line(results[-1]), flush=True)
        if not args.skip_dask:
            for workers in (1, 2):
                results.append(bench_dask(coco, work, args.limit, args.labels, workers))
                print(_line(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {}
    for runner in sorted({r.runner for r in results}):
        one, two = (next(r for r in results if r.runner == runner and r.workers == n) for n in (1, 2))
        ratios[runner] = round(two.images_per_second / one.images_per_second, 2)
        print(f"{runner}: 2 workers / 1 worker = {ratios[runner]:.2f}x images/s (on {os.cpu_count()} CPUs)")
    costs = measure_cpu_costs(coco, results[0], args.limit, threads=1)  # per-core costs
    print("measured CPU costs (this machine):")
    for k, v in asdict(costs).items():
        print(f"  {k:32s} {v * 1000:9.2f} ms" if "per_image_coco" not in k and "pairs_per" not in k else f"  {k:32s} {v:9.2f}")
    assumptions = Assumptions(
        gpu=args.gpu, proposal_images_per_second=args.proposal_rate, clip_crops_per_second=args.clip_rate,
        proposals_per_image=args.proposals_per_image, pairs_per_image=args.pairs_per_image,
        cpu_cores_per_gpu=args.cpu_cores_per_gpu, efficiency=args.efficiency,
    )
    est = estimate(costs, assumptions)
    print(f"ESTIMATE for {FULL_IMAGES} images, Mask2Former Swin-L + CLIP ViT-L/14 on {args.gpu} "
          f"(GPU rates are assumptions: {args.proposal_rate} img/s proposals, {args.clip_rate} crops/s CLIP, "
          f"{args.proposals_per_image:g} crops/img, {args.cpu_cores_per_gpu} cores/GPU, efficiency {args.efficiency}):")
    print(f"  GPU {est['gpu_seconds_per_image']} s/img -> {est['gpu_hours']} GPU-hours; "
          f"CPU {est['cpu_seconds_per_image']} s/img -> {est['cpu_core_hours']} core-hours "
          f"(>= {est['cpu_cores_per_gpu_to_keep_it_busy']} cores per GPU keep it busy)")
    print(f"  for contrast, ViT-L/14 on this CPU alone: {est['cpu_only_vit_l14_core_hours']} core-hours")
    for row in est["by_gpu_count"]:
        print(f"  {row['gpus']:3d} GPUs: ~{row['wall_hours']} h wall ({row['bound_by']}-bound)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "runs": [asdict(r) for r in results], "ratios": ratios, "cpu_costs": asdict(costs),
            "assumptions": asdict(assumptions), "estimate": est, "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        }, indent=1))
    return 0


def _line(r: RunResult) -> str:
    rss = ", ".join(f"{v:.0f}" for v in r.worker_peak_rss_mib) or "n/a"
    return (f"{r.runner} x{r.workers}: {r.images} images in {r.wall_seconds:.1f} s = {r.images_per_second:.2f} img/s; "
            f"worker peak RSS MiB: [{rss}]")


if __name__ == "__main__":
    sys.exit(main())
