"""Semantic-segmentation metrics, computed exactly as OVSeg reports them.

OVSeg evaluates with its ``GeneralizedSemSegEvaluator``, whose ``evaluate()``
keeps detectron2's original ``SemSegEvaluator`` formulas (detectron2 <= v0.6;
later detectron2 releases changed the mIoU denominator, see below). Over a
confusion matrix ``conf[pred, gt]`` of size ``(N+1) x (N+1)``, where row/column
``N`` is the "outside the classes" bucket:

    tp[c]       = conf[c, c]
    pos_gt[c]   = pixels whose ground truth is c
    pos_pred[c] = pixels predicted as c whose ground truth is a real class
    acc_valid   = pos_gt > 0                  (class present in the ground truth)
    iou_valid   = (pos_gt + pos_pred) > 0     (present in ground truth OR prediction)
    acc[c]      = tp / pos_gt                            for acc_valid classes, else NaN
    iou[c]      = tp / (pos_gt + pos_pred - tp)          for acc_valid classes, else NaN
    mACC        = sum(acc[acc_valid]) / count(acc_valid)
    mIoU        = sum(iou[acc_valid]) / count(iou_valid)     <- the subtle part
    fwIoU       = sum(iou[acc_valid] * pos_gt[acc_valid] / sum(pos_gt))
    pACC        = sum(tp) / sum(pos_gt)

and every number is reported x100. The mIoU denominator counts classes that
were predicted but never appear in the ground truth, so such a false-positive
class pulls mIoU down as an IoU of 0, while its own per-class IoU stays NaN.
(detectron2 >= 2022 uses ``iou_valid = acc_valid & union > 0`` instead, which
ignores those classes; we follow OVSeg, whose published numbers used the
formula above.)

Ignore pixels (ground truth == ``ignore_label``) fall in column N and count
nowhere. Predictions outside ``[0, N)`` (for example the "uncovered" label a
SAM fusion leaves, or a negative value) fall in row N: detectron2 never sees
these because its predictions are an argmax, and we count them as *wrong*
predictions, i.e. they add to ``pos_gt`` of their ground-truth class (lowering
its accuracy and IoU and pACC) but to no class's ``pos_pred``. With in-range
predictions the numbers are identical to detectron2's.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class SegMetrics:
    """Dataset-level numbers (x100, like detectron2) plus per-class detail.

    Per-class ``iou``/``acc`` are NaN for classes absent from the ground truth.
    """

    miou: float
    fwiou: float
    macc: float
    pacc: float
    iou: np.ndarray  # (N,) x100, NaN where pos_gt == 0
    acc: np.ndarray  # (N,) x100, NaN where pos_gt == 0
    tp: np.ndarray  # (N,) int pixel counts
    pos_gt: np.ndarray  # (N,) int
    pos_pred: np.ndarray  # (N,) int

    @property
    def num_classes(self) -> int:
        return int(self.iou.shape[0])

    def summary(self) -> dict[str, float]:
        """The four headline numbers under detectron2's names."""
        return {"mIoU": self.miou, "fwIoU": self.fwiou, "mACC": self.macc, "pACC": self.pacc}

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, float | None]:
        """detectron2-style flat result dict (``IoU-name``, ``ACC-name``); NaN becomes None for JSON."""
        names = _check_names(class_names, self.num_classes)
        out: dict[str, float | None] = {k: _json_float(v) for k, v in self.summary().items()}
        for i, name in enumerate(names):
            out[f"IoU-{name}"] = _json_float(self.iou[i])
        for i, name in enumerate(names):
            out[f"ACC-{name}"] = _json_float(self.acc[i])
        return out


class ConfusionMatrix:
    """Pixel confusion counts ``conf[pred, gt]`` that can be merged and cached per image.

    ``ignore_label`` is configurable because 16-bit datasets (ADE-847,
    PASCAL-Context-459) mark ignore with 65535 and have class ids above 255.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(
                f"ignore_label {ignore_label} is a valid class id for {num_classes} classes"
            )
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image. ``pred`` and ``gt`` are integer label maps of equal shape.

        Raises ValueError when ``gt`` holds a value that is neither a class id
        nor ``ignore_label`` (a wrong dataset/num_classes pairing, not noise).
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        for name, arr in (("prediction", pred), ("ground truth", gt)):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise ValueError(f"{name} must be an integer label map, got dtype {arr.dtype}")
        n = self.num_classes
        gt = gt.astype(np.int64).reshape(-1)
        pred = pred.astype(np.int64).reshape(-1)
        ignored = gt == self.ignore_label
        bad = ~ignored & ((gt < 0) | (gt >= n))
        if bad.any():
            values = np.unique(gt[bad])[:10].tolist()
            raise ValueError(
                f"ground truth has labels {values} outside [0, {n}) that are not the "
                f"ignore label {self.ignore_label}"
            )
        gt = np.where(ignored, n, gt)
        pred = np.where((pred < 0) | (pred >= n), n, pred)  # out of range: a wrong prediction
        counts = np.bincount((n + 1) * pred + gt, minlength=(n + 1) ** 2)
        self.matrix += counts.reshape(n + 1, n + 1)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts in place (same classes and ignore label); returns self."""
        if other.num_classes != self.num_classes or other.ignore_label != self.ignore_label:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_label}) "
                f"into a {self.num_classes}-class one (ignore {self.ignore_label})"
            )
        self.matrix += other.matrix
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready sparse form: only non-zero cells, so a per-image cache stays small."""
        rows, cols = np.nonzero(self.matrix)
        return {
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "cells": [[int(r), int(c), int(self.matrix[r, c])] for r, c in zip(rows, cols)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConfusionMatrix":
        cm = cls(int(data["num_classes"]), int(data["ignore_label"]))
        size = cm.num_classes + 1
        for r, c, count in data["cells"]:
            if not (0 <= r < size and 0 <= c < size) or count < 0:
                raise ValueError(f"bad confusion-matrix cell {(r, c, count)} for size {size}")
            cm.matrix[r, c] += count
        return cm

    def compute(self) -> SegMetrics:
        """The OVSeg/detectron2 numbers; see the module docstring for the exact formulas."""
        n = self.num_classes
        conf = self.matrix
        tp = conf.diagonal()[:n].astype(np.float64)
        pos_gt_i = conf[:, :n].sum(axis=0)  # includes row N: out-of-range predictions
        pos_pred_i = conf[:n, :n].sum(axis=1)
        pos_gt = pos_gt_i.astype(np.float64)
        pos_pred = pos_pred_i.astype(np.float64)
        total = pos_gt.sum()

        acc = np.full(n, np.nan)
        iou = np.full(n, np.nan)
        acc_valid = pos_gt > 0
        iou_valid = (pos_gt + pos_pred) > 0
        union = pos_gt + pos_pred - tp
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        iou[acc_valid] = tp[acc_valid] / union[acc_valid]

        nan = float("nan")
        macc = float(acc[acc_valid].sum() / acc_valid.sum()) if acc_valid.any() else nan
        miou = float(iou[acc_valid].sum() / iou_valid.sum()) if iou_valid.any() else nan
        if total > 0:
            weights = pos_gt / total
            fwiou = float((iou[acc_valid] * weights[acc_valid]).sum())
            pacc = float(tp.sum() / total)
        else:
            fwiou = pacc = nan
        return SegMetrics(
            miou=100 * miou,
            fwiou=100 * fwiou,
            macc=100 * macc,
            pacc=100 * pacc,
            iou=100 * iou,
            acc=100 * acc,
            tp=conf.diagonal()[:n].copy(),
            pos_gt=pos_gt_i.copy(),
            pos_pred=pos_pred_i.copy(),
        )


CSV_COLUMNS = ("class_id", "class_name", "iou", "acc", "gt_pixels", "pred_pixels", "tp_pixels")


def neutralise_cell(value: str) -> str:
    """See ``maskmine.transforms.audit.scoresheet.neutralise_cell`` (spreadsheet formula injection)."""
    from maskmine.transforms.audit.scoresheet import neutralise_cell as neutralise

    return neutralise(value)


def per_class_csv(metrics: SegMetrics, class_names: Sequence[str]) -> str:
    """Per-class table as CSV text; IoU/ACC empty for classes absent from the ground truth."""
    names = _check_names(class_names, metrics.num_classes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, name in enumerate(names):
        writer.writerow([
            i,
            neutralise_cell(name),  # a class name from a user's classes.txt may start with = + - @
            _csv_float(metrics.iou[i]),
            _csv_float(metrics.acc[i]),
            int(metrics.pos_gt[i]),
            int(metrics.pos_pred[i]),
            int(metrics.tp[i]),
        ])
    return buf.getvalue()


def _check_names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = list(class_names)
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for {n} classes")
    return names


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _csv_float(value: float) -> str:
    value = float(value)
    return "" if math.isnan(value) else f"{value:.4f}"
