"""Subject choice: which detected face is the clip's subject, frame after frame.

Candidates are faces with probability >= ``faces.min_probability``; for ``<video>_left`` / ``<video>_right``
clips only faces whose centre lies in that half of the frame. The first choice, and any choice after
``faces.reacquire_after`` frames without the subject, is the largest candidate; otherwise the candidate that
overlaps the last chosen box (IoU >= 0.3) or, failing that, whose centre is within half a face of it (one more half
per frame it has been missing) at a similar size. A frame where the tracked subject is not found is invalid even if
someone else is visible, so the choice never jumps to another person within a track.
"""

from __future__ import annotations

import numpy as np

_TRACK_IOU = 0.3
_TRACK_DISTANCE = 0.5  # centre distance, in face sizes, still accepted as the same face
_TRACK_SCALE = 2.0  # largest size ratio between the tracked face and a candidate


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box with ``(k, 4)`` boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


class SubjectTracker:
    """Chooses the subject's face frame after frame (rules in the module docstring). State carries across
    batches, so one tracker follows a whole clip."""

    def __init__(self, *, side: str | None, width: int, min_probability: float, reacquire_after: int):
        if side not in (None, "left", "right"):
            raise ValueError(f"side must be None, 'left' or 'right', not {side!r}")
        self.side = side
        self.width = float(width)
        self.min_probability = float(min_probability)
        self.reacquire_after = int(reacquire_after)
        self.last: np.ndarray | None = None
        self.missed = 0

    def choose(self, boxes: np.ndarray, probs: np.ndarray) -> int:
        """Index of the subject's face among ``boxes (k, 4)`` of one frame, or -1 when it is not there."""
        keep = probs >= self.min_probability
        if self.side is not None and len(boxes):
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            keep &= (cx < self.width / 2) if self.side == "left" else (cx >= self.width / 2)
        idx = np.flatnonzero(keep)
        choice = -1
        if len(idx):
            cand = boxes[idx]
            areas = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])
            if self.last is None or self.missed >= self.reacquire_after:
                choice = int(idx[np.argmax(areas)])
            else:
                choice = self._match(self.last, cand, areas, idx)
        if choice >= 0:
            self.last = boxes[choice].astype(np.float64)
            self.missed = 0
        else:
            self.missed += 1
        return choice

    def _match(self, last: np.ndarray, cand: np.ndarray, areas: np.ndarray, idx: np.ndarray) -> int:
        iou = box_iou(last, cand)
        j = int(np.argmax(iou))
        if iou[j] >= _TRACK_IOU:
            return int(idx[j])
        last_size = max(last[2] - last[0], last[3] - last[1], 1.0)
        last_area = max((last[2] - last[0]) * (last[3] - last[1]), 1.0)
        dist = (
            np.hypot(
                (cand[:, 0] + cand[:, 2] - last[0] - last[2]) / 2, (cand[:, 1] + cand[:, 3] - last[1] - last[3]) / 2
            )
            / last_size
        )
        ratio = np.sqrt(np.maximum(areas, 1e-9) / last_area)
        reach = _TRACK_DISTANCE * (1 + self.missed)  # a face lost for a few frames may have moved further
        ok = (dist <= reach) & (ratio <= _TRACK_SCALE) & (ratio >= 1 / _TRACK_SCALE)
        if not ok.any():
            return -1
        return int(idx[np.argmin(np.where(ok, dist, np.inf))])
