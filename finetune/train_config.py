"""A training run's settings: what ``maskmine train`` takes, checks and records.

:class:`TrainConfig` holds the settings (the CLIP as a ``ClipSpec``);
:func:`check_config` fills the per-mode defaults and refuses bad values;
:func:`prepare_out_dir` compares them with the run folder's ``train.json`` (a
resume must match); :func:`resolve_init`, :func:`check_finished`, :func:`training_crop` and
:func:`total_steps` settle what the settings leave to the data (the shards' run
context, :mod:`maskmine.finetune.shard_context`): the base CLIP of ``--init``, which
shards of an unfinished run may be read, the crop settings and the schedule's length.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from maskmine.finetune import checkpoint as ckpt
from maskmine.finetune.data import expand_shards
from maskmine.finetune.model import DEFAULT_LR
from maskmine.finetune.train_choices import LOSSES, MODES, OVSEG_AUGMENT_SCALE, LossKind, Mode
from maskmine.finetune.shard_context import ShardContext, crop_for_context, crop_for_shards, crop_settings, local_shard, read_context
from maskmine.transforms import run_folder
from maskmine.transforms.atomic import atomic_write_json
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms import ranges
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.masked_crop import CropConfig
from maskmine.transforms.shard_format import count_keys

log = logging.getLogger(__name__)

# Settings that may change between a run and its resume: they do not change the trajectory.
RESUMABLE_CHANGES = ("allow_partial", "workers", "val_every", "save_every", "keep_checkpoints", "stop_after", "progress",
                     "device", "resume", "out", "val_limit")


@dataclass
class TrainConfig:
    shards: str
    out: str
    # the CLIP to start from and the device to train on; its crop settings are the shards' (run.json)
    clip: ClipSpec = field(default_factory=ClipSpec)
    mode: Mode = "prompt"
    prompt_depth: int | None = None  # None: 3 (OVSeg), capped at the number of vision layers
    init: str | None = None  # a `full` run/export whose finetuned CLIP is the base (OVSeg's stage 2)
    batch_size: int = 128  # OVSeg's global batch: 32 per GPU x 4 GPUs (its ViT-L/14 scripts)
    accum_steps: int = 1
    lr: float | None = None  # None: the mode's OVSeg default (DEFAULT_LR)
    prompt_lr: float | None = None  # full+prompt only: the prompts' rate (None: DEFAULT_LR["prompt"])
    weight_decay: float = 0.2  # OVSeg's --wd, on >= 2-D non-norm CLIP weights only
    warmup_steps: int = 100
    steps: int | None = 10000
    epochs: int | None = None
    loss: LossKind = "clip"
    train_logit_scale: bool = True  # OVSeg trains the temperature in both stages
    # OVSeg's RandomResizedCrop scale range [min, max] of the training crops; None: no augmentation
    augment_scale: list[float] | None = field(default_factory=lambda: list(OVSEG_AUGMENT_SCALE))
    vocabulary: str | None = None
    val_shards: str | None = None
    val_every: int = 500
    val_limit: int | None = None
    save_every: int = 1000
    keep_checkpoints: int = 2
    workers: int = 4
    shuffle_buffer: int = 1000
    resample: bool = False
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None  # end this invocation after this step (a checkpoint is written)
    progress: bool = True
    allow_partial: bool = False  # train on the committed shards of a run still being mined (or stopped)

    def settings(self) -> dict[str, Any]:
        """Every setting as a flat JSON-able record: the CLIP as ``clip_model``, ``clip_pretrained``
        and ``device``, as the CLI names them. ``train.json``'s identity and the export's ``train``
        record are made of these keys, so run folders written before the ClipSpec are still resumed."""
        data = asdict(self)
        clip = data.pop("clip")
        return {"clip_model": clip["model"], "clip_pretrained": clip["pretrained"], "device": clip["device"],
                "clip_activation": self.clip.resolved_activation(), **data}

    def identity(self) -> dict[str, Any]:
        data = self.settings()
        return {k: v for k, v in data.items() if k not in RESUMABLE_CHANGES}


def check_config(c: TrainConfig) -> None:
    if c.clip.crop != CropConfig():
        raise UserError("training cuts its crops as the shards were mined (their run.json): "
                        "leave TrainConfig.clip's crop at its default")
    ranges.check_choice("mode", c.mode, MODES)
    if c.prompt_lr is not None and c.mode != "full+prompt":
        raise SettingError("prompt_lr", "is the prompts' rate in `mode` full+prompt only; "
                                        "in `mode` prompt the prompts train at the `lr`")
    if c.init is not None and c.mode != "prompt":
        raise SettingError("init", "starts mask prompt tuning from a finetuned CLIP: it needs `mode` prompt")
    if c.lr is None:
        c.lr = DEFAULT_LR[c.mode]
    if c.mode == "full+prompt" and c.prompt_lr is None:
        c.prompt_lr = DEFAULT_LR["prompt"]
    if c.augment_scale is not None:
        low, high = (float(v) for v in c.augment_scale)
        if not 0.0 < low <= high <= 1.0:
            raise SettingError("augment_scale", f"needs 0 < MIN <= MAX <= 1, got {low:g} {high:g}")
        c.augment_scale = [low, high]
    ranges.check_choice("loss", c.loss, LOSSES)
    for name in ("batch_size", "accum_steps", "val_every", "save_every", "steps", "epochs", "val_limit", "stop_after"):
        ranges.POSITIVE_INT.check(name, getattr(c, name))
    for name in ("warmup_steps", "shuffle_buffer", "workers", "keep_checkpoints", "prompt_depth"):
        ranges.NON_NEGATIVE_INT.check(name, getattr(c, name))
    for name in ("lr", "prompt_lr"):
        ranges.POSITIVE_FLOAT.check(name, getattr(c, name))
    ranges.NON_NEGATIVE_FLOAT.check("weight_decay", c.weight_decay)
    if c.steps is None and c.epochs is None:
        raise SettingError("steps", "must be given when `epochs` is not")
    if c.resample and c.steps is None:
        raise SettingError("resample", "streams forever: it needs `steps`")
    if c.mode == "full" and c.prompt_depth not in (None, 0):
        c.prompt_depth = None  # the CLI default of 3 means nothing without prompts


def prepare_out_dir(c: TrainConfig) -> Path | None:
    """Create OUT or check it; returns the checkpoint to resume from (None: start fresh)."""
    out = Path(c.out)
    identity = json.loads(json.dumps(c.identity()))
    train_file = out / run_folder.TRAIN_FILE
    if train_file.is_file():
        try:
            previous = json.loads(train_file.read_text()).get("identity", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise SettingError("out", f"{train_file} is damaged ({exc}): use a new `out` folder") from exc
        if previous != identity:
            changed = run_folder.changed_settings(previous, identity)
            raise SettingError(
                "out", f"{out} holds a different training run (settings differ: {', '.join(changed)}): "
                "use a new `out` folder"
            )
        latest = ckpt.latest_checkpoint(out)
        if latest is not None and not c.resume:
            raise SettingError("out", f"{out} already holds this training run: pass `resume` to continue it, "
                               "or use a new `out`")
        return latest
    if out.exists() and any(p.name != run_folder.LOCK_FILE for p in out.iterdir()):  # the lock is this job's
        raise SettingError("out", f"{out} is not empty and holds no training run: use a new `out` folder")
    if c.resume:
        log.warning("`resume`: %s holds no run yet, starting from step 0", out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"identity": identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(train_file, data, indent=1, sort_keys=True)
    return None


def count_samples(urls: list[str], context: ShardContext | None = None) -> int:
    """Samples in the shards: from their manifest entries (fetched by the shards' own scheme), else
    from the tar headers of each shard without one (distinct keys; members are not decoded)."""
    from webdataset.gopen import gopen

    context = context or read_context(urls)
    total = 0
    for url in urls:
        manifest = context.manifests.get(url)
        if manifest is not None:
            total += int(manifest["samples"])
            continue
        path = local_shard(url)
        try:
            with (open(path, "rb") if path is not None else gopen(url, "rb")) as stream:
                total += count_keys(stream)
        except Exception as exc:  # noqa: BLE001 - tar errors, the opener's errors
            raise SettingError("epochs", f"cannot count the samples of {url} ({type(exc).__name__}: {exc}); "
                                         "give `steps` instead") from exc
    return total


def check_finished(c: TrainConfig, context: ShardContext) -> list[str]:
    """The shards to train on: refuse (one line) shards of an unfinished run unless --allow-partial;
    with it, the shards of such a run that are committed (have a manifest entry)."""
    unfinished = context.unfinished()
    if not unfinished:
        return [u for u in context.urls if not _empty(context, u)]
    committed = [u for u in context.urls if context.manifests.get(u) is not None
                 or context.run_of(u).run is None]
    samples = sum(int(context.manifests[u]["samples"]) for u in committed if context.manifests.get(u) is not None)
    run = unfinished[0]
    total = run.identity.get("num_shards", "?")
    found = sum(1 for u in run.shards if context.manifests.get(u) is not None)
    where = run.folder.rstrip("/") or "."
    summary = (f"{where} is an unfinished mining run (still being mined, or stopped: "
               f"{'no ' + run_folder.STATS_FILE if not run.finished else 'shards without a manifest entry'}); "
               f"found {samples} samples in {found} of {total} shards")
    if not c.allow_partial:
        raise SettingError("shards", f"{summary}: finish it (rerun the same `maskmine mine` command) or pass "
                                     "`allow_partial` to train on its committed shards")
    log.warning("%s: `allow_partial`, training on the %d committed shards", summary, len(committed))
    if not committed:
        raise UserError(f"{summary}: no committed shard to train on")
    return [u for u in committed if not _empty(context, u)]


def _empty(context: ShardContext, url: str) -> bool:
    """A committed shard of no sample: its tar holds no member, which tar readers take for a broken stream."""
    manifest = context.manifests.get(url)
    return manifest is not None and manifest.get("samples") == 0


def total_steps(c: TrainConfig, urls: list[str], context: ShardContext | None = None) -> int:
    if c.steps is not None:
        return c.steps
    samples = count_samples(urls, context)
    # the training stream drops each worker's last partial batch (drop_last), so floor
    per_epoch = max(1, (samples // c.batch_size) // c.accum_steps)
    return c.epochs * per_epoch


def resolve_init(c: TrainConfig) -> CropConfig | None:
    """``--init RUN``: the base CLIP becomes that `full` run's finetuned model (OVSeg's stage 2).

    Sets the config's CLIP to the export's model and weights (its ``model.pt``) and
    returns its crop settings."""
    if c.init is None:
        return None
    try:
        folder = ckpt.resolve_export(c.init)
        export = ckpt.read_export_config(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise SettingError("init", f"{c.init}: {exc}") from exc
    if export.mode != "full":
        raise SettingError("init", f"{c.init}: a {export.mode!r} export; stage 2 starts from a `mode` full run")
    weights = folder / ckpt.MODEL_FILE
    if not weights.is_file():
        raise SettingError("init", f"{c.init}: {folder} has no {ckpt.MODEL_FILE}")
    c.clip = replace(c.clip, model=export.clip_model, pretrained=str(weights.resolve()),
                     activation=export.clip_activation or "gelu")
    return export.crop_config()


def training_crop(c: TrainConfig, context: ShardContext, init_crop: CropConfig | None) -> CropConfig | None:
    """The crop settings the shards were mined with (their runs' run.json), checked against --init's."""
    crop, runs = crop_for_context(context)
    if crop is None:
        log.warning("the training shards' mining run records no crop settings (no run.json beside them): "
                    "using maskmine's defaults (%s)", crop_settings(CropConfig()))
        crop = init_crop
    elif init_crop is not None and crop_settings(crop) != crop_settings(init_crop):
        raise SettingError("init", f"{c.init} was trained on crops {crop_settings(init_crop)}, but the `shards` "
                                   f"were mined with {crop_settings(crop)} ({', '.join(map(str, runs))})")
    if c.val_shards:
        val_crop, val_runs = crop_for_shards(expand_shards(c.val_shards, "val_shards"))
        if val_crop is not None and crop is not None and crop_settings(val_crop) != crop_settings(crop):
            log.warning("the validation shards were mined with crop settings %s, the training shards with %s",
                        crop_settings(val_crop), crop_settings(crop))
    return crop
