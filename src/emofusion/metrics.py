"""Lin's concordance correlation coefficient (CCC), the ABAW valence-arousal metric.

Population moments in float64, invalid frames removed by mask, reported over all valid frames of all clips of a
split concatenated (the ABAW protocol), with per-clip CCC as a diagnostic. A degenerate input (no valid frame, or
both series constant) gives 0.0, never NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TARGETS = ("valence", "arousal")
INVALID = -5.0  # Aff-Wild2's "not annotated" value


def ccc(
    pred: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    mask: Sequence[bool] | np.ndarray | None = None,
) -> float:
    """CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2), population moments, float64.

    ``mask`` (True = valid) selects the frames that count; without it every frame counts.
    Returns 0.0 when there is no valid frame or the denominator is 0 (both inputs constant and equal).
    """
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"ccc: prediction and target differ in length ({x.size} vs {y.size})")
    if mask is not None:
        m = np.asarray(mask, dtype=bool).ravel()
        if m.shape != x.shape:
            raise ValueError(f"ccc: mask length {m.size} differs from the data length {x.size}")
        x, y = x[m], y[m]
    if x.size == 0:
        return 0.0
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = vx + vy + (mx - my) ** 2
    if denom <= 0.0 or not np.isfinite(denom):
        return 0.0
    return float(2.0 * cov / denom)


def split_ccc(
    preds: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    targets: Sequence[str] = TARGETS,
) -> dict:
    """CCC of a split: all valid frames of all clips concatenated, per target, plus their mean and per-clip values.

    ``preds[clip]`` and ``labels[clip]`` are ``(N, len(targets))``; ``masks[clip]`` is ``(N,)`` or
    ``(N, len(targets))`` (True = valid). Clips are visited in sorted order so the result is deterministic.
    Returns ``{"valence": .., "arousal": .., "mean": .., "frames": n, "per_clip": {clip: {...}}}``.
    """
    clips = sorted(preds)
    if not clips:
        raise ValueError("split_ccc: no clips to evaluate")
    p_all, y_all, m_all, per_clip = [], [], [], {}
    for clip in clips:
        p = np.asarray(preds[clip], dtype=np.float64).reshape(-1, len(targets))
        y = np.asarray(labels[clip], dtype=np.float64).reshape(-1, len(targets))
        m = np.asarray(masks[clip], dtype=bool)
        m = np.broadcast_to(m.reshape(len(m), -1), y.shape)
        if p.shape != y.shape:
            raise ValueError(f"split_ccc: clip {clip!r} has {len(p)} predictions for {len(y)} labelled frames")
        per_clip[clip] = {t: ccc(p[:, i], y[:, i], m[:, i]) for i, t in enumerate(targets)}
        per_clip[clip]["frames"] = int(m.any(axis=1).sum())
        p_all.append(p)
        y_all.append(y)
        m_all.append(m)
    p, y, m = np.concatenate(p_all), np.concatenate(y_all), np.concatenate(m_all)
    out: dict = {t: ccc(p[:, i], y[:, i], m[:, i]) for i, t in enumerate(targets)}
    out["mean"] = float(np.mean([out[t] for t in targets]))
    out["frames"] = int(m.any(axis=1).sum())
    out["per_clip"] = per_clip
    return out
