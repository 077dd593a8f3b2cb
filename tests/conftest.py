"""Shared fixtures: where the shared data lives, and the embedded SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared(relative: str) -> Path:
    """A file under ../shared/data; fails loudly (never skips) when the data is missing."""
    path = SHARED_DATA / relative
    assert path.is_file(), f"shared data missing: {path} (tests expect ../shared beside the checkout)"
    return path


@pytest.fixture(scope="session")
def rlla_records() -> list[dict]:
    return json.loads(shared("toolrl/rlla_sft.json").read_text())


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from restlit.models import load_tokenizer

    return load_tokenizer("smollm2-135m")
