"""The finetuning loop: mined shards -> CLIP adapted to masked crops (OVSeg recipe).

``train(TrainConfig) -> TrainResult`` builds a :class:`Trainer` (model, optimizer,
schedule, data stream, validator, run folder) and feeds it the stream's batches,
validating and saving at their intervals. One optimizer step = ``accum_steps``
micro-batches of ``batch_size`` crops (the in-batch contrastive negatives are
those of one micro-batch; each worker's last partial batch is dropped, as OVSeg's
training loaders do). AdamW over the trainable parameters of ``MaskPromptCLIP``
(prompts and/or image tower; the text tower is always locked) in OVSeg's parameter
groups (``maskmine.finetune.optim``) with OVSeg's per-mode defaults
(``DEFAULT_LR``, weight decay 0.2, betas (0.9, 0.98), eps 1e-6), linear warmup then
cosine decay to 0, bf16 autocast on CUDA only. ``init`` starts prompt tuning from a
`full` run's finetuned CLIP (OVSeg's two stages). The crop settings come from the
shards' mining run (``run.json``) and are recorded in the export.

Output folder ``OUT``:
  ``train.json``     the run's settings (a resume must match them),
  ``metrics.jsonl``  one line per optimizer step (loss, lr, samples/s, skips)
                     and per validation (top-1/top-5),
  ``checkpoints/step-NNNNNNNN/``  export folder + ``train_state.pt``, written
                     atomically every ``save_every`` steps (the newest ``keep_checkpoints`` kept),
  ``config.json``, ``vocabulary.json``, ``model.pt`` and/or ``prompts.pt``: the
                     final adapted model (see ``maskmine.finetune.checkpoint``).

Resume (``resume=True``) restores the step, model, optimizer, scheduler, all
RNG states and the data position. With resampling off the data position is
exact: the epoch's shard order and shuffle are functions of (seed, epoch,
rank, worker), so the stream is rebuilt and the batches the run had already
consumed in the current epoch are read and dropped. With ``resample`` the
stream is infinite; a resumed run draws a fresh stream seeded by the resume
step (statistically the same, not the same samples), since replaying it
would re-read everything seen so far.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from maskmine.finetune import checkpoint as ckpt
from maskmine.finetune.data import Batch, PairStream, add_skips, expand_shards, make_loader
from maskmine.finetune.losses import LOSSES, LossKind, clip_contrastive_loss, vocab_cross_entropy
from maskmine.finetune.model import DEFAULT_LR, MODES, MaskPromptCLIP, Mode, trains_clip
from maskmine.finetune.optim import ADAM_BETAS, ADAM_EPS, lr_factor, optimizer_param_groups
from maskmine.finetune.runinfo import crop_for_shards, crop_settings
from maskmine.finetune.vocab import resolve_vocabulary, vocabulary_for_shards
from maskmine.transforms import run_folder
from maskmine.transforms.atomic import atomic_write, atomic_write_json
from maskmine.transforms.clip_models import MINING_TEMPLATES, ClipSpec, LoadedClip, encode_texts
from maskmine.transforms.devices import resolve_device
from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import CropConfig

log = logging.getLogger(__name__)

CLIP_LOSS_TEMPLATE = ("a photo of a {}.",)
# Settings that may change between a run and its resume: they do not change the trajectory.
RESUMABLE_CHANGES = ("workers", "val_every", "save_every", "keep_checkpoints", "stop_after", "progress",
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
    batch_size: int = 256
    accum_steps: int = 1
    lr: float | None = None  # None: the mode's OVSeg default (DEFAULT_LR)
    prompt_lr: float | None = None  # full+prompt only: the prompts' rate (None: DEFAULT_LR["prompt"])
    weight_decay: float = 0.2  # OVSeg's --wd, on >= 2-D non-norm CLIP weights only
    warmup_steps: int = 100
    steps: int | None = 10000
    epochs: int | None = None
    loss: LossKind = "clip"
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

    def settings(self) -> dict[str, Any]:
        """Every setting as a flat JSON-able record: the CLIP as ``clip_model``, ``clip_pretrained``
        and ``device``, as the CLI names them. ``train.json``'s identity and the export's ``train``
        record are made of these keys, so run folders written before the ClipSpec are still resumed."""
        data = asdict(self)
        clip = data.pop("clip")
        return {"clip_model": clip["model"], "clip_pretrained": clip["pretrained"], "device": clip["device"], **data}

    def identity(self) -> dict[str, Any]:
        data = self.settings()
        return {k: v for k, v in data.items() if k not in RESUMABLE_CHANGES}


@dataclass
class TrainResult:
    out: Path
    step: int
    total_steps: int
    losses: list[float]  # one per optimizer step run in this invocation
    skipped: dict[str, int]  # over the whole run, resumed part included
    samples: int  # crops consumed over the whole run
    validations: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = True  # False when stop_after ended it early
    model: MaskPromptCLIP | None = None  # the trained model, in memory


# ---- setup helpers --------------------------------------------------------------------

def check_config(c: TrainConfig) -> None:
    if c.clip.crop != CropConfig():
        raise UserError("training cuts its crops as the shards were mined (their run.json): "
                        "leave TrainConfig.clip's crop at its default")
    if c.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}")
    if c.prompt_lr is not None and c.mode != "full+prompt":
        raise UserError("--prompt-lr is the prompts' rate in --mode full+prompt only; "
                        "in --mode prompt the prompts train at --lr")
    if c.init is not None and c.mode != "prompt":
        raise UserError("--init starts mask prompt tuning from a finetuned CLIP: it needs --mode prompt")
    if c.lr is None:
        c.lr = DEFAULT_LR[c.mode]
    if c.mode == "full+prompt" and c.prompt_lr is None:
        c.prompt_lr = DEFAULT_LR["prompt"]
    if c.loss not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}")
    for name in ("batch_size", "accum_steps", "val_every", "save_every"):
        if getattr(c, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if c.steps is None and c.epochs is None:
        raise UserError("give --steps or --epochs")
    if c.steps is not None and c.steps < 1 or c.epochs is not None and c.epochs < 1:
        raise UserError("--steps and --epochs must be at least 1")
    if c.resample and c.steps is None:
        raise UserError("--resample streams forever: give --steps")
    if not all(math.isfinite(v) for v in (c.lr, c.weight_decay) + ((c.prompt_lr,) if c.prompt_lr is not None else ())):
        raise UserError("--lr, --prompt-lr and --weight-decay must be finite numbers")
    if c.lr <= 0 or (c.prompt_lr is not None and c.prompt_lr <= 0) or c.weight_decay < 0 or c.warmup_steps < 0 or c.shuffle_buffer < 0 or c.workers < 0:
        raise UserError("--lr and --prompt-lr must be positive; --weight-decay, --warmup-steps, --shuffle-buffer, --workers >= 0")
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
            raise UserError(f"{train_file} is damaged ({exc}): use a new --out folder") from exc
        if previous != identity:
            changed = run_folder.changed_settings(previous, identity)
            raise UserError(
                f"{out} holds a different training run (settings differ: {', '.join(changed)}): "
                "use a new --out folder"
            )
        latest = ckpt.latest_checkpoint(out)
        if latest is not None and not c.resume:
            raise UserError(f"{out} already holds this training run: pass --resume to continue it, or use a new --out")
        return latest
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no training run: use a new --out folder")
    if c.resume:
        log.warning("--resume: %s holds no run yet, starting from step 0", out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"identity": identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(train_file, data, indent=1, sort_keys=True)
    return None


def count_samples(urls: list[str]) -> int | None:
    """Samples in local shards: from their manifest entries, else from the tar headers
    (distinct keys; no member is read). None when a shard is not a local file."""
    import tarfile

    total = 0
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            return None
        tar = Path(url)
        manifest = tar.parent / run_folder.sidecar_names(tar.name)[1]
        if manifest.is_file():
            total += int(json.loads(manifest.read_text())["samples"])
            continue
        with tarfile.open(tar) as fh:
            total += len({m.name.split("/")[-1].split(".", 1)[0] for m in fh if m.isfile()})
    return total


def total_steps(c: TrainConfig, urls: list[str]) -> int:
    if c.steps is not None:
        return c.steps
    samples = count_samples(urls)
    if samples is None:
        raise UserError("--epochs needs local shards to count their samples: give --steps instead")
    # the training stream drops each worker's last partial batch (drop_last), so floor
    per_epoch = max(1, (samples // c.batch_size) // c.accum_steps)
    return c.epochs * per_epoch


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _append_metrics(path: Path, record: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume: drop log lines of steps after the checkpoint (they will be run again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    atomic_write(path, "".join(line + "\n" for line in kept))


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
        raise UserError(f"--init {c.init}: {exc}") from exc
    if export.mode != "full":
        raise UserError(f"--init {c.init}: a `{export.mode}` export; stage 2 starts from a `--mode full` run")
    weights = folder / ckpt.MODEL_FILE
    if not weights.is_file():
        raise UserError(f"--init {c.init}: {folder} has no {ckpt.MODEL_FILE}")
    c.clip = replace(c.clip, model=export.clip_model, pretrained=str(weights.resolve()))
    return export.crop_config()


def training_crop(c: TrainConfig, urls: list[str], init_crop: CropConfig | None) -> CropConfig | None:
    """The crop settings the shards were mined with (their runs' run.json), checked against --init's."""
    crop, runs = crop_for_shards(urls)
    if crop is None:
        log.warning("the training shards' mining run records no crop settings (no local run.json): "
                    "using maskmine's defaults (%s)", crop_settings(CropConfig()))
        crop = init_crop
    elif init_crop is not None and crop_settings(crop) != crop_settings(init_crop):
        raise UserError(f"--init {c.init} was trained on crops {crop_settings(init_crop)}, but the shards "
                        f"were mined with {crop_settings(crop)} ({', '.join(map(str, runs))})")
    if c.val_shards:
        val_crop, val_runs = crop_for_shards(expand_shards(c.val_shards))
        if val_crop is not None and crop is not None and crop_settings(val_crop) != crop_settings(crop):
            log.warning("the validation shards were mined with crop settings %s, the training shards with %s",
                        crop_settings(val_crop), crop_settings(crop))
    return crop


# ---- validation ---------------------------------------------------------------------

@dataclass
class Validator:
    """Masked-region zero-shot accuracy over the validation shards' own vocabulary."""

    stream: PairStream
    text: torch.Tensor  # (V, D) template-ensemble embeddings of the validation vocabulary
    limit: int | None = None

    @torch.no_grad()
    def __call__(self, model: MaskPromptCLIP, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        top1 = top5 = n = 0
        text = self.text.to(device)
        k = min(5, text.shape[0])
        for batch in make_loader(self.stream, 0):
            if len(batch) == 0:
                continue
            with _autocast(device):
                emb = model.encode_image(batch.pixels.to(device), batch.masks.to(device))
            scores = emb.float() @ text.t()
            best = scores.topk(k, dim=-1).indices.cpu()
            labels = batch.labels[:, None]
            top1 += int((best[:, :1] == labels).any(dim=1).sum())
            top5 += int((best == labels).any(dim=1).sum())
            n += len(batch)
            if self.limit is not None and n >= self.limit:
                break
        model.train(was_training)
        return {"val_top1": top1 / max(n, 1), "val_top5": top5 / max(n, 1), "val_samples": n}


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def check_ground_truth_shards(urls: list[str], spec: str) -> None:
    """Validation shards must carry ground-truth classes: refuse those of a caption-noun run.

    The run folder of each local shard says how it was labelled (``run.json``,
    ``identity.labels``); shards outside a run folder are taken as they are.
    """
    for folder in sorted({Path(u).parent for u in urls if "://" not in u and not u.startswith("pipe:")}):
        run_file = folder / run_folder.RUN_FILE
        if not run_file.is_file():
            continue
        try:
            labels = (json.loads(run_file.read_bytes()).get("identity") or {}).get("labels")
        except (ValueError, AttributeError) as exc:
            raise UserError(f"{run_file} (of --val-shards) is damaged: {exc}") from exc
        if labels is not None and labels != "categories":
            raise UserError(
                f"--val-shards {spec!r}: {folder} was mined with --labels {labels}, so its nouns are "
                "caption guesses, not ground truth; mine validation shards with --proposals coco-gt --labels categories"
            )


def make_validator(c: TrainConfig, clip: LoadedClip) -> Validator | None:
    if not c.val_shards:
        return None
    urls = expand_shards(c.val_shards)
    check_ground_truth_shards(urls, c.val_shards)
    vocabulary = vocabulary_for_shards(urls)
    if not vocabulary:
        raise UserError(f"the validation shards {c.val_shards!r} hold no pairs")
    stream = PairStream(urls, vocabulary, clip.crop_config, c.batch_size, shuffle_buffer=0, seed=0)
    return Validator(stream, encode_texts(clip, vocabulary, MINING_TEMPLATES), c.val_limit)


# ---- the loop -----------------------------------------------------------------------

class _Progress:
    """tqdm bar with loss and samples/s (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, initial: int) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def update(self, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _skips_text(skips: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skips.items())) or "nothing skipped"


def _batches(loader_for_epoch, epoch: int, skip: int, stream: PairStream) -> Iterator[tuple[int, int, Batch]]:
    """(epoch, position after this item, batch) forever (or until the epochs run out), skipping
    the first ``skip`` items of the starting epoch."""
    while True:
        stream.set_epoch(epoch)
        position = 0
        produced = 0
        skips: dict[str, int] = {}
        for batch in loader_for_epoch():
            add_skips(skips, batch.skipped)
            if batch.gave_up:
                raise UserError(
                    f"no sample could be read from the training shards in {stream.max_read_attempts} attempts "
                    f"({_skips_text(skips)}): are they maskmine shards?"
                )
            position += 1
            if position <= skip:
                continue
            produced += len(batch)
            yield epoch, position, batch
        if produced == 0 and skip == 0:
            raise UserError(
                f"the training shards yielded no full batch in a whole epoch ({_skips_text(skips)}): no sample "
                "was readable, or each DataLoader worker had fewer usable samples than --batch-size "
                "(a worker drops its last partial batch)"
            )
        epoch, skip = epoch + 1, 0


@dataclass
class RunState:
    """Where a run stands: what ``train_state.pt`` records besides the optimizer, scheduler and RNG states."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch of the last batch consumed
    position: int = 0  # batches consumed in that epoch (what a resume skips)
    samples: int = 0  # crops consumed over the whole run
    skipped: dict[str, int] = field(default_factory=dict)  # over the whole run
    stream_seed: int = 0  # the data stream's seed (a resumed --resample run draws a fresh one)


class Trainer:
    """One training run: the model, its optimizer and schedule, the data stream, the validator,
    ``metrics.jsonl`` and the run folder, built from a config :func:`check_config` accepted.

    Building it prepares ``OUT`` (``train.json``; a resume restores the newest checkpoint's
    weights, optimizer, scheduler, RNG states and data position). Then :meth:`step` takes
    the batches of :meth:`batches`, and :meth:`validate`, :meth:`save` and :meth:`export`
    write what their names say at the current step (:func:`train` runs the loop).
    """

    def __init__(self, c: TrainConfig) -> None:
        init_crop = resolve_init(c)
        self.started = time.perf_counter()
        self.config = c
        self.device = resolve_device(c.clip.device)
        urls = expand_shards(c.shards)
        crop = training_crop(c, urls, init_crop)
        self.vocabulary = resolve_vocabulary(c.vocabulary, urls)
        self.total_steps = total_steps(c, urls)
        resume_from = prepare_out_dir(c)
        self.out = Path(c.out)

        clip = replace(c.clip, crop=crop or CropConfig()).load()
        base_fingerprint = ckpt.weights_fingerprint(clip.model)
        torch.manual_seed(c.seed)  # the prompts' initialisation
        try:
            self.model = MaskPromptCLIP(clip.model, mode=c.mode, prompt_depth=c.prompt_depth)
        except (ValueError, TypeError) as exc:
            raise UserError(f"--mode {c.mode} on {c.clip.model}: {exc}") from exc
        self.model.to(self.device).train()
        groups = optimizer_param_groups(self.model, c.lr, c.weight_decay, c.prompt_lr)
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        schedule_steps = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, c.warmup_steps, schedule_steps)
        )
        templates = CLIP_LOSS_TEMPLATE if c.loss == "clip" else MINING_TEMPLATES
        # text tower locked: embedded once; cloned out of inference mode so autograd may use it
        self.text_table = encode_texts(clip, self.vocabulary, templates).clone().to(self.device)
        self.validator = make_validator(c, clip)

        self.state = RunState(stream_seed=c.seed)
        if resume_from is not None:
            self._resume(resume_from)
        self.metrics_path = self.out / run_folder.TRAIN_METRICS_FILE
        _truncate_metrics(self.metrics_path, self.state.step)
        self.stream = PairStream(  # partial=False: drop_last, as OVSeg's training loaders
            urls, self.vocabulary, clip.crop_config, c.batch_size, c.shuffle_buffer, c.resample,
            self.state.stream_seed, partial=False,
        )
        self.export_config = ckpt.ExportConfig(
            clip_model=c.clip.model,
            clip_pretrained=clip.pretrained,  # the resolved tag, not the CLI's None default
            mode=c.mode,
            prompt_depth=self.model.prompt_depth,
            step=self.state.step,
            crop=asdict(clip.crop_config),
            base_fingerprint=base_fingerprint,
            train=c.settings(),
        )
        self.losses: list[float] = []  # one per optimizer step of this invocation
        self.validations: list[dict] = []
        self.progress = _Progress(False, self.total_steps, self.state.step)  # see start()
        self._micro, self._accum_loss, self._step_samples = 0, 0.0, 0
        self._tick = time.perf_counter()

    def _resume(self, folder: Path) -> None:
        """Restore a checkpoint: weights, optimizer, scheduler, run state, then the RNG states."""
        c = self.config
        saved = torch.load(folder / ckpt.TRAIN_STATE_FILE, map_location="cpu", weights_only=False)
        _load_weights(self.model, folder, self.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        state = RunState(step=saved["step"], epoch=saved["epoch"], position=saved["position"],
                         samples=saved["samples"], skipped=dict(saved["skipped"]), stream_seed=saved["stream_seed"])
        if c.resample:  # a fresh infinite stream (see the module docstring)
            state.stream_seed, state.epoch, state.position = c.seed + 1_000_003 * state.step, 0, 0
        self.state = state
        set_rng_state(saved["rng"])
        log.info("resuming %s from step %d (epoch %d, batch %d)", self.out, state.step, state.epoch, state.position)

    def batches(self) -> Iterator[tuple[int, int, Batch]]:
        """(epoch, position after this batch, batch) from the run state's epoch and position on
        (see :func:`_batches`); close it to shut the DataLoader's workers down."""
        c, device = self.config, self.device
        return _batches(lambda: make_loader(self.stream, c.workers, pin_memory=device.type == "cuda"),
                        self.state.epoch, self.state.position, self.stream)

    def start(self, progress: bool) -> None:
        """Open the progress bar (when ``progress``) and start the samples/s clock: call it
        right before the first batch is drawn."""
        self.progress = _Progress(progress, self.total_steps, self.state.step)
        self._tick = time.perf_counter()

    def step(self, batch: Batch) -> float | None:
        """Count the batch's skips and add its gradients; every ``accum_steps``-th non-empty
        batch also steps the optimizer and the schedule, appends the step's line to
        ``metrics.jsonl``, advances the progress bar and returns the step's loss (the sum of
        its micro-batches' losses over ``accum_steps``). None for the other batches: an empty
        one carries only skip counts."""
        c, state = self.config, self.state
        add_skips(state.skipped, batch.skipped)
        if len(batch) == 0:
            return None
        loss = batch_loss(c.loss, self.model, batch, self.text_table, self.device) / c.accum_steps
        loss.backward()
        self._accum_loss += float(loss.detach())
        self._step_samples += len(batch)
        self._micro += 1
        if self._micro < c.accum_steps:
            return None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lrs = dict(zip((g["name"] for g in self.optimizer.param_groups), self.scheduler.get_last_lr()))
        lr = lrs.get("decay", lrs.get("no_decay", lrs.get("prompts")))
        self.scheduler.step()
        state.step += 1
        state.samples += self._step_samples
        now = time.perf_counter()
        rate = self._step_samples / max(now - self._tick, 1e-9)
        loss_value = self._accum_loss
        self.losses.append(loss_value)
        _append_metrics(self.metrics_path, {
            "step": state.step, "epoch": state.epoch, "loss": loss_value, "lr": lr,
            **({"prompt_lr": lrs["prompts"]} if "prompts" in lrs and lr != lrs["prompts"] else {}),
            "samples": state.samples,
            "samples_per_s": round(rate, 2), "skipped": dict(state.skipped),
        })
        self.progress.update(loss_value, rate)
        self._micro, self._accum_loss, self._step_samples, self._tick = 0, 0.0, 0, now
        return loss_value

    def validate(self) -> dict | None:
        """Validate at the current step and log the record (``metrics.jsonl``); None without ``--val-shards``."""
        if self.validator is None:
            return None
        step = self.state.step
        record = {"step": step, **self.validator(self.model, self.device)}
        self.validations.append(record)
        _append_metrics(self.metrics_path, record)
        log.info("step %d: val top-1 %.3f top-5 %.3f (%d regions)", step, record["val_top1"],
                 record["val_top5"], record["val_samples"])
        return record

    def save(self) -> Path:
        """Write the checkpoint of the current step (``checkpoints/step-N``) and return its folder."""
        state = self.state
        self.export_config.step = state.step
        return ckpt.write_checkpoint(
            self.out, self.model, self.export_config, self.vocabulary,
            {
                "step": state.step, "epoch": state.epoch, "position": state.position, "samples": state.samples,
                "skipped": state.skipped, "stream_seed": state.stream_seed, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
            },
            keep=self.config.keep_checkpoints,
        )

    def saved(self) -> bool:
        """Whether the run folder's newest checkpoint is of the current step."""
        latest = ckpt.latest_checkpoint(self.out)
        return latest is not None and latest.name == ckpt.STEP_NAME.format(self.state.step)

    def export(self) -> None:
        """Write the adapted model of the current step into the run folder itself (the final export)."""
        self.export_config.step = self.state.step
        ckpt.write_export(self.out, self.model, self.export_config, self.vocabulary)

    def close(self) -> None:
        self.progress.close()

    def result(self, finished: bool) -> TrainResult:
        state = self.state
        return TrainResult(
            out=self.out, step=state.step, total_steps=self.total_steps, losses=self.losses,
            skipped=state.skipped, samples=state.samples, validations=self.validations,
            seconds=time.perf_counter() - self.started, finished=finished, model=self.model.eval(),
        )


def train(c: TrainConfig) -> TrainResult:
    """Run (or resume) a finetuning job; see the module docstring."""
    check_config(c)
    trainer = Trainer(c)
    if trainer.state.step == 0:
        trainer.validate()
    trainer.start(c.progress)
    # --steps ends the run at that step; --epochs alone ends it when the epochs are done
    # (the schedule's length is then only estimated from the manifests).
    stop_at: float = math.inf if c.stop_after is None else c.stop_after
    if c.steps is not None:
        stop_at = min(stop_at, c.steps)
    finished = c.steps is not None and trainer.state.step >= c.steps
    max_epochs = c.epochs if c.steps is None else None
    data = trainer.batches()
    try:
        while trainer.state.step < stop_at:
            try:
                epoch, position, batch = next(data)
            except StopIteration:
                break
            if max_epochs is not None and epoch >= max_epochs:
                finished = True
                break
            trainer.state.epoch, trainer.state.position = epoch, position
            if trainer.step(batch) is None:
                continue
            step = trainer.state.step
            if step % c.val_every == 0 or step == c.steps:
                trainer.validate()
            if step % c.save_every == 0 or step == stop_at:
                trainer.save()
        step = trainer.state.step
        finished = finished or (c.steps is not None and step >= c.steps)
        if finished and step % c.val_every != 0 and step != c.steps:
            trainer.validate()  # the epochs ran out between validations
        if finished and not trainer.saved():
            trainer.save()
    finally:
        data.close()  # shuts the DataLoader's workers down
        trainer.close()
    if finished:
        trainer.export()
    if any(trainer.state.skipped.values()):
        log.warning("skipped samples: %s", trainer.state.skipped)
    return trainer.result(finished)


def batch_loss(kind: LossKind, model: MaskPromptCLIP, batch: Batch, text_table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The ``--loss`` of one batch: its masked crops through ``model`` against the rows of
    ``text_table`` (the vocabulary's text embeddings) its labels name."""
    labels = batch.labels.to(device, non_blocking=True)
    with _autocast(device):
        emb = model.encode_image(batch.pixels.to(device, non_blocking=True), batch.masks.to(device, non_blocking=True))
    emb = emb.float()
    if kind == "clip":
        return clip_contrastive_loss(emb, text_table[labels], model.logit_scale, labels)
    if kind == "clip-plain":  # OVSeg's ClipLoss: every other row of the batch is a negative
        return clip_contrastive_loss(emb, text_table[labels], model.logit_scale,
                                     torch.arange(len(labels), device=labels.device))
    return vocab_cross_entropy(emb, text_table, model.logit_scale, labels)


def _load_weights(model: MaskPromptCLIP, folder: Path, device: torch.device) -> None:
    """Put a checkpoint's trained weights into the freshly built model."""
    if trains_clip(model.mode):
        state = torch.load(folder / ckpt.MODEL_FILE, map_location=device, weights_only=True)
        model.clip.load_state_dict(state)
    if model.uses_prompts:
        model.load_prompt_state_dict(torch.load(folder / ckpt.PROMPTS_FILE, map_location="cpu", weights_only=True))
