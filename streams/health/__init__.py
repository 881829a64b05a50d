"""Process health: the start-up readiness gate, the watchdog, the /health and /ready states, quieter Kafka logs."""

from __future__ import annotations

from streams.health.gate import GateVerdict, ReadinessGate, judge_metadata
from streams.health.liveness import EXIT_STUCK, HealthMetrics, HealthState, KafkaProbe, StageTracker, WatchdogThread
from streams.health.ratelimit import RateLimiter, RepeatedLineFilter, install_repeated_line_filter
from streams.health.watchdog import BrokerStatus, StageView, Watchdog

__all__ = ["EXIT_STUCK", "BrokerStatus", "GateVerdict", "HealthMetrics", "HealthState", "KafkaProbe", "RateLimiter",
           "ReadinessGate", "RepeatedLineFilter", "StageTracker", "StageView", "Watchdog", "WatchdogThread",
           "install_repeated_line_filter", "judge_metadata"]
