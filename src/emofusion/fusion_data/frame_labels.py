"""The labels of a fold's rows: read from a labels store (training, evaluation) or none at all (predict: a new
video has no labels, so every row is unannotated).

A step's label is valid when the label of its sub-sequence's last frame is annotated (not -5) and inside the clip
(not padding): the padding row past the end is always invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emofusion.errors import ConfigError, InputError
from emofusion.fusion_data.clips import FoldClips
from emofusion.metrics import INVALID


class FrameLabels:
    """``labels (total + 1, 2)`` float32 and ``label_valid (total + 1, 2)`` bool on the rows of ``clips`` (grid
    rows for a clip held on the training rate's grid), the padding row last."""

    def __init__(self, clips: FoldClips):
        self.clips = clips
        self.labels = np.full((clips.total + 1, 2), INVALID, np.float32)
        self.label_valid = np.zeros((clips.total + 1, 2), bool)
        self._frame_labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # own frames of clips on the grid

    @classmethod
    def unannotated(cls, clips: FoldClips) -> FrameLabels:
        """Every row unannotated (a video without labels)."""
        out = cls(clips)
        for c in clips.source:
            n = clips.clip_frames_native[c]
            out._frame_labels[c] = (np.full((n, 2), INVALID, np.float32), np.zeros((n, 2), bool))
        return out

    @classmethod
    def read(cls, path: str | Path, clips: FoldClips) -> FrameLabels:
        """The labels of every clip of ``clips`` from the labels store at ``path``
        (:func:`emofusion.labels.iter_labels`), each checked to have one row per frame of the manifest."""
        from emofusion.labels import iter_labels

        path = Path(path)
        out = cls(clips)
        # One pass over the store, clip by clip, through its owner.
        for i, (c, values, valid) in enumerate(iter_labels(path, clips.clips)):
            if len(values) != clips.clip_frames_native[c]:
                raise InputError(
                    f"labels store {path}: clip {c!r} has {len(values)} rows for {clips.clip_frames_native[c]} "
                    "frames in the manifest; rebuild it from this manifest"
                )
            if c in clips.source:
                out._frame_labels[c] = (values, valid)
                values, valid = values[clips.source[c]], valid[clips.source[c]]
            out.labels[clips.offsets[i] : clips.offsets[i + 1]] = values
            out.label_valid[clips.offsets[i] : clips.offsets[i + 1]] = valid
        return out

    def of_clip(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, 2)`` labels and validity of ``clip``'s rows (grid rows for a clip not at the training rate)."""
        rows = self.clips.rows_of(clip)
        return self.labels[rows], self.label_valid[rows]

    def frame_labels(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 2)`` labels and validity of each frame of ``clip`` (its own frames, not grid rows)."""
        if clip not in self.clips.back:
            return self.of_clip(clip)
        return self._frame_labels[clip]

    def valid_frames(self, split: str) -> int:
        """Rows of ``split``'s clips with at least one valid label."""
        return int(self.label_valid[self.clips.rows(self.clips.clips_of(split))].any(axis=1).sum())


def check_fold(clips: FoldClips, labels: FrameLabels, fold: int) -> None:
    """A fold a run can train on: training and validation clips, each with a valid label somewhere."""
    for split in ("train", "validation"):
        if not clips.clips_of(split):
            raise ConfigError(f"fusion.folds: fold {fold} has no {split} clips in the manifest")
        if labels.valid_frames(split) == 0:
            raise ConfigError(
                f"fusion.folds: fold {fold} has no valid label in its {split} clips "
                f"({', '.join(clips.clips_of(split)[:5])}...); every label there is -5"
            )
