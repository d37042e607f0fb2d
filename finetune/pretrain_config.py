"""The settings both sample pretrainers take (``pretrain-sample-clip`` and ``pretrain-sample-proposals``).

Each trainer's config subclasses :class:`SamplePretrainConfig`, giving its own
defaults (checkpoint, schedule, val images) and adding its model's settings;
``pipelines/cli_options.add_pretrain_arguments`` makes the flags they share. Both
configs are declared here, torch-free, so the commands' parsers take their defaults
without importing the trainers (which need torch).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from maskmine.transforms import ranges
from maskmine.transforms.sample_models import SAMPLE_CHECKPOINT, SAMPLE_PROPOSAL_DIR


@dataclass(frozen=True, kw_only=True)
class PretrainSchedule:
    """AdamW for ``steps`` batches of ``batch_size``: linear warmup over ``warmup`` steps to ``lr``,
    then cosine to 0 (:func:`maskmine.finetune.optim.lr_factor`)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup: int

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based)."""
        from maskmine.finetune.optim import lr_factor  # the optimizer module needs torch

        return lr_factor(step, self.warmup, self.steps, peak=self.lr)


@dataclass(frozen=True, kw_only=True)
class SamplePretrainConfig:
    """A pretrainer's run: its data, its checkpoint, its schedule, its seed and threads, and its val check."""

    data: str  # sample set root (maskmine sample --out)
    out: str  # the checkpoint to write (its JSON record goes beside it)
    schedule: PretrainSchedule
    seed: int = 0  # initialisation and batches (with threads, results are deterministic)
    threads: int = 1  # torch CPU threads
    eval_images: int  # val images for the record's metrics (0: skip)

    def as_record(self) -> dict[str, Any]:
        """The settings as the JSON record beside the checkpoint lists them: one flat dict, the schedule's
        fields among the others (as records written before the schedule was its own dataclass)."""
        record: dict[str, Any] = {}
        for name, value in asdict(self).items():
            record.update(value if name == "schedule" else {name: value})
        return record


CONTRASTIVE_BATCH = ranges.Range(int, lo=2)  # a contrastive batch needs another image as the negative


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(SamplePretrainConfig):
    """``pretrain-sample-clip`` (:mod:`maskmine.finetune.pretrain_sample`)."""

    out: str = str(SAMPLE_CHECKPOINT)
    schedule: PretrainSchedule = PretrainSchedule(steps=1000, batch_size=128, lr=1e-3, warmup=40)
    eval_images: int = 300  # val images for the sanity metrics
    jitter: int = 6  # max translation (pixels at model size) of the random crop


@dataclass(frozen=True, kw_only=True)
class ProposalPretrainConfig(SamplePretrainConfig):
    """``pretrain-sample-proposals`` (:mod:`maskmine.finetune.pretrain_proposals`)."""

    out: str = str(SAMPLE_PROPOSAL_DIR)
    schedule: PretrainSchedule = PretrainSchedule(steps=800, batch_size=16, lr=5e-4, warmup=50)
    eval_images: int = 100  # val images for the recall record
    num_queries: int = 50
