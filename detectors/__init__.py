"""Pure, synchronous, picklable change detectors, rolling statistics and monitors."""

from __future__ import annotations

from detectors.base import DriftDetector
from detectors.cusum import BernoulliCUSUM
from detectors.exceptions import DetectorError, InvalidParameter

__all__ = ["BernoulliCUSUM", "DetectorError", "DriftDetector", "InvalidParameter"]
