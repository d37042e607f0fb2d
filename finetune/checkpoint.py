"""The on-disk format of an adapted CLIP, shared by training (writer) and loading.

An *export folder* holds one adapted model:

* ``model.pt``     the whole CLIP state_dict (modes ``full`` and ``full+prompt``),
                   a plain ``{name: tensor}`` file, so
                   ``open_clip.create_model_and_transforms(name, pretrained="model.pt")`` loads it;
* ``prompts.pt``   just the mask prompts ``{"mask_prompts": (D, N, E)}`` (modes
                   ``prompt`` and ``full+prompt``): a few MB, the frozen CLIP is
                   rebuilt from ``clip_pretrained``;
* ``vocabulary.json`` the class vocabulary with stable indices;
* ``config.json``  written LAST: model name, base weights, mode, prompt depth,
                   step, crop geometry and the training settings.

A training checkpoint (``OUT/checkpoints/step-NNNNNNNN``) is an export folder
plus ``train_state.pt`` (optimizer, scheduler, RNG and data position). Every
folder is written under a temporary name and renamed into place, so a killed
job never leaves a half-written checkpoint under a final name.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from maskmine.finetune.model import MaskPromptCLIP, Mode, trains_clip
from maskmine.transforms.atomic import atomic_torch_save, atomic_write, replacing_folder
from maskmine.transforms.masked_crop import LEGACY_RESAMPLE, CropConfig

FORMAT = "maskmine-adapted-clip/1"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocabulary.json"
MODEL_FILE = "model.pt"
PROMPTS_FILE = "prompts.pt"
TRAIN_STATE_FILE = "train_state.pt"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"  # inside CHECKPOINT_DIR: the name of the newest complete checkpoint
STEP_NAME = "step-{:08d}"


@dataclass
class ExportConfig:
    """What ``config.json`` holds: enough to rebuild the adapted model."""

    clip_model: str
    clip_pretrained: str  # the base weights the training started from
    mode: Mode
    prompt_depth: int
    step: int
    crop: dict[str, Any]
    base_fingerprint: str  # of the base CLIP: a prompts file is only valid on the weights it was trained on
    train: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    # "quick_gelu" or "gelu": how the CLIP was built; None in exports written before it was recorded
    # (built with open_clip's config as it is, which "gelu" rebuilds)
    clip_activation: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExportConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def crop_config(self) -> CropConfig:
        crop = {"resample": LEGACY_RESAMPLE, **self.crop}  # exports without it were cut by the PIL crop
        crop["mean"] = tuple(crop["mean"])
        crop["std"] = tuple(crop["std"])
        return CropConfig(**crop)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A cheap, device-independent hash of a module's weights (a strided sample of every tensor)."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        flat = value.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step].to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def write_export(
    folder: Path, model: MaskPromptCLIP, config: ExportConfig, vocabulary: Sequence[str]
) -> None:
    """Write (or overwrite) an export folder in place; config.json goes last."""
    folder.mkdir(parents=True, exist_ok=True)
    if trains_clip(model.mode):
        atomic_torch_save(cpu_state_dict(model.clip), folder / MODEL_FILE)
    else:
        (folder / MODEL_FILE).unlink(missing_ok=True)
    if model.uses_prompts:
        atomic_torch_save(model.prompt_state_dict(), folder / PROMPTS_FILE)
    else:
        (folder / PROMPTS_FILE).unlink(missing_ok=True)
    from maskmine.finetune.vocab import write_vocabulary  # local: vocab imports pyarrow lazily too

    write_vocabulary(folder / VOCAB_FILE, vocabulary)
    atomic_write(folder / CONFIG_FILE, json.dumps(asdict(config), indent=1, sort_keys=True))


def write_checkpoint(
    out_dir: Path,
    model: MaskPromptCLIP,
    config: ExportConfig,
    vocabulary: Sequence[str],
    train_state: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``OUT/checkpoints/step-N`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    root = out_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = STEP_NAME.format(config.step)
    final = root / name
    with replacing_folder(final) as tmp:
        write_export(tmp, model, config, vocabulary)
        torch.save(dict(train_state), tmp / TRAIN_STATE_FILE)
    atomic_write(root / LATEST_FILE, name + "\n")
    if keep > 0:
        steps = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in steps[:-keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a training run, if any."""
    pointer = out_dir / CHECKPOINT_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    folder = out_dir / CHECKPOINT_DIR / pointer.read_text().strip()
    return folder if (folder / CONFIG_FILE).is_file() else None


def read_export_config(folder: Path) -> ExportConfig:
    path = folder / CONFIG_FILE
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a maskmine adapted-CLIP config (format {data.get('format')!r})")
    return ExportConfig.from_dict(data)


def resolve_export(path: str | Path) -> Path:
    """An export folder from: the folder itself, a training run folder, or a file inside a folder."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if (path / CONFIG_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    raise FileNotFoundError(f"{path} holds no adapted CLIP ({CONFIG_FILE} or {CHECKPOINT_DIR}/{LATEST_FILE})")
