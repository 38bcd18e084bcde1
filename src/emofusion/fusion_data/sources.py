"""Where a fold's features come from: feature stores on disk (training, evaluation, predict's cached shards) or
arrays already in memory (predict, right after embedding a video), and the checks every source passes before any
model sees it.

Both kinds read the same way: ``width``, ``frames {clip: rows}``, ``clip in source`` and ``read(clip, start,
stop) -> (features (n, D) float32, valid (n,) bool)``, so the fold data and its batchers do not care which.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from emofusion.errors import InputError
from emofusion.features.store import FeatureStore
from emofusion.fusion_data.clips import FoldClips
from emofusion.repair import rebuild_store


class FeatureSource(Protocol):
    width: int
    frames: dict[str, int]

    def __contains__(self, clip: str) -> bool: ...

    def read(self, clip: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class MemoryFeatures:
    """One modality's rows of each clip, held in memory: ``{clip: (features (N, D), valid (N,))}``, stored as the
    store writer would write them (float32 and bool), so they read exactly as a store written from them does.
    ``path``: the file they were read from (predict's cached shard), so errors name it and advise as a store's do;
    None for rows made in this process."""

    def __init__(
        self,
        modality: str,
        rows: Mapping[str, tuple[np.ndarray, np.ndarray]],
        *,
        width: int,
        path: Path | None = None,
    ):
        self.modality, self.width, self.path = modality, int(width), path
        self._rows = {
            c: (np.asarray(x, dtype=np.float32), np.asarray(v, dtype=bool)) for c, (x, v) in sorted(rows.items())
        }
        self.frames: dict[str, int] = {c: len(x) for c, (x, _) in self._rows.items()}

    def __contains__(self, clip: str) -> bool:
        return clip in self._rows

    def read(self, clip: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        x, v = self._rows[clip]
        return x[start:stop], v[start:stop]

    def __str__(self) -> str:
        return f"the {self.modality} features in memory"


def describe(source: FeatureSource) -> str:
    """How errors and logs name a source: its store's path, or what it holds."""
    path = getattr(source, "path", None)
    return str(path) if path is not None else str(source)


def _where(source: FeatureSource) -> str:
    """A source as an error names it: ``feature store <path>``, or what the memory holds."""
    path = getattr(source, "path", None)
    return f"feature store {path}" if path is not None else str(source)


def open_stores(
    stores: Mapping[str, str | Path],
    backbones: Mapping[str, str],
    *,
    weights_sha256: Mapping[str, str] | None = None,
) -> dict[str, FeatureStore]:
    """``{modality: FeatureStore}`` of ``stores`` (modalities in the models' order), each checked to be of the
    expected backbone and schema (and weights, where given: evaluation passes what training saw;
    :class:`~emofusion.features.store.StoreMismatch`); their coverage of a fold is :func:`check_coverage`."""
    from emofusion.models.config import MODALITIES

    return {
        m: FeatureStore(stores[m], modality=m, backbone=backbones[m], weights_sha256=(weights_sha256 or {}).get(m))
        for m in MODALITIES
        if m in stores
    }


def check_coverage(source: FeatureSource, clips: FoldClips) -> None:
    """Every clip of the fold is in ``source`` with the manifest's frame count."""
    path = getattr(source, "path", None)
    in_memory = "rows made here that do not match the clip's frames: report it as a bug"  # predict's own embedding
    missing = [c for c in clips.clips if c not in source]
    if missing:
        fix = f"rebuild it so it covers the manifest (`{rebuild_store(path)}`)" if path is not None else in_memory
        raise InputError(
            f"{_where(source)} lacks {len(missing)} clip(s) of the manifest (first: {missing[0]!r}); {fix}"
        )
    wrong = [c for c in clips.clips if source.frames[c] != clips.clip_frames_native[c]]
    if wrong:
        c = wrong[0]
        fix = "the store was built from another manifest, rebuild it" if path is not None else in_memory
        raise InputError(
            f"{_where(source)}: clip {c!r} has {source.frames[c]} rows but the manifest "
            f"says {clips.clip_frames_native[c]} frames; {fix}"
        )


def check_finite(x: np.ndarray, source: FeatureSource, clip: str) -> None:
    """No NaN or inf among a clip's features (a store written before the writer refused them, or edited)."""
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        path = getattr(source, "path", None)
        fix = f"rebuild the store (`{rebuild_store(path)}`)" if path is not None else "check the backbone's output"
        raise InputError(
            f"{_where(source)}: clip {clip!r} has NaN or inf features at {int(bad.any(1).sum())} "
            f"frame(s) (first: frame {row}); {fix}"
        )
