"""Audio stage: a video's audio track as mono PCM on the video's frame timeline.

Output, per video: ``results/audio/<video>.wav`` (mono, 16-bit PCM, ``audio.sample_rate``) and a JSON sidecar
``results/audio/<video>.json`` (:data:`SCHEMA`) that says how the samples relate to the video:

* **Time origin.** Sample 0 is the presentation time of the video's first frame, so sample ``k`` is at
  ``k / sample_rate`` seconds on the frame timeline (frame ``i`` at its presentation time from the first frame,
  :func:`emofusion.features.timeline.frame_times`). Containers often start the audio stream later or earlier
  than the video stream (``start_time`` differs); that offset is measured from the decoded timestamps, the start
  is padded with zeros (audio starts later) or trimmed (audio starts earlier), and ``offset_seconds`` /
  ``offset_samples`` record it (positive = the audio started after the first frame).
* **Length.** The file spans exactly the video's duration (``round(video_duration_seconds * sample_rate)``
  samples); audio past the last frame is dropped, a short track is padded with zeros.
* **Timestamp jumps.** Each decoded frame is placed at its own timestamp: a gap in the stream (timestamps jump
  forward) is filled with zeros and an overlap (they jump back) drops the repeated samples, so the audio after a
  jump stays at its true time; ``gaps`` / ``gap_seconds`` and ``overlaps`` / ``overlap_seconds`` count them.
* **Validity.** ``[valid_start_sample, valid_end_sample)`` holds decoded audio (and the zeros of any gaps inside
  it); outside it is padding, which a feature stage marks invalid. A video without an audio stream fails by
  default; with ``audio.missing_audio: silence`` it gives zeros of the video's duration, ``has_audio: false`` and
  an empty valid span (every frame invalid downstream).

Why WAV + sidecar: every audio tool (whisper, opensmile, torchaudio, soundfile, a media player) reads the WAV as
is, and the JSON is readable by anyone; each is written to a temporary file and renamed into place once the
whole track has been decoded. Decoding is frame by frame with PyAV (resampled by FFmpeg, channels averaged
here) and the WAV is written in blocks of ``chunk_seconds``, so memory does not grow with the video's length.

Consumers read audio with :func:`emofusion.audio.read.load_audio`: an audio-stage output with its sidecar, or any
other audio file (a user's own recording, no sidecar) decoded and resampled by the same code
(:func:`emofusion.audio.decode.decode_audio`), all of it valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emofusion.audio.decode import CHUNK_SECONDS, audio_stream, check_file, write_track, write_zeros
from emofusion.audio.read import SCHEMA, sidecar_path
from emofusion.errors import ConfigError, InputError
from emofusion.io import atomic_path, write_json
from emofusion.log import logger
from emofusion.video import timeline as video_timeline

MISSING_AUDIO = ("error", "silence")


def extract_audio(
    video: str | Path,
    out: str | Path,
    *,
    audio: str | Path | None = None,
    sample_rate: int = 16000,
    missing_audio: str = "error",
    chunk_seconds: float = CHUNK_SECONDS,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out`` (mono 16-bit WAV on the frame timeline of ``video``) and its JSON sidecar; return the sidecar.

    ``audio`` is the file holding the audio track (default: ``video`` itself). A separate audio file's time 0 is
    taken to be the video's first frame. ``chunk_seconds`` is the size of the blocks written to the WAV (it bounds
    memory; the samples do not depend on it). ``metadata`` (e.g. provenance) is stored in the sidecar as is.
    Raises :class:`InputError` naming the file for a missing, corrupt or audio-less input (unless
    ``missing_audio == "silence"``); on failure nothing half-written is left (a previous output stays as it was).
    """
    import soundfile as sf

    if missing_audio not in MISSING_AUDIO:
        raise ConfigError(f"audio.missing_audio must be one of {', '.join(MISSING_AUDIO)}, got {missing_audio!r}")
    if sample_rate <= 0:
        raise ConfigError(f"audio.sample_rate must be positive, got {sample_rate}")
    video = Path(video)
    source = Path(audio) if audio is not None else video
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise InputError(f"--out {out}: the audio output must be a .wav file")
    timeline = video_timeline(video)
    if source != video:
        check_file(source, "audio")
    stream = audio_stream(source)
    n_out = round(timeline.duration_seconds * sample_rate)
    info: dict[str, Any] = {
        "schema": SCHEMA,
        "video": str(video),
        "audio_source": str(source),
        "sample_rate": sample_rate,
        "num_samples": n_out,
        "duration_seconds": n_out / sample_rate,
        "video_start_seconds": timeline.start_seconds,
        "video_duration_seconds": timeline.duration_seconds,
        "frames": timeline.frames,
        "fps": timeline.fps,
        "time_origin": "first video frame",
        "source_stream": stream,
    }
    if stream is None and missing_audio == "error":
        raise InputError(
            f"{source} has no audio stream; set audio.missing_audio: silence to use silent audio "
            "(every frame's audio marked invalid) or fix the corpus entry"
        )

    with atomic_path(out) as tmp_wav:
        with sf.SoundFile(tmp_wav, mode="w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV") as wav:
            decoded = None
            if stream is not None:
                decoded = write_track(
                    source,
                    wav,
                    stream_index=stream["stream_index"],
                    reference=timeline.start_seconds if source == video else 0.0,
                    sample_rate=sample_rate,
                    n_out=n_out,
                    chunk_seconds=chunk_seconds,
                )
            if decoded is None:
                if missing_audio == "error":
                    raise InputError(
                        f"{source}: its audio stream holds no decodable samples; set "
                        "audio.missing_audio: silence to use silent audio, or fix the file"
                    )
                logger.warning(
                    "%s: no audio; writing %.2f s of silence (has_audio: false)", source, n_out / sample_rate
                )
                write_zeros(wav, n_out)
                decoded = {
                    "has_audio": False,
                    "audio_start_seconds": None,
                    "offset_seconds": None,
                    "offset_samples": 0,
                    "valid_start_sample": 0,
                    "valid_end_sample": 0,
                    "clipped_samples": 0,
                    "gaps": 0,
                    "gap_seconds": 0.0,
                    "overlaps": 0,
                    "overlap_seconds": 0.0,
                }
            if wav.frames != n_out:  # pragma: no cover - guarded by write_track's arithmetic
                raise RuntimeError(f"wrote {wav.frames} samples, expected {n_out}")
    info.update(decoded)
    if metadata:
        info["provenance"] = metadata
    write_json(sidecar_path(out), info)  # after the WAV is in place: a sidecar always describes a complete WAV
    offset = info["offset_seconds"]
    logger.info(
        "%s: %d samples at %d Hz (%.2f s), %s, valid samples [%d, %d)",
        out,
        n_out,
        sample_rate,
        n_out / sample_rate,
        "no audio" if offset is None else f"audio offset {offset:g} s",
        info["valid_start_sample"],
        info["valid_end_sample"],
    )
    return info
