"""CCC against hand-computed values, an independent formula, masks and degenerate inputs."""

import numpy as np
import pytest

from emofusion.metrics import ccc, split_ccc


def test_hand_computed():
    # x = [1, 2, 3], y = [2, 4, 6]: means 2 and 4, var_x = 2/3, var_y = 8/3, cov = 4/3
    # CCC = 2 * 4/3 / (2/3 + 8/3 + 4) = (8/3) / (22/3) = 8/22
    assert ccc([1, 2, 3], [2, 4, 6]) == pytest.approx(8 / 22, abs=1e-12)


def test_identity_and_negation():
    x = np.linspace(-1, 1, 50)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0)


def test_shift_lowers_ccc_but_not_pearson():
    x = np.sin(np.linspace(0, 6, 200))
    assert ccc(x, x + 0.5) < 0.9
    assert np.corrcoef(x, x + 0.5)[0, 1] == pytest.approx(1.0)


def _ccc_independent(x, y):
    # Lin (1989) via Pearson's r and population standard deviations: rho_c = 2 r s_x s_y / (s_x^2 + s_y^2 + d^2)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = x.std(), y.std()
    return 2 * r * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_matches_independent_formula(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 1000)
    x = 0.6 * y + rng.normal(0, 0.3, 1000) + 0.1
    assert ccc(x, y) == pytest.approx(_ccc_independent(x, y), rel=1e-10)


def test_mask_excludes_frames():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=100), rng.normal(size=100)
    mask = rng.random(100) > 0.3
    assert ccc(x, y, mask) == pytest.approx(ccc(x[mask], y[mask]))
    # garbage at masked positions must not matter
    x2 = np.where(mask, x, 1e6)
    assert ccc(x2, y, mask) == pytest.approx(ccc(x, y, mask))


def test_float64_even_for_float32_input():
    y = (np.arange(100_000, dtype=np.float32) % 7) / 7.0 + 1000.0  # large offset: float32 moments lose digits
    x = y + np.float32(0.01)
    expected = _ccc_independent(x.astype(np.float64), y.astype(np.float64))
    assert ccc(x, y) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("x", "y"), [([0.3] * 5, [0.3] * 5), ([0.0] * 4, [0.0] * 4), ([], [])])
def test_degenerate_is_zero_not_nan(x, y):
    assert ccc(x, y) == 0.0


def test_constant_prediction_is_zero():
    # cov = 0 with nonzero denominator: a constant predictor scores 0
    assert ccc([0.2] * 4, [1, 2, 3, 4]) == 0.0


def test_all_masked_is_zero():
    assert ccc([1, 2], [2, 1], [False, False]) == 0.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        ccc([1, 2, 3], [1, 2])


def test_split_ccc_concatenates_clips_not_averages():
    rng = np.random.default_rng(1)
    preds, labels, masks = {}, {}, {}
    for i, n in enumerate([50, 120, 7]):
        y = rng.uniform(-1, 1, (n, 2))
        preds[f"c{i}"] = y + rng.normal(0, 0.4, (n, 2)) + i * 0.2
        labels[f"c{i}"] = y
        masks[f"c{i}"] = rng.random(n) > 0.2
    res = split_ccc(preds, labels, masks)
    m = np.concatenate([masks[c] for c in sorted(preds)])
    p = np.concatenate([preds[c] for c in sorted(preds)])
    y = np.concatenate([labels[c] for c in sorted(preds)])
    assert res["valence"] == pytest.approx(_ccc_independent(p[m, 0], y[m, 0]))
    assert res["arousal"] == pytest.approx(_ccc_independent(p[m, 1], y[m, 1]))
    assert res["mean"] == pytest.approx((res["valence"] + res["arousal"]) / 2)
    assert res["frames"] == int(m.sum())
    clip_mean = np.mean([res["per_clip"][c]["valence"] for c in preds])
    assert res["valence"] != pytest.approx(clip_mean)  # concatenated, not averaged per clip
    assert res["per_clip"]["c1"]["valence"] == pytest.approx(ccc(preds["c1"][:, 0], labels["c1"][:, 0], masks["c1"]))


def test_split_ccc_per_target_mask():
    y = np.array([[0.1, 0.2], [0.5, -5], [0.9, 0.7], [-0.3, 0.1]])
    p = y.copy()
    p[1, 1] = 100.0  # wrong, but masked for arousal only
    res = split_ccc({"a": p}, {"a": y}, {"a": y != -5})
    assert res["valence"] == pytest.approx(1.0)
    assert res["arousal"] == pytest.approx(1.0)
