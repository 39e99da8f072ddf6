"""Shared test set-up. The default run is hermetic: no ``$LONGSHORT_DATA_DIR`` from the caller, the
Hugging Face Hub offline, and benchmarks read from the package's own copies (``longshort/data/shipped``)
or from project-written fixtures (``tests/fixtures``). Only tests that use the ``shared_data`` fixture
read ``../shared/data`` (the maintainers' local data copies, which a clone does not have); they skip
without it and carry the ``needs_shared`` marker, so CI can run them on their own."""
from __future__ import annotations

from pathlib import Path

import pytest

from longshort import paths

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(items):
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.needs_shared)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs ../shared/data (the maintainers' local data copies, not part of a clone): "
                    f"nothing at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def packaged_data() -> Path:
    """The evaluation sets shipped in the package (MATH500, AIME24/25, AMC23, GSM8K test)."""
    return paths.packaged_data_dir()


@pytest.fixture
def gpqa_fixture(monkeypatch) -> Path:
    """``$LONGSHORT_DATA_DIR`` pointed at the project-written GPQA-layout items (no GPQA text)."""
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(FIXTURES))
    return FIXTURES


@pytest.fixture(autouse=True)
def _hermetic_data(monkeypatch):
    """No test depends on the caller's data dir or on the network."""
    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny random model (seed 3): a model path for engines, partners and tokenizers."""
    from longshort.models import tiny_model

    model, tok = tiny_model(seed=3)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
