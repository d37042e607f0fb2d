"""A mining worker's peak memory and CPU seconds per image with the real architectures, random weights.

    python -m benchmarks.worker_footprint [--coco DIR] [--images 2] [--torch-threads 1] [--work DIR] [--json OUT]

What a ``--proposals maskformer`` worker needs before the first GPU run: the Mask2Former of
``facebook/mask2former-swin-large-coco-panoptic`` (Swin-L, 200 queries; built from config with random
weights by :func:`maskmine.transforms.proposals.maskformer.build_random_swin_large_mask2former` and
written as a ``save_pretrained`` folder, so the worker loads it through maskmine's own checkpoint path,
``--proposal-checkpoint FOLDER``) and CLIP ViT-L/14 from open_clip's config with random weights and
QuickGELU, as maskmine builds OpenAI's CLIPs (``--clip-model ViT-L-14 --clip-pretrained none
--clip-activation quick_gelu``). Nothing is downloaded.

Two child processes are measured with ``os.wait4`` (their own ``ru_maxrss`` and user + system CPU time):

1. ``load``: builds both models exactly as a mining worker does (``build_proposal_generator`` and
   ``ClipSpec.load``) and exits: the fixed cost of a worker;
2. ``mine``: ``maskmine mine --limit N`` on coco-mini (the first N images by id; Beam's DirectRunner
   in process, ``--device cpu --precision fp32 --torch-threads T``), the real mining path end to end.

CPU seconds per image = (mine CPU - load CPU) / N: an estimate (the mine run also starts Beam and
reads the annotations). Random weights give arbitrary masks: the number of proposals CLIP embeds per
image (the mining's filters, top-k 100) is counted by a third, untimed child and printed, because
CLIP's share of the cost scales with it.
These are CPU figures; on a GPU worker the models run on the device and the CPU keeps decode, crops
and encoding. Slow on a CPU (ViT-L/14 on 100 crops per image): a few images are enough.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COCO = Path(os.environ.get("MASKMINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "coco-mini"
CHECKPOINT_DIR = "mask2former-swin-large-random"
CLIP_FLAGS = ["--clip-model", "ViT-L-14", "--clip-pretrained", "none", "--clip-activation", "quick_gelu"]

LOAD_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
generator = build_proposal_generator(ProposalSpec(backend="maskformer", checkpoint=sys.argv[1], device="cpu",
                                                  precision="fp32"))
clip = ClipSpec(model="ViT-L-14", pretrained="none", device="cpu", activation="quick_gelu").load()
print(sum(p.numel() for p in generator.model.parameters()), sum(p.numel() for p in clip.model.parameters()),
      clip.activation)
"""

COUNT_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[5]))
from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms.image_io import read_record_image
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
records = read_captioned_images(sys.argv[2], sys.argv[3], limit=int(sys.argv[4]))
generator = build_proposal_generator(ProposalSpec(backend="maskformer", checkpoint=sys.argv[1], device="cpu",
                                                  precision="fp32", dedup_iou=float(sys.argv[7])))
for record in records:
    image = read_record_image(sys.argv[6], record)
    print(record.image_id, image.shape[0], image.shape[1], len(generator.generate([image], [record])[0]))
"""


def write_checkpoint(folder: Path, shortest_edge: int) -> None:
    """The random Swin-L Mask2Former as a save_pretrained folder (about 860 MB; the weights are written
    once and reused), with its image processor."""
    from maskmine.transforms.proposals.maskformer import build_random_swin_large_mask2former, swin_large_processor

    if not ((folder / "config.json").is_file() and (folder / "model.safetensors").is_file()):
        model, _ = build_random_swin_large_mask2former(shortest_edge=shortest_edge)
        model.save_pretrained(folder)
    swin_large_processor(shortest_edge).save_pretrained(folder)


def measured(command: list[str]) -> dict:
    """Run ``command`` as a child; its peak RSS (MiB), CPU seconds, wall seconds, status and output tail."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": command,
        "returncode": child.returncode,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,  # Linux: KiB
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "wall_seconds": time.perf_counter() - start,
        "output_tail": output[-2000:],
    }


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO, help=f"coco-mini folder (default {DEFAULT_COCO})")
    parser.add_argument("--images", type=int, default=2, help="images to mine (default 2: slow on a CPU)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of the worker (default 1)")
    parser.add_argument("--shortest-edge", type=int, default=384,
                        help="Mask2Former's input shortest edge (default 384; Mask2Former's COCO test size is 800)")
    parser.add_argument("--dedup-iou", type=float, default=0.9,
                        help="mining's --dedup-iou (default 0.9, mining's own); 1.0 keeps all but identical masks, so "
                             "a random model's near-duplicate queries still give CLIP up to top-k crops to embed")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the random checkpoint (reused when present) and the runs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if not (args.coco / "annotations" / "captions_train2017.json").is_file():
        parser.error(f"coco-mini not found at {args.coco}")
    work = args.work or Path(tempfile.mkdtemp(prefix="worker-footprint-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / f"{CHECKPOINT_DIR}-{args.shortest_edge}"
    load_before, measured_at = os.getloadavg(), commit()
    write_checkpoint(checkpoint, args.shortest_edge)
    threads = str(args.torch_threads)
    load = measured([sys.executable, "-c", LOAD_SCRIPT, str(checkpoint), threads])
    out = work / f"run-{args.images}-dedup{args.dedup_iou}"
    ann = args.coco / "annotations"
    mine = measured([
        sys.executable, "-m", "maskmine.pipelines.cli", "mine",
        "--captions", str(ann / "captions_train2017.json"), "--instances", str(ann / "instances_train2017.json"),
        "--images", str(args.coco / "train2017"), "--out", str(out), "--limit", str(args.images),
        "--proposals", "maskformer", "--proposal-checkpoint", str(checkpoint), *CLIP_FLAGS,
        "--dedup-iou", str(args.dedup_iou),
        "--device", "cpu", "--precision", "fp32", "--torch-threads", threads, "--no-progress",
    ])
    # not timed: how many proposals the random model leaves per image (the crops CLIP embeds)
    count = measured([sys.executable, "-c", COUNT_SCRIPT, str(checkpoint), str(ann / "captions_train2017.json"),
                      str(ann / "instances_train2017.json"), str(args.images), threads, str(args.coco / "train2017"),
                      str(args.dedup_iou)])
    per_image_proposals = [line.split() for line in count["output_tail"].strip().splitlines()[-args.images:]]
    stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").is_file() else {}
    per_image = (mine["cpu_seconds"] - load["cpu_seconds"]) / args.images if args.images else None
    result = {
        "commit": measured_at,
        "images": args.images,
        "torch_threads": args.torch_threads,
        "mask2former_shortest_edge": args.shortest_edge,
        "dedup_iou": args.dedup_iou,
        "load": {k: v for k, v in load.items() if k != "output_tail"} | {"stdout": load["output_tail"].strip()},
        "mine": {k: v for k, v in mine.items() if k != "output_tail"},
        "mine_output_tail": mine["output_tail"] if mine["returncode"] else "",
        "cpu_seconds_per_image": per_image,
        "worker_peak_rss_mib": max(load["peak_rss_mib"], mine["peak_rss_mib"]),
        "proposals_per_image": per_image_proposals,  # image id, height, width, proposals kept
        "stats": stats,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
    }
    print(f"commit {result['commit']}, {args.images} images, {args.torch_threads} torch thread(s), "
          f"Mask2Former shortest edge {args.shortest_edge}, load average {load_before[0]:.1f} -> "
          f"{result['load_average_after'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  load only: peak RSS {load['peak_rss_mib']:.0f} MiB, {load['cpu_seconds']:.1f} CPU s, "
          f"{load['wall_seconds']:.0f} s wall (params, Mask2Former / CLIP / activation: {load['output_tail'].strip()})")
    print(f"  mine {args.images}: peak RSS {mine['peak_rss_mib']:.0f} MiB, {mine['cpu_seconds']:.1f} CPU s, "
          f"{mine['wall_seconds']:.0f} s wall, exit {mine['returncode']}")
    if per_image is not None:
        print(f"  CPU seconds per image (mine - load) / {args.images}: {per_image:.1f}")
    print(f"  proposals kept per image (image id, height, width, count): {per_image_proposals}")
    if mine["returncode"]:
        print(mine["output_tail"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
