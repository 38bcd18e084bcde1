"""ABAW valence-arousal submission files: the writer and the validator.

The format (PROTOCOL.md): one CSV, header ``image_location,valence,arousal``, a row ``<clip>/%05d.jpg,v,a`` for
every frame 1..N of every test clip (frame i + 1 = row i of the clip's frame timeline), values in [-1, 1].
Frames without a face still get the model's prediction (evaluate made it with that modality masked).

With the organisers' sample prediction file, the rows are exactly the sample's, in its order: per clip, frames
beyond our frame count repeat the last prediction and frames the sample does not list are left out, as the
published team scripts do (sucv/ABAW3 ``generate_result.py``, 8th-ABAW Charon ``VA/test.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import InputError
from emofusion.io import atomic_path
from emofusion.metrics import TARGETS
from emofusion.repair import reevaluate

HEADER = "image_location,valence,arousal"
LOCATION = re.compile(r"(?P<clip>[^/]+)/(?P<frame>[0-9]{5,9})\.jpg")
MAX_EXAMPLES = 5  # rows or frames quoted per problem; the count says how many there are


def image_locations(clips: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``<clip>/%05d.jpg`` for 1-based frame numbers, vectorised (Arrow string kernels)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pc.utf8_lpad(pc.cast(pa.array(np.asarray(frames, dtype=np.int64)), pa.string()), width=5, padding="0")
    joined = pc.binary_join_element_wise(pa.array(np.asarray(clips, dtype=object), pa.string()), numbers, "/")
    return pc.binary_join_element_wise(joined, pa.scalar(".jpg"), "").to_numpy(zero_copy_only=False)


def _read_fields(path: Path):
    """The rows of a CSV after its header as three Arrow string columns (no type guessing, '' kept as '')."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = ["image_location", "valence", "arousal"]
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False, quoted_strings_can_be_null=False
    )
    return pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(skip_rows=1, column_names=names), convert_options=convert
    )


def split_locations(locations) -> tuple[np.ndarray, np.ndarray]:
    """``<clip>/%05d.jpg`` strings (Arrow or numpy) -> (clip as object array with None where the form is wrong,
    1-based frame as int64 with -1 there)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(locations, pa.ChunkedArray | pa.Array):
        locations = pa.array(np.asarray(locations, dtype=object), pa.string())
    parts = pc.extract_regex(locations, f"^{LOCATION.pattern}$")
    if isinstance(parts, pa.ChunkedArray):
        parts = parts.combine_chunks()
    matched = parts.is_valid()  # the children of a non-matching (null) row hold "", not numbers
    frame = pc.cast(pc.if_else(matched, parts.field("frame"), pa.scalar("-1")), pa.int64())
    clip = np.where(
        matched.to_numpy(zero_copy_only=False),
        parts.field("clip").to_numpy(zero_copy_only=False),
        np.array(None, dtype=object),
    )
    return clip, frame.to_numpy(zero_copy_only=False).astype(np.int64)


def _numbers(column) -> tuple[np.ndarray, np.ndarray]:
    """Arrow strings -> (float64 values, True where the text is not a number). Fast path: one Arrow cast."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return values.astype(np.float64), np.zeros(len(values), dtype=bool)
    except pa.ArrowInvalid:  # some field is not a number: find which, the slow way (broken files only)
        text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        spelled = text.str.strip().str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
        return values, np.isnan(values) & ~spelled


def _examples(values) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:MAX_EXAMPLES])
    return head + (f", ... ({len(values)} in all)" if len(values) > MAX_EXAMPLES else "")


def _runs(frames: np.ndarray) -> str:
    """Compact ranges of sorted integers: ``3-7, 9``."""
    if frames.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    parts = [f"{g[0]}-{g[-1]}" if len(g) > 1 else f"{g[0]}" for g in np.split(frames, breaks)]
    return _examples(parts)


def read_sample(path: str | Path) -> pd.DataFrame:
    """The organisers' sample prediction file as ``(image_location, clip, frame)`` rows in file order.

    Only its ``image_location`` column is used. Each clip's frames must be 1..N in order (the format's rule), so
    the sample can define N; anything else is an error naming the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"report.sample_submission: {path} does not exist; set it to the organisers' sample "
            "prediction file or to null"
        )
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = f.readline().strip()
    if header.split(",")[:1] != ["image_location"]:
        raise InputError(
            f"report.sample_submission: {path} starts with {header!r}, not an "
            f"'{HEADER}' header; is this the organisers' sample prediction file?"
        )
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Only the first column counts; the sample's value columns may hold anything (often zeros or nothing).
    options = pacsv.ConvertOptions(
        include_columns=["image_location"],
        column_types={"image_location": pa.string()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        locations = pacsv.read_csv(path, read_options=pacsv.ReadOptions(encoding="utf-8-sig"), convert_options=options)[
            "image_location"
        ].to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as e:  # rows with different numbers of fields
        raise InputError(f"report.sample_submission: {path} is not a CSV with one row per line: {e}") from None
    clip, frame = split_locations(locations)
    if (frame < 0).any():
        row = int(np.flatnonzero(frame < 0)[0])
        raise InputError(f"{path}, row {row + 2}: image_location {locations[row]!r} is not <clip>/%05d.jpg")
    sample = pd.DataFrame({"image_location": locations, "clip": clip, "frame": frame})
    position = sample.groupby("clip", sort=False).cumcount().to_numpy() + 1
    bad = np.flatnonzero(sample["frame"].to_numpy() != position)
    if bad.size:
        row = int(bad[0])
        raise InputError(
            f"{path}, row {row + 2}: {sample['image_location'].iloc[row]!r} where frame "
            f"{position[row]} of clip {sample['clip'].iloc[row]} was expected; a sample file lists "
            "every clip's frames 1..N in order"
        )
    return sample


def _clip_table(predictions: pd.DataFrame, frames: Mapping[str, int], *, run: str, variant_columns: list[str]):
    """Per clip (sorted) its predictions as one ``(sum N, 2)`` array on the frame grid, and each clip's offset."""
    clips = sorted(frames)
    counts = np.array([frames[c] for c in clips], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    code = pd.Index(clips).get_indexer(predictions["clip"])  # -1: not a clip asked for
    preds = predictions[code >= 0]
    code = code[code >= 0]
    values = np.full((int(counts.sum()), len(TARGETS)), np.nan, dtype=np.float64)
    frame = preds["frame"].to_numpy(np.int64)
    beyond = (frame < 0) | (frame >= counts[code])
    if beyond.any():
        bad = preds[beyond].groupby("clip")["frame"].agg(["min", "max", "size"])
        clip = bad.index[0]
        raise InputError(
            f"{run}: predictions.parquet has {int(bad['size'].sum())} row(s) outside the manifest's "
            f"frames, e.g. clip {clip} frames {bad.loc[clip, 'min']}..{bad.loc[clip, 'max']} for "
            f"{frames[clip]} frames; was the run evaluated with another manifest? Evaluate it "
            f"again (`{reevaluate(run)}`)"
        )
    row = offsets[code] + frame
    if np.bincount(row, minlength=len(values)).max(initial=0) > 1:
        raise InputError(
            f"{run}: predictions.parquet has duplicate (clip, frame) rows; evaluate it again (`{reevaluate(run)}`)"
        )
    values[row] = preds[variant_columns].to_numpy(np.float64)
    missing = np.isnan(values).any(axis=1)
    if missing.any():
        owner = np.searchsorted(offsets, np.flatnonzero(missing), side="right") - 1
        lacking = {clips[i]: int((owner == i).sum()) for i in np.unique(owner)}
        raise InputError(
            f"{run}: no prediction (or a NaN one) for {int(missing.sum())} test frame(s): "
            + _examples(f"{c} ({n} of {frames[c]} frames)" for c, n in lacking.items())
            + f"; every frame needs one (faceless frames too); evaluate the run again (`{reevaluate(run)}`)"
        )
    return clips, counts, offsets, values


def build_submission(
    predictions: pd.DataFrame,
    frames: Mapping[str, int],
    *,
    run: str,
    variant_columns: list[str],
    sample: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The submission rows ``(image_location, valence, arousal)`` for the test clips ``frames`` (clip -> N).

    ``predictions``: a run's predictions.parquet (``clip``, ``frame`` 0-based and ``variant_columns``, the
    valence and arousal columns to submit); a test frame without a prediction is an error naming ``run``.
    Without ``sample``: frames 1..N of every clip in sorted order. With ``sample`` (see :func:`read_sample`):
    exactly its rows; frame f of a clip takes our prediction of frame min(f, N) (pad with the last value).
    """
    if not frames:
        raise InputError("the manifest has no test clips (split == 'test'); there is nothing to submit")
    if sample is None:
        clips, counts, _, values = _clip_table(predictions, frames, run=run, variant_columns=variant_columns)
        clip_col = np.repeat(np.array(clips, dtype=object), counts)
        frame_col = np.concatenate([np.arange(1, n + 1) for n in counts])
        locations = image_locations(clip_col, frame_col)
    else:
        listed = sorted(pd.unique(sample["clip"]))
        unknown = sorted(set(listed) - set(frames))
        if unknown:
            raise InputError(
                f"the sample submission lists clip(s) {_examples(unknown)} that are not test clips of "
                "the manifest, so there are no predictions for them; check corpus.test_list and "
                "report.sample_submission belong to the same test set"
            )
        used = {c: frames[c] for c in listed}
        clips, counts, offsets, values = _clip_table(predictions, used, run=run, variant_columns=variant_columns)
        which = pd.Index(clips).get_indexer(sample["clip"])
        empty = [c for c, n in zip(clips, counts, strict=True) if n == 0]
        if empty:
            raise InputError(
                f"the sample submission lists clip(s) {_examples(empty)} that have no decoded frames in "
                "the manifest, so there is no prediction to pad with; check their videos"
            )
        frame = np.minimum(sample["frame"].to_numpy(np.int64), counts[which])  # pad: repeat the last frame
        values = values[offsets[which] + frame - 1]
        locations = sample["image_location"].to_numpy()
    values = np.clip(values, -1.0, 1.0)
    return pd.DataFrame({"image_location": locations, "valence": values[:, 0], "arousal": values[:, 1]})


def write_submission(path: str | Path, rows: pd.DataFrame) -> None:
    """Write the submission CSV atomically, 6 decimals (far below the annotation's resolution), ``\\n`` lines."""
    # Rounding first and adding +0.0 turns -0.0 and tiny negatives into "0.000000" rather than "-0.000000".
    v, a = (np.round(rows[t].to_numpy(np.float64), 6) + 0.0 for t in TARGETS)
    lines = map("{},{:.6f},{:.6f}\n".format, rows["image_location"].tolist(), v.tolist(), a.tolist())
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(HEADER + "\n")
        f.writelines(lines)


def check_submission(
    path: str | Path, frames: Mapping[str, int], *, sample: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Validate a submission file; return the verdict ``{"file", "ok", "rows", "clips", "errors"}``.

    Checks: the header is exactly ``image_location,valence,arousal``; every row has three fields and an
    ``image_location`` of the form ``<clip>/%05d.jpg``; every row's clip is expected (a test clip of
    ``frames``, clip -> N); per clip the frame numbers are 1..N, ascending, without gaps or duplicates; values
    are finite numbers in [-1, 1]; every expected clip is present. With ``sample`` (:func:`read_sample`) the
    expected clips and N come from it and the rows must be the sample's, in its order. Every problem is
    listed (with up to MAX_EXAMPLES rows each, numbered as in the file, header = row 1).
    """
    path = Path(path)
    errors: list[str] = []
    verdict: dict[str, Any] = {"file": str(path), "ok": False, "rows": 0, "clips": 0, "errors": errors}
    if sample is not None:
        frames = sample.groupby("clip", sort=True).size().to_dict()
    if not path.is_file():
        errors.append(f"{path} does not exist")
        return verdict
    with open(path, newline="") as f:
        header = f.readline().rstrip("\r\n")
    if header != HEADER:
        errors.append(f"header is {header!r}; it must be exactly {HEADER!r}")
    import pyarrow as pa

    try:
        table = _read_fields(path)
    except pa.ArrowInvalid as e:  # a row with another number of fields
        errors.append(f"not a CSV of image_location,valence,arousal rows: {e}")
        return verdict
    file_row = np.arange(table.num_rows) + 2  # the header is row 1
    verdict["rows"] = table.num_rows
    locations = table["image_location"].to_numpy(zero_copy_only=False)
    clip, frame = split_locations(table["image_location"])
    ok = frame >= 0
    if not ok.all():
        errors.append(
            f"image_location is not <clip>/%05d.jpg in {int((~ok).sum())} row(s): "
            + _examples(f"row {r} {locations[r - 2]!r}" for r in file_row[~ok])
        )

    # Values: numbers, finite, in [-1, 1].
    for target in TARGETS:
        value, not_number = _numbers(table[target])
        nonfinite = ~np.isfinite(value) & ~not_number
        outside = np.isfinite(value) & (np.abs(value) > 1.0)
        for mask, what in (
            (not_number, "is not a number"),
            (nonfinite, "is NaN or infinite"),
            (outside, "is outside [-1, 1]"),
        ):
            if mask.any():
                text = table[target].to_numpy(zero_copy_only=False)
                errors.append(
                    f"{target} {what} in {int(mask.sum())} row(s): "
                    + _examples(f"row {r} ({text[r - 2]!r})" for r in file_row[mask])
                )

    # Clips: every row's clip expected, every expected clip present.
    names = sorted(frames)
    code = pd.Index(names).get_indexer(pd.Series(clip, dtype=object).fillna(""))  # -1: unknown or malformed
    known = (code >= 0) | ~ok
    if not known.all():
        unknown = pd.Series(file_row[~known]).groupby(clip[~known]).agg(["min", "size"])
        source = "the sample submission" if sample is not None else "the manifest's test clips"
        errors.append(
            f"{len(unknown)} clip(s) not in {source}: "
            + _examples(f"{c} ({n} rows from row {r})" for c, (r, n) in unknown.iterrows())
        )
    present = {names[c] for c in np.unique(code[code >= 0])}
    absent = sorted(set(frames) - present)
    if absent:
        errors.append(f"{len(absent)} expected clip(s) have no rows: " + _examples(absent))

    # Frames per clip: 1..N ascending, no duplicates, no gaps, nothing beyond N. Vectorised over all rows: each
    # (clip, frame) inside 1..N has one slot in a flat grid of sum(N) frames.
    counts = np.array([frames[c] for c in names], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    keep = ok & (code >= 0)
    code, frame, rows = code[keep], frame[keep], file_row[keep]
    inside = (frame >= 1) & (frame <= counts[code])
    for c in np.unique(code[~inside]):  # only the clips at fault
        bad = np.unique(frame[~inside & (code == c)])
        errors.append(f"clip {names[c]}: {bad.size} frame number(s) outside 1..{counts[c]}: {_runs(bad)}")
    code, frame, rows = code[inside], frame[inside], rows[inside]
    slot = offsets[code] + frame - 1
    by_slot = np.argsort(slot, kind="stable")  # file order kept among equal slots: the first is not a duplicate
    dup = np.zeros(slot.size, dtype=bool)
    dup[by_slot[1:]] = slot[by_slot[1:]] == slot[by_slot[:-1]]
    if dup.any():
        errors.append(
            f"duplicate image_location in {int(dup.sum())} row(s): "
            + _examples(
                f"row {r} {names[c]}/{f:05d}.jpg" for c, f, r in zip(code[dup], frame[dup], rows[dup], strict=True)
            )
        )
    gaps = np.flatnonzero(np.bincount(slot, minlength=int(counts.sum())) == 0)
    owner = np.searchsorted(offsets, gaps, side="right") - 1
    for c in np.unique(owner):
        if names[c] in present:  # a clip without any row is reported once, above
            lost = gaps[owner == c] - offsets[c] + 1
            errors.append(f"clip {names[c]}: {lost.size} of its {counts[c]} frames missing: {_runs(lost)}")
    if not dup.any():
        by_clip = np.argsort(code, kind="stable")  # file order within each clip
        c_sorted, f_sorted = code[by_clip], frame[by_clip]
        back = np.flatnonzero((c_sorted[1:] == c_sorted[:-1]) & (f_sorted[1:] <= f_sorted[:-1])) + 1
        for c in np.unique(c_sorted[back]):
            first = back[c_sorted[back] == c][0]
            errors.append(f"clip {names[c]}: frames not in ascending order from row {int(rows[by_clip][first])}")

    if sample is not None and not errors:
        # The rows are then the sample's as a set (same clips, same 1..N); only their order can still differ.
        differ = np.flatnonzero(sample["image_location"].to_numpy() != locations)
        if differ.size:
            first = int(differ[0])
            errors.append(
                f"rows are not in the sample submission's order: row {first + 2} is "
                f"{locations[first]!r}, the sample has {sample['image_location'].iloc[first]!r}"
            )
    verdict["clips"] = len(present)
    verdict["ok"] = not errors
    return verdict
