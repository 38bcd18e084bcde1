"""Audio stage: a video's audio track as mono PCM on the video's frame timeline.

Output, per video: ``results/audio/<video>.wav`` (mono, 16-bit PCM, ``audio.sample_rate``) and a JSON sidecar
``results/audio/<video>.json`` (:data:`SCHEMA`) that says how the samples relate to the video:

* **Time origin.** Sample 0 is the presentation time of the video's first frame, so sample ``k`` is at
  ``k / sample_rate`` seconds on the frame timeline (frame ``i`` at about ``i / fps``). Containers often start the
  audio stream later or earlier than the video stream (``start_time`` differs); that offset is measured from the
  decoded timestamps, the start is padded with zeros (audio starts later) or trimmed (audio starts earlier), and
  ``offset_seconds`` / ``offset_samples`` record it (positive = the audio started after the first frame).
* **Length.** The file spans exactly the video's duration (``round(video_duration_seconds * sample_rate)``
  samples); audio past the last frame is dropped, a short track is padded with zeros.
* **Validity.** ``[valid_start_sample, valid_end_sample)`` holds decoded audio; outside it is padding, which a
  feature stage marks invalid. A video without an audio stream fails by default; with
  ``audio.missing_audio: silence`` it gives zeros of the video's duration, ``has_audio: false`` and an empty valid
  span (every frame invalid downstream).

Why WAV + sidecar: every audio tool (whisper, opensmile, torchaudio, soundfile, a media player) reads the WAV as
is, and the JSON is readable by anyone; both are written atomically, together. Decoding streams through
torchcodec in bounded chunks (resampled by FFmpeg, channels averaged here), so memory does not grow with the
video's length.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import ConfigError, InputError
from emofusion.io import atomic_path
from emofusion.log import logger, progress

SCHEMA = "emofusion.audio/1"
MISSING_AUDIO = ("error", "silence")
CHUNK_SECONDS = 30.0


@dataclass(frozen=True)
class VideoTimeline:
    """The frame timeline of a video: first frame's time, duration, decoded frame count and mean rate."""

    start_seconds: float
    duration_seconds: float
    frames: int
    fps: float


def sidecar_path(wav: str | Path) -> Path:
    """The JSON metadata file written beside an audio output (``X.wav`` -> ``X.json``)."""
    return Path(wav).with_suffix(".json")


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty")


def probe_timeline(video: str | Path) -> VideoTimeline:
    """The video's frame timeline from a scan of its packets (exact frame count, no pixel decoding)."""
    from torchcodec.decoders import VideoDecoder

    video = Path(video)
    _check_file(video, "video")
    try:
        meta = VideoDecoder(str(video), seek_mode="exact").metadata
    except Exception as e:  # torchcodec raises RuntimeError/ValueError with FFmpeg's message
        raise InputError(f"video {video} cannot be read as a video ({_short(e)}); "
                         f"check the file (ffprobe {video})") from None
    frames = int(meta.num_frames or 0)
    fps = float(meta.average_fps or 0.0)
    if frames <= 0 or fps <= 0:
        raise InputError(f"video {video} has no decodable frames")
    start = float(meta.begin_stream_seconds or 0.0)
    end = meta.end_stream_seconds
    duration = float(end) - start if end is not None and float(end) > start else frames / fps
    return VideoTimeline(start_seconds=start, duration_seconds=duration, frames=frames, fps=fps)


def _short(e: BaseException) -> str:
    """FFmpeg/torchcodec messages carry C++ source locations and bug-report boilerplate: keep the first line."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg.split(".cpp:")[-1].split(", ", 1)[-1] if ".cpp:" in msg else msg


def _audio_stream(path: Path) -> dict[str, Any] | None:
    """Codec, rate, channels and index of the default audio stream (None when the file has no audio stream)."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                return None
            s = streams[0]
            return {"stream_index": s.index, "codec": s.codec_context.name, "sample_rate": s.rate,
                    "channels": s.channels}
    except av.error.FFmpegError as e:
        raise InputError(f"{path} cannot be opened as a media file ({e}); check the file (ffprobe {path})") from None


def extract_audio(video: str | Path, out: str | Path, *, audio: str | Path | None = None, sample_rate: int = 16000,
                  missing_audio: str = "error", chunk_seconds: float = CHUNK_SECONDS,
                  metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out`` (mono 16-bit WAV on the frame timeline of ``video``) and its JSON sidecar; return the sidecar.

    ``audio`` is the file holding the audio track (default: ``video`` itself). A separate audio file's time 0 is
    taken to be the video's first frame. ``metadata`` (e.g. provenance) is stored in the sidecar as is.
    Raises :class:`InputError` naming the file for a missing, corrupt or audio-less input (unless
    ``missing_audio == "silence"``); nothing is left at ``out`` on failure.
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
    timeline = probe_timeline(video)
    if source != video:
        _check_file(source, "audio")
    stream = _audio_stream(source)
    n_out = round(timeline.duration_seconds * sample_rate)
    info: dict[str, Any] = {
        "schema": SCHEMA, "video": str(video), "audio_source": str(source), "sample_rate": sample_rate,
        "num_samples": n_out, "duration_seconds": n_out / sample_rate,
        "video_start_seconds": timeline.start_seconds, "video_duration_seconds": timeline.duration_seconds,
        "frames": timeline.frames, "fps": timeline.fps, "time_origin": "first video frame",
        "source_stream": stream,
    }
    if stream is None and missing_audio == "error":
        raise InputError(f"{source} has no audio stream; set audio.missing_audio: silence to use silent audio "
                         "(every frame's audio marked invalid) or fix the corpus entry")

    side = sidecar_path(out)
    with atomic_path(side) as tmp_json, atomic_path(out) as tmp_wav:
        with sf.SoundFile(tmp_wav, mode="w", samplerate=sample_rate, channels=1, subtype="PCM_16",
                          format="WAV") as wav:
            decoded = None
            if stream is not None:
                decoded = _write_track(source, wav, timeline, stream_index=stream["stream_index"],
                                       sample_rate=sample_rate, n_out=n_out,
                                       chunk_seconds=chunk_seconds, same_file=source == video)
            if decoded is None:
                if missing_audio == "error":
                    raise InputError(f"{source}: its audio stream holds no decodable samples; set "
                                     "audio.missing_audio: silence to use silent audio, or fix the file")
                logger.warning("%s: no audio; writing %.2f s of silence (has_audio: false)", source,
                               n_out / sample_rate)
                _write_zeros(wav, n_out)
                decoded = {"has_audio": False, "audio_start_seconds": None, "offset_seconds": None,
                           "offset_samples": 0, "valid_start_sample": 0, "valid_end_sample": 0,
                           "clipped_samples": 0}
            if wav.frames != n_out:  # pragma: no cover - guarded by _write_track's arithmetic
                raise RuntimeError(f"wrote {wav.frames} samples, expected {n_out}")
        info.update(decoded)
        if metadata:
            info["provenance"] = metadata
        tmp_json.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    logger.info("%s: %d samples at %d Hz (%.2f s), audio offset %s s, valid samples [%d, %d)", out, n_out,
                sample_rate, n_out / sample_rate, info["offset_seconds"], info["valid_start_sample"],
                info["valid_end_sample"])
    return info


def _write_zeros(wav, n: int, block: int = 1 << 18) -> None:
    while n > 0:
        k = min(n, block)
        wav.write(np.zeros(k, dtype=np.float32))
        n -= k


def _write_track(source: Path, wav, timeline: VideoTimeline, *, stream_index: int, sample_rate: int, n_out: int,
                 chunk_seconds: float, same_file: bool) -> dict[str, Any] | None:
    """Decode ``source``'s audio chunk by chunk into ``wav`` on the frame timeline; None if nothing decodes."""
    from torchcodec.decoders import AudioDecoder

    try:
        decoder = AudioDecoder(str(source), stream_index=stream_index, sample_rate=sample_rate)
        begin = float(decoder.metadata.begin_stream_seconds or 0.0)
        header_duration = decoder.metadata.duration_seconds
    except Exception as e:
        raise InputError(f"{source}: the audio stream cannot be decoded ({_short(e)}); "
                         f"check the file (ffprobe {source})") from None
    reference = timeline.start_seconds if same_file else 0.0
    written = 0  # samples written to the output so far
    offset_samples: int | None = None  # > 0: zeros padded before the audio; < 0: audio samples trimmed
    offset_seconds = first_pts = 0.0
    to_skip = 0  # samples still to drop from the start of the track (audio before the first frame)
    valid_start = valid_end = clipped = decoded = 0
    pos = begin
    total = math.ceil(header_duration / chunk_seconds) if header_duration else None
    bar = progress(total=total, desc=f"audio {source.name}", unit="chunk")
    try:
        while written < n_out:
            try:
                chunk = decoder.get_samples_played_in_range(start_seconds=pos, stop_seconds=pos + chunk_seconds)
            except Exception as e:
                if "No audio frames were decoded" in str(e):
                    break  # past the end of the stream (or, on the first call, a stream without samples)
                raise InputError(f"{source}: audio decoding failed at {pos:.2f} s ({_short(e)}); "
                                 "the file is corrupt or truncated") from None
            bar.update(1)
            data = chunk.data  # (channels, samples) float32, resampled by FFmpeg; channels averaged here
            if data.shape[1] == 0:
                break
            if offset_samples is None:
                first_pts = float(chunk.pts_seconds)
                offset_seconds = first_pts - reference
                offset_samples = round(offset_seconds * sample_rate)
                if offset_samples > 0:  # the audio starts after the first frame: pad
                    written = min(offset_samples, n_out)
                    _write_zeros(wav, written)
                else:  # the audio starts before (or with) the first frame: trim
                    to_skip = -offset_samples
                valid_start = valid_end = written
            elif abs(float(chunk.pts_seconds) - (first_pts + decoded / sample_rate)) > 0.01:
                logger.warning("%s: audio timestamps jump at %.2f s (a gap in the stream); samples are kept "
                               "contiguous", source, float(chunk.pts_seconds))
            decoded += int(data.shape[1])
            mono = (data.mean(dim=0) if data.shape[0] > 1 else data[0]).numpy()
            if to_skip:
                k = min(to_skip, mono.size)
                mono, to_skip = mono[k:], to_skip - k
            mono = mono[: n_out - written]
            if mono.size:
                clipped += int(np.count_nonzero(np.abs(mono) > 1.0))
                wav.write(np.clip(mono, -1.0, 1.0))
                written += mono.size
                valid_end = written
            pos += chunk_seconds
    finally:
        bar.close()
    if offset_samples is None:
        return None
    if written < n_out:
        _write_zeros(wav, n_out - written)
    if clipped:
        logger.warning("%s: %d samples beyond full scale were clipped", source, clipped)
    return {"has_audio": True, "audio_start_seconds": first_pts, "offset_seconds": offset_seconds,
            "offset_samples": offset_samples, "valid_start_sample": valid_start, "valid_end_sample": valid_end,
            "clipped_samples": clipped}


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
        raise InputError(f"{side} is not an emofusion audio sidecar (schema {meta.get('schema')!r}, "
                         f"expected {SCHEMA!r})")
    return meta


def read_audio(wav: str | Path, *, with_metadata: bool = True) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(float32 mono samples, sample rate, sidecar metadata) of an audio output; metadata {} if not asked."""
    import soundfile as sf

    wav = Path(wav)
    _check_file(wav, "audio")
    try:
        data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(f"audio {wav} cannot be read ({e}); rerun `emofusion audio` for this video") from None
    return data.mean(axis=1), int(rate), read_audio_metadata(wav) if with_metadata else {}
