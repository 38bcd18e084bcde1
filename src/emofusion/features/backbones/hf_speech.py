"""``wav2vec2``, ``hubert``, ``wavlm``: a transformers speech encoder from a local directory (``model``), the
hidden states of ``layer``, mean over the window.
"""

from __future__ import annotations

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio
from emofusion.features.backbones._registry import register
from emofusion.features.timeline import window_pool


@register
class HFSpeech(WindowedAudio):
    """A transformers speech encoder (wav2vec2, HuBERT, WavLM, ...) from a local directory ``model``: hidden
    states of ``layer`` (default -1: the last; 0 is the CNN feature projection), mean over the window.

    Audio goes in ``chunk`` s pieces (default 20 s), the full ones batched; each piece is normalised to zero mean
    and unit variance when the model's feature extractor says so (``preprocessor_config.json``, or the
    ``normalize`` option)."""

    name = "wav2vec2"
    licence = "user weights (see the model's card); transformers code Apache-2.0"
    offline = False
    packages = ("transformers",)
    amp = True

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        import json
        import os

        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.path = self.weight_path("model")
        if not self.path.is_dir() or not (self.path / "config.json").is_file():
            raise ConfigError(
                f"{self.key('model')} must be a transformers model directory (with config.json), got {self.path}"
            )
        import transformers
        from transformers import AutoModel

        transformers.utils.logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.key('model')}: {self.path} does not load as a transformers model ({e})") from None
        self.model.to(self.device).eval()
        cfg = self.model.config
        n_layers = int(cfg.num_hidden_layers)
        self.layer = self._int("layer", -1)
        if not -n_layers - 1 <= self.layer <= n_layers:
            raise ConfigError(
                f"{self.key('layer')} must be in -{n_layers + 1}..{n_layers} (hidden states of "
                f"this {n_layers}-layer model), got {self.layer}"
            )
        normalize = self.option("normalize")
        if normalize is None:
            pre = self.path / "preprocessor_config.json"
            normalize = json.loads(pre.read_text()).get("do_normalize", True) if pre.is_file() else True
        self.normalize = bool(normalize)
        self.chunk = round(self._positive("chunk", 20.0) * SAMPLE_RATE)
        self.batch = self._int("batch_chunks", 4)
        self.width = int(cfg.hidden_size)
        # receptive field and stride of the CNN front end, for each output's end time
        stride, field = 1, 1
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride, strict=True):
            field += (k - 1) * stride
            stride *= s
        self._stride, self._field = stride, field
        self.native_rate = SAMPLE_RATE / stride
        self.timeline = (
            f"{cfg.model_type} hidden states (layer {self.layer}, {self.native_rate:g} Hz; each sees its "
            f"whole chunk), {'/'.join(self.stats)} over the {self.window:g} s ending at each frame"
        )
        self._torch = torch

    def weights(self):
        return f"local directory {self.path}", self._file_sha([self.path])

    def _run(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.stack(pieces)).to(self.device)  # (B, S)
        if self.normalize:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)
        with torch.no_grad():
            out = self.model(x, output_hidden_states=True)
        return list(out.hidden_states[self.layer].float().cpu().numpy())

    def embed(self, wav, sample_rate, frame_times):
        wav = self._to_16k(wav, sample_rate)
        if len(wav) < self._field:
            wav = np.pad(wav, (0, self._field - len(wav)))
        n_full = len(wav) // self.chunk
        pieces = [wav[i * self.chunk : (i + 1) * self.chunk] for i in range(n_full)]
        states: list[np.ndarray] = []
        for b in range(0, n_full, self.batch):
            states.extend(self._run(pieces[b : b + self.batch]))
        offsets = [i * self.chunk for i in range(n_full)]
        rest = wav[n_full * self.chunk :]
        if len(rest) >= self._field:
            states.extend(self._run([rest]))
            offsets.append(n_full * self.chunk)
        ends = (
            np.concatenate(
                [off + np.arange(len(s)) * self._stride + self._field for off, s in zip(offsets, states, strict=True)]
            )
            / SAMPLE_RATE
        )
        values = np.concatenate(states).astype(np.float64)
        return window_pool(values, ends, frame_times, window=self.window, stats=self.stats)


@register
class HuBERT(HFSpeech):
    """HuBERT through the same code as wav2vec2 (its own name, so its store and config key are its own)."""

    name = "hubert"


@register
class WavLM(HFSpeech):
    """WavLM through the same code as wav2vec2."""

    name = "wavlm"
