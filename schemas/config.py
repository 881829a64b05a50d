"""The monitor config: one YAML file declaring every monitored model.

A bad file fails at start-up with a :class:`~schemas.exceptions.ConfigError`
that names each bad field by its dotted path, e.g.
``models.speech-asr.performance.window``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.events import LabelledExample, PredictionEvent
from schemas.exceptions import ConfigError

__all__ = [
    "DetectorSpec",
    "DriftSpec",
    "EstimatedMetric",
    "EstimatedPerformanceSpec",
    "FeatureSpec",
    "ModelSpec",
    "MonitorConfig",
    "PerformanceSpec",
    "RetrainSpec",
    "SegmentSpec",
    "load_monitor_config",
    "parse_monitor_config",
]

Metric = Literal["accuracy", "precision", "recall", "f1", "log_loss", "mae", "rmse", "bias"]
CLASSIFICATION_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "log_loss"})
# Metrics that live in [0, 1] with higher better; the others are errors, lower better.
UNIT_METRICS = frozenset({"accuracy", "precision", "recall", "f1"})
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PerformanceSpec(_Spec):
    """Rolling performance over the last ``window`` labelled examples."""

    metric: Metric | None = Field(
        default=None, description="Defaults to accuracy for classification and mae for regression."
    )
    positive_class: bool | int | str | None = Field(
        default=None, description="The class that precision, recall and f1 are about (e.g. fraud)."
    )
    window: Annotated[int, Field(ge=10, le=1_000_000)] = Field(
        default=500, description="The most recent examples the metric covers (at most, with window_seconds)."
    )
    window_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="A time-based window: examples labelled more than this many event-time seconds before the "
        "latest leave it (window stays the cap on examples, and min_samples the floor for judging).",
    )
    threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        description="Alert when a higher-is-better metric (accuracy, precision, recall, f1) falls below, or an error (log_loss, mae, rmse, bias) rises above, this value."
    )
    hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=0.02, description="Resolve only once the metric is this far back on the good side: no flapping."
    )
    min_samples: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Examples needed before the threshold is judged; defaults to the window."
    )


    @field_validator("min_samples")
    @classmethod
    def _within_window(cls, value: int | None, info: ValidationInfo) -> int | None:
        window = info.data.get("window")
        if value is not None and window is not None and value > window:
            raise ValueError(f"must not exceed the window ({window}): the window never holds more examples")
        return value


def _check_performance(perf: PerformanceSpec, task: str, where: str) -> None:
    metric = perf.metric or ("accuracy" if task == "classification" else "mae")
    if perf.metric is not None and (perf.metric in CLASSIFICATION_METRICS) != (task == "classification"):
        raise ValueError(f"{where}.metric {perf.metric!r} does not fit task {task!r}")
    if metric in ("precision", "recall", "f1") and perf.positive_class is None:
        raise ValueError(f"metric {metric!r} needs {where}.positive_class")
    # An alert whose recovery level cannot be reached would never resolve.
    if metric in UNIT_METRICS and perf.threshold + perf.hysteresis > 1:
        raise ValueError(f"{where}: a {metric} threshold plus its hysteresis must be at most 1")
    if metric not in UNIT_METRICS and perf.hysteresis >= perf.threshold:
        raise ValueError(f"{where}: a {metric} hysteresis must be smaller than the threshold")
    if perf.window_seconds is not None and perf.min_samples is None:
        raise ValueError(f"{where}.window_seconds needs {where}.min_samples: how many examples a "
                         "time window must hold before it is judged")


DEFAULT_DETECTORS = {"classification": "bernoulli_glr", "regression": "gaussian_glr"}


class DetectorSpec(_Spec):
    """A change detector run on the per-example loss (0/1 error, or absolute error).

    Without a name, the task picks one: a Bernoulli GLR on the 0/1 error of a
    classifier, a Gaussian GLR on the absolute error of a regressor.
    """

    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class FeatureSpec(_Spec):
    """A feature of the prediction events to watch: its distribution, and for numbers its spikes and trend."""

    kind: Literal["numeric", "categorical"]
    drift: bool = Field(default=True, description="Test its distribution against the version's reference window.")
    outliers: bool = Field(default=False, description="Numeric only: flag a spike on the event it happens.")
    trend: bool = Field(
        default=False, description="Numeric only: a change detector on the value (a trend reversal in returns, say)."
    )

    @model_validator(mode="after")
    def _numeric_only(self) -> FeatureSpec:
        if self.kind == "categorical" and (self.outliers or self.trend):
            raise ValueError("outliers and trend apply to numeric features only")
        return self


class DriftSpec(_Spec):
    """How the prediction-side monitors (features, predictions, estimated performance) judge drift."""

    reference_size: Annotated[int, Field(ge=50, le=1_000_000)] = Field(
        default=2000,
        description="The first this many predictions of each model version are its reference.  A small reference "
        "makes the false-alarm rate vary more from one reference to the next (it is right on average only).",
    )
    window: Annotated[int, Field(ge=50, le=1_000_000)] = Field(
        default=500, description="Each consecutive block of this many predictions is tested against the reference."
    )
    false_alarm_horizon: Annotated[float, Field(ge=1000, allow_inf_nan=False)] = Field(
        default=100_000.0,
        description="Mean predictions between false alarms of all this model's drift, outlier and trend monitors "
        "together: the budget is split between them, so more features do not mean more false alarms.",
    )
    max_unseen_rate: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        default=0.01, description="Alert when more than this share of a window is categories (or classes) the reference never had."
    )
    outlier_min_zscore: Annotated[float, Field(ge=3, allow_inf_nan=False)] = Field(
        default=6.0, description="A spike's robust z-score is never judged below this, whatever the budget allows."
    )
    sequential: bool = Field(
        default=True,
        description="Also run sequential tests (normal-score GLRs on numbers, unseen-category and share GLRs on "
        "categories and classes) that alarm on the event the evidence suffices, not at the end of a block; they "
        "share the budget with the block tests, which stay as a second opinion.",
    )
    max_versions: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Model versions watched at once; the one seen least recently is dropped beyond this."
    )
    reference_file: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="A JSON-lines file of prediction events (its validation set, scored, say), relative to the "
        "config file: the reference of every version, instead of each version's first reference_size predictions.",
    )

    @model_validator(mode="after")
    def _window_fits(self) -> DriftSpec:
        if self.window > self.reference_size:
            raise ValueError(f"window ({self.window}) must not exceed reference_size ({self.reference_size})")
        return self


EstimatedMetric = Literal["accuracy", "precision", "recall", "f1", "roc_auc"]


class EstimatedPerformanceSpec(_Spec):
    """Label-free performance estimates of a classifier from its calibrated scores, while outcomes are missing.

    Each version's scores are calibrated on its labelled reference (``drift.reference_file`` when its lines carry
    outcomes, then the version's first live labelled examples) before any estimate can alert.
    """

    threshold: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        description="Alert when the estimated accuracy over the window falls below this."
    )
    window: Annotated[int, Field(ge=10, le=1_000_000)] = Field(
        default=500, description="The most recent predictions each estimate covers.")
    hysteresis: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.02
    calibration: Literal["isotonic", "histogram", "none"] = Field(
        default="isotonic",
        description="How scores are mapped to probabilities: isotonic regression or histogram binning on the "
        "version's labelled reference, or none (the raw mean confidence, which a miscalibrated model biases).")
    calibration_size: Annotated[int, Field(ge=100, le=1_000_000)] = Field(
        default=2000, description="Labelled examples of a version its calibration is fitted on; until then its "
        "estimates are reported as uncalibrated and do not alert (unless alert_uncalibrated).")
    max_calibration_size: Annotated[int, Field(ge=100, le=1_000_000)] = Field(
        default=16_000, description="The calibration is refitted on all the version's labelled examples so far at "
        "each doubling of calibration_size, up to this many: more labels, a steadier map.")
    keep_refitting: bool = Field(
        default=True, description="After max_calibration_size labels, refit every calibration_size labels on the "
        "latest max_calibration_size (false: keep the map fitted on the first ones).  Keeps the map dense where "
        "the scores move to; costs a checkpoint the latest max_calibration_size labelled pairs.")
    min_bin_count: Annotated[int, Field(ge=10, le=100_000)] = Field(
        default=50, description="Least labelled examples behind each isotonic block or histogram bin.")
    positive_class: bool | int | str | None = Field(
        default=None, description="The class that estimated precision, recall, f1 and roc_auc are about.")
    thresholds: dict[Literal["precision", "recall", "f1", "roc_auc"],
                     Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="Alert thresholds of the positive-class estimates (needs positive_class).")
    margin_z: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = Field(
        default=2.0, description="A calibrated estimate fires only once it is below its threshold by this many "
        "standard errors of the calibration (of a rate measured on the examples it was fitted on): a map fitted on "
        "2,000 labels can be a point off.  Resolving is unchanged (threshold plus hysteresis).")
    alert_uncalibrated: bool = Field(
        default=False, description="Also alert on the raw-confidence estimate before the calibration is fitted.")

    @model_validator(mode="after")
    def _reachable(self) -> EstimatedPerformanceSpec:
        for name, threshold in [("threshold", self.threshold), *((f"thresholds.{m}", t) for m, t in self.thresholds.items())]:
            if threshold + self.hysteresis > 1:
                raise ValueError(f"{name} plus hysteresis must be at most 1, or the alert could never resolve")
        if self.thresholds and self.positive_class is None:
            raise ValueError("thresholds need positive_class: precision, recall, f1 and roc_auc are about one class")
        if self.max_calibration_size < self.calibration_size:
            raise ValueError(f"max_calibration_size ({self.max_calibration_size}) must be at least calibration_size "
                             f"({self.calibration_size})")
        if self.calibration_size < 2 * self.min_bin_count:
            raise ValueError(f"calibration_size ({self.calibration_size}) must be at least twice min_bin_count "
                             f"({self.min_bin_count}), or the calibration has a single bin")
        return self

    @property
    def metrics(self) -> tuple[EstimatedMetric, ...]:
        """The estimates made: accuracy always, and the positive-class ones when a positive class is named."""
        if self.positive_class is None:
            return ("accuracy",)
        return ("accuracy", "precision", "recall", "f1", "roc_auc")

    def threshold_of(self, metric: str) -> float | None:
        """The alert threshold of an estimate, None if it has none."""
        return self.threshold if metric == "accuracy" else self.thresholds.get(metric)  # type: ignore[call-overload]


class RetrainSpec(_Spec):
    """When to ask for a retrain: on a performance alert, and optionally on a schedule or a data volume."""

    enabled: bool = True
    cooldown_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=3600.0, description="Event-time seconds after an alert-driven trigger during which a model gets no other."
    )
    every_examples: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Also trigger after every this many labelled examples, drift or not."
    )
    every_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Also trigger every this many event-time seconds, drift or not."
    )
    on_drift: bool = Field(
        default=True, description="Also trigger on feature or prediction drift, outlier and trend alerts (same cooldown)."
    )


class SegmentSpec(_Spec):
    """Also monitor each segment (speaker accent, region) on its own."""

    max_segments: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=20, description="Segments beyond this many, in order of first appearance, are pooled together."
    )


class ModelSpec(_Spec):
    task: Literal["classification", "regression"]
    performance: PerformanceSpec
    metrics: Annotated[list[PerformanceSpec], Field(max_length=8)] = Field(
        default_factory=list,
        description="Further metrics, each with its own window and threshold alerts (fraud: precision and recall).",
    )
    detector: DetectorSpec | None = Field(default_factory=DetectorSpec)
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    segments: SegmentSpec | None = Field(
        default=None, description="Split the monitors by the events' segment; segment alerts do not trigger retrains."
    )
    features: Annotated[dict[FeatureName, FeatureSpec], Field(max_length=256)] = Field(
        default_factory=dict, description="Features of the prediction events to watch for drift, spikes and trends."
    )
    prediction_drift: bool = Field(
        default=False, description="Watch the distribution of the predictions: classes (and new classes) or values."
    )
    estimated_performance: EstimatedPerformanceSpec | None = Field(
        default=None, description="Classification only: alert on the label-free accuracy estimate from confidences."
    )
    drift: DriftSpec = Field(default_factory=DriftSpec)
    false_alarm_horizon: Annotated[float, Field(ge=1000, allow_inf_nan=False)] | None = Field(
        default=None,
        description="The model's false-alarm budget: mean model events between false alarms of everything that "
        "pages (its change detectors, its segments' and its data monitors' tests), split between them.  Defaults "
        "to drift.false_alarm_horizon or detector.params.false_alarm_horizon where one is given, else 100000.")

    @model_validator(mode="after")
    def _one_budget(self) -> ModelSpec:
        given = {}
        if self.false_alarm_horizon is not None:
            given["false_alarm_horizon"] = float(self.false_alarm_horizon)
        if "false_alarm_horizon" in self.drift.model_fields_set:
            given["drift.false_alarm_horizon"] = float(self.drift.false_alarm_horizon)
        if self.detector is not None and "false_alarm_horizon" in self.detector.params:
            value = self.detector.params["false_alarm_horizon"]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                given["detector.params.false_alarm_horizon"] = float(value)
        if len(set(given.values())) > 1:
            raise ValueError("false_alarm_horizon: one budget per model, but " + ", ".join(
                f"{k} = {v:g}" for k, v in given.items()) + " differ; give it once, as false_alarm_horizon")
        return self

    @property
    def alarm_budget(self) -> float:
        """Mean model events between false alarms of all of this model's paging detectors together."""
        if self.false_alarm_horizon is not None:
            return float(self.false_alarm_horizon)
        if "false_alarm_horizon" in self.drift.model_fields_set:
            return float(self.drift.false_alarm_horizon)
        if self.detector is not None and isinstance(self.detector.params.get("false_alarm_horizon"), (int, float)):
            return float(self.detector.params["false_alarm_horizon"])
        return float(self.drift.false_alarm_horizon)

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelSpec:
        _check_performance(self.performance, self.task, "performance")
        seen = {self.metric}
        for k, extra in enumerate(self.metrics):
            where = f"metrics.{k}"
            if extra.metric is None:
                raise ValueError(f"{where} needs a metric: it is a further metric besides performance")
            if extra.metric in seen:
                raise ValueError(f"{where}: metric {extra.metric!r} is already watched")
            seen.add(extra.metric)
            _check_performance(extra, self.task, where)
        if self.estimated_performance is not None and self.task != "classification":
            raise ValueError("estimated_performance needs task classification: it reads the classifier's confidences")
        return self

    def metric_spec(self, performance: PerformanceSpec) -> ModelSpec:
        """This spec as one of its further metrics sees it: that metric, threshold alerts only, no schedules.

        The change detector, segments and volume or schedule retrains stay with the main metric.
        """
        retrain = self.retrain.model_copy(update={"every_examples": None, "every_seconds": None})
        return self.model_copy(update={"performance": performance, "detector": None, "segments": None,
                                       "retrain": retrain, "metrics": []})

    @property
    def watches_predictions(self) -> bool:
        """Whether any monitor reads the prediction events themselves (not only labelled examples)."""
        return bool(self.features) or self.prediction_drift or self.estimated_performance is not None

    @property
    def detector_name(self) -> str | None:
        """The detector to run, or None for threshold alerts only."""
        if self.detector is None:
            return None
        return self.detector.name or DEFAULT_DETECTORS[self.task]

    @property
    def metric(self) -> Metric:
        return self.performance.metric or ("accuracy" if self.task == "classification" else "mae")


MIN_REFERENCE = 50


class MonitorConfig(_Spec):
    """Every monitored model, by name.

    >>> cfg = parse_monitor_config('''
    ... models:
    ...   speech-asr:
    ...     task: classification
    ...     performance: {window: 500, threshold: 0.85}
    ... ''')
    >>> cfg.models["speech-asr"].metric, cfg.models["speech-asr"].detector_name
    ('accuracy', 'bernoulli_glr')
    >>> parse_monitor_config("models: {asr: {task: classification, performance: {window: 2, threshold: 0.8}}}")
    Traceback (most recent call last):
    ...
    schemas.exceptions.ConfigError: invalid config <string>:
      models.asr.performance.window: Input should be greater than or equal to 10
    """

    models: dict[ModelName, ModelSpec] = Field(default_factory=dict)
    learners: dict[ModelName, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-model online learner of the retrainer; validated by the retrainer (retrainer.config).",
    )
    _references: dict[str, tuple[PredictionEvent, ...]] = PrivateAttr(default_factory=dict)

    _labelled_references: dict[str, tuple[LabelledExample, ...]] = PrivateAttr(default_factory=dict)

    def reference_of(self, model: str) -> tuple[PredictionEvent, ...]:
        """The stored reference predictions of ``model`` (``drift.reference_file``), empty if it has none."""
        return self._references.get(model, ())

    def labelled_reference_of(self, model: str) -> tuple[LabelledExample, ...]:
        """The lines of ``model``'s ``drift.reference_file`` that carry an outcome (they calibrate its estimates)."""
        return self._labelled_references.get(model, ())

    def warnings(self) -> list[tuple[str, str]]:
        """(field, message) of what is valid but will not work at once: estimates that start uncalibrated."""
        out = []
        for model, spec in self.models.items():
            estimate = spec.estimated_performance
            if estimate is None or estimate.calibration == "none":
                continue
            have = len(self.labelled_reference_of(model))
            if have < estimate.calibration_size:
                where = "drift.reference_file" if spec.drift.reference_file else "no drift.reference_file"
                out.append((f"models.{model}.estimated_performance.calibration_size",
                            f"{where} gives {have} labelled examples, fewer than the {estimate.calibration_size} a "
                            "calibration needs: each version's estimates are reported as uncalibrated, and do not "
                            "alert, until its first live labelled examples make up the difference"))
        return out

    def load_references(self, base_dir: Path, source: str) -> None:
        """Read every model's ``drift.reference_file`` (relative to ``base_dir``); a bad one fails naming it."""
        problems: list[tuple[str, str]] = []
        for model, spec in self.models.items():
            name = spec.drift.reference_file
            if name is None:
                continue
            field = f"models.{model}.drift.reference_file"
            path = Path(name) if Path(name).is_absolute() else base_dir / name
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append((field, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"))
                continue
            events: list[PredictionEvent] = []
            labelled: list[LabelledExample] = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    # A line with an outcome (a labelled example) also calibrates the label-free estimates.
                    if '"outcome"' in line:
                        labelled.append(LabelledExample.model_validate_json(line))
                        events.append(labelled[-1].prediction)
                    else:
                        events.append(PredictionEvent.model_validate_json(line))
                except ValidationError as exc:
                    problems.append((field, f"{path} line {number}: {exc.errors()[0]['msg']}"))
                    break
            else:
                if len(events) < MIN_REFERENCE:
                    problems.append((field, f"{path} holds {len(events)} predictions; a reference needs {MIN_REFERENCE}"))
                self._references[model] = tuple(events)
                self._labelled_references[model] = tuple(labelled)
        if problems:
            raise ConfigError(source, problems)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def parse_monitor_config(text: str, source: str = "<string>", base_dir: Path | None = None) -> MonitorConfig:
    """Parse and validate the YAML text of a monitor config; reference files are read relative to ``base_dir``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("<yaml>", str(exc).replace("\n", " "))]) from exc
    try:
        config = MonitorConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = [(_dotted(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(source, problems) from exc
    config.load_references(base_dir or Path.cwd(), source)
    return config


def load_monitor_config(path: str | Path) -> MonitorConfig:
    """Read and validate a monitor config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [("<file>", exc.strerror or str(exc))]) from exc
    return parse_monitor_config(text, source=str(path), base_dir=path.parent)
