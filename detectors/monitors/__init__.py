"""The per-model decisions: performance and data monitors, their alert episodes, the monitor set, checkpoints, backtests."""

from __future__ import annotations

from detectors.monitors.backtest import BacktestResult, run_backtest
from detectors.monitors.checkpoint import Checkpointer, decode_checkpoint, encode_checkpoint
from detectors.monitors.data_monitor import DataMonitor, RetrainGate, confidence_of
from detectors.monitors.performance_monitor import ModelMonitor, MonitorResult, MonitorSet, loss_of

__all__ = [
    "BacktestResult",
    "Checkpointer",
    "DataMonitor",
    "ModelMonitor",
    "MonitorResult",
    "MonitorSet",
    "RetrainGate",
    "confidence_of",
    "decode_checkpoint",
    "encode_checkpoint",
    "loss_of",
    "run_backtest",
]
