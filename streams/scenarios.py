"""Synthetic production traffic with a known change, for the demo, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import datetime, timedelta, timezone

import numpy as np

from schemas.events import OutcomeEvent, PredictionEvent

__all__ = ["LearnableSpeechScenario", "SpeechScenario", "Utterance"]

_WORDS = ("yes", "no", "stop", "go", "left", "right", "up", "down", "on", "off")
_ACCENTS = ("en-GB", "en-US", "en-IN", "en-AU")


@dataclass(frozen=True)
class SpeechScenario:
    """A keyword-spotting model whose per-utterance accuracy decays part-way through.

    Utterances come one per ``seconds_apart`` of event time.  Before
    ``change_at`` the model is right with probability ``accuracy_before``,
    after it with ``accuracy_after`` (a new microphone firmware, say, lowers the
    signal-to-noise ratio, which shows in the features too).
    """

    n_events: int = 12_000
    change_at: int = 6_000
    accuracy_before: float = 0.92
    accuracy_after: float = 0.80
    seed: int = 7
    model: str = "speech-asr"
    model_version: str = "1"
    start: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)
    seconds_apart: float = 1.0

    def events(self) -> Iterator[tuple[PredictionEvent, OutcomeEvent]]:
        """Each utterance's prediction and, right behind it in event time, its outcome."""
        rng = np.random.default_rng(self.seed)
        for i in range(self.n_events):
            decayed = i >= self.change_at
            accuracy = self.accuracy_after if decayed else self.accuracy_before
            truth = _WORDS[int(rng.integers(len(_WORDS)))]
            correct = rng.random() < accuracy
            predicted = truth if correct else _WORDS[(_WORDS.index(truth) + 1 + int(rng.integers(len(_WORDS) - 1))) % len(_WORDS)]
            confidence = float(np.clip(rng.normal(0.9 if correct else 0.6, 0.08), 0.0, 1.0))
            snr = float(rng.normal(14.0 if decayed else 22.0, 3.0))
            t = self.start + timedelta(seconds=i * self.seconds_apart)
            accent = _ACCENTS[int(rng.integers(len(_ACCENTS)))]
            pid = f"{self.model}-{self.seed}-{i}"
            prediction = PredictionEvent(
                prediction_id=pid, model=self.model, model_version=self.model_version, event_time=t,
                features={"snr_db": round(snr, 2), "duration_ms": int(rng.integers(300, 1500)),
                          "accent": accent},
                prediction=predicted, confidence=round(confidence, 4),
                segment=accent,
            )
            outcome = OutcomeEvent(prediction_id=pid, event_time=t + timedelta(seconds=0.5), actual=truth)
            yield prediction, outcome


@dataclass(frozen=True)
class Utterance:
    """One utterance of a :class:`LearnableSpeechScenario`: what the app sees, and the truth."""

    index: int
    prediction_id: str
    event_time: datetime
    features: dict[str, float | int | str]
    truth: str
    decayed: bool


@dataclass(frozen=True)
class LearnableSpeechScenario:
    """Keyword spotting whose features carry the label, so a learner can win accuracy back.

    Each utterance has an acoustic embedding ``e0..e{dim-1}``: the spoken
    word's centroid plus Gaussian noise of ``noise`` per dimension, so a model
    trained on this stream is right about 93% of the time.  At ``change_at`` a
    new microphone firmware reorders the embedding's channels (and lowers the
    signal-to-noise ratio): a model trained before the change is now mostly
    wrong, while one retrained on data since the change is as good as before.

    Unlike :class:`SpeechScenario`, predictions are not part of the scenario:
    the app predicts each utterance with whatever model it serves (see
    :meth:`prediction`); :meth:`factory_predict` is the model that shipped
    (nearest centroid, fitted before the change) for when nothing is served yet.

    Examples
    --------
    >>> s = LearnableSpeechScenario(n_events=4000, change_at=2000)
    >>> utterances = list(s.utterances())
    >>> before = [u.truth == s.factory_predict(u.features) for u in utterances[:2000]]
    >>> after = [u.truth == s.factory_predict(u.features) for u in utterances[2000:]]
    >>> round(sum(before) / len(before), 2) > 0.9, round(sum(after) / len(after), 2) < 0.3
    (True, True)
    """

    n_events: int = 12_000
    change_at: int = 6_000
    dim: int = 8
    noise: float = 0.45
    seed: int = 7
    model: str = "speech-asr"
    start: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)
    seconds_apart: float = 1.0
    outcome_delay_seconds: float = 0.5
    words: tuple[str, ...] = field(default=_WORDS)
    # None: the firmware rotates every channel (the shipped model is then mostly wrong).  A pair: it swaps just
    # those two channels, a milder decay (channels 2 and 7: the shipped model falls from about 95% to about 80%).
    swapped_channels: tuple[int, int] | None = None

    @cached_property
    def _centroids(self) -> np.ndarray:
        # The centroids are part of the world, not of one run: a fixed seed,
        # so the factory model and every run agree on them.
        rng = np.random.default_rng(20261101)
        c = rng.normal(0.0, 1.0, (len(self.words), self.dim))
        return 2.0 * c / np.linalg.norm(c, axis=1, keepdims=True)

    def utterances(self) -> Iterator[Utterance]:
        """Every utterance in event-time order, with its features and the word really spoken."""
        rng = np.random.default_rng(self.seed)
        centroids = self._centroids
        reordered = np.roll(np.arange(self.dim), 1)
        if self.swapped_channels is not None:
            a, b = self.swapped_channels
            reordered = np.arange(self.dim)
            reordered[[a, b]] = reordered[[b, a]]
        for i in range(self.n_events):
            decayed = i >= self.change_at
            k = int(rng.integers(len(self.words)))
            e = centroids[k] + rng.normal(0.0, self.noise, self.dim)
            if decayed:
                e = e[reordered]
            features: dict[str, float | int | str] = {f"e{j}": round(float(e[j]), 4) for j in range(self.dim)}
            features["snr_db"] = round(float(rng.normal(14.0 if decayed else 22.0, 3.0)), 2)
            features["accent"] = _ACCENTS[int(rng.integers(len(_ACCENTS)))]
            yield Utterance(
                index=i, prediction_id=f"{self.model}-{self.seed}-{i}",
                event_time=self.start + timedelta(seconds=i * self.seconds_apart),
                features=features, truth=self.words[k], decayed=decayed,
            )

    def history(self, n: int) -> Iterator[Utterance]:
        """``n`` utterances from before this stream, none decayed: the data a shipped model was trained on."""
        earlier = replace(self, n_events=n, change_at=n, seed=self.seed + 1000,
                          start=self.start - timedelta(seconds=n * self.seconds_apart))
        return earlier.utterances()

    def factory_predict(self, features: dict[str, float | int | str]) -> str:
        """The shipped model: the nearest pre-change centroid."""
        e = np.array([float(features[f"e{j}"]) for j in range(self.dim)])
        return self.words[int(np.argmin(np.linalg.norm(self._centroids - e, axis=1)))]

    def prediction(self, u: Utterance, predicted: str, model_version: str, confidence: float | None = None) -> PredictionEvent:
        """The event the app publishes for its prediction of ``u``."""
        return PredictionEvent(
            prediction_id=u.prediction_id, model=self.model, model_version=model_version, event_time=u.event_time,
            features=u.features, prediction=predicted, confidence=confidence, segment=str(u.features["accent"]),
        )

    def outcome(self, u: Utterance) -> OutcomeEvent:
        """The ground truth of ``u``, a moment after it in event time."""
        return OutcomeEvent(prediction_id=u.prediction_id, event_time=u.event_time + timedelta(seconds=self.outcome_delay_seconds),
                            actual=u.truth)

    def utterance_at(self, event_time: datetime) -> int:
        """The index of the utterance at ``event_time``."""
        return int((event_time - self.start).total_seconds() / self.seconds_apart)
