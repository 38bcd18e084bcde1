"""Smoothing of frame predictions, chosen on held-out data.

- :func:`moving_average`: centred, odd window, edges padded with the nearest value (not zeros).
- :func:`choose_window`: the candidate window with the best CCC on the data it is given.

Smoothing is chosen per target and never on the split it is reported for: train and test use the window chosen
on the whole validation split; the validation figure is cross-fitted (windows chosen on one half of the
validation videos are applied to the other half, and the other way round).

Windows count rows of the training rate's grid (:mod:`emofusion.fusion_data.windows`): evaluation and predict smooth
a clip at another rate on that grid before its frames take their rows back, so a window is seconds at the
training rate and a clip at the rate keeps the exact frame count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emofusion.errors import ConfigError
from emofusion.metrics import TARGETS, ccc


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with an odd ``window``; edges padded with the nearest value."""
    if window <= 1 or len(x) == 0:
        return x.copy()
    if window % 2 == 0:
        raise ConfigError(f"fusion.smoothing.windows: {window} is even; a centred window must be odd")
    k = window // 2
    padded = np.concatenate([np.repeat(x[:1], k, axis=0), x, np.repeat(x[-1:], k, axis=0)]).astype(np.float64)
    c = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(padded, axis=0)])
    return ((c[window:] - c[:-window]) / window).astype(x.dtype)


def _pooled_ccc(
    preds: Mapping[str, np.ndarray], labels: Mapping[str, tuple[np.ndarray, np.ndarray]], t: int, window: int
) -> float:
    clips = sorted(preds)
    p = np.concatenate([moving_average(preds[c][:, t], window) for c in clips])
    y = np.concatenate([labels[c][0][:, t] for c in clips])
    m = np.concatenate([labels[c][1][:, t] for c in clips])
    return ccc(p, y, m)


def choose_window(
    preds: Mapping[str, np.ndarray], labels: Mapping[str, tuple[np.ndarray, np.ndarray]], candidates: list[int]
) -> dict[str, int]:
    """Per target, the candidate window (1 = none) with the best pooled CCC on these clips (ties: the smaller)."""
    out = {}
    for t, name in enumerate(TARGETS):
        scores = [(_pooled_ccc(preds, labels, t, w), -w) for w in sorted(set(candidates) | {1})]
        out[name] = -max(scores)[1]
    return out


def smooth(preds: Mapping[str, np.ndarray], windows: Mapping[str, int]) -> dict[str, np.ndarray]:
    return {
        c: np.stack([moving_average(p[:, t], windows[name]) for t, name in enumerate(TARGETS)], axis=1)
        for c, p in preds.items()
    }


def halves(clips: list[str], video_of: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Two halves of the clips, whole videos at a time (both people of a two-person video together)."""
    videos = sorted({video_of[c] for c in clips})
    first = set(videos[0::2])
    return [c for c in clips if video_of[c] in first], [c for c in clips if video_of[c] not in first]
