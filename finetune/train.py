"""The finetuning loop: mined shards -> CLIP adapted to masked crops (OVSeg recipe).

``train(TrainConfig) -> TrainResult`` builds a :class:`Trainer` (model, optimizer,
schedule, data stream, validator, run folder) and feeds it the stream's batches,
validating and saving at their intervals. The settings and their checks are
:mod:`maskmine.finetune.train_config`'s, the validation :mod:`maskmine.finetune.validation`'s. One optimizer step = ``accum_steps``
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
from maskmine.finetune.losses import LossKind, clip_contrastive_loss, vocab_cross_entropy
from maskmine.finetune.model import MaskPromptCLIP, trains_clip, training_autocast
from maskmine.finetune.optim import ADAM_BETAS, ADAM_EPS, lr_factor, optimizer_param_groups
from maskmine.finetune.train_config import (
    TrainConfig,
    check_config,
    prepare_out_dir,
    resolve_init,
    check_finished,
    total_steps,
    training_crop,
)
from maskmine.finetune.validation import make_validator
from maskmine.finetune.shard_context import read_context
from maskmine.finetune.vocab import resolve_vocabulary
from maskmine.transforms import run_folder
from maskmine.transforms.atomic import atomic_write
from maskmine.transforms.clip_models import MINING_TEMPLATES, encode_texts
from maskmine.transforms.devices import resolve_device
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.masked_crop import CropConfig
from maskmine.transforms.torch_state import own_rng

log = logging.getLogger(__name__)

CLIP_LOSS_TEMPLATE = ("a photo of a {}.",)
# --loss clip-plain: OVSeg's text of a crop is its CSV caption tokenized as it is, no template
# (open_clip_training/src/training/data.py lines 49-52, the template lines commented out).
OVSEG_TEXT_TEMPLATE = ("{}",)
LOSS_TEMPLATES = {"clip": CLIP_LOSS_TEMPLATE, "clip-plain": OVSEG_TEXT_TEMPLATE, "vocab": MINING_TEMPLATES}
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
            raise SettingError(
                "shards", f"yielded no full batch in a whole epoch ({_skips_text(skips)}): no sample was "
                "readable, or each DataLoader worker had fewer usable samples than `batch_size` "
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
        context = read_context(expand_shards(c.shards))  # run.json, manifests: beside the shards, by their scheme
        urls = check_finished(c, context)
        crop = training_crop(c, context, init_crop)
        self.vocabulary = resolve_vocabulary(c.vocabulary, urls, context)
        self.total_steps = total_steps(c, urls, context)
        resume_from = prepare_out_dir(c)
        self.out = Path(c.out)

        clip = replace(c.clip, crop=crop or CropConfig()).load()
        base_fingerprint = ckpt.weights_fingerprint(clip.model)
        torch.manual_seed(c.seed)  # the prompts' initialisation
        try:
            self.model = MaskPromptCLIP(clip.model, mode=c.mode, prompt_depth=c.prompt_depth,
                                        train_logit_scale=c.train_logit_scale)
        except (ValueError, TypeError) as exc:
            raise SettingError("mode", f"{c.mode} on {c.clip.model}: {exc}") from exc
        self.model.to(self.device).train()
        groups = optimizer_param_groups(self.model, c.lr, c.weight_decay, c.prompt_lr)
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        schedule_steps = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, c.warmup_steps, schedule_steps)
        )
        templates = LOSS_TEMPLATES[c.loss]
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
            self.state.stream_seed, partial=False, augment_scale=c.augment_scale,
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
            clip_activation=clip.activation,
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
        if c.train_logit_scale:
            self.model.clamp_logit_scale()  # OVSeg's clamp at ln(100) after every step
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
    # The Trainer seeds torch's global RNG (the prompts' initialisation, and every draw after it):
    # the caller's RNG state comes back when the job ends, so code run after it in this process
    # does not depend on whether a training job ran before it.
    with own_rng(device=resolve_device(c.clip.device)):
        return _train(c)


def _train(c: TrainConfig) -> TrainResult:
    """:func:`train` inside its own RNG state."""
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
    with training_autocast(device):
        emb = model.encode_image(batch.pixels.to(device, non_blocking=True), batch.masks.to(device, non_blocking=True))
    emb = emb.float()
    if kind == "clip":
        return clip_contrastive_loss(emb, text_table[labels], model.logit_scale, labels)
    if kind == "clip-plain":  # OVSeg's ClipLoss (open_clip/loss.py 88-121): every other row is a negative
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
