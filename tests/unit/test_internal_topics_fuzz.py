"""Garbage on the internal topics (monitor-input, the join's changelog): refused with a reason, never a crash.

The state changelog's decoder is fuzzed in tests/unit/test_signed_state.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.ingest.join_log import POSITION_KEY, JoinLog, rebuild
from detectors.ingest.merge import MonitorInputOrder, decode_monitor_input
from schemas.decoding import Rejection
from schemas.events import SIDES, MonitorBatch

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
N_PARTITIONS = 2


def _genuine_log() -> list[tuple[bytes, bytes | None]]:
    """Two steps of one partition: p1 and p2 wait, then p1 is resolved."""
    log = JoinLog()
    first = log.step(0, [("prediction", "p1", 4, b'{"a": 1}'), ("prediction", "p2", 5, b'{"a": 2}')], [],
                     {"prediction": 6}, {"prediction": T0})
    second = log.step(0, [], [("prediction", "p1")], {"outcome": 3}, {"prediction": T0, "outcome": T0})
    return first.entries + first.position + second.entries + second.position


GENUINE = _genuine_log()
GENUINE_KEYS = {key for key, _ in GENUINE}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)
# Values near what the log holds (JSON, a JSON header line then bytes) as well as plain noise.
garbage_values = st.one_of(
    st.none(), st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(json_values, st.binary(max_size=20)).map(lambda hv: json.dumps(hv[0]).encode() + b"\n" + hv[1]),
    st.builds(lambda seq, keys: json.dumps({"seq": seq, "keys": keys}).encode(), st.integers(-2, 3), json_values),
)
garbage_keys = st.one_of(st.none(), st.binary(max_size=20), st.sampled_from([b"resolved/0", b"resolved/9",
                                                                             b"prediction/", b"outcome/p9", b"x/y"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(garbage_keys, garbage_values), max_size=12))
def test_foreign_records_beside_a_genuine_join_log_are_refused_and_leave_it_intact(garbage: list) -> None:  # type: ignore[type-arg]
    garbage = [(k, v) for k, v in garbage if k not in GENUINE_KEYS]  # those would overwrite what they test
    expected, got = rebuild(GENUINE), rebuild(GENUINE + garbage)
    assert (got.seq, got.next_offsets, got.clocks) == (expected.seq, expected.next_offsets, expected.clocks)
    genuine = [e for e in got.pending if e.prediction_id == "p2"]
    assert genuine == expected.pending  # what was waiting still waits; p1 stays resolved
    # A foreign entry shaped like ours comes back as waiting: the join stage decodes its bytes and
    # dead-letters what is not an event (JoinStage.restore), as for any source record.
    assert all(e.side in SIDES for e in got.pending)
    assert {k for k, _ in got.refused} <= {k for k, _ in garbage} and all(reason for _, reason in got.refused)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([POSITION_KEY, b"resolved/0", b"prediction/p2"]), garbage_values),
                min_size=1, max_size=3))
def test_a_foreign_position_or_entry_overwriting_ours_is_refused_without_a_crash(garbage: list) -> None:  # type: ignore[type-arg]
    got = rebuild(GENUINE + garbage)
    assert all(e.side in SIDES and e.offset >= 0 for e in got.pending)
    assert all(offset >= 0 for offset in got.next_offsets.values())
    assert all(c is None or c.tzinfo is not None for c in got.clocks.values())


def _watermark_batch(source: str, when: datetime) -> bytes:
    return MonitorBatch(watermarks={source: when}).model_dump_json().encode()


monitor_input_values = st.one_of(
    st.none(), st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(_watermark_batch, st.text(max_size=14) | st.sampled_from(["prediction/1", "outcome/0", "outcome/2"]),
              st.datetimes(timezones=st.just(timezone.utc))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(monitor_input_values, min_size=1, max_size=6))
def test_monitor_input_garbage_is_refused_and_what_passes_merges(values: list) -> None:  # type: ignore[type-arg]
    merge: MonitorInputOrder[int] = MonitorInputOrder(N_PARTITIONS, idle_seconds=5, wall_time=0.0)
    for offset, raw in enumerate(values):
        decoded = decode_monitor_input(raw, 4096, N_PARTITIONS)
        if isinstance(decoded, Rejection):
            assert decoded.reason
            continue
        merge.add(decoded, offset, wall_time=float(offset))  # an accepted batch never stops the merge
    merge.release(wall_time=60.0)


def test_a_watermark_of_an_unknown_partition_is_refused() -> None:
    refused = decode_monitor_input(_watermark_batch("prediction/2", T0 + timedelta(days=1)), 4096, N_PARTITIONS)
    assert isinstance(refused, Rejection) and refused.kind == "schema" and "prediction/2" in refused.reason


def test_a_settled_source_without_its_watermark_is_refused() -> None:
    raw = json.dumps({"watermarks": {"prediction/0": "2026-01-01T00:00:00Z"}, "settled": ["outcome/0"]}).encode()
    refused = decode_monitor_input(raw, 4096, N_PARTITIONS)
    assert isinstance(refused, Rejection) and refused.kind == "schema" and "outcome/0" in refused.reason
