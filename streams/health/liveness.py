"""The watchdog's shell: probe the broker, feed :class:`~streams.health.watchdog.Watchdog`, export what it sees,
and exit non-zero when it says a stage is stuck (crash-only recovery: the supervisor restarts the process, and
the changelogs make that safe).

Everything is measured from outside the consumers it judges: the group's committed offsets and the log-end
offsets come from an admin client of the probe's own, so a consumer that hangs cannot hide its hang.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.health.watchdog import BrokerStatus, StageView, Watchdog
from streams.settings import Settings

__all__ = ["EXIT_STUCK", "HealthMetrics", "HealthState", "KafkaProbe", "StageTracker", "WatchdogThread"]

log = logging.getLogger(__name__)
#: The exit status of a process the watchdog stops (EX_SOFTWARE).
EXIT_STUCK = 70
PROBE_TIMEOUT = 5.0


class HealthMetrics:
    """The watchdog's metrics, in the process's registry (the worker's or the retrainer's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.broker_up = Gauge("driftline_broker_up", "1 while the broker answers this process's probe, else 0.",
                               registry=registry)
        self.broker_up.set(1)
        self.unread = Gauge(
            "driftline_unread_messages", "Messages past the group's committed offset on the partitions assigned "
            "to the stage, from the watchdog's last probe (refreshed even when nothing is consumed).", ["stage"],
            registry=registry)
        self.committed = Counter(
            "driftline_committed_messages", "Messages the stage's committed offsets moved past, as the watchdog "
            "saw them: its progress.", ["stage"], registry=registry)
        self.assigned = Gauge("driftline_assigned_partitions", "Partitions assigned to the stage.", ["stage"],
                              registry=registry)

    def declare(self, stages: Iterable[str]) -> None:
        """Every stage's series, at zero, from the start: the alert rules see a stage that never consumed."""
        for stage in stages:
            self.unread.labels(stage).set(0)
            self.committed.labels(stage)
            self.assigned.labels(stage).set(0)


class StageTracker:
    """What one stage holds, set from its consumer's rebalance callbacks (any thread: the set is replaced whole).

    Parameters
    ----------
    stage
        Its name in logs, metrics and the health pages.
    group
        Its consumer group, whose committed offsets measure its progress.
    topics
        The topics whose partitions it should hold.
    watched
        The topics whose unread messages count as lag (default: all of ``topics``).
    last_batch
        Unix time of its last batch, or ``None`` (default: the time of the last :meth:`note_batch`).
    """

    def __init__(self, stage: str, group: str, topics: Collection[str], watched: Collection[str] = (),
                 last_batch: Callable[[], float | None] | None = None) -> None:
        self.stage, self.group = stage, group
        self.topics = frozenset(topics)
        self.watched = frozenset(watched)
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        self._last_batch_at: float | None = None
        self._last_batch = last_batch or (lambda: self._last_batch_at)

    def set_assignment(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.assigned = frozenset(tp for tp in partitions if tp[0] in self.topics)

    def add(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.set_assignment(self.assigned | set(partitions))

    def remove(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.set_assignment(self.assigned - set(partitions))

    def note_batch(self) -> None:
        self._last_batch_at = time.time()

    def seconds_since_last_batch(self) -> float | None:
        last = self._last_batch()
        return None if last is None else max(time.time() - last, 0.0)


class KafkaProbe:
    """Asks the broker, with an admin client of its own, whether it answers and where each stage stands."""

    def __init__(self, settings: Settings) -> None:
        self._config = settings.confluent_config()
        self._admin = AdminClient(self._config)
        self.last_error: str | None = None  # why the last look had no views

    def look(self, trackers: Sequence[StageTracker]) -> tuple[bool, list[StageView] | None]:
        """``(broker answers, a view per stage)``; the views are ``None`` when the broker cannot say where the
        groups stand (it does not answer, or its group coordinator is still loading after a restart)."""
        try:
            if not self._admin.list_topics(timeout=PROBE_TIMEOUT).brokers:
                self.last_error = "no broker in the metadata answer"
                return False, None
        except KafkaException as exc:
            self.last_error = f"no metadata: {exc.args[0]}"
            return False, None
        try:
            views = [self._view(tracker) for tracker in trackers]
        except KafkaException as exc:
            self.last_error = f"no group offsets: {exc.args[0]}"
            # Seen after a broker restart: librdkafka's admin client kept timing out on group offsets for 30 s
            # and more while a new one answered at once.
            self._admin = AdminClient(self._config)
            return True, None
        self.last_error = None
        return True, views

    def _view(self, tracker: StageTracker) -> StageView:
        assigned = tracker.assigned
        if not assigned:
            return StageView(tracker.stage, assigned, watched=tracker.watched)
        tps = [TopicPartition(t, p) for t, p in sorted(assigned)]
        request = [ConsumerGroupTopicPartitions(tracker.group, tps)]
        answer = self._admin.list_consumer_group_offsets(request, request_timeout=PROBE_TIMEOUT)[tracker.group]
        committed = {(tp.topic, tp.partition): tp.offset for tp in answer.result().topic_partitions
                     if tp.offset >= 0}
        # Never committed: the group starts at the first offset (auto.offset.reset=earliest).
        earliest = self._offsets([tp for tp in tps if (tp.topic, tp.partition) not in committed], OffsetSpec.earliest())
        return StageView(tracker.stage, assigned, {**earliest, **committed},
                         self._offsets(tps, OffsetSpec.latest()), tracker.watched)

    def _offsets(self, tps: Sequence[TopicPartition], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        futures = self._admin.list_offsets({tp: spec for tp in tps}, request_timeout=PROBE_TIMEOUT)
        return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


class HealthState:
    """What ``/health`` and ``/ready`` answer, from the watchdog's last look."""

    def __init__(self, trackers: Sequence[StageTracker]) -> None:
        self.trackers = list(trackers)
        self.broker_up: bool | None = None  # unknown until the first probe
        self.probe_error: str | None = None
        self.tripped: str | None = None
        self.judged = False  # whether the last probe saw where every stage stands
        self._stages: dict[str, dict[str, Any]] = {t.stage: {} for t in trackers}

    def record(self, broker_up: bool, views: Sequence[StageView] | None, watchdog: Watchdog, now: float,
               probe_error: str | None = None) -> None:
        """What one probe saw (``views`` ``None``: the broker could not say where the groups stand)."""
        self.broker_up, self.probe_error = broker_up, probe_error
        self.judged = views is not None
        views = views or []
        for view in views:
            self._stages[view.stage] = {"unread_messages": view.unread,
                                        "seconds_without_progress": round(watchdog.seconds_without_progress(view.stage, now), 1)}

    def _stage_states(self) -> dict[str, dict[str, Any]]:
        states = {}
        for tracker in self.trackers:
            since = tracker.seconds_since_last_batch()
            states[tracker.stage] = {
                "assigned_partitions": [f"{t}[{p}]" for t, p in sorted(tracker.assigned)],
                "seconds_since_last_batch": None if since is None else round(since, 1),
                **self._stages.get(tracker.stage, {}),
            }
        return states

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: alive unless the watchdog has tripped (it is then about to exit)."""
        ok = self.tripped is None
        return ok, {"status": "ok" if ok else "stuck", "reason": self.tripped, "broker_up": self.broker_up,
                    "probe_error": self.probe_error, "stages": self._stage_states()}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: the broker answers, says where the groups stand, and every stage holds partitions."""
        waiting = [t.stage for t in self.trackers if not t.assigned]
        if self.tripped is not None:
            reason: str | None = self.tripped
        elif not self.broker_up:
            reason = "the broker does not answer"
        elif not self.judged:
            reason = f"the broker cannot say where the groups stand ({self.probe_error})"
        elif waiting:
            reason = "no partitions assigned to " + ", ".join(waiting)
        else:
            reason = None
        return reason is None, {"ready": reason is None, "reason": reason, "broker_up": self.broker_up,
                                "probe_error": self.probe_error, "stages": self._stage_states()}


class WatchdogThread:
    """Probes every few seconds, logs a broker outage and its end once each, and exits when a stage is stuck.

    Parameters
    ----------
    settings
        ``watchdog_timeout`` and the broker.
    state
        The stages to judge (its trackers), and where the health pages read what was seen.
    metrics
        Where ``driftline_broker_up`` and the stages' lag and progress go.
    exit
        Called with :data:`EXIT_STUCK` when a stage is stuck (default ``os._exit``: no faust shutdown to hang in).
    """

    def __init__(self, settings: Settings, state: HealthState, metrics: HealthMetrics,
                 probe: KafkaProbe | None = None, exit: Callable[[int], Any] = os._exit) -> None:
        timeout = settings.watchdog_timeout
        self.interval = min(5.0, max(0.5, timeout / 10)) if timeout else 5.0
        self.watchdog = Watchdog(timeout, time.monotonic())
        self.state = state
        self.trackers = state.trackers
        self.metrics = metrics
        self._probe = probe or KafkaProbe(settings)
        self._status = BrokerStatus()
        self._exit = exit
        self._stop = threading.Event()
        self._n_counted: dict[str, int] = {}  # what the committed counter holds, per stage

    def start(self) -> None:
        threading.Thread(target=self._run, name="driftline-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> str | None:
        """One probe and one decision; returns the reason when it exits."""
        up, looked = self._probe.look(self.trackers)
        views = looked or []
        now = time.monotonic()
        change = self._status.update(up, now)
        if change is not None:
            log.warning("%s", change)
        self.metrics.broker_up.set(1 if up else 0)
        # Without views the stages cannot be judged: their clocks stand still, as during an outage.
        reason = self.watchdog.observe(now, looked is not None, views)
        self.state.record(up, looked, self.watchdog, now, self._probe.last_error)
        for view in views:
            self.metrics.unread.labels(view.stage).set(view.unread)
            self.metrics.assigned.labels(view.stage).set(len(view.assigned))
            advanced = self.watchdog.n_committed_advanced(view.stage)
            self.metrics.committed.labels(view.stage).inc(advanced - self._n_counted.get(view.stage, 0))
            self._n_counted[view.stage] = advanced
        if reason is not None:
            self.state.tripped = reason
            log.error("watchdog: %s; exiting (status %d) for the supervisor to restart this process", reason,
                      EXIT_STUCK)
            for handler in logging.getLogger().handlers:
                handler.flush()
            self._exit(EXIT_STUCK)
        return reason
