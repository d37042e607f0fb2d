"""MaskFormer/Mask2Former proposals with a tiny random model on real COCO images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.base import ProposalFilter, mask_iou_matrix
from maskmine.transforms.proposals.maskformer import (
    TINY_CHECKPOINT,
    MaskFormerProposals,
    build_tiny_mask2former,
    masks_to_image,
    objectness_from_class_logits,
    valid_region,
)
from maskmine.transforms.records import Caption, ImageRecord, ProposalSet

# A portrait and two landscape images, all of different sizes.



def records_for(images: list[np.ndarray]) -> list[ImageRecord]:
    return [
        ImageRecord(
            image_id=i,
            file_name=f"{i}.jpg",
            width=im.shape[1],
            height=im.shape[0],
            captions=[Caption(i, "a photo")],
        )
        for i, im in enumerate(images)
    ]


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return build_tiny_mask2former(num_queries=16, image_size=128)


def check_invariants(
    result: ProposalSet, image: np.ndarray, *, top_k: int, dedup_iou: float, min_area_fraction: float
) -> None:
    height, width = image.shape[:2]
    assert result.backend == "maskformer"
    assert result.masks.dtype == np.bool_
    assert result.masks.shape[1:] == (height, width)
    assert result.scores.dtype == np.float32
    assert result.scores.shape == (len(result),)
    assert 1 <= len(result) <= top_k
    assert np.all((result.scores >= 0) & (result.scores <= 1))
    assert np.all(np.diff(result.scores) <= 0), "scores must be sorted descending"
    areas = result.masks.reshape(len(result), -1).sum(1)
    assert np.all(areas >= min_area_fraction * height * width)
    iou = mask_iou_matrix(result.masks)
    np.fill_diagonal(iou, 0)
    assert np.all(iou < dedup_iou)


def test_objectness_is_one_minus_no_object_probability() -> None:
    logits = torch.tensor(
        [
            [
                [0.0, 0.0, 0.0, 0.0],  # uniform: p(no-object) = 1/4
                [0.0, 0.0, 0.0, math.log(6.0)],  # 6 / (1 + 1 + 1 + 6) = 2/3
                [20.0, 0.0, 0.0, -20.0],  # surely an object
                [-20.0, -20.0, -20.0, 20.0],  # surely no object
            ]
        ]
    )
    objectness = objectness_from_class_logits(logits)
    assert objectness.shape == (1, 4)
    np.testing.assert_allclose(objectness[0].numpy(), [0.75, 1 / 3, 1.0, 0.0], atol=1e-6)
    # Class-agnostic: which real class wins does not change the score.
    permuted = logits[..., [2, 0, 1, 3]]
    torch.testing.assert_close(objectness_from_class_logits(permuted), objectness)


def test_masks_to_image_drops_padding_then_resizes() -> None:
    # Padded input 8x12, of which the image is the left 8x8; the model stride is 1 here.
    logits = torch.full((1, 8, 12), -10.0)
    logits[0, :4, :8] = 10.0  # top half of the image
    logits[0, :, 8:] = 10.0  # "object" in the padding: must not leak in
    masks = masks_to_image(logits, padded_hw=(8, 12), valid_hw=(8, 8), image_hw=(16, 16))
    assert masks.dtype == torch.bool and masks.shape == (1, 16, 16)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[:8] = True
    assert torch.equal(masks[0], expected)


def test_masks_to_image_upsamples_from_model_stride() -> None:
    # A 4x-stride logit map: a square in the middle of a 40x40 padded input.
    logits = torch.full((2, 10, 10), -10.0)
    logits[0, 3:7, 3:7] = 10.0
    masks = masks_to_image(logits, padded_hw=(40, 40), valid_hw=(40, 40), image_hw=(20, 20))
    assert masks.shape == (2, 20, 20)
    assert not masks[1].any()
    ys, xs = np.nonzero(masks[0].numpy())
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (6, 13, 6, 13)


def test_valid_region_follows_the_processor_resize(tiny, coco_images) -> None:
    _, processor = tiny
    copies = [image.copy() for image in coco_images]
    inputs = processor(images=copies, return_tensors="pt", input_data_format="channels_last")
    padded_hw = tuple(inputs["pixel_values"].shape[-2:])
    regions = [valid_region(mask, padded_hw) for mask in inputs["pixel_mask"]]
    # Padding only at the bottom/right, up to the largest resized image.
    assert max(h for h, _ in regions) == padded_hw[0]
    assert max(w for _, w in regions) == padded_hw[1]
    for image, (vh, vw) in zip(coco_images, regions):
        assert vh % 32 == 0 and vw % 32 == 0  # the processor's size_divisor
        # Aspect ratio kept up to that rounding.
        assert abs(vh / vw - image.shape[0] / image.shape[1]) < 0.2
        assert (vh > vw) == (image.shape[0] > image.shape[1])
    assert valid_region(None, (64, 96)) == (64, 96)


def test_generate_on_real_images_of_different_sizes(tiny, coco_images) -> None:
    model, processor = tiny
    params = dict(top_k=100, dedup_iou=0.9, min_area_fraction=0.01)
    generator = MaskFormerProposals(
        model=model, processor=processor, device="cpu", batch_size=2, proposal_filter=ProposalFilter(**params)
    )
    results = generator.generate(coco_images, records_for(coco_images))
    assert len(results) == len(coco_images)
    for result, image in zip(results, coco_images):
        check_invariants(result, image, **params)
        assert result.checkpoint == generator.checkpoint
    assert any(len(r) > 1 for r in results)

    # Top-k keeps the best masks of the same greedy ranking.
    small = MaskFormerProposals(
        model=model, processor=processor, device="cpu", batch_size=2,
        proposal_filter=ProposalFilter(**{**params, "top_k": 2}),
    ).generate(coco_images, records_for(coco_images))
    for full, cut in zip(results, small):
        assert len(cut) == min(2, len(full))
        assert np.array_equal(cut.masks, full.masks[: len(cut)])
        np.testing.assert_allclose(cut.scores, full.scores[: len(cut)])

    # The filter's min_score (a floor on objectness) drops low-scoring queries before anything else.
    floor = float(np.median(np.concatenate([r.scores for r in results])))
    strict = MaskFormerProposals(
        model=model, processor=processor, device="cpu", proposal_filter=ProposalFilter(**params, min_score=floor)
    ).generate(coco_images, records_for(coco_images))
    assert all(np.all(r.scores >= floor) for r in strict)
    assert sum(len(r) for r in strict) < sum(len(r) for r in results)


def test_generate_rejects_mismatched_inputs(tiny, coco_images) -> None:
    model, processor = tiny
    generator = MaskFormerProposals(model=model, processor=processor, device="cpu")
    with pytest.raises(ValueError):
        generator.generate(coco_images[:2], records_for(coco_images[:1]))
    with pytest.raises(ValueError):
        gray = coco_images[0][..., 0]
        generator.generate([gray], records_for([coco_images[0]]))


def test_predict_queries_is_the_model_output_of_one_forward_pass(tiny, coco_images) -> None:
    """Soft masks, class logits and objectness equal the processor + model run by hand (the
    path the eval took before the generator exposed them), and generate's masks are those
    soft masks binarised and filtered."""
    model, processor = tiny
    images = [np.array(coco_images[0]), np.array(coco_images[1][:300, :400])]  # writable, as torch wants
    generator = MaskFormerProposals(model=model, processor=processor, device="cpu", batch_size=1,
                                    proposal_filter=ProposalFilter(dedup_iou=0.8, min_area_fraction=0.01, top_k=5))
    predictions = generator.predict_queries(images)
    queries = model.config.num_queries
    for image, pred in zip(images, predictions):
        inputs = processor(images=[image], return_tensors="pt", input_data_format="channels_last")
        with torch.inference_mode():
            out = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        logits = out.class_queries_logits[0].float()
        assert pred.class_logits.shape == (queries, model.config.num_labels + 1)
        assert pred.class_logits.dtype == np.float32
        np.testing.assert_array_equal(pred.class_logits, logits.numpy())
        np.testing.assert_array_equal(pred.objectness, objectness_from_class_logits(logits).numpy())
        padded = tuple(inputs["pixel_values"].shape[-2:])
        soft = masks_to_image(out.masks_queries_logits[0], padded, valid_region(inputs["pixel_mask"][0], padded),
                              image.shape[:2], threshold=None).numpy()
        assert pred.soft_masks.shape == (queries, *image.shape[:2]) and pred.soft_masks.dtype == np.float32
        np.testing.assert_array_equal(pred.soft_masks, soft)
        # generate: the same queries binarised at mask_threshold, then the filter's rows
        (result,) = generator.generate([image], records_for([image]))
        binary = pred.soft_masks > generator.mask_threshold  # strictly, as masked_crop.binarize and OVSeg
        rows = generator.filter.select(binary, pred.objectness)
        assert 1 <= len(rows) <= 5
        np.testing.assert_array_equal(result.masks, binary[rows])
        np.testing.assert_array_equal(result.scores, pred.objectness[rows])


def test_checkpoint_folder_round_trip(tiny, coco_images, tmp_path) -> None:
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    images = coco_images[:2]
    in_memory = MaskFormerProposals(model=model, processor=processor, device="cpu").generate(
        images, records_for(images)
    )
    loaded = MaskFormerProposals(checkpoint=str(tmp_path), device="cpu")
    assert loaded.checkpoint == str(tmp_path)
    assert type(loaded.model) is type(model)
    from_folder = loaded.generate(images, records_for(images))
    for a, b in zip(in_memory, from_folder):
        assert b.checkpoint == str(tmp_path)
        assert np.array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_tiny_checkpoint_name_builds_a_random_model(coco_images) -> None:
    generator = MaskFormerProposals(checkpoint=TINY_CHECKPOINT, device="cpu")
    assert generator.checkpoint == TINY_CHECKPOINT
    (result,) = generator.generate(coco_images[:1], records_for(coco_images[:1]))
    assert result.masks.shape[1:] == coco_images[0].shape[:2]


def test_unloadable_checkpoints_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        MaskFormerProposals(checkpoint=str(tmp_path / "missing"), device="cpu")
    with pytest.raises(UserError, match="could not load.*local folder"):
        MaskFormerProposals(checkpoint=str(tmp_path), device="cpu")  # empty folder
    model, processor = build_tiny_mask2former()
    with pytest.raises(UserError, match="both model= and processor="):
        MaskFormerProposals(model=model, device="cpu")


@pytest.mark.gpu
def test_gpu_autocast_matches_cpu(tiny, coco_images) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model, processor = tiny
    images = coco_images[:2]
    keep_all = ProposalFilter(dedup_iou=1.01, min_area_fraction=0)
    cpu = MaskFormerProposals(model=model, processor=processor, device="cpu", proposal_filter=keep_all)
    cpu_results = cpu.generate(images, records_for(images))
    gpu = MaskFormerProposals(model=model, processor=processor, device="cuda", proposal_filter=keep_all)
    assert gpu.dtype in (torch.bfloat16, torch.float16)
    gpu_results = gpu.generate(images, records_for(images))
    model.to("cpu")
    for a, b in zip(cpu_results, gpu_results):
        assert b.masks.shape == a.masks.shape and b.masks.dtype == np.bool_
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=0.02)
