"""Shared test fixtures: the read-only data in ../shared/data, found from the repo root."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MASKMINE_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO_MINI = SHARED_DATA / "coco-mini"


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The 80-image COCO subset; tests that need it skip when it is absent."""
    if not (COCO_MINI / "annotations" / "captions_train2017.json").is_file():
        pytest.skip(f"coco-mini not found at {COCO_MINI} (set MASKMINE_SHARED_DATA)")
    return COCO_MINI


@pytest.fixture(scope="session")
def nltk_data() -> Path:
    """NLTK's tagger and WordNet, found as a user's install finds them (NLTK_DATA, NLTK's folders,
    then the copy shipped inside maskmine); returns the folder the tagger came from."""
    import nltk

    from maskmine.transforms.nouns import TAGGER_RESOURCE, ensure_nltk_data

    ensure_nltk_data()
    return Path(str(nltk.data.find(TAGGER_RESOURCE))).parents[1]


# Three coco-mini images of different sizes, for the proposal backends' tests.
PROPOSAL_IMAGE_NAMES = ("000000463557.jpg", "000000551757.jpg", "000000284218.jpg")


@pytest.fixture(scope="session")
def coco_images(coco_mini: Path) -> list:
    """PROPOSAL_IMAGE_NAMES decoded as RGB uint8 arrays (all of different sizes)."""
    import numpy as np
    from PIL import Image

    images = []
    for name in PROPOSAL_IMAGE_NAMES:
        with Image.open(coco_mini / "train2017" / name) as im:
            images.append(np.asarray(im.convert("RGB")))
    assert len({im.shape for im in images}) == len(images)
    return images


@pytest.fixture(scope="session")
def make_sample_set(tmp_path_factory):
    """``make_sample_set(images=..., val_images=..., seed=...)``: a generated sample set in a fresh folder, its root."""
    from maskmine.transforms.sample_world.generate import SampleConfig, generate_sample

    def make(**config) -> Path:
        out = tmp_path_factory.mktemp("sample") / "set"
        generate_sample(SampleConfig(out=str(out), **config), progress=False)
        return out

    return make


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 1 MB tmpfs: a real full file system for disk-full tests (mounting needs root; skipped where it is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)
