"""One log line per reason per period: a broker outage otherwise writes the same connection error many times a
second (librdkafka retries every few hundred ms, aiokafka on every metadata refresh), burying everything else.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

__all__ = ["KAFKA_CLIENT_LOGGERS", "RateLimiter", "RepeatedLineFilter", "install_repeated_line_filter", "reason_of"]

#: The loggers whose warnings are the Kafka clients' connection errors: ours for librdkafka, and aiokafka's.
KAFKA_CLIENT_LOGGERS = ("streams.worker.kafka", "streams.kafka", "aiokafka", "faust.transport")
_NUMBERS = re.compile(r"\d+(\.\d+)?")


class RateLimiter:
    """Admits the first occurrence of a key per ``period_seconds``, and counts the others in between.

    >>> limiter = RateLimiter(10)
    >>> [limiter.admit("refused", t) for t in (0, 1, 2, 9, 10.5, 11)]
    [0, None, None, None, 3, None]
    """

    def __init__(self, period_seconds: float = 10.0) -> None:
        if period_seconds <= 0:
            raise ValueError("period_seconds must be greater than 0.")
        self.period_seconds = period_seconds
        self._admitted_at: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str, now: float) -> int | None:
        """``None`` to drop this occurrence; else how many were dropped since the last one admitted."""
        last = self._admitted_at.get(key)
        if last is not None and now - last < self.period_seconds:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._admitted_at[key] = now
        return self._suppressed.pop(key, 0)


def reason_of(record: logging.LogRecord) -> str:
    """What makes two lines the same error: the logger and the message, numbers (ports, ms, counts) left out."""
    return f"{record.name}:{_NUMBERS.sub('#', record.getMessage())}"


class RepeatedLineFilter(logging.Filter):
    """A logging filter that lets one warning-or-worse line of the Kafka clients' loggers through per reason
    and period, and says on it how many like it were dropped; other lines pass untouched."""

    def __init__(self, limiter: RateLimiter | None = None, loggers: Iterable[str] = KAFKA_CLIENT_LOGGERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.limiter = limiter or RateLimiter()
        self._prefixes = tuple(loggers)
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not self._applies_to(record.name):
            return True
        n_dropped = self.limiter.admit(reason_of(record), self._clock())
        if n_dropped is None:
            return False
        if n_dropped:
            record.msg = f"{record.getMessage()} ({n_dropped} more like it in the last " \
                         f"{self.limiter.period_seconds:.0f} s)"
            record.args = ()
        return True

    def _applies_to(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self._prefixes)


def install_repeated_line_filter() -> RepeatedLineFilter:
    """Put one :class:`RepeatedLineFilter` on every handler of the root logger (a logger's own filters never
    see its children's records; a handler's see every record it writes)."""
    line_filter = RepeatedLineFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(line_filter)
    return line_filter
