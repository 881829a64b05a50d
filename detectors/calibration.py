"""Alarm thresholds derived from a false-alarm horizon, by simulation, cached in memory and on disk.

The detectors in :mod:`detectors.glr` estimate their reference (a baseline
rate, or a median and MAD) from a warm-up, then run a bank of CUSUMs.  No
closed form gives the mean time to a false alarm of the largest of several
CUSUMs whose reference is itself estimated, so the threshold is found by
simulation:

1. simulate ``n_streams`` stationary streams through the same warm-up and
   bank, each monitored for ``L = min(horizon, 20_000)`` updates, and keep the
   largest statistic each stream reached;
2. if the time to a false alarm is roughly exponential with mean ``A``, the
   chance that a stream alarms within ``L`` updates is ``1 - exp(-L / A)``;
   the threshold is the quantile of the simulated maxima exceeded with that
   chance.  Front-loaded false alarms (from a poor warm-up estimate) only make
   this conservative;
3. Gaussian horizons beyond ``MAX_DIRECT`` (80,000) are reached by
   extrapolation: every row is a log-likelihood ratio, so by Wald's identity
   the chance of crossing ``h`` falls like ``exp(-h)`` and the horizon grows
   like ``exp(h)``; one more nat of threshold buys a factor ``e`` of horizon.
   Bernoulli horizons up to ``MAX_DIRECT_BERNOULLI`` (1,000,000) are simulated
   directly instead, on more streams (as many exceedances of the quantile as at
   ``MAX_DIRECT``), because with an estimated baseline the extrapolation is
   not conservative there: a warm-up that underestimates ``p0`` sets a row
   climbing, and such a stream alarms in time linear in the threshold, not
   exponential, so the maxima's tail is heavier than ``exp(-h)``.  Measured
   with 16,000 streams (warm-up 2,000, ratios 1.5-5): the threshold wanted at
   200,000 is 10.9 nats where the extrapolation gave 10.4-10.7 at ``p0 = 0.07``,
   at 800,000 13.8 against 12.0, and at ``p0 = 0.01`` 20.2 against 10.8; the
   detector alarmed in the first 8,000 monitored updates after a warm-up at
   1.65 times the budget's rate at 200,000 and 3.2 times at 1,000,000
   (2,000 streams, ``p0 = 0.07``).

Results are cached per parameter set with :func:`functools.lru_cache` and as
small JSON files under the system temporary directory (or the directory given
to :func:`use_cache_dir`), so each set is simulated once per machine.  A file
is keyed on the parameters and on a hash of the code the simulation runs (this
module, :mod:`detectors.cusum_bank`, :mod:`detectors.distribution`) and of
numpy's version, so a changed simulation is never served a stale threshold.
The simulation is seeded from the parameters alone, so the threshold is
deterministic and the same after an edit that does not change the simulation.

The sets the bundled configs, scenarios and tests ask for are shipped, simulated
by this code, in ``calibration_table.json`` beside this module
(``make calibration-table`` writes it), under the same hash: a fresh machine or
container serves them at once instead of simulating each for up to ~4 s in the
monitor stage, and a table from other code or another numpy is ignored.

The threshold is conservative: measured on stationary streams at a horizon of
2,000 (``tests/unit/test_detectors_calibration.py``), the mean gap between
false alarms is 1.4 to 3.4 times the horizon (Bernoulli p=0.3 to p=0.02) and
1.7 times it (Gaussian), so the horizon is a lower bound on that gap, not its
value.  A low-rate warm-up sees few events, which is where the margin is
widest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import cusum_bank, distribution
from detectors.cusum_bank import bernoulli_rows, gaussian_rows, normal_scores, randomized_normal_scores
from detectors.distribution import robust_reference

__all__ = ["MAX_DIRECT", "MAX_DIRECT_BERNOULLI", "TABLE", "calibrated_threshold", "shipped_table", "simulate_key",
           "simulate_maxima", "simulation_fingerprint", "use_cache_dir"]

# Part of the parameter key, which seeds the simulation (crc32): changing it would change every threshold and
# the golden alarm indices with them.  Staleness of cached files is the simulation fingerprint's job, not this.
_SEED_SALT = 1
_N_STREAMS = 400
_MAX_LENGTH = 20_000
#: Horizons up to this are calibrated directly; larger Gaussian ones are extrapolated (one more nat per factor e).
MAX_DIRECT = 4 * _MAX_LENGTH
#: Bernoulli horizons up to this are simulated directly too, on proportionally more streams (a Bernoulli stream
#: costs about 0.7 ms, so 1,000,000 takes 5,000 streams, about 3.5 s, once per machine and parameter set); only
#: beyond it are they extrapolated.
MAX_DIRECT_BERNOULLI = 1_000_000
# Bernoulli baselines are bucketed on the log-odds scale, a quarter-unit apart,
# so nearby estimates share one simulation.
_LOGIT_STEP = 0.25
#: The shipped thresholds: ``{"simulation": <fingerprint>, "thresholds": {<parameter key>: <nats>}}``.
TABLE = Path(__file__).with_name("calibration_table.json")


def _bucket(p0: float) -> float:
    k = round(math.log(p0 / (1 - p0)) / _LOGIT_STEP)
    return 1 / (1 + math.exp(-k * _LOGIT_STEP))


_cache_dir: Path | None = None


def use_cache_dir(path: str | os.PathLike[str] | None) -> None:
    """Keep the threshold files in ``path`` from now on (None: the system temporary directory).

    Tests give their session its own directory, so that what they measure was simulated by the code under test.
    """
    global _cache_dir
    _cache_dir = None if path is None else Path(path)
    _cached.cache_clear()


@functools.cache
def simulation_fingerprint() -> str:
    """The hash of the simulation's code and of numpy's version that cached and shipped thresholds are keyed on."""
    digest = hashlib.sha256(np.__version__.encode())
    for module_file in (__file__, cusum_bank.__file__, distribution.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def shipped_table(fingerprint: str) -> dict[str, float]:
    """The shipped thresholds, if they were simulated by the code of ``fingerprint``; else none.

    Only numbers are taken from the file (a malformed one is ignored, as if absent): nothing in it is run.
    """
    try:
        table = json.loads(TABLE.read_text())
        if table["simulation"] != fingerprint:
            return {}
        return {str(key): float(value) for key, value in table["thresholds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def calibrated_threshold(kind: str, horizon: float, warmup: int, spec: dict[str, Any]) -> float:
    """Threshold (nats) giving a mean of ``horizon`` stationary updates between false alarms.

    Parameters
    ----------
    kind
        ``"bernoulli"`` or ``"gaussian"``.
    horizon
        The false-alarm horizon wanted.
    warmup
        Warm-up length the detector uses to estimate its reference (0 when known).
    spec
        The detector's bank: for Bernoulli ``ratios``, ``two_sided`` and the
        baseline ``p0``; for Gaussian ``shifts``, ``variance_ratios``,
        ``two_sided`` and ``clip``.

    Examples
    --------
    >>> h = calibrated_threshold("gaussian", 1000.0, 200, {"shifts": (0.5, 1.0), "variance_ratios": (),
    ...                          "two_sided": False, "clip": 4.0})
    >>> 2.0 < h < 7.0
    True
    """
    spec = dict(spec)
    if kind == "bernoulli":
        spec["p0"] = _bucket(float(spec["p0"]))
    key = json.dumps([_SEED_SALT, kind, float(horizon), int(warmup), sorted(spec.items())])
    return _cached(key)


@functools.lru_cache(maxsize=256)
def _cached(key: str) -> float:
    fingerprint = simulation_fingerprint()
    shipped = shipped_table(fingerprint).get(key)
    if shipped is not None:
        return shipped
    directory = _cache_dir or Path(tempfile.gettempdir()) / "driftline-calibration"
    path = directory / (hashlib.sha1(f"{fingerprint} {key}".encode()).hexdigest() + ".json")
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key and stored["simulation"] == fingerprint:
            return float(stored["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    threshold = simulate_key(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "simulation": fingerprint, "threshold": threshold}))
        os.replace(tmp, path)
    except OSError:
        # A read-only temp dir only costs a re-simulation in the next process.
        pass
    return threshold


def simulate_key(key: str) -> float:
    """The threshold of one parameter key (as :func:`calibrated_threshold` forms it), simulated, no cache asked."""
    _, kind, horizon, warmup, items = json.loads(key)
    spec = {k: tuple(v) if isinstance(v, list) else v for k, v in items}
    return _calibrate(kind, horizon, warmup, spec, zlib.crc32(key.encode()))


def _calibrate(kind: str, horizon: float, warmup: int, spec: dict[str, Any], seed: int) -> float:
    direct = min(horizon, MAX_DIRECT_BERNOULLI if kind == "bernoulli" else MAX_DIRECT)
    length = int(min(direct, _MAX_LENGTH))
    # Past MAX_DIRECT the alarm chance within `length` shrinks like 1 / horizon: as many streams more keep the
    # number of simulated maxima above the quantile, and so its precision, what it is at MAX_DIRECT.
    n_streams = math.ceil(_N_STREAMS * max(1.0, direct / MAX_DIRECT))
    maxima = simulate_maxima(kind, warmup, spec, n_streams, length, seed)
    p_alarm = 1 - math.exp(-length / direct)
    threshold = float(np.quantile(maxima, 1 - p_alarm))
    return threshold + math.log(horizon / direct)


def simulate_maxima(
    kind: str, warmup: int, spec: dict[str, Any], n_streams: int, length: int, seed: int
) -> npt.NDArray[np.float64]:
    """Largest bank statistic each simulated stationary stream reaches in ``length`` monitored updates."""
    rng = np.random.default_rng(seed)
    maxima = np.empty(n_streams)
    if kind == "gaussian":
        a, b, g = (np.asarray(v)[:, None] for v in gaussian_rows(spec["shifts"], spec["variance_ratios"],
                                                                   spec["two_sided"]))
    for i in range(n_streams):
        if kind == "bernoulli":
            p = float(spec["p0"])
            x = rng.random(warmup + length) < p
            p0 = (int(x[:warmup].sum()) + 1) / (warmup + 2) if warmup else p
            rows = np.asarray(bernoulli_rows(p0, spec["ratios"], spec["two_sided"]))[:, None]
            up, down = np.log(rows / p0), np.log((1 - rows) / (1 - p0))
            inc = np.where(x[None, warmup:], up, down)
        elif kind == "gaussian":
            normal = rng.standard_normal(warmup + length)
            clip = spec["clip"]
            if spec.get("scores", "robust") == "normal":
                # Ranks against the warm-up are distribution-free: this calibrates any continuous series.
                z = np.clip(normal_scores(normal[warmup:], np.sort(normal[:warmup])), -clip, clip)
            elif spec.get("scores") == "randomized":
                # Randomised ranks are distribution-free for discrete series too (detectors.sequential).
                z = np.clip(randomized_normal_scores(normal[warmup:], np.sort(normal[:warmup]), rng.random(length)),
                            -clip, clip)
            else:
                center, scale = robust_reference(normal[:warmup])
                z = np.clip((normal[warmup:] - center) / scale, -clip, clip)
            inc = a * z + b * (z * z) + g
        else:
            raise ValueError(f"unknown kind {kind!r}")
        c = np.cumsum(inc, axis=1)
        stat = c - np.minimum(np.minimum.accumulate(c, axis=1), 0.0)
        maxima[i] = stat.max()
    return maxima
