"""Alert episodes, shared by every monitor: fired once, resolved once, with ids a replay reproduces.

An episode opens when a monitor's detector or threshold fires and closes when
it resolves.  Its id is a hash of who watches (model, version, segment,
monitor, series, detector) and of the event that opened it, so the same stream
replayed after a crash opens the same episodes and publishes the same alert ids:
``fired`` and ``resolved`` alerts are hashes of the episode id.  Also here: what
one batch of a monitor produced (:class:`MonitorResult`), and the per-model
retrain cooldown the monitors share (:class:`RetrainGate`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from schemas.events import Alert, AlertKind, LabelledExample, PredictionEvent, RetrainTrigger, Severity, deterministic_id

__all__ = ["AlertEpisodes", "Episode", "MonitorResult", "RetrainGate"]

Key = TypeVar("Key", bound=Hashable)
# Alert messages are bounded by the schema (ShortText).
_MAX_MESSAGE = 1024


@dataclass
class MonitorResult:
    """What one batch produced: alerts and triggers to publish, examples refused."""

    alerts: list[Alert] = field(default_factory=list)
    triggers: list[RetrainTrigger] = field(default_factory=list)
    rejected: list[tuple[LabelledExample, str]] = field(default_factory=list)
    n_unmonitored: int = 0

    def extend(self, other: MonitorResult) -> None:
        self.alerts.extend(other.alerts)
        self.triggers.extend(other.triggers)
        self.rejected.extend(other.rejected)
        self.n_unmonitored += other.n_unmonitored


class RetrainGate:
    """One model's retrain cooldown, shared by its performance and data monitors.

    >>> from datetime import datetime, timedelta, timezone
    >>> gate = RetrainGate(3600)
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> gate.admit(t), gate.admit(t + timedelta(minutes=30)), gate.admit(t + timedelta(hours=2))
    (True, False, True)
    """

    def __init__(self, cooldown_seconds: float) -> None:
        self.cooldown_seconds = cooldown_seconds
        self.last: datetime | None = None

    def admit(self, event_time: datetime) -> bool:
        """Whether a drift- or decay-driven trigger may go out at ``event_time`` (and note it if so)."""
        if self.last is not None and (event_time - self.last).total_seconds() < self.cooldown_seconds:
            return False
        self.last = event_time
        return True


@dataclass
class Episode:
    """An open alert: its id, and positions (among the events its monitor saw) of its first and latest alarm."""

    episode_id: str
    fired_at: int
    last_alarm: int


@dataclass(frozen=True)
class _Where:
    """What an alert says about where it came from, besides its model and segment."""

    kind: AlertKind
    monitor: str
    detector: str
    feature: str | None


class AlertEpisodes(Generic[Key]):
    """The open alert episodes of one monitor, by a key of the monitor's choosing (e.g. its detector's name).

    Parameters
    ----------
    model, segment
        Whose alerts these are.
    version
        The model version the alerts name; None to name the version of the event that fired or resolved them.
    scope
        Leading parts of every episode id (who watches), before the series-specific ``identity`` of :meth:`fire`.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> at = PredictionEvent(prediction_id="p-7", model="m", model_version="3", prediction=1,
    ...                      event_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    >>> episodes: AlertEpisodes[str] = AlertEpisodes("m", None, scope=("m", ""))
    >>> fired = episodes.fire("threshold", ("performance", "threshold"), 41, at, kind="performance_decay",
    ...                       severity="critical", monitor="performance", statistic=0.71, threshold=0.8,
    ...                       message="accuracy fell")
    >>> "threshold" in episodes, fired.status, fired.model_version
    (True, 'fired', '3')
    >>> resolved = episodes.resolve("threshold", at, statistic=0.9, threshold=0.8, message="recovered")
    >>> resolved.episode_id == fired.episode_id, resolved.alert_id != fired.alert_id, list(episodes)
    (True, True, [])
    """

    def __init__(self, model: str, segment: str | None, scope: Sequence[object], version: str | None = None) -> None:
        self.model, self.segment, self.version = model, segment, version
        self.scope = tuple(scope)
        self._open: dict[Key, Episode] = {}
        self._where: dict[Key, _Where] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._open

    def __iter__(self) -> Iterator[Key]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    def get(self, key: Key) -> Episode | None:
        return self._open.get(key)

    def fire(
        self, key: Key, identity: Sequence[object], position: int, at: PredictionEvent, *, kind: AlertKind,
        severity: Severity, monitor: str, statistic: float, threshold: float, message: str,
        detector: str | None = None, feature: str | None = None,
    ) -> Alert:
        """Open the episode of ``key`` at the event ``at`` (``position`` among those seen); its fired alert."""
        episode_id = deterministic_id(*self.scope, *identity, at.prediction_id, at.event_time)
        self._open[key] = Episode(episode_id, position, position)
        where = self._where[key] = _Where(kind, monitor, detector if detector is not None else str(key), feature)
        return self._alert(episode_id, "fired", severity, where, statistic, threshold, at, message)

    def resolve(self, key: Key, at: PredictionEvent, *, statistic: float, threshold: float, message: str) -> Alert:
        """Close the open episode of ``key`` at the event ``at``; its resolved alert."""
        episode = self._open.pop(key)
        where = self._where.pop(key)
        return self._alert(episode.episode_id, "resolved", "info", where, statistic, threshold, at, message)

    def _alert(
        self, episode_id: str, status: str, severity: Severity, where: _Where, statistic: float, threshold: float,
        at: PredictionEvent, message: str,
    ) -> Alert:
        return Alert(
            alert_id=deterministic_id(episode_id, status),
            status=status,  # type: ignore[arg-type]
            kind=where.kind,
            severity=severity,
            model=self.model,
            model_version=self.version if self.version is not None else at.model_version,
            segment=self.segment,
            monitor=where.monitor,
            detector=where.detector,
            feature=where.feature,
            # Alerts carry finite numbers only; a detector without a statistic reports 0.
            statistic=statistic if math.isfinite(statistic) else 0.0,
            threshold=threshold if math.isfinite(threshold) else 0.0,
            event_time=at.event_time,
            episode_id=episode_id,
            message=message[:_MAX_MESSAGE],
        )
