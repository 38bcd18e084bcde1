"""``resemblyzer``: GE2E speaker embedding (resemblyzer's ``pretrained.pt`` in :mod:`.nets.ge2e`), 256-d per
1.6 s window. Offline: the weights ship in the wheel, installed ``--no-deps``.
"""

from __future__ import annotations

import numpy as np

from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio, dist_file
from emofusion.features.backbones._registry import register
from emofusion.features.backbones.nets.ge2e import ge2e_network
from emofusion.features.timeline import hold_latest


@register
class Resemblyzer(WindowedAudio):
    """GE2E speaker embedding of the ``window`` s (default 1.6 s, resemblyzer's partial utterance) ending every
    ``hop`` s; each frame holds the latest. Front end as resemblyzer: volume normalised to -30 dBFS (raised
    only), 40-band power mel (25 ms / 10 ms), computed by torchaudio with librosa's (Slaney) filterbank."""

    name = "resemblyzer"
    licence = "Apache-2.0 (resemblyzer==0.1.4 wheel, pretrained.pt GE2E weights)"
    offline = True
    packages = ("Resemblyzer",)
    width = 256
    default_window = 1.6

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        import torch
        import torchaudio

        self.hop = self._positive("hop", 0.25)
        self.native_rate = 1.0 / self.hop
        self.path, self.package = dist_file("resemblyzer", "resemblyzer/pretrained.pt", self.key("weights"))
        state = torch.load(self.path, map_location="cpu", weights_only=True)["model_state"]
        self.net = ge2e_network()
        self.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        self.net.to(self.device).eval()
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=400,
            hop_length=160,
            n_mels=40,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            center=True,
            pad_mode="constant",
        ).to(self.device)
        self.batch = self._int("batch_windows", 256)
        self.timeline = (
            f"GE2E embedding of the {self.window:g} s ending every {self.hop:g} s; each frame holds the latest one"
        )

    def weights(self):
        return f"{self.package}: resemblyzer/pretrained.pt", self._file_sha([self.path])

    def embed(self, wav, sample_rate, frame_times):
        import torch

        wav = self._to_16k(wav, sample_rate).astype(np.float64)
        if len(wav) == 0:
            return np.zeros((len(frame_times), self.width), dtype=np.float32)
        rms = np.sqrt(np.mean(wav**2))
        if rms > 0:
            gain_db = -30.0 - 20 * np.log10(rms)
            wav = wav * 10 ** (max(gain_db, 0.0) / 20)
        with torch.no_grad():
            mel = self._mel(torch.from_numpy(wav.astype(np.float32)).to(self.device)).T  # (T, 40), frame j at j*10 ms
            n_mel = len(mel)
            span = round(self.window * 100)
            ends = np.arange(self.hop, len(wav) / SAMPLE_RATE + 1e-9, self.hop)
            if len(ends) == 0:
                ends = np.array([len(wav) / SAMPLE_RATE])
            # the last mel frame whose 25 ms (centred) window has ended by then: causal, like every audio row
            last = np.clip(np.floor(ends * 100 - 1.25 + 1e-6).astype(np.int64), 0, n_mel - 1)
            first = np.maximum(last - span + 1, 0)
            lengths = last - first + 1
            idx = first[:, None] + np.arange(span)[None, :]  # (K, span); past `lengths` is padding
            idx = np.minimum(idx, last[:, None])
            out = []
            for b in range(0, len(ends), self.batch):
                sel = torch.from_numpy(idx[b : b + self.batch]).to(self.device)
                out.append(self.net(mel[sel], torch.from_numpy(lengths[b : b + self.batch])).cpu())
            embeds = torch.cat(out).numpy()
        return hold_latest(embeds, ends, frame_times)
