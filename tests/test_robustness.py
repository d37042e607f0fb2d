"""Bad input never crashes a job (issue 16).

* every kind of malformed instance annotation is named (``check_segmentation``)
  and, in a mining run over the committed COCO images with one image of each kind, is a counted
  ``bad-annotation`` skip while the rest of its image is still mined; broken
  images and captions are counted too, and ``maskmine verify`` passes (also on Dask);
* the fuzz test: about fifty broken flags, files and run folders given to
  ``mine``, ``audit``, ``verify``, ``train``, ``eval`` and ``demo`` in process;
  each stops before any work with one line ``maskmine COMMAND: error: ...``
  naming the problem (asserted), exit status 2, no traceback;
* a damaged run is still audited, ``train`` stops on unreadable shards, eval's
  out-of-range labels are one line or counted as ignore, the spot-check CSV is
  safe to open in a spreadsheet.
"""
from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskmine.pipelines.cli import main
from maskmine.transforms.verify_run import verify_run
from maskmine.transforms.annotations import AnnotationProblem, check_segmentation, compressed_rle_counts
from maskmine.transforms.image_io import ImageSkip, decode_image, read_image

N_GOOD = 10  # committed COCO images (coco_cc_by) that each get one broken annotation (or none)
W, H = 40, 30  # size of the RLE checks' image

# kind -> (segmentation, problem); every way pycocotools crashed or decoded garbage in the issue
BROKEN_SEGMENTATIONS = {
    "polygon-with-1-point": ([[10, 10]], "degenerate-polygon"),
    "polygon-with-2-points": ([[10, 10, 30, 20]], "degenerate-polygon"),
    "polygon-with-odd-coordinates": ([[10, 10, 30, 20, 5]], "degenerate-polygon"),
    "polygon-with-text-coordinate": ([[10, "x", 30, 20, 5, 25]], "bad-polygon"),
    "polygon-with-nan-coordinate": ([[10, float("nan"), 30, 20, 5, 25]], "bad-polygon"),
    "empty-polygon-list": ([], "empty-segmentation"),
    "rle-bad-counts-string": ({"size": [H, W], "counts": "zzzz"}, "bad-rle"),
    "rle-counts-short-of-size": ({"size": [H, W], "counts": [10, 20]}, "bad-rle"),
    "rle-negative-count": ({"size": [H, W], "counts": [-3, H * W + 3]}, "bad-rle"),
    "rle-without-size": ({"counts": [H * W]}, "bad-rle"),
    "rle-size-differs-from-image": ({"size": [H + 1, W], "counts": [(H + 1) * W]}, "rle-size-mismatch"),
    "segmentation-is-a-number": (7, "bad-rle"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_SEGMENTATIONS))
def test_broken_segmentation_is_named(kind):
    seg, problem = BROKEN_SEGMENTATIONS[kind]
    with pytest.raises(AnnotationProblem) as info:
        check_segmentation(seg, H, W)
    assert info.value.problem == problem, info.value.detail


def test_valid_segmentations_pass_and_compressed_counts_decode_like_pycocotools():
    from pycocotools import mask as mask_utils

    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 3:17] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    check_segmentation({"size": [H, W], "counts": rle["counts"].decode()}, H, W)
    check_segmentation({"size": [H, W], "counts": [H * W - 5, 5]}, H, W)
    check_segmentation([[1, 1, 20, 1, 20, 20], [0, 0, 5.5, 0, 5, 5]], H, W)
    runs = compressed_rle_counts(rle["counts"])
    assert sum(runs) == H * W and runs[1] == 15  # the first run of ones is one column of the box


# --- a mining run over the committed COCO images with one broken thing per image ------------------------------------


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


EXTRA_IMAGES = {  # file name -> (what the entry says (w, h), the skip reason)
    "bomb.png": ((50000, 50000), "too-large"),
    "small.jpg": ((640, 480), "size-mismatch"),
    "noise.jpg": ((64, 64), "corrupt-image"),
}
LONG_NOUN = "zebrafinch" * 30  # 300 characters, one noun


def write_broken_inputs(coco_cc_by: Path, root: Path) -> dict:
    """The first N_GOOD committed COCO images, one broken annotation on each of the first nine, three broken
    images, captions that are not text or have no image; returns the paths and what to expect."""
    ann = coco_cc_by / "annotations"
    inst = json.loads((ann / "instances_train2017.json").read_text())
    caps = json.loads((ann / "captions_train2017.json").read_text())
    images = sorted(caps["images"], key=lambda i: i["id"])[:N_GOOD]
    ids = [i["id"] for i in images]
    size = {i["id"]: (i["height"], i["width"]) for i in images}
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    for info in images:
        (img_dir / info["file_name"]).symlink_to(coco_cc_by / "train2017" / info["file_name"])
    kinds = {
        "polygon-with-1-point": [[10, 10]],
        "polygon-with-2-points": [[10, 10, 50, 50]],
        "polygon-with-odd-coordinates": [[10, 10, 50, 50, 30]],
        "polygon-with-text-coordinate": [[10, "x", 50, 50, 30, 80]],
        "empty-polygon-list": [],
        "rle-bad-counts": "bad-counts",
        "rle-without-size": {"counts": "PPYo0"},
        "rle-size-differs-from-image": "size-differs",
        "unknown-category": [[10, 10, 50, 10, 50, 50]],
    }
    problems = {
        "polygon-with-1-point": "degenerate-polygon", "polygon-with-2-points": "degenerate-polygon",
        "polygon-with-odd-coordinates": "degenerate-polygon", "polygon-with-text-coordinate": "bad-polygon",
        "empty-polygon-list": "empty-segmentation", "rle-bad-counts": "bad-rle", "rle-without-size": "bad-rle",
        "rle-size-differs-from-image": "rle-size-mismatch", "unknown-category": "unknown-category",
    }
    keep = set(ids)
    inst["images"] = [i for i in inst["images"] if i["id"] in keep]
    inst["annotations"] = [a for a in inst["annotations"] if a["image_id"] in keep]
    expected_annotations = {}
    for n, (kind, seg) in enumerate(kinds.items()):
        image_id, (h, w) = ids[n], size[ids[n]]
        if seg == "bad-counts":
            seg = {"size": [h, w], "counts": "0" * 7}  # decodes to runs that do not cover h*w
        elif seg == "size-differs":
            seg = {"size": [h + 1, w], "counts": [(h + 1) * w]}
        ann_id = 9_000_000 + n
        inst["annotations"].append({
            "id": ann_id, "image_id": image_id, "iscrowd": 0, "bbox": [0, 0, 10, 10], "area": 1.0,
            "category_id": 99999 if kind == "unknown-category" else 1, "segmentation": seg,
        })
        expected_annotations[ann_id] = problems[kind]
    caps["images"] = [i for i in caps["images"] if i["id"] in keep]
    caps["annotations"] = [a for a in caps["annotations"] if a["image_id"] in keep]
    # captions (low ids: first of their image): a list, a number, one without an image entry, a 300-character noun
    caps["annotations"] += [
        {"id": 2, "image_id": ids[0], "caption": ["a", "dog"]},
        {"id": 3, "image_id": ids[1], "caption": 42},
        {"id": 8_000_003, "image_id": 123456789, "caption": "a cat on a mat"},
        {"id": 1, "image_id": ids[2], "caption": f"A {LONG_NOUN} sits on a branch."},
    ]
    # three broken images, each with a caption
    (img_dir / "bomb.png").write_bytes(_png_with_header_size(50000, 50000))
    Image.new("RGB", (100, 100), (120, 30, 200)).save(img_dir / "small.jpg")
    (img_dir / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    for n, (name, ((w, h), _)) in enumerate(EXTRA_IMAGES.items()):
        image_id = 7_000_000 + n
        caps["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        caps["annotations"].append({"id": 7_000_000 + n, "image_id": image_id, "caption": "A red car on a road."})
    (root / "captions.json").write_text(json.dumps(caps))
    (root / "instances.json").write_text(json.dumps(inst))
    return {
        "captions": root / "captions.json", "instances": root / "instances.json", "images": img_dir,
        "annotations": expected_annotations,
    }


def mine_args(inputs: dict, out: Path) -> list[str]:
    return [
        "mine", "--captions", str(inputs["captions"]), "--instances", str(inputs["instances"]),
        "--images", str(inputs["images"]), "--out", str(out), "--proposals", "coco-gt",
        "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu",
        "--num-shards", "2", "--batch-size", "4", "--no-progress",
    ]


@pytest.fixture(scope="module")
def broken_inputs(coco_cc_by, tmp_path_factory) -> dict:
    return write_broken_inputs(coco_cc_by, tmp_path_factory.mktemp("broken-inputs"))


@pytest.fixture(scope="module")
def broken_run(broken_inputs, nltk_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("broken-run") / "run"
    assert main(mine_args(broken_inputs, out)) == 0
    return out


def check_broken_run(run: Path, inputs: dict) -> None:
    stats = json.loads((run / "stats.json").read_text())
    assert stats["images_read"] == N_GOOD + len(EXTRA_IMAGES)
    assert stats["images_mined"] == N_GOOD  # every image with a bad annotation is still mined
    assert stats["images_skipped"] == {reason: 1 for _, reason in EXTRA_IMAGES.values()}
    assert stats["annotations_skipped"] == {"bad-annotation": len(inputs["annotations"]), "bad-caption": 2}
    assert stats["input_skipped"]["captions-without-image"] == 1
    lines = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    left_out = [r for r in lines if r["image_id"] is None]  # entries that never became an image (issue 25)
    assert [(r["reason"], r["caption_id"]) for r in left_out] == [("captions-without-image", 8_000_003)]
    rejects = [r for r in lines if r["image_id"] is not None]
    by_annotation = {r["annotation_id"]: r for r in rejects if "annotation_id" in r}
    assert {k: r["problem"] for k, r in by_annotation.items()} == inputs["annotations"]
    assert all(r["reason"] == "bad-annotation" and r["detail"] for r in by_annotation.values())
    captions = {r["caption_id"]: r for r in rejects if "caption_id" in r}
    assert set(captions) == {2, 3} and {r["reason"] for r in captions.values()} == {"bad-caption"}
    images = {r["file_name"]: r["reason"] for r in rejects if "annotation_id" not in r and "caption_id" not in r}
    assert images == {name: reason for name, (_, reason) in EXTRA_IMAGES.items()}
    report = verify_run(str(run), deep=True)
    assert report.ok, [str(p) for p in report.problems]


def test_mining_run_counts_every_broken_annotation_image_and_caption(broken_run, broken_inputs):
    check_broken_run(broken_run, broken_inputs)
    assert main(["verify", str(broken_run)]) == 0


def test_long_noun_gives_a_bounded_key(broken_run):
    import pyarrow.parquet as pq

    from maskmine.transforms.pairing import MAX_SLUG, noun_slug

    keys = pq.read_table(broken_run / "parquet").column("key").to_pylist()
    assert max(len(k) for k in keys) <= len("123456789012-") + MAX_SLUG + 3
    long_keys = [k for k in keys if LONG_NOUN[:40] in k]
    assert long_keys, "the 300-character noun was not mined"
    assert noun_slug(LONG_NOUN) != noun_slug(LONG_NOUN + "x") and len(noun_slug(LONG_NOUN)) == MAX_SLUG


@pytest.mark.slow  # keeps this file under a minute: the cluster run alone took 27 s here
def test_broken_annotation_run_on_dask(broken_inputs, nltk_data, tmp_path):
    """The same run on a 2-worker local Dask cluster (27 s here, cluster start included)."""
    distributed = pytest.importorskip("distributed")
    repo = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": "1"}
    if os.environ.get("NLTK_DATA"):
        env["NLTK_DATA"] = os.environ["NLTK_DATA"]
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None, env=env) as cluster:
        out = tmp_path / "dask"
        args = mine_args(broken_inputs, out) + ["--runner", "DaskRunner",
                                                "--dask_client_address", cluster.scheduler_address]
        assert main(args) == 0
    check_broken_run(out, broken_inputs)


# --- images ---------------------------------------------------------------------------------------


def test_decompression_bomb_header_is_too_large_without_decoding():
    with pytest.raises(ImageSkip) as info:
        decode_image(_png_with_header_size(50000, 50000))
    assert info.value.reason == "too-large"


def test_pixel_cap_is_judged_from_the_header():
    buf = io.BytesIO()
    Image.new("RGB", (1000, 600)).save(buf, format="PNG")
    with pytest.raises(ImageSkip) as info:
        decode_image(buf.getvalue(), max_megapixels=0.5)
    assert info.value.reason == "too-large"
    assert info.value.detail == "1000x600 = 0.6 MP, over the 0.5 MP limit (`max_megapixels`)"  # data: no flag
    assert decode_image(buf.getvalue(), max_megapixels=0.7).shape == (600, 1000, 3)


def test_an_exif_rotated_image_comes_in_the_frame_of_its_annotations(tmp_path):
    """Stored 100 wide x 40 high, tagged "rotate 90 degrees clockwise" (EXIF orientation 6)."""
    stored = np.zeros((40, 100, 3), np.uint8)
    stored[:, :10] = 255  # a white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="PNG", exif=exif.tobytes())
    data = buf.getvalue()
    upright = decode_image(data)  # no frame known (a demo upload): as a viewer shows it
    assert upright.shape == (100, 40, 3) and upright[:10].min() == 255  # the band is now on top
    assert np.array_equal(decode_image(data, frame=(40, 100)), stored)  # COCO: annotations on the stored pixels
    assert np.array_equal(decode_image(data, frame=(100, 40)), upright)  # annotated upright
    assert decode_image(data, frame=(50, 50)).shape == (40, 100, 3)  # neither: stored, for the size check
    (tmp_path / "r.png").write_bytes(data)
    from maskmine.transforms.image_io import read_record_image
    from maskmine.transforms.records import ImageRecord

    def record(width, height):
        return ImageRecord(image_id=1, file_name="r.png", width=width, height=height, captions=[])

    assert read_record_image(str(tmp_path), record(100, 40)).shape == (40, 100, 3)
    assert read_record_image(str(tmp_path), record(40, 100)).shape == (100, 40, 3)
    with pytest.raises(ImageSkip) as info:
        read_record_image(str(tmp_path), record(50, 50))
    assert info.value.reason == "size-mismatch"
    from maskmine.transforms.audit.report import ImageCache  # the audit outlines masks on the same frame

    assert ImageCache(tmp_path).get("r.png", (40, 100)).shape == (40, 100, 3)


def test_unreadable_image_is_permission_denied(tmp_path, monkeypatch):
    # the tests run as root, for whom chmod 000 changes nothing: the open itself is made to fail as it would
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (8, 8)).save(path)
    real_open = os.open

    def denied(name, *args, **kwargs):
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ImageSkip) as info:
        read_image(path)
    assert info.value.reason == "permission-denied" and "Permission denied" in info.value.detail


# --- the fuzz test: one line, status 2, before any work ----------------------------------------------


@pytest.fixture(scope="module")
def junk(tmp_path_factory, broken_inputs) -> dict:
    """Small broken files and folders the fuzz cases point at."""
    root = tmp_path_factory.mktemp("junk")
    j = {"root": root}
    (root / "a-file").write_text("not a folder")
    (root / "not-json.json").write_text("{ this is not json")
    (root / "not-coco.json").write_text(json.dumps({"images": "no"}))
    (root / "ann-not-object.json").write_text(json.dumps({"images": [], "annotations": [3]}))
    (root / "bad-categories.json").write_text(json.dumps({"images": [], "annotations": [], "categories": [5]}))
    for name, text in (("truncated-run", '{"identity": {"num_sh'), ("not-a-run", '["x"]')):
        (root / name).mkdir()
        (root / name / "run.json").write_text(text)
    (root / "empty-run").mkdir()
    (root / "bad-stats").mkdir()
    (root / "bad-stats" / "run.json").write_text(json.dumps({"identity": {"num_shards": 1}}))
    (root / "bad-stats" / "stats.json").write_text('{"images_read": 1')
    (root / "busy-out").mkdir()
    (root / "shards-no-run").mkdir()
    (root / "shards-no-run" / "pairs-000000.tar").write_bytes(b"")
    (root / "other-run").mkdir()
    (root / "other-run" / "run.json").write_text(json.dumps({"identity": {"labels": "categories"}}))
    (root / "busy-out" / "notes.txt").write_text("someone else's")
    (root / "bad-train").mkdir()
    (root / "bad-train" / "train.json").write_text('{"identity": ')
    return j


def _cases(j: dict, inputs: dict, run: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, a fragment the one error line must hold)."""
    r = j["root"]
    mine = mine_args(inputs, r / "out-new")

    def m(*extra: str, out: Path | str | None = None, **swap: str) -> list[str]:
        args = list(mine)
        if out is not None:
            args[args.index("--out") + 1] = str(out)
        for flag, value in swap.items():
            args[args.index(f"--{flag.replace('_', '-')}") + 1] = value
        return args + list(extra)

    shards = str(run / "pairs-*.tar")
    train = ["train", "--shards", shards, "--out", str(r / "train-out"), "--clip-model", "maskmine-tiny",
             "--clip-pretrained", "none", "--device", "cpu", "--workers", "0", "--steps", "2", "--no-progress"]
    ev = ["eval", "--dataset", "ade20k-150", "--root", str(r), "--proposals", "coco-gt", "--out", str(r / "eval-out"),
          "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu"]
    return {
        # mine: every numeric flag has its range
        "mine-images-per-shard-0": (m("--images-per-shard", "0"), "argument --images-per-shard: must be >= 1, got 0"),
        "mine-limit-0": (m("--limit", "0"), "argument --limit: must be >= 1, got 0"),
        "mine-limit-negative": (m("--limit", "-1"), "argument --limit: must be >= 1, got -1"),
        "mine-top-k-negative": (m("--top-k", "-5"), "argument --top-k: must be >= 1, got -5"),
        "mine-top-k-not-a-number": (m("--top-k", "many"), "argument --top-k: not an integer: 'many'"),
        "mine-dedup-iou-5": (m("--dedup-iou", "5"), "argument --dedup-iou: must be > 0 and <= 1, got 5"),
        "mine-min-score-nan": (m("--min-score", "nan"), "argument --min-score: must be a finite number"),
        "mine-crop-expand-negative": (m("--crop-expand", "-1"), "argument --crop-expand: must be >= 1 and <= 10"),
        "mine-crop-expand-0": (m("--crop-expand", "0"), "argument --crop-expand: must be >= 1 and <= 10"),
        "mine-max-megapixels-0": (m("--max-megapixels", "0"), "argument --max-megapixels: must be > 0"),
        "mine-batch-size-0": (m(batch_size="0"), "argument --batch-size: must be >= 1"),
        "mine-num-shards-0": (m(num_shards="0"), "argument --num-shards: must be >= 1"),
        "mine-captions-per-image-0": (m("--captions-per-image", "0"), "argument --captions-per-image: must be >= 1"),
        "mine-mask-threshold-2": (m("--mask-threshold", "2"), "argument --mask-threshold: must be >= 0 and < 1"),
        "mine-min-mask-area-1": (m("--min-mask-area", "1"), "argument --min-mask-area/--min-area-fraction: must be >= 0 and < 1"),
        # mine: output folder, run file, runner, input files
        "mine-out-is-a-file": (m(out=r / "a-file"), "is a file, not a folder"),
        "mine-out-under-a-file": (m(out=r / "a-file" / "run"), "is a file, not a folder"),
        "mine-out-not-writable": (m(out="/proc/maskmine-run"), "--out /proc/maskmine-run: cannot write in /proc"),
        "mine-truncated-run-json": (m(out=r / "truncated-run"), "run.json is damaged"),
        "mine-out-holds-shards-without-run-json": (
            m(out=r / "shards-no-run"), f"argument --out: {r / 'shards-no-run'} holds shards but no run.json, so "
                                        "nothing says how they were mined: use a new --out folder"),
        "mine-out-holds-another-run": (m(out=r / "other-run"), f"argument --out: {r / 'other-run'} holds a run with "
                                                              "other settings ("),
        "mine-run-json-not-a-run": (m(out=r / "not-a-run"), "is not a maskmine run file"),
        "mine-unknown-runner": (m("--runner", "FooRunner"), "unknown --runner 'FooRunner'"),
        "mine-captions-missing": (m(captions=str(r / "nope.json")), "captions file not found"),
        "mine-captions-not-json": (m(captions=str(r / "not-json.json")), "is not valid JSON"),
        "mine-captions-not-coco": (m(captions=str(r / "not-coco.json")), "is not in COCO format"),
        "mine-instances-annotation-not-object": (m(instances=str(r / "ann-not-object.json")),
                                                 "annotation #0 is a int, not an object"),
        "mine-instances-bad-categories": (m(instances=str(r / "bad-categories.json")),
                                          "'categories' must be a list of objects"),
        "mine-images-missing": (m(images=str(r / "no-images")), "images folder not found"),
        # verify
        "verify-missing-folder": (["verify", str(r / "nowhere")], "run folder not found"),
        "verify-not-a-run": (["verify", str(r / "empty-run")], "not a folder that `maskmine mine` wrote"),
        "verify-truncated-run-json": (["verify", str(r / "truncated-run")], "run.json in"),
        "verify-json-in-a-file": (["verify", str(run), "--json", str(r / "a-file" / "v.json")],
                                  "--json " + str(r / "a-file" / "v.json") + ": cannot write it: Not a directory"),
        "verify-unknown-flag": (["verify", str(run), "--nope"], "unrecognized arguments: --nope"),
        # audit
        "audit-missing-folder": (["audit", str(r / "nowhere"), "--no-progress"], "run folder not found"),
        "audit-not-a-run": (["audit", str(r / "empty-run"), "--no-progress"], "is not a maskmine run folder"),
        "audit-truncated-run-json": (["audit", str(r / "truncated-run"), "--no-progress"], "is not valid JSON"),
        "audit-truncated-stats": (["audit", str(r / "bad-stats"), "--no-progress"], "stats.json is not valid JSON"),
        "audit-per-noun-0": (["audit", str(run), "--per-noun", "0"], "argument --per-noun: must be >= 1"),
        "audit-confidence-1-5": (["audit", str(run), "--confidence", "1.5"], "argument --confidence: must be > 0 and < 1"),
        "audit-out-is-a-file": (["audit", str(run), "--out", str(r / "a-file"), "--no-progress"],
                                f"argument --out: {r / 'a-file'} exists and is not a folder"),
        "audit-query-without-filters": (["audit", str(run), "--out", str(r / "query-out"), "--query", "--no-progress"],
                                        "argument --query: needs at least one filter: --noun, --min-score, "
                                        "--max-margin or --image-id"),
        # train
        "train-lr-nan": (train + ["--lr", "nan"], "argument --lr: must be a finite number"),
        "train-lr-0": (train + ["--lr", "0"], "argument --lr: must be > 0"),
        "train-batch-size-0": (train + ["--batch-size", "0"], "argument --batch-size: must be >= 1"),
        "train-steps-0": (train + ["--steps", "0"], "argument --steps: must be >= 1"),
        "train-workers-negative": (train + ["--workers", "-1"], "argument --workers: must be >= 0"),
        "train-shards-missing": (["train", "--shards", str(r / "none-*.tar"), "--out", str(r / "t2"), "--steps", "1"],
                                 "none-*.tar"),
        "train-out-is-a-file": (train[:train.index("--out") + 1] + [str(r / "a-file")] + train[train.index("--out") + 2:],
                                "--out " + str(r / "a-file") + " is a file, not a folder"),
        "train-out-not-empty": (train[:train.index("--out") + 1] + [str(r / "busy-out")] + train[train.index("--out") + 2:],
                                f"argument --out: {r / 'busy-out'} is not empty and holds no training run: "
                                "use a new --out folder"),
        "train-val-shards-with-noun-labels": (train + ["--val-shards", shards],
                                              f"argument --val-shards: {shards!r}: "),
        "train-damaged-train-json": (train[:train.index("--out") + 1] + [str(r / "bad-train")]
                                     + train[train.index("--out") + 2:],
                                     f"argument --out: {r / 'bad-train' / 'train.json'} is damaged"),
        # eval
        "eval-granularity-5": (ev + ["--granularity", "5"], "argument --granularity: must be >= 0 and <= 1, got 5"),
        "eval-top-k-0": (ev + ["--top-k", "0"], "argument --top-k: must be >= 1"),
        "eval-limit-0": (ev + ["--limit", "0"], "argument --limit: must be >= 1"),
        "eval-ensemble-lambda-2": (ev + ["--ensemble-lambda", "2"], "argument --ensemble-lambda: must be >= 0 and <= 1"),
        "eval-no-dataset-under-root": (ev, "no prepared dataset found under"),
        "eval-out-is-a-file": (ev[:ev.index("--out") + 1] + [str(r / "a-file")] + ev[ev.index("--out") + 2:],
                               "is a file, not a folder"),
        # demo
        "demo-port-70000": (["demo", "--port", "70000"], "argument --port: must be >= 0 and <= 65535"),
        "demo-read-timeout-0": (["demo", "--read-timeout", "0"], "argument --read-timeout: must be > 0"),
        "demo-max-queue-negative": (["demo", "--max-queue", "-1"], "argument --max-queue: must be >= 0"),
    }


FUZZ_NAMES = sorted(_cases({"root": Path("/x")}, {"captions": "c", "instances": "i", "images": "m"}, Path("/r")))


@pytest.mark.parametrize("name", FUZZ_NAMES)
def test_fuzz_bad_input_is_one_line(name, junk, broken_inputs, broken_run, capsys):
    argv, fragment = _cases(junk, broken_inputs, broken_run)[name]
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    command = argv[0]
    lines = [line for line in captured.err.splitlines() if line.startswith(f"maskmine {command}: error: ")]
    assert rc == 2, captured.err[-2000:]
    assert len(lines) == 1, captured.err[-2000:]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    if command == "mine":
        assert not (junk["root"] / "out-new").exists()  # stopped before any work


# --- damaged runs, stuck training, labels, spreadsheets ------------------------------------------------


def _damage_first_crop(run: Path) -> str:
    """Overwrite the first sample's JPEG bytes inside its tar (the tar stays readable); returns its key."""
    tar_path = sorted(run.glob("pairs-*.tar"), key=lambda p: p.stat().st_size)[-1]
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    data = bytearray(tar_path.read_bytes())
    data[member.offset_data : member.offset_data + member.size] = b"\x00" * member.size
    os.chmod(tar_path, 0o644)
    tar_path.write_bytes(bytes(data))
    return member.name[: -len(".jpg")]


def test_audit_shows_a_damaged_sample_as_a_placeholder_and_counts_it(broken_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(broken_run, run)
    key = _damage_first_crop(run)
    out = tmp_path / "report"
    assert main(["audit", str(run), "--out", str(out), "--per-noun", "50", "--top-nouns", "200",
                 "--no-progress"]) == 0
    summary = json.loads((out / "report.json").read_text())
    assert [d["key"] for d in summary["damaged_samples"]] == [key]
    assert summary["checks"]["every sample shown decodes"] is False
    names = [p.name for p in (out / "img").iterdir()]
    assert max(len(n) for n in names) < 100  # the 300-character noun's key is bounded in file names too
    index = (out / "index.html").read_text()
    assert "shown but undecodable" in index and "bad-annotation (annotations/captions left out)" in index
    assert "Traceback" not in capsys.readouterr().err


def test_train_stops_with_one_line_when_no_shard_can_be_read(tmp_path, broken_run, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "pairs-000000.tar").write_bytes(np.random.default_rng(1).integers(0, 256, 20000, np.uint8).tobytes())
    base = ["train", "--shards", str(shards / "pairs-000000.tar"), "--vocabulary", str(broken_run / "vocabulary.json"),
            "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu", "--workers", "0",
            "--steps", "3", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 2
    assert "maskmine train: error: argument --shards: yielded no full batch in a whole epoch (1 tar_read_error)" \
        in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b"), "--resample"]) == 2  # an endless stream: bounded attempts
    err = capsys.readouterr().err
    assert "maskmine train: error: no sample could be read from the training shards in 200 attempts (200 tar_read_error)" in err


def test_eval_out_of_range_labels_are_one_line_or_ignored(tmp_path, capsys):
    from test_eval_run import ADE, write_ade

    root = write_ade(tmp_path / "data", count=2)
    label = root / ADE / "annotations_detectron2" / "validation" / "ADE_val_00000001.png"
    arr = np.asarray(Image.open(label)).copy()
    arr[10:12, 10:12] = 200  # not a class of ADE-150 (0..149) nor its ignore value 255
    Image.fromarray(arr).save(label)
    args = ["eval", "--dataset", "ade20k-150", "--root", str(root), "--proposals", "coco-gt",
            "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu", "--no-progress",
            "--visualise", "0"]
    assert main(args + ["--out", str(tmp_path / "e1")]) == 2
    err = capsys.readouterr().err
    assert f"maskmine eval: error: {label}: label values [200] are neither class ids 0..149" in err
    assert err.strip().endswith("(wrong --dataset? --unknown-labels ignore counts them as ignore)")  # the flags
    assert "Traceback" not in err
    assert main(args + ["--out", str(tmp_path / "e2"), "--unknown-labels", "ignore"]) == 0
    metrics = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert metrics["unknown_labels_ignored"] == {"pixels": 4, "files": 1}


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx"])
def test_spot_check_sheet_neutralises_formula_cells(tmp_path, cell):
    import csv

    from maskmine.transforms.audit.scoresheet import score_sheet, write_sheet

    path = tmp_path / "sheet.csv"
    write_sheet(path, [{"key": "1-x", "noun": cell, "image": cell, "score": 0.5}])
    row = list(csv.DictReader(path.open(newline="", encoding="utf-8")))[0]
    assert row["noun"] == "'" + cell and row["image"] == "'" + cell
    filled = path.read_text(encoding="utf-8").replace(",0.500000,", ",0.500000,correct")
    assert list(score_sheet(filled).by_noun) == [cell]  # read back as the noun it was


# --- the demo: a read timeout and one segmentation at a time -------------------------------------------


@pytest.fixture(scope="module")
def demo_server():
    import threading

    from test_demo import TINY as DEMO_TINY

    from maskmine.eval.demo import DemoApp, DemoConfig, make_server

    app = DemoApp(DemoConfig(**DEMO_TINY, max_upload_bytes=100_000, max_pixels=250_000, max_classes=5,
                             read_timeout=1.0, max_queue=1, queue_timeout=1.0))
    srv = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield app, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_demo_answers_408_when_the_announced_body_never_comes(demo_server):
    import socket
    import time

    _, port = demo_server
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 90000\r\n\r\n--b\r\n")  # 5 of 90000 bytes, then nothing
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert time.monotonic() - started < 8  # the 1 s read timeout, not the client's patience
    head, _, page = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 408") or head.startswith(b"HTTP/1.1 408"), head
    assert b"did not arrive within 1 s (5 of 90000 bytes)" in page


def test_demo_runs_one_segmentation_at_a_time_and_says_busy(demo_server):
    import threading

    from test_demo import error_of, noise_png, post

    app, port = demo_server
    url = f"http://127.0.0.1:{port}"
    replies = {}
    assert app._lock.acquire(timeout=5)  # a segmentation is running
    try:
        waiting = threading.Thread(target=lambda: replies.update(first=post(url, noise_png(32, 32), "cat")))
        waiting.start()
        for _ in range(100):  # until the first request waits in the queue
            if app._waiting:
                break
            threading.Event().wait(0.05)
        status, page = post(url, noise_png(32, 32), "cat")  # the queue (1) is full: refused at once
        assert status == 503 and "busy segmenting other images" in error_of(page)
        waiting.join(10)
        assert replies["first"][0] == 503  # it waited queue_timeout (1 s) and gave up
    finally:
        app._lock.release()
    status, page = post(url, noise_png(32, 32), "cat")
    assert status == 200 and not error_of(page)


# --- every command exits with its own status ------------------------------------------------------------


def test_run_folder_names_are_the_mining_jobs():
    from maskmine.pipelines import mine
    from maskmine.transforms import run_folder

    for name in ("RUN_FILE", "STATS_FILE", "REJECTS_FILE", "VOCABULARY_FILE"):
        assert getattr(run_folder, name) == getattr(mine, name)


def test_console_script_exits_with_the_commands_status(broken_run, tmp_path):
    """The console entry (console_main) ends with os._exit(status) after flushing: 0, 1 and 2 arrive intact."""
    import shutil
    import subprocess
    import sys

    code = "from maskmine.pipelines.cli import console_main; console_main()"
    damaged = tmp_path / "damaged"
    shutil.copytree(broken_run, damaged)
    (damaged / "vocabulary.json").write_text("[]")
    for args, status, needle in (
        ([str(broken_run)], 0, "OK: "),
        ([str(damaged)], 1, "FAILED: "),
        ([str(tmp_path / "nowhere")], 2, "maskmine verify: error: run folder not found"),
    ):
        done = subprocess.run([sys.executable, "-c", code, "verify", *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == status, done.stderr[-2000:]
        assert needle in done.stdout + done.stderr  # flushed before the process ended
        assert "terminate called" not in done.stderr


def test_verify_deep_flags_all_zero_crop_masks(coco_cc_by, nltk_data, tmp_path, monkeypatch):
    """What --crop-expand -1 used to produce (the CLI now refuses it): verify --deep says so."""
    import dataclasses

    from mining_helpers import TINY_CLIP, coco_mini_config

    from maskmine.pipelines.mine import run_mining
    from maskmine.transforms.masked_crop import CropConfig

    from maskmine.transforms import crop_config
    from maskmine.transforms.ranges import Range

    monkeypatch.setattr(crop_config, "CROP_EXPAND", Range(float))  # CropConfig before it checked its ranges
    clip = dataclasses.replace(TINY_CLIP, crop=CropConfig(expand_ratio=-1.0))
    run_mining(coco_mini_config(coco_cc_by, tmp_path / "run", clip=clip, limit=2), progress=False)
    report = verify_run(str(tmp_path / "run"), deep=True)
    kinds = {p.what for p in report.problems}
    assert kinds == {"empty-mask"}, [str(p) for p in report.problems][:5]


def test_per_class_csv_neutralises_a_formula_class_name():
    from maskmine.eval.metrics import ConfusionMatrix, per_class_csv

    cm = ConfusionMatrix(2, 255)
    cm.update(np.array([[0, 1]]), np.array([[0, 1]]))
    rows = per_class_csv(cm.compute(), ["=cmd|' /C calc'!A0", "dog"]).splitlines()
    assert rows[1].startswith("0,'=cmd|' /C calc'!A0,") and rows[2].startswith("1,dog,")


def test_demo_answers_413_at_once_when_an_oversized_body_never_comes(demo_server):
    import socket
    import time

    _, port = demo_server
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 2000000\r\n\r\n--b\r\n")  # 20x the 100 kB limit, announced, never sent
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert time.monotonic() - started < 8
    head, _, page = reply.partition(b"\r\n\r\n")
    assert b" 413 " in head.split(b"\r\n")[0] and b"Upload too large" in page


def test_an_audit_query_without_filters_names_the_settings_it_needs(broken_run, tmp_path):
    """The library names the Query's fields; ``maskmine audit --query`` names its flags (the fuzz case)."""
    from maskmine.transforms.audit.access import open_run
    from maskmine.transforms.audit.report import ReportOptions, build_report
    from maskmine.transforms.errors import SettingError

    with pytest.raises(SettingError) as refused:
        build_report(open_run(broken_run), ReportOptions(out=tmp_path / "q", query_only=True, progress=False))
    assert str(refused.value) == (
        "query only needs at least one filter: `nouns`, `min_score`, `max_margin` or `image_ids`")
