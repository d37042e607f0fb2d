"""Benchmark: can the shard loader feed the training step, and what do prompts cost?

    python -m benchmarks.train --shards 'RUN/pairs-{000000..000002}.tar' \\
        --clip-model maskmine-tiny --clip-pretrained none --batch-size 32 --workers 0 2

Measures, each alone on the same machine:
  * loader samples/s: one pass over the shards through ``PairStream`` + DataLoader
    (decode jpg/png, the noun from json, batch, normalise) for each ``--workers`` count;
  * training samples/s and step time for ``--modes`` (default prompt and full):
    forward + backward + AdamW step on batches held in memory (``--steps``
    timed after ``--warmup`` untimed ones), bf16 autocast on CUDA;
and prints the ratios: loader rate / training rate (above 1: the loader keeps
up) and full-mode / prompt-mode step time. On a CPU-only machine the loader
and the step share the cores when training, so the ratio is an upper bound.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from maskmine.finetune.data import PairStream, expand_shards, make_loader
from maskmine.finetune.model import MODES, MaskPromptCLIP
from maskmine.finetune.train import CLIP_LOSS_TEMPLATE, batch_loss
from maskmine.finetune.vocab import resolve_vocabulary
from maskmine.transforms.clip_models import encode_texts, load_clip
from maskmine.transforms.devices import resolve_device


def loader_rate(stream: PairStream, workers: int, max_batches: int | None) -> dict:
    start = time.perf_counter()
    samples = batches = 0
    for batch in make_loader(stream, workers):
        samples += len(batch)
        batches += 1
        if max_batches is not None and batches >= max_batches:
            break
    seconds = time.perf_counter() - start
    return {"workers": workers, "samples": samples, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 1)}


def step_rate(mode: str, args: argparse.Namespace, batches: list, vocabulary: list[str], device: torch.device) -> dict:
    clip = load_clip(args.clip_model, args.clip_pretrained, device=device)
    torch.manual_seed(0)
    model = MaskPromptCLIP(clip.model, mode=mode, prompt_depth=None if mode == "full" else args.prompt_depth)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    text = encode_texts(clip, vocabulary, CLIP_LOSS_TEMPLATE).clone().to(device)
    times = []
    for i in range(args.warmup + args.steps):
        batch = batches[i % len(batches)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = batch_loss("clip", model, batch, text, device)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    return {"mode": mode, "step_seconds": round(step_s, 4), "samples_per_s": round(args.batch_size / step_s, 1),
            "trainable_parameters": trainable}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="mined shards (brace pattern)")
    p.add_argument("--vocabulary", help="vocabulary file or run folder (default: the shards' nouns)")
    p.add_argument("--clip-model", default="ViT-B-16")
    p.add_argument("--clip-pretrained", default="none", help="weights do not change the timing (default none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts to time")
    p.add_argument("--max-batches", type=int, help="stop each loader pass after N batches (default: one epoch)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=["prompt", "full"])
    p.add_argument("--prompt-depth", type=int)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    urls = expand_shards(args.shards)
    vocabulary = resolve_vocabulary(args.vocabulary, urls)
    crop = load_clip(args.clip_model, args.clip_pretrained).crop_config
    stream = PairStream(urls, vocabulary, crop, args.batch_size, shuffle_buffer=1000, seed=0)

    loaders = [loader_rate(stream, w, args.max_batches) for w in args.workers]
    batches = [b for b in make_loader(stream, 0) if len(b) == args.batch_size][: args.warmup + args.steps]
    if not batches:
        raise SystemExit("the shards hold fewer samples than one batch")
    steps = [step_rate(m, args, batches, vocabulary, device) for m in args.modes]

    best_loader = max(loaders, key=lambda r: r["samples_per_s"])
    result = {
        "machine": {
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "clip_model": args.clip_model,
        "batch_size": args.batch_size,
        "loader": loaders,
        "train": steps,
        "ratios": {
            f"loader_over_{s['mode']}_step": round(best_loader["samples_per_s"] / s["samples_per_s"], 2) for s in steps
        },
    }
    by_mode = {s["mode"]: s for s in steps}
    if "prompt" in by_mode and "full" in by_mode:
        result["ratios"]["full_over_prompt_step_time"] = round(
            by_mode["full"]["step_seconds"] / by_mode["prompt"]["step_seconds"], 2
        )
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
