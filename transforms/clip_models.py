"""One factory for every CLIP maskmine uses, and the text side of matching.

``--clip-model`` is an open_clip model name (``ViT-B-16``, ``ViT-L-14``...) or
one of maskmine's own configs (``maskmine-tiny`` for tests, ``sample`` for the
small CLIP trained on the generated scene set). ``--clip-pretrained`` is an
open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``...), a checkpoint
file, or ``none`` for random initialisation.

Activation: OpenAI trained its CLIPs with QuickGELU, and open_clip 3.3 builds
``ViT-B-16``/``ViT-L-14`` with ``nn.GELU`` even with ``pretrained="openai"`` (it only
warns). OVSeg runs them with QuickGELU (``--force-quick-gelu`` in every
open_clip_training script, and OpenAI's own CLIP code in open_vocab_seg), so
:func:`resolve_activation` decides it once for every command: QuickGELU where the
weights were trained with it (the pretrained tag's ``quick_gelu``, a ``-quickgelu``
config, or the ``clip_activation`` a maskmine export records next to its
``model.pt``), GELU otherwise; ``--clip-activation`` overrides it. The built
model's activation is :attr:`LoadedClip.activation`, recorded in run.json and in
training exports.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence, get_args

import open_clip
import torch

from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.ranges import check_choice
from maskmine.transforms.masked_crop import CropConfig
from maskmine.transforms.sample_models import SAMPLE_CHECKPOINT, SAMPLE_MODEL_NAME

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
MINING_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a cropped photo of a {}.",
    "there is a {} in the scene.",
)
_configs_registered = False
Activation = Literal["quick_gelu", "gelu"]  # what a built CLIP computes
ActivationChoice = Literal["auto", "quick_gelu", "gelu"]  # what --clip-activation asks for
ACTIVATION_CHOICES: tuple[str, ...] = get_args(ActivationChoice)
EXPORT_CONFIG = "config.json"  # a maskmine export's record, next to its model.pt (finetune/checkpoint.py)


def register_configs() -> None:
    """Make maskmine's model configs visible to open_clip (idempotent)."""
    global _configs_registered
    if not _configs_registered:
        open_clip.add_model_config(CONFIG_DIR)
        _configs_registered = True


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenizer: object
    crop_config: CropConfig
    name: str
    pretrained: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    activation: Activation = "gelu"  # of the built model's transformer MLPs

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to load, where, and how its crops are cut: picklable, so Beam workers load their own.

    ``pretrained=None`` is the model's default, as when ``--clip-pretrained`` is
    omitted (see :func:`resolve_model`). Every command (mine, train, eval, demo)
    describes its CLIP with one; :meth:`load` is the "load" half of a Beam
    ``ModelHandler``, the returned :class:`LoadedClip` runs on batches of crops
    (:func:`encode_crops`) and names (:func:`encode_texts`).
    """

    model: str = "ViT-B-16"
    pretrained: str | None = None
    device: str = "auto"
    crop: CropConfig = CropConfig()
    activation: ActivationChoice = "auto"  # see resolve_activation

    def load(self) -> "LoadedClip":
        from maskmine.transforms.devices import resolve_device

        return load_clip(self.model, self.pretrained, resolve_device(self.device), self.crop, self.activation)

    def resolved_activation(self) -> Activation:
        """The activation :meth:`load` will build (no model is built): what run records compare."""
        model_name, pretrained_arg, _ = resolve_model(self.model, self.pretrained)
        return resolve_activation(model_name, pretrained_arg, self.activation)


def _recorded_activation(weights: Path) -> Activation | None:
    """``clip_activation`` of the maskmine export whose ``model.pt`` is ``weights`` (None: not an export,
    or one written before the field existed: those were built with open_clip's config as it is)."""
    record = weights.parent / EXPORT_CONFIG
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("maskmine-adapted-clip"):
        return None
    value = data.get("clip_activation")
    return value if value in get_args(Activation) else "gelu"


def resolve_activation(model_name: str, pretrained_arg: str | None,
                       requested: ActivationChoice = "auto") -> Activation:
    """QuickGELU or GELU for open_clip model ``model_name`` with weights ``pretrained_arg``.

    ``requested`` "quick_gelu" forces QuickGELU; "gelu" forces nothing (open_clip's config
    as it is: GELU unless it is a ``-quickgelu`` config); "auto" is QuickGELU when the config
    says so, when the pretrained tag's open_clip entry says ``quick_gelu`` (every ``openai``
    tag), or when the file is a maskmine export's model.pt that records it, else GELU.
    """
    register_configs()
    check_choice("clip_activation", requested, ACTIVATION_CHOICES)
    config = open_clip.get_model_config(model_name) or {}
    if requested == "quick_gelu" or config.get("quick_gelu"):
        return "quick_gelu"
    if requested == "gelu" or pretrained_arg is None:
        return "gelu"
    if Path(pretrained_arg).is_file():
        if Path(pretrained_arg).resolve() == SAMPLE_CHECKPOINT.resolve():
            return "gelu"  # maskmine's own sample CLIP, trained with its config's GELU
        recorded = _recorded_activation(Path(pretrained_arg))
        if recorded is None:
            log.warning("%s records no activation: building %s with GELU as its config says; give "
                        "`clip_activation` quick_gelu for weights trained with QuickGELU (OpenAI's)",
                        pretrained_arg, model_name)
        return recorded or "gelu"
    from open_clip.pretrained import get_pretrained_cfg

    return "quick_gelu" if get_pretrained_cfg(model_name, pretrained_arg).get("quick_gelu") else "gelu"


def built_activation(model: torch.nn.Module) -> Activation:
    """What a built open_clip model computes: QuickGELU if any of its modules is open_clip's QuickGELU."""
    from open_clip.transformer import QuickGELU

    return "quick_gelu" if any(isinstance(m, QuickGELU) for m in model.modules()) else "gelu"


def default_pretrained(name: str) -> str:
    """What an omitted ``--clip-pretrained`` means: OpenAI's weights where open_clip has them."""
    register_configs()
    tags = {t for m, t in open_clip.list_pretrained() if m == name}
    return "openai" if "openai" in tags else "none"


def resolve_model(name: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """Map the CLI's (model, pretrained) to open_clip's (name, pretrained arg, recorded tag).

    ``pretrained=None`` is the model's default: the committed checkpoint for
    ``sample``, ``openai`` where open_clip has OpenAI weights, random otherwise.
    """
    if name == "sample":
        if pretrained not in (None, "", "sample"):
            return SAMPLE_MODEL_NAME, _pretrained_arg(pretrained), pretrained
        if not SAMPLE_CHECKPOINT.is_file():
            raise UserError(
                f"the sample CLIP checkpoint {SAMPLE_CHECKPOINT} is missing: "
                "run `maskmine pretrain-sample-clip` to train it"
            )
        return SAMPLE_MODEL_NAME, str(SAMPLE_CHECKPOINT), "sample"
    tag = default_pretrained(name) if pretrained is None else (pretrained or "none")
    return name, _pretrained_arg(tag), tag


def check_clip(name: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """Resolve and validate a CLIP choice without building it (cheap: run it before any work)."""
    register_configs()
    model_name, pretrained_arg, tag = resolve_model(name, pretrained)
    if model_name not in open_clip.list_models() and not model_name.startswith(("hf-hub:", "local-dir:")):
        raise SettingError(
            "clip_model", f"{name!r} is unknown: use an open_clip model name "
            "(see open_clip.list_models()), 'sample' or 'maskmine-tiny'"
        )
    if pretrained_arg is not None and not Path(pretrained_arg).exists():
        known = {t for _, t in open_clip.list_pretrained() if _ == model_name}
        if pretrained_arg not in known:
            raise SettingError(
                "clip_pretrained", f"{pretrained_arg!r} is neither a file nor a pretrained tag "
                f"of {model_name} (known tags: {', '.join(sorted(known)) or 'none'})"
            )
    return model_name, pretrained_arg, tag


def _pretrained_arg(tag: str) -> str | None:
    return None if tag.lower() in ("none", "random", "") else tag


def load_clip(
    name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    device: str | torch.device = "cpu",
    crop: CropConfig | None = None,
    activation: ActivationChoice = "auto",
) -> LoadedClip:
    """Build an open_clip model in eval mode with its tokenizer, crop geometry and activation."""
    model_name, pretrained_arg, tag = check_clip(name, pretrained)
    wanted = resolve_activation(model_name, pretrained_arg, activation)
    try:
        # Random initialisation is seeded so every worker builds the same model:
        # reruns and multi-process runs must give identical shards.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.create_model(model_name, pretrained=pretrained_arg, device=device,
                                           force_quick_gelu=wanted == "quick_gelu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"could not load CLIP {model_name} with pretrained={tag!r}: {exc}") from exc
    built = built_activation(model)
    if built != wanted:  # open_clip changed how it builds activations: never run another network silently
        raise UserError(f"CLIP {model_name} was built with {built}, not the {wanted} its weights need")
    model.eval()
    visual = model.visual
    size = visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(getattr(visual, "image_mean", None) or CropConfig.mean)
    std = tuple(getattr(visual, "image_std", None) or CropConfig.std)
    # the model's input size and normalisation, every other field as asked (resample too: a run mined
    # with --crop-resample pil records it, and its crops, training's and eval's must be cut alike)
    crop_config = replace(crop or CropConfig(), input_size=size, mean=mean, std=std)
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        crop_config=crop_config,
        name=name,
        pretrained=tag,
        device=torch.device(device),
        activation=built,
    )


@torch.inference_mode()
def encode_texts(
    clip: LoadedClip, names: Sequence[str], templates: Sequence[str] = MINING_TEMPLATES,
    batch_size: int = 256,
) -> torch.Tensor:
    """Template-ensemble text embeddings ``(N, E)``, L2-normalised.

    Each template's embedding is normalised, the templates are averaged, and
    the mean is normalised again (as CLIP's zero-shot recipe does).
    """
    if not names:
        raise ValueError("encode_texts needs at least one name")
    prompts = [t.format(n) for n in names for t in templates]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = clip.tokenizer(prompts[start : start + batch_size]).to(clip.device)
        emb = clip.model.encode_text(tokens).float()
        chunks.append(torch.nn.functional.normalize(emb, dim=-1))
    emb = torch.cat(chunks).view(len(names), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1).cpu()


class TextEmbeddingCache:
    """Noun → text embedding, computed once per noun per worker.

    The vocabulary of a mining run is open (nouns appear as captions are
    read), so embeddings are computed lazily in batches of the missing nouns.
    """

    def __init__(self, clip: LoadedClip, templates: Sequence[str] = MINING_TEMPLATES) -> None:
        self.clip = clip
        self.templates = tuple(templates)
        self._cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, names: Sequence[str]) -> torch.Tensor:
        """Embeddings ``(len(names), E)`` of a non-empty list of names.

        Each noun is encoded in a batch of its own: floating-point results
        depend on batch composition, and a noun's embedding must not depend
        on which other nouns happened to arrive with it (identical shards
        across runs and runners).
        """
        for name in dict.fromkeys(names):
            if name not in self._cache:
                self._cache[name] = encode_texts(self.clip, [name], self.templates)[0]
        return torch.stack([self._cache[n] for n in names])


@torch.inference_mode()
def encode_crops(clip: LoadedClip, batch: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Normalised image embeddings of normalised crops ``(N, 3, S, S)``."""
    out = []
    for start in range(0, batch.shape[0], batch_size):
        chunk = batch[start : start + batch_size].to(clip.device)
        out.append(torch.nn.functional.normalize(clip.model.encode_image(chunk).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)
