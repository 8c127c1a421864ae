"""The robust scale-and-shift fit in inverse depth, on points whose answer is known."""

import numpy as np
import pytest

from mtdense.teachers.align import fit_inverse_depth, inverse_to_depth, residual, to_inverse


@pytest.mark.parametrize("outliers", [0.0, 0.2, 0.4])
def test_fit_recovers_scale_and_shift_through_outliers(outliers):
    rng = np.random.default_rng(7)
    depth = rng.uniform(2.0, 80.0, 4000)
    x = (1.0 / depth - 0.01) / 0.05  # so 1 / depth = 0.05 x + 0.01 exactly
    anchors = depth.copy()
    bad = rng.random(depth.size) < outliers
    anchors[bad] = rng.uniform(1.0, 100.0, int(bad.sum()))
    fit = fit_inverse_depth(x, anchors)
    assert fit.scale == pytest.approx(0.05, rel=1e-6) and fit.shift == pytest.approx(0.01, rel=1e-5)
    assert fit.points == 4000 and fit.inliers >= int((~bad).sum())
    assert residual(fit.depth(x), depth) < 1e-6


def test_fit_with_noise_stays_within_the_noise():
    rng = np.random.default_rng(1)
    depth = rng.uniform(2.0, 60.0, 5000)
    x = (1.0 / depth) * 3.0 - 0.2
    noisy = x * (1 + rng.normal(0, 0.005, x.size))
    anchors = np.where(rng.random(depth.size) < 0.3, rng.uniform(1.0, 90.0, depth.size), depth)
    fit = fit_inverse_depth(noisy, anchors)
    assert residual(fit.depth(noisy), depth) < 0.01


def test_residual_is_the_median_relative_error_and_counts_missing_depth_as_wrong():
    pred = np.array([10.0, 11.0, 0.0, 20.0, 5.0])
    anchors = np.array([10.0, 10.0, 10.0, 0.0, 4.0])  # errors 0, 0.1, 1 (no depth), -, 0.25
    assert residual(pred, anchors) == pytest.approx((0.1 + 0.25) / 2)
    assert np.isnan(residual(pred, np.zeros(5)))


def test_conversions_and_refusals():
    np.testing.assert_array_equal(to_inverse(np.array([2.0, 0.0, 4.0]), "depth"), [0.5, 0.0, 0.25])
    np.testing.assert_array_equal(inverse_to_depth(np.array([0.5, -1.0, 0.0])), [2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="must be depth, inverse-depth or disparity"):
        to_inverse(np.ones(3), "metres")
    with pytest.raises(ValueError, match="at least 2"):
        fit_inverse_depth(np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="flat"):
        fit_inverse_depth(np.ones(50), np.linspace(1, 50, 50))
