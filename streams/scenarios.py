"""Synthetic production traffic with a known change, for the demo, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from schemas.events import Alert, FeatureValue, Label, OutcomeEvent, PredictionEvent
from streams.exceptions import UnknownScenario

__all__ = [
    "SCENARIOS",
    "FraudScenario",
    "LearnableSpeechScenario",
    "RecommenderScenario",
    "RobotScenario",
    "SpeechAccentScenario",
    "SpeechScenario",
    "StockScenario",
    "Utterance",
    "make_scenario",
]

_WORDS = ("yes", "no", "stop", "go", "left", "right", "up", "down", "on", "off")
_ACCENTS = ("en-GB", "en-US", "en-IN", "en-AU")


class _Clock:
    """Event time and index of a scenario's predictions, one every ``seconds_apart`` from ``start``."""

    n_events: int
    change_at: int
    start: datetime
    seconds_apart: float

    @property
    def change_time(self) -> datetime:
        """Event time of the first prediction after the change."""
        return self.time_of(self.change_at)

    def time_of(self, index: int) -> datetime:
        """Event time of prediction ``index``."""
        return self.start + timedelta(seconds=index * self.seconds_apart)

    def index_at(self, event_time: datetime) -> int:
        """Index of the prediction made at ``event_time``."""
        return round((event_time - self.start).total_seconds() / self.seconds_apart)

    def planned_before_change(self, alert: Alert) -> bool:
        """Whether ``alert`` is one the scenario causes before its change on purpose (none by default)."""
        return False


@dataclass(frozen=True)
class SpeechScenario(_Clock):
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

    EXPECTED_MONITORS: ClassVar[frozenset[str]] = frozenset({"performance"})
    MONITORS: ClassVar[str] = """\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.85, hysteresis: 0.02}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 1000000, warmup: 3000}}
"""

    def stream(self) -> Iterator[PredictionEvent | OutcomeEvent]:
        """The events of :meth:`events` one at a time, each outcome right behind its prediction."""
        for prediction, outcome in self.events():
            yield prediction
            yield outcome

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


# --------------------------------------------------------------------------------------------------------------------
# The use-case scenarios: each a seeded generator of prediction and outcome events in arrival order, with the monitor
# config that watches it.

Event = PredictionEvent | OutcomeEvent
_START = datetime(2026, 11, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class _Labels:
    """Which predictions get an outcome, how long after the prediction it arrives, and what it says."""

    index: npt.NDArray[np.intp]
    delay_seconds: npt.NDArray[np.float64]
    actual: list[Label]


@dataclass(frozen=True)
class _Scenario(_Clock):
    """What every use-case scenario shares: its clock, its checks, and its stream in arrival order."""

    n_events: int = 12_000
    change_at: int = 6_000
    seed: int = 7
    start: datetime = _START
    seconds_apart: float = 1.0

    MODEL: ClassVar[str]
    MONITORS: ClassVar[str]
    #: The monitors (Alert.monitor) a backtest of the default scenario fires after the change.
    EXPECTED_MONITORS: ClassVar[frozenset[str]]

    def __post_init__(self) -> None:
        if not 0 < self.change_at < self.n_events:
            raise ValueError(f"change_at must be between 0 and n_events ({self.n_events}), got {self.change_at}")
        if not self.seconds_apart > 0:
            raise ValueError("seconds_apart must be positive")

    def stream(self) -> Iterator[Event]:
        """Predictions and outcomes in arrival order: each outcome at its own event time, after its prediction."""
        predictions, labels = self._generate(np.random.default_rng(self.seed))
        n = len(predictions)
        offsets = np.arange(n) * self.seconds_apart
        arrivals = offsets[labels.index] + labels.delay_seconds
        # Stable: a prediction goes before an outcome arriving at the same instant.
        for k in np.argsort(np.concatenate([offsets, arrivals]), kind="stable"):
            if k < n:
                yield predictions[k]
            else:
                j = k - n
                yield OutcomeEvent(prediction_id=predictions[labels.index[j]].prediction_id,
                                   event_time=self.start + timedelta(seconds=float(arrivals[j])),
                                   actual=labels.actual[j])

    def _generate(self, rng: np.random.Generator) -> tuple[list[PredictionEvent], _Labels]:
        raise NotImplementedError

    def _prediction(self, i: int, features: dict[str, FeatureValue], prediction: Label,
                    confidence: float | None = None, segment: str | None = None,
                    model_version: str = "1") -> PredictionEvent:
        return PredictionEvent(
            prediction_id=f"{self.MODEL}-{self.seed}-{i}", model=self.MODEL, model_version=model_version,
            event_time=self.time_of(i), features=features, prediction=prediction, confidence=confidence,
            segment=segment,
        )


def _after(scenario: _Scenario) -> npt.NDArray[np.bool_]:
    return np.arange(scenario.n_events) >= scenario.change_at


def _clipped_normal(rng: np.random.Generator, mean: npt.NDArray[np.float64] | float, sd: float, low: float,
                    high: float, size: int) -> npt.NDArray[np.float64]:
    return np.round(np.clip(rng.normal(mean, sd, size), low, high), 4).astype(np.float64)


def _right_behind(n: int, actual: npt.NDArray[Any], delay_seconds: float) -> _Labels:
    """Every prediction labelled, ``delay_seconds`` after it."""
    return _Labels(np.arange(n), np.full(n, delay_seconds), actual.tolist())


@dataclass(frozen=True)
class SpeechAccentScenario(_Scenario):
    """Speech recognition whose accuracy decays for one accent only.

    At ``change_at`` a new telephony partner starts carrying the
    ``decayed_accent`` (en-IN) calls over a narrow-band line: their
    signal-to-noise ratio ``snr_db`` falls from about 22 dB to 12 dB and the
    model's accuracy on them from 0.92 to 0.60, while the other accents stay at
    0.92.  Outcomes arrive half a second after each prediction.

    Expected alerts after the change: ``performance`` in segment en-IN (its
    accuracy below the 0.78 threshold), a model-wide Bernoulli GLR alert (the
    pooled error rate doubles, from 8% to 16%, while the pooled accuracy, 0.84,
    stays above the threshold), and ``feature_drift`` on ``snr_db``, model-wide
    and in segment en-IN.  Nothing on the other accents, ``duration_ms`` or
    ``accent``.  The GLR's horizon of a million examples and 3,000-example
    warm-up keep it quiet before the change on every seed we tried; a segment's
    GLR counts the warm-up in its own examples, so en-IN's is still warming up
    at the change and the threshold is what pages for it.
    """

    decayed_accent: str = "en-IN"
    accuracy_before: float = 0.92
    accuracy_after: float = 0.60
    snr_before: float = 22.0
    snr_after: float = 12.0

    MODEL: ClassVar[str] = "speech-asr"
    EXPECTED_MONITORS: ClassVar[frozenset[str]] = frozenset({"performance", "feature_drift"})
    MONITORS: ClassVar[str] = """\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.78, hysteresis: 0.03}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 1000000, warmup: 3000}}
    segments: {max_segments: 8}
    features:
      snr_db: {kind: numeric}
      duration_ms: {kind: numeric}
      accent: {kind: categorical}
    drift: {reference_size: 1000, window: 500, false_alarm_horizon: 1000000}
"""

    def _generate(self, rng: np.random.Generator) -> tuple[list[PredictionEvent], _Labels]:
        n = self.n_events
        accent = np.array(_ACCENTS)[rng.integers(len(_ACCENTS), size=n)]
        hit = _after(self) & (accent == self.decayed_accent)
        truth = rng.integers(len(_WORDS), size=n)
        correct = rng.random(n) < np.where(hit, self.accuracy_after, self.accuracy_before)
        predicted = np.where(correct, truth, (truth + 1 + rng.integers(len(_WORDS) - 1, size=n)) % len(_WORDS))
        confidence = _clipped_normal(rng, np.where(correct, 0.9, 0.6), 0.08, 0.0, 1.0, n)
        snr = np.round(rng.normal(np.where(hit, self.snr_after, self.snr_before), 3.0), 2)
        duration = rng.integers(300, 1500, size=n)
        words = np.array(_WORDS)
        predictions = [
            self._prediction(i, {"snr_db": float(snr[i]), "duration_ms": int(duration[i]), "accent": str(accent[i])},
                             str(words[predicted[i]]), float(confidence[i]), segment=str(accent[i]))
            for i in range(n)
        ]
        return predictions, _right_behind(n, words[truth], 0.5)


@dataclass(frozen=True)
class StockScenario(_Scenario):
    """A regression model predicting each ticker's next log return; an up-trend reverses.

    Four tickers take turns, one event per bar.  Features: ``return_1`` (the
    latest log return), ``volume_z`` (volume in standard deviations of its
    usual level) and ``ticker``.  Before ``change_at`` returns average
    +0.1% per bar with 1% volatility; after it the trend reverses: -0.3% per
    bar with 2% volatility and heavier volume.  The model, fitted on the
    up-trend, keeps predicting about +0.1%, so its absolute error doubles.  At
    :attr:`spike_at` (two before the change, two after) a price spike of
    ``spike_size`` volatilities (20, far beyond the outlier limit of 10 robust
    standard deviations) hits ``return_1``.  The actual return arrives half a
    second after each prediction.

    Expected alerts: one ``outliers`` alert (kind ``outlier``, feature
    ``return_1``) on each spike's own event, including the two before the
    change; after the change, ``trend`` and ``feature_drift`` on ``return_1``,
    ``feature_drift`` on ``volume_z`` and ``performance`` (MAE above 0.011, and
    ADWIN on the absolute error).  Nothing on ``ticker``.  The performance
    detector is ADWIN, not the regression default ``gaussian_glr``: an absolute
    error is skewed (its mean lies above its median), which the Gaussian GLR's
    median-centred reference reads as a standing rise, so it false-alarms on a
    stationary stream.
    """

    drift_before: float = 0.001
    volatility_before: float = 0.01
    drift_after: float = -0.003
    volatility_after: float = 0.02
    spike_size: float = 20.0

    MODEL: ClassVar[str] = "stock-returns"
    TICKERS: ClassVar[tuple[str, ...]] = ("AAPL", "MSFT", "NVDA", "ASML")
    EXPECTED_MONITORS: ClassVar[frozenset[str]] = frozenset({"performance", "feature_drift", "trend", "outliers"})
    MONITORS: ClassVar[str] = """\
models:
  stock-returns:
    task: regression
    performance: {metric: mae, window: 500, threshold: 0.011, hysteresis: 0.001}
    detector: {name: adwin}
    features:
      return_1: {kind: numeric, drift: true, outliers: true, trend: true}
      volume_z: {kind: numeric}
      ticker: {kind: categorical}
    drift: {reference_size: 1000, window: 500, false_alarm_horizon: 1000000, outlier_min_zscore: 10}
"""

    @property
    def spike_at(self) -> tuple[int, ...]:
        """Indices of the events whose ``return_1`` is a price spike: two before the change, two after."""
        after = self.n_events - self.change_at
        return (int(self.change_at * 0.45), int(self.change_at * 0.8),
                self.change_at + int(after * 0.35), self.change_at + int(after * 0.75))

    def planned_before_change(self, alert: Alert) -> bool:
        """The spikes before the change are flagged as outliers on purpose."""
        return alert.kind == "outlier" and self.index_at(alert.event_time) in self.spike_at

    def _generate(self, rng: np.random.Generator) -> tuple[list[PredictionEvent], _Labels]:
        n, lag = self.n_events, len(self.TICKERS)
        # r[i] is the return of event i's bar; the same ticker's next bar is event i + lag.
        later = np.arange(n + lag) >= self.change_at
        volatility = np.where(later, self.volatility_after, self.volatility_before)
        mean = np.where(later, self.drift_after, self.drift_before)
        r = rng.normal(mean, volatility)
        spikes = np.array(self.spike_at)
        r[spikes] = mean[spikes] + np.resize([1.0, -1.0], len(spikes)) * self.spike_size * volatility[spikes]
        volume = rng.normal(np.where(later[:n], 0.8, 0.0), np.where(later[:n], 1.3, 1.0))
        volume[spikes] += 5.0
        predicted = self.drift_before + 0.05 * (r[:n] - self.drift_before) + rng.normal(0.0, 0.0005, n)
        predictions = [
            self._prediction(i, {"return_1": round(float(r[i]), 6), "volume_z": round(float(volume[i]), 3),
                                 "ticker": self.TICKERS[i % lag]}, round(float(predicted[i]), 6))
            for i in range(n)
        ]
        return predictions, _right_behind(n, np.round(r[lag:], 6), 0.5)


@dataclass(frozen=True)
class RobotScenario(_Scenario):
    """A packaging robot's vision classifier (box, tube, envelope, bag); a new shape appears.

    At ``change_at`` the warehouse starts shipping cones (``new_shape_share``,
    5% of items) and the mix moves from boxes towards envelopes.  The model was
    never trained on cones.  It has an open-set reject option, as industrial
    vision systems do: an item far from every shape it knows is predicted
    ``"unknown"`` (with a low confidence) rather than forced into a known
    class, and never before the change.  The operators' label of such an item
    is ``"cone"``, so the model is wrong on every cone.  Features: ``weight_g``
    (which depends on the shape, so it drifts with the mix) and ``conveyor``
    (which does not).  Outcomes come from a check station 5 s downstream.

    Expected alerts after the change: ``new_category`` on the predictions
    ("unknown" in 5% of them, above the 1% limit), ``prediction_drift`` (the
    class mix), ``feature_drift`` on ``weight_g`` and ``performance`` (accuracy
    0.92 against a 0.93 threshold, and the Bernoulli GLR).  Nothing on
    ``conveyor``.
    """

    new_shape_share: float = 0.05
    accuracy_known: float = 0.97

    MODEL: ClassVar[str] = "packaging-vision"
    SHAPES: ClassVar[tuple[str, ...]] = ("box", "tube", "envelope", "bag")
    NEW_SHAPE: ClassVar[str] = "cone"
    UNKNOWN: ClassVar[str] = "unknown"
    MIX_BEFORE: ClassVar[tuple[float, ...]] = (0.45, 0.20, 0.20, 0.15)
    MIX_AFTER: ClassVar[tuple[float, ...]] = (0.25, 0.20, 0.40, 0.15)
    # Mean and sd of the weight of each shape in SHAPES, then of the new shape.
    WEIGHT_G: ClassVar[tuple[tuple[float, float], ...]] = ((850, 150), (300, 50), (120, 30), (500, 120), (420, 60))
    EXPECTED_MONITORS: ClassVar[frozenset[str]] = frozenset(
        {"new_category", "prediction_drift", "feature_drift", "performance"})
    MONITORS: ClassVar[str] = """\
models:
  packaging-vision:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.93, hysteresis: 0.02}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 1000000}}
    prediction_drift: true
    features:
      weight_g: {kind: numeric}
      conveyor: {kind: categorical}
    drift: {reference_size: 1000, window: 500, false_alarm_horizon: 1000000, max_unseen_rate: 0.01}
"""

    def _generate(self, rng: np.random.Generator) -> tuple[list[PredictionEvent], _Labels]:
        n, k = self.n_events, len(self.SHAPES)
        after = _after(self)
        mix_after = np.append(np.array(self.MIX_AFTER) * (1 - self.new_shape_share), self.new_shape_share)
        # Index k is the new shape, drawn only after the change.
        shape = np.where(after, rng.choice(k + 1, size=n, p=mix_after), rng.choice(k, size=n, p=self.MIX_BEFORE))
        correct = (rng.random(n) < self.accuracy_known) & (shape < k)
        wrong = (shape + 1 + rng.integers(k - 1, size=n)) % k
        predicted = np.where(shape == k, k, np.where(correct, shape, wrong))
        confidence = _clipped_normal(rng, np.select([shape == k, correct], [0.35, 0.93], 0.65), 0.06, 0.0, 1.0, n)
        mean_sd = np.array(self.WEIGHT_G)
        weight = np.round(rng.normal(mean_sd[shape, 0], mean_sd[shape, 1]).clip(10.0), 1)
        conveyor = np.array(["A", "B", "C"])[rng.choice(3, size=n, p=[0.5, 0.3, 0.2])]
        predicted_names = np.array(self.SHAPES + (self.UNKNOWN,))[predicted]
        predictions = [
            self._prediction(i, {"weight_g": float(weight[i]), "conveyor": str(conveyor[i])},
                             str(predicted_names[i]), float(confidence[i]))
            for i in range(n)
        ]
        return predictions, _right_behind(n, np.array(self.SHAPES + (self.NEW_SHAPE,))[shape], 5.0)


@dataclass(frozen=True)
class FraudScenario(_Scenario):
    """A card-fraud classifier under label delay; fraudsters change pattern.

    Transactions come every half second; about 2% are fraud.  The prediction
    is True (fraud) or False with the model's confidence in it.  Labels
    (chargebacks, analyst reviews) arrive after a lognormal delay, median
    15 minutes, capped at 55 minutes so that they join within the worker's
    default one-hour join TTL; ``missing_label_rate`` (10%) never arrive.  At
    ``change_at`` fraudsters move to online wallet payments: about a third of
    all transactions now come through a pattern the model is unsure about
    (confidence 0.5 to 0.8, so the mean confidence falls from about 0.97 to
    0.87 at once) and recall on fraud falls from 0.85 to 0.35.  The monitors
    retrain on a schedule (every 30 minutes of event time) and every 4,000
    labelled examples, not on drift.

    Expected alerts after the change: ``estimated_performance`` first, from
    the confidences alone, before enough labels arrive; ``feature_drift`` on
    ``channel`` (online share 25% -> 51%); later ``performance`` (rolling
    recall over 5,000 labelled examples below 0.6, and the Bernoulli GLR on
    the error).  Nothing on ``amount_eur``.  Retrain triggers of reason
    ``schedule`` and ``volume`` throughout.
    """

    n_events: int = 20_000
    change_at: int = 10_000
    seconds_apart: float = 0.5
    fraud_rate: float = 0.02
    recall_before: float = 0.85
    recall_after: float = 0.35
    false_positive_rate: float = 0.003
    new_pattern_share: float = 0.35
    label_delay_median_seconds: float = 900.0
    label_delay_sigma: float = 0.6
    max_label_delay_seconds: float = 3300.0
    missing_label_rate: float = 0.10

    MODEL: ClassVar[str] = "card-fraud"
    CHANNELS: ClassVar[tuple[str, ...]] = ("pos", "online", "contactless")
    CHANNEL_MIX: ClassVar[tuple[float, ...]] = (0.45, 0.25, 0.30)
    EXPECTED_MONITORS: ClassVar[frozenset[str]] = frozenset(
        {"estimated_performance", "feature_drift", "performance"})
    MONITORS: ClassVar[str] = """\
models:
  card-fraud:
    task: classification
    performance: {metric: recall, positive_class: true, window: 5000, threshold: 0.6, hysteresis: 0.05}
    # Precision too: a flood of false positives would page here (it stays near its usual level in this story).
    metrics: [{metric: precision, positive_class: true, window: 5000, threshold: 0.4, hysteresis: 0.05}]
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 1000000}}
    estimated_performance: {threshold: 0.93, window: 500, hysteresis: 0.02}
    features:
      amount_eur: {kind: numeric}
      channel: {kind: categorical}
    drift: {reference_size: 1000, window: 500, false_alarm_horizon: 1000000}
    retrain: {every_seconds: 1800, every_examples: 4000, on_drift: false, cooldown_seconds: 3600}
"""

    def _generate(self, rng: np.random.Generator) -> tuple[list[PredictionEvent], _Labels]:
        n = self.n_events
        after = _after(self)
        fraud = rng.random(n) < self.fraud_rate
        new_pattern = after & (rng.random(n) < self.new_pattern_share)
        caught = fraud & (rng.random(n) < np.where(after, self.recall_after, self.recall_before))
        flagged = ~fraud & (rng.random(n) < self.false_positive_rate)
        predicted = caught | flagged
        confidence = _clipped_normal(
            rng, np.select([caught, flagged, fraud], [0.88, 0.7, 0.75], 0.97), 0.04, 0.5, 0.999, n)
        # The new pattern sits near the model's decision boundary, whatever it decides.
        confidence = np.where(new_pattern, np.round(rng.uniform(0.5, 0.8, n), 4), confidence)
        channel = np.array(self.CHANNELS)[rng.choice(len(self.CHANNELS), size=n, p=self.CHANNEL_MIX)]
        channel[new_pattern] = "online"
        amount = np.round(rng.lognormal(np.log(40.0), 1.0, n), 2)
        predictions = [
            self._prediction(i, {"amount_eur": float(amount[i]), "channel": str(channel[i])},
                             bool(predicted[i]), float(confidence[i]))
            for i in range(n)
        ]
        labelled = np.flatnonzero(rng.random(n) >= self.missing_label_rate)
        delay = rng.lognormal(np.log(self.label_delay_median_seconds), self.label_delay_sigma, len(labelled))
        delay = np.minimum(delay, self.max_label_delay_seconds)
        return predictions, _Labels(labelled, delay, fraud[labelled].tolist())


@dataclass(frozen=True)
class RecommenderScenario(_Scenario):
    """Batch-scored click probabilities; a new model version, then its scores drift.

    Each event is one user-item pair scored by the batch job, with the
    predicted click probability as a regression in [0, 1]; the outcome is the
    click (1) or not (0): a click arrives 5 s to 10 min after the score, a
    non-click when the 15-minute attribution window closes.  The job serves
    version "1" until ``version_at``, then version "2" (sharper, equally well
    calibrated, so its score distribution differs from version 1's: a new
    version gets a fresh reference, so the switch alerts nothing).  At
    ``change_at`` an upstream feature-store change inflates version 2's scores
    by ``score_shift`` while real click rates stay the same.  Features
    ``surface`` and ``user_tenure_days`` do not change.

    Expected alerts after the change: ``prediction_drift`` (version 2's score
    distribution) and ``performance`` (the mean score minus the click rate,
    ``bias``, above 0.05).  Nothing at the version switch.  No change detector
    runs on the per-example loss: the absolute error of a click probability is
    bimodal (near the score, or near 1 minus it), far from what the Gaussian GLR
    assumes, so the bias threshold alone judges performance.
    """

    change_at: int = 8_000
    version_at: int = 4_000
    base_ctr: float = 0.08
    score_shift: float = 0.12
    attribution_seconds: float = 900.0

    MODEL: ClassVar[str] = "recs-ctr"
    SURFACES: ClassVar[tuple[str, ...]] = ("home", "search", "email")
    EXPECTED_MONITORS: ClassVar[frozenset[str]] = frozenset({"prediction_drift", "performance"})
    MONITORS: ClassVar[str] = """\
models:
  recs-ctr:
    task: regression
    performance: {metric: bias, window: 1000, threshold: 0.05, hysteresis: 0.02}
    detector: null
    prediction_drift: true
    features:
      surface: {kind: categorical}
      user_tenure_days: {kind: numeric}
    drift: {reference_size: 1000, window: 500, false_alarm_horizon: 1000000}
"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.version_at < self.change_at:
            raise ValueError(f"version_at must be between 0 and change_at ({self.change_at}), got {self.version_at}")

    def _generate(self, rng: np.random.Generator) -> tuple[list[PredictionEvent], _Labels]:
        n = self.n_events
        index = np.arange(n)
        v2 = index >= self.version_at
        # True click probabilities, mean base_ctr (a Beta with a concentration of 20).
        p = rng.beta(20 * self.base_ctr, 20 * (1 - self.base_ctr), n)
        v1_score = 0.5 * p + 0.5 * self.base_ctr + rng.normal(0.0, 0.02, n)
        v2_score = p + rng.normal(0.0, 0.01, n) + np.where(_after(self), self.score_shift, 0.0)
        score = np.round(np.clip(np.where(v2, v2_score, v1_score), 0.0, 1.0), 4)
        click = rng.random(n) < p
        surface = np.array(self.SURFACES)[rng.choice(len(self.SURFACES), size=n, p=[0.6, 0.3, 0.1])]
        tenure = rng.lognormal(np.log(200.0), 1.0, n).astype(int)
        predictions = [
            self._prediction(i, {"surface": str(surface[i]), "user_tenure_days": int(tenure[i])}, float(score[i]),
                             model_version="2" if v2[i] else "1")
            for i in range(n)
        ]
        # The label, click or not, is final when the attribution window closes.
        delay = self.attribution_seconds + rng.uniform(0.0, 60.0, n)
        return predictions, _Labels(index, delay, click.astype(int).tolist())


#: Every scenario by its command-line name.
SCENARIOS: dict[str, type] = {
    "speech": SpeechScenario,
    "speech-accent": SpeechAccentScenario,
    "stock": StockScenario,
    "robot": RobotScenario,
    "fraud": FraudScenario,
    "recommender": RecommenderScenario,
}


def make_scenario(name: str, n_events: int | None = None, seed: int = 7) -> Any:
    """Scenario ``name`` with ``n_events`` predictions (default: its own), its change at the same fraction.

    >>> s = make_scenario("stock", n_events=2000, seed=1)
    >>> s.n_events, s.change_at, s.seed
    (2000, 1000, 1)
    >>> make_scenario("weather")
    Traceback (most recent call last):
    ...
    streams.exceptions.UnknownScenario: unknown scenario 'weather'; choose one of speech, speech-accent, stock, robot, fraud, recommender
    """
    cls = SCENARIOS.get(name)
    if cls is None:
        raise UnknownScenario(name, list(SCENARIOS))
    defaults = cls()
    if n_events is None:
        return replace(defaults, seed=seed)
    def scaled(index: int) -> int:
        return int(index * n_events // defaults.n_events)

    extra = {"version_at": scaled(defaults.version_at)} if isinstance(defaults, RecommenderScenario) else {}
    return replace(defaults, n_events=n_events, change_at=scaled(defaults.change_at), seed=seed, **extra)
