"""Native-rate backbone outputs onto the video frame timeline.

A frame's time is its presentation time as the decoder gives it, in seconds from the clip's first frame
(:func:`frame_times`: the video's exact scan, the one the face store's frames come from), so a variable frame rate
video keeps its real times; a constant frame rate gives exactly ``i / fps``. Audio windows, the word lookup and
predict's ``time_s`` all use these times.

Every audio row describes the window *ending* at its frame's time (causal): a frame never sees audio from after
it. Two ways to get there:

* :func:`window_pool` — outputs with a fine native rate (opensmile LLDs at 100 Hz, Whisper states at 50 Hz):
  statistics (mean, std, ...) of the native frames that end in ``(t - window, t]``, from cumulative sums, so the
  cost is one pass over the native frames plus a binary search per video frame;
* :func:`hold_latest` — outputs that already summarise a window (a GE2E or VGGish embedding of the last second):
  each frame takes the latest one that ended at or before it.

A frame earlier than the first native frame's end (the first few ms of a clip) takes the first native frame, so
every frame has a row; the stage marks validity from the audio sidecar's span.

Text: :func:`words_on_frames` puts one row per word onto frames with the transcript's word timing
(:func:`emofusion.asr.transcript.word_at_frames`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emofusion.errors import InputError

STATS = ("mean", "std", "min", "max")
_EPS = 1e-9  # seconds: a native frame ending exactly at a frame's time belongs to that frame's window


def _bounds(ends: np.ndarray, frame_times: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the half-open range [lo, hi) of native frames ending in (t - window, t]; never empty."""
    n_native = len(ends)
    hi = np.searchsorted(ends, frame_times + _EPS, side="right")
    lo = np.searchsorted(ends, frame_times - window + _EPS, side="right")
    hi = np.clip(np.maximum(hi, 1), 1, n_native)  # before the first native frame ends: use the first one
    lo = np.minimum(lo, hi - 1)
    return lo, hi


def window_pool(
    values: np.ndarray,
    ends: np.ndarray,
    frame_times: np.ndarray,
    *,
    window: float,
    stats: Sequence[str] = ("mean", "std"),
) -> np.ndarray:
    """Statistics of native frames over the window ending at each frame's time.

    values (T, D) at native frames ending at ``ends`` (T,) seconds (non-decreasing); frame_times (N,) seconds;
    returns float32 (N, D * len(stats)), the statistics concatenated in ``stats`` order. With no native frames
    (empty audio) every row is zeros.
    """
    bad = [s for s in stats if s not in STATS]
    if bad or not stats:
        raise ValueError(f"window statistics must be a non-empty list from {STATS}, got {list(stats)}")
    if window <= 0:
        raise ValueError(f"window must be positive seconds, got {window}")
    values = np.asarray(values, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    frame_times = np.asarray(frame_times, dtype=np.float64)
    t_native, d = values.shape
    if len(ends) != t_native:
        raise ValueError(f"{t_native} native frames but {len(ends)} end times")
    if t_native == 0:
        return np.zeros((len(frame_times), d * len(stats)), dtype=np.float32)
    lo, hi = _bounds(ends, frame_times, window)
    count = (hi - lo)[:, None].astype(np.float64)
    centred = values - values.mean(axis=0)  # cumulative sums of centred values keep the variance precise
    out = []
    if "mean" in stats or "std" in stats:
        c1 = np.concatenate([np.zeros((1, d)), np.cumsum(centred, axis=0)])
        mean = (c1[hi] - c1[lo]) / count
    if "std" in stats:
        c2 = np.concatenate([np.zeros((1, d)), np.cumsum(centred**2, axis=0)])
        std = np.sqrt(np.maximum((c2[hi] - c2[lo]) / count - mean**2, 0.0))
    for s in stats:
        if s == "mean":
            out.append(mean + values.mean(axis=0))
        elif s == "std":
            out.append(std)
        else:  # min / max: a sparse table would be O(T log T); windows are short, so a strided reduce is fine
            out.append(_window_extreme(values, lo, hi, np.minimum if s == "min" else np.maximum))
    return np.concatenate(out, axis=1).astype(np.float32)


def _window_extreme(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, op, *, block_bytes: int = 64 << 20
) -> np.ndarray:
    """op-reduce of values[lo:hi] per row, vectorised over rows with a padded index matrix. Rows go in blocks
    so the gathered (rows, span, D) array stays under ``block_bytes`` whatever the video's length."""
    span = int((hi - lo).max())
    rows = max(1, block_bytes // max(1, span * values.shape[1] * values.itemsize))
    out = np.empty((len(lo), values.shape[1]), dtype=values.dtype)
    for start in range(0, len(lo), rows):
        b_lo, b_hi = lo[start : start + rows], hi[start : start + rows]
        idx = b_lo[:, None] + np.arange(span)[None, :]  # (rows, span)
        idx = np.where(idx < b_hi[:, None], idx, (b_hi - 1)[:, None])  # pad with the last in-window frame
        out[start : start + rows] = op.reduce(values[idx], axis=1)
    return out


def hold_latest(values: np.ndarray, ends: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Each frame takes the latest window-level output that ended at or before its time (the first before any).

    values (T, D), ends (T,) seconds non-decreasing, frame_times (N,) -> float32 (N, D); zeros when T is 0."""
    values = np.asarray(values, dtype=np.float32)
    if len(values) == 0:
        return np.zeros((len(frame_times), values.shape[1]), dtype=np.float32)
    idx = np.searchsorted(np.asarray(ends, dtype=np.float64), np.asarray(frame_times) + _EPS, side="right") - 1
    return values[np.clip(idx, 0, len(values) - 1)]


# A constant-rate video's times lie on the grid i / fps up to its time base's rounding (1 ms in Matroska); within
# this fraction of a frame (and at least _GRID_FLOOR s) they ARE that grid, so such a video keeps the exact times
# (and bytes) of the grid; anything further off is a variable frame rate and keeps its own times.
_GRID_TOLERANCE = 0.1
_GRID_FLOOR = 1e-3


def presentation_times(timestamps: np.ndarray, fps: float) -> np.ndarray:
    """The decoder's presentation times (N,) seconds -> seconds from the first frame, as every stage uses them.

    The first frame is at 0, as the audio stage's sample 0 (:mod:`emofusion.audio.stage`) and the transcript's
    time 0 are. Times within a tenth of a frame of ``i / fps`` (``fps``: the decoder's average rate, the one the
    audio sidecar and the manifest record) are returned as exactly ``arange(N) / fps``."""
    pts = np.asarray(timestamps, dtype=np.float64)
    if pts.size == 0:
        return pts.copy()
    if not np.isfinite(pts).all():
        raise ValueError("frame timestamps hold NaN or inf")
    times = pts - pts[0]
    grid = np.arange(len(pts), dtype=np.float64) / float(fps)
    if np.max(np.abs(times - grid)) <= max(_GRID_TOLERANCE / float(fps), _GRID_FLOOR):
        return grid
    return times


def frame_times(video: str | Path, *, fps: float) -> np.ndarray:
    """Seconds of each frame of ``video`` from its first frame: the one timeline every modality is put on.

    From the video's exact scan (:func:`emofusion.video.frame_timestamps`: the frame count and presentation times
    the face stage's store has, equal to its ``timestamps`` up to float rounding), made relative to the first frame
    by :func:`presentation_times`, so a constant frame rate gives exactly ``arange(N) / fps`` and a variable frame
    rate video keeps its real times. One source for the audio and text stages (per video, with no face store in
    reach) and predict, so both put a video's rows at the same times to the bit."""
    from emofusion.video import frame_timestamps

    stamps, _ = frame_timestamps(video)
    return presentation_times(stamps, fps)


def words_on_frames(
    word_rows: np.ndarray,
    words,
    times: np.ndarray,
    *,
    audio_duration: float,
    source: str = "transcript",
    tolerance: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """One row per word -> one row per frame: each frame takes the word spoken at its time; no word -> zeros.

    word_rows (W, D) in the order of ``words`` (the transcript's word table, with ``start``/``end`` seconds);
    ``times`` (N,) the frames' seconds (:func:`frame_times`); returns (features (N, D) float32, valid (N,) bool).
    A transcript whose words end after the audio (by more than ``tolerance`` s) was made from other audio:
    InputError naming ``source``."""
    from emofusion.asr.transcript import word_at_frames

    word_rows = np.asarray(word_rows, dtype=np.float32)
    if len(word_rows) != len(words):
        raise ValueError(f"{len(word_rows)} word rows for {len(words)} words of {source}")
    if len(words):
        last = float(np.max(words["end"].to_numpy()))
        if last > audio_duration + tolerance:
            raise InputError(
                f"{source}: words run to {last:.3f} s but the audio lasts {audio_duration:.3f} s; the "
                "transcript was made from other audio; rerun `emofusion transcribe` on this audio"
            )
    pick = word_at_frames(words, times)
    valid = pick >= 0
    out = np.zeros((len(pick), word_rows.shape[1] if word_rows.ndim == 2 else 0), dtype=np.float32)
    out[valid] = word_rows[pick[valid]]
    return out, valid
