"""The clips of one fold: their order, split and frame counts, the training rate's grid, and the window index
arithmetic over the rows of all clips laid end to end.

Rows: clip ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of every per-row array (features, validity, labels), and
one row past the end (``total``) is the padding row every out-of-clip index points at (invalid).

Rates: with a training rate (``rate``: frames per second, or "train" for the median rate of the fold's training
clips), a clip whose manifest ``fps`` differs is held on the uniform grid at that rate (each grid row takes the
latest frame at or before it, features, masks and labels alike; :func:`emofusion.fusion_data.windows.rate_grid`),
so its windows span the seconds they span on the other clips. ``frames`` then counts grid rows;
:meth:`FoldClips.to_frames` gives a clip's values back on its own frames. Clips at the rate (every clip of a
one-rate corpus) are read exactly as without one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from emofusion.errors import ConfigError
from emofusion.fusion_data.windows import Windowing, at_rate, grid_of_frames, rate_grid, training_rate, windows_for
from emofusion.log import logger


class FoldClips:
    """The clips of ``manifest`` (sorted by id) with their split in ``fold`` (:func:`emofusion.corpus.fold_split`),
    on ``windowing`` (its ``rate`` set when a training rate is given)."""

    def __init__(self, manifest: pd.DataFrame, *, fold: int, windowing: Windowing, rate: float | str | None = None):
        from emofusion.corpus import fold_split

        self.windowing = windowing
        df = manifest.sort_values("clip").reset_index(drop=True)
        self.clips: list[str] = list(df["clip"])
        self.frames: dict[str, int] = dict(zip(df["clip"], df["frames"].astype(int), strict=True))
        try:
            splits = fold_split(df, fold)
        except ConfigError as e:
            raise ConfigError(f"fusion.folds: {e}") from None
        self.split: dict[str, str] = dict(zip(df["clip"], splits, strict=True))
        self._on_grid(df, rate)
        self.offsets = np.cumsum([0] + [self.frames[c] for c in self.clips]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.clip_frames = np.array([self.frames[c] for c in self.clips], dtype=np.int64)

    @classmethod
    def one_clip(cls, clip: str, frames: int, windowing: Windowing) -> FoldClips:
        """A single test clip (a video predict reads), its frames as they are (predict grids a clip itself)."""
        manifest = pd.DataFrame({"clip": [clip], "frames": [frames], "split": ["test"], "fold": [-1]})
        return cls(manifest, fold=0, windowing=windowing)

    def _on_grid(self, df: pd.DataFrame, rate: float | str | None) -> None:
        """The training rate and, per clip at another rate, its grid rows' frames and its frames' grid rows."""
        self.clip_frames_native = dict(self.frames)
        self.source: dict[str, np.ndarray] = {}  # grid row -> frame, for clips not at the rate
        self.back: dict[str, np.ndarray] = {}  # frame -> grid row
        fps = dict(zip(df["clip"], df["fps"], strict=True)) if "fps" in df else {}
        if rate == "train":
            rate = training_rate([fps[c] for c in self.clips_of("train") if c in fps])
        if rate is None:  # none asked (predict grids a clip itself), or a manifest without rates
            return
        rate = float(rate)
        self.windowing = replace(self.windowing, rate=rate)
        for c in self.clips:
            n, f = self.frames[c], float(fps[c])
            if n == 0 or not np.isfinite(f) or f <= 0:
                continue
            times = np.arange(n) / f
            if not at_rate(times, rate):
                grid, self.source[c] = rate_grid(times, rate)
                self.back[c] = grid_of_frames(times, grid, rate)
                self.frames[c] = len(grid)
        if self.source:
            logger.info(
                "%d of %d clips are not at the training rate (%g fps) and are held on its grid (first: %s, %g fps)",
                len(self.source),
                len(self.clips),
                rate,
                next(iter(self.source)),
                fps[next(iter(self.source))],
            )

    def clips_of(self, split: str) -> list[str]:
        return [c for c in self.clips if self.split[c] == split]

    def rows_of(self, clip: str) -> slice:
        """``clip``'s rows of the per-row arrays."""
        i = self.clips.index(clip)
        return slice(self.offsets[i], self.offsets[i + 1])

    def rows(self, clips: list[str]) -> np.ndarray:
        idx = [self.clips.index(c) for c in clips]
        return (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if idx
            else np.zeros(0, np.int64)
        )

    def to_frames(self, clip: str, values: np.ndarray) -> np.ndarray:
        """Values of ``clip``'s rows (grid rows for a clip not at the training rate) on each of its frames: the
        row at or before the frame's time. A clip at the rate: ``values`` themselves."""
        return values[self.back[clip]] if clip in self.back else values

    def windows(self, clips: list[str], hop: int) -> np.ndarray:
        """``(W, 2)`` rows ``(clip index in self.clips, start frame)`` of every window of ``clips``."""
        w = windows_for(self.frames, clips, self.windowing, hop)
        index = {c: self.clips.index(c) for c in clips}
        w[:, 0] = np.array([index[clips[i]] for i in w[:, 0]], dtype=np.int64) if len(w) else w[:, 0]
        return w

    def gather_index(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row indices ``(B, steps, pool)`` of the pooled frames and ``(B, steps)`` of the label frames;
        frames past a clip's end point at the padding row ``self.total``."""
        n = self.clip_frames[windows[:, 0]]
        start = windows[:, 1]
        pooled = start[:, None, None] + self.windowing.pooled_frames()[None]  # (B, steps, pool)
        label = start[:, None] + self.windowing.label_frames()[None]  # (B, steps)
        base = self.offsets[windows[:, 0]]
        pooled_glob = np.where(pooled < n[:, None, None], base[:, None, None] + pooled, self.total)
        label_glob = np.where(label < n[:, None], base[:, None] + label, self.total)
        return pooled_glob, label_glob
