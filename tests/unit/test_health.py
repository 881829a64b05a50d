"""Process health without a broker: the watchdog's decision, the start-up gate's, the log rate limiter, the
health pages' states and the watchdog setting's validation (issue 18)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaException

from schemas.exceptions import ConfigError
from streams.exceptions import TopicError
from streams.health.gate import ReadinessGate, judge_metadata
from streams.health.liveness import HealthState, StageTracker
from streams.health.ratelimit import RateLimiter, RepeatedLineFilter
from streams.health.watchdog import BrokerStatus, StageView, Watchdog
from streams.settings import load_settings

TP = ("in", 0)


def _view(committed: int | None, end: int, assigned: bool = True, stage: str = "monitor") -> StageView:
    return StageView(stage, frozenset({TP}) if assigned else frozenset(),
                     {TP: committed} if committed is not None else {}, {TP: end})


# -- the watchdog ---------------------------------------------------------------

def test_no_partitions_for_longer_than_the_timeout_trips() -> None:
    dog = Watchdog(60, started_at=0)
    assert dog.observe(59, True, [_view(None, 0, assigned=False)]) is None
    assert dog.observe(61, True, [_view(None, 0, assigned=False)]) == "monitor: no partitions assigned for 61 s"


def test_unread_messages_without_a_commit_trip_and_a_commit_resets_the_clock() -> None:
    dog = Watchdog(60, started_at=0)
    assert dog.observe(10, True, [_view(5, 9)]) is None
    assert dog.observe(50, True, [_view(6, 9)]) is None  # committed moved: progress at 50
    assert dog.observe(100, True, [_view(6, 9)]) is None
    reason = dog.observe(111, True, [_view(6, 9)])
    assert reason == "monitor: 3 messages unread on its partitions and no offset committed for 61 s"
    assert dog.n_committed_advanced("monitor") == 1


def test_an_idle_stage_with_nothing_to_read_never_trips() -> None:
    dog = Watchdog(60, started_at=0)
    assert all(dog.observe(t, True, [_view(9, 9)]) is None for t in range(0, 1000, 10))


def test_a_broker_outage_stops_the_clocks_and_the_stage_is_judged_afresh_after_it() -> None:
    dog = Watchdog(60, started_at=0)
    assert dog.observe(50, True, [_view(5, 9)]) is None
    for t in range(55, 300, 5):  # down: no views at all, and no verdict, however long
        assert dog.observe(t, False, []) is None
    assert dog.observe(350, True, [_view(5, 9)]) is None  # 55 s after it came back
    assert dog.observe(400, True, [_view(5, 9)]) is not None


def test_a_stage_that_never_gets_partitions_trips_from_start_up() -> None:
    dog = Watchdog(30, started_at=100)
    assert dog.observe(125, True, [_view(None, 0, assigned=False, stage="ingest")]) is None
    assert "ingest: no partitions" in (dog.observe(131, True, [_view(None, 0, assigned=False, stage="ingest")]) or "")


def test_every_stuck_stage_is_named_and_a_zero_timeout_never_trips() -> None:
    views = [_view(None, 0, assigned=False, stage="ingest"), _view(0, 5, stage="monitor")]
    dog = Watchdog(10, started_at=0)
    reason = dog.observe(11, True, views) or ""
    assert "ingest:" in reason and "monitor:" in reason
    off = Watchdog(0, started_at=0)
    assert off.observe(10_000, True, views) is None


def test_watched_topics_limit_the_lag_to_them() -> None:
    view = StageView("retrainer", frozenset({("labelled", 0), ("retrain", 0)}),
                     {("labelled", 0): 4, ("retrain", 0): 1}, {("labelled", 0): 4, ("retrain", 0): 3},
                     watched=frozenset({"labelled"}))
    assert view.unread == 0
    dog = Watchdog(10, started_at=0)
    assert dog.observe(100, True, [view]) is None  # a trigger left waiting on purpose is no stall


def test_broker_status_reports_each_change_once() -> None:
    status = BrokerStatus()
    assert [status.update(up, t) for t, up in [(0, True), (1, False), (2, False), (9, True), (10, True)]] == [
        None, "the broker does not answer", None, "the broker answers again, after 8 s", None]


# -- the start-up gate ----------------------------------------------------------

def test_metadata_judgement() -> None:
    expected = {"a": 4, "b": 1}
    assert judge_metadata({"a": 4, "b": 1, "other": 3}, expected).ready
    assert judge_metadata(None, expected).broker_down
    assert judge_metadata({"a": 4}, expected).missing == ("b",)
    assert judge_metadata({"a": 3, "b": 1}, expected).mismatched == ("a has 3 partitions, 4 expected",)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _gate(answers: list, wait: float = 60.0) -> tuple[ReadinessGate, _Clock]:  # type: ignore[type-arg]
    clock = _Clock()

    def list_topics(_timeout: float) -> dict[str, int]:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer is None:
            raise KafkaException("down")
        return answer  # type: ignore[no-any-return]

    settings = load_settings(startup_wait_seconds=wait)
    return ReadinessGate(settings, {"a": 2, "b": 2}, list_topics, clock, clock.sleep), clock


def test_the_gate_waits_through_a_down_then_loading_broker_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    answers = [None] * 6 + [{}] * 4 + [{"a": 2}] * 2 + [{"a": 2, "b": 2}]
    gate, clock = _gate(answers)
    with caplog.at_level(logging.WARNING, logger="streams.health.gate"):
        waited = gate.wait()
    assert waited == pytest.approx(sum(clock.sleeps)) and waited > 0
    assert clock.sleeps[:4] == [0.25, 0.5, 1.0, 2.0] and max(clock.sleeps) == ReadinessGate.MAX_BACKOFF
    lines = [r.getMessage() for r in caplog.records]
    # One line per 10 s of waiting, not one per try.
    assert len(lines) <= waited / 10 + 1 < len(clock.sleeps)
    assert "the broker to answer" in lines[0]


def test_the_gate_names_a_topic_still_missing_at_its_deadline() -> None:
    gate, _clock = _gate([{"a": 2}], wait=30)
    with pytest.raises(TopicError, match=r"30 s \(DRIFTLINE_STARTUP_WAIT_SECONDS\) waiting for the broker to list b"):
        gate.wait()


def test_the_gate_fails_at_once_on_a_partition_count_the_broker_disagrees_with() -> None:
    gate, clock = _gate([{"a": 2, "b": 5}])
    with pytest.raises(TopicError, match="b has 5 partitions, 2 expected"):
        gate.wait()
    assert clock.sleeps == []


def test_the_gate_without_topics_waits_only_for_an_answer() -> None:
    gate, _clock = _gate([None, None, {}])
    assert gate.wait(require_topics=False) == 0.75


# -- repeated log lines ----------------------------------------------------------

def test_rate_limiter_counts_what_it_drops_per_key() -> None:
    limiter = RateLimiter(10)
    assert limiter.admit("a", 0) == 0 and limiter.admit("b", 1) == 0
    assert [limiter.admit("a", t) for t in (2, 3, 4)] == [None, None, None]
    assert limiter.admit("a", 10) == 3 and limiter.admit("b", 10) is None
    with pytest.raises(ValueError, match="greater than 0"):
        RateLimiter(0)


def _record(name: str, message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


def test_filter_drops_repeats_of_a_kafka_client_error_and_counts_them_on_the_next_line() -> None:
    clock = _Clock()
    line_filter = RepeatedLineFilter(clock=clock)
    passed = []
    for i in range(30):  # the same refusal to another port number: one reason
        record = _record("aiokafka.conn", f"Unable connect to node with id 1: Connect call failed ('127.0.0.1', {9000 + i})")
        if line_filter.filter(record):
            passed.append(record.getMessage())
        clock.now += 0.5
    assert len(passed) == 2
    assert passed[1].endswith("(19 more like it in the last 10 s)")
    # Another logger's lines, and the clients' info lines, pass untouched.
    assert all(line_filter.filter(_record("streams.worker.monitor", "alert fired")) for _ in range(5))
    assert all(line_filter.filter(_record("aiokafka.conn", "connected", logging.INFO)) for _ in range(5))


# -- the health pages' states ----------------------------------------------------

def test_ready_needs_the_broker_a_judgement_and_partitions_on_every_stage() -> None:
    ingest = StageTracker("ingest", "g-ingest", ["p", "o"])
    monitor = StageTracker("monitor", "g", ["in"])
    state = HealthState([ingest, monitor])
    dog = Watchdog(60, started_at=0)
    assert state.ready()[1]["reason"] == "the broker does not answer"
    state.record(True, None, dog, 1, "no group offsets: timed out")
    assert "cannot say where the groups stand" in state.ready()[1]["reason"]
    ingest.set_assignment([("p", 0), ("o", 0), ("elsewhere", 3)])
    state.record(True, [StageView("ingest", ingest.assigned)], dog, 2)
    ready, body = state.ready()
    assert not ready and body["reason"] == "no partitions assigned to monitor"
    assert body["stages"]["ingest"]["assigned_partitions"] == ["o[0]", "p[0]"]
    monitor.add([("in", 1)])
    assert state.ready()[0] and state.health()[0]
    state.tripped = "monitor: stuck"
    assert not state.ready()[0] and state.health() == (False, state.health()[1])
    assert state.health()[1]["status"] == "stuck"


# -- the setting ------------------------------------------------------------------

def test_watchdog_setting_defaults_to_four_session_timeouts_and_bad_values_name_the_variable() -> None:
    assert load_settings().watchdog_timeout == 120
    assert load_settings(watchdog_seconds=0).watchdog_timeout == 0
    with pytest.raises(ConfigError) as info:
        load_settings(watchdog_seconds=30)
    assert [field for field, _ in info.value.problems] == ["DRIFTLINE_WATCHDOG_SECONDS"]
    assert "at least twice" in str(info.value)
    with pytest.raises(ConfigError, match="DRIFTLINE_STARTUP_WAIT_SECONDS"):
        load_settings(startup_wait_seconds=0)
