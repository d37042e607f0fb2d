"""Mining benchmark: three ratios, each measured in one run on this machine.

    python -m benchmarks.mining --coco DIR [--clip-model ViT-B-16]

1. the noun stage through Beam (in-process runner) vs a plain Python loop
   over the same captions: what Beam's overhead costs on a cheap stage;
2. CLIP crop embedding batched (one batch per image's proposals) vs one
   crop at a time: why the match stage batches;
3. shard writing (maskmine's deterministic tar + Parquet + manifest) in MB/s
   vs writing the same member bytes as a plain tar (no Parquet, manifest or atomic rename).
Prints one line per measurement and the ratios. Timing is not a test.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from maskmine.pipelines.runners import make_runner
from maskmine.transforms.clip_models import encode_crops, load_clip
from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms.masked_crop import clip_batch, masked_crop
from maskmine.transforms.nouns import extract_nouns
from maskmine.transforms.pairing import encode_jpg, encode_png, mask_columns
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.image_io import read_image
from maskmine.transforms.records import ImageResult, PairSample
from maskmine.transforms.shard_format import TarWriter, sample_members
from maskmine.transforms.shards import write_shard


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_nouns(records, repeat: int) -> tuple[float, float]:
    """Best of 3, alternating; a warm-up pass first so both see loaded models and warm WordNet caches."""
    captions = [r.captions for r in records] * repeat
    for c in captions:  # warm-up: tagger and WordNet loading, per-word caches
        extract_nouns(c)
    options = PipelineOptions([])

    def run_beam():
        with beam.Pipeline(runner=make_runner(options), options=options) as p:
            _ = p | beam.Create(captions) | beam.Map(extract_nouns) | beam.combiners.Count.Globally()

    plain, through_beam = float("inf"), float("inf")
    for _ in range(3):
        plain = min(plain, timed(lambda: [extract_nouns(c) for c in captions])[1])
        through_beam = min(through_beam, timed(run_beam)[1])
    return plain, through_beam


def bench_clip(records, images_dir: str, model: str, pretrained: str, n_images: int) -> tuple[int, float, float]:
    clip = load_clip(model, pretrained, "cpu")
    gen = build_proposal_generator(ProposalSpec(backend="coco-gt"))
    crops = []
    for record in records[:n_images]:
        image = read_image(Path(images_dir) / record.file_name)
        for mask in gen.generate([image], [record])[0].masks:
            crops.append(masked_crop(image, mask, clip.crop_config))
    batch = clip_batch(crops)
    torch.set_grad_enabled(False)
    encode_crops(clip, batch[:2])  # warm-up
    batched, single = float("inf"), float("inf")
    for _ in range(3):  # best of 3, alternating, so a busy neighbour on the machine hurts both alike
        batched = min(batched, timed(lambda: encode_crops(clip, batch, batch_size=64))[1])
        single = min(single, timed(lambda: [encode_crops(clip, batch[i : i + 1]) for i in range(batch.shape[0])])[1])
    return batch.shape[0], batched, single


def synthetic_results(n_pairs: int, size: int = 224) -> list[ImageResult]:
    rng = np.random.default_rng(0)
    results = []
    for i in range(0, n_pairs, 10):
        pairs = []
        for j in range(min(10, n_pairs - i)):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), bool)
            mask[20:200, 30:150] = True
            pairs.append(PairSample(
                key=f"{i}-noun{j}", image_id=i, file_name=f"{i}.jpg", noun=f"noun{j}", caption_ids=[1],
                captions=[f"a noun{j}"], proposal_index=j, box=[30, 20, 120, 180], **mask_columns(mask), score=0.3, probability=0.5,
                margin=0.1, proposal_backend="bench", proposal_checkpoint="", clip_model="bench",
                clip_pretrained="none", label_source="caption", crop_jpg=encode_jpg(pixels),
                crop_mask_png=encode_png(mask),
            ))
        results.append(ImageResult(image_id=i, file_name=f"{i}.jpg", shard=0, status="mined", pairs=pairs))
    return results


def bench_write(n_pairs: int) -> tuple[float, float, float]:
    results = synthetic_results(n_pairs)
    members = [m for r in results for p in r.pairs for m in sample_members(p)]
    total = sum(len(data) for _, data in members) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        _, ours = timed(lambda: write_shard(tmp, 0, results))

        def plain():
            with open(Path(tmp) / "plain.tar", "wb") as fh:
                tar = TarWriter(fh)
                tar.add_members(members)
                tar.close()

        _, baseline = timed(plain)
    return total, ours, baseline


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco", default=str(Path(__file__).resolve().parents[2] / "shared/data/coco-mini"),
                        help="COCO-format folder with annotations/ and train2017/ (default ../shared/data/coco-mini)")
    parser.add_argument("--clip-model", default="ViT-B-16")
    parser.add_argument("--clip-pretrained", default="none")
    parser.add_argument("--clip-images", type=int, default=8, help="images whose GT masks are embedded")
    parser.add_argument("--noun-repeat", type=int, default=5, help="repeat the captions to lengthen the noun run")
    parser.add_argument("--write-pairs", type=int, default=2000)
    args = parser.parse_args(argv)
    coco = Path(args.coco)
    records = read_captioned_images(
        coco / "annotations/captions_train2017.json", coco / "annotations/instances_train2017.json"
    )
    print(f"torch threads: {torch.get_num_threads()}")
    plain, through_beam = bench_nouns(records, args.noun_repeat)
    n = len(records) * args.noun_repeat
    print(f"nouns: plain loop {n / plain:.0f} img/s, Beam in-process {n / through_beam:.0f} img/s, "
          f"ratio beam/plain time {through_beam / plain:.2f}x")
    crops, batched, single = bench_clip(records, str(coco / "train2017"), args.clip_model, args.clip_pretrained, args.clip_images)
    print(f"clip ({args.clip_model}, {crops} crops): batched {crops / batched:.1f} crops/s, "
          f"one at a time {crops / single:.1f} crops/s, speed-up {single / batched:.2f}x")
    mb, ours, baseline = bench_write(args.write_pairs)
    print(f"shard writing ({args.write_pairs} pairs, {mb:.1f} MB): maskmine {mb / ours:.1f} MB/s "
          f"(tar + Parquet + manifest, atomic), plain tar {mb / baseline:.1f} MB/s, ratio {ours / baseline:.2f}x time")


if __name__ == "__main__":
    main()
