"""Feature normalisation: per-modality mean and standard deviation, fitted on one fold's training clips (valid
frames only) or taken from a checkpoint, as evaluation and predict do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


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


class Moments:
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
