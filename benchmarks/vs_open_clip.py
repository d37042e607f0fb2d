"""Benchmark: ``maskmine train --mode full`` against open_clip's own trainer on the same shards.

    python -m benchmarks.vs_open_clip --shards 'RUN/pairs-{000000..000007}.tar' \\
        --model ViT-S-32 --batch-size 32 --threads 2 --workers 1

Both run one epoch over the same shards (a run folder of ``maskmine mine``: open_clip
sizes the epoch from its sizes.json), one after the other, as fresh processes with the
same architecture (random weights: ``--pretrained none``), batch size, fp32 precision,
input size (the model config's), torch threads (``OMP_NUM_THREADS`` and
``torch.set_num_threads``), DataLoader workers and CPU device; the text tower is locked
in both (maskmine always locks it; open_clip gets ``--lock-text --lock-text-freeze-layer-norm``). Each one's wall
time (process start to exit, model building and data loading included) and the
samples it trained on give samples/s; the ratio is maskmine's over open_clip's.
Differences that remain by design: maskmine encodes the vocabulary's texts once, open_clip
encodes each batch's captions (its ``txt`` members) every step; maskmine's loss is
``--loss clip-plain`` here (OVSeg's and open_clip's ClipLoss).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPEN_CLIP = (
    "import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
    "from maskmine.transforms.clip_models import register_configs; register_configs(); "
    "from open_clip_train.main import main; main(sys.argv[2:])"
)


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{cmd[:4]} failed with status {code}; see {log}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="brace pattern of a run folder's shards")
    p.add_argument("--model", default="ViT-S-32", help="open_clip model config, random weights (default ViT-S-32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch threads of each trainer (default 2)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of each trainer (default 1)")
    p.add_argument("--work", help="folder for both trainers' outputs (default: a temporary folder)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-vs-open-clip-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "CUDA_VISIBLE_DEVICES": ""}
    maskmine_cmd = [
        sys.executable, "-m", "maskmine.pipelines.cli", "train", "--shards", args.shards,
        "--out", str(work / "maskmine"), "--mode", "full", "--loss", "clip-plain",
        "--clip-model", args.model, "--clip-pretrained", "none", "--device", "cpu",
        "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", str(args.workers),
        "--warmup-steps", "1", "--lr", "1e-5", "--save-every", "1000000", "--no-progress",
    ]
    open_clip_cmd = [
        sys.executable, "-c", OPEN_CLIP, str(args.threads),
        "--train-data", args.shards, "--dataset-type", "webdataset", "--model", args.model,
        "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", str(args.workers),
        "--precision", "fp32", "--device", "cpu", "--lock-text", "--lock-text-freeze-layer-norm", "--lr", "1e-5", "--warmup", "1",
        "--logs", str(work), "--name", "open_clip", "--report-to", "", "--save-frequency", "0",
        "--log-every-n-steps", "1000000", "--seed", "0",
    ]
    ours_s = timed(maskmine_cmd, env, work / "maskmine.log")
    summary = json.loads(re.search(r"^\{.*^\}", (work / "maskmine.log").read_text(), re.S | re.M).group(0))
    ours_n = int(summary["samples"])
    theirs_s = timed(open_clip_cmd, env, work / "open_clip.log")
    done = re.findall(r"Train Epoch: 0 \[(\d+)/(\d+) \(100%\)\]", (work / "open_clip.log").read_text())
    theirs_n = int(done[-1][0]) if done else 0
    result = {
        "settings": {"shards": args.shards, "model": args.model, "pretrained": "none (random)",
                     "batch_size": args.batch_size, "precision": "fp32", "device": "cpu", "threads": args.threads,
                     "workers": args.workers, "epochs": 1, "text_tower": "locked", "cpu": platform.processor(),
                     "cores": os.cpu_count()},
        "maskmine": {"samples": ours_n, "seconds": round(ours_s, 1), "samples_per_s": round(ours_n / ours_s, 2)},
        "open_clip_train": {"samples": theirs_n, "seconds": round(theirs_s, 1),
                            "samples_per_s": round(theirs_n / theirs_s, 2)},
    }
    result["ratio"] = round(result["maskmine"]["samples_per_s"] / max(result["open_clip_train"]["samples_per_s"], 1e-9), 2)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
