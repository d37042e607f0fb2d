"""Class-agnostic proposals from MaskFormer / Mask2Former (Hugging Face ``transformers``).

OVSeg's first stage: a mask transformer's queries are used as class-agnostic
regions. The class head only tells us how likely a query is an object at all
(``1 - p(no-object)``); which COCO class it thinks it is does not matter here.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.factory import (
    DEFAULT_MASKFORMER_CHECKPOINT,
    SAMPLE_PROPOSAL_CHECKPOINT,
    SAMPLE_PROPOSAL_DIR,
)
from maskmine.transforms.proposals.base import ModelProposals, ProposalFilter, check_images
from maskmine.transforms.devices import autocast_dtype
from maskmine.transforms.records import ImageRecord, ProposalSet
from maskmine.transforms.torch_state import own_rng

DEFAULT_CHECKPOINT = DEFAULT_MASKFORMER_CHECKPOINT  # kept in factory.py so the CLIs name it without importing torch
TINY_CHECKPOINT = "maskmine-tiny"  # random weights, for tests and dry runs only


def objectness_from_class_logits(class_logits: torch.Tensor) -> torch.Tensor:
    """``1 - softmax(logits)[..., -1]``: the last class is "no object" in both models."""
    return 1.0 - class_logits.float().softmax(dim=-1)[..., -1]


def valid_region(pixel_mask: torch.Tensor | None, padded_hw: tuple[int, int]) -> tuple[int, int]:
    """Height and width of the resized image inside the padded input.

    The MaskFormer/Mask2Former processors resize each image, then pad it at the
    bottom and right to the batch's largest size; ``pixel_mask`` is 1 on the
    image and 0 on the padding.
    """
    if pixel_mask is None:
        return padded_hw
    rows = int(pixel_mask.any(dim=1).sum())
    cols = int(pixel_mask.any(dim=0).sum())
    return rows, cols


def masks_to_image(
    mask_logits: torch.Tensor,
    padded_hw: tuple[int, int],
    valid_hw: tuple[int, int],
    image_hw: tuple[int, int],
    threshold: float | None = 0.5,
    chunk: int = 32,
) -> torch.Tensor:
    """``(Q, h, w)`` mask logits at the model's stride -> ``(Q, H, W)`` bool at the image size.

    Upsample to the padded input, cut off the padding, resize to the original
    image, then binarise ``sigmoid > threshold`` (strictly, as OVSeg's ``mask_pred > mask_thr``
    and ``masked_crop.binarize``). Queries go in chunks so a
    100-query model on a large image does not need all masks in float at once.
    ``threshold=None`` returns the soft sigmoid probabilities (float32) instead,
    what OVSeg's semantic inference sums (eval).
    """
    q = mask_logits.shape[0]
    dtype = torch.bool if threshold is not None else torch.float32
    out = torch.zeros((q, *image_hw), dtype=dtype, device=mask_logits.device)
    vh, vw = valid_hw
    for start in range(0, q, chunk):
        part = mask_logits[start : start + chunk].float()[None]
        part = F.interpolate(part, size=padded_hw, mode="bilinear", align_corners=False)
        part = part[:, :, :vh, :vw]
        part = F.interpolate(part, size=image_hw, mode="bilinear", align_corners=False)[0]
        out[start : start + chunk] = part.sigmoid() if threshold is None else part.sigmoid() > threshold
    return out


def swin_mask2former_config(
    width: int,
    *,
    swin_embed: int,
    swin_depths: list[int],
    swin_heads: list[int],
    image_size: int,
    encoder_layers: int,
    decoder_layers: int,
    attention_heads: int,
    feedforward: int,
    num_queries: int,
    num_labels: int,
    drop_path_rate: float = 0.1,
    **extra: Any,
) -> Any:
    """A small Mask2Former config: a 4-stage Swin (window 4), pixel and transformer decoders ``width`` wide.

    The shape of maskmine's own models (the random one of the tests, the
    sample world's trained one); ``extra`` goes to ``Mask2FormerConfig``.
    """
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=swin_embed,
        depths=swin_depths,
        num_heads=swin_heads,
        window_size=4,
        image_size=image_size,
        drop_path_rate=drop_path_rate,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=width,
        mask_feature_size=width,
        hidden_dim=width,
        encoder_feedforward_dim=2 * width,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        num_attention_heads=attention_heads,
        dim_feedforward=feedforward,
        num_queries=num_queries,
        num_labels=num_labels,
        **extra,
    )


def _seeded_model(config: Any, seed: int) -> Any:
    """A Mask2Former with random weights drawn from ``seed``; torch's global RNG is given back unchanged."""
    from transformers import Mask2FormerForUniversalSegmentation

    with own_rng(seed):
        return Mask2FormerForUniversalSegmentation(config).eval()


def build_tiny_mask2former(
    num_queries: int = 16, image_size: int = 128, seed: int = 0
) -> tuple[Any, Any]:
    """A randomly initialised Mask2Former and a processor that resizes to ~``image_size``.

    Built from config only (nothing downloaded); its masks are arbitrary, but
    every code path of the real model (Swin backbone, deformable pixel decoder,
    masked-attention decoder) runs.
    """
    from transformers import Mask2FormerImageProcessor

    config = swin_mask2former_config(
        32, swin_embed=16, swin_depths=[1, 1, 1, 1], swin_heads=[1, 1, 2, 2], image_size=image_size,
        encoder_layers=1, decoder_layers=2, attention_heads=2, feedforward=64, num_queries=num_queries, num_labels=5,
    )
    model = _seeded_model(config, seed)
    processor = Mask2FormerImageProcessor(
        size={"shortest_edge": image_size, "longest_edge": image_size * 3 // 2}
    )
    return model, processor


def build_random_swin_large_mask2former(shortest_edge: int = 384, seed: int = 0) -> tuple[Any, Any]:
    """The architecture of ``facebook/mask2former-swin-large-coco-panoptic`` (DEFAULT_CHECKPOINT) with
    random weights, built from config (nothing downloaded): for measuring a worker's memory and CPU
    time before the real weights are at hand (benchmarks/worker_footprint.py).

    From Mask2Former's ``maskformer2_swin_large_IN21k_384_bs16_100ep.yaml`` (COCO panoptic):
    Swin-L (embed 192, depths 2-2-18-2, heads 6-12-24-48, window 12, pretrain size 384), 200
    queries, 133 classes, hidden 256, 6 deformable encoder layers (feed-forward 1024), 10 decoder
    layers (feed-forward 2048), 8 heads. :func:`swin_large_processor` is its image processor.
    """
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=192,
        depths=[2, 2, 18, 2],
        num_heads=[6, 12, 24, 48],
        window_size=12,
        image_size=384,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_queries=200,
        num_labels=133,
        hidden_dim=256,
        feature_size=256,
        mask_feature_size=256,
        encoder_layers=6,
        encoder_feedforward_dim=1024,
        decoder_layers=10,
        dim_feedforward=2048,
        num_attention_heads=8,
    )
    model = _seeded_model(config, seed)
    return model, swin_large_processor(shortest_edge)


def swin_large_processor(shortest_edge: int = 384) -> Any:
    """Resize so the shortest edge is ``shortest_edge`` and the longest at most ``shortest_edge * 1333 / 800``
    (Mask2Former's COCO test sizes, 800 and 1333, scaled), pad to a multiple of 32. 384 is what the hub
    checkpoint's processor is believed to use (not verified here: no download); 800 is Mask2Former's own."""
    from transformers import Mask2FormerImageProcessor

    longest = round(shortest_edge * 1333 / 800)
    return Mask2FormerImageProcessor(size={"shortest_edge": shortest_edge, "longest_edge": longest}, size_divisor=32)


def _looks_like_path(checkpoint: str) -> bool:
    return checkpoint.startswith((".", "~", os.sep)) or os.path.isabs(checkpoint)


def load_sample_maskformer(folder: str | os.PathLike) -> tuple[Any, Any]:
    """The committed sample-world Mask2Former (``maskmine pretrain-sample-proposals``), a
    ``save_pretrained`` folder loaded as any local checkpoint is."""
    if not os.path.isdir(folder):
        raise UserError(
            f"the sample proposal checkpoint {folder} is missing: "
            "train it with `maskmine pretrain-sample-proposals --data DATA`"
        )
    return load_maskformer(str(folder))


def load_maskformer(checkpoint: str) -> tuple[Any, Any]:
    """Model and image processor from a hub id or a ``save_pretrained`` folder."""
    from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

    if checkpoint == TINY_CHECKPOINT:
        return build_tiny_mask2former()
    if checkpoint == SAMPLE_PROPOSAL_CHECKPOINT:
        return load_sample_maskformer(SAMPLE_PROPOSAL_DIR)
    path = os.path.expanduser(checkpoint)
    if _looks_like_path(checkpoint) and not os.path.isdir(path):
        raise UserError(f"MaskFormer checkpoint folder {checkpoint!r} does not exist")
    try:
        # float32 whatever the stored dtype (the sample checkpoint stores fp16): --precision
        # decides the compute dtype through autocast
        model = AutoModelForUniversalSegmentation.from_pretrained(path).float()
        processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"could not load MaskFormer/Mask2Former checkpoint {checkpoint!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "without internet access pass a local folder written by save_pretrained "
            "(model + image processor)"
        ) from exc
    return model, processor


@dataclass
class QueryPredictions:
    """One image's MaskFormer/Mask2Former output for every query, before any filter."""

    soft_masks: np.ndarray  # (Q, H, W) float32 sigmoid mask probabilities at the image size
    class_logits: np.ndarray  # (Q, L + 1) float32 closed-set logits; the last column is "no object"
    objectness: np.ndarray  # (Q,) float32, 1 - p(no object)


class MaskFormerProposals(ModelProposals):
    """Batched MaskFormer/Mask2Former inference, scored by objectness.

    Give either ``checkpoint`` (hub id or local folder) or ready ``model`` and
    ``processor`` objects (``checkpoint`` is then only recorded).

    :meth:`generate` gives mining's proposals (binary masks, filtered);
    :meth:`predict_queries` gives every query's soft mask and class logits
    from the same forward pass, for the eval's semantic inference and ensemble.
    """

    name = "maskformer"

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        model: Any = None,
        processor: Any = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        proposal_filter: ProposalFilter = ProposalFilter(),
        batch_size: int = 4,
        mask_threshold: float = 0.5,
    ) -> None:
        if (model is None) != (processor is None):
            raise UserError("MaskFormerProposals needs both model= and processor=, or a checkpoint")
        if model is None:
            model, processor = load_maskformer(checkpoint or DEFAULT_CHECKPOINT)
            checkpoint = checkpoint or DEFAULT_CHECKPOINT
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        # the filter's min_score is a floor on objectness: queries below it are not even upsampled
        super().__init__(model, checkpoint=checkpoint or str(getattr(model.config, "name_or_path", "") or ""),
                         device=device, proposal_filter=proposal_filter)
        self.dtype = autocast_dtype(self.device, precision)
        self.processor = processor
        self.batch_size = batch_size
        self.mask_threshold = mask_threshold

    def propose(
        self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]
    ) -> list[ProposalSet]:
        results: list[ProposalSet] = []
        for batch in self._batches(images):
            results.extend(self._generate_batch(batch))
        return results

    def predict_queries(self, images: Sequence[np.ndarray]) -> list[QueryPredictions]:
        """Every query of each image, unfiltered: soft masks, class logits and objectness.

        One forward pass per batch of ``batch_size`` images, as :meth:`generate`.
        """
        check_images(images)
        results: list[QueryPredictions] = []
        for batch in self._batches(images):
            with torch.inference_mode(), self._autocast():
                class_logits, mask_logits, regions = self._forward(batch)
                for i, image in enumerate(batch):
                    logits = class_logits[i].float()
                    soft = masks_to_image(mask_logits[i], *regions[i], _image_hw(image), threshold=None)
                    results.append(
                        QueryPredictions(
                            soft_masks=soft.cpu().numpy(),
                            class_logits=logits.cpu().numpy(),
                            objectness=objectness_from_class_logits(logits).cpu().numpy().astype(np.float32),
                        )
                    )
        return results

    def _batches(self, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        return [list(images[start : start + self.batch_size]) for start in range(0, len(images), self.batch_size)]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _forward(
        self, images: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[tuple[int, int], tuple[int, int]]]]:
        """The model on one batch: class logits ``(B, Q, L+1)``, mask logits ``(B, Q, h, w)``,
        and per image the (padded, valid) input sizes :func:`masks_to_image` needs.

        Call it inside ``torch.inference_mode()`` and :meth:`_autocast`.
        """
        # Writable copies: the processor wraps them with torch.from_numpy.
        arrays = [np.array(image, dtype=np.uint8, copy=True) for image in images]
        inputs = self.processor(
            images=arrays, return_tensors="pt", input_data_format="channels_last"
        )
        pixel_values = inputs["pixel_values"].to(self.device)
        pixel_mask = inputs.get("pixel_mask")
        pixel_mask = pixel_mask.to(self.device) if pixel_mask is not None else None
        padded_hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        regions = [
            (padded_hw, valid_region(pixel_mask[i] if pixel_mask is not None else None, padded_hw))
            for i in range(len(images))
        ]
        return outputs.class_queries_logits, outputs.masks_queries_logits, regions

    def _generate_batch(self, images: list[np.ndarray]) -> list[ProposalSet]:
        with torch.inference_mode(), self._autocast():
            class_logits, mask_logits, regions = self._forward(images)
            objectness = objectness_from_class_logits(class_logits)
            results = []
            for i, image in enumerate(images):
                keep = objectness[i] >= self.filter.min_score
                masks = masks_to_image(
                    mask_logits[i][keep], *regions[i], _image_hw(image), threshold=self.mask_threshold
                ).cpu().numpy()
                scores = objectness[i][keep].float().cpu().numpy().astype(np.float32)
                results.append(self.kept(masks, scores))
        return results


def _image_hw(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])
