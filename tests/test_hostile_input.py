"""Hostile mining input is confined, decoded right, and counted (issue 25, the input side).

* confinement: a ``file_name`` that is absolute, climbs out of ``--images``,
  holds a NUL byte or is not text is a counted skip and never opened; only
  regular files are opened (a FIFO is ``not-a-file`` at once, never a hang);
  symlinks inside ``--images`` are followed to regular files;
* pixels: every mode Pillow opens is decoded into the picture the file holds,
  checked against a reference built with numpy (16-bit scaled, not clipped;
  alpha over white); modes without a defined white level are counted skips;
* identity: colliding image ids, ids outside int64, absurd coordinates,
  all-equal polygons and JSON nested 200,000 deep are counted rejects or one
  line, before pycocotools sees anything;
* the hostile run: a copy of committed COCO images with one of each bad entry is mined to the
  end, counts each with its own reason, its good images' shards are
  byte-identical to a clean run's, and ``verify --deep`` passes.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskmine.pipelines.cli import main
from maskmine.transforms.annotations import AnnotationProblem, check_segmentation
from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms import image_io
from maskmine.transforms.image_io import ImageSkip, decode_image, read_record_image
from maskmine.transforms.records import SKIP_REASONS, Caption, ImageRecord

DEEP = 200_000  # nesting depth of the pathological JSON


def _png(array: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array) if mode is None else Image.frombytes(mode, array.shape[::-1][-2:], array.tobytes())).save(
        buf, format=fmt, **save)
    return buf.getvalue()


def _record(file_name, width=0, height=0) -> ImageRecord:
    return ImageRecord(image_id=1, file_name=file_name, width=width, height=height, captions=[Caption(1, "a dog")])


def _skip_reason(images: Path, file_name, width=0, height=0) -> str:
    with pytest.raises(ImageSkip) as info:
        read_record_image(str(images), _record(file_name, width, height))
    return info.value.reason


# --- confinement ----------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """(images folder with one good image, a folder beside it with a picture that must never be read)."""
    images, outside = tmp_path / "images", tmp_path / "outside"
    images.mkdir()
    outside.mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(images / "good.png")
    Image.new("RGB", (8, 6), (200, 0, 0)).save(outside / "secret.png")
    return images, outside


def test_absolute_file_name_is_outside_images_and_never_opened(folders, monkeypatch):
    images, outside = folders
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    assert _skip_reason(images, str(outside / "secret.png")) == "outside-images"
    assert not [p for p in opened if "secret" in p]


@pytest.mark.parametrize("name", ["../outside/secret.png", "../../../../../../etc/passwd", "a/../../outside/secret.png",
                                  "..", "file:///etc/passwd", "gs://bucket/x.jpg"])
def test_climbing_file_name_is_outside_images(folders, name):
    assert _skip_reason(folders[0], name) == "outside-images"


def test_skip_details_say_the_images_folder_and_the_limit_not_flags(folders):
    """Skip details are data (rejects.jsonl): they say the value, a setting only by its name in backquotes."""
    images, outside = folders
    details = {}
    for name in (str(outside / "secret.png"), "../outside/secret.png"):
        with pytest.raises(ImageSkip) as info:
            read_record_image(str(images), _record(name))
        details[name] = info.value.detail
    assert details == {
        str(outside / "secret.png"): f"file_name {str(outside / 'secret.png')!r} is absolute, not a path inside the images folder",
        "../outside/secret.png": "file_name '../outside/secret.png' climbs out of the images folder with '..'",
    }
    size = (images / "good.png").stat().st_size
    with pytest.raises(ImageSkip) as info:  # 8 bytes per allowed pixel: 8 bytes for one pixel
        image_io.read_folder_image(images, "good.png", max_megapixels=1e-6)
    assert (info.value.reason, info.value.detail) == (
        "too-large", f"{images / 'good.png'} has {size} bytes, over the 8-byte limit that `max_megapixels` sets")


@pytest.mark.parametrize("name", ["good\x00.png", "", 42, ["good.png"], None, "\ud800.png"])
def test_unusable_file_name_is_bad_file_name(folders, name):
    assert _skip_reason(folders[0], name) == "bad-file-name"


def test_a_fifo_is_not_a_file_and_never_hangs(folders):
    images, _ = folders
    os.mkfifo(images / "pipe.jpg")
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_skip_reason(images, "pipe.jpg")), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert outcome == ["not-a-file"]


def test_a_folder_and_a_device_are_not_files(folders):
    images, _ = folders
    (images / "sub.jpg").mkdir()
    (images / "zero.jpg").symlink_to("/dev/zero")
    assert _skip_reason(images, "sub.jpg") == "not-a-file"
    assert _skip_reason(images, "zero.jpg") == "not-a-file"
    assert _skip_reason(images, ".") == "not-a-file"


def test_symlinks_inside_images_are_followed_to_regular_files(folders):
    """A folder of links into a dataset is a normal setup: links made inside --images are followed."""
    images, outside = folders
    (images / "linked.png").symlink_to(outside / "secret.png")
    (images / "dangling.png").symlink_to(outside / "gone.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    (images / "sub").mkdir()
    (images / "sub" / "x.png").symlink_to(images / "good.png")
    assert read_record_image(str(images), _record("linked.png"))[0, 0].tolist() == [200, 0, 0]
    assert read_record_image(str(images), _record("sub/x.png"))[0, 0].tolist() == [10, 20, 30]
    assert read_record_image(str(images), _record("./sub//x.png"))[0, 0].tolist() == [10, 20, 30]
    assert _skip_reason(images, "dangling.png") == "missing-image"
    assert _skip_reason(images, "loop.png") == "not-a-file"


# --- pixels ---------------------------------------------------------------------------------------

RNG = np.random.default_rng(25)
H, W = 6, 10


def _u8(*shape) -> np.ndarray:
    return RNG.integers(0, 256, (H, W, *shape), np.uint8)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[:, :, None] / 255
    return np.rint(rgb.astype(np.float64) * a + 255 * (1 - a)).astype(np.uint8)


def _case_1():
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    return _png(bits), _gray3(bits * 255)


def _case_l():
    g = _u8()
    return _png(g), _gray3(g)


def _case_la():
    la = _u8(2)
    return _png(la), _over_white(_gray3(la[..., 0]), la[..., 1])


def _case_p():
    idx, palette = RNG.integers(0, 4, (H, W), np.uint8), RNG.integers(0, 256, (4, 3), np.uint8)
    img = Image.fromarray(idx, "L").convert("P")
    img.putpalette(palette.flatten().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), palette[idx]


def _case_p_transparency():
    idx, palette = RNG.integers(0, 4, (H, W), np.uint8), RNG.integers(0, 256, (4, 3), np.uint8)
    img = Image.fromarray(idx, "L").convert("P")
    img.putpalette(palette.flatten().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=2)  # index 2 is fully transparent: white
    want = palette[idx]
    want[idx == 2] = 255
    return buf.getvalue(), want


def _case_rgb():
    rgb = _u8(3)
    return _png(rgb), rgb


def _case_rgba():
    rgba = _u8(4)
    return _png(rgba), _over_white(rgba[..., :3], rgba[..., 3])


def _case_rgba_tiff():
    rgba = _u8(4)
    return _png(rgba, fmt="TIFF"), _over_white(rgba[..., :3], rgba[..., 3])


def _case_cmyk():
    cmyk = _u8(4)
    c = cmyk.astype(np.float64)
    want = np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)
    return _png(cmyk, "CMYK", fmt="TIFF"), want


def _case_i16_png():
    v = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    v[0, :4] = [0, 257 * 7, 65535, 255]  # 8-bit data stored as 16 bits comes back exactly; 255 is black
    return _png(v), _gray3(v >> 8)


def _case_i16b_tiff():
    v = RNG.integers(0, 65536, (H, W)).astype(">u2")
    return _png(v, "I;16B", fmt="TIFF"), _gray3(v.astype(np.uint16) >> 8)


def _case_i16l_tiff():
    v = RNG.integers(0, 65536, (H, W)).astype("<u2")
    return _png(v, "I;16", fmt="TIFF"), _gray3(v >> 8)


def _case_pgm_16bit():
    v = RNG.integers(0, 1001, (H, W)).astype(">u2")  # maxval 1000: white is 1000
    data = f"P5 {W} {H} 1000\n".encode() + v.tobytes()
    return data, _gray3(np.round(v.astype(np.float64) * 65535 / 1000).astype(np.uint32) >> 8)


def _case_rgb_16bit_png():
    import struct
    import zlib

    v = RNG.integers(0, 65536, (H, W, 3)).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in v)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return data, (v.astype(np.uint16) >> 8).astype(np.uint8)


def _case_f_tiff():
    v = RNG.random((H, W)).astype(np.float32)
    v[0, :2] = [0.0, 1.0]
    return _png(v, "F", fmt="TIFF"), _gray3(np.rint(v.astype(np.float64) * 255))


def _case_lab_tiff():
    lab = np.zeros((H, W, 3), np.uint8)
    lab[..., 0] = np.array([0, 255, 128, 255, 0, 128, 64, 192, 32, 224])[None, :]  # L* 0..100 as 0..255
    lab[..., 1:] = 0  # a* = b* = 0 (raw LAB bytes hold a*, b* as signed bytes): neutral greys
    return _png(lab, "LAB", fmt="TIFF"), None


PIXEL_CASES = {
    "1": _case_1, "L": _case_l, "LA": _case_la, "P": _case_p, "P-transparency": _case_p_transparency,
    "RGB": _case_rgb, "RGBA": _case_rgba, "RGBA-tiff": _case_rgba_tiff, "CMYK": _case_cmyk,
    "I;16-png": _case_i16_png, "I;16B-tiff": _case_i16b_tiff, "I;16-tiff": _case_i16l_tiff, "I-pgm": _case_pgm_16bit,
    "RGB-16bit-png": _case_rgb_16bit_png, "F-tiff": _case_f_tiff,
}


@pytest.mark.parametrize("name", sorted(PIXEL_CASES))
def test_every_mode_decodes_to_the_picture_the_file_holds(name):
    data, want = PIXEL_CASES[name]()
    got = decode_image(data)
    assert got.dtype == np.uint8 and got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, want)


def test_sixteen_bit_gray_is_scaled_not_clipped():
    """The issue's bug: a 16-bit greyscale PNG decoded as all 255."""
    ramp = np.linspace(0, 65535, W * H).astype(np.uint16).reshape(H, W)
    got = decode_image(_png(ramp))[..., 0]
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) > 40


def test_lab_is_converted_to_srgb():
    data, _ = _case_lab_tiff()
    got = decode_image(data)
    row = got[0, :, 0].astype(int).tolist()
    spread = got.astype(int).max(axis=2) - got.astype(int).min(axis=2)
    assert spread.max() <= 2  # a* = b* = 0 is grey (each channel rounded on its own)
    assert row[0] <= 1 and row[1] >= 254 and abs(row[2] - 119) <= 2  # L* 50 is sRGB 119


def test_native_endian_16_bit_in_memory():
    v = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    img = Image.frombytes("I;16N", (W, H), v.astype("=u2").tobytes())
    np.testing.assert_array_equal(image_io.picture_rgb(img), _gray3(v >> 8))


def test_ycbcr_pa_and_hsv_in_memory_modes():
    ycc = Image.new("YCbCr", (W, H), (76, 85, 255))  # BT.601 red
    assert np.abs(image_io.picture_rgb(ycc).astype(int) - [255, 0, 0]).max() <= 2
    pa = Image.new("PA", (W, H), (1, 128))
    pa.putpalette([0, 0, 0, 100, 150, 200] + [0] * 762)
    want = _over_white(np.full((H, W, 3), [100, 150, 200], np.uint8), np.full((H, W), 128, np.uint8))
    np.testing.assert_array_equal(image_io.picture_rgb(pa), want)
    assert image_io.picture_rgb(Image.new("HSV", (W, H), (0, 255, 255)))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("case", ["int32-tiff", "float-0-255", "float-nan", "La"])
def test_modes_without_a_white_level_are_unsupported_mode(case):
    if case == "La":
        with pytest.raises(ImageSkip) as info:
            image_io.picture_rgb(Image.new("La", (W, H)))
    else:
        if case == "int32-tiff":
            data = _png(RNG.integers(0, 2**31, (H, W)).astype(np.int32), "I", fmt="TIFF")
        else:
            v = (RNG.random((H, W)) * 255).astype(np.float32)
            if case == "float-nan":
                v = v / 255
                v[0, 0] = np.nan
            data = _png(v, "F", fmt="TIFF")
        with pytest.raises(ImageSkip) as info:
            decode_image(data)
    assert info.value.reason == "unsupported-mode"


# --- identity, coordinates and JSON --------------------------------------------------------------


def _write_coco(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    body = {"images": images, "annotations": annotations}
    if categories is not None:
        body["categories"] = categories
    path.write_text(json.dumps(body))
    return path


def test_colliding_image_ids_are_refused_whole(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
              {"id": 1, "file_name": "b.jpg", "width": 10, "height": 10},
              {"id": 2, "file_name": "c.jpg", "width": 10, "height": 10},
              {"id": 2, "file_name": "c.jpg", "width": 10, "height": 10},  # the same entry twice: harmless
              {"id": 3, "file_name": "d.jpg", "width": 10, "height": 10},
              {"id": 3, "file_name": "d.jpg", "width": 20, "height": 10},
              {"id": 4, "file_name": "e.jpg", "width": 10, "height": 10}]
    caps = [{"id": 10 + i, "image_id": i, "caption": "a dog"} for i in (1, 2, 3, 4)]
    inst_images = [{"id": 4, "file_name": "other.jpg", "width": 10, "height": 10}]
    captions = _write_coco(tmp_path / "c.json", images, caps)
    instances = _write_coco(tmp_path / "i.json", inst_images, [], [{"id": 1, "name": "dog"}])
    records = {r.image_id: r for r in read_captioned_images(captions, instances)}
    assert {k: r.skip_reason for k, r in records.items()} == {
        1: "duplicate-image-id", 2: None, 3: "duplicate-image-id", 4: "duplicate-image-id"}
    assert "a.jpg" in records[1].skip_detail and "b.jpg" in records[1].skip_detail
    assert "other.jpg" in records[4].skip_detail
    assert records[2].file_name == "c.jpg" and records[2].captions


def test_ids_outside_int64_and_negative_are_counted_not_fatal(tmp_path):
    big = 2**63 + 5
    images = [{"id": big, "file_name": "a.jpg"}, {"id": -3, "file_name": "b.jpg"}, {"id": 7, "file_name": "c.jpg"}]
    caps = [{"id": 1, "image_id": big, "caption": "a dog"}, {"id": 2, "image_id": -3, "caption": "a dog"},
            {"id": 2**64, "image_id": 7, "caption": "a cat"}, {"id": 4, "image_id": 7, "caption": "a cow"}]
    report: dict = {}
    records = read_captioned_images(_write_coco(tmp_path / "c.json", images, caps), report=report)
    assert [r.image_id for r in records] == [7]
    assert report["image-entries-with-bad-id"] == 2
    assert [c.caption_id for c in records[0].captions] == [4]
    assert records[0].rejects[0]["caption_id"] == 2**64 and records[0].rejects[0]["reason"] == "bad-caption"


def test_a_file_name_that_is_not_text_is_bad_file_name(tmp_path):
    caps = _write_coco(tmp_path / "c.json", [{"id": 1, "file_name": 17}], [{"id": 1, "image_id": 1, "caption": "a dog"}])
    (record,) = read_captioned_images(caps)
    assert record.skip_reason == "bad-file-name"


ABSURD = {  # segmentation -> problem, on a 40x30 image
    "polygon-at-1e9": ([[10, 10, 1e9, 10, 10, 20]], "coordinates-out-of-range"),
    "polygon-at-1e30": ([[10, 10, 1e30, 1e30, 10, 20]], "coordinates-out-of-range"),
    "polygon-at-plus-minus-1e6": ([[-1e6, -1e6, 1e6, -1e6, 1e6, 1e6, -1e6, 1e6]], "coordinates-out-of-range"),
    "polygon-all-points-equal": ([[5, 5, 5, 5, 5, 5, 5, 5]], "degenerate-polygon"),
    "polygon-zigzag-outline": ([[0, 0, 200, 0] * 3000], "outline-too-long"),
}


@pytest.mark.parametrize("kind", sorted(ABSURD))
def test_absurd_polygons_are_named_before_pycocotools(kind):
    seg, problem = ABSURD[kind]
    with pytest.raises(AnnotationProblem) as info:
        check_segmentation(seg, 30, 40)
    assert info.value.problem == problem, info.value.detail


def test_outline_is_capped_even_when_the_size_is_unknown():
    with pytest.raises(AnnotationProblem) as info:
        check_segmentation([[10, 10, 1e30, 10, 10, 20]], None, None)
    assert info.value.problem == "outline-too-long"
    check_segmentation([[-100, -100, 199, -100, 199, 149]], 30, 40)  # within 4 image sizes: kept


def test_a_polygon_that_covers_no_pixel_is_a_counted_empty_mask():
    from maskmine.transforms.proposals.coco_gt import instance_masks
    from maskmine.transforms.records import Instance

    def inst(ann_id, seg):
        return Instance(annotation_id=ann_id, category_id=1, category="dog", segmentation=seg, bbox=(0, 0, 1, 1))

    record = _record("a.png", 40, 30)
    record.instances = [inst(1, [[50, 5, 70, 5, 70, 20]]),  # right of the 40-pixel-wide image, within the margin
                        inst(2, [[5, 5, 5.2, 5, 5.1, 5.2]]),  # thinner than a pixel
                        inst(3, [[5, 5, 20, 5, 20, 20]])]
    kept, masks = instance_masks(record, 30, 40)
    assert [i.annotation_id for i in kept] == [3] and masks[0].any()
    assert [(r["annotation_id"], r["problem"]) for r in record.rejects] == [(1, "empty-mask"), (2, "empty-mask")]


def test_absurd_bbox_is_out_of_range(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}]
    anns = [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 9]], "bbox": [0, 0, 1e12, 5]}]
    captions = _write_coco(tmp_path / "c.json", images, [{"id": 1, "image_id": 1, "caption": "a dog"}])
    instances = _write_coco(tmp_path / "i.json", images, anns, [{"id": 1, "name": "dog"}])
    (record,) = read_captioned_images(captions, instances)
    assert [r["problem"] for r in record.rejects] == ["coordinates-out-of-range"]


def _deep_json() -> str:
    return "[" * DEEP + "]" * DEEP


def test_deeply_nested_captions_file_is_one_line(tmp_path, capsys):
    (tmp_path / "caps.json").write_text(_deep_json())
    (tmp_path / "images").mkdir()
    status = main(["mine", "--captions", str(tmp_path / "caps.json"), "--images", str(tmp_path / "images"),
                   "--out", str(tmp_path / "out"), "--clip-model", "maskmine-tiny", "--clip-pretrained", "none",
                   "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "nested too deeply" in err[0], err


def test_new_reasons_are_skip_reasons():
    for reason in ("outside-images", "bad-file-name", "not-a-file", "unsupported-mode", "duplicate-image-id"):
        assert reason in SKIP_REASONS


# --- the hostile run ------------------------------------------------------------------------------

N_GOOD = 6
BAD_IMAGES = {  # file_name -> the skip reason of an image entry (ids 9_000_000 + n)
    "ABSOLUTE": "outside-images",
    "../outside/secret.jpg": "outside-images",
    "../../../../../../../../etc/passwd": "outside-images",
    "nul\x00.jpg": "bad-file-name",
    "pipe.jpg": "not-a-file",
    "folder.jpg": "not-a-file",
    "int32.tif": "unsupported-mode",
}


def _hostile_inputs(coco_cc_by: Path, root: Path, hostile: bool) -> dict:
    ann = coco_cc_by / "annotations"
    caps = json.loads((ann / "captions_train2017.json").read_text())
    inst = json.loads((ann / "instances_train2017.json").read_text())
    chosen = sorted(caps["images"], key=lambda i: i["id"])[:N_GOOD]
    keep = {i["id"] for i in chosen}
    images = root / "images"
    images.mkdir(parents=True)
    for info in chosen:
        (images / info["file_name"]).symlink_to(coco_cc_by / "train2017" / info["file_name"])
    caps["images"] = [i for i in caps["images"] if i["id"] in keep]
    caps["annotations"] = [a for a in caps["annotations"] if a["image_id"] in keep]
    inst["images"] = [i for i in inst["images"] if i["id"] in keep]
    inst["annotations"] = [a for a in inst["annotations"] if a["image_id"] in keep]
    expected_annotations: dict[int, str] = {}
    if hostile:
        outside = root / "outside"
        outside.mkdir()
        shutil.copy(coco_cc_by / "train2017" / chosen[0]["file_name"], outside / "secret.jpg")
        os.mkfifo(images / "pipe.jpg")
        (images / "folder.jpg").mkdir()
        Image.frombytes("I", (64, 48), np.full((48, 64), 7, np.int32).tobytes()).save(images / "int32.tif")
        for n, name in enumerate(BAD_IMAGES):
            file_name = str(outside / "secret.jpg") if name == "ABSOLUTE" else name
            w, h = (64, 48) if name == "int32.tif" else (chosen[0]["width"], chosen[0]["height"])
            caps["images"].append({"id": 9_000_000 + n, "file_name": file_name, "width": w, "height": h})
            caps["annotations"].append({"id": 9_000_000 + n, "image_id": 9_000_000 + n, "caption": "A dog on a red sofa."})
        # two entries for one id with other files; an id beyond int64
        caps["images"] += [{"id": 9_100_000, "file_name": chosen[1]["file_name"], "width": 9, "height": 9},
                           {"id": 9_100_000, "file_name": chosen[2]["file_name"], "width": 9, "height": 9},
                           {"id": 2**63 + 5, "file_name": chosen[3]["file_name"], "width": 9, "height": 9}]
        caps["annotations"] += [{"id": 9_200_000, "image_id": 9_100_000, "caption": "A cat on a mat."},
                                {"id": 9_200_001, "image_id": 2**63 + 5, "caption": "A cat on a mat."}]
        # absurd annotations on good images: left out, so the images' samples stay the same
        absurd = {"coordinates-out-of-range": [[10, 10, 1e9, 10, 10, 1e30]],
                  "degenerate-polygon": [[5, 5, 5, 5, 5, 5]],
                  "outline-too-long": [[0, 0, 1, 0] * 300_000]}
        for n, (problem, seg) in enumerate(absurd.items()):
            ann_id = 9_300_000 + n
            inst["annotations"].append({"id": ann_id, "image_id": chosen[n]["id"], "category_id": 1, "iscrowd": 0,
                                        "bbox": [0, 0, 10, 10], "area": 1.0, "segmentation": seg})
            expected_annotations[ann_id] = problem
    (root / "captions.json").write_text(json.dumps(caps))
    (root / "instances.json").write_text(json.dumps(inst))
    return {"root": root, "images": images, "annotations": expected_annotations}


def _mine(inputs: dict, out: Path) -> None:
    root = inputs["root"]
    cmd = [sys.executable, "-m", "maskmine.pipelines.cli", "mine", "--captions", str(root / "captions.json"),
           "--instances", str(root / "instances.json"), "--images", str(inputs["images"]), "--out", str(out),
           "--proposals", "coco-gt", "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu",
           "--no-progress", "--torch-threads", "1", "--num-shards", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.fixture(scope="module")
def hostile_runs(coco_cc_by, nltk_data, tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("hostile")
    clean_inputs = _hostile_inputs(coco_cc_by, base / "clean-in", hostile=False)
    hostile_inputs = _hostile_inputs(coco_cc_by, base / "hostile-in", hostile=True)
    _mine(clean_inputs, base / "clean")
    _mine(hostile_inputs, base / "hostile")
    return base / "clean", base / "hostile", hostile_inputs


def test_hostile_run_counts_every_bad_entry_and_keeps_good_shards_identical(hostile_runs):
    from maskmine.transforms.verify_run import verify_run

    clean, hostile, inputs = hostile_runs
    stats = json.loads((hostile / "stats.json").read_text())
    want: dict[str, int] = {}
    for reason in [*BAD_IMAGES.values(), "duplicate-image-id"]:
        want[reason] = want.get(reason, 0) + 1
    assert stats["images_skipped"] == want
    assert stats["images_mined"] == N_GOOD
    assert stats["input_skipped"]["image-entries-with-bad-id"] == 1
    lines = [json.loads(line) for line in (hostile / "rejects.jsonl").read_text().splitlines()]
    left_out = [r for r in lines if r["image_id"] is None]
    assert [r["reason"] for r in left_out] == ["image-entries-with-bad-id"] and str(2**63 + 5) in left_out[0]["detail"]
    rejects = [r for r in lines if r["image_id"] is not None]
    skips = {r["image_id"]: r["reason"] for r in rejects if "annotation_id" not in r and "caption_id" not in r}
    assert skips == {**{9_000_000 + n: reason for n, reason in enumerate(BAD_IMAGES.values())},
                     9_100_000: "duplicate-image-id"}
    problems = {r["annotation_id"]: r["problem"] for r in rejects if "annotation_id" in r}
    assert problems == inputs["annotations"]
    for name in ("pairs-000000.tar", "pairs-000001.tar"):
        assert (hostile / name).read_bytes() == (clean / name).read_bytes(), name
    report = verify_run(str(hostile), deep=True)
    assert report.ok, [str(p) for p in report.problems]


def test_deeply_nested_run_files_are_one_line_in_verify_and_audit(hostile_runs, tmp_path, capsys):
    from maskmine.transforms.verify_run import verify_run

    _, hostile, _ = hostile_runs
    for name in ("stats.json", "run.json", "manifest/pairs-000000.json"):
        run = tmp_path / name.replace(".", "-").replace("/", "-")
        shutil.copytree(hostile, run)
        (run / name).write_text(_deep_json())
        report = verify_run(str(run))
        assert not report.ok and any("nested too deeply" in p.detail for p in report.problems)
        capsys.readouterr()
        assert main(["verify", str(run)]) in (1, 2)  # 2: run.json unreadable, not a run at all
        said = capsys.readouterr()
        said = said.out + said.err  # problems on stdout (status 1), a refused folder on stderr (2)
        assert "Traceback" not in said and "nested too deeply" in said, said
        if name.startswith("manifest"):
            continue  # audit reads run.json, stats.json and the Parquet parts, not the manifests
        assert main(["audit", str(run), "--out", str(tmp_path / f"audit-{name}"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "nested too deeply" in err[0], err
