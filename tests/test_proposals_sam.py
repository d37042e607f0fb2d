"""SAM automatic-mask proposals with a tiny random SAM on real COCO images."""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("segment_anything", reason="segment-anything (maskmine[sam]) not installed")

from maskmine.transforms.errors import UserError  # noqa: E402
from maskmine.transforms.proposals.base import ProposalFilter, mask_iou_matrix  # noqa: E402
from maskmine.transforms.proposals.factory import SamOptions  # noqa: E402
from maskmine.transforms.proposals.sam import (  # noqa: E402
    TINY_MODEL_TYPE,
    SamProposals,
    build_tiny_sam,
    import_segment_anything,
    load_sam,
    proposal_score,
)
from maskmine.transforms.records import Caption, ImageRecord  # noqa: E402


# A random SAM predicts low IoUs and zero stability: relax SAM's own filters
# (and its box NMS, so several masks reach our filter) and check invariants.
RELAXED = SamOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
KEEP_ALL = ProposalFilter(dedup_iou=1.01, min_area_fraction=0)



@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam(img_size=64)


def records_for(images: list[np.ndarray]) -> list[ImageRecord]:
    return [
        ImageRecord(i, f"{i}.jpg", im.shape[1], im.shape[0], [Caption(i, "a photo")])
        for i, im in enumerate(images)
    ]


def test_generate_on_real_images(tiny_sam, coco_images) -> None:
    params = dict(top_k=100, dedup_iou=0.9, min_area_fraction=0.01)
    generator = SamProposals(model=tiny_sam, options=RELAXED, device="cpu", proposal_filter=ProposalFilter(**params))
    results = generator.generate(coco_images, records_for(coco_images))
    assert len(results) == len(coco_images)
    assert any(len(r) > 1 for r in results)
    for result, image in zip(results, coco_images):
        height, width = image.shape[:2]
        assert result.backend == "sam"
        assert result.masks.dtype == np.bool_ and result.masks.shape[1:] == (height, width)
        assert result.scores.dtype == np.float32 and result.scores.shape == (len(result),)
        assert np.all((result.scores >= 0) & (result.scores <= 1))
        assert np.all(np.diff(result.scores) <= 0)
        areas = result.masks.reshape(len(result), -1).sum(1)
        assert np.all(areas >= 0.01 * height * width)
        iou = mask_iou_matrix(result.masks)
        np.fill_diagonal(iou, 0)
        assert np.all(iou < 0.9)

    cut = SamProposals(model=tiny_sam, options=RELAXED, device="cpu",
                       proposal_filter=ProposalFilter(**{**params, "top_k": 2})).generate(
        coco_images, records_for(coco_images)
    )
    for full, small in zip(results, cut):
        assert len(small) == min(2, len(full))
        assert np.array_equal(small.masks, full.masks[: len(small)])


def test_pred_iou_thresh_is_applied(tiny_sam, coco_images) -> None:
    image = coco_images[0]
    relaxed = SamProposals(model=tiny_sam, options=RELAXED, device="cpu", proposal_filter=KEEP_ALL)
    (loose,) = relaxed.generate([image], records_for([image]))
    assert len(loose) >= 2
    threshold = float(np.median(loose.scores))
    strict = SamProposals(
        model=tiny_sam, options=replace(RELAXED, pred_iou_thresh=threshold), device="cpu", proposal_filter=KEEP_ALL
    )
    (kept,) = strict.generate([image], records_for([image]))
    assert len(kept) < len(loose)
    assert np.all(kept.scores > threshold)


def test_nothing_kept_gives_an_empty_set(tiny_sam, coco_images) -> None:
    image = coco_images[1]
    generator = SamProposals(model=tiny_sam, options=replace(RELAXED, pred_iou_thresh=0.999), device="cpu")
    (result,) = generator.generate([image], records_for([image]))
    assert len(result) == 0
    assert result.masks.shape == (0, *image.shape[:2]) and result.masks.dtype == np.bool_
    assert result.scores.shape == (0,)


def test_proposal_score() -> None:
    assert proposal_score(0.8, 0.5) == pytest.approx(0.8)
    assert proposal_score(0.8, 0.5, "iou_x_stability") == pytest.approx(0.4)
    assert proposal_score(1.3, 0.9) == 1.0  # the IoU head is unbounded
    assert proposal_score(-0.2, 0.9) == 0.0
    assert proposal_score(0.7, float("nan"), "iou_x_stability") == 0.0
    with pytest.raises(UserError):
        proposal_score(0.5, 0.5, "area")


def test_checkpoint_file_round_trip(coco_images, tmp_path) -> None:
    trained = build_tiny_sam(img_size=64, seed=7)  # weights unlike the default seed's
    path = tmp_path / "tiny.pth"
    torch.save(trained.state_dict(), path)
    loaded = SamProposals(checkpoint=str(path), model_type=TINY_MODEL_TYPE, options=RELAXED, device="cpu")
    assert loaded.checkpoint == str(path)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    image = coco_images[2]
    a = SamProposals(model=trained, options=RELAXED, device="cpu").generate([image], [None])[0]
    b = loaded.generate([image], [None])[0]
    assert np.array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.scores, b.scores)
    with pytest.raises(UserError, match="could not load SAM checkpoint.*vit_b"):
        load_sam(str(path), "vit_b")  # right file, wrong architecture


def test_load_errors_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="unknown SAM model type"):
        load_sam(None, "vit_xl")
    with pytest.raises(UserError, match="not a file"):
        load_sam(str(tmp_path / "missing.pth"), "vit_b")
    with pytest.raises(UserError, match="needs a checkpoint"):
        load_sam(None, "vit_b")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not load SAM checkpoint"):
        load_sam(str(garbage), "vit_b")
    with pytest.raises(UserError, match="unknown SAM score"):
        SamProposals(model=build_tiny_sam(), score="area", device="cpu")


def test_tiny_model_type() -> None:
    generator = SamProposals(model_type=TINY_MODEL_TYPE, options=SamOptions(points_per_side=2), device="cpu")
    assert generator.checkpoint == TINY_MODEL_TYPE
    assert generator.model.image_encoder.img_size == 64


def test_missing_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(UserError, match=r"maskmine\[sam\]"):
        import_segment_anything()
