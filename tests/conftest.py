"""Shared test fixtures: the read-only data in ../shared/data, found from the repo root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MASKMINE_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO_MINI = SHARED_DATA / "coco-mini"
NLTK_DATA = SHARED_DATA / "nltk_data"


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The 80-image COCO subset; tests that need it skip when it is absent."""
    if not (COCO_MINI / "annotations" / "captions_train2017.json").is_file():
        pytest.skip(f"coco-mini not found at {COCO_MINI} (set MASKMINE_SHARED_DATA)")
    return COCO_MINI


@pytest.fixture(scope="session", autouse=True)
def nltk_data_path() -> Path | None:
    """Point NLTK at the offline data folder for every test, when it exists."""
    if NLTK_DATA.is_dir():
        os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))
        import nltk

        if str(NLTK_DATA) not in nltk.data.path:
            nltk.data.path.insert(0, str(NLTK_DATA))
        return NLTK_DATA
    return None


@pytest.fixture(scope="session")
def nltk_data(nltk_data_path) -> Path:
    if nltk_data_path is None:
        pytest.skip(f"NLTK data not found at {NLTK_DATA} (set MASKMINE_SHARED_DATA)")
    return nltk_data_path
