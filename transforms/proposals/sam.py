"""Class-agnostic proposals from Segment Anything's automatic mask generator.

SAM prompts a grid of points over each image and keeps the masks it is
confident about. ``segment-anything`` is an optional extra (``maskmine[sam]``),
imported only when this backend is built.

Score: SAM's own predicted IoU (its mask-quality head), clipped to [0, 1];
with ``score="iou_x_stability"`` it is multiplied by the stability score
(how little the mask changes when the binarisation cutoff moves).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import asdict
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch

from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.factory import SAM_MODEL_TYPES, SamOptions
from maskmine.transforms.proposals.base import ModelProposals, ProposalFilter
from maskmine.transforms.records import ImageRecord, ProposalSet
from maskmine.transforms.torch_state import own_rng

TINY_MODEL_TYPE = "maskmine-tiny"  # random weights, for tests and dry runs only
MODEL_TYPES = tuple(t for t in SAM_MODEL_TYPES if t != TINY_MODEL_TYPE)  # segment_anything's registry names
SCORE_MODES = ("iou", "iou_x_stability")


def import_segment_anything() -> Any:
    """The ``segment_anything`` module, or a UserError naming the extra to install."""
    try:
        import segment_anything
    except ImportError as exc:
        raise UserError(
            "the 'sam' proposal backend needs the segment-anything package: "
            "pip install 'maskmine[sam]' (or pip install segment-anything)"
        ) from exc
    return segment_anything


def build_tiny_sam(img_size: int = 64, seed: int = 0) -> Any:
    """A randomly initialised SAM small enough to run on CPU in milliseconds.

    Same building blocks and wiring as ``segment_anything.build_sam._build_sam``
    with every width and depth cut down; its masks are arbitrary.
    """
    import_segment_anything()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch_size = 16
    prompt_dim = 32
    embedding_size = img_size // patch_size
    with own_rng(seed):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=2,
                embed_dim=32,
                img_size=img_size,
                mlp_ratio=2,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=2,
                patch_size=patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=[1],
                window_size=2,
                out_chans=prompt_dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_dim,
                image_embedding_size=(embedding_size, embedding_size),
                input_image_size=(img_size, img_size),
                mask_in_chans=4,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2
                ),
                transformer_dim=prompt_dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()


def load_sam(checkpoint: str | None, model_type: str) -> Any:
    """A SAM model of ``model_type`` with the weights in ``checkpoint`` (loaded on CPU).

    ``model_type="maskmine-tiny"`` builds the tiny random model, with the
    weights of ``checkpoint`` when one is given.
    """
    if model_type not in MODEL_TYPES and model_type != TINY_MODEL_TYPE:
        raise UserError(
            f"unknown SAM model type {model_type!r}: use one of {', '.join(MODEL_TYPES)}"
        )
    if not checkpoint:
        if model_type == TINY_MODEL_TYPE:
            return build_tiny_sam()
        raise UserError(f"the SAM backend needs a checkpoint file for model type {model_type!r}")
    path = os.path.expanduser(checkpoint)
    if not os.path.isfile(path):
        raise UserError(f"SAM checkpoint {checkpoint!r} is not a file")
    sa = import_segment_anything()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if model_type == TINY_MODEL_TYPE:
            model = build_tiny_sam()
        else:
            model = sa.sam_model_registry[model_type](checkpoint=None)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not load SAM checkpoint {checkpoint!r} as model type {model_type!r}: {first}"
        ) from exc
    return model.eval()


def proposal_score(predicted_iou: float, stability_score: float, mode: str = "iou") -> float:
    """One mask's score in [0, 1].

    SAM's IoU head is an unconstrained regression (it can leave [0, 1]) and the
    stability score is NaN for a mask empty at the lower cutoff, so both are
    cleaned before use.
    """
    value = float(np.clip(np.nan_to_num(predicted_iou, nan=0.0), 0.0, 1.0))
    if mode == "iou_x_stability":
        value *= float(np.clip(np.nan_to_num(stability_score, nan=0.0), 0.0, 1.0))
    elif mode != "iou":
        raise UserError(f"unknown SAM score {mode!r}: use one of {', '.join(SCORE_MODES)}")
    return value


class SamProposals(ModelProposals):
    """SAM's automatic mask generator, one image at a time, then the shared filter."""

    name = "sam"

    def __init__(
        self,
        checkpoint: str | None = None,
        model_type: str = "vit_h",
        *,
        model: Any = None,
        options: SamOptions = SamOptions(),
        points_per_batch: int = 64,
        proposal_filter: ProposalFilter = ProposalFilter(),
        score: str = "iou",
        device: str | torch.device = "auto",
    ) -> None:
        sa = import_segment_anything()
        if score not in SCORE_MODES:
            raise UserError(f"unknown SAM score {score!r}: use one of {', '.join(SCORE_MODES)}")
        if model is None:
            model = load_sam(checkpoint, model_type)
        super().__init__(model, checkpoint=checkpoint or model_type, device=device, proposal_filter=proposal_filter)
        self.mask_generator = sa.SamAutomaticMaskGenerator(
            self.model,
            points_per_batch=points_per_batch,
            output_mode="binary_mask",
            **asdict(options),
        )
        self.model_type = model_type
        self.score = score

    def propose(
        self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]
    ) -> list[ProposalSet]:
        return [self._generate_one(image) for image in images]

    def _generate_one(self, image: np.ndarray) -> ProposalSet:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = image.shape[:2]
        with torch.inference_mode():
            anns = self.mask_generator.generate(image)
        if anns:
            masks = np.stack([np.asarray(a["segmentation"], dtype=bool) for a in anns])
            scores = np.array([self._score(a) for a in anns], dtype=np.float32)
        else:
            masks = np.zeros((0, height, width), dtype=bool)
            scores = np.zeros((0,), dtype=np.float32)
        return self.kept(masks, scores)

    def _score(self, ann: dict) -> float:
        return proposal_score(ann["predicted_iou"], ann["stability_score"], self.score)
