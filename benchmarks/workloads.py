"""The benchmark's workloads: a monitor config and a seeded stream of raw prediction and outcome values.

Each workload yields chunks of ``(key, prediction JSON, outcome JSON)`` exactly
as the topics carry them, so the worker (through Kafka) and the offline pure
path (through :class:`~detectors.ingest.stage.JoinStage`) read the same bytes.
The numeric workloads are generated with numpy a chunk at a time, so that a
large backlog never sits in memory at once (the offline measurement reads its
peak resident memory).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import yaml

from streams.demo import DEMO_CONFIG
from streams.scenarios import SpeechScenario

__all__ = ["WORKLOADS", "Chunk", "Draw", "NumericWorkload", "SpeechWorkload", "SteadyWorkload", "Workload"]

Chunk = list[tuple[bytes, bytes, bytes]]
CHUNK = 10_000
START = np.datetime64("2026-11-01T00:00:00.000", "ms")


@dataclass(frozen=True)
class SpeechWorkload:
    """Today's backlog: the speech scenario, one model, performance monitors only."""

    name: str = "speech"
    default_predictions: int = 30_000
    n_models: int = 1

    def event_seconds(self, n_predictions: int) -> float:
        return n_predictions * SpeechScenario.seconds_apart

    @property
    def summary(self) -> str:
        return "1 model (speech-asr), 3 features unwatched, accuracy + Bernoulli GLR on outcomes"

    def config(self) -> str:
        return DEMO_CONFIG

    def chunks(self, n_predictions: int) -> Iterator[Chunk]:
        chunk: Chunk = []
        for prediction, outcome in SpeechScenario(n_events=n_predictions, change_at=n_predictions // 2).events():
            chunk.append((prediction.prediction_id.encode(), prediction.model_dump_json().encode(),
                          outcome.model_dump_json().encode()))
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


@dataclass(frozen=True)
class NumericWorkload:
    """``n_models`` models with ``n_features`` standard-normal numeric features each, traffic spread evenly.

    Every prediction has an outcome, half a second of event time later.  From
    the middle of the stream on, ``n_drifting_models`` models see their first
    ``n_drifting_features`` features shift by ``shift`` standard deviations;
    each value of an ``outliers`` feature is a 20-sd spike with probability
    ``spike_rate``.  So the monitors have something to find, as in production,
    but most of the traffic is quiet.
    """

    name: str
    n_models: int
    n_features: int
    task: Literal["classification", "regression"]
    default_predictions: int
    n_outlier_features: int
    reference_size: int
    window: int
    performance_window: int
    n_drifting_models: int
    n_drifting_features: int = 2
    shift: float = 1.0
    spike_rate: float = 1e-4
    seconds_apart: float = 0.01
    seed: int = 11

    @property
    def summary(self) -> str:
        return (f"{self.n_models:,} model(s) x {self.n_features} numeric features ({self.task}), drift on every "
                f"feature and the predictions, outliers on {self.n_outlier_features} feature(s) per model; "
                f"reference {self.reference_size}, window {self.window}; {self.n_drifting_models} model(s) drift "
                f"on {self.n_drifting_features} features half-way")

    def event_seconds(self, n_predictions: int) -> float:
        return n_predictions * self.seconds_apart

    def model(self, index: int) -> str:
        return self.name if self.n_models == 1 else f"{self.name}-{index:04d}"

    def config(self) -> str:
        if self.task == "classification":
            performance = {"metric": "accuracy", "window": self.performance_window, "threshold": 0.55,
                           "hysteresis": 0.02}
        else:
            performance = {"metric": "mae", "window": self.performance_window, "threshold": 1.5, "hysteresis": 0.1}
        features = {f"f{j}": {"kind": "numeric", "drift": True,
                              "outliers": j >= self.n_features - self.n_outlier_features}
                    for j in range(self.n_features)}
        spec = {"task": self.task, "performance": performance, "features": features, "prediction_drift": True,
                "drift": {"reference_size": self.reference_size, "window": self.window}}
        return yaml.safe_dump({"models": {self.model(i): spec for i in range(self.n_models)}}, sort_keys=False)

    def chunks(self, n_predictions: int) -> Iterator[Chunk]:
        weights = np.random.default_rng(self.seed).normal(0.0, 2.0 / np.sqrt(self.n_features), self.n_features)
        models = [self.model(i) for i in range(self.n_models)]
        names = ", ".join(f'"f{j}": %s' for j in range(self.n_features))
        prediction_template = ('{"prediction_id": "%s", "model": "%s", "model_version": "1", "event_time": "%sZ", '
                               f'"features": {{{names}}}, "prediction": %s%s}}')
        outcome_template = '{"prediction_id": "%s", "event_time": "%sZ", "actual": %s}'
        for first in range(0, n_predictions, CHUNK):
            rng = np.random.default_rng([self.seed, first])
            index = np.arange(first, min(first + CHUNK, n_predictions))
            model_of = index % self.n_models
            x = rng.normal(size=(len(index), self.n_features))
            drifting = (index >= n_predictions // 2) & (model_of < self.n_drifting_models)
            x[drifting, : self.n_drifting_features] += self.shift
            if self.n_outlier_features:
                spikes = rng.random((len(index), self.n_outlier_features)) < self.spike_rate
                x[:, -self.n_outlier_features:] += np.where(spikes, 20.0, 0.0)
            score = x @ weights
            if self.task == "classification":
                p = 1.0 / (1.0 + np.exp(-score))
                predicted = (p > 0.5).astype(int)
                actual = (rng.random(len(index)) < p).astype(int)
                extra = [f', "confidence": {c:.4f}' for c in np.maximum(p, 1 - p)]
                predicted_text, actual_text = predicted.astype(str), actual.astype(str)
            else:
                extra = [""] * len(index)
                predicted_text = np.char.mod("%.4f", score)
                actual_text = np.char.mod("%.4f", score + rng.normal(size=len(index)))
            millis = np.round(index * self.seconds_apart * 1000).astype("timedelta64[ms]")
            predicted_at = np.datetime_as_string(START + millis, unit="ms")
            observed_at = np.datetime_as_string(START + millis + np.timedelta64(500, "ms"), unit="ms")
            values = np.char.mod("%.4f", x).tolist()
            chunk: Chunk = []
            for k, i in enumerate(index.tolist()):
                pid = f"{self.name}-{i}"
                prediction = prediction_template % (pid, models[model_of[k]], predicted_at[k], *values[k],
                                                    predicted_text[k], extra[k])
                outcome = outcome_template % (pid, observed_at[k], actual_text[k])
                chunk.append((pid.encode(), prediction.encode(), outcome.encode()))
            yield chunk


Workload = SpeechWorkload | NumericWorkload

Draw = tuple[str, str, int, int]
"""One steady-rate prediction before it is stamped: its id, feature ``x`` as JSON text, predicted and actual class."""


@dataclass(frozen=True)
class SteadyWorkload:
    """The steady-rate run's stream: one model that turns bad and recovers every ``phase_predictions``, endlessly.

    Good phases: the model is right with probability ``accuracy_good`` and its
    feature ``x`` is standard normal; bad phases: right with ``accuracy_bad``
    and ``x`` shifted by ``shift`` standard deviations.  The accuracy threshold
    and the drift test on ``x`` fire in every bad phase and resolve in the next
    good one, so the run has alerts throughout, of both kinds: from labelled
    examples and from predictions.  There are no event times here: the steady
    producer stamps each event with the wall clock at which it sends it.
    """

    phase_predictions: int
    accuracy_good: float = 0.95
    accuracy_bad: float = 0.70
    shift: float = 1.0
    model: str = "steady"
    seed: int = 5

    @property
    def summary(self) -> str:
        return (f"1 model ({self.model}), accuracy {self.accuracy_good} / {self.accuracy_bad} and feature x shifted "
                f"{self.shift:g} sd, alternating every {self.phase_predictions:,} predictions; accuracy threshold + "
                "default detector on outcomes, drift test on x")

    def config(self) -> str:
        spec = {"task": "classification",
                "performance": {"metric": "accuracy", "window": 500, "threshold": 0.85, "hysteresis": 0.02},
                "features": {"x": {"kind": "numeric", "drift": True}},
                "drift": {"reference_size": 2000, "window": 500}}
        return yaml.safe_dump({"models": {self.model: spec}}, sort_keys=False)

    def draws(self) -> Iterator[Draw]:
        """Predictions without end, generated with numpy a chunk at a time."""
        for first in itertools.count(0, CHUNK):
            rng = np.random.default_rng([self.seed, first])
            index = np.arange(first, first + CHUNK)
            bad = (index // self.phase_predictions) % 2 == 1
            x = rng.normal(size=CHUNK) + np.where(bad, self.shift, 0.0)
            actual = rng.integers(0, 2, size=CHUNK)
            correct = rng.random(CHUNK) < np.where(bad, self.accuracy_bad, self.accuracy_good)
            predicted = np.where(correct, actual, 1 - actual)
            ids = [f"{self.model}-{i}" for i in index.tolist()]
            yield from zip(ids, np.char.mod("%.4f", x).tolist(), predicted.tolist(), actual.tolist())

    def prediction(self, draw: Draw, event_time: str) -> bytes:
        pid, x, predicted, _actual = draw
        return (f'{{"prediction_id": "{pid}", "model": "{self.model}", "model_version": "1", '
                f'"event_time": "{event_time}", "features": {{"x": {x}}}, "prediction": {predicted}}}').encode()

    def outcome(self, draw: Draw, event_time: str) -> bytes:
        pid, _x, _predicted, actual = draw
        return f'{{"prediction_id": "{pid}", "event_time": "{event_time}", "actual": {actual}}}'.encode()

WORKLOADS: dict[str, Workload] = {
    "speech": SpeechWorkload(),
    # The DriftSpec defaults (reference 2,000, window 500): 30k predictions judge 56 windows.
    "features20": NumericWorkload(
        "features20", n_models=1, n_features=20, task="regression", default_predictions=30_000,
        n_outlier_features=2, reference_size=2000, window=500, performance_window=500, n_drifting_models=1,
    ),
    # Small windows, so that 200 predictions a model complete the reference and judge two windows:
    # the defaults would need more than 2,000 predictions per model, 2M in all, before any test ran.
    "models1000": NumericWorkload(
        "models1000", n_models=1000, n_features=5, task="classification", default_predictions=200_000,
        n_outlier_features=1, reference_size=100, window=50, performance_window=100, n_drifting_models=10,
    ),
}
