"""OVSeg's test-time size: segment the image with its short side at 640, the scores back at full size.

OVSeg evaluates (``build_detection_test_loader(cfg, dataset_name, mapper=None)``, ov-seg@36f49d4
train_net.py line 116, i.e. detectron2's ``DatasetMapper`` with ``build_augmentation(cfg, False)``,
detectron2@02b5c4e detectron2/data/detection_utils.py lines 644-648) and runs its demo
(``DefaultPredictor``, detectron2/engine/defaults.py lines 322 and 345) on the image resized by
``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``: 640 and 2560 in every OVSeg config
(configs/ovseg_swinB_vitL_bs32_120k.yaml lines 79 and 81, configs/ovseg_swinB_vitL_demo.yaml lines
78 and 80). Proposals, masked crops and the (C, h, w) semantic score map are all made at that size;
``sem_seg_postprocess`` (detectron2/modeling/postprocessing.py lines 96-99, called at
ov-seg open_vocab_seg/ovseg_model.py line 218, demo line 421) then interpolates the score map
bilinearly (``align_corners=False``) back to the image's own height and width, where the argmax is
taken.

This module holds the three pieces: the output shape (:func:`shortest_edge_shape`), the image resize
(:func:`resize_image`, PIL bilinear on uint8 as detectron2's ``ResizeTransform.apply_image``) and
the score map's way back (:func:`scores_to_size`). :func:`resize_label_map` resizes a label map
with nearest neighbour (detectron2's ``apply_segmentation``), which maskmine uses for its
ground-truth-region proposals (``--proposals coco-gt``; OVSeg has no such proposals).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maskmine.eval.settings import OVSEG_MAX_SIZE_TEST, OVSEG_MIN_SIZE_TEST  # noqa: F401 - imported from here too


def shortest_edge_shape(height: int, width: int, short_edge: int, max_size: int = OVSEG_MAX_SIZE_TEST) -> tuple[int, int]:
    """(height, width) after ``ResizeShortestEdge``: short side ``short_edge``, long side at most
    ``max_size``, each rounded half up (``ResizeShortestEdge.get_output_shape``,
    detectron2@02b5c4e detectron2/data/transforms/augmentation_impl.py lines 187-200)."""
    if height < 1 or width < 1 or short_edge < 1 or max_size < 1:
        raise ValueError(f"sizes must be positive, got {height}x{width}, short edge {short_edge}, max {max_size}")
    h, w = height, width
    size = short_edge * 1.0
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 → ``shape`` with PIL's bilinear resize, as ``ResizeTransform.apply_image`` does
    for uint8 images (detectron2/data/transforms/transform.py lines 117-123)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if image.shape[:2] == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def at_test_size(image: np.ndarray, test_size: int | None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``image`` as OVSeg segments it, and the size its scores go back to: with ``test_size``, the image
    resized to short side ``test_size`` (:func:`shortest_edge_shape`, :func:`resize_image`) and its own
    (height, width); without, the image itself and None (nothing to interpolate back)."""
    if test_size is None:
        return image, None
    size = (int(image.shape[0]), int(image.shape[1]))
    return resize_image(image, shortest_edge_shape(size[0], size[1], test_size)), size


def resize_label_map(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) integer label map → ``shape`` with PIL's nearest neighbour (the labels are kept, never blended)."""
    labels = np.asarray(labels)
    if labels.shape == tuple(shape):
        return labels
    if labels.min(initial=0) < np.iinfo(np.int32).min or labels.max(initial=0) > np.iinfo(np.int32).max:
        raise ValueError("label values do not fit in int32")
    resized = Image.fromarray(labels.astype(np.int32), mode="I").resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(resized).astype(labels.dtype)


def scores_to_size(scores: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) score map → (C, H, W), bilinear with ``align_corners=False`` as ``sem_seg_postprocess``
    (detectron2/modeling/postprocessing.py lines 96-99; nothing to crop here, the map is unpadded)."""
    if scores.ndim != 3:
        raise ValueError(f"expected a (C, h, w) score map, got {tuple(scores.shape)}")
    if tuple(scores.shape[1:]) == tuple(shape):
        return scores
    return F.interpolate(scores[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
