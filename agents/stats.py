"""Aggregate statistics for few-seed RL results: interquartile mean and stratified bootstrap intervals.

This is the method of rliable (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021),
written out here in numpy because the library pulls scipy, pandas, statsmodels, arch and seaborn for a few lines.
Scores are a matrix of shape (runs, tasks): one row per seed, one column per task (an environment, or one
setting of a grid). The stratified bootstrap resamples runs with replacement *within each task* independently,
so every task keeps its own number of runs, and takes the percentile interval of the statistic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last two axes: the mean of the middle 50 % of all scores (runs x tasks).

    Trims ``floor(n / 4)`` scores from each end of the ``n`` flattened scores, exactly as
    ``scipy.stats.trim_mean(scores, 0.25, axis=None)`` (which rliable uses): with 3 runs nothing is trimmed
    and the IQM is the mean; with 4 the two middle scores are averaged.

    :param scores: array of shape (..., runs, tasks), or (runs,) for one task
    :return: the IQM, with the leading (batch) axes kept
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    flat = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    n = flat.shape[-1]
    if n == 0:
        raise ValueError("iqm of an empty score matrix")
    cut = int(0.25 * n)
    return flat[..., cut : n - cut].mean(axis=-1)


def mean(scores: np.ndarray) -> np.ndarray:
    """Plain mean over the last two axes (runs x tasks), the same signature as :func:`iqm`."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    return scores.reshape(*scores.shape[:-2], -1).mean(axis=-1)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float
    lo: float
    hi: float
    n_runs: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def stratified_bootstrap_samples(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` resampled score matrices, shape (reps, runs, tasks).

    Within each task (column), runs are drawn with replacement independently of the other tasks.

    :param scores: (runs, tasks)
    :param reps: number of bootstrap replicates
    :param rng: numpy random generator
    """
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return np.take_along_axis(np.broadcast_to(scores, (reps, runs, tasks)), idx, axis=1)


def bootstrap_ci(
    scores: np.ndarray,
    statistic: Statistic = iqm,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
) -> Estimate:
    """Point estimate and stratified-bootstrap percentile interval of ``statistic`` over a score matrix.

    NaN scores (a run that has not reached this point) are dropped per task before resampling.

    :param scores: (runs, tasks) or (runs,) for one task
    :param statistic: maps (..., runs, tasks) to (...); :func:`iqm` (default) or :func:`mean`
    :param reps: bootstrap replicates (rliable uses 50,000 for papers; 2,000 gives a stable band for plots)
    :param confidence: interval size, e.g. 0.95
    :param seed: seed or generator for the resampling, so figures are reproducible
    :return: the estimate on the original scores and the interval
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (runs, tasks), got {scores.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    columns = [col[~np.isnan(col)] for col in scores.T]
    columns = [c for c in columns if c.size]
    if not columns:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0)
    # Tasks may keep different numbers of runs: bootstrap each task's runs and concatenate, which is what
    # stratification means; the statistic then sees one (reps, runs_total, 1) matrix per replicate.
    point = float(statistic(np.concatenate(columns)[:, None]))
    if all(c.size == columns[0].size for c in columns):
        stacked = np.stack(columns, axis=1)
        samples = stratified_bootstrap_samples(stacked, reps, rng)
    else:
        parts = [stratified_bootstrap_samples(c[:, None], reps, rng) for c in columns]
        samples = np.concatenate(parts, axis=1)
    values = statistic(samples)
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return Estimate(point, float(lo), float(hi), int(sum(c.size for c in columns)))


def curve_ci(
    curves: np.ndarray,
    statistic: Statistic = iqm,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM (or another statistic) of learning curves across runs with a bootstrap band, point by point.

    :param curves: (runs, points): one curve per seed sampled on a common grid of environment steps
    :return: ``(value, lo, hi)``, each of shape (points,)
    """
    curves = np.asarray(curves, dtype=np.float64)
    rng = np.random.default_rng(seed)
    est = [
        bootstrap_ci(curves[:, j], statistic, reps=reps, confidence=confidence, seed=rng)
        for j in range(curves.shape[1])
    ]
    return (np.array([e.value for e in est]), np.array([e.lo for e in est]), np.array([e.hi for e in est]))
