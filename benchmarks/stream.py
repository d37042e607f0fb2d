"""Streaming benchmark: throughput and memory against job size, first shard, kill and resume.

    python -m benchmarks.stream --sample data/sample [--sizes 600,3000,20000] [--json PATH]

On the generated scene set (``maskmine sample``), with ``--proposals
coco-gt+distractors --clip-model sample`` on CPU, every run a fresh
``maskmine mine`` process on the DirectRunner with one worker process
(``--direct_running_mode multi_processing --direct_num_workers 1``), so the
worker's memory is measured apart from the driver's. It reports:

1. for each size: wall time, images/s, seconds per image, the resident-memory
   high-water mark of the worker process and of the driver (psutil, sampled
   every 0.2 s), and the time from the start of the process to the first
   committed shard (its manifest entry);
2. a run of the ``--kill-size`` job (default: the middle size) SIGKILLed, whole
   process group, at ``--kill-at`` (default 60 %) of that size's fresh wall
   time: the shards it kept, then the rerun's wall time against the fresh run.

Figures only, no assertions: timing is not a test. On a shared machine they
move with the load, which the script prints.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maskmine.transforms.run_folder import MANIFEST_GLOB, STATS_FILE, TAR_GLOB


@dataclass
class Run:
    images: int
    wall_seconds: float
    images_per_second: float
    ms_per_image: float
    worker_peak_rss_mib: float
    driver_peak_rss_mib: float
    first_shard_seconds: float | None
    shards: int
    pairs: int = 0
    load_average: list[float] = field(default_factory=list)


class Watch:
    """Samples the RSS of a process tree (driver = the root, workers = its Python descendants)
    and notes when the first manifest entry appears under ``out``."""

    def __init__(self, proc: subprocess.Popen, out: Path, interval: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(proc.pid)
        self.out = out
        self.start = time.perf_counter()
        self.driver = 0
        self.workers: dict[int, int] = {}
        self.first_shard: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, self.root.memory_info().rss)
                for child in self.root.children(recursive=True):
                    try:
                        self.workers[child.pid] = max(self.workers.get(child.pid, 0), child.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            if self.first_shard is None and any(self.out.glob(MANIFEST_GLOB)):
                self.first_shard = time.perf_counter() - self.start
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mine_command(sample: Path, out: Path, limit: int, images_per_shard: int, threads: int) -> list[str]:
    ann = sample / "annotations"
    return [
        sys.executable, "-m", "maskmine.pipelines.cli", "mine",
        "--captions", str(ann / "captions_train.json"), "--instances", str(ann / "instances_train.json"),
        "--images", str(sample / "images" / "train"), "--out", str(out),
        "--proposals", "coco-gt+distractors", "--clip-model", "sample", "--device", "cpu",
        "--limit", str(limit), "--images-per-shard", str(images_per_shard), "--torch-threads", str(threads),
        "--no-progress", "--runner", "DirectRunner", "--direct_running_mode", "multi_processing", "--direct_num_workers", "1",
    ]


def run_once(cmd: list[str], out: Path, kill_after: float | None = None) -> tuple[float, Watch, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    watch = Watch(proc, out)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    watch.stop()
    if kill_after is None and proc.returncode != 0:
        raise RuntimeError(f"maskmine mine failed:\n{stderr.decode()[-3000:]}")
    return wall, watch, proc.returncode


def shards_kept(out: Path) -> int:
    return len(list(out.glob(MANIFEST_GLOB)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", required=True, help="folder written by `maskmine sample` (train split used)")
    p.add_argument("--sizes", default="600,3000,20000", help="comma-separated image counts (default 600,3000,20000)")
    p.add_argument("--kill-size", type=int, help="size of the kill-and-resume run (default: the middle size)")
    p.add_argument("--kill-at", type=float, default=0.6, help="kill at this fraction of the fresh run's wall time")
    p.add_argument("--images-per-shard", type=int, default=200)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--work", help="scratch folder (default: a new temporary one, deleted at the end)")
    p.add_argument("--json", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    sample = Path(args.sample)
    sizes = [int(s) for s in args.sizes.split(",")]
    kill_size = args.kill_size or sizes[len(sizes) // 2]
    work = Path(args.work or tempfile.mkdtemp(prefix="maskmine-bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[int, Run] = {}
    try:
        for n in sizes:
            out = work / f"fresh-{n}"
            shutil.rmtree(out, ignore_errors=True)
            wall, watch, _ = run_once(mine_command(sample, out, n, args.images_per_shard, args.torch_threads), out)
            stats = json.loads((out / STATS_FILE).read_text())
            runs[n] = Run(
                images=stats["images_read"], wall_seconds=round(wall, 2),
                images_per_second=round(stats["images_read"] / wall, 2), ms_per_image=round(1000 * wall / stats["images_read"], 1),
                worker_peak_rss_mib=round(max(watch.workers.values(), default=0) / 2**20, 1),
                driver_peak_rss_mib=round(watch.driver / 2**20, 1),
                first_shard_seconds=None if watch.first_shard is None else round(watch.first_shard, 1),
                shards=stats["shards"], pairs=stats["pairs"], load_average=[round(x, 2) for x in os.getloadavg()],
            )
            print(json.dumps(asdict(runs[n])), flush=True)
            if n != kill_size:
                shutil.rmtree(out, ignore_errors=True)
        fresh = runs[kill_size]
        out = work / f"killed-{kill_size}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = mine_command(sample, out, kill_size, args.images_per_shard, args.torch_threads)
        kill_at = args.kill_at * fresh.wall_seconds
        _, _, code = run_once(cmd, out, kill_after=kill_at)
        kept = shards_kept(out)
        rerun, _, _ = run_once(cmd, out)
        same = all(
            (out / t.name).read_bytes() == t.read_bytes() for t in sorted((work / f"fresh-{kill_size}").glob(TAR_GLOB))
        )
        kill = {
            "images": kill_size, "killed_at_seconds": round(kill_at, 1), "returncode": code,
            "shards_kept": kept, "shards": fresh.shards, "kept_fraction": round(kept / fresh.shards, 3),
            "rerun_seconds": round(rerun, 2), "fresh_seconds": fresh.wall_seconds,
            "rerun_over_fresh": round(rerun / fresh.wall_seconds, 3), "tars_identical_to_fresh": same,
        }
        print(json.dumps(kill), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    small, large = runs[sizes[0]], runs[sizes[-1]]
    mid = runs[sizes[-2] if len(sizes) > 1 else sizes[0]]  # the next size below the largest
    ratios = {
        f"worker_rss_{sizes[-1]}_over_{sizes[0]}": round(large.worker_peak_rss_mib / small.worker_peak_rss_mib, 3),
        f"driver_rss_{sizes[-1]}_over_{sizes[0]}": round(large.driver_peak_rss_mib / small.driver_peak_rss_mib, 3),
        f"ms_per_image_{sizes[-1]}_over_{mid.images}": round(large.ms_per_image / mid.ms_per_image, 3),
        "kill_kept_fraction": kill["kept_fraction"],
        "rerun_over_fresh": kill["rerun_over_fresh"],
    }
    print("| images | wall | images/s | ms/image | worker peak RSS | driver peak RSS | first shard committed |")
    print("|---|---|---|---|---|---|---|")
    for r in runs.values():
        print(f"| {r.images} | {r.wall_seconds:.1f} s | {r.images_per_second:.2f} | {r.ms_per_image:.1f} | "
              f"{r.worker_peak_rss_mib:.0f} MiB | {r.driver_peak_rss_mib:.0f} MiB | {r.first_shard_seconds} s |")
    print(json.dumps(ratios))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": [asdict(r) for r in runs.values()], "kill": kill, "ratios": ratios,
                                               "cpus": os.cpu_count(), "images_per_shard": args.images_per_shard,
                                               "torch_threads": args.torch_threads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
