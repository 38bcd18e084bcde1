"""The transcript table: one Parquet file per video, segments and words together.

Layout (:data:`COLUMNS`, one row per segment or word, in reading order: each segment row, then its words):

======================  =========  ===========================================================================
column                  type       meaning
======================  =========  ===========================================================================
``kind``                string     ``"segment"`` or ``"word"``
``segment``             int32      index of the segment (a word's segment for word rows), from 0
``text``                string     the word or the segment's text, surrounding whitespace removed
``start``, ``end``      float64    seconds on the frame timeline (0 = the video's first frame), clipped to the
                                   audio; ``start <= end``, word starts never decrease
``probability``         float64    word rows: the model's probability of the word; segment rows:
                                   ``exp(avg_logprob)`` (geometric mean token probability)
``avg_logprob``         float64    segment rows: mean token log-probability; NaN on word rows
``no_speech_prob``      float64    segment rows: probability of no speech in the window; NaN on word rows
``compression_ratio``   float64    segment rows: gzip ratio of the text (high = repetition loop); NaN on words
======================  =========  ===========================================================================

Speech without words (or a video without audio) gives zero rows with the same columns and types. The file's
``emofusion`` metadata (:func:`emofusion.io.read_parquet_metadata`) holds ``schema``, the ``model`` (name, engine,
path, sha256, where it came from), the ``audio`` it read (path, duration, ``has_audio``), the decoding
``options``, the ``counts`` (segments, words, and ``clamped``: engine times the clipping above had to move, 0 when
the engine's times were consistent) and the usual provenance (versions, git revision, config and its hash).

This module is the only one that opens a transcript: :func:`write_transcript`, :func:`read_transcript`,
:func:`transcript_metadata` and :func:`check_transcript`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import InputError
from emofusion.io import read_parquet_metadata, write_parquet

SCHEMA = "emofusion.transcript/1"
COLUMNS = {
    "kind": "string",
    "segment": "int32",
    "text": "string",
    "start": "float64",
    "end": "float64",
    "probability": "float64",
    "avg_logprob": "float64",
    "no_speech_prob": "float64",
    "compression_ratio": "float64",
}
CLAMP_TOLERANCE = 1e-6  # seconds; engines round times to 10 ms, so anything larger is a real correction


def transcript_frame(segments: list[dict[str, Any]], *, duration: float) -> pd.DataFrame:
    """The transcript table from engine-neutral segments.

    Each segment is a dict with ``start, end, text, avg_logprob, no_speech_prob, compression_ratio`` and
    ``words``: a list of dicts ``word, start, end, probability``. Segments without words are dropped (the words
    are the point of the table); times are clipped to ``[0, duration]`` and made non-decreasing. How many times
    that moved (by more than :data:`CLAMP_TOLERANCE`) is in ``df.attrs["clamped"]``: 0 when the engine's times
    were consistent already, so a count above 0 flags timestamps that were repaired, not measured.
    """
    rows: list[dict[str, Any]] = []
    last = 0.0
    n_seg = clamped = 0

    def moved(value: float, raw) -> int:
        return int(not abs(value - float(raw)) <= CLAMP_TOLERANCE)  # NaN counts as moved

    for seg in sorted(segments, key=lambda s: float(s["start"])):
        words = [w for w in seg.get("words") or [] if str(w["word"]).strip()]
        if not words:
            continue
        word_rows: list[dict[str, Any]] = []
        for w in words:
            start = min(max(float(w["start"]), last, 0.0), duration)
            end = min(max(float(w["end"]), start), duration)
            clamped += moved(start, w["start"]) + moved(end, w["end"])
            last = start
            word_rows.append(
                {
                    "kind": "word",
                    "segment": n_seg,
                    "text": str(w["word"]).strip(),
                    "start": start,
                    "end": end,
                    "probability": float(w["probability"]),
                    "avg_logprob": math.nan,
                    "no_speech_prob": math.nan,
                    "compression_ratio": math.nan,
                }
            )
        seg_start = min(max(float(seg["start"]), 0.0), word_rows[0]["start"])
        seg_end = min(max(float(seg["end"]), word_rows[-1]["end"]), duration)
        clamped += moved(seg_start, seg["start"]) + moved(seg_end, seg["end"])
        avg = float(seg.get("avg_logprob", math.nan))
        rows.append(
            {
                "kind": "segment",
                "segment": n_seg,
                "text": str(seg["text"]).strip(),
                "start": seg_start,
                "end": seg_end,
                "probability": math.exp(avg) if math.isfinite(avg) else math.nan,
                "avg_logprob": avg,
                "no_speech_prob": float(seg.get("no_speech_prob", math.nan)),
                "compression_ratio": float(seg.get("compression_ratio", math.nan)),
            }
        )
        rows.extend(word_rows)
        n_seg += 1
    df = pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)
    df.attrs["clamped"] = clamped
    return df


def read_transcript(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(words, segments, metadata) of a transcript file; words and segments keep the file's columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transcript {path} does not exist; run `emofusion transcribe` (or snakemake) first")
    try:
        df = pd.read_parquet(path)
        meta = read_parquet_metadata(path)
    except (OSError, ValueError) as e:
        raise InputError(f"transcript {path} cannot be read ({e}); rerun `emofusion transcribe`") from None
    if meta.get("schema") != SCHEMA or list(df.columns) != list(COLUMNS):
        raise InputError(f"{path} is not an emofusion transcript ({SCHEMA}); rerun `emofusion transcribe`")
    df = df.astype(COLUMNS)
    words = df[df["kind"] == "word"].reset_index(drop=True)
    segments = df[df["kind"] == "segment"].reset_index(drop=True)
    return words, segments, meta


def write_transcript(out: str | Path, df: pd.DataFrame, metadata: dict[str, Any]) -> None:
    """Write the transcript table ``df`` (from :func:`transcript_frame`) with its ``metadata`` atomically."""
    write_parquet(out, df, metadata=metadata)


def transcript_metadata(path: str | Path) -> dict[str, Any]:
    """The ``emofusion`` metadata of a transcript (the Parquet footer only: no rows read), after checking it names
    this schema; InputError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transcript {path} does not exist; run `emofusion transcribe` (or snakemake) first")
    try:
        meta = read_parquet_metadata(path)
    except (OSError, ValueError) as e:
        raise InputError(f"transcript {path} cannot be read ({e}); rerun `emofusion transcribe`") from None
    if meta.get("schema") != SCHEMA:
        raise InputError(f"{path} is not an emofusion transcript ({SCHEMA}); rerun `emofusion transcribe`")
    return meta


def check_transcript(path: str | Path) -> None:
    """The cheap part of :func:`read_transcript`: the Parquet footer reads and names this schema (no rows read);
    InputError naming the file otherwise."""
    transcript_metadata(path)


def word_at_frames(words: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """For each frame time (``times`` (N,) seconds on the frame timeline: the decoder's presentation times, see
    :func:`emofusion.features.timeline.frame_times`), the row index (position) in ``words`` of the word being spoken
    then, or -1.

    The lookup the text stage needs (each frame takes the embedding of the word spoken at that time). A word
    covers ``[start, end)``; zero-length words cover nothing. Where words overlap (clipped times can), a frame
    takes the last word starting at or before it if that word still runs, else the earlier word that runs
    longest, so an overlapping or empty word never hides one that is still being spoken."""
    t = np.asarray(times, dtype=np.float64)
    if words.empty:
        return np.full(len(t), -1, dtype=np.int64)
    order = np.argsort(words["start"].to_numpy(), kind="stable")
    starts = words["start"].to_numpy()[order]
    ends = words["end"].to_numpy()[order]
    idx = np.searchsorted(starts, t, side="right") - 1
    safe = np.clip(idx, 0, None)
    # running argmax of the ends: among the words starting at or before t, the one reaching furthest
    reach = np.maximum.accumulate(ends)
    furthest = np.maximum.accumulate(np.where(ends >= reach, np.arange(ends.size), 0))
    pick = np.where(t < ends[safe], safe, furthest[safe])
    hit = (idx >= 0) & (t < ends[pick])
    return np.where(hit, order[pick], -1).astype(np.int64)
