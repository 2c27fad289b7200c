import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import corpora  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    return corpora.minilm_dir()


@pytest.fixture(scope="session")
def kjv() -> list[str]:
    return corpora.kjv_verses()
