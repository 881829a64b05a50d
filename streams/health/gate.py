"""The start-up readiness gate: no consumer subscribes before the broker lists every topic the process needs.

A broker that has just started can answer a metadata request before it has loaded its topics; aiokafka then
reports them missing, and a faust worker that subscribed on that answer was seen to consume nothing, ever
(issue 18).  So the worker and the retrainer wait here first, backing off between tries and logging one line
per 10 s.  A topic the broker lists with another partition count fails at once (the broker is not loading,
it disagrees); a topic still missing after ``startup_wait_seconds`` fails naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException

from streams.exceptions import TopicError
from streams.health.ratelimit import RateLimiter
from streams.settings import Settings
from streams.topics import AdminConnection

__all__ = ["GateVerdict", "ReadinessGate", "judge_metadata"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateVerdict:
    """What one metadata answer says: ready, or what is missing, or which topics disagree (a failure)."""

    missing: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    broker_down: bool = False

    @property
    def ready(self) -> bool:
        return not (self.missing or self.mismatched or self.broker_down)

    @property
    def waiting_for(self) -> str:
        if self.broker_down:
            return "the broker to answer"
        return "the broker to list " + ", ".join(self.missing)


def judge_metadata(listed: Mapping[str, int] | None, expected: Mapping[str, int]) -> GateVerdict:
    """Judge one metadata answer (``None``: no answer) against the topics and partition counts expected.

    >>> judge_metadata({"a": 4, "b": 4}, {"a": 4, "b": 4}).ready
    True
    >>> judge_metadata({"a": 4}, {"a": 4, "b": 4}).missing, judge_metadata({"a": 2}, {"a": 4}).mismatched
    (('b',), ('a has 2 partitions, 4 expected',))
    """
    if listed is None:
        return GateVerdict(broker_down=True)
    missing = tuple(sorted(name for name in expected if name not in listed))
    mismatched = tuple(f"{name} has {listed[name]} partitions, {n} expected"
                       for name, n in sorted(expected.items()) if name in listed and listed[name] != n)
    return GateVerdict(missing, mismatched)


class ReadinessGate:
    """Waits until the broker lists ``expected`` (topic name: partitions), or fails naming what it lacks.

    Parameters
    ----------
    settings
        The broker to ask, and ``startup_wait_seconds``.
    expected
        Every topic the process needs, with its partition count.
    list_topics
        Returns the topics the broker lists with their partition counts, or raises ``KafkaException``
        (default: an ``AdminClient``'s metadata request).
    """

    FIRST_BACKOFF, MAX_BACKOFF, LOG_SECONDS = 0.25, 5.0, 10.0

    def __init__(self, settings: Settings, expected: Mapping[str, int],
                 list_topics: Callable[[float], Mapping[str, int]] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.expected = dict(expected)
        self._list_topics = list_topics or self._admin_list_topics
        self._clock, self._sleep = clock, sleep
        self._admin: AdminConnection | None = None
        self._log_limiter = RateLimiter(self.LOG_SECONDS)

    def wait(self, require_topics: bool = True) -> float:
        """Block until ready (with ``require_topics`` false: until the broker answers at all); return the
        seconds waited.  Raises :class:`~streams.exceptions.TopicError` naming what is wrong."""
        started = self._clock()
        deadline = started + self.settings.startup_wait_seconds
        backoff = self.FIRST_BACKOFF
        while True:
            verdict = self._look(require_topics)
            if verdict.mismatched:
                raise TopicError("topics disagree with the partitions Driftline expects: " + "; ".join(
                    verdict.mismatched) + " (set DRIFTLINE_PARTITIONS to match, or use another DRIFTLINE_TOPIC_PREFIX)")
            if verdict.ready:
                return self._clock() - started
            now = self._clock()
            if now >= deadline:
                raise TopicError(f"gave up after {self.settings.startup_wait_seconds:g} s (DRIFTLINE_STARTUP_WAIT_SECONDS)"
                                 f" waiting for {verdict.waiting_for} at {self.settings.kafka_bootstrap}")
            if self._log_limiter.admit("waiting", now) is not None:
                log.warning("start-up: waiting for %s (%.0f s so far)", verdict.waiting_for, now - started)
            self._sleep(min(backoff, max(deadline - now, 0.0)))
            backoff = min(2 * backoff, self.MAX_BACKOFF)

    def _look(self, require_topics: bool) -> GateVerdict:
        try:
            listed = self._list_topics(min(5.0, self.settings.broker_request_timeout))
        except KafkaException:
            return judge_metadata(None, self.expected)
        return judge_metadata(listed, self.expected if require_topics else {})

    def _admin_list_topics(self, timeout: float) -> dict[str, int]:
        if self._admin is None:
            self._admin = AdminConnection(self.settings)
        # Refused credentials are not a broker still loading: they raise at once (KafkaSecurityError).
        metadata = self._admin.metadata(timeout)
        if not metadata.brokers:
            raise KafkaException("no broker in the metadata answer")
        return {name: len(topic.partitions) for name, topic in metadata.topics.items() if topic.error is None}
