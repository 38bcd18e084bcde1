"""Feature stores: one HDF5 file per (modality, backbone), one group per clip, every row on the frame timeline.

Layout (``SCHEMA_VERSION`` 1)::

    /<clip>/features   (N, D) float32   row i = frame i of the clip's video
    /<clip>/valid      (N,)   bool      False where the modality has nothing at that frame (no face, no word, ...)
    /<clip>.attrs      frames, fps
    /.attrs            schema_version, modality, backbone, width, native_rate, timeline, weights_sha256,
                       weights_source, licence, provenance (JSON: versions, git, config, config_hash)

Per-clip shards (what an embed job writes) and the merged store (what training reads) share this layout, so the
merge is a copy and a reader can open either. This module is the only one that opens a feature store: shards are
written by :func:`write_store`, merged stores by :func:`write_merged`, and every reader goes through
:class:`FeatureStore`, :func:`read_attrs` (the header check), :func:`store_clips` or :func:`iter_rows`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import EmofusionError, InputError
from emofusion.io import atomic_path
from emofusion.repair import rebuild_store

SCHEMA_VERSION = 1
# Root attributes every store carries (the merge checks that shards agree on the identity ones: same network,
# weights and options, so one store never mixes rows put on the timeline two ways).
REQUIRED_ATTRS = (
    "schema_version",
    "modality",
    "backbone",
    "width",
    "native_rate",
    "timeline",
    "weights_sha256",
    "weights_source",
    "licence",
    "provenance",
)
IDENTITY_ATTRS = ("schema_version", "modality", "backbone", "width", "native_rate", "timeline", "weights_sha256")


class StoreMismatch(EmofusionError):
    """A store was made by another backbone, weights or schema than the caller asks for."""


def _encode(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value


def store_attrs(
    *,
    modality: str,
    backbone: str,
    width: int,
    native_rate: float,
    timeline: str,
    weights_sha256: str,
    weights_source: str,
    licence: str,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The root attributes of a store (keyword-only, so no field is forgotten or swapped)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "modality": modality,
        "backbone": backbone,
        "width": int(width),
        "native_rate": float(native_rate),
        "timeline": timeline,
        "weights_sha256": weights_sha256,
        "weights_source": weights_source,
        "licence": licence,
        "provenance": dict(provenance),
    }


def check_rows(features: np.ndarray, valid: np.ndarray, *, clip: str, backbone: str, width: int) -> None:
    """Refuse rows that must never be written: wrong shape or width, NaN or inf."""
    if features.ndim != 2 or features.shape[1] != width:
        raise EmofusionError(
            f"backbone {backbone} gave features of shape {features.shape} for clip {clip}; expected (frames, {width})"
        )
    if valid.shape != (features.shape[0],):
        raise EmofusionError(
            f"backbone {backbone}: valid mask of shape {valid.shape} for {features.shape[0]} rows of clip {clip}"
        )
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise EmofusionError(
            f"backbone {backbone} gave NaN or inf features for clip {clip} at {len(rows)} "
            f"frame(s) (first: {int(rows[0])}); nothing was written"
        )


def write_store(
    path: str | os.PathLike, clips: Iterable[tuple[str, np.ndarray, np.ndarray, float]], attrs: Mapping[str, Any]
) -> None:
    """Write a store atomically from ``(clip, features (N, D), valid (N,), fps)`` items, in sorted clip order.

    Rows are checked first (:func:`check_rows`); chunks hold whole clips' row blocks so one clip reads
    contiguously."""
    import h5py

    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"store attributes missing: {missing}")
    width = int(attrs["width"])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = _encode(value)
        for clip, features, valid, fps in sorted(clips, key=lambda item: item[0]):
            features = np.asarray(features, dtype=np.float32)
            valid = np.asarray(valid, dtype=bool)
            check_rows(features, valid, clip=clip, backbone=str(attrs["backbone"]), width=width)
            g = f.create_group(clip)
            n = len(features)
            chunk_rows = max(1, min(n, max(1, (1 << 20) // max(4 * width, 1))))  # about 1 MiB chunks
            g.create_dataset("features", data=features, chunks=(chunk_rows, width) if n else None)
            g.create_dataset("valid", data=valid)
            g.attrs["frames"] = n
            g.attrs["fps"] = float(fps)


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """A store's root attributes, ``provenance`` decoded; InputError naming the file when it is not a store."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"feature store {path} does not exist; run `emofusion embed` (or `snakemake features`)")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise InputError(f"feature store {path} cannot be read ({e}); rebuild it (`{rebuild_store(path)}`)") from None
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing and "modality" not in attrs:  # another file altogether (labels, faces): rebuilding it would not help
        kind = "the labels store" if "targets" in attrs else "a face store" if "source" in attrs else "another file"
        raise InputError(
            f"{path} is not a feature store ({kind}: none of a store's attributes); pass a store written by "
            "`emofusion embed` or `emofusion embed-merge` (results/features/<modality>/<backbone>.h5 or its shards)"
        )
    if missing:
        raise InputError(
            f"{path} is not a feature store (missing attributes {', '.join(missing)}); "
            f"rebuild it (`{rebuild_store(path)}`)"
        )
    attrs["provenance"] = json.loads(attrs["provenance"] or "{}")
    return attrs


def store_clips(path: str | os.PathLike) -> list[str]:
    """The clip groups of a store or shard, in the file's order (names only: nothing else is read)."""
    import h5py

    with h5py.File(path, "r") as f:
        return list(f)


def write_merged(
    out: str | os.PathLike, attrs: Mapping[str, Any], sources: Iterable[tuple[str, str | os.PathLike]]
) -> None:
    """Write a store atomically from the clip groups of other stores: root ``attrs`` as given (values written
    as they are), then each ``(clip, store holding it)`` copied in the order given. The copy is H5Ocopy: chunks
    copied as stored, no decode/encode, so a merged clip holds the shard's bytes."""
    import h5py

    handles: dict[str, Any] = {}
    try:
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
            for k, v in attrs.items():
                dst.attrs[k] = v
            for clip, path in sources:
                src = handles.get(str(path))
                if src is None:
                    src = handles[str(path)] = h5py.File(path, "r")
                src.copy(src[clip], dst, name=clip)
    finally:
        for h in handles.values():
            h.close()


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    """``(clip, features, valid, fps)`` of every clip of a store or shard, in sorted clip order (the items
    :func:`write_store` takes)."""
    import h5py

    with h5py.File(path, "r") as f:
        for c in sorted(f):
            g = f[c]
            yield c, g["features"][:], g["valid"][:], float(g.attrs["fps"])


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeatureStore:
    """Read a feature store: lazily (the file opens on first read, once per process, so each DataLoader worker
    has its own handle) or whole into memory (``in_memory=True``).

    Every expectation the caller passes (``modality``, ``backbone``, ``weights_sha256``, ``width``,
    ``schema_version``) is checked against the file at construction; a difference raises StoreMismatch naming
    the file, the attribute and both values.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        modality: str | None = None,
        backbone: str | None = None,
        weights_sha256: str | None = None,
        width: int | None = None,
        schema_version: int = SCHEMA_VERSION,
        in_memory: bool = False,
    ):
        self.path = Path(path)
        self.attrs = read_attrs(self.path)
        expected = {
            "schema_version": schema_version,
            "modality": modality,
            "backbone": backbone,
            "weights_sha256": weights_sha256,
            "width": width,
        }
        for key, want in expected.items():
            if want is not None and self.attrs[key] != want:
                raise StoreMismatch(
                    f"{self.path}: {key} is {self.attrs[key]!r} but {want!r} was asked for; "
                    f"rebuild the store (`{rebuild_store(self.path)}`) or point the config at the "
                    "right one"
                )
        self.width = int(self.attrs["width"])
        self._file = None
        self._pid: int | None = None
        self._datasets: dict[str, tuple[Any, Any]] = {}  # clip -> open (features, valid) datasets of this process
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        with self._open_fresh() as f:
            self.clips: list[str] = sorted(f)
            self.frames: dict[str, int] = {c: int(f[c].attrs["frames"]) for c in self.clips}
        if in_memory:
            self._memory = self.load()

    def _open_fresh(self):
        import h5py

        return h5py.File(self.path, "r")

    def _handle(self):
        # h5py handles must not cross fork(): reopen in a new process (DataLoader workers).
        if self._file is None or self._pid != os.getpid():
            self._file = self._open_fresh()
            self._pid = os.getpid()
            self._datasets = {}
        return self._file

    def __contains__(self, clip: str) -> bool:
        return clip in self.frames

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[str]:
        return iter(self.clips)

    def read(self, clip: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` of one clip: ``features (n, D) float32`` and ``valid (n,) bool``."""
        if clip not in self.frames:
            raise InputError(
                f"feature store {self.path} has no clip {clip!r}; rebuild it so it covers the manifest "
                f"(`{rebuild_store(self.path)}`)"
            )
        if self._memory is not None:
            feats, valid = self._memory[clip]
            return feats[start:stop], valid[start:stop]
        f = self._handle()
        ds = self._datasets.get(clip)
        if ds is None:  # looking a dataset up costs as much as reading a short clip: keep it open
            g = f[clip]
            ds = self._datasets[clip] = (g["features"], g["valid"])
        return ds[0][start:stop], ds[1][start:stop]

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The whole store in memory: clip -> (features, valid)."""
        if self._memory is not None:
            return self._memory
        with self._open_fresh() as f:
            return {c: (f[c]["features"][:], f[c]["valid"][:]) for c in self.clips}

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._datasets = {}

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # never pickle an open handle; the worker opens its own
        state["_datasets"] = {}
        return state
