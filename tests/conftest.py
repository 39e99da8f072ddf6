"""Shared test set-up: point the benchmark loaders at ../shared/data, the read-only data copies."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _data_dir_env(monkeypatch):
    """Every test sees LONGSHORT_DATA_DIR=../shared/data unless it sets its own."""
    if SHARED_DATA.is_dir() and "LONGSHORT_DATA_DIR" not in os.environ:
        monkeypatch.setenv("LONGSHORT_DATA_DIR", str(SHARED_DATA))
