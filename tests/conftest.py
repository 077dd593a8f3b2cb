"""Shared fixtures: where the test data lives (inside the repository), and the embedded SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The real samples the tests read (provenance and licences in tests/data/README.md, configs/data/README.md).
TOOLACE = "configs/data/demo_toolace.json"
XLAM = "configs/data/demo_xlam.json"
TOOLRL = "tests/data/toolrl/rlla_sft.json"
HAMMER = "tests/data/hammer/masking_sft_example.json"


def data_file(relative: str) -> Path:
    """A data file of the repository, by its path from the repository root (``tests/data/...`` or
    the demo sample ``configs/data/...``); fails loudly (never skips) when it is missing."""
    path = REPO / relative
    assert path.is_file(), f"test data missing: {path}"
    return path


@pytest.fixture(scope="session")
def rlla_records() -> list[dict]:
    return json.loads(data_file(TOOLRL).read_text())


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from restlit.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def tiny_parts():
    """The tokenizer and the tiny random policy of ``configs/tiny-test.yaml``, in eval mode."""
    from restlit.config import load_config
    from restlit.training.run import build_tokenizer_and_policy

    tokenizer, policy = build_tokenizer_and_policy(load_config(REPO / "configs" / "tiny-test.yaml"))
    return tokenizer, policy.eval()


def free_port() -> int:
    """A TCP port on localhost that is free now (for a process group's rendezvous or a server)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
