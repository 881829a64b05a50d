"""A segment's change detector that is watching from its first examples: it borrows a baseline until it has its own.

A :class:`~detectors.glr.BernoulliGLR` learns its baseline error rate from its first ``warmup`` (2,000) updates and
watches nothing meanwhile.  A segment with a tenth of a model's traffic is then blind for 20,000 model events.
:class:`BorrowedBaselineGLR` runs, while its own detector warms up, a sequence of short-lived GLRs whose baseline is
an estimate that pools what the segment has shown so far with a borrowed one (the model's pooled error rate, given
by :meth:`BorrowedBaselineGLR.borrow`):

* a stage starts when the segment has ``0`` (if a baseline is borrowed), ``first_stage``, ``2 * first_stage``,
  ``4 * first_stage`` ... examples, below ``warmup``; its baseline is ``(e + w * p + 1) / (n + w + 2)`` for ``e``
  errors in the segment's ``n`` examples, the borrowed rate ``p`` and its weight ``w = prior_weight``;
* its threshold is calibrated (:mod:`detectors.calibration`) for a rate estimated from ``n + w`` examples: the
  estimation error that goes with the pooled baseline is in the simulation.  The assumption is that the borrowed
  rate is worth ``w`` of the segment's own examples; a segment far worse than the pool can alarm in its first
  stages, which the benchmark (``benchmarks/bench_monitors_performance.py``) measures;
* once the own detector is warm it alone decides; after it alarms the schedule starts again on the segment's own
  examples only (the borrowed rate predates the change).

``borrow`` is the one call besides ``update`` that changes state; the owner makes it at a fixed point of the stream
(:class:`~detectors.monitors.monitor_set.MonitorSet` does when the model's pooled rate is complete), so the alarms
do not depend on how the stream was batched.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import numpy.typing as npt

from detectors.base import DriftDetector
from detectors.exceptions import InvalidParameter
from detectors.glr import BernoulliGLR

__all__ = ["BorrowedBaselineGLR"]


class BorrowedBaselineGLR(DriftDetector):
    """A Bernoulli GLR on a segment's errors that watches from the start, on a borrowed and then its own baseline.

    Parameters
    ----------
    false_alarm_horizon, warmup, ratios, two_sided
        As for :class:`~detectors.glr.BernoulliGLR`, of the segment's own detector and of every stage.
    first_stage
        Own examples before the first stage without a borrowed baseline, and the start of the doubling schedule.
    prior_weight
        How many of the segment's own examples the borrowed rate counts as.

    Examples
    --------
    A segment whose error rate rises from 7% to 30% after its 1,000th example.  Its own GLR would still be warming
    up; borrowing the model's 6% rate, this one alarms within a hundred examples of the change:

    >>> rng = np.random.default_rng(2)
    >>> errors = np.r_[rng.random(1000) < 0.07, rng.random(1000) < 0.30].astype(float)
    >>> detector = BorrowedBaselineGLR(false_alarm_horizon=300_000)
    >>> detector.borrow(0.06)
    >>> [int(a) for a in detector.update_many(errors)][:1]
    [1082]
    >>> [int(a) for a in BernoulliGLR(false_alarm_horizon=300_000).update_many(errors)]
    []
    """

    def __init__(
        self,
        false_alarm_horizon: float = 100_000,
        warmup: int = 2000,
        ratios: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0),
        two_sided: bool = False,
        first_stage: int = 50,
        prior_weight: int = 100,
    ) -> None:
        super().__init__()
        if not isinstance(first_stage, int) or first_stage < 10:
            raise InvalidParameter("first_stage", "must be an integer of at least 10")
        if not isinstance(prior_weight, int) or prior_weight < 1:
            raise InvalidParameter("prior_weight", "must be a positive integer")
        self.false_alarm_horizon = false_alarm_horizon
        self.warmup = warmup
        self.ratios = ratios
        self.two_sided = two_sided
        self.first_stage = first_stage
        self.prior_weight = prior_weight
        self._own = BernoulliGLR(false_alarm_horizon, warmup, ratios, two_sided)
        self._stage: BernoulliGLR | None = None
        self._prior: float | None = None
        self._n_own = 0  # examples since the start or the own detector's last alarm
        self._errors = 0

    # ------------------------------------------------------------ answers

    @property
    def borrowed(self) -> float | None:
        """The borrowed baseline rate, None if none is (or is any longer) used."""
        return self._prior

    @property
    def _own_monitoring(self) -> bool:
        """Whether the own detector judges the next update (warm, and not about to restart after an alarm)."""
        return self._own.is_warm and not self._own.drift_detected

    @property
    def _active(self) -> BernoulliGLR | None:
        return self._own if self._own.is_warm else self._stage

    @property
    def statistic(self) -> float:
        active = self._active
        return active.statistic if active is not None else 0.0

    @property
    def threshold(self) -> float:
        active = self._active
        return active.threshold if active is not None else math.inf

    @property
    def change_start(self) -> int | None:
        active = self._active
        return active.change_start if active is not None else None

    # ------------------------------------------------------------ changes

    def borrow(self, rate: float) -> None:
        """Use ``rate`` (the model's pooled error rate) as the borrowed baseline from the next stage on.

        Before the first stage it starts one at once; once the segment's own detector is warm it is not needed.
        """
        if not 0 <= rate <= 1:
            raise InvalidParameter("rate", "must be between 0 and 1")
        if self._own_monitoring:
            return
        self._prior = rate
        if self._stage is None:
            self._start_stage()

    def _stage_starts_at(self, n: int) -> bool:
        """Whether a stage starts after ``n`` own examples: at first_stage times a power of two, below the warm-up."""
        if n >= self.warmup or n < self.first_stage or n % self.first_stage:
            return False
        k = n // self.first_stage
        return k & (k - 1) == 0

    def _start_stage(self) -> None:
        n, weight = self._n_own, self.prior_weight if self._prior is not None else 0
        if n + weight < 10:
            return
        pooled = self._errors + (weight * self._prior if self._prior is not None else 0.0)
        p0 = min(max((pooled + 1) / (n + weight + 2), 1e-6), 1 - 1e-6)
        self._stage = BernoulliGLR(self.false_alarm_horizon, self.warmup, self.ratios, self.two_sided,
                                   p0=p0, p0_weight=n + weight)

    def update(self, x: float) -> None:
        self._drift_detected = False
        self._n += 1
        own_was_warm = self._own_monitoring
        self._own.update(x)
        if own_was_warm:
            self._drift_detected = self._own.drift_detected
        elif self._stage is not None:
            self._stage.update(x)
            self._drift_detected = self._stage.drift_detected
        self._n_own += 1
        self._errors += 1 if x else 0
        if own_was_warm and self._drift_detected:
            self._restart_schedule()
        elif self._own.is_warm:
            self._stage = None
        elif self._stage_starts_at(self._n_own):
            self._start_stage()

    def _restart_schedule(self) -> None:
        # The own detector restarts its warm-up on the post-change level; the borrowed rate predates it.
        self._n_own, self._errors, self._prior, self._stage = 0, 0, None, None

    def update_many(self, xs: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Vectorised between the points where the active detector changes (stage starts, warm-up end, alarms)."""
        values = np.asarray(xs, dtype=float)
        alarms: list[int] = []
        i = 0
        while i < len(values):
            if self._own_monitoring:
                before = copy.deepcopy(self._own)
                found = self._own.update_many(values[i:])
                if not len(found):
                    self._n += len(values) - i
                    self._n_own += len(values) - i
                    self._drift_detected = False
                    break
                first = int(found[0])
                if i + first < len(values) - 1:
                    # Only up to the alarm: what follows belongs to the restarted schedule.
                    self._own = before
                    self._own.update_many(values[i:i + first + 1])
                self._n += first + 1
                alarms.append(i + first)
                self._drift_detected = True
                self._restart_schedule()
                i += first + 1
                continue
            end = min(len(values), i + self._next_boundary() - self._n_own)
            chunk = values[i:end]
            self._own.update_many(chunk)
            self._drift_detected = False
            if self._stage is not None:
                found = self._stage.update_many(chunk)
                alarms.extend(i + int(a) for a in found)
                self._drift_detected = bool(len(found)) and int(found[-1]) == len(chunk) - 1
            self._n += len(chunk)
            self._n_own += len(chunk)
            self._errors += int(np.count_nonzero(chunk))
            if self._own.is_warm:
                self._stage = None
            elif self._stage_starts_at(self._n_own):
                self._start_stage()
            i = end
        return np.asarray(alarms, dtype=np.intp)

    def _next_boundary(self) -> int:
        """The own-example count at which the active detector next changes (a stage start or the warm-up's end)."""
        boundary = self.first_stage
        while boundary <= self._n_own:
            boundary *= 2
        return min(boundary, self.warmup)
