"""Pure, synchronous, picklable change detectors, rolling statistics and monitors."""

from __future__ import annotations

from detectors.base import DriftDetector
from detectors.cusum import BernoulliCUSUM
from detectors.exceptions import DetectorError, InvalidParameter
from detectors.glr import BernoulliGLR, GaussianGLR
from detectors.outliers import RobustSpikeDetector
from detectors.registry import build_detector
from detectors.segment_baseline import BorrowedBaselineGLR

__all__ = [
    "BernoulliCUSUM",
    "BernoulliGLR",
    "BorrowedBaselineGLR",
    "DetectorError",
    "DriftDetector",
    "GaussianGLR",
    "InvalidParameter",
    "RobustSpikeDetector",
    "build_detector",
]
