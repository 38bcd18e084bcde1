"""Per-frame valence/arousal labels with a validity mask, reconciled with the decoded frame count.

Row i of an annotation file is frame i of the video. ``-5`` marks a frame that is not annotated. Files whose
row count differs from the decoded frame count by at most ``corpus.max_annotation_mismatch`` rows are
reconciled by one explicit rule (extra trailing rows dropped, missing trailing rows not annotated) and the
difference is logged and recorded in the store; a larger difference is an error naming the file.

The labels store (``results/labels.h5``) is opened here only: :func:`write_labels` writes it, :func:`read_labels`,
:func:`iter_labels`, :func:`load_labels` and :func:`check_labels_store` read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import InputError
from emofusion.io import atomic_path
from emofusion.log import logger
from emofusion.metrics import INVALID, TARGETS
from emofusion.provenance import config_hash

HEADER = ",".join(TARGETS)


@dataclass(frozen=True)
class ClipLabels:
    """Labels of one clip on its frame timeline: ``values (N, 2)`` float32 (-5 where invalid), ``valid (N, 2)``."""

    values: np.ndarray
    valid: np.ndarray
    rows_in_file: int
    reconciled: int  # rows added (>0) or dropped (<0) to match the frame count


def check_annotation_header(path: str | Path) -> None:
    """The first line of an annotation file is the header (what :func:`read_annotation` checks first; cheap enough
    to run on every file of a corpus before anything starts); InputError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline(200).strip().replace(" ", "").lower()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"annotation file {path} cannot be read as text ({e})") from None
    if header != HEADER:
        raise InputError(
            f"{path}: first line is {header!r}, expected the header {HEADER!r}; "
            "an annotation file is 'valence,arousal' then one 'v,a' row per video frame"
        )


def read_annotation(path: str | Path) -> np.ndarray:
    """Read an Aff-Wild2 VA annotation file into ``(rows, 2)`` float32; raise InputError naming file and line."""
    path = Path(path)
    check_annotation_header(path)
    raw = (
        pd.read_csv(
            path,
            header=0,
            names=list(TARGETS),
            dtype=str,
            skip_blank_lines=False,
            keep_default_na=False,
            on_bad_lines="error",
            engine="c",
        )
        if path.stat().st_size
        else None
    )
    if raw is None or raw.empty:
        raise InputError(f"{path}: no label rows after the header")
    values = raw.apply(lambda col: pd.to_numeric(col.str.strip(), errors="coerce")).to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        raise InputError(
            f"{path}: line {row + 2} ({','.join(raw.iloc[row])!r}) is not two numbers; fix or remove the line"
        )
    out_of_range = ~(((values >= -1.0) & (values <= 1.0)) | (values == INVALID))
    if out_of_range.any():
        row = int(np.argmax(out_of_range.any(axis=1)))
        raise InputError(
            f"{path}: line {row + 2} has a value outside [-1, 1] that is not the -5 marker: {values[row].tolist()}"
        )
    return values.astype(np.float32)


def clip_labels(path: str | Path, frames: int, *, max_mismatch: int) -> ClipLabels:
    """Labels of one clip reconciled to ``frames`` rows (see the module docstring for the rule)."""
    values = read_annotation(path)
    rows = len(values)
    diff = frames - rows
    if abs(diff) > max_mismatch:
        # A video shorter than its annotation may be a copy that stopped early: replacing it is the fix, not a
        # looser limit (the manifest names the cut copies whose header says so).
        short = (
            " or is an incomplete copy of the video (compare the file with the original and copy it again)"
            if diff < 0
            else ""
        )
        raise InputError(
            f"{path}: {rows} label rows for a video of {frames} decoded frames (difference {diff}); "
            f"more than corpus.max_annotation_mismatch = {max_mismatch}. Check that the annotation "
            f"belongs to this video{short}; raise corpus.max_annotation_mismatch only for a whole video whose "
            "annotation is known to differ in length"
        )
    if diff < 0:
        logger.warning("%s: %d rows for %d frames: dropping the last %d rows", path, rows, frames, -diff)
        values = values[:frames]
    elif diff > 0:
        logger.warning("%s: %d rows for %d frames: the last %d frames are not annotated", path, rows, frames, diff)
        values = np.concatenate([values, np.full((diff, len(TARGETS)), INVALID, np.float32)])
    return ClipLabels(values=values, valid=values != INVALID, rows_in_file=rows, reconciled=diff)


def write_labels(manifest: pd.DataFrame, out: str | Path, *, max_mismatch: int, provenance: dict[str, Any]) -> None:
    """Write the labels store: a group per clip with ``values (N, 2)``, ``valid (N, 2)`` and attributes."""
    import h5py

    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["schema_version"] = 1
        h5.attrs["targets"] = list(TARGETS)
        h5.attrs["invalid_value"] = INVALID
        h5.attrs["provenance"] = _json(provenance)
        h5.attrs["config_hash"] = config_hash(provenance.get("config"))
        n_valid = n_frames = 0
        for row in manifest.sort_values("clip").itertuples(index=False):
            frames = int(row.frames)
            if row.annotation:
                lab = clip_labels(row.annotation, frames, max_mismatch=max_mismatch)
            else:  # test clips of the ABAW release have no labels
                lab = ClipLabels(
                    values=np.full((frames, len(TARGETS)), INVALID, np.float32),
                    valid=np.zeros((frames, len(TARGETS)), bool),
                    rows_in_file=0,
                    reconciled=0,
                )
            g = h5.create_group(row.clip)
            g.create_dataset("values", data=lab.values, compression="gzip", shuffle=True)
            g.create_dataset("valid", data=lab.valid, compression="gzip")
            g.attrs.update(
                {
                    "split": row.split,
                    "fold": int(row.fold),
                    "frames": frames,
                    "annotation": row.annotation or "",
                    "rows_in_file": lab.rows_in_file,
                    "reconciled_rows": lab.reconciled,
                }
            )
            n_valid += int(lab.valid.all(axis=1).sum())
            n_frames += frames
    logger.info("labels: %d clips, %d of %d frames annotated -> %s", len(manifest), n_valid, n_frames, out)


def open_labels(path: str | Path):
    """The labels store at ``path`` opened for reading (an h5py.File), after checking it is one: an InputError
    naming the file when it is not HDF5 or is another emofusion store (a feature store passed as --labels)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels store {path} does not exist; run `emofusion labels` (or snakemake) first")
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise InputError(
            f"{path} is not an HDF5 file, so not a labels store; pass --labels results/labels.h5 "
            "(written by `emofusion labels`)"
        ) from None
    if "targets" not in h5.attrs or "invalid_value" not in h5.attrs:
        what = (
            f"a {h5.attrs['modality']} feature store, not a labels store"
            if "modality" in h5.attrs
            else "not a labels store (no targets or invalid_value attributes)"
        )
        h5.close()
        raise InputError(f"{path} is {what}; pass --labels results/labels.h5 (written by `emofusion labels`)")
    return h5


def check_labels_store(path: str | Path) -> None:
    """The header check of :func:`open_labels` alone (the file opens as HDF5 and has the labels attributes)."""
    open_labels(path).close()


def iter_labels(path: str | Path, clips: Iterable[str]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(clip, values (N, 2) float32, valid (N, 2) bool)`` for each of ``clips`` in turn, from the store written
    by :func:`write_labels`; InputError naming the file when it is not a labels store or has no such clip (raised
    when that clip's turn comes, so a caller's own check of an earlier clip comes first)."""
    with open_labels(path) as h5:
        for c in clips:
            if c not in h5:
                raise InputError(f"labels store {path} has no clip {c!r}; rebuild it (`emofusion labels`)")
            yield c, h5[c]["values"][()], h5[c]["valid"][()]


def read_labels(path: str | Path, clips: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``clip -> (values, valid)`` of each of ``clips`` (see :func:`iter_labels`)."""
    return {c: (values, valid) for c, values, valid in iter_labels(path, clips)}


def load_labels(path: str | Path, clip: str) -> ClipLabels:
    """Read one clip's labels from the store written by :func:`write_labels`."""
    with open_labels(path) as h5:
        if clip not in h5:
            raise InputError(f"labels store {path} has no clip {clip!r}; rebuild it (emofusion labels)")
        g = h5[clip]
        return ClipLabels(
            values=g["values"][()],
            valid=g["valid"][()],
            rows_in_file=int(g.attrs["rows_in_file"]),
            reconciled=int(g.attrs["reconciled_rows"]),
        )


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)
