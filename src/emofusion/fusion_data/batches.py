"""Batches of windows: the host batcher (features in memory, or read lazily from the stores in DataLoader
workers) and the device batcher (features, masks and labels as tensors on the training device, batches gathered
there by index; on the CPU it gives the host batcher's batches bit for bit).

A batch is ``feats {m: (B, L, d_m)}``, ``masks {m: bool (B, L)}``, ``target (B, L, 2)``, ``target_mask bool
(B, L, 2)``. A step of modality m is valid when at least one of its pooled frames is (no face, silence, no word ->
invalid), and its feature is the mean over its valid pooled frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from emofusion.errors import ConfigError
from emofusion.fusion_data.clips import FoldClips
from emofusion.fusion_data.frame_labels import FrameLabels
from emofusion.fusion_data.normaliser import Normaliser
from emofusion.fusion_data.sources import FeatureSource


def wants_device_data(mode: bool | str, device, nbytes: int, fraction: float) -> bool:
    """``fusion.device_data``: True / False as given; "auto": on CUDA when ``nbytes`` fit in ``fraction`` of the
    device's free memory, never on the CPU (the in-memory DataLoader path is as fast there)."""
    if mode is True or mode is False:
        return mode
    if mode != "auto":
        raise ConfigError(f"fusion.device_data: {mode!r} is not one of auto, true, false")
    if device is None or device.type != "cuda":
        return False
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < fraction * free


class HostBatcher:
    """NumPy batches: from the normalised arrays in memory (``features``/``valid``: ``{m: (total + 1, ...)}``
    with a zero padding row; one fancy-indexing gather a batch), or, with ``features`` None, each window's rows
    read from ``sources`` and normalised when its batch is built (lazy: DataLoader workers read in parallel, every
    worker opening the HDF5 files itself, see :class:`emofusion.features.store.FeatureStore`)."""

    def __init__(
        self,
        table: FoldClips,
        labels: FrameLabels,
        sources: Mapping[str, FeatureSource],
        normaliser: Normaliser,
        *,
        features: dict[str, np.ndarray] | None = None,
        valid: dict[str, np.ndarray] | None = None,
    ):
        self.table, self.labels, self.sources, self.normaliser = table, labels, sources, normaliser
        self.features, self.valid = features, valid

    def batch(self, windows: np.ndarray) -> dict[str, Any]:
        import torch

        pooled, label = self.table.gather_index(windows)
        feats, masks = {}, {}
        for m in self.sources:
            if self.features is not None and self.valid is not None:
                x, v = self.features[m][pooled], self.valid[m][pooled]  # (B, steps, pool, D), (B, steps, pool)
            else:
                x, v = self._read_lazy(m, windows, pooled)
            count = v.sum(axis=2)
            x = (x * v[..., None]).sum(axis=2) / np.maximum(count, 1)[..., None]  # (B, steps, D)
            feats[m] = torch.from_numpy(x.astype(np.float32))
            masks[m] = torch.from_numpy(count > 0)
        return {
            "feats": feats,
            "masks": masks,
            "target": torch.from_numpy(self.labels.labels[label]),
            "target_mask": torch.from_numpy(self.labels.label_valid[label]),
        }

    def _read_lazy(self, m: str, windows: np.ndarray, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read each window's span of rows from source ``m`` (one contiguous HDF5 read per window), normalise,
        and gather the pooled frames: ``(B, steps, pool, D)`` features and ``(B, steps, pool)`` validity."""
        source, table = self.sources[m], self.table
        B = len(windows)
        span = table.windowing.window
        block = np.zeros((B, span + 1, source.width), np.float32)  # + 1: padding row at the end of each window
        vblock = np.zeros((B, span + 1), bool)
        for b, (ci, start) in enumerate(windows):
            clip = table.clips[ci]
            if clip in table.source:  # the frames of the window's grid rows (a start is inside the clip), one read
                rows = table.source[clip][int(start) : int(start) + span]
                x, v = source.read(clip, int(rows[0]), int(rows[-1]) + 1)
                x, v = x[rows - rows[0]], v[rows - rows[0]]
            else:
                x, v = source.read(clip, int(start), int(start) + span)
            block[b, : len(x)] = self.normaliser.apply(m, x)
            vblock[b, : len(v)] = v
        block[~vblock] = 0.0
        local = pooled - table.offsets[windows[:, 0]][:, None, None] - windows[:, 1][:, None, None]
        local = np.where(pooled == table.total, span, local)  # padding -> the padding row
        rows = np.arange(B)[:, None, None]
        return block[rows, local], vblock[rows, local]


class DeviceBatcher:
    """Batches gathered on ``device``: each modality's normalised features and validity (:meth:`add`), the labels
    and the index tables as tensors there; only the (B, 2) window table travels."""

    def __init__(self, table: FoldClips, labels: FrameLabels, device):
        import torch

        self.table, self.device = table, device
        self.modalities: list[str] = []
        self.features: dict[str, Any] = {}
        self.valid: dict[str, Any] = {}
        self.labels = torch.from_numpy(labels.labels).to(device)
        self.label_valid = torch.from_numpy(labels.label_valid).to(device)
        self.offsets = torch.from_numpy(table.offsets).to(device)
        self.clip_frames = torch.from_numpy(table.clip_frames).to(device)
        self.pooled = torch.from_numpy(table.windowing.pooled_frames().astype(np.int64)).to(device)
        self.label = torch.from_numpy(table.windowing.label_frames().astype(np.int64)).to(device)

    def add(self, m: str, features: np.ndarray, valid: np.ndarray) -> None:
        """Modality ``m``'s normalised ``(total + 1, D)`` features and validity, to the device (on the CPU the
        tensors share the arrays)."""
        import torch

        self.modalities.append(m)
        self.features[m] = torch.from_numpy(features).to(self.device)
        self.valid[m] = torch.from_numpy(valid).to(self.device)

    def batch(self, windows: np.ndarray) -> dict[str, Any]:
        """The host batcher's arithmetic in the same order (pooled frames added one after the other, float32 sums
        divided by the count), so on the CPU the batches are equal bit for bit."""
        import torch

        total = self.table.total
        w = torch.from_numpy(windows).to(self.device)
        n, base, start = self.clip_frames[w[:, 0]], self.offsets[w[:, 0]], w[:, 1]
        pooled = start[:, None, None] + self.pooled[None]  # (B, steps, pool)
        label = start[:, None] + self.label[None]  # (B, steps)
        pooled = torch.where(pooled < n[:, None, None], base[:, None, None] + pooled, total)
        label = torch.where(label < n[:, None], base[:, None] + label, total)
        feats, masks = {}, {}
        flat = pooled.reshape(-1)  # index_select: one contiguous gather, faster than advanced indexing
        for m in self.modalities:
            v = self.valid[m].index_select(0, flat).view(pooled.shape)  # (B, steps, pool)
            x = self.features[m].index_select(0, flat).view(*pooled.shape, -1) * v[..., None]  # (B, steps, pool, D)
            summed = x[:, :, 0]
            for p in range(1, x.shape[2]):
                summed = summed + x[:, :, p]
            count = v.sum(dim=2)
            feats[m] = summed / count.clamp(min=1)[..., None].to(summed.dtype)
            masks[m] = count > 0
        flat = label.reshape(-1)
        return {
            "feats": feats,
            "masks": masks,
            "target": self.labels.index_select(0, flat).view(*label.shape, 2),
            "target_mask": self.label_valid.index_select(0, flat).view(*label.shape, 2),
        }


class DeviceBatches:
    """What :meth:`FusionData.batches` gives when the data lives on the device: an iterable like the DataLoader it
    replaces (each ``iter()`` a new pass over ``index``), its batches gathered on the device."""

    def __init__(self, batcher: DeviceBatcher, windows: np.ndarray, index: list[list[int]]):
        self.batcher, self.windows, self.index = batcher, windows, index

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        import torch

        # A DataLoader draws its workers' base seed from torch's RNG each time it is iterated (tqdm iterates it
        # twice); draw as it does, so dropout and everything after see the random stream of the DataLoader path
        # and a run on the device equals one through the loader bit for bit (on the CPU).
        torch.empty((), dtype=torch.int64).random_()
        return (
            self.batcher.batch(np.asarray(self.windows[np.asarray(i, dtype=np.int64)], np.int64)) for i in self.index
        )


class WindowBatches:
    """A map-style dataset whose items are whole batches: ``dataset[list of window numbers]`` -> batch dict.
    Used with ``DataLoader(dataset, sampler=<list of index lists>, batch_size=None)`` so in-memory batches are
    one vectorised gather and lazy batches are built (and read) in the workers."""

    def __init__(self, data, windows: np.ndarray):
        self.data, self.windows = data, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx) -> dict[str, Any]:
        return self.data.batch(self.windows[np.asarray(idx, dtype=np.int64)])
