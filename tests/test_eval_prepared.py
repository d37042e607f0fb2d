"""The five benchmarks as OVSeg, FC-CLIP/ODISE and CAT-Seg prepare them, read back per class NAME.

A tiny raw dataset (ADE's annotation PNGs and ADE20K-full's ``_seg.png`` +
``index_ade20k.pkl``, PASCAL Context's ``trainval/*.mat`` LabelMaps and the
Detail ``trainval_merged.json``, VOC's palette PNGs) is generated here, run
through the preparation scripts' own conversion logic (``prepare_ports``,
ported with file and commit), and every ground-truth pixel read by maskmine's
eval dataset reader must carry the class name the raw annotation gives it.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

import prepare_ports as prep
from maskmine.eval.datasets import DATA_DIR, check_pair_sizes, get_dataset, read_class_names
from maskmine.transforms.errors import UserError

H, W = 6, 8
# The real labels.txt and 59_labels.txt are not available here: OVSeg's copies of their names (eval/data)
PC459_NAMES = read_class_names(DATA_DIR / "pc459_classes.txt")
PC59_OVSEG_NAMES = read_class_names(DATA_DIR / "pc59_classes.txt")

# PASCAL Context's labels.txt ids (1-based) of the classes the raw maps use; 1 and 459 are not among the 59
PC_KNOWN = {1: "accordion", 2: "aeroplane", 9: "bag", 23: "bicycle", 189: "ground", 284: "person",
            326: "rock", 360: "sky", 397: "table", 458: "wood", 459: "wool"}
PC_RAW = {
    "2008_000002": np.array([[9, 9, 23, 23, 284, 284, 189, 189]] * 3 + [[360, 360, 326, 326, 2, 2, 0, 0]] * 3),
    "2008_000008": np.array([[397, 458, 1, 459, 284, 9, 360, 23]] * 6),
}
# VOC's class indices (SegmentationClass palette PNGs): 0 background, 255 boundary
VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor"]
VOC_RAW = {
    "2007_000033": np.array([[0, 1, 1, 11, 11, 15, 20, 255]] * 6),
    "2007_000042": np.array([[15, 15, 0, 0, 255, 7, 8, 12]] * 6),
}
# ADE20K-150 raw ids (objectInfo150.txt order; 0 = other) with detectron2's names
ADE150_KNOWN = {1: "wall", 2: "building", 3: "sky", 13: "person", 150: "flag"}
# entries of ADE20K_SEM_SEG_FULL_CATEGORIES in OVSeg's datasets/prepare_ade20k_full_sem_seg.py @ 36f49d4
ADE847_CATEGORIES = [
    {"name": "wall", "id": 2978, "trainId": 0},
    {"name": "building, edifice", "id": 312, "trainId": 1},
    {"name": "stove, kitchen stove, range, kitchen range, cooking stove", "id": 2598, "trainId": 72},
    {"name": "bus, autobus, coach, charabanc, double-decker, jitney, motorbus, motorcoach, omnibus, "
             "passenger vehicle", "id": 327, "trainId": 80},
    {"name": "adding machine, totalizer, totaliser", "id": 3148, "trainId": 846},
]


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(path)


def names_of(ds, label: np.ndarray) -> np.ndarray:
    """Each pixel's class name as the reader reports it ("" for ignore)."""
    table = np.array(ds.class_names + [""], dtype=object)
    return table[np.where(label == ds.ignore_label, len(ds.class_names), label)]


def assert_names(ds, expected: dict[str, np.ndarray]) -> None:
    assert sorted(lab.stem for _, lab in ds.items) == sorted(expected)
    check_pair_sizes(ds.items)
    for _, label_path in ds.items:
        got = names_of(ds, ds.load_label(label_path))
        want = expected[label_path.stem]
        bad = got != want
        assert not bad.any(), (
            f"{label_path.name}: {int(bad.sum())} pixels misnamed, e.g. {want[bad][0]!r} read as {got[bad][0]!r}"
        )


# --- PASCAL Context ---------------------------------------------------------------------------------------

def write_pascal_context_raw(root: Path) -> None:
    """VOC2010 + PASCAL Context trainval.tar.gz as the scripts read them."""
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "trainval").mkdir(parents=True)
    pc459 = PC459_NAMES
    assert all(pc459[i - 1] == name for i, name in PC_KNOWN.items())
    (voc / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(pc459, 1)))
    # OVSeg's prepare numbers the 59 classes by the lines of Stanford's 59_labels.txt; OVSeg evaluates them
    # under PASCALCONTEX59_NAMES, so that is the order its file must have for OVSeg's results to hold
    (voc / "59_labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(PC59_OVSEG_NAMES, 1)))
    (voc / "pascalcontext_val.txt").write_text("".join(f"{s}\n" for s in PC_RAW))
    images, annos = [], []
    for n, (stem, raw) in enumerate(sorted(PC_RAW.items()), 1):
        _jpeg(voc / "JPEGImages" / f"{stem}.jpg")
        scipy.io.savemat(voc / "trainval" / f"{stem}.mat", {"LabelMap": raw.astype(np.uint16)})
        image_id = int(stem.replace("_", ""))
        images.append({"image_id": image_id, "file_name": f"{stem}.jpg", "phase": "val", "height": H, "width": W})
        for cat in np.unique(raw):
            if cat in prep.PC59_MAPPING[1:]:  # trainval_merged.json annotates the 59 classes
                rle = mask_utils.encode(np.asfortranarray((raw == cat).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                annos.append({"image_id": image_id, "category_id": int(cat), "segmentation": rle})
    _jpeg(voc / "JPEGImages" / "2008_000001.jpg")  # a training image: not in the val split
    images.append({"image_id": 2008000001, "file_name": "2008_000001.jpg", "phase": "train", "height": H,
                   "width": W})
    (voc / "trainval_merged.json").write_text(json.dumps({"images": images, "annos_segmentation": annos}))


def pc_expected(kind: str) -> dict[str, np.ndarray]:
    pc459 = PC459_NAMES
    in59 = set(prep.PC59_MAPPING[1:].tolist())
    out = {}
    for stem, raw in PC_RAW.items():
        names = np.array([""] + pc459, dtype=object)[raw]
        if kind == "59":
            names = np.where(np.isin(raw, list(in59)), names, "")
        out[stem] = names
    return out


@pytest.fixture
def pc_raw(tmp_path) -> Path:
    write_pascal_context_raw(tmp_path)
    return tmp_path


def test_pc59_and_pc459_as_ovseg_prepares_them(pc_raw):
    prep.ovseg_prepare_pascal_context(pc_raw)
    ds = get_dataset("pc59", pc_raw)  # OVSeg's order, told apart from CAT-Seg's by pc459_val
    assert_names(ds, pc_expected("59"))
    assert "ovseg order" in ds.names_source and "told apart" in ds.names_source
    assert_names(get_dataset("pc459", pc_raw), pc_expected("459"))


def test_pc59_as_catseg_prepares_it_at_ovsegs_path(pc_raw):
    prep.catseg_prepare_pascal_context_59(pc_raw)
    # nothing beside it tells CAT-Seg's order from OVSeg's: one line asking which
    with pytest.raises(UserError, match="`class_order` ovseg\\|catseg") as exc:
        get_dataset("pc59", pc_raw)
    assert "\n" not in str(exc.value)
    assert_names(get_dataset("pc59", pc_raw, class_order="catseg"), pc_expected("59"))
    # with CAT-Seg's pc459_val beside it, the data tells
    prep.catseg_prepare_pascal_context_459(pc_raw)
    ds = get_dataset("pc59", pc_raw)
    assert "catseg order" in ds.names_source
    assert_names(ds, pc_expected("59"))
    assert_names(get_dataset("pc459", pc_raw), pc_expected("459"))
    with pytest.raises(UserError, match="contradicts the data"):
        get_dataset("pc59", pc_raw, class_order="ovseg")


def test_pc59_and_pc459_as_fcclip_prepares_them(pc_raw):
    """ODISE/FC-CLIP's pascal_ctx_d2: the 59 classes in sorted-459-id order (only 5 of 59 ids agree with OVSeg's)."""
    prep.fcclip_prepare_pascal_ctx_sem_seg(pc_raw)
    prep.fcclip_prepare_pascal_ctx_full_sem_seg(pc_raw)
    ds = get_dataset("pc59", pc_raw)
    assert_names(ds, pc_expected("59"))
    assert ds.root.name == "pascal_ctx_d2" and "d2 order" in ds.names_source
    assert_names(get_dataset("pc459", pc_raw), pc_expected("459"))


def test_a_users_classes_txt_wins(pc_raw):
    prep.catseg_prepare_pascal_context_59(pc_raw)
    label_dir = pc_raw / "VOCdevkit/VOC2010/annotations_detectron2/pc59_val"
    (label_dir / "classes.txt").write_text("\n".join(read_class_names(DATA_DIR / "pc59_d2_classes.txt")) + "\n")
    ds = get_dataset("pc59", pc_raw)
    assert ds.names_source.startswith(str(label_dir / "classes.txt"))
    assert_names(ds, pc_expected("59"))


# --- ADE20K -----------------------------------------------------------------------------------------------

def test_ade150_as_ovseg_prepares_it(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 2, 3, 13, 150, 150, 1]] * H, np.uint8)
    (base / "annotations" / "validation").mkdir(parents=True)
    Image.fromarray(raw).save(base / "annotations" / "validation" / "ADE_val_00000001.png")
    _jpeg(base / "images" / "validation" / "ADE_val_00000001.jpg")
    prep.ovseg_prepare_ade20k_sem_seg(tmp_path)
    names = np.vectorize(lambda v: ADE150_KNOWN.get(int(v), ""), otypes=[object])(raw)
    assert_names(get_dataset("ade150", tmp_path), {"ADE_val_00000001": names})


def test_ade847_as_ovseg_prepares_it(tmp_path):
    ade = tmp_path / "ADE20K_2021_17_01"
    folder = "ADE20K_2021_17_01/images/ADE/validation/home_or_hotel/bedroom"
    ids = np.array([[2978, 312, 2598, 327, 3148, 1, 2978, 327]] * H)  # 1: an ADE object outside the 847
    seg = np.zeros((H, W, 3), np.uint8)
    seg[..., 0] = (ids // 256) * 10  # ADE20K-full's _seg.png: class = R / 10 * 256 + G
    seg[..., 1] = ids % 256
    (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(seg).save(tmp_path / folder / "ADE_val_00000001_seg.png")
    _jpeg(tmp_path / folder / "ADE_val_00000001.jpg")
    with open(ade / "index_ade20k.pkl", "wb") as f:
        pickle.dump({"folder": [folder, folder], "filename": ["ADE_val_00000001.jpg", "ADE_train_00000001.jpg"]}, f)
    prep.ovseg_prepare_ade20k_full_sem_seg(tmp_path, ADE847_CATEGORIES)
    by_id = {c["id"]: c["name"] for c in ADE847_CATEGORIES}
    names = np.vectorize(lambda v: by_id.get(int(v), ""), otypes=[object])(ids)
    ds = get_dataset("ade847", tmp_path)
    assert ds.num_classes == 847
    assert_names(ds, {"ADE_val_00000001": names})


# --- PASCAL VOC -------------------------------------------------------------------------------------------

def voc_palette() -> list[int]:
    """VOC's colour map (devkit's labelcolormap)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def test_voc20_as_ovseg_and_fcclip_prepare_it(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for stem, raw in VOC_RAW.items():
        _jpeg(voc / "JPEGImages" / f"{stem}.jpg")
        png = Image.fromarray(raw.astype(np.uint8), mode="P")
        png.putpalette(voc_palette())
        png.save(voc / "SegmentationClass" / f"{stem}.png")  # palette PNG, as VOC ships it
        Image.fromarray(raw.astype(np.uint8)).save(voc / "SegmentationClassAug" / f"{stem}.png")  # SBD: grey
    with Image.open(voc / "SegmentationClass" / "2007_000033.png") as check:
        assert check.mode == "P" and check.getpalette()[3:6] == [128, 0, 0]  # aeroplane is dark red
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{s}\n" for s in VOC_RAW))
    prep.ovseg_prepare_voc_sem_seg(tmp_path)
    expected = {s: np.where((raw == 0) | (raw == 255), "", np.array(VOC_NAMES, dtype=object)[np.minimum(raw, 20)])
                for s, raw in VOC_RAW.items()}
    assert_names(get_dataset("voc20", tmp_path), expected)
    prep.fcclip_prepare_pascal_voc_sem_seg(tmp_path)
    ds = get_dataset("voc20", tmp_path)
    assert ds.root.name == "pascal_voc_d2"
    assert_names(ds, expected)
