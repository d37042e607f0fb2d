"""ProposalGenerator.generate, the same for every backend: the batch is checked and the answer is one
ProposalSet per image, so no backend can drop or add an image without a word."""
from __future__ import annotations

import numpy as np
import pytest

from maskmine.transforms.proposals.coco_gt import CocoGtProposals
from maskmine.transforms.proposals.distractors import CocoGtDistractorProposals
from maskmine.transforms.records import Caption, ImageRecord, Instance


def record(image_id: int, height: int = 32, width: int = 48) -> ImageRecord:
    """An image with one square instance (rows 4-19, columns 8-27)."""
    square = [[8.0, 4.0, 28.0, 4.0, 28.0, 20.0, 8.0, 20.0]]
    instance = Instance(annotation_id=image_id * 10, category_id=1, category="cat",
                        segmentation=square, bbox=(8.0, 4.0, 20.0, 16.0))
    return ImageRecord(image_id, f"{image_id}.jpg", width, height, [Caption(image_id, "a cat")], [instance])


def image(height: int = 32, width: int = 48) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)


BACKENDS = [CocoGtProposals, CocoGtDistractorProposals]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_a_backend_gives_one_proposal_set_per_image_with_the_instance(backend) -> None:
    sets = backend().generate([image(), image()], [record(1), record(2)])
    assert len(sets) == 2
    for proposals in sets:
        assert proposals.backend == backend.name
        assert proposals.masks.shape[1:] == (32, 48)
        # the ground-truth square is among the proposals, pixel for pixel
        assert any(mask[4:20, 8:28].all() and mask.sum() == 16 * 20 for mask in proposals.masks)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("images, records, message", [
    (2, 1, "2 images but 1 records"),
    (1, 2, "1 images but 2 records"),
])
def test_ground_truth_backends_refuse_images_and_records_of_different_number(backend, images, records, message) -> None:
    # before generate checked every batch, these two zipped the lists and answered for the shorter one
    with pytest.raises(ValueError, match=message):
        backend().generate([image()] * images, [record(i + 1) for i in range(records)])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_ground_truth_backends_refuse_an_image_that_is_not_rgb(backend) -> None:
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) RGB image, got shape \(32, 48\)"):
        backend().generate([np.zeros((32, 48), np.uint8)], [record(1)])


class LosesLastImage(CocoGtProposals):
    """A backend whose propose answers for one image fewer than it was given."""

    def propose(self, images, records):
        return super().propose(images, records)[:-1]


class AnswersTwice(CocoGtProposals):
    """A backend whose propose answers twice for the first image."""

    def propose(self, images, records):
        sets = super().propose(images, records)
        return sets[:1] + sets


@pytest.mark.parametrize("backend, returned", [(LosesLastImage, 2), (AnswersTwice, 4)])
def test_generate_refuses_a_backend_answering_for_another_number_of_images(backend, returned) -> None:
    with pytest.raises(ValueError, match=f"'coco-gt' returned {returned} proposal sets for 3 images"):
        backend().generate([image()] * 3, [record(1), record(2), record(3)])
