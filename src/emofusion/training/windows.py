"""The windowings of MODELS.md, both from frame-level stores, as index arithmetic (no per-frame loops).

A window of ``window`` frames starting at frame ``s`` is cut into ``steps`` sub-sequences of ``sub = window /
steps`` frames; from each, ``pool`` frames evenly spaced and ending at its last frame (every ``sub / pool``-th)
are averaged into one step. The step's label is that of the sub-sequence's last frame, and its prediction
stands for every frame of the sub-sequence. Clip-level (published): 512 / 16 / 8 (L = 16); frame-level:
``steps = window``, ``pool = 1`` (L = window). Windows start at 0, hop, 2 hop, ... until one reaches the clip's
end; frames past the end are padding (invalid), so every frame is covered and overlaps are averaged.
"""

from __future__ import annotations

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
