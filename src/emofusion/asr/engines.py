"""ASR engines behind one interface: audio samples in, engine-neutral segments with word timestamps out.

Two engines, chosen by ``asr.engine``, write the same transcript:

* ``openai-whisper``: the reference implementation (PyTorch). Word times from cross-attention DTW.
* ``faster-whisper``: the same models on CTranslate2. With ``asr.batch_size > 1`` it runs
  ``BatchedInferencePipeline``: silero VAD (shipped with faster-whisper) cuts the audio at speech regions into
  windows of up to 30 s that are decoded ``batch_size`` at a time, several times faster than sequential decoding
  (and no decoding of silence). ``asr.batch_size: 1`` decodes one 30-s window after another, like
  openai-whisper: over the speech regions only with ``asr.vad`` (the default), over all the audio it is given
  with ``asr.vad: false``.

Both decode with ``temperature=0.0`` (no sampling fallback): the same audio and model give the same words.
With ``asr.vad`` (default) both decode only the speech that silero VAD finds, so silence and music never turn
into invented words (Whisper's "You" / "Thank you." on silent windows); audio without speech gives no segments.
An engine is a small class registered by name; heavy imports happen when one is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.asr.convert import (
    ctranslate2_to_whisper,
    load_whisper_checkpoint,
    model_from_checkpoint_dict,
    read_whisper_checkpoint,
)
from emofusion.asr.models import ModelSource, converted_name, resolve_model
from emofusion.config import over_defaults
from emofusion.device import resolve_device
from emofusion.errors import ConfigError, InputError
from emofusion.log import logger, progress
from emofusion.provenance import file_sha256

ENGINES: dict[str, Callable[..., Engine]] = {}


@dataclass(frozen=True)
class AsrOptions:
    """The ``asr:`` config section. No defaults here: the schema (src/emofusion/schemas/config.schema.yaml) holds
    each key's meaning and default, and :meth:`from_config` fills them."""

    engine: str
    model: str
    language: str | None
    beam_size: int
    batch_size: int
    device: str
    compute_type: str
    vad: bool
    condition_on_previous_text: bool

    @classmethod
    def from_config(cls, section: dict[str, Any] | None = None) -> AsrOptions:
        """Options from ``config["asr"]`` as ``load_config`` validated it, or any part of it: the keys not given
        take the schema's defaults."""
        return cls(**over_defaults("asr", section, (f.name for f in fields(cls))))


def speech_regions(audio: np.ndarray, *, sample_rate: int = 16000) -> list[tuple[float, float]]:
    """(start, end) seconds of speech in float32 mono ``audio`` found by silero VAD (shipped with faster-whisper,
    its defaults for Whisper); the VAD the engines decode by, and predict's ``has_speech``. Silero reads 16 kHz."""
    from emofusion.packages import import_module

    # faster-whisper comes with the `text` extra: a model without text still needs it for has_speech
    vad = import_module("faster_whisper.vad", "faster-whisper", key="has_speech (Silero VAD)")
    stamps = vad.get_speech_timestamps(audio, vad.VadOptions(), sampling_rate=sample_rate)
    return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in stamps]


def register(name: str):
    """Class decorator adding an engine to :data:`ENGINES` (duplicate names are an error)."""

    def deco(cls):
        if name in ENGINES:
            raise ValueError(f"ASR engine {name!r} is registered twice")
        ENGINES[name] = cls
        cls.name = name
        return cls

    return deco


class Engine:
    """Base class: ``transcribe(audio)`` with ``audio`` float32 mono at 16 kHz -> segments (see
    :func:`emofusion.asr.transcript.transcript_frame` for their fields); ``info`` describes the model used."""

    name = "base"
    sample_rate = 16000

    def __init__(self, source: ModelSource, options: AsrOptions, *, threads: int | None = None):
        self.source, self.options, self.threads = source, options, threads
        self.info: dict[str, Any] = {}

    def transcribe(self, audio: np.ndarray) -> list[dict[str, Any]]:
        raise NotImplementedError

    def speech_regions(self, audio: np.ndarray) -> list[tuple[float, float]]:
        return speech_regions(audio, sample_rate=self.sample_rate)

    def _check_language(self, multilingual: bool, known: Collection[str]) -> None:
        lang = self.options.language
        if not multilingual and lang not in (None, "en"):
            raise ConfigError(
                f"asr.language: {self.options.model} is an English-only model but asr.language is "
                f"{lang!r}; set asr.language: en, or a multilingual asr.model"
            )
        if lang is not None and lang not in known:
            raise ConfigError(
                f"asr.language: unknown language {lang!r}; use a Whisper language code such as en, de, "
                "fr, or null to detect it"
            )


@register("openai-whisper")
class OpenAIWhisper(Engine):
    """openai-whisper's ``transcribe`` with word timestamps. CTranslate2 sources (the bundled model) load from the
    converted checkpoint when one is given (the workflow's cached ``convert_whisper`` output), else are converted
    in memory."""

    def __init__(
        self,
        source: ModelSource,
        options: AsrOptions,
        *,
        threads: int | None = None,
        checkpoint: str | Path | None = None,
    ):
        super().__init__(source, options, threads=threads)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = str(resolve_device(options.device, key="asr.device"))
        if options.compute_type not in ("auto", "float32", "float16"):
            raise ConfigError(
                f"asr.compute_type: {options.compute_type} is for faster-whisper only; openai-whisper "
                "takes auto, float32 or float16"
            )
        self.fp16 = self.device == "cuda" and options.compute_type in ("auto", "float16")
        if options.compute_type == "float16" and self.device != "cuda":
            logger.warning("asr.compute_type float16 needs CUDA; openai-whisper runs float32 on the CPU")
        info: dict[str, Any] = {
            "name": source.name,
            "engine": self.name,
            "origin": source.origin,
            "device": self.device,
            "compute_type": "float16" if self.fp16 else "float32",
        }
        if source.format == "openai":
            sha = file_sha256(source.path)
            if source.expected_sha256 and sha != source.expected_sha256:
                raise InputError(
                    f"{source.path}: sha256 {sha} differs from openai's published "
                    f"{source.expected_sha256}; the file is corrupt or partial, download it again"
                )
            self.model = load_whisper_checkpoint(source.path, device=self.device)
            info.update(path=str(source.path), sha256=sha)
        else:
            source_sha = file_sha256(source.weights_file)
            converted = {"path": str(source.weights_file), "sha256": source_sha}
            if checkpoint is not None:
                checkpoint = Path(checkpoint)
                if not checkpoint.is_file():
                    raise InputError(
                        f"converted checkpoint {checkpoint} does not exist; run `emofusion "
                        f"convert-whisper --model {source.name} --out {checkpoint}`"
                    )
                ckpt = read_whisper_checkpoint(checkpoint)  # read once: checked, then built
                recorded = (ckpt.get("emofusion") or {}).get("source_sha256")
                if recorded != source_sha:
                    raise InputError(
                        f"converted checkpoint {checkpoint} was made from another model file "
                        f"(sha256 {recorded}, {source.weights_file} has {source_sha}); rerun "
                        "`emofusion convert-whisper` (snakemake does when asr.model changes)"
                    )
                self.model = model_from_checkpoint_dict(ckpt, device=self.device)
                info.update(path=str(checkpoint), sha256=file_sha256(checkpoint))
            else:
                logger.info(
                    "converting %s (CTranslate2) to openai-whisper in memory; the workflow caches this "
                    "as results/asr/%s.pt",
                    source.path,
                    converted_name(source.name),
                )
                self.model = model_from_checkpoint_dict(ctranslate2_to_whisper(source.path), device=self.device)
                info.update(path=str(source.weights_file), sha256=source_sha)
            info["converted_from"] = converted
        self.model.eval()
        from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

        self._check_language(self.model.is_multilingual, {*LANGUAGES, *TO_LANGUAGE_CODE})
        self.info = info

    def transcribe(self, audio: np.ndarray) -> list[dict[str, Any]]:
        import torch
        import whisper

        o = self.options
        clips: str | list[float] = "0"  # the whole file
        if o.vad:
            regions = self.speech_regions(audio)
            if not regions:
                return []
            # whisper's flat [start, end, ...] in seconds. An end at or past the last mel frame makes whisper loop
            # forever (openai/whisper#2005): stop one 10-ms frame short of it.
            last = (audio.size // 160 - 1) / 100
            clips = [t for a, b in regions if min(b, last) - a >= 0.02 for t in (a, min(b, last))]
            if not clips:
                return []
        with torch.inference_mode():
            result = whisper.transcribe(
                self.model,
                audio,
                verbose=None,
                temperature=0.0,
                word_timestamps=True,
                language=o.language,
                beam_size=o.beam_size if o.beam_size > 1 else None,
                fp16=self.fp16,
                clip_timestamps=clips,
                condition_on_previous_text=o.condition_on_previous_text,
            )
        return [
            {
                "start": s["start"],
                "end": s["end"],
                "text": s["text"],
                "avg_logprob": s["avg_logprob"],
                "no_speech_prob": s["no_speech_prob"],
                "compression_ratio": s["compression_ratio"],
                "words": [
                    {"word": w["word"], "start": w["start"], "end": w["end"], "probability": w["probability"]}
                    for w in s.get("words", [])
                ],
            }
            for s in result["segments"]
        ]


@register("faster-whisper")
class FasterWhisper(Engine):
    """faster-whisper (CTranslate2): batched with VAD for ``batch_size > 1``, sequential for 1."""

    def __init__(
        self,
        source: ModelSource,
        options: AsrOptions,
        *,
        threads: int | None = None,
        checkpoint: str | Path | None = None,
    ):
        super().__init__(source, options, threads=threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import ctranslate2
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        if source.format != "ctranslate2":
            raise ConfigError(
                f"asr.model: {source.path} is an openai-whisper checkpoint; asr.engine faster-whisper "
                "needs a CTranslate2 model directory"
            )
        if checkpoint is not None:
            logger.info("ignoring --whisper-checkpoint %s: faster-whisper reads %s directly", checkpoint, source.path)
        cuda = ctranslate2.get_cuda_device_count() > 0
        device = options.device
        if device == "auto":
            device = "cuda" if cuda else "cpu"
        elif device == "cuda" and not cuda:
            raise ConfigError(
                "asr.device: cuda was requested but CTranslate2 sees no CUDA device; set asr.device: auto or cpu"
            )
        compute_type = options.compute_type
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        try:
            self.model = WhisperModel(
                str(source.path),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads or 0,
                num_workers=1,
                local_files_only=True,
            )
        except ValueError as e:  # unsupported compute type on this device
            raise ConfigError(f"asr.compute_type: {e}") from None
        except RuntimeError as e:
            raise InputError(f"{source.path}: faster-whisper cannot load this model ({e})") from None
        self.pipeline = BatchedInferencePipeline(self.model) if options.batch_size > 1 else None
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        self._check_language(self.model.model.is_multilingual, _LANGUAGE_CODES)
        self.info = {
            "name": source.name,
            "engine": self.name,
            "origin": source.origin,
            "device": device,
            "compute_type": compute_type,
            "path": str(source.path),
            "sha256": file_sha256(source.weights_file),
        }

    def transcribe(self, audio: np.ndarray) -> list[dict[str, Any]]:
        o = self.options
        common: dict[str, Any] = {
            "language": o.language,
            "beam_size": o.beam_size,
            "temperature": 0.0,
            "word_timestamps": True,
            "vad_filter": o.vad,
        }
        if self.pipeline is not None:
            if not o.vad:  # fixed 30-s windows instead of speech regions
                duration = audio.size / self.sample_rate
                common["clip_timestamps"] = [
                    {"start": t, "end": min(t + 30.0, duration)} for t in np.arange(0.0, duration, 30.0).tolist()
                ]
            segments, _ = self.pipeline.transcribe(audio, batch_size=o.batch_size, **common)
        else:
            segments, _ = self.model.transcribe(
                audio, condition_on_previous_text=o.condition_on_previous_text, **common
            )
        segments = _reported(segments, audio.size / self.sample_rate)
        return [
            {
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "avg_logprob": s.avg_logprob,
                "no_speech_prob": s.no_speech_prob,
                "compression_ratio": s.compression_ratio,
                "words": [
                    {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                    for w in s.words or []
                ],
            }
            for s in segments
        ]


def _reported(segments, duration: float):
    """faster-whisper's lazy segments, with progress in seconds of audio transcribed (decoding happens as they
    are drawn; a long video is minutes of it)."""
    bar = progress(total=round(duration, 1), desc="transcribe", unit="s")
    done = 0.0
    for segment in segments:
        step = min(float(segment.end), duration) - done
        if step > 0:
            bar.update(round(step, 1))
            done += step
        yield segment
    bar.close()


def load_engine(options: AsrOptions, *, threads: int | None = None, checkpoint: str | Path | None = None) -> Engine:
    """Resolve ``asr.model`` for ``asr.engine`` and load it (offline)."""
    if options.engine not in ENGINES:
        raise ConfigError(f"asr.engine must be one of {', '.join(sorted(ENGINES))}, got {options.engine!r}")
    source = resolve_model(options.model, options.engine)
    logger.info("loading %s model %s from %s", options.engine, options.model, source.path)
    return ENGINES[options.engine](source, options, threads=threads, checkpoint=checkpoint)
