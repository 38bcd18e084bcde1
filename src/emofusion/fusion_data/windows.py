"""The windowings of MODELS.md, both from frame-level stores, as index arithmetic (no per-frame loops).

A window of ``window`` frames starting at frame ``s`` is cut into ``steps`` sub-sequences of ``sub = window /
steps`` frames; from each, ``pool`` frames evenly spaced and ending at its last frame (every ``sub / pool``-th)
are averaged into one step. The step's label is that of the sub-sequence's last frame, and its prediction
stands for every frame of the sub-sequence. Clip-level (published): 512 / 16 / 8 (L = 16); frame-level:
``steps = window``, ``pool = 1`` (L = window). Windows start at 0, hop, 2 hop, ... until one reaches the clip's
end; frames past the end are padding (invalid), so every frame is covered and overlaps are averaged.

These counts are frames *at the rate the model was trained at* (``Windowing.rate``, the training clips' frame
rate; None for runs that did not record it: the frames' own rate). A clip at another rate, or at a variable rate,
meets the model on a uniform grid at that rate (:func:`rate_grid`): each grid time takes the latest frame at or
before it, and each frame gets back the grid sample at or before its time (:func:`grid_of_frames`), so the same
content at 15, 30 or 60 fps gets the same windows in seconds. A clip already at the training rate
(:func:`at_rate`) keeps its frames as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emofusion.errors import ConfigError


@dataclass(frozen=True)
class Windowing:
    window: int
    steps: int
    pool: int
    hop: int
    train_hop: int
    rate: float | None = None  # frames per second the counts above are at (the training clips'); None: unknown

    @classmethod
    def from_training(cls, training: dict, *, key: str) -> Windowing:
        """From a resolved experiment's ``training``; ``key`` (``fusion.experiments.<name>.training``) names the
        settings in errors."""
        window, steps, pool = int(training["window"]), int(training["steps"]), int(training["pool"])
        if window % steps:
            raise ConfigError(
                f"{key}: window {window} is not a multiple of steps {steps} (each step is window/steps "
                "frames); change window or steps"
            )
        sub = window // steps
        if sub % pool:
            raise ConfigError(
                f"{key}: pool {pool} does not divide the {sub} frames of a step (window/steps); change pool"
            )
        hop = int(training.get("hop") or window)
        train_hop = int(training.get("train_hop") or hop)
        if hop > window:
            raise ConfigError(
                f"{key}: hop {hop} is larger than window {window}: frames between windows would get no prediction"
            )
        return cls(window=window, steps=steps, pool=pool, hop=hop, train_hop=train_hop)

    @property
    def sub(self) -> int:
        """Frames per step."""
        return self.window // self.steps

    def starts(self, frames: int, hop: int | None = None) -> np.ndarray:
        """Start frames of the windows covering a clip of ``frames`` frames (at least one window)."""
        hop = hop or self.hop
        last = max(frames - self.window, 0)
        n = -(-last // hop) + 1  # ceil(last / hop) + 1: the last window reaches the end
        return np.arange(n, dtype=np.int64) * hop

    def pooled_frames(self) -> np.ndarray:
        """``(steps, pool)`` frame offsets inside a window of the frames pooled into each step."""
        stride = self.sub // self.pool
        return (np.arange(self.steps)[:, None] * self.sub + np.arange(1, self.pool + 1)[None, :] * stride - 1).astype(
            np.int64
        )

    def label_frames(self) -> np.ndarray:
        """``(steps,)`` offsets of the frame whose label each step takes (its sub-sequence's last frame)."""
        return np.arange(1, self.steps + 1, dtype=np.int64) * self.sub - 1


def training_rate(fps: Sequence[float]) -> float | None:
    """The frame rate a model is trained at: the median frame rate of its training clips (None without any)."""
    fps = [float(f) for f in fps if f and np.isfinite(f) and f > 0]
    return float(np.median(fps)) if fps else None


# Fractions of a grid step. _SAME: how far a clip's frames may be from the grid and still be given to the model
# frame for frame (arange/fps of a constant-rate clip is exact; this only absorbs float rounding). _SNAP: how much
# later than a grid time a frame may start and still count as shown at it (decoder times are rounded to the
# stream's time base, a millisecond in Matroska: a 60 fps frame at 0.017 s belongs to the grid time 1/60 s).
_SAME = 1e-3
_SNAP = 0.1


def at_rate(times: np.ndarray, rate: float | None) -> bool:
    """Whether frames at ``times`` (seconds) already sit on the uniform grid of ``rate`` (None: always): the
    clip is then given to the model frame for frame, exactly as before rates were considered."""
    if rate is None or len(times) == 0:
        return True
    grid = times[0] + np.arange(len(times)) / rate
    return bool(np.abs(np.asarray(times, np.float64) - grid).max() <= _SAME / rate)


def rate_grid(times: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The uniform grid at ``rate`` covering frames at ``times`` (seconds, non-decreasing): ``(K,)`` grid times
    from the first frame's time until the last frame ends (it lasts as long as the interval before it), and
    ``(K,)`` the frame each grid time takes (the latest at or before it: what was on screen then, never a later
    frame). So one content at any rate spans the same grid."""
    times = np.asarray(times, np.float64)
    last = times[-1] - times[-2] if len(times) > 1 else 1.0 / rate
    k = max(int(np.ceil((times[-1] + last - times[0]) * rate - _SNAP)), 1)
    grid = times[0] + np.arange(k) / rate
    source = np.searchsorted(times, grid + _SNAP / rate, side="right") - 1
    return grid, np.clip(source, 0, len(times) - 1).astype(np.int64)


def grid_of_frames(times: np.ndarray, grid: np.ndarray, rate: float) -> np.ndarray:
    """``(N,)`` for each frame at ``times`` the grid sample at or before its time: a grid sample stands for the
    interval up to the next one (as a step's prediction stands for its sub-sequence), so a frame takes the
    sample whose interval holds it."""
    index = np.searchsorted(grid, np.asarray(times, np.float64) + _SNAP / rate, side="right") - 1
    return np.clip(index, 0, len(grid) - 1).astype(np.int64)


def windows_for(frames: dict[str, int], clips: list[str], windowing: Windowing, hop: int) -> np.ndarray:
    """``(W, 2)`` int64 rows ``(index into clips, start frame)`` for every window of the clips, in order."""
    rows = [
        np.stack([np.full(len(s), i), s], axis=1)
        for i, c in enumerate(clips)
        for s in [windowing.starts(frames[c], hop)]
    ]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)


def reassemble(
    step_values: np.ndarray, windows: np.ndarray, clips: list[str], frames: dict[str, int], windowing: Windowing
) -> dict[str, np.ndarray]:
    """Frame-level values from step-level window outputs: every step's value stands for its ``sub`` frames;
    overlapping windows are averaged; padding past a clip's end is dropped.

    ``step_values (W, steps, T)`` for ``windows (W, 2)`` of :func:`windows_for`; returns ``{clip: (N, T)}``
    float32. Raises if a frame got no prediction (a windowing bug, never silently zero)."""
    T = step_values.shape[2]
    offsets = np.cumsum([0] + [frames[c] for c in clips])
    within = np.arange(windowing.window, dtype=np.int64)  # (window,) frame offsets; step of each = within // sub
    frame = windows[:, 1:2] + within[None, :]  # (W, window)
    n = np.array([frames[c] for c in clips], dtype=np.int64)[windows[:, 0]]
    keep = frame < n[:, None]
    glob = (offsets[windows[:, 0]][:, None] + frame)[keep]  # (K,) global frame index
    vals = np.repeat(step_values.astype(np.float64), windowing.sub, axis=1)[keep]  # (W, window, T) -> (K, T)
    total = int(offsets[-1])
    sums = np.zeros((total, T))
    for t in range(T):  # T is 2: a bincount per target
        sums[:, t] = np.bincount(glob, weights=vals[:, t], minlength=total)
    counts = np.bincount(glob, minlength=total)
    if (counts[:total] == 0).any():
        raise RuntimeError(f"reassemble: {int((counts == 0).sum())} frames got no prediction")
    out = (sums / counts[:, None]).astype(np.float32)
    return {c: out[offsets[i] : offsets[i + 1]] for i, c in enumerate(clips)}
