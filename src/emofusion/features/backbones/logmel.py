"""``logmel``: torchaudio log-mel spectrogram (64 bands, 25 ms / 10 ms), mean and std over the window. No
weights.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio
from emofusion.features.backbones._registry import register
from emofusion.features.timeline import window_pool


@register
class LogMel(WindowedAudio):
    """torchaudio log-mel spectrogram (25 ms Hann window, 10 ms hop), pooled over the window."""

    name = "logmel"
    licence = "BSD-2-Clause (torchaudio); no weights"
    offline = True
    packages = ("torchaudio",)
    native_rate = 100.0
    default_stats = ("mean", "std")

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.n_mels = self._int("n_mels", 64)
        if self.n_mels < 1:
            raise ConfigError(f"{self.key('n_mels')} must be at least 1")
        self.width = self.n_mels * len(self.stats)
        self.timeline = (
            f"log-mel ({self.n_mels} bands, 10 ms hop), {'/'.join(self.stats)} over the "
            f"{self.window:g} s ending at each frame"
        )
        import torchaudio

        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=self.n_mels, center=False
        ).to(self.device)

    def weights(self):
        return f"torchaudio=={importlib.metadata.version('torchaudio')} MelSpectrogram (no weights)", "none"

    def embed(self, wav, sample_rate, frame_times):
        import torch

        wav = self._to_16k(wav, sample_rate)
        if len(wav) < 400:
            return window_pool(
                np.zeros((0, self.n_mels)), np.zeros(0), frame_times, window=self.window, stats=self.stats
            )
        with torch.no_grad():
            mel = self._mel(torch.from_numpy(wav).to(self.device))  # (n_mels, T)
            logmel = torch.log(mel + 1e-6).T.double().cpu().numpy()
        ends = (np.arange(len(logmel)) * 160 + 400) / SAMPLE_RATE
        return window_pool(logmel, ends, frame_times, window=self.window, stats=self.stats)
