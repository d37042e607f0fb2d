"""Dataset readers on tiny prepared layouts written by the tests themselves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskmine.eval.datasets import (
    DATASET_NAMES,
    builtin_class_names,
    get_dataset,
    load_label,
    read_class_names,
)
from maskmine.eval.metrics import ConfusionMatrix
from maskmine.transforms.errors import UserError


def _write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((3, 4, 3), 128, dtype=np.uint8)).save(path)


def _write_label(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        img = Image.fromarray(arr.astype(np.uint16))  # 16-bit grey, PIL mode I;16
        assert img.mode == "I;16"
        img.save(path)
    else:
        Image.fromarray(arr.astype(np.uint8)).save(path)


def _make(root: Path, top: str, images: str, labels: str, ext: str, arrays: dict[str, np.ndarray],
          extra_images: tuple[str, ...] = ()) -> None:
    for stem, arr in arrays.items():
        _write_image(root / top / images / f"{stem}.jpg")
        _write_label(root / top / labels / f"{stem}{ext}", arr)
    for stem in extra_images:
        _write_image(root / top / images / f"{stem}.jpg")


LABEL8 = np.array([[0, 1, 2, 255], [149, 149, 0, 0], [255, 3, 3, 3]])
LABEL16 = np.array([[0, 300, 846, 65535], [458, 458, 0, 0], [65535, 3, 3, 3]])


def test_ade150(tmp_path):
    _make(tmp_path, "ADEChallengeData2016", "images/validation",
          "annotations_detectron2/validation", ".png",
          {"ADE_val_00000002": LABEL8, "ADE_val_00000001": LABEL8})
    ds = get_dataset("ade150", tmp_path)
    assert ds.name == "ade150" and ds.num_classes == 150 and ds.ignore_label == 255
    assert [img.name for img, _ in ds.items] == ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    assert ds.class_names[:3] == ["wall", "building", "sky"] and ds.class_names[-1] == "flag"
    assert ds.class_names[8] == "window"  # detectron2's "window " with its trailing space stripped
    label = ds.load_label(ds.items[0][1])
    assert label.dtype == np.int32 and np.array_equal(label, LABEL8)
    # pointing at the dataset folder itself works too
    assert len(get_dataset("ADE20K-150", tmp_path / "ADEChallengeData2016")) == 2


def test_ade847_sixteen_bit_tiff_and_classes_file(tmp_path):
    _make(tmp_path, "ADE20K_2021_17_01", "images_detectron2/validation",
          "annotations_detectron2/validation", ".tif", {"ADE_frame_1": LABEL16})
    ds = get_dataset("ade847", tmp_path)  # OVSeg's 847 names are shipped
    assert ds.num_classes == 847 and ds.class_names[0] == "wall" and ds.class_names[1] == "building, edifice"
    assert "ade847_classes.txt" in ds.names_source
    (tmp_path / "ADE20K_2021_17_01" / "classes.txt").write_text("\n".join(f"x{i}" for i in range(846)) + "\n")
    with pytest.raises(UserError, match="846 class names"):
        get_dataset("ade847", tmp_path)
    names = [f"thing{i}" for i in range(847)]
    (tmp_path / "ADE20K_2021_17_01" / "classes.txt").write_text("\n".join(names) + "\n\n")
    ds = get_dataset("ade847", tmp_path)  # a user's classes.txt wins over the built-in list
    assert ds.class_names == names and ds.ignore_label == 65535
    label = ds.load_label(ds.items[0][1])
    assert label.dtype == np.int32 and np.array_equal(label, LABEL16)
    # a perfect prediction scores 100 with the dataset's ignore label
    cm = ConfusionMatrix(ds.num_classes, ds.ignore_label)
    cm.update(np.where(label == 65535, 0, label), label)
    assert cm.compute().miou == 100.0


def test_pc59_both_layouts(tmp_path):
    arr = np.array([[0, 58], [255, 10]])
    _make(tmp_path / "a", "pascal_ctx_d2", "images/validation", "annotations_ctx59/validation",
          ".png", {"2008_000002": arr})
    ds = get_dataset("pc59", tmp_path / "a")  # FC-CLIP/ODISE's order: sorted by PASCAL Context id
    assert ds.num_classes == 59 and ds.class_names[:3] == ["aeroplane", "bag", "bed"]
    assert ds.class_names[-1] == "wood"
    assert np.array_equal(ds.load_label(ds.items[0][1]), arr)
    # OVSeg's own path: all of VOC2010's JPEGImages, labels only for the val split; CAT-Seg writes the
    # same path in another order, and without pc459_val beside it nothing tells which
    _make(tmp_path / "b", "VOCdevkit/VOC2010", "JPEGImages", "annotations_detectron2/pc59_val",
          ".png", {"2008_000002": arr}, extra_images=("2008_000001", "2008_000003"))
    with pytest.raises(UserError, match="`class_order` ovseg\\|catseg"):
        get_dataset("pascal-context-59", tmp_path / "b")
    ds = get_dataset("pascal-context-59", tmp_path / "b", class_order="ovseg")
    assert [p.stem for p, _ in ds.items] == ["2008_000002"]
    assert ds.class_names[:3] == ["aeroplane", "bicycle", "bird"]
    assert get_dataset("pc59", tmp_path / "b", class_order="catseg").class_names[:2] == ["aeroplane", "bag"]
    with pytest.raises(UserError, match="does not write"):
        get_dataset("pc59", tmp_path / "b", class_order="d2")


def test_pc459_tiff_and_numbered_classes_txt(tmp_path):
    arr = np.array([[0, 458], [65535, 200]])
    _make(tmp_path, "VOCdevkit/VOC2010", "JPEGImages", "annotations_detectron2/pc459_val", ".tif",
          {"2008_000008": arr})
    ds = get_dataset("pc459", tmp_path)  # OVSeg's 459 names are shipped
    assert ds.num_classes == 459 and ds.class_names[:2] == ["accordion", "aeroplane"]
    assert ds.class_names[458] == "wool" and ds.ignore_label == 65535
    assert np.array_equal(ds.load_label(ds.items[0][1]), arr)
    base = tmp_path / "VOCdevkit" / "VOC2010"
    (base / "classes.txt").write_text("".join(f"{i}: name{i}\n" for i in range(1, 460)))
    ds = get_dataset("pc459", tmp_path)
    assert ds.class_names[0] == "name1" and ds.class_names[458] == "name459"
    # the pascal_ctx_d2 layout, names from classes.txt
    _make(tmp_path / "d2", "pascal_ctx_d2", "images/validation", "annotations_ctx459/validation",
          ".tif", {"2008_000008": arr})
    (tmp_path / "d2" / "pascal_ctx_d2" / "classes.txt").write_text(
        "\n".join(f"c{i}" for i in range(459)))
    assert get_dataset("pc459", tmp_path / "d2").class_names[-1] == "c458"


def test_voc20_both_layouts(tmp_path):
    arr = np.array([[255, 0], [19, 255]])  # background already 255 after preparation
    _make(tmp_path / "a", "pascal_voc_d2", "images/validation", "annotations_pascal20/validation",
          ".png", {"2007_000033": arr})
    ds = get_dataset("voc20", tmp_path / "a")
    assert ds.num_classes == 20 and ds.class_names[10] == "diningtable"
    _make(tmp_path / "b", "VOCdevkit/VOC2012", "JPEGImages", "annotations_detectron2/val", ".png",
          {"2007_000033": arr, "2007_000042": arr}, extra_images=("2007_000027",))
    # a label whose image is gone is reported, not fatal
    (tmp_path / "b" / "VOCdevkit/VOC2012/JPEGImages/2007_000042.jpg").unlink()
    ds = get_dataset("voc20", tmp_path / "b")
    assert [p.stem for p, _ in ds.items] == ["2007_000033"]
    assert [p.stem for p in ds.unpaired_labels] == ["2007_000042"]


def test_sample_set(tmp_path):
    _make(tmp_path, "semseg", "images/validation", "annotations/validation", ".png",
          {"000000000139": np.array([[0, 1], [2, 255]])})
    with pytest.raises(UserError, match="classes.txt"):
        get_dataset("sample", tmp_path)
    (tmp_path / "semseg" / "classes.txt").write_text("person\nchair\ndining table\n")
    ds = get_dataset("sample", tmp_path)
    assert ds.class_names == ["person", "chair", "dining table"] and ds.ignore_label == 255
    assert ds.items[0][0].name == "000000000139.jpg"


def test_missing_layout_errors_name_the_expected_paths(tmp_path):
    for name in DATASET_NAMES:
        with pytest.raises(UserError) as exc:
            get_dataset(name, tmp_path)
        assert "expected ROOT/" in str(exc.value)
    with pytest.raises(UserError, match="annotations_detectron2/validation"):
        get_dataset("ade150", tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        get_dataset("ade150", tmp_path / "nope")
    with pytest.raises(UserError, match="unknown dataset"):
        get_dataset("cityscapes", tmp_path)
    # folders present but empty
    (tmp_path / "ADEChallengeData2016/images/validation").mkdir(parents=True)
    (tmp_path / "ADEChallengeData2016/annotations_detectron2/validation").mkdir(parents=True)
    with pytest.raises(UserError, match="no \\*.png label files"):
        get_dataset("ade150", tmp_path)
    # labels without any image of the same name
    _write_label(tmp_path / "ADEChallengeData2016/annotations_detectron2/validation/x.png", LABEL8)
    with pytest.raises(UserError, match="has an image"):
        get_dataset("ade150", tmp_path)


def test_label_reader_errors(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(rgb)
    with pytest.raises(UserError, match="single-channel"):
        load_label(rgb)
    with pytest.raises(UserError, match="not found"):
        load_label(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read"):
        load_label(bad)


def test_builtin_class_lists():
    assert len(builtin_class_names("ade150")) == 150
    assert len(set(builtin_class_names("ade150"))) == 150
    assert len(builtin_class_names("pc59")) == 59
    assert builtin_class_names("voc20")[-1] == "tvmonitor"
    assert len(set(builtin_class_names("ade847"))) == 847
    assert len(set(builtin_class_names("pc459"))) == 459
    assert builtin_class_names("pc59", "catseg") == builtin_class_names("pc59", "d2")
    assert sorted(builtin_class_names("pc59", "d2")) == sorted(builtin_class_names("pc59", "ovseg"))
    with pytest.raises(UserError, match="not shipped"):
        builtin_class_names("sample")


def test_read_class_names_formats(tmp_path):
    p = tmp_path / "names.txt"
    p.write_text("1: accordion\n2: aeroplane\n")
    assert read_class_names(p) == ["accordion", "aeroplane"]
    p.write_text("1: a\n3: c\n")
    with pytest.raises(UserError, match="without gaps"):
        read_class_names(p)
    p.write_text("a\n\nb\n")
    with pytest.raises(UserError, match="blank line 2"):
        read_class_names(p)


def test_duplicate_class_names_are_refused_naming_the_name(tmp_path):
    _make(tmp_path, "semseg", "images/validation", "annotations/validation", ".png",
          {"000000000139": np.array([[0, 1], [2, 255]])})
    (tmp_path / "semseg" / "classes.txt").write_text("person\nchair\nperson\n")
    with pytest.raises(UserError, match="class name 'person' on lines 1 and 3") as exc:
        get_dataset("sample", tmp_path)
    assert "\n" not in str(exc.value)
    (tmp_path / "semseg" / "classes.txt").write_bytes(b"person\n\xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        get_dataset("sample", tmp_path)


def test_entries_are_regular_files_and_links_stay_inside_root(tmp_path):
    """FIFOs, folders, dangling links and links out of ROOT are counted skips, never opened."""
    import os

    root = tmp_path / "datasets"
    arrays = {name: LABEL8 for name in ("good", "fifo_image", "linked", "outside")}
    _make(root, "ADEChallengeData2016", "images/validation", "annotations_detectron2/validation", ".png", arrays)
    labels = root / "ADEChallengeData2016/annotations_detectron2/validation"
    images = root / "ADEChallengeData2016/images/validation"
    os.mkfifo(labels / "fifo.png")  # reading it would block forever
    _write_image(images / "fifo.jpg")
    (labels / "folder.png").mkdir()
    _write_image(images / "folder.jpg")
    (labels / "dangling.png").symlink_to(tmp_path / "missing.png")
    (images / "fifo_image.jpg").unlink()
    os.mkfifo(images / "fifo_image.jpg")
    # a link to a label elsewhere inside ROOT is followed; one out of ROOT is not
    (labels / "linked.png").unlink()
    _write_label(root / "spare" / "linked.png", LABEL8)
    (labels / "linked.png").symlink_to(root / "spare" / "linked.png")
    (labels / "outside.png").unlink()
    _write_label(tmp_path / "elsewhere" / "secret.png", LABEL8)
    (labels / "outside.png").symlink_to(tmp_path / "elsewhere" / "secret.png")

    ds = get_dataset("ade150", root)
    assert [lab.stem for _, lab in ds.items] == ["good", "linked"]
    assert {k: sorted(p.name for p in v) for k, v in ds.skipped.items()} == {
        "not-a-regular-file": ["fifo.png", "fifo_image.jpg", "folder.png"],
        "broken-link": ["dangling.png"],
        "outside-root": ["outside.png"],
    }
    # a classes file that is a FIFO or a link out of ROOT is refused, not read
    (labels / "classes.txt").symlink_to(tmp_path / "elsewhere" / "secret.png")
    with pytest.raises(UserError, match="outside-root"):
        get_dataset("ade150", root)
    (labels / "classes.txt").unlink()
    os.mkfifo(labels / "classes.txt")
    with pytest.raises(UserError, match="not-a-regular-file"):
        get_dataset("ade150", root)


def test_pair_sizes_checked_from_headers(tmp_path):
    from maskmine.eval.datasets import check_pair_sizes

    _make(tmp_path, "ADEChallengeData2016", "images/validation", "annotations_detectron2/validation", ".png",
          {"a": LABEL8, "b": np.zeros((4, 3))})
    ds = get_dataset("ade150", tmp_path)
    with pytest.raises(UserError, match=r"label map .*b\.png is 3x4 but its image .*b\.jpg is 4x3"):
        check_pair_sizes(ds.items)
    check_pair_sizes(ds.items[:1])
    # a phone picture stored sideways with an EXIF rotation matches its upright label
    img = Image.fromarray(np.zeros((3, 4, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "ADEChallengeData2016/images/validation/b.jpg", exif=exif)
    check_pair_sizes(ds.items)
