"""Replaying a JSON-lines log of prediction and outcome events through the worker's own code.

The same :class:`~detectors.ingest.stage.JoinStage` and
:class:`~detectors.monitors.performance_monitor.MonitorSet` the worker runs (performance monitors on
the labelled examples, data monitors on the predictions), with no Kafka: each
line is one event exactly as the topics carry it, a prediction or an outcome
(told apart by its ``actual`` or ``prediction`` field).  Bad lines are
reported with their line number and skipped, never silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from detectors.ingest.stage import JoinStage, RawRecord
from detectors.monitors.episodes import MonitorResult
from detectors.monitors.monitor_set import DetectorFactory, MonitorSet
from schemas.config import MonitorConfig
from schemas.events import Alert, LabelledExample, PredictionEvent, RetrainTrigger, Side

__all__ = ["BacktestResult", "BadLine", "MetricPoint", "run_backtest"]


@dataclass(frozen=True)
class BadLine:
    line_number: int
    reason: str


@dataclass(frozen=True)
class MetricPoint:
    model: str
    event_time: datetime
    value: float
    n_seen: int


@dataclass
class BacktestResult:
    alerts: list[Alert] = field(default_factory=list)
    triggers: list[RetrainTrigger] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    series: list[MetricPoint] = field(default_factory=list)
    n_lines: int = 0
    n_examples: int = 0
    n_expired: int = 0
    """Events whose partner never came within the TTL, or before the end of the file."""
    n_unmonitored: int = 0


def _side_of(line: str) -> Side | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return "prediction"  # let the decoder name the JSON error
    if not isinstance(obj, dict):
        return "prediction"
    if "actual" in obj:
        return "outcome"
    if "prediction" in obj:
        return "prediction"
    return None


def run_backtest(
    lines: Iterable[str],
    config: MonitorConfig,
    build_detector: DetectorFactory,
    ttl_seconds: float = 3600.0,
    max_event_bytes: int = 64 * 1024,
    batch_size: int = 500,
    on_progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Run every line through decode, join and the monitors; return what the worker would publish.

    Examples
    --------
    >>> from detectors.registry import build_detector
    >>> from schemas.config import parse_monitor_config
    >>> cfg = parse_monitor_config("models: {m: {task: classification, performance: {window: 10, threshold: 0.5}}}")
    >>> lines = ['{"prediction_id": "a", "model": "m", "model_version": "1", '
    ...          '"event_time": "2026-01-01T00:00:00Z", "prediction": 1}',
    ...          'not json',
    ...          '{"prediction_id": "a", "event_time": "2026-01-01T00:00:01Z", "actual": 1}']
    >>> result = run_backtest(lines, cfg, build_detector)
    >>> result.n_examples, [(b.line_number, b.reason.split(":")[0]) for b in result.bad_lines]
    (1, [(2, 'not_json')])
    """
    monitors = MonitorSet(config, build_detector)
    stage: JoinStage[int] = JoinStage(ttl_seconds, max_event_bytes)
    result = BacktestResult()
    batch: list[RawRecord[int]] = []

    def feed(predictions: list[PredictionEvent], examples: list[LabelledExample]) -> None:
        # Predictions first: in the worker they reach the monitors ahead of the outcomes that label them.
        watched = monitors.observe_predictions(predictions)
        result.alerts.extend(watched.alerts)
        result.triggers.extend(watched.triggers)
        outcome: MonitorResult = monitors.observe(examples)
        result.alerts.extend(outcome.alerts)
        result.triggers.extend(outcome.triggers)
        result.n_unmonitored += outcome.n_unmonitored
        for example, reason in outcome.rejected:
            result.bad_lines.append(BadLine(0, f"unscorable example {example.prediction.prediction_id}: {reason}"))
        result.n_examples += len(examples)
        if examples:
            for model, monitor in monitors.monitors.items():
                mine = [e for e in examples if e.prediction.model == model]
                if mine:
                    point = MetricPoint(model, mine[-1].prediction.event_time, monitor.metric_value, monitor.n_seen)
                    result.series.append(point)

    def flush_batch() -> None:
        out = stage.process(batch)
        for dead in out.dead_letters:
            result.bad_lines.append(BadLine(dead.record.ref, f"{dead.rejection.kind}: {dead.rejection.reason}"))
        result.n_expired += len(out.expired)
        feed(out.predictions, out.labelled)
        batch.clear()

    for number, line in enumerate(lines, start=1):
        result.n_lines = number
        if on_progress is not None:
            on_progress(len(line))
        text = line.strip()
        if not text:
            continue
        side = _side_of(text)
        if side is None:
            result.bad_lines.append(BadLine(number, "schema: neither a prediction nor an outcome"))
            continue
        batch.append(RawRecord(side, text.encode(), number))
        if len(batch) >= batch_size:
            flush_batch()
    flush_batch()
    rest = stage.flush()
    feed(rest.predictions, rest.labelled)
    result.n_expired += stage.n_pending
    result.bad_lines.sort(key=lambda b: b.line_number)
    return result
