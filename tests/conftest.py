"""Shared test fixtures: the COCO data committed under tests/data, and the larger read-only data in ../shared/data.

Test data, and which fixture to use (issue 22):

* ``coco_cc_by``: 12 real COCO train2017 images under CC BY 2.0, with their captions and instances
  (tests/data/coco-cc-by, attribution in tests/data/ATTRIBUTION.md). Always present, so a bare clone runs
  every test built on it. The default for any test that mines, audits, trains or checks real images.
* ``coco_mini_captions``: the 400 captions of coco-mini's 80 images (COCO annotations are CC BY 4.0; no
  images come with them), for caption-only tests.
* ``coco_mini``: the 80-image set in ../shared/data (or $MASKMINE_SHARED_DATA), skipped when absent: only
  for a test that truly needs more images than coco_cc_by holds.

Order: the suite runs shuffled (pytest-randomly). The hooks at the end of this file reseed torch's global RNG
before each test and fail a test that leaves torch's thread count changed, so no test changes another's
float results.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
COCO_CC_BY = TEST_DATA / "coco-cc-by"
COCO_MINI_CAPTIONS = TEST_DATA / "coco-mini-captions_train2017.json"
SHARED_DATA = Path(os.environ.get("MASKMINE_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO_MINI = SHARED_DATA / "coco-mini"


@pytest.fixture(scope="session")
def coco_cc_by() -> Path:
    """12 COCO train2017 images under CC BY 2.0 (committed), laid out as coco-mini is: annotations/ and train2017/."""
    assert (COCO_CC_BY / "annotations" / "captions_train2017.json").is_file(), COCO_CC_BY
    return COCO_CC_BY


@pytest.fixture(scope="session")
def coco_mini_captions() -> Path:
    """coco-mini's captions file (all 80 images' captions, no images), committed."""
    return COCO_MINI_CAPTIONS


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The 80-image COCO subset in ../shared/data; tests that need it skip when it is absent."""
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


# Three coco_cc_by images of different sizes (640x422, 480x640, 500x406), for the proposal backends' tests.
PROPOSAL_IMAGE_NAMES = ("000000000790.jpg", "000000121647.jpg", "000000231460.jpg")


@pytest.fixture(scope="session")
def coco_images(coco_cc_by: Path) -> list:
    """PROPOSAL_IMAGE_NAMES decoded as RGB uint8 arrays (all of different sizes)."""
    import numpy as np
    from PIL import Image

    images = []
    for name in PROPOSAL_IMAGE_NAMES:
        with Image.open(coco_cc_by / "train2017" / name) as im:
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


# --- process-global torch state: every test starts from the same, and leaves it as it found it -------------
#
# The suite runs in a random order (pytest-randomly, which also reseeds `random` and numpy before each test).
# torch's state is the rest: its global RNG is reseeded here the same way, and a test that leaves torch's
# intra-op thread count changed fails, because CPU float32 results depend on that count and every later
# test in the process would inherit it (issue 22). Both only touch torch once something has imported it.

_TORCH_THREADS = pytest.StashKey[int]()


def _torch():
    import sys

    return sys.modules.get("torch")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    torch = _torch()
    if torch is None:
        return
    seed = getattr(item.config.option, "randomly_seed", None)
    torch.manual_seed(seed if isinstance(seed, int) else 0)
    item.stash[_TORCH_THREADS] = torch.get_num_threads()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    result = yield
    torch = _torch()
    before = item.stash.get(_TORCH_THREADS, None)
    if torch is not None and before is not None and torch.get_num_threads() != before:
        after = torch.get_num_threads()
        torch.set_num_threads(before)  # put back, so the tests after this one are not affected too
        raise AssertionError(
            f"{item.nodeid} left torch's thread count at {after} (it was {before}): use "
            "maskmine.transforms.torch_state.torch_threads, which puts it back"
        )
    return result
