"""``maskmine eval``: a benchmark's validation split through two-stage inference, with mIoU.

Output folder::

    OUT/settings.json              what the cached predictions were made with
    OUT/predictions/STEM.png       16-bit PNG label map per image (the resumable cache)
    OUT/metrics.json               mIoU, fwIoU, mACC, pACC (x100, detectron2 definitions) + counts
    OUT/per_class_iou.csv          per-class IoU / accuracy / pixel counts
    OUT/visualisations/STEM.png    image | ground truth | prediction, first K images

Each prediction is written atomically as soon as it is made, so an
interrupted eval resumes where it stopped: a rerun with the same settings
reads the cached predictions instead of recomputing them, and the metrics
(always recomputed from predictions and ground truth) come out the same.
A rerun with different settings into the same folder is refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from maskmine.eval.datasets import (
    SemSegDataset,
    UnknownLabels,
    check_labels,
    check_pair_sizes,
    get_dataset,
    load_label,
)
from maskmine.eval.fusion import FusionMode
from maskmine.eval.gt_proposals import label_map_proposals
from maskmine.eval.inference import DEFAULT_MASK_THRESHOLD, OVSEG_TEMPERATURE, RegionClassifier, build_classifier, segment
from maskmine.eval.metrics import ConfusionMatrix, SegMetrics, per_class_csv
from maskmine.eval.shortest_edge import OVSEG_MAX_SIZE_TEST, at_test_size, resize_label_map
from maskmine.eval.templates import TEMPLATE_SETS, TemplateSet
from maskmine.eval.visualise import comparison_panel
from maskmine.transforms.atomic import atomic_write
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.image_io import ImageSkip, decode_image
from maskmine.transforms import ranges
from maskmine.transforms.masked_crop import MASK_THRESHOLD, CropConfig
from maskmine.transforms.devices import resolve_device
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.records import ImageRecord
from maskmine.transforms.run_folder import (
    EVAL_CSV_FILE,
    EVAL_METRICS_FILE,
    EVAL_PRED_DIR,
    EVAL_SETTINGS_FILE,
    EVAL_VIS_DIR,
    changed_settings,
)

log = logging.getLogger(__name__)



# OVSeg's evaluation ensemble weights (ov-seg@36f49d4): 0.7 is CLIP_ENSEMBLE_WEIGHT in
# open_vocab_seg/config.py line 117 and configs/ovseg_swinB_vitL_bs32_120k.yaml line 55 (ADE-150 and
# ADE-847); GETTING_STARTED.md sets 0.6 for PASCAL Context 59/459 and 0.45 for PASCAL VOC-20.
OVSEG_ENSEMBLE_WEIGHTS = {"ade150": 0.7, "ade847": 0.7, "pc59": 0.6, "pc459": 0.6, "voc20": 0.45}
OVSEG_DEFAULT_ENSEMBLE_WEIGHT = 0.7  # config.py's default, for datasets OVSeg does not list


@dataclass
class EvalConfig:
    dataset: str
    root: str
    out: str
    proposals: ProposalSpec = field(default_factory=ProposalSpec)  # SAM's grid and filters in proposals.sam
    clip: ClipSpec = field(default_factory=ClipSpec)  # pretrained None: the model's default
    adapted: Optional[str] = None  # a `maskmine train` run: its adapted CLIP instead of ``clip``
    granularity: Optional[float] = None  # None: semantic inference (the CLI gives sam eval.settings.SAM_GRANULARITY)
    # OVSeg's CLIP_ENSEMBLE_WEIGHT: 0 = CLIP alone; None = OVSeg's evaluation weight of the dataset
    # (OVSEG_ENSEMBLE_WEIGHTS) where the proposal model scores its classes, else CLIP alone
    ensemble_lambda: Optional[float] = None
    templates: TemplateSet = "vild"
    clip_temperature: Optional[float] = OVSEG_TEMPERATURE  # OVSeg's fixed 100; None: the model's exp(logit_scale)
    fusion_mode: FusionMode = "assigned"
    mask_threshold: float = DEFAULT_MASK_THRESHOLD  # OVSeg's MASK_THR: mask > 0.4 makes crops and the valid flag
    hard_masks: bool = False  # maskmine's earlier semantic inference on binary masks (OVSeg: soft)
    proposal_filters: bool = False  # maskmine's mining filters (top-k, min area, de-dup); OVSeg: none
    # OVSeg's test size (MIN_SIZE_TEST 640, long side at most 2560): the image is resized before proposals
    # and crops, the score map interpolated back; None: maskmine's choice, the image at its own size
    test_size: Optional[int] = None
    limit: Optional[int] = None
    visualise: int = 4
    device: str = "auto"  # where both models run (the specs' own device fields are not used)
    progress: bool = True
    unknown_labels: UnknownLabels = "error"  # a ground-truth value outside the classes: "error" or "ignore"
    class_order: Optional[str] = None  # whose preparation wrote the labels (--class-order); None: from the data


@dataclass
class EvalResult:
    metrics: SegMetrics
    summary: dict[str, Any]
    images: int
    computed: int
    cached: int


def settings_identity(config: EvalConfig, dataset: SemSegDataset) -> dict[str, Any]:
    """Everything that changes a prediction (not --limit, --visualise, --device)."""
    names = "\n".join(dataset.class_names).encode("utf-8")
    spec = config.proposals.identity()
    for key in ("device", "precision", "sam"):  # SAM's options have their own entry
        spec.pop(key, None)
    if not config.proposal_filters:
        for key in ("top_k", "min_area_fraction", "dedup_iou"):
            spec.pop(key, None)
    identity = {
        "dataset": dataset.name,
        "class_names_sha1": hashlib.sha1(names).hexdigest(),
        "num_classes": dataset.num_classes,
        "proposals": spec,
        "sam": asdict(config.proposals.sam) if config.proposals.backend == "sam" else None,
        "clip_model": None if config.adapted else config.clip.model,
        "clip_pretrained": None if config.adapted else config.clip.pretrained,
        "clip_activation": None if config.adapted else config.clip.resolved_activation(),
        "adapted": str(Path(config.adapted).resolve()) if config.adapted else None,
        "granularity": config.granularity,
        "ensemble_lambda": config.ensemble_lambda,
        "templates": config.templates,
        "clip_temperature": config.clip_temperature,
        "fusion_mode": config.fusion_mode if config.granularity is not None else None,
        "mask_threshold": config.mask_threshold,
        "hard_masks": config.hard_masks,
        "proposal_filters": config.proposal_filters,
    }
    if not config.adapted and config.clip.crop != CropConfig():  # not settable from the command line
        identity["clip_crop"] = asdict(config.clip.crop)
    if config.test_size is not None:  # absent otherwise, so folders from before the flag keep their cache
        identity["test_size"] = {"short_edge": config.test_size, "max_size": OVSEG_MAX_SIZE_TEST}
    return identity


def encode_prediction(labels: np.ndarray) -> bytes:
    """Label map → 16-bit PNG bytes (class ids up to 847 and the 65535 ignore value fit)."""
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise ValueError("prediction labels must lie in [0, 65535]")
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _check_settings(out: Path, identity: dict[str, Any]) -> None:
    path = out / EVAL_SETTINGS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path} is unreadable ({exc}); delete it and {out / EVAL_PRED_DIR} to start over")
        if old != json.loads(json.dumps(identity)):
            changed = changed_settings(old, identity)
            raise SettingError(
                "out", f"{out} holds predictions made with different settings ({', '.join(changed)} differ); "
                f"use another `out`, or delete {out / EVAL_PRED_DIR} and {path} to start over"
            )
    else:
        atomic_write(path, (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode("utf-8"))


class _Predictor:
    """Builds the models once, then segments one image at a time.

    Both model stages load from their spec as mining's do (``build_classifier`` from
    ``config.clip``, ``build_proposal_generator`` from ``config.proposals``); the batch
    is one image, as OVSeg's eval runs (a batch pads images to one size, which changes
    MaskFormer's output).
    """

    def __init__(self, config: EvalConfig, dataset: SemSegDataset) -> None:
        self.config = config
        self.dataset = dataset
        device = resolve_device(config.device)
        if config.templates not in TEMPLATE_SETS:
            raise UserError(f"unknown templates {config.templates!r}; choose from {', '.join(TEMPLATE_SETS)}")
        backend = config.proposals.backend
        if config.ensemble_lambda is not None and config.ensemble_lambda > 0 and backend != "maskformer":
            raise SettingError(
                "ensemble_lambda", "above 0 needs class scores from the proposal model; only "
                f"`proposals` maskformer has a class head (got {backend})"
            )
        self.classifier: RegionClassifier = build_classifier(
            replace(config.clip, device=str(device)), config.adapted, TEMPLATE_SETS[config.templates],
            config.clip_temperature,
        )
        self.generator = None
        if backend != "coco-gt":
            from maskmine.eval.proposal_classes import NO_FILTERS

            # OVSeg applies no proposal filter in eval; maskmine's mining filters only on request
            spec = replace(config.proposals, device=str(device), **({} if config.proposal_filters else NO_FILTERS))
            self.generator = build_proposal_generator(spec)
        self.ensemble_lambda = self._ensemble_lambda()

    def _ensemble_lambda(self) -> Optional[float]:
        """The ensemble weight in use (None: CLIP alone), said in one line when it is the default."""
        config, dataset = self.config, self.dataset
        lam = config.ensemble_lambda
        if config.proposals.backend != "maskformer" or (lam is not None and lam <= 0):
            return None
        from maskmine.eval.proposal_classes import class_columns, model_labels

        if lam is not None:
            class_columns(model_labels(self.generator), dataset.class_names)  # fail early
            return lam
        try:
            class_columns(model_labels(self.generator), dataset.class_names)
        except UserError as exc:
            log.warning("ensemble: CLIP alone, the proposal model's closed-set head does not score every "
                        "class of %s (%s)", dataset.name, str(exc).splitlines()[0])
            return None
        lam = OVSEG_ENSEMBLE_WEIGHTS.get(dataset.name, OVSEG_DEFAULT_ENSEMBLE_WEIGHT)
        log.warning("ensemble: OVSeg's weight %.2f for %s (the proposal model's class head with CLIP; "
                    "`ensemble_lambda` 0 for CLIP alone)", lam, dataset.name)
        return lam

    def predict(self, image: np.ndarray, gt: np.ndarray, name: str) -> np.ndarray:
        ds, cfg = self.dataset, self.config
        class_probs = None
        image, output_size = at_test_size(image, cfg.test_size)  # OVSeg's ResizeShortestEdge
        if cfg.proposals.backend == "coco-gt":  # regions cut at the test size; scored at full size
            proposals = label_map_proposals(resize_label_map(gt, image.shape[:2]), ds.class_names, ds.ignore_label)
        elif cfg.proposals.backend == "maskformer":
            from maskmine.eval.proposal_classes import maskformer_eval_proposals

            proposals, class_probs = maskformer_eval_proposals(
                self.generator, image, ds.class_names if self.ensemble_lambda is not None else None,
                mask_threshold=cfg.mask_threshold, filters=cfg.proposal_filters,
            )
        else:
            record = ImageRecord(image_id=0, file_name=name, width=image.shape[1],
                                 height=image.shape[0], captions=[])
            proposals = self.generator.generate([image], [record])[0]
        result = segment(
            image,
            ds.class_names,
            proposals,
            self.classifier,
            granularity=cfg.granularity,
            proposal_class_probs=class_probs,
            ensemble_lambda=self.ensemble_lambda,
            empty_label=ds.ignore_label,
            fusion_mode=cfg.fusion_mode,
            mask_threshold=cfg.mask_threshold,
            hard_masks=cfg.hard_masks,
            output_size=output_size,
        )
        return result.labels


def read_image_file(path: Path, frame: tuple[int, int]) -> np.ndarray:
    """The image in the frame of its label map (``frame``: its height and width; see ``decode_image``)."""
    try:
        return decode_image(path.read_bytes(), frame=frame)
    except (OSError, ImageSkip) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc


def check_config(config: EvalConfig) -> None:
    """Refuse a setting outside its range (SettingError naming the setting; the CLI names the flag)."""
    ranges.POSITIVE_INT.check("limit", config.limit)
    ranges.NON_NEGATIVE_INT.check("visualise", config.visualise)
    ranges.FRACTION.check("granularity", config.granularity)
    MASK_THRESHOLD.check("mask_threshold", config.mask_threshold)
    ranges.FRACTION.check("ensemble_lambda", config.ensemble_lambda)
    ranges.POSITIVE_INT.check("test_size", config.test_size)


def run_eval(config: EvalConfig, log_fn: Callable[[str], None] = log.info) -> EvalResult:
    """Evaluate, reusing cached predictions; writes metrics.json, the CSV and visualisations."""
    check_config(config)
    dataset = get_dataset(config.dataset, config.root, config.class_order)
    items = dataset.items[: config.limit] if config.limit else dataset.items
    check_pair_sizes(items)  # every pair, before anything is predicted
    for reason, paths in sorted(dataset.skipped.items()):
        log_fn(f"{dataset.name}: skipped {len(paths)} {reason} (e.g. {paths[0]})")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings_identity(config, dataset))
    pred_dir = out / EVAL_PRED_DIR
    pred_dir.mkdir(exist_ok=True)

    todo = [i for i, (_, lab) in enumerate(items) if not (pred_dir / f"{lab.stem}.png").is_file()]
    predictor = _Predictor(config, dataset) if todo else None
    confusion = ConfusionMatrix(dataset.num_classes, dataset.ignore_label)
    computed = cached = 0
    unknown: dict[str, int] = {}  # --unknown-labels ignore: pixels and files treated as ignore
    started = time.monotonic()
    from tqdm import tqdm

    for index, (image_path, label_path) in enumerate(
        tqdm(items, desc=f"eval {dataset.name}", unit="img", disable=not config.progress)
    ):
        gt = check_labels(load_label(label_path), label_path, dataset, config.unknown_labels, unknown)
        pred_path = pred_dir / f"{label_path.stem}.png"
        image = None
        if pred_path.is_file():
            pred = load_label(pred_path)
            cached += 1
        else:
            image = read_image_file(image_path, gt.shape)
            if image.shape[:2] != gt.shape:
                raise UserError(
                    f"{image_path} is {image.shape[1]}x{image.shape[0]} but its label map "
                    f"{label_path} is {gt.shape[1]}x{gt.shape[0]}"
                )
            pred = predictor.predict(image, gt, image_path.name)
            atomic_write(pred_path, encode_prediction(pred))
            computed += 1
        if pred.shape != gt.shape:
            raise UserError(f"cached prediction {pred_path} does not match {label_path}; delete it")
        confusion.update(pred, gt)
        if index < config.visualise:
            vis_path = out / EVAL_VIS_DIR / f"{label_path.stem}.png"
            if image is None:
                image = read_image_file(image_path, gt.shape)
            panel = comparison_panel(image, _for_display(gt, dataset), _for_display(pred, dataset),
                                     dataset.class_names)
            buf = io.BytesIO()
            panel.save(buf, format="PNG")
            atomic_write(vis_path, buf.getvalue())

    metrics = confusion.compute()
    summary = {
        **{k: _num(v) for k, v in metrics.summary().items()},
        "dataset": dataset.name,
        "num_classes": dataset.num_classes,
        "images": len(items),
        "images_computed": computed,
        "images_cached": cached,
        "unknown_labels_ignored": unknown,
        "skipped": {reason: len(paths) for reason, paths in sorted(dataset.skipped.items())},
        "class_names_source": dataset.names_source,  # --unknown-labels ignore: {"pixels", "files"}; {} otherwise
        "seconds": round(time.monotonic() - started, 3),
        "settings": json.loads((out / EVAL_SETTINGS_FILE).read_text(encoding="utf-8")),
        "per_class": metrics.as_dict(dataset.class_names),
    }
    atomic_write(out / EVAL_METRICS_FILE, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    atomic_write(out / EVAL_CSV_FILE, per_class_csv(metrics, dataset.class_names).encode("utf-8"))
    log_fn(
        f"{dataset.name}: mIoU {metrics.miou:.2f}  fwIoU {metrics.fwiou:.2f}  mACC {metrics.macc:.2f}  "
        f"pACC {metrics.pacc:.2f} over {len(items)} images ({computed} computed, {cached} cached) → {out}"
    )
    return EvalResult(metrics=metrics, summary=summary, images=len(items), computed=computed, cached=cached)


def _for_display(labels: np.ndarray, dataset: SemSegDataset) -> np.ndarray:
    """Ignore/uncovered pixels become -1 (drawn black) whatever the dataset's ignore value."""
    return np.where(labels == dataset.ignore_label, -1, labels)


def _num(value: float) -> Optional[float]:
    value = float(value)
    return None if np.isnan(value) else round(value, 4)
