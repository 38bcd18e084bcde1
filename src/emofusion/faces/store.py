"""The HDF5 face store: its layout (described here only), writing it, filling short gaps, reading it. The one
module that opens a face store: the face stage writes through :func:`create_face_store`, everything else reads
through :class:`FaceStore` (or :func:`read_faces`, :func:`check_face_store`), so there is one "not a face store".

Store layout (``results/faces/<clip>.h5``), one row per decoded frame (the timeline contract)::

    crops        (N, S, S, 3) uint8   RGB, aligned; zeros where not valid
    boxes        (N, 4) float32       x1, y1, x2, y2 in frame pixels, MTCNN's convention (facenet-pytorch's detect);
                                      NaN where unknown (no face, or crops source)
    landmarks    (N, 5, 2) float32    eyes, nose, mouth corners (x, y) in frame pixels; NaN where unknown
    probability  (N,) float32         MTCNN probability of the chosen face; 0 = no face; NaN for crops source
    valid        (N,) bool            a face crop is present (detected, shipped, or filled)
    filled       (N,) bool            copied from the nearest valid frame (faces.fill_gaps); a subset of valid
    timestamps   (N,) float64         frame presentation time in seconds (the decoder's pts)

Root attributes: ``schema_version``, ``clip``, ``video``, ``source`` (``mtcnn`` | ``cropped_aligned``), ``size``,
``template`` (5, 2), ``frames``, ``valid_frames``, ``detected_frames``, ``filled_frames``, ``width``, ``height``,
``timestamps_backwards`` (steps where ``timestamps[i] < timestamps[i - 1]``: frames stay in decode order, but an
edited or concatenated file whose timestamps jump back has times that are not trustworthy; logged as a warning;
the ``cropped_aligned`` source stores the demuxer's sorted times, so 0 there), ``provenance`` (JSON: versions,
git revision, config and its hash, for ``mtcnn`` also the detector's weight checksums and device).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import InputError
from emofusion.faces.align import face_template
from emofusion.faces.config import FaceSettings, FaceSummary
from emofusion.io import atomic_path
from emofusion.log import logger

SCHEMA_VERSION = 1
DATASETS = ("crops", "boxes", "landmarks", "probability", "valid", "filled", "timestamps")


def create_store(f, n: int, size: int, batch: int) -> dict[str, Any]:
    """Preallocated datasets of a store with ``n`` frames (crops gzip-1: portable to any HDF5 reader, about 30%
    smaller, and far faster than detection). Crops are chunked by the writer's ``batch`` of frames, so each batch
    writes whole chunks, each compressed once (a chunk spanning two batches is read back and compressed again)."""
    chunk = max(1, min(n, batch))
    nan = np.float32("nan")
    ds = {
        "crops": f.create_dataset(
            "crops",
            shape=(n, size, size, 3),
            dtype=np.uint8,
            chunks=(chunk, size, size, 3),
            compression="gzip",
            compression_opts=1,
            fillvalue=0,
        ),
        "boxes": f.create_dataset("boxes", shape=(n, 4), dtype=np.float32, fillvalue=nan),
        "landmarks": f.create_dataset("landmarks", shape=(n, 5, 2), dtype=np.float32, fillvalue=nan),
        "probability": f.create_dataset("probability", shape=(n,), dtype=np.float32, fillvalue=0.0),
        "valid": f.create_dataset("valid", shape=(n,), dtype=bool, fillvalue=False),
        "filled": f.create_dataset("filled", shape=(n,), dtype=bool, fillvalue=False),
        "timestamps": f.create_dataset("timestamps", shape=(n,), dtype=np.float64, fillvalue=nan),
    }
    return ds


class FaceStoreWriter:
    """A face store being written (see :func:`create_face_store`): rows go in batch by batch, so memory is bounded
    by the batch; :meth:`finish` fills short gaps and writes the root attributes."""

    def __init__(self, f, n: int, size: int, batch: int):
        self._f = f
        self._ds = create_store(f, n, size, batch)

    def write(self, start: int, **columns: np.ndarray) -> None:
        """Rows ``start:start + len(value)`` of each named dataset, written in the order given."""
        for name, value in columns.items():
            self._ds[name][start : start + len(value)] = value

    def fill(self, name: str, value: Any) -> None:
        """Every row of dataset ``name`` set to ``value`` (an array of all rows, or one value for all)."""
        self._ds[name][:] = value

    def finish(self, **kwargs: Any) -> FaceSummary:
        """Fill short gaps and write the root attributes (keywords of :func:`finish_store`); the summary."""
        return finish_store(self._f, self._ds, **kwargs)


@contextlib.contextmanager
def create_face_store(out: str | Path, n: int, *, size: int, batch: int) -> Iterator[FaceStoreWriter]:
    """A new face store of ``n`` frames of ``size`` px crops at ``out``, written atomically: the file appears at
    ``out`` when the block ends without an error (after :meth:`FaceStoreWriter.finish`), never half written."""
    import h5py

    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            yield FaceStoreWriter(f, n, size, batch)


def gap_sources(valid: np.ndarray, max_gap: int) -> np.ndarray:
    """For each frame, the index of the valid frame it is filled from, or -1.

    A gap is a run of invalid frames; runs of at most ``max_gap`` frames (including runs at the start or end of
    the clip, which have a valid neighbour on one side only) take each frame from the nearest valid frame
    (the earlier one on a tie). Valid frames and longer runs get -1."""
    valid = np.asarray(valid, dtype=bool)
    n = len(valid)
    src = np.full(n, -1, dtype=np.int64)
    if max_gap <= 0 or n == 0 or not valid.any() or valid.all():
        return src
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(valid, idx, -1))
    nxt = np.minimum.accumulate(np.where(valid, idx, n)[::-1])[::-1]
    gap_len = nxt - prev - 1  # length of the run each invalid frame belongs to
    fill = ~valid & (gap_len <= max_gap)
    use_prev = (prev >= 0) & ((nxt >= n) | (idx - prev <= nxt - idx))
    src[fill] = np.where(use_prev, prev, nxt)[fill]
    return src


def _fill_gaps(ds: dict[str, Any], max_gap: int) -> int:
    """Fill short gaps in an open store in place (one slice write per gap side); returns frames filled."""
    valid = ds["valid"][:]
    src = gap_sources(valid, max_gap)
    dst = np.flatnonzero(src >= 0)
    if len(dst) == 0:
        return 0
    for name in ("boxes", "landmarks", "probability"):
        arr = ds[name][:]
        arr[dst] = arr[src[dst]]
        ds[name][:] = arr
    # Crops: runs of consecutive destinations sharing one source are written as one slice.
    breaks = np.flatnonzero((np.diff(dst) != 1) | (np.diff(src[dst]) != 0)) + 1
    for run in np.split(dst, breaks):
        face = ds["crops"][int(src[run[0]])]
        ds["crops"][int(run[0]) : int(run[-1]) + 1] = np.broadcast_to(face, (len(run), *face.shape))
    valid[dst] = True
    filled = np.zeros_like(valid)
    filled[dst] = True
    ds["valid"][:] = valid
    ds["filled"][:] = filled
    return len(dst)


def finish_store(
    f,
    ds: dict[str, Any],
    *,
    clip: str,
    video: str,
    source: str,
    settings: FaceSettings,
    width: int,
    height: int,
    provenance: dict[str, Any] | None,
    started: float,
) -> FaceSummary:
    filled = _fill_gaps(ds, settings.fill_gaps) if settings.fill_gaps > 0 else 0
    backwards = _timestamps_backwards(ds["timestamps"][:], video)
    valid = ds["valid"][:]
    n = len(valid)
    n_valid = int(valid.sum())
    summary = FaceSummary(
        clip=clip,
        source=source,
        frames=n,
        valid=n_valid,
        detected=n_valid - filled,
        filled=filled,
        seconds=time.perf_counter() - started,
    )
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "clip": clip,
        "video": str(video),
        "source": source,
        "size": settings.size,
        "template": face_template(settings.size, settings.margin).astype(np.float32),
        "frames": n,
        "valid_frames": n_valid,
        "detected_frames": summary.detected,
        "filled_frames": filled,
        "width": int(width),
        "height": int(height),
        "timestamps_backwards": backwards,
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    f.attrs.update(attrs)
    return summary


def _timestamps_backwards(timestamps: np.ndarray, video: str | Path) -> int:
    """How many steps of ``timestamps`` go back in time; warns once, naming ``video``, when any do."""
    back = np.flatnonzero(np.diff(timestamps) < 0)
    if len(back):
        i = int(back[0]) + 1
        logger.warning(
            "%s: frame timestamps go backwards %d time(s), first at frame %d (%.3f s after %.3f s), as in "
            "an edited or concatenated file; the frames are kept in decode order, but the file's "
            "timestamps are not trustworthy (re-encode it, e.g. `ffmpeg -i %s -c:v libx264 out.mp4`)",
            video,
            len(back),
            i,
            timestamps[i],
            timestamps[i - 1],
            video,
        )
    return len(back)


def log_summary(summary: FaceSummary, video: str | Path) -> None:
    n = max(summary.frames, 1)
    logger.info(
        "%s (%s): %d frames, %d with a face (%.1f%%), %d filled, %d without; %.1f s (%.1f frames/s)",
        summary.clip,
        summary.source,
        summary.frames,
        summary.valid,
        100.0 * summary.valid / n,
        summary.filled,
        summary.invalid,
        summary.seconds,
        summary.frames / max(summary.seconds, 1e-9),
    )
    if summary.valid == 0:
        logger.warning("no face in any frame of %s: the store of clip %s is all invalid", video, summary.clip)


class FaceStore:
    """A face store open for reading, its layout checked on opening (InputError naming the file when it is missing,
    not a face store, or cannot be read, then or while it is read). The per-frame datasets are small and read
    whole (:meth:`read`); crops are read in row ranges (:meth:`crops`), so memory is bounded by the range."""

    def __init__(self, path: str | Path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"face store {self.path} does not exist; run `emofusion faces` (or snakemake) first")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise self._unreadable(e) from None
        try:
            _check_layout(self._f, self.path)
            self._crops = self._f["crops"]
            self.frames = int(self._f["valid"].shape[0])
            if self._crops.shape[0] != self.frames:
                raise InputError(
                    f"{self.path}: {self._crops.shape[0]} crops but {self.frames} validity flags; rebuild the face "
                    "store with `emofusion faces`"
                )
        except OSError as e:
            self._f.close()
            raise self._unreadable(e) from None
        except BaseException:
            self._f.close()
            raise

    def _unreadable(self, e: OSError) -> InputError:
        return InputError(
            f"face store {self.path} is not a readable HDF5 file ({e}); make it again with `emofusion faces` "
            "(or snakemake)"
        )

    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes, ``provenance`` decoded."""
        try:
            attrs = dict(self._f.attrs)
        except OSError as e:
            raise self._unreadable(e) from None
        try:
            attrs["provenance"] = json.loads(attrs.get("provenance") or "{}")
        except ValueError as e:
            raise InputError(
                f"face store {self.path}: its provenance attribute is not JSON ({e}); make it again with "
                "`emofusion faces` (or snakemake)"
            ) from None
        return attrs

    def read(self, name: str) -> np.ndarray:
        """One per-frame dataset of :data:`DATASETS`, whole."""
        try:
            return self._f[name][:]
        except OSError as e:
            raise self._unreadable(e) from None

    def crops(self, start: int, stop: int) -> np.ndarray:
        """Crops of frames ``start:stop`` (contiguous rows: whole chunks, each decompressed once)."""
        try:
            return self._crops[start:stop]
        except OSError as e:
            raise self._unreadable(e) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> FaceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_faces(path: str | Path, *, crops: bool = True) -> dict[str, Any]:
    """A face store as a dict of numpy arrays plus ``attrs`` (provenance decoded); ``crops=False`` skips the
    crops (the large part). Raises InputError naming the file when it is missing or not a face store."""
    with FaceStore(path) as store:
        out: dict[str, Any] = {d: store.read(d) for d in DATASETS if crops or d != "crops"}
        out["attrs"] = store.attrs
    return out


def _check_layout(f, path: Path) -> None:
    """The one "not a face store" check: every dataset of the layout, the schema version, crops (N, S, S, 3)."""
    missing = [d for d in DATASETS if d not in f]
    if missing or "schema_version" not in f.attrs:
        raise InputError(
            f"{path} is not a face store (missing {', '.join(missing) or 'schema_version'}); "
            "rebuild it with `emofusion faces`"
        )
    shape = f["crops"].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise InputError(
            f"{path} is not a face store (crops of shape {shape}, not (N, S, S, 3)); rebuild it with `emofusion faces`"
        )


def check_face_store(path: str | Path) -> None:
    """The cheap part of :func:`read_faces`: the file opens as HDF5 (a truncated file does not) and has the store's
    datasets and schema version; nothing is read. InputError naming the file otherwise."""
    FaceStore(path).close()
