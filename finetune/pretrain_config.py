"""The settings both sample pretrainers take (``pretrain-sample-clip`` and ``pretrain-sample-proposals``).

Each trainer's config subclasses :class:`SamplePretrainConfig`, giving its own
defaults (checkpoint, schedule, val images) and adding its model's settings;
``pipelines/cli_options.add_pretrain_arguments`` makes the flags they share.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from maskmine.finetune.optim import lr_factor


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
