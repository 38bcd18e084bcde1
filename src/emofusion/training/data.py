"""One fold's data: feature stores + labels + manifest, checked before any training, normalised, windowed.

Everything is on the frame timeline; windows are gathered by index arithmetic (:mod:`.windows`). Two modes:
in memory (all stores loaded once, normalised once; batches are one fancy-indexing gather) or lazy (each window's
rows read from the stores when its batch is built, so DataLoader workers read in parallel; every worker opens the
HDF5 files itself, see :class:`emofusion.features.store.FeatureStore`). On top of in memory, ``device_data``: the
normalised features, masks and labels live on the training device as tensors and batches are gathered there by
index (no DataLoader, no host copies); on the CPU it gives the in-memory mode's batches bit for bit.

Masks: a step of modality m is valid when at least one of its pooled frames is (no face, silence, no word ->
invalid), and its feature is the mean over its valid pooled frames. A step's label is valid when the label of
its sub-sequence's last frame is annotated (not -5) and inside the clip (not padding).

Rates: with a training rate (``rate``: frames per second, or "train" for the median rate of the fold's training
clips), a clip whose manifest ``fps`` differs is held on the uniform grid at that rate (each grid row takes the
latest frame at or before it, features, masks and labels alike; :func:`emofusion.training.windows.rate_grid`), so
its windows span the seconds they span on the other clips. ``frames`` then counts grid rows;
:meth:`FusionData.to_frames` and :meth:`FusionData.frame_labels` give a clip's values back on its own frames. Clips
at the rate (every clip of a one-rate corpus) are read exactly as without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import ConfigError, InputError
from emofusion.features.store import FeatureStore
from emofusion.log import logger
from emofusion.repair import rebuild_store
from emofusion.training.windows import Windowing, at_rate, grid_of_frames, rate_grid, training_rate, windows_for

IN_MEMORY_LIMIT = 8 << 30  # bytes of features below which `auto` loads the stores into memory


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


@dataclass
class Normaliser:
    """Per-modality feature mean and standard deviation, fitted on one fold's training clips (valid frames only)."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    def apply(self, m: str, x: np.ndarray) -> np.ndarray:
        return (x - self.mean[m]) / self.std[m]

    def to_plain(self) -> dict[str, Any]:
        """Tensors in a plain dict (what a ``weights_only`` checkpoint holds)."""
        import torch

        return {
            m: {"mean": torch.from_numpy(self.mean[m].copy()), "std": torch.from_numpy(self.std[m].copy())}
            for m in self.mean
        }

    @classmethod
    def from_plain(cls, d: Mapping[str, Any]) -> Normaliser:
        return cls(
            mean={m: np.asarray(v["mean"], np.float32) for m, v in d.items()},
            std={m: np.asarray(v["std"], np.float32) for m, v in d.items()},
        )


class _Moments:
    """Streaming float64 sums for a mean and a population standard deviation."""

    def __init__(self, width: int):
        self.n, self.s, self.ss = 0, np.zeros(width), np.zeros(width)

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.n += len(x)
        self.s += x.sum(0)
        self.ss += (x * x).sum(0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.n, 1)
        mean = self.s / n
        std = np.sqrt(np.maximum(self.ss / n - mean * mean, 0.0))
        std = np.where(std > 1e-8, std, 1.0)  # constant features stay as they are (centred), never blown up
        return mean.astype(np.float32), std.astype(np.float32)


def _check_finite(x: np.ndarray, path: Path, clip: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(
            f"feature store {path}: clip {clip!r} has NaN or inf features at {int(bad.any(1).sum())} "
            f"frame(s) (first: frame {row}); rebuild the store (`{rebuild_store(path)}`)"
        )


class FusionData:
    """The clips of a manifest with their labels and features for one fold.

    ``stores``: ``{modality: path}``; ``backbones``: ``{modality: backbone}`` expected in each store;
    ``weights_sha256``: optional expected weights checksum per modality (evaluation passes what training saw).
    ``normaliser``: given (evaluation: the checkpoint's) or fitted on the fold's training clips.
    ``in_memory``: True, False, or None (auto: in memory when the features take under 8 GiB).
    ``device``, ``device_data`` (True, False or "auto") and ``device_fraction``: see :func:`wants_device_data`;
    on the device the stores are loaded one modality at a time, so the host holds at most one of them.
    Every check runs here, before any training: a store of another backbone or schema (StoreMismatch), a clip of
    the manifest missing from a store or with another frame count, NaN/inf features, a fold without valid labels.
    """

    def __init__(
        self,
        *,
        manifest: pd.DataFrame,
        labels: str | Path,
        stores: Mapping[str, str | Path],
        backbones: Mapping[str, str],
        fold: int,
        windowing: Windowing,
        weights_sha256: Mapping[str, str] | None = None,
        normaliser: Normaliser | None = None,
        in_memory: bool | None = None,
        check_labels: bool = True,
        device=None,
        device_data: bool | str = False,
        device_fraction: float = 0.5,
        rate: float | str | None = None,
    ):
        from emofusion.corpus import fold_split
        from emofusion.models.config import MODALITIES

        self.windowing = windowing
        self.modalities = [m for m in MODALITIES if m in stores]
        self.stores = {
            m: FeatureStore(stores[m], modality=m, backbone=backbones[m], weights_sha256=(weights_sha256 or {}).get(m))
            for m in self.modalities
        }
        df = manifest.sort_values("clip").reset_index(drop=True)
        self.clips: list[str] = list(df["clip"])
        self.frames: dict[str, int] = dict(zip(df["clip"], df["frames"].astype(int), strict=True))
        try:
            splits = fold_split(df, fold)
        except ConfigError as e:
            raise ConfigError(f"fusion.folds: {e}") from None
        self.split: dict[str, str] = dict(zip(df["clip"], splits, strict=True))
        self._on_grid(df, rate)
        for store in self.stores.values():
            missing = [c for c in self.clips if c not in store]
            if missing:
                raise InputError(
                    f"feature store {store.path} lacks {len(missing)} clip(s) of the manifest "
                    f"(first: {missing[0]!r}); rebuild it so it covers the manifest "
                    f"(`{rebuild_store(store.path)}`)"
                )
            wrong = [c for c in self.clips if store.frames[c] != self.clip_frames_native[c]]
            if wrong:
                c = wrong[0]
                raise InputError(
                    f"feature store {store.path}: clip {c!r} has {store.frames[c]} rows but the manifest "
                    f"says {self.clip_frames_native[c]} frames; the store was built from another manifest, rebuild it"
                )
        self.width = {m: s.width for m, s in self.stores.items()}
        self.offsets = np.cumsum([0] + [self.frames[c] for c in self.clips]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.clip_frames = np.array([self.frames[c] for c in self.clips], dtype=np.int64)
        self._load_labels(labels)
        if check_labels:
            self._check_fold(fold)
        nbytes = (self.total + 1) * sum(4 * w + 1 for w in self.width.values())
        if in_memory is False and device_data == "auto":  # --data lazy asked for the DataLoader
            device_data = False
        self.device = device if wants_device_data(device_data, device, nbytes, device_fraction) else None
        if self.device is not None:
            if in_memory is False:
                raise ConfigError(
                    "fusion.device_data keeps the features on the device but --data lazy was asked; "
                    "use --data memory or auto, or set fusion.device_data to false or auto"
                )
            in_memory = True
        if in_memory is None:
            in_memory = sum(self.total * 4 * w for w in self.width.values()) < IN_MEMORY_LIMIT
        self.in_memory = in_memory
        self._read_features(normaliser)

    # --- set-up -------------------------------------------------------------------------------------------------
    def _on_grid(self, df: pd.DataFrame, rate: float | str | None) -> None:
        """The training rate and, per clip at another rate, its grid rows' frames and its frames' grid rows."""
        self.clip_frames_native = dict(self.frames)
        self.source: dict[str, np.ndarray] = {}  # grid row -> frame, for clips not at the rate
        self.back: dict[str, np.ndarray] = {}  # frame -> grid row
        fps = dict(zip(df["clip"], df["fps"], strict=True)) if "fps" in df else {}
        if rate == "train":
            rate = training_rate([fps[c] for c in self.clips_of("train") if c in fps])
        if rate is None:  # none asked (predict grids a clip itself), or a manifest without rates
            return
        rate = float(rate)
        self.windowing = replace(self.windowing, rate=rate)
        for c in self.clips:
            n, f = self.frames[c], float(fps[c])
            if n == 0 or not np.isfinite(f) or f <= 0:
                continue
            times = np.arange(n) / f
            if not at_rate(times, rate):
                grid, self.source[c] = rate_grid(times, rate)
                self.back[c] = grid_of_frames(times, grid, rate)
                self.frames[c] = len(grid)
        if self.source:
            logger.info(
                "%d of %d clips are not at the training rate (%g fps) and are held on its grid (first: %s, %g fps)",
                len(self.source),
                len(self.clips),
                rate,
                next(iter(self.source)),
                fps[next(iter(self.source))],
            )

    def to_frames(self, clip: str, values: np.ndarray) -> np.ndarray:
        """Values of ``clip``'s rows (grid rows for a clip not at the training rate) on each of its frames: the
        row at or before the frame's time. A clip at the rate: ``values`` themselves."""
        return values[self.back[clip]] if clip in self.back else values

    def frame_labels(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 2)`` labels and validity of each frame of ``clip`` (its own frames, not grid rows)."""
        if clip not in self.back:
            i = self.clips.index(clip)
            rows = slice(self.offsets[i], self.offsets[i + 1])
            return self.labels[rows], self.label_valid[rows]
        return self._frame_labels[clip]

    def _load_labels(self, path: str | Path) -> None:
        from emofusion.labels import open_labels

        path = Path(path)
        # one row past the end: the padding row every out-of-clip index points at (invalid)
        self.labels = np.full((self.total + 1, 2), -5.0, np.float32)
        self.label_valid = np.zeros((self.total + 1, 2), bool)
        self._frame_labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with open_labels(path) as h5:
            for i, c in enumerate(self.clips):
                if c not in h5:
                    raise InputError(f"labels store {path} has no clip {c!r}; rebuild it (`emofusion labels`)")
                values, valid = h5[c]["values"][()], h5[c]["valid"][()]
                if len(values) != self.clip_frames_native[c]:
                    raise InputError(
                        f"labels store {path}: clip {c!r} has {len(values)} rows for {self.clip_frames_native[c]} "
                        "frames in the manifest; rebuild it from this manifest"
                    )
                if c in self.source:
                    self._frame_labels[c] = (values, valid)
                    values, valid = values[self.source[c]], valid[self.source[c]]
                self.labels[self.offsets[i] : self.offsets[i + 1]] = values
                self.label_valid[self.offsets[i] : self.offsets[i + 1]] = valid

    def clips_of(self, split: str) -> list[str]:
        return [c for c in self.clips if self.split[c] == split]

    def _rows(self, clips: list[str]) -> np.ndarray:
        idx = [self.clips.index(c) for c in clips]
        return (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if idx
            else np.zeros(0, np.int64)
        )

    def valid_label_frames(self, split: str) -> int:
        return int(self.label_valid[self._rows(self.clips_of(split))].any(axis=1).sum())

    def _check_fold(self, fold: int) -> None:
        for split in ("train", "validation"):
            if not self.clips_of(split):
                raise ConfigError(f"fusion.folds: fold {fold} has no {split} clips in the manifest")
            if self.valid_label_frames(split) == 0:
                raise ConfigError(
                    f"fusion.folds: fold {fold} has no valid label in its {split} clips "
                    f"({', '.join(self.clips_of(split)[:5])}...); every label there is -5"
                )

    def _read_features(self, normaliser: Normaliser | None) -> None:
        """One pass over every store: NaN/inf check, moments of the training clips' valid frames, and (in
        memory) the normalised arrays with a zero padding row."""
        train = set(self.clips_of("train"))
        self.features: dict[str, np.ndarray] = {}
        self.valid: dict[str, np.ndarray] = {}
        means, stds = {}, {}
        for m, store in self.stores.items():
            moments = _Moments(store.width)
            if self.in_memory:
                feats = np.zeros((self.total + 1, store.width), np.float32)
                valid = np.zeros(self.total + 1, bool)
            for i, c in enumerate(self.clips):
                x, v = store.read(c)
                _check_finite(x, store.path, c)
                if c in self.source:
                    x, v = x[self.source[c]], v[self.source[c]]
                if c in train:
                    moments.add(x[v])
                if self.in_memory:
                    feats[self.offsets[i] : self.offsets[i + 1]] = x
                    valid[self.offsets[i] : self.offsets[i + 1]] = v
            means[m], stds[m] = moments.result()
            if moments.n == 0 and normaliser is None:
                logger.warning("%s: no valid frame in the training clips; its features are not normalised", store.path)
            if self.in_memory:  # normalised per modality, so the device path holds one store on the host at a time
                x = (normaliser or Normaliser(mean=means, std=stds)).apply(m, feats)
                x[~valid] = 0.0
                self.features[m], self.valid[m] = x.astype(np.float32, copy=False), valid
                del feats, x
                if self.device is not None:
                    self._to_device(m)
        self.normaliser = normaliser or Normaliser(mean=means, std=stds)
        logger.info(
            "fold data: %d clips (%s), %d frames, modalities %s (%s), %s",
            len(self.clips),
            ", ".join(f"{sum(s == k for s in self.split.values())} {k}" for k in ("train", "validation", "test")),
            self.total,
            ", ".join(f"{m} {self.width[m]}-d" for m in self.modalities),
            ", ".join(str(s.path) for s in self.stores.values()),
            f"on {self.device}" if self.device is not None else "in memory" if self.in_memory else "read lazily",
        )

    def _to_device(self, m: str) -> None:
        """Modality ``m``'s features and validity (and, the first time, labels and index tables) as tensors on
        ``self.device``; on CUDA the host arrays are dropped (on the CPU the tensors share them)."""
        import torch

        dev = self.device
        assert dev is not None
        if not hasattr(self, "dev"):
            self.dev: dict[str, Any] = {
                "features": {},
                "valid": {},
                "labels": torch.from_numpy(self.labels).to(dev),
                "label_valid": torch.from_numpy(self.label_valid).to(dev),
                "offsets": torch.from_numpy(self.offsets).to(dev),
                "clip_frames": torch.from_numpy(self.clip_frames).to(dev),
                "pooled": torch.from_numpy(self.windowing.pooled_frames().astype(np.int64)).to(dev),
                "label": torch.from_numpy(self.windowing.label_frames().astype(np.int64)).to(dev),
            }
        self.dev["features"][m] = torch.from_numpy(self.features[m]).to(dev)
        self.dev["valid"][m] = torch.from_numpy(self.valid[m]).to(dev)
        if dev.type != "cpu":
            self.features[m] = self.valid[m] = None  # type: ignore[assignment]  # the device holds them now

    # --- batches ------------------------------------------------------------------------------------------------
    def windows(self, clips: list[str], hop: int) -> np.ndarray:
        """``(W, 2)`` rows ``(clip index in self.clips, start frame)`` of every window of ``clips``."""
        w = windows_for(self.frames, clips, self.windowing, hop)
        index = {c: self.clips.index(c) for c in clips}
        w[:, 0] = np.array([index[clips[i]] for i in w[:, 0]], dtype=np.int64) if len(w) else w[:, 0]
        return w

    def gather_index(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row indices ``(B, steps, pool)`` of the pooled frames and ``(B, steps)`` of the label frames;
        frames past a clip's end point at the padding row ``self.total``."""
        n = self.clip_frames[windows[:, 0]]
        start = windows[:, 1]
        pooled = start[:, None, None] + self.windowing.pooled_frames()[None]  # (B, steps, pool)
        label = start[:, None] + self.windowing.label_frames()[None]  # (B, steps)
        base = self.offsets[windows[:, 0]]
        pooled_glob = np.where(pooled < n[:, None, None], base[:, None, None] + pooled, self.total)
        label_glob = np.where(label < n[:, None], base[:, None] + label, self.total)
        return pooled_glob, label_glob

    def batch(self, windows: np.ndarray) -> dict[str, Any]:
        """Tensors for a batch of windows: ``feats {m: (B, L, d_m)}``, ``masks {m: bool (B, L)}``,
        ``target (B, L, 2)``, ``target_mask bool (B, L, 2)``."""
        import torch

        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
        if self.device is not None:
            return self._device_batch(windows)
        pooled, label = self.gather_index(windows)
        feats, masks = {}, {}
        for m in self.modalities:
            if self.in_memory:
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
            "target": torch.from_numpy(self.labels[label]),
            "target_mask": torch.from_numpy(self.label_valid[label]),
        }

    def _device_batch(self, windows: np.ndarray) -> dict[str, Any]:
        """:meth:`batch` with every tensor gathered on ``self.device`` (only the (B, 2) window table travels).
        The same arithmetic as the NumPy path in the same order (pooled frames added one after the other, float32
        sums divided by the count), so on the CPU the batches are equal bit for bit."""
        import torch

        d = self.dev
        w = torch.from_numpy(windows).to(self.device)
        n, base, start = d["clip_frames"][w[:, 0]], d["offsets"][w[:, 0]], w[:, 1]
        pooled = start[:, None, None] + d["pooled"][None]  # (B, steps, pool)
        label = start[:, None] + d["label"][None]  # (B, steps)
        pooled = torch.where(pooled < n[:, None, None], base[:, None, None] + pooled, self.total)
        label = torch.where(label < n[:, None], base[:, None] + label, self.total)
        feats, masks = {}, {}
        flat = pooled.reshape(-1)  # index_select: one contiguous gather, faster than advanced indexing
        for m in self.modalities:
            v = d["valid"][m].index_select(0, flat).view(pooled.shape)  # (B, steps, pool)
            x = d["features"][m].index_select(0, flat).view(*pooled.shape, -1) * v[..., None]  # (B, steps, pool, D)
            total = x[:, :, 0]
            for p in range(1, x.shape[2]):
                total = total + x[:, :, p]
            count = v.sum(dim=2)
            feats[m] = total / count.clamp(min=1)[..., None].to(total.dtype)
            masks[m] = count > 0
        flat = label.reshape(-1)
        return {
            "feats": feats,
            "masks": masks,
            "target": d["labels"].index_select(0, flat).view(*label.shape, 2),
            "target_mask": d["label_valid"].index_select(0, flat).view(*label.shape, 2),
        }

    def batches(self, windows: np.ndarray, index: list[list[int]], *, workers: int = 0, pin: bool = False):
        """Batch dicts of ``windows[i]`` for each list ``i`` of ``index``, in order: gathered on the device when
        the data lives there, else through a DataLoader (``workers`` processes for lazy reads)."""
        import torch

        if self.device is not None:
            return DeviceBatches(self, windows, index)
        return torch.utils.data.DataLoader(
            WindowBatches(self, windows), sampler=index, batch_size=None, num_workers=workers, pin_memory=pin
        )

    def _read_lazy(self, m: str, windows: np.ndarray, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read each window's span of rows from store ``m`` (one contiguous HDF5 read per window), normalise,
        and gather the pooled frames: ``(B, steps, pool, D)`` features and ``(B, steps, pool)`` validity."""
        store = self.stores[m]
        B = len(windows)
        span = self.windowing.window
        block = np.zeros((B, span + 1, store.width), np.float32)  # + 1: padding row at the end of each window
        vblock = np.zeros((B, span + 1), bool)
        for b, (ci, start) in enumerate(windows):
            clip = self.clips[ci]
            if clip in self.source:  # the frames of the window's grid rows (a start is inside the clip), one read
                rows = self.source[clip][int(start) : int(start) + span]
                x, v = store.read(clip, int(rows[0]), int(rows[-1]) + 1)
                x, v = x[rows - rows[0]], v[rows - rows[0]]
            else:
                x, v = store.read(clip, int(start), int(start) + span)
            block[b, : len(x)] = self.normaliser.apply(m, x)
            vblock[b, : len(v)] = v
        block[~vblock] = 0.0
        local = pooled - self.offsets[windows[:, 0]][:, None, None] - windows[:, 1][:, None, None]
        local = np.where(pooled == self.total, span, local)  # padding -> the padding row
        rows = np.arange(B)[:, None, None]
        return block[rows, local], vblock[rows, local]


class DeviceBatches:
    """What :meth:`FusionData.batches` gives when the data lives on the device: an iterable like the DataLoader it
    replaces (each ``iter()`` a new pass over ``index``), its batches gathered on the device."""

    def __init__(self, data: FusionData, windows: np.ndarray, index: list[list[int]]):
        self.data, self.windows, self.index = data, windows, index

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        import torch

        # A DataLoader draws its workers' base seed from torch's RNG each time it is iterated (tqdm iterates it
        # twice); draw as it does, so dropout and everything after see the random stream of the DataLoader path
        # and a run on the device equals one through the loader bit for bit (on the CPU).
        torch.empty((), dtype=torch.int64).random_()
        return (
            self.data._device_batch(np.asarray(self.windows[np.asarray(i, dtype=np.int64)], np.int64))
            for i in self.index
        )


class WindowBatches:
    """A map-style dataset whose items are whole batches: ``dataset[list of window numbers]`` -> batch dict.
    Used with ``DataLoader(dataset, sampler=<list of index lists>, batch_size=None)`` so in-memory batches are
    one vectorised gather and lazy batches are built (and read) in the workers."""

    def __init__(self, data: FusionData, windows: np.ndarray):
        self.data, self.windows = data, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx) -> dict[str, Any]:
        return self.data.batch(self.windows[np.asarray(idx, dtype=np.int64)])
