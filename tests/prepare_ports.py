"""The conversion logic of the benchmarks' real preparation scripts, ported for the tests.

The scripts cannot be vendored or downloaded at test time, so each function
below repeats one script's conversion step for step (same reads, same
arithmetic, same output paths and formats), with the source file and commit in
its docstring. Only the progress bars, multiprocessing and the training split
are left out. The tests run these on a tiny raw dataset they generate and read
the result back through maskmine's eval dataset reader.

Commits read:
  OVSEG  = facebookresearch/ov-seg 36f49d496714998058d115ffb6172d9d84c59065
  FCCLIP = bytedance/fc-clip       2b0bbe213070d44da9182530fa2e826fef03f974
  CATSEG = KU-CVLAB/CAT-Seg        6d3a188af95165147fe2f34a8237fa7d2633e784
"""
from __future__ import annotations

import json
import os
import os.path as osp
import pickle as pkl
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

# PASCAL Context 59 as 459 ids: the `_mapping` table of FC-CLIP's datasets/prepare_pascal_ctx_sem_seg.py
# and CAT-Seg's datasets/prepare_pascal_context_59.py (identical), 0 = unlabeled.
PC59_MAPPING = np.sort(np.array([
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284,
    158, 159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59,
    440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355,
    85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
]))


# --- ADE20K-150 -------------------------------------------------------------------------------------------

def ovseg_prepare_ade20k_sem_seg(dataset_root: Path) -> None:
    """OVSEG datasets/prepare_ade20k_sem_seg.py (index=None): label - 1 in uint8, so 0 → 255."""
    dataset_dir = dataset_root / "ADEChallengeData2016"
    for name in ["validation"]:
        annotation_dir = dataset_dir / "annotations" / name
        output_dir = dataset_dir / "annotations_detectron2" / name
        output_dir.mkdir(parents=True, exist_ok=True)
        for file in list(annotation_dir.iterdir()):
            output_file = output_dir / file.name
            img = np.asarray(Image.open(file))
            assert img.dtype == np.uint8
            img = img - 1  # 0 (ignore) becomes 255. others are shifted by 1
            Image.fromarray(img).save(output_file)


# --- ADE20K-847 -------------------------------------------------------------------------------------------

def ovseg_prepare_ade20k_full_sem_seg(dataset_dir: Path, categories: list[dict]) -> None:
    """OVSEG datasets/prepare_ade20k_full_sem_seg.py (CATSEG's prepare_ade20k_full.py is the same code).

    ``categories``: entries of the script's ADE20K_SEM_SEG_FULL_CATEGORIES ({"name", "id", "trainId"}).
    The images are at most 512 px, so the script's cv2 resize branch is not taken.
    """
    index_file = dataset_dir / "ADE20K_2021_17_01" / "index_ade20k.pkl"
    with open(index_file, "rb") as f:
        index_ade20k = pkl.load(f)
    id_map = {cat["id"]: cat["trainId"] for cat in categories}
    for name in ["training", "validation"]:
        (dataset_dir / "ADE20K_2021_17_01" / "images_detectron2" / name).mkdir(parents=True, exist_ok=True)
        (dataset_dir / "ADE20K_2021_17_01" / "annotations_detectron2" / name).mkdir(parents=True, exist_ok=True)
    for folder_name, file_name in zip(index_ade20k["folder"], index_ade20k["filename"]):
        split = "validation" if file_name.split("_")[1] == "val" else "training"
        if split == "training":
            continue
        file = str(dataset_dir / folder_name / file_name)
        with Image.open(file.replace(".jpg", "_seg.png")) as io:  # loadAde20K
            seg = np.array(io)
        R, G = seg[:, :, 0], seg[:, :, 1]
        lab = (R / 10).astype(np.int32) * 256 + (G.astype(np.int32))
        img = np.asarray(Image.open(file))
        h, w = img.shape[0], img.shape[1]
        assert max(h, w) <= 512, "the port leaves out the script's cv2 resize"
        assert img.dtype == np.uint8 and lab.dtype == np.int32
        output = np.zeros_like(lab, dtype=np.uint16) + 65535
        for obj_id in np.unique(lab):
            if obj_id in id_map:
                output[lab == obj_id] = id_map[obj_id]
        base = dataset_dir / "ADE20K_2021_17_01"
        Image.fromarray(img).save(base / "images_detectron2" / split / file_name)
        assert output.dtype == np.uint16
        Image.fromarray(output).save(base / "annotations_detectron2" / split / file_name.replace(".jpg", ".tif"))


# --- PASCAL Context 59 / 459 ------------------------------------------------------------------------------

def ovseg_prepare_pascal_context(dataset_dir: Path) -> None:
    """OVSEG datasets/prepare_pascal_context.py: pc459_val/*.tif (LabelMap - 1) and pc59_val/*.png.

    The 59 order is the line order of VOC2010/59_labels.txt, each name looked up in labels.txt.
    """
    pc_path = dataset_dir / "VOCdevkit/VOC2010"
    val_list = open(pc_path / "pascalcontext_val.txt", "r")
    pc459_labels = open(pc_path / "labels.txt", "r")
    pc59_labels = open(pc_path / "59_labels.txt", "r")
    pc459_dict = {}
    for line in pc459_labels.readlines():
        if ":" in line:
            idx, name = line.split(":")
            pc459_dict[name.strip()] = int(idx.strip())
    pc59_dict = {}
    for i, line in enumerate(pc59_labels.readlines()):
        name = line.split(":")[-1].strip()
        if name != "":
            pc59_dict[i] = pc459_dict[name]
    pc459_dir = pc_path / "annotations_detectron2" / "pc459_val"
    pc459_dir.mkdir(parents=True, exist_ok=True)
    pc59_dir = pc_path / "annotations_detectron2" / "pc59_val"
    pc59_dir.mkdir(parents=True, exist_ok=True)
    for line in val_list.readlines():
        fileid = line.strip()
        ori_mask = f"{pc_path}/trainval/{fileid}.mat"
        if osp.exists(ori_mask):
            _ovseg_convert_pc459(ori_mask, f"{pc459_dir}/{fileid}.tif")
            mask = scipy.io.loadmat(ori_mask)["LabelMap"]  # convert_pc59
            mask_copy = np.ones_like(mask, dtype=np.uint8) * 255
            for trID, clsID in pc59_dict.items():
                mask_copy[mask == clsID] = trID
            assert np.amin(mask_copy) >= 0
            Image.fromarray(mask_copy).save(f"{pc59_dir}/{fileid}.png", "PNG")


def _ovseg_convert_pc459(mask_path: str, new_mask_path: str) -> None:
    """convert_pc459 of OVSEG datasets/prepare_pascal_context.py and CATSEG datasets/prepare_pascal_context_459.py."""
    mask = scipy.io.loadmat(mask_path)["LabelMap"]
    mask = mask - 1  # uint16: 0 (unlabeled) wraps to 65535
    assert np.amin(mask) >= 0
    Image.fromarray(mask).save(new_mask_path, "TIFF")


def catseg_prepare_pascal_context_59(dataset_dir: Path) -> None:
    """CATSEG datasets/prepare_pascal_context_59.py: OVSeg's path, pc59 in sorted-459-id order."""
    _key = np.array(range(len(PC59_MAPPING))).astype("uint8")
    _key = _key - 1
    _map = {k: v for k, v in zip(PC59_MAPPING, _key)}
    voc_path = dataset_dir / "VOCdevkit" / "VOC2010"
    out_dir = voc_path / "annotations_detectron2" / "pc59_val"
    os.makedirs(out_dir, exist_ok=True)
    data = json.load(open(voc_path / "trainval_merged.json", "r"))
    val_images = {d["image_id"]: d for d in data["images"] if d["phase"] == "val"}
    annos: dict = {}
    for ann in data["annos_segmentation"]:
        key = ann["image_id"]
        if key in val_images.keys():
            annos.setdefault(key, []).append(ann)
    for k, v in annos.items():
        mask = np.zeros((val_images[k]["height"], val_images[k]["width"]))
        for c in v:
            x = mask_utils.decode(c["segmentation"])
            mask[np.nonzero(x)] = c["category_id"]
        annos[k] = mask
    for id_, dat in val_images.items():
        out = np.ones_like(annos[id_], dtype=np.uint8) * 255  # _class_to_index
        for k, v in _map.items():
            out[annos[id_] == k] = v
        Image.fromarray(out).save(os.path.join(out_dir, dat["file_name"].replace("jpg", "png")))


def catseg_prepare_pascal_context_459(dataset_dir: Path) -> None:
    """CATSEG datasets/prepare_pascal_context_459.py: pc459_val/*.tif, LabelMap - 1."""
    pc_path = dataset_dir / "VOCdevkit/VOC2010"
    pc459_dir = pc_path / "annotations_detectron2" / "pc459_val"
    pc459_dir.mkdir(parents=True, exist_ok=True)
    for line in open(pc_path / "pascalcontext_val.txt", "r").readlines():
        fileid = line.strip()
        ori_mask = f"{pc_path}/trainval/{fileid}.mat"
        if osp.exists(ori_mask):
            _ovseg_convert_pc459(ori_mask, f"{pc459_dir}/{fileid}.tif")


def _detail_get_mask(data: dict, img_info: dict) -> np.ndarray:
    """detail-api's ``Detail.getMask(img)`` with cat=instance=part=None: the class mask of the image's
    segmentation annotations, each painted with its category_id in order (detail/__init__.py)."""
    mask = np.zeros((img_info["height"], img_info["width"]))
    for ann in data["annos_segmentation"]:
        if ann["image_id"] == img_info["image_id"]:
            m = mask_utils.decode(ann["segmentation"])
            mask[np.nonzero(m)] = ann["category_id"]
    return mask


def fcclip_prepare_pascal_ctx_sem_seg(dataset_root: Path) -> None:
    """FCCLIP datasets/prepare_pascal_ctx_sem_seg.py (from ODISE): pascal_ctx_d2/annotations_ctx59."""
    _key = np.array(range(len(PC59_MAPPING))).astype("uint8")
    dataset_dir = dataset_root / "pascal_ctx_d2"
    voc_dir = dataset_root / "VOCdevkit/VOC2010"
    data = json.load(open(voc_dir / "trainval_merged.json"))
    for split in ["validation"]:
        img_dir = voc_dir / "JPEGImages"
        img_infos = [d for d in data["images"] if d["phase"] == "val"]
        output_img_dir = dataset_dir / "images" / split
        output_ann_dir = dataset_dir / "annotations_ctx59" / split
        output_img_dir.mkdir(parents=True, exist_ok=True)
        output_ann_dir.mkdir(parents=True, exist_ok=True)
        for img_info in img_infos:  # copy_images
            shutil.copy2(img_dir / img_info["file_name"], output_img_dir / img_info["file_name"])
        for img_info in img_infos:  # generate_labels
            mask = _detail_get_mask(data, img_info)
            values = np.unique(mask)
            for value in values:
                assert value in PC59_MAPPING
            index = np.digitize(mask.ravel(), PC59_MAPPING, right=True)
            sem_seg = _key[index].reshape(mask.shape)
            sem_seg = sem_seg - 1  # 0 (ignore) becomes 255. others are shifted by 1
            Image.fromarray(sem_seg).save(output_ann_dir / img_info["file_name"].replace("jpg", "png"))


def fcclip_prepare_pascal_ctx_full_sem_seg(dataset_root: Path) -> None:
    """FCCLIP datasets/prepare_pascal_ctx_full_sem_seg.py: pascal_ctx_d2/annotations_ctx459 (.tif)."""
    dataset_dir = dataset_root / "pascal_ctx_d2"
    mat_dir = dataset_root / "VOCdevkit/VOC2010" / "trainval"
    for split in ["validation"]:
        file_names = list((dataset_dir / "images" / split).glob("*.jpg"))
        output_ann_dir = dataset_dir / "annotations_ctx459" / split
        output_ann_dir.mkdir(parents=True, exist_ok=True)
        for file_name in file_names:
            mat_file = mat_dir / f"{file_name.stem}.mat"
            label_map = scipy.io.loadmat(mat_file)["LabelMap"]
            assert label_map.dtype == np.uint16
            label_map[label_map == 0] = 65535
            label_map = label_map - 1
            label_map[label_map == 65534] = 65535
            Image.fromarray(label_map).save(output_ann_dir / Path(mat_file.name).with_suffix(".tif"))


# --- PASCAL VOC 20 ----------------------------------------------------------------------------------------

# OVSEG datasets/prepare_voc_sem_seg.py (CATSEG datasets/prepare_voc.py has the same table)
VOC_CLSID_TO_TRID = {0: 255, **{i: i - 1 for i in range(1, 21)}, 255: 255}


def ovseg_prepare_voc_sem_seg(dataset_dir: Path) -> None:
    """OVSEG datasets/prepare_voc_sem_seg.py: SegmentationClassAug → annotations_detectron2/val."""
    voc_path = dataset_dir / "VOCdevkit" / "VOC2012"
    out_mask_dir = voc_path / "annotations_detectron2"
    for name in ["val"]:
        os.makedirs(out_mask_dir / name, exist_ok=True)
        os.makedirs(voc_path / "images_detectron2" / name, exist_ok=True)
        ids = np.loadtxt(osp.join(voc_path, "ImageSets/Segmentation/val.txt"), dtype=str, ndmin=1).tolist()
        for file in [osp.join(voc_path, "SegmentationClassAug", f + ".png") for f in ids]:
            mask = np.array(Image.open(file))  # convert_to_trainID
            mask_copy = np.ones_like(mask, dtype=np.uint8) * 255
            for clsID, trID in VOC_CLSID_TO_TRID.items():
                mask_copy[mask == clsID] = trID
            if len(np.unique(mask_copy)) == 1 and np.unique(mask_copy)[0] == 255:
                continue
            Image.fromarray(mask_copy).save(osp.join(out_mask_dir, "val", osp.basename(file)), "PNG")


def fcclip_prepare_pascal_voc_sem_seg(dataset_root: Path) -> None:
    """FCCLIP datasets/prepare_pascal_voc_sem_seg.py: SegmentationClass (palette PNGs) → pascal_voc_d2."""
    dataset_dir = dataset_root / "pascal_voc_d2"
    voc_dir = dataset_root / "VOCdevkit/VOC2012"
    for split in ["validation"]:
        img_name_path = voc_dir / "ImageSets/Segmentation/val.txt"
        img_dir, ann_dir = voc_dir / "JPEGImages", voc_dir / "SegmentationClass"
        output_img_dir = dataset_dir / "images" / split
        output_ann_dir_20 = dataset_dir / "annotations_pascal20" / split
        output_img_dir.mkdir(parents=True, exist_ok=True)
        output_ann_dir_20.mkdir(parents=True, exist_ok=True)
        with open(img_name_path) as f:
            for line in f.readlines():
                img_name = line.strip()
                shutil.copy2(img_dir / f"{img_name}.jpg", output_img_dir)
                img = np.array(Image.open(ann_dir / f"{img_name}.png"))  # convert_pas20
                img[img == 0] = 255
                img = img - 1
                img[img == 254] = 255
                assert img.dtype == np.uint8
                Image.fromarray(img).save(output_ann_dir_20 / f"{img_name}.png")
