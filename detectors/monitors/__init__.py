"""The per-model decisions: performance and data monitors, their alert episodes, the monitor set, checkpoints, backtests."""

from __future__ import annotations

from detectors.monitors.alert_replay import AlertReplayGuard
from detectors.monitors.backtest import BacktestResult, run_backtest
from detectors.monitors.checkpoint import Checkpointer, decode_checkpoint, encode_checkpoint
from detectors.monitors.budget import AlarmBudget
from detectors.monitors.data_monitor import DataMonitor, confidence_of
from detectors.monitors.estimate_monitor import EstimateMonitor
from detectors.monitors.episodes import AlertEpisodes, RetrainGate
from detectors.monitors.episodes import MonitorResult
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.performance_monitor import ModelMonitor, loss_of

__all__ = [
    "AlarmBudget",
    "AlertEpisodes",
    "AlertReplayGuard",
    "BacktestResult",
    "Checkpointer",
    "DataMonitor",
    "EstimateMonitor",
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
