"""A steady-rate run: events sent at a held rate into fresh topics while a ``driftline worker`` reads them.

The producer sends ``rate / 2`` predictions a second, each outcome
``OUTCOME_DELAY_SECONDS`` after its prediction, for ``seconds``, in slices of
``SLICE_SECONDS``, and stamps every event's ``event_time`` with the wall clock
at which it sends it.  The workload (:class:`workloads.SteadyWorkload`) fires
and resolves alerts throughout, so that each alert's latency can be measured:

    the alert record's Kafka timestamp (the alerts topic is made LogAppendTime, so:
    when the broker appended it) minus the time the triggering event was sent.

The triggering event is the one whose ``event_time`` the alert carries: for a
data alert, the prediction itself; for a performance alert (a labelled
example), the later of the prediction and its outcome, i.e. the outcome, whose
send time the producer remembers by the prediction's (unique) timestamp.

When the producer stops, the worker's lag is read twice: its own
``driftline_consumer_lag_messages`` gauge and the source topics' end offsets
minus its ingest consumer group's committed offsets.  Then the worker is given
time to catch up, so that the alerts the last events trigger are counted too.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from confluent_kafka import (OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from baselines import ceiling
from detectors.monitors.performance_monitor import PERFORMANCE
from schemas.events import Alert
from streams.processes import metric_sum, scrape_metrics, start_worker, stop_worker
from streams.settings import Settings
from streams.topics import ensure_topics
from workers import end_offsets, fresh_settings, monitored_counts, read_checkpoint_page, worker_env
from workloads import Draw, SteadyWorkload

__all__ = ["SteadyRun", "run_steady"]

SLICE_SECONDS = 0.005
OUTCOME_DELAY_SECONDS = 0.1
# Each bad or good phase of the workload lasts this long at the asked rate: several alerts a minute.
PHASE_SECONDS = 2.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_time(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


def micros_of(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


class UniqueStamps:
    """Wall-clock microseconds, made strictly increasing, so that an alert's event time names a single event."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(time.time_ns() // 1000, self.last + 1)
        return self.last


@dataclass
class SteadyProduced:
    n_predictions: int = 0
    n_outcomes: int = 0
    # Monotonic clock: the first and last sends of each side.
    first_sent: float = 0.0
    last_prediction_sent: float = 0.0
    first_outcome_sent: float = 0.0
    last_sent: float = 0.0
    worst_behind_s: float = 0.0  # how far a send fell behind its schedule, at worst
    cpu_s: float = 0.0  # CPU time the producing took in this process: it shares the machine with the worker
    #: A prediction's event time (µs) -> when its outcome was sent (µs, wall clock).
    outcome_sent_at: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events/s: each side over its own span (the outcomes' starts and ends their delay later)."""
        return (self.n_predictions / (self.last_prediction_sent - self.first_sent)
                + self.n_outcomes / (self.last_sent - self.first_outcome_sent))


def produce_steady(bootstrap: str, settings: Settings, workload: SteadyWorkload, rate: float,
                   seconds: float) -> SteadyProduced:
    """Send predictions at ``rate / 2`` a second for ``seconds``, each outcome shortly after its prediction."""
    topics = settings.topics
    # Idempotence keeps each partition in send order; a short linger keeps the events' own latency small.
    producer = Producer({**settings.confluent_config(), "partitioner": "murmur2_random", "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})
    per_second = rate / 2
    stamps, draws, out = UniqueStamps(), workload.draws(), SteadyProduced()
    waiting: deque[tuple[float, Draw, int]] = deque()  # outcomes not sent yet: when due, the draw, its prediction's stamp

    def send_due_outcomes(now: float) -> None:
        while waiting and waiting[0][0] <= now:
            due, draw, predicted_at = waiting.popleft()
            out.worst_behind_s = max(out.worst_behind_s, now - due)
            stamp = stamps.next()
            producer.produce(topics.outcomes, key=draw[0].encode(), value=workload.outcome(draw, iso_time(stamp)))
            out.outcome_sent_at[predicted_at] = stamp
            out.n_outcomes += 1
            out.first_outcome_sent = out.first_outcome_sent or time.monotonic()
            out.last_sent = time.monotonic()

    def send_predictions(n: int) -> None:
        for _ in range(n):
            draw = next(draws)
            stamp = stamps.next()
            producer.produce(topics.predictions, key=draw[0].encode(), value=workload.prediction(draw, iso_time(stamp)))
            waiting.append((time.monotonic() + OUTCOME_DELAY_SECONDS, draw, stamp))
        out.n_predictions += n
        out.last_prediction_sent = time.monotonic()

    cpu_before = time.process_time()
    start = out.first_sent = time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        # Prediction k is due at start + k / per_second: send every one due by now.
        due = int((now - start) * per_second) + 1
        if due > out.n_predictions:
            out.worst_behind_s = max(out.worst_behind_s, now - (start + out.n_predictions / per_second))
            send_predictions(due - out.n_predictions)
        send_due_outcomes(now)
        producer.poll(0)
        time.sleep(SLICE_SECONDS)
    while waiting:  # the last outcomes, each still its delay after its prediction
        time.sleep(SLICE_SECONDS)
        send_due_outcomes(time.monotonic())
    producer.flush(60)
    out.cpu_s = time.process_time() - cpu_before
    return out


def ingest_groups(settings: Settings) -> list[str]:
    """Where the worker's ingest stage commits its source offsets: its own group after the worker rewrite, the app's today."""
    return [f"{settings.app_id}-ingest", settings.app_id]


def wait_for_assignment(settings: Settings, timeout: float = 120.0) -> str:
    """Wait until one of the ingest groups holds every source partition, and return it: the worker is reading."""
    admin = AdminClient(settings.confluent_config())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for group, future in admin.describe_consumer_groups(ingest_groups(settings)).items():
            try:
                members = future.result().members
            except KafkaException:
                continue
            held = {tp.partition for member in members for tp in member.assignment.topic_partitions
                    if tp.topic == settings.topics.predictions}
            if len(held) == settings.partitions:
                return group
        time.sleep(0.5)
    raise SystemExit(f"no worker group among {ingest_groups(settings)} took the source partitions in {timeout:.0f} s")


def committed_lag(settings: Settings) -> tuple[str, int] | None:
    """The ingest group that has committed source offsets, and the source messages past its commits (end - committed)."""
    admin = AdminClient(settings.confluent_config())
    ends = {(topic, p): end for topic in (settings.topics.predictions, settings.topics.outcomes)
            for p, end in enumerate(end_offsets(settings.kafka_bootstrap, topic, settings.partitions))}
    for group in ingest_groups(settings):
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for topic, p in ends])
        listed = admin.list_consumer_group_offsets([request])[group].result().topic_partitions
        committed = {(tp.topic, tp.partition): tp.offset for tp in listed if tp.offset >= 0}
        if committed:
            return group, sum(end - committed.get(tp, 0) for tp, end in ends.items())
    return None


def create_alerts_topic(settings: Settings) -> None:
    """The alerts topic, made before ``ensure_topics`` does, with the broker's append time as each record's timestamp."""
    admin = AdminClient(settings.confluent_config())
    topic = NewTopic(settings.topics.alerts, num_partitions=settings.partitions,
                     replication_factor=settings.replication_factor,
                     config={"message.timestamp.type": "LogAppendTime"})
    admin.create_topics([topic])[settings.topics.alerts].result()


@dataclass(frozen=True)
class AlertRecord:
    alert: Alert
    timestamp_ms: int
    timestamp_type: int  # confluent_kafka.TIMESTAMP_LOG_APPEND_TIME, unless the topic was not made here


def read_alerts(settings: Settings, timeout: float = 60.0) -> list[AlertRecord]:
    """Every alert on the alerts topic, with its record's timestamp."""
    ends = end_offsets(settings.kafka_bootstrap, settings.topics.alerts, settings.partitions)
    consumer = Consumer({**settings.confluent_config(), "group.id": f"{settings.app_id}-alerts-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(settings.topics.alerts, p, OFFSET_BEGINNING) for p in range(settings.partitions)])
    records: list[AlertRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < sum(ends) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=1.0):
                if not message.error():
                    kind, ms = message.timestamp()
                    records.append(AlertRecord(Alert.model_validate_json(message.value() or b""), ms, kind))
    finally:
        consumer.close()
    return records


def triggered_by(alert: Alert) -> str:
    """``examples`` for a performance alert (a labelled example's), ``predictions`` for a data alert."""
    return "examples" if alert.monitor == PERFORMANCE else "predictions"


def sent_at(alert: Alert, produced: SteadyProduced) -> int | None:
    """When the event that triggered the alert was sent (µs), or None if it is not one the producer sent."""
    stamp = micros_of(alert.event_time)
    if triggered_by(alert) == "examples":  # completed by its outcome
        return produced.outcome_sent_at.get(stamp)
    return stamp  # the prediction, sent when it was stamped


@dataclass(frozen=True)
class SteadyRun:
    rate: float
    seconds: float
    summary: str
    produced: SteadyProduced
    scored_at_stop: int  # examples the worker had scored when the producer stopped
    held_at_stop: int  # items its monitor stage held then, waiting for the watermarks to pass them
    metric_lag: float  # driftline_consumer_lag_messages over the source partitions, when the producer stopped
    assigned_group: str  # the ingest group that took the source partitions
    committed: tuple[str, int] | None  # the ingest group with commits, and its lag, when the producer stopped
    caught_up_s: float | None  # from the producer's stop to every example scored; None: not within drain_limit_s
    drain_limit_s: float
    alerts: list[AlertRecord]
    unmatched: int  # alerts whose triggering event the producer did not send (should be 0)
    latencies: dict[str, list[float]]  # seconds, by what triggered the alert: "examples" or "predictions"
    ceiling: float  # ceiling over these events, after the run


def wait_until_scored(port: int, n_predictions: int, limit_s: float) -> float | None:
    """Seconds until the worker has scored every example and watched every prediction; None if not within limit_s."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if min(monitored_counts([port])) >= n_predictions:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def source_lag_gauge(port: int) -> float:
    samples = scrape_metrics(port)
    return sum(metric_sum(samples, "driftline_consumer_lag_messages", source=side) for side in ("prediction", "outcome"))


def latencies_by_trigger(alerts: list[AlertRecord], produced: SteadyProduced) -> tuple[dict[str, list[float]], int]:
    latencies: dict[str, list[float]] = {"examples": [], "predictions": []}
    unmatched = 0
    for record in alerts:
        sent = sent_at(record.alert, produced)
        if sent is None:
            unmatched += 1
            continue
        latencies[triggered_by(record.alert)].append(record.timestamp_ms / 1000 - sent / 1e6)
    return latencies, unmatched


def run_steady(bootstrap: str, rate: float, seconds: float, partitions: int, work: Path) -> SteadyRun:
    settings = fresh_settings(bootstrap, "steady", partitions)
    workload = SteadyWorkload(phase_predictions=int(rate / 2 * PHASE_SECONDS))
    create_alerts_topic(settings)
    ensure_topics(settings)
    config = work / f"{settings.app_id}.yaml"
    config.write_text(workload.config())
    env = worker_env(settings, config, work / settings.app_id)
    port = int(env["DRIFTLINE_WEB_PORT"])
    # However far behind the worker is, it is given this long to catch up before its alerts are read.
    drain_limit_s = 3 * seconds + 60
    proc = start_worker(env, work / f"{settings.app_id}.log")
    try:
        group = wait_for_assignment(settings)
        produced = produce_steady(bootstrap, settings, workload, rate, seconds)
        scored_at_stop = monitored_counts([port])[0]
        held_at_stop = read_checkpoint_page(port).get("n_held_items", 0)
        metric_lag, committed = source_lag_gauge(port), committed_lag(settings)
        caught_up_s = wait_until_scored(port, produced.n_predictions, drain_limit_s)
    finally:
        stop_worker(proc)
    alerts = read_alerts(settings)
    latencies, unmatched = latencies_by_trigger(alerts, produced)
    return SteadyRun(rate, seconds, workload.summary, produced, scored_at_stop, held_at_stop, metric_lag, group, committed,
                     caught_up_s, drain_limit_s, alerts, unmatched, latencies,
                     ceiling(bootstrap, settings.topics, produced.n_predictions + produced.n_outcomes))
