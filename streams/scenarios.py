"""Synthetic production traffic with a known change, for the demo, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from schemas.events import OutcomeEvent, PredictionEvent

__all__ = ["SpeechScenario"]

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
