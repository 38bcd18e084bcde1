"""``vggish``: VGGish 128-d embeddings (:mod:`.nets.vggish`) of 0.96 s examples, from a local state dict the
user downloaded (``features.audio.backbones.vggish.weights``).
"""

from __future__ import annotations

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio
from emofusion.features.backbones._registry import register
from emofusion.features.backbones.nets.vggish import vggish_mel_matrix, vggish_network
from emofusion.features.timeline import hold_latest


@register
class VGGish(WindowedAudio):
    """VGGish 128-d embedding (before its PCA/quantisation post-processor) of the 0.96 s example ending every
    ``hop`` s (default 0.25); each frame holds the latest. Weights: a local state dict ``weights`` in
    harritaylor/torchvggish's layout (its ``vggish-10086976.pth``). Front end as the TensorFlow reference: 25 ms
    periodic-Hann frames every 10 ms without padding, |rfft| at 512 points, 64 HTK mel bands 125-7500 Hz,
    log(mel + 0.01), 96-frame examples."""

    name = "vggish"
    licence = "user weights (VGGish: Apache-2.0, Google/AudioSet)"
    offline = False
    packages = ("torchaudio",)
    amp = True
    width = 128

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        import torch

        self.path = self.weight_path("weights")
        self.hop = self._positive("hop", 0.25)
        self.native_rate = 1.0 / self.hop
        self.net = vggish_network()
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            self.net.load_state_dict(state)
        except Exception as e:  # unpickling errors, key or shape mismatches: the file is the cause
            raise ConfigError(
                f"{self.key('weights')}: {self.path} is not a VGGish state dict in torchvggish's "
                f"layout ({type(e).__name__}: {str(e)[:300]})"
            ) from None
        self.net.to(self.device).eval()
        self._mel = torch.from_numpy(vggish_mel_matrix()).to(self.device)
        self._window_fn = torch.hann_window(400, periodic=True, device=self.device)
        self.batch = self._int("batch_examples", 128)
        self.timeline = f"VGGish embedding of the 0.96 s ending every {self.hop:g} s; each frame holds the latest"

    def weights(self):
        return f"local file {self.path}", self._file_sha([self.path])

    def embed(self, wav, sample_rate, frame_times):
        import torch

        wav = self._to_16k(wav, sample_rate)
        example = 15360 + 240  # 96 frames of 400 samples at a 160 hop
        if len(wav) < example:
            wav = np.pad(wav, (0, example - len(wav)))  # zeros after the audio keep its times
        with torch.no_grad():
            x = torch.from_numpy(wav).to(self.device)
            frames = x.unfold(0, 400, 160) * self._window_fn  # (T, 400)
            spec = torch.fft.rfft(frames, n=512).abs()  # (T, 257)
            logmel = torch.log(spec @ self._mel + 0.01)  # (T, 64)
            n_frames = len(logmel)
            hop_frames = max(1, round(self.hop * 100))
            last = np.arange(95, n_frames, hop_frames)  # index of each example's last spectrogram frame
            idx = torch.from_numpy(last[:, None] - 95 + np.arange(96)[None, :]).to(self.device)  # (K, 96)
            out = []
            for b in range(0, len(idx), self.batch):
                out.append(self.net(logmel[idx[b : b + self.batch]][:, None]).float().cpu())
            embeds = torch.cat(out).numpy()
        ends = (last * 160 + 400) / SAMPLE_RATE
        return hold_latest(embeds, ends, frame_times)
