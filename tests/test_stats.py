"""IQM and stratified bootstrap, against values computed by hand."""

import numpy as np
import pytest

from agents.stats import bootstrap_ci, curve_ci, iqm, mean, stratified_bootstrap_samples


def test_iqm_hand_computed():
    assert iqm(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # 3 scores: floor(0.75) = 0 trimmed
    assert iqm(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(2.5)  # middle two of 1..4
    assert iqm(np.array([10.0, 0.0, 0.0, 0.0])) == pytest.approx(0.0)  # the outlier is trimmed
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # runs x tasks are pooled: sorted 1, 2, 100, 200 -> mean of 2 and 100
    assert iqm(np.array([[1.0, 100.0], [2.0, 200.0]])) == pytest.approx(51.0)


def test_iqm_batched_equals_per_slice():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 5, 3))
    np.testing.assert_allclose(iqm(x), [iqm(x[i]) for i in range(7)])
    np.testing.assert_allclose(mean(x), x.reshape(7, -1).mean(axis=1))


def test_bootstrap_samples_draw_within_each_task():
    scores = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    s = stratified_bootstrap_samples(scores, 4000, np.random.default_rng(0))
    assert s.shape == (4000, 3, 2)
    assert set(np.unique(s[:, :, 0])) <= {0.0, 1.0, 2.0}
    assert set(np.unique(s[:, :, 1])) <= {10.0, 11.0, 12.0}
    freq = np.bincount(s[:, :, 0].astype(int).ravel(), minlength=3) / s[:, :, 0].size
    np.testing.assert_allclose(freq, 1 / 3, atol=0.02)


def test_stratification_keeps_each_task_represented():
    # Task A always scores 0, task B always 1, two runs each: every stratified replicate holds two 0s and two 1s,
    # so the mean is exactly 0.5 in every replicate. A pooled (unstratified) bootstrap would spread from 0 to 1.
    scores = np.array([[0.0, 1.0], [0.0, 1.0]])
    est = bootstrap_ci(scores, mean, reps=500)
    assert (est.value, est.lo, est.hi) == (0.5, 0.5, 0.5)


def test_bootstrap_interval_of_two_runs_matches_hand_computed_distribution():
    # Resampling {0, 1} twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95 % percentile
    # interval is [0, 1] and the 30-70 % interval collapses onto 0.5.
    est = bootstrap_ci(np.array([0.0, 1.0]), mean, reps=4000, confidence=0.95)
    assert (est.value, est.lo, est.hi) == (0.5, 0.0, 1.0)
    narrow = bootstrap_ci(np.array([0.0, 1.0]), mean, reps=4000, confidence=0.4)
    assert (narrow.lo, narrow.hi) == (0.5, 0.5)


def test_bootstrap_ci_brackets_point_and_is_reproducible():
    x = np.random.default_rng(1).uniform(size=(10, 3))
    a, b = bootstrap_ci(x, reps=300, seed=7), bootstrap_ci(x, reps=300, seed=7)
    assert a == b
    assert a.lo <= a.value <= a.hi
    assert a.n_runs == 30


def test_nan_runs_are_dropped_and_all_nan_gives_nan():
    est = bootstrap_ci(np.array([1.0, np.nan, 3.0]), mean, reps=200)
    assert est.value == pytest.approx(2.0) and est.n_runs == 2
    assert np.isnan(bootstrap_ci(np.array([np.nan, np.nan])).value)
    # Unequal runs per task after dropping NaNs still resample within tasks.
    uneven = np.array([[0.0, 1.0], [0.0, np.nan], [0.0, np.nan]])
    e = bootstrap_ci(uneven, mean, reps=200)
    assert (e.value, e.lo, e.hi, e.n_runs) == (0.25, 0.25, 0.25, 4)


def test_curve_ci_pointwise():
    curves = np.array([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [0.0, 0.5, 1.0]])
    v, lo, hi = curve_ci(curves, reps=100)
    np.testing.assert_allclose(v, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(lo, v)
    np.testing.assert_allclose(hi, v)


def test_bad_shapes_and_confidence():
    with pytest.raises(ValueError, match="runs, tasks"):
        bootstrap_ci(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.zeros(3), confidence=1.5)
