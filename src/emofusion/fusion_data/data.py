"""One fold's data for a model: its clips (:mod:`.clips`), labels (:mod:`.frame_labels`, optional), features
(:mod:`.sources`: stores or memory), the normaliser (:mod:`.normaliser`) and a batcher (:mod:`.batches`), put
together and checked before any model runs.

Everything is on the frame timeline (or the training rate's grid, see :mod:`.clips`); windows are gathered by
index arithmetic (:mod:`.windows`). Where the features live (:class:`Placement`): in memory (read once,
normalised once; batches are one fancy-indexing gather), lazy (each window's rows read when its batch is built, so
DataLoader workers read in parallel), or on the training device (``device_data``: tensors there, batches gathered
by index, no DataLoader, no host copies; on the CPU the in-memory batches bit for bit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emofusion.errors import ConfigError
from emofusion.fusion_data.batches import DeviceBatcher, DeviceBatches, HostBatcher, WindowBatches, wants_device_data
from emofusion.fusion_data.clips import FoldClips
from emofusion.fusion_data.frame_labels import FrameLabels, check_fold
from emofusion.fusion_data.normaliser import Moments, Normaliser
from emofusion.fusion_data.sources import FeatureSource, check_coverage, check_finite, describe, open_stores
from emofusion.log import logger

IN_MEMORY_LIMIT = 8 << 30  # bytes of features below which `auto` loads the stores into memory


@dataclass(frozen=True)
class Placement:
    """Where the features live while batches are built. ``in_memory``: True, False (lazy reads), or None (auto:
    in memory when the features take under 8 GiB). ``device``, ``device_data`` (True, False or "auto") and
    ``device_fraction``: see :func:`~emofusion.fusion_data.batches.wants_device_data`; on the device the
    features are loaded one modality at a time, so the host holds at most one of them. ``Placement()`` is the host
    (evaluation, predict); training passes the fusion.* runtime settings, whose defaults are the schema's."""

    in_memory: bool | None = None
    device: Any = None
    device_data: bool | str = False
    device_fraction: float = 0.5


class FusionData:
    """The clips of ``table`` with their features from ``sources`` (``{modality: source}``) and ``labels`` (None:
    every row unannotated, a video without labels), normalised by ``normaliser`` (evaluation and predict: the
    checkpoint's) or by one fitted here on the fold's training clips (valid frames only). Every feature is checked
    finite while it is read, before any training."""

    def __init__(
        self,
        table: FoldClips,
        sources: Mapping[str, FeatureSource],
        *,
        labels: FrameLabels | None = None,
        normaliser: Normaliser | None = None,
        placement: Placement = Placement(),
    ):
        from emofusion.models.config import MODALITIES

        self.table = table
        self.modalities = [m for m in MODALITIES if m in sources]
        self.sources = {m: sources[m] for m in self.modalities}
        self.width = {m: s.width for m, s in self.sources.items()}
        self.target = labels if labels is not None else FrameLabels.unannotated(table)
        self.device, self.in_memory = self._place(placement)
        self.normaliser, self.batcher = self._read_features(normaliser)

    # --- the pieces' faces, as the loop, evaluation and predict read them ---------------------------------------
    @property
    def windowing(self):
        return self.table.windowing

    @property
    def clips(self) -> list[str]:
        return self.table.clips

    @property
    def frames(self) -> dict[str, int]:
        return self.table.frames

    @property
    def split(self) -> dict[str, str]:
        return self.table.split

    @property
    def offsets(self) -> np.ndarray:
        return self.table.offsets

    @property
    def total(self) -> int:
        return self.table.total

    @property
    def labels(self) -> np.ndarray:
        return self.target.labels

    @property
    def label_valid(self) -> np.ndarray:
        return self.target.label_valid

    def clips_of(self, split: str) -> list[str]:
        return self.table.clips_of(split)

    def windows(self, clips: list[str], hop: int) -> np.ndarray:
        return self.table.windows(clips, hop)

    def gather_index(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.table.gather_index(windows)

    def to_frames(self, clip: str, values: np.ndarray) -> np.ndarray:
        return self.table.to_frames(clip, values)

    def frame_labels(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        return self.target.frame_labels(clip)

    # --- set-up -------------------------------------------------------------------------------------------------
    def _place(self, placement: Placement) -> tuple[Any, bool]:
        """The device the features go to (None: the host) and whether the host holds them in memory."""
        in_memory, device_data = placement.in_memory, placement.device_data
        nbytes = (self.total + 1) * sum(4 * w + 1 for w in self.width.values())
        if in_memory is False and device_data == "auto":  # --data lazy asked for the DataLoader
            device_data = False
        on_device = wants_device_data(device_data, placement.device, nbytes, placement.device_fraction)
        device = placement.device if on_device else None
        if device is not None:
            if in_memory is False:
                raise ConfigError(
                    "fusion.device_data keeps the features on the device but --data lazy was asked; "
                    "use --data memory or auto, or set fusion.device_data to false or auto"
                )
            in_memory = True
        if in_memory is None:
            in_memory = sum(self.total * 4 * w for w in self.width.values()) < IN_MEMORY_LIMIT
        return device, in_memory

    def _read_features(self, given: Normaliser | None) -> tuple[Normaliser, HostBatcher | DeviceBatcher]:
        """One pass over every source: NaN/inf check, moments of the training clips' valid frames, and (in
        memory) the normalised arrays with a zero padding row, on the device when asked."""
        table = self.table
        train = set(table.clips_of("train"))
        features: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] = {}
        device = DeviceBatcher(table, self.target, self.device) if self.device is not None else None
        means, stds = {}, {}
        for m, source in self.sources.items():
            moments = Moments(source.width)
            if self.in_memory:
                feats = np.zeros((table.total + 1, source.width), np.float32)
                ok = np.zeros(table.total + 1, bool)
            for i, c in enumerate(table.clips):
                x, v = source.read(c)
                check_finite(x, source, c)
                if c in table.source:
                    x, v = x[table.source[c]], v[table.source[c]]
                if c in train:
                    moments.add(x[v])
                if self.in_memory:
                    feats[table.offsets[i] : table.offsets[i + 1]] = x
                    ok[table.offsets[i] : table.offsets[i + 1]] = v
            means[m], stds[m] = moments.result()
            if moments.n == 0 and given is None:
                logger.warning(
                    "%s: no valid frame in the training clips; its features are not normalised", describe(source)
                )
            if self.in_memory:  # normalised per modality, so the device path holds one store on the host at a time
                x = (given or Normaliser(mean=means, std=stds)).apply(m, feats)
                x[~ok] = 0.0
                x = x.astype(np.float32, copy=False)
                del feats
                if device is not None:
                    device.add(m, x, ok)
                else:
                    features[m], valid[m] = x, ok
                del x
        normaliser = given or Normaliser(mean=means, std=stds)
        logger.info(
            "fold data: %d clips (%s), %d frames, modalities %s (%s), %s",
            len(table.clips),
            ", ".join(f"{sum(s == k for s in table.split.values())} {k}" for k in ("train", "validation", "test")),
            table.total,
            ", ".join(f"{m} {self.width[m]}-d" for m in self.modalities),
            ", ".join(describe(s) for s in self.sources.values()),
            f"on {self.device}" if self.device is not None else "in memory" if self.in_memory else "read lazily",
        )
        if device is not None:
            return normaliser, device
        if self.in_memory:
            return normaliser, HostBatcher(table, self.target, self.sources, normaliser, features=features, valid=valid)
        return normaliser, HostBatcher(table, self.target, self.sources, normaliser)

    # --- batches ------------------------------------------------------------------------------------------------
    def batch(self, windows: np.ndarray) -> dict[str, Any]:
        """Tensors for a batch of windows (see :mod:`.batches`)."""
        return self.batcher.batch(np.asarray(windows, dtype=np.int64).reshape(-1, 2))

    def batches(self, windows: np.ndarray, index: list[list[int]], *, workers: int = 0, pin: bool = False):
        """Batch dicts of ``windows[i]`` for each list ``i`` of ``index``, in order: gathered on the device when
        the data lives there, else through a DataLoader (``workers`` processes for lazy reads)."""
        import torch

        if isinstance(self.batcher, DeviceBatcher):
            return DeviceBatches(self.batcher, windows, index)
        return torch.utils.data.DataLoader(
            WindowBatches(self, windows), sampler=index, batch_size=None, num_workers=workers, pin_memory=pin
        )


def load_fold(
    manifest,
    *,
    fold: int,
    windowing,
    rate: float | str | None,
    stores: Mapping[str, Any],
    backbones: Mapping[str, str],
    labels,
    weights_sha256: Mapping[str, str] | None = None,
    normaliser: Normaliser | None = None,
    placement: Placement = Placement(),
    check_labels: bool = False,
) -> FusionData:
    """One fold's :class:`FusionData` from feature stores and a labels store, as training, evaluation, the
    benchmarks and the tests build it: the stores first (backbone, schema, weights), then the fold and its rate
    grid (:class:`~emofusion.fusion_data.clips.FoldClips`), the stores' coverage of it, the labels, and with
    ``check_labels`` (training) a fold with training and validation labels; the first error is a bad store."""
    sources = open_stores(stores, backbones, weights_sha256=weights_sha256)
    table = FoldClips(manifest, fold=fold, windowing=windowing, rate=rate)
    for source in sources.values():
        check_coverage(source, table)
    frame_labels = FrameLabels.read(labels, table)
    if check_labels:
        check_fold(table, frame_labels, fold)
    return FusionData(table, sources, labels=frame_labels, normaliser=normaliser, placement=placement)
