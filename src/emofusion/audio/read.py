"""Reading audio: an audio-stage output with its sidecar (:func:`read_audio`), or any audio file
(:func:`load_audio`); the sidecar's schema (:data:`SCHEMA`, layout in :mod:`emofusion.audio.stage`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.audio.decode import check_file, decode_audio
from emofusion.errors import InputError
from emofusion.log import logger

SCHEMA = "emofusion.audio/1"


def sidecar_path(wav: str | Path) -> Path:
    """The JSON metadata file written beside an audio output (``X.wav`` -> ``X.json``)."""
    return Path(wav).with_suffix(".json")


def read_audio_metadata(wav: str | Path) -> dict[str, Any]:
    """The sidecar of an audio output (raises InputError naming the file when it is missing or unreadable)."""
    side = sidecar_path(wav)
    if not side.is_file():
        raise InputError(f"{side} (the metadata of {wav}) does not exist; rerun `emofusion audio` for this video")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{side} is not valid JSON ({e}); rerun `emofusion audio` for this video") from None
    if meta.get("schema") != SCHEMA:
        raise InputError(
            f"{side} is not an emofusion audio sidecar (schema {meta.get('schema')!r}, expected {SCHEMA!r})"
        )
    return meta


def read_audio(wav: str | Path, *, with_metadata: bool = True) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(float32 mono samples, sample rate, sidecar metadata) of an audio output; metadata {} if not asked."""
    import soundfile as sf

    wav = Path(wav)
    check_file(wav, "audio")
    try:
        data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(f"audio {wav} cannot be read ({e}); rerun `emofusion audio` for this video") from None
    return data.mean(axis=1), int(rate), read_audio_metadata(wav) if with_metadata else {}


def load_audio(path: str | Path, *, sample_rate: int = 16000) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(float32 mono samples, sample rate, metadata) of an audio-stage output or of any other audio file.

    With a sidecar beside it (``X.json``: an audio-stage output) this is :func:`read_audio`: the WAV as written,
    on the frame timeline, its valid span from the sidecar. Without one (a user's own recording), the file is
    decoded and resampled to ``sample_rate`` by :func:`decode_audio`, the whole track valid."""
    if sidecar_path(path).is_file():
        return read_audio(path)
    samples, meta = decode_audio(path, sample_rate=sample_rate)
    logger.info(
        "%s has no sidecar (not an audio-stage output): decoded at %d Hz, the whole %.2f s valid",
        path,
        sample_rate,
        meta["duration_seconds"],
    )
    return samples, sample_rate, meta
