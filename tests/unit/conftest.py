"""Unit-tier fixtures: the session simulates its own calibration thresholds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from detectors import calibration


@pytest.fixture(scope="session", autouse=True)
def session_calibration_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Thresholds cached by an earlier checkout under the shared temp dir are not what these tests measure."""
    directory = tmp_path_factory.mktemp("calibration")
    calibration.use_cache_dir(directory)
    yield directory
    calibration.use_cache_dir(None)
