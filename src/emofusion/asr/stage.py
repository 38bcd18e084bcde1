"""Transcription stage entry (what ``emofusion transcribe`` and ``emofusion convert-whisper`` call).

* :func:`transcribe_file`: an audio output of the audio stage (``results/audio/<video>.wav`` + its sidecar), or
  any other audio file, into ``results/transcripts/<video>.parquet`` (layout in :mod:`emofusion.asr.transcript`).
* :func:`convert_model`: a CTranslate2 Whisper model (the bundled tiny.en) into an openai-whisper checkpoint,
  cached by the workflow as ``results/asr/whisper-tiny.en.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emofusion.asr.convert import ctranslate2_to_whisper
from emofusion.asr.engines import AsrOptions, load_engine
from emofusion.asr.models import is_bundled, resolve_model
from emofusion.asr.transcript import SCHEMA, transcript_frame, write_transcript
from emofusion.audio.read import load_audio, sidecar_path
from emofusion.errors import ConfigError, InputError
from emofusion.io import atomic_path
from emofusion.log import logger
from emofusion.provenance import file_sha256, provenance


def transcribe_file(
    audio: str | Path,
    out: str | Path,
    asr: dict[str, Any],
    *,
    checkpoint: str | Path | None = None,
    threads: int | None = None,
    engine=None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Transcribe one audio file and write its transcript atomically; return the file's metadata.

    An audio-stage output (a sidecar beside it): only the decoded span ``[valid_start_sample, valid_end_sample)``
    of the sidecar is given to the engine (the zero padding around it would invite invented words); its times are
    shifted back onto the frame timeline. Any other audio file (no sidecar: a user's own recording, at any rate,
    in any format FFmpeg reads) is decoded and resampled to 16 kHz as the audio stage does, the whole of it valid,
    times from its first sample (:func:`emofusion.audio.read.load_audio`).

    ``asr`` is the validated ``asr:`` config section; ``checkpoint`` the converted openai-whisper checkpoint of a
    CTranslate2 model (else converted in memory); ``engine`` an already loaded engine to reuse across files;
    ``metadata`` extra provenance (merged into the file's metadata).
    """
    import time

    options = AsrOptions.from_config(asr)
    samples, rate, audio_meta = load_audio(audio, sample_rate=16000)
    duration = samples.size / rate if rate else 0.0
    if rate != 16000:
        raise InputError(
            f"audio {audio} is at {rate} Hz; Whisper needs 16000 Hz (set audio.sample_rate: 16000 "
            "and rerun the audio stage)"
        )
    has_audio = bool(audio_meta.get("has_audio", True))
    if engine is None:
        engine = load_engine(options, threads=threads, checkpoint=checkpoint) if has_audio else None
    t0 = time.perf_counter()
    if has_audio:
        # Only the decoded span: in the zero padding around it Whisper (without VAD) can invent words. The engine's
        # times are relative to the slice; shifted by lo they are back on the frame timeline.
        lo = max(int(audio_meta.get("valid_start_sample", 0)), 0)
        hi = min(int(audio_meta.get("valid_end_sample", samples.size)), samples.size)
        segments = _shift(engine.transcribe(samples[lo:hi]), lo / rate) if hi > lo else []
        model_info = engine.info
    else:
        logger.info("%s has no audio (has_audio: false): empty transcript", audio)
        segments = []
        source = resolve_model(options.model, options.engine)
        model_info = {
            "name": source.name,
            "engine": options.engine,
            "origin": source.origin,
            "path": str(source.path),
            "sha256": None,
            "note": "not loaded: the video has no audio",
        }
    wall = time.perf_counter() - t0
    df = transcript_frame(segments, duration=duration)
    n_words = int((df["kind"] == "word").sum())
    meta = provenance(
        config={"asr": asr},
        schema=SCHEMA,
        model=model_info,
        audio={
            "path": str(audio),
            "duration_seconds": duration,
            "sample_rate": rate,
            "has_audio": has_audio,
            "video": audio_meta.get("video"),
            "sidecar": audio_meta.get("sidecar", str(sidecar_path(audio))),
        },
        options={
            "temperature": 0.0,
            "word_timestamps": True,
            "language": options.language,
            "beam_size": options.beam_size,
            "batch_size": options.batch_size,
            "vad": options.vad,
        },
        counts={
            "segments": int((df["kind"] == "segment").sum()),
            "words": n_words,
            "clamped": int(df.attrs.get("clamped", 0)),
        },
        **(metadata or {}),
    )
    if meta["counts"]["clamped"]:
        logger.warning(
            "%s: %d word or segment times from %s lay outside the audio or out of order and were clipped",
            audio,
            meta["counts"]["clamped"],
            model_info.get("engine"),
        )
    write_transcript(out, df, meta)
    logger.info(
        "%s: %d words in %d segments from %.1f s of audio (%.1fx real time)",
        out,
        n_words,
        meta["counts"]["segments"],
        duration,
        duration / wall if wall > 0 else float("inf"),
    )
    return meta


def _shift(segments: list[dict[str, Any]], dt: float) -> list[dict[str, Any]]:
    """Engine segments with every segment and word time moved by ``dt`` seconds."""
    if not dt:
        return segments
    return [
        {
            **s,
            "start": s["start"] + dt,
            "end": s["end"] + dt,
            "words": [{**w, "start": w["start"] + dt, "end": w["end"] + dt} for w in s.get("words") or []],
        }
        for s in segments
    ]


def convert_model(model: str, out: str | Path) -> dict[str, Any]:
    """Convert a CTranslate2 Whisper model (``asr.model``: a bundled name or a model directory) into an
    openai-whisper checkpoint at ``out`` (atomically); return the record stored under its ``emofusion`` key."""
    import torch

    source = resolve_model(model, "faster-whisper") if is_bundled(model) or Path(model).is_dir() else None
    if source is None or source.format != "ctranslate2":
        raise ConfigError(
            f"asr.model: {model!r} is not a CTranslate2 Whisper model (the bundled tiny.en-bundled or "
            "a directory with model.bin); only those need converting"
        )
    ckpt = ctranslate2_to_whisper(source.path)
    record = provenance(
        name=source.name,
        origin=source.origin,
        source=str(source.weights_file),
        source_sha256=file_sha256(source.weights_file),
    )
    ckpt["emofusion"] = record
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    logger.info("converted %s (%s) into %s: dims %s", source.path, source.origin, out, ckpt["dims"])
    return record
