"""``egemaps`` and ``compare``: opensmile's eGeMAPSv02 (25) and ComParE_2016 (65) low-level descriptors every
10 ms, mean and std over the window. No weights.
"""

from __future__ import annotations

import importlib.metadata
from typing import ClassVar

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio
from emofusion.features.backbones._registry import register
from emofusion.features.timeline import window_pool


class _OpenSmile(WindowedAudio):
    feature_set: ClassVar[str]
    default_stats = ("mean", "std")
    licence = (
        "audEERING research licence: research and personal use, commercial use needs a licence from "
        "audEERING (opensmile==2.6.0 wheel); no weights"
    )
    offline = True
    packages = ("opensmile",)
    native_rate = 100.0

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        try:
            import opensmile
        except ImportError:
            raise ConfigError(
                f"features.audio.backbones.{self.name}: the opensmile package is not installed; "
                "pip install opensmile==2.6.0"
            ) from None
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, self.feature_set),
            feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
        )
        self.lld_names = list(self._smile.feature_names)
        self.width = len(self.lld_names) * len(self.stats)
        self.timeline = (
            f"opensmile {self.feature_set} LLDs (10 ms hop), {'/'.join(self.stats)} over the "
            f"{self.window:g} s ending at each frame"
        )

    def weights(self) -> tuple[str, str]:
        return f"opensmile=={importlib.metadata.version('opensmile')} {self.feature_set} (no weights)", "none"

    def embed(self, wav, sample_rate, frame_times):
        wav = self._to_16k(wav, sample_rate)
        if len(wav) < SAMPLE_RATE // 10:  # opensmile returns no LLD frame for under ~60 ms
            lld, ends = np.zeros((0, len(self.lld_names))), np.zeros(0)
        else:
            df = self._smile.process_signal(wav, SAMPLE_RATE)
            lld = df.to_numpy(dtype=np.float64)
            ends = df.index.get_level_values("end").total_seconds().to_numpy()
        return window_pool(lld, ends, frame_times, window=self.window, stats=self.stats)


@register
class EGeMAPS(_OpenSmile):
    """eGeMAPSv02 low-level descriptors (Eyben et al. 2016): the affective-computing standard set."""

    name = "egemaps"
    feature_set = "eGeMAPSv02"


@register
class ComParE(_OpenSmile):
    """ComParE_2016 low-level descriptors (the Interspeech ComParE challenge set)."""

    name = "compare"
    feature_set = "ComParE_2016"
