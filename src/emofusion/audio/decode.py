"""Decoding an audio track with PyAV, frame by frame, resampled by FFmpeg, channels averaged, each frame placed at
its own timestamp (gaps as zeros, overlaps dropped): the code the audio stage writes its WAV with
(:mod:`emofusion.audio.stage`) and the one that reads any other audio file (:func:`decode_audio`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import InputError
from emofusion.log import logger, progress

CHUNK_SECONDS = 30.0


def check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty")


def audio_stream(path: Path) -> dict[str, Any] | None:
    """Codec, rate, channels and index of the audio stream FFmpeg picks (``av_find_best_stream``, as the ffmpeg
    tools do: a stream marked default first, then the one with the most decodable data); None when the file has no
    audio stream."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            s = container.streams.best("audio")
            return {
                "stream_index": s.index,
                "codec": s.codec_context.name,
                "sample_rate": s.rate,
                "channels": s.channels,
            }
    except av.error.FFmpegError as e:
        raise InputError(f"{path} cannot be opened as a media file ({e}); check the file (ffprobe {path})") from None


def write_zeros(wav, n: int, block: int = 1 << 18) -> None:
    while n > 0:
        k = min(n, block)
        wav.write(np.zeros(k, dtype=np.float32))
        n -= k


class _BlockWriter:
    """Collects mono pieces and writes them to ``wav`` once ``block`` samples are pending (bounded memory)."""

    def __init__(self, wav, block: int, bar):
        self.wav, self.block, self.bar = wav, block, bar
        self.pending: list[np.ndarray] = []
        self.n_pending = self.clipped = 0

    def add(self, x: np.ndarray) -> None:
        self.pending.append(x)
        self.n_pending += x.size
        if self.n_pending >= self.block:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        x = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.clipped += int(np.count_nonzero(np.abs(x) > 1.0))
        self.wav.write(np.clip(x, -1.0, 1.0))
        self.bar.update(x.size / self.wav.samplerate)
        self.pending, self.n_pending = [], 0

    def zeros(self, n: int) -> None:
        self.flush()
        write_zeros(self.wav, n)


MAX_LOGGED = 5  # timestamp jumps logged one by one; the rest are summed up at the end


def write_track(
    source: Path,
    wav,
    *,
    stream_index: int,
    reference: float | None,
    sample_rate: int,
    n_out: int | None,
    chunk_seconds: float,
) -> dict[str, Any] | None:
    """Decode ``source``'s audio frame by frame into ``wav``; None if nothing decodes.

    Output sample 0 is at source time ``reference`` seconds (the first video frame's time; None: the first audio
    frame's); the output has ``n_out`` samples (None: as many as the stream holds).

    Each frame is placed by its own timestamp: a jump forward (a gap in the stream) becomes zeros; after a jump
    back (overlap) the new samples that fall on output already written are dropped; either way the audio after a
    jump stays at its true time. Between jumps (beyond the tolerance of a time-base tick) samples are counted, not
    re-read from timestamps, so a contiguous stream goes through one resampler seamlessly.
    """
    import av

    try:
        container = av.open(str(source))
    except av.error.FFmpegError as e:
        raise InputError(
            f"{source}: the audio stream cannot be decoded ({e}); check the file (ffprobe {source})"
        ) from None
    stream = container.streams[stream_index]
    tb = stream.time_base
    # Timestamps are quantized to the stream's time base (1 ms in Matroska): a jitter of one tick is no jump.
    tolerance = 1e-3 + (float(tb) if tb else 0.0)
    duration = float(stream.duration * tb) if stream.duration and tb else (container.duration or 0) / 1e6
    bar = progress(total=round(duration, 2) or None, desc=f"audio {source.name}", unit="s")
    out = _BlockWriter(wav, max(1, round(chunk_seconds * sample_rate)), bar)
    pos = 0  # samples of the output decided so far (written or pending)
    nxt = 0  # output index of the next sample the resampler gives; < pos: already covered, dropped
    first_pts: float | None = None
    expected = 0.0  # source time the next frame should start at if the stream is contiguous
    resampler: Any = None  # an av.AudioResampler from the first frame on
    key = None
    valid_start = valid_end = 0
    jumps = {"gaps": 0, "gap_seconds": 0.0, "overlaps": 0, "overlap_seconds": 0.0}

    def emit(frames) -> None:
        nonlocal pos, nxt, valid_end
        for f in frames:
            a = f.to_ndarray()  # (channels, samples) float32; averaged here (FFmpeg's downmix adds 3 dB)
            mono = a.mean(axis=0, dtype=np.float32) if a.shape[0] > 1 else a[0]
            k = min(max(pos - nxt, 0), mono.size)  # before the first frame, or overlapping what is written
            nxt += mono.size
            mono = mono[k:] if n_out is None else mono[k : k + n_out - pos]
            if mono.size:
                out.add(mono)
                pos += mono.size
                valid_end = pos

    def fill(target: int) -> None:
        """Zeros up to output index ``target`` (a late start or a gap)."""
        nonlocal pos
        n = (target if n_out is None else min(target, n_out)) - pos
        if n > 0:
            out.zeros(n)
            pos += n

    t = 0.0
    try:
        with container, bar:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = float(frame.pts * (frame.time_base or tb))
                elif first_pts is not None:
                    t = expected  # no timestamp: assume it follows on
                if first_pts is None:
                    first_pts = expected = t
                    reference = t if reference is None else reference
                    nxt = round((t - reference) * sample_rate)
                    fill(nxt)
                    valid_start = valid_end = pos
                elif abs(t - expected) > tolerance:
                    assert reference is not None  # set with the first frame
                    emit(resampler.resample(None))  # finish the audio before the jump, then start afresh
                    resampler = key = None
                    target = round((t - reference) * sample_rate)
                    kind = "gap" if t > expected else "overlap"
                    jumps[f"{kind}s"] += 1
                    jumps[f"{kind}_seconds"] += abs(t - expected)
                    if jumps["gaps"] + jumps["overlaps"] <= MAX_LOGGED:
                        logger.warning(
                            "%s: audio timestamps jump %s by %.3f s at %.3f s (%s); %s",
                            source,
                            "forward" if t > expected else "back",
                            abs(t - expected),
                            t - reference,
                            "a gap in the stream" if t > expected else "overlapping audio",
                            "filled with zeros" if t > expected else "the repeated samples are dropped",
                        )
                    fill(target)
                    nxt, expected = target, t
                if (frame.format.name, frame.layout.name, frame.sample_rate) != key:
                    if resampler is not None:  # the stream's layout or rate changed: a new resampler for it
                        emit(resampler.resample(None))
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
                expected += frame.samples / frame.sample_rate
                emit(resampler.resample(frame))
                if n_out is not None and pos >= n_out:
                    break  # audio past the last frame is dropped
            if resampler is not None and (n_out is None or pos < n_out):
                emit(resampler.resample(None))
            out.flush()
    except av.error.FFmpegError as e:
        raise InputError(
            f"{source}: audio decoding failed at {t:.2f} s ({e}); the file is corrupt or truncated"
        ) from None
    if first_pts is None:
        return None
    if n_out is not None:
        fill(n_out)
    n_jumps = jumps["gaps"] + jumps["overlaps"]
    if n_jumps > MAX_LOGGED:
        logger.warning(
            "%s: %d audio timestamp jumps in all: %d gaps (%.3f s filled with zeros), %d overlaps (%.3f s dropped)",
            source,
            n_jumps,
            jumps["gaps"],
            jumps["gap_seconds"],
            jumps["overlaps"],
            jumps["overlap_seconds"],
        )
    if out.clipped:
        logger.warning("%s: %d samples beyond full scale were clipped", source, out.clipped)
    assert reference is not None  # set with the first frame
    offset_seconds = first_pts - reference
    jumps = {k: round(v, 6) for k, v in jumps.items()}  # float sums of frame lengths: keep the sidecar readable
    return {
        "has_audio": True,
        "audio_start_seconds": first_pts,
        "offset_seconds": offset_seconds,
        "offset_samples": round(offset_seconds * sample_rate),
        "valid_start_sample": valid_start,
        "valid_end_sample": valid_end,
        "clipped_samples": out.clipped,
        **jumps,
    }


class _MemoryWav:
    """What :func:`write_track` uses of a ``soundfile.SoundFile`` (``samplerate``, ``frames``, ``write``),
    collecting the samples in memory."""

    def __init__(self, samplerate: int):
        self.samplerate = samplerate
        self.frames = 0
        self.blocks: list[np.ndarray] = []

    def write(self, x: np.ndarray) -> None:
        self.blocks.append(np.asarray(x, dtype=np.float32))
        self.frames += len(x)

    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)


def decode_audio(path: str | Path, *, sample_rate: int = 16000) -> tuple[np.ndarray, dict[str, Any]]:
    """Any file the decoders read that has an audio stream (WAV at any rate, FLAC, MP3, a video...) as float32 mono
    samples at ``sample_rate``, decoded as the audio stage decodes (:func:`write_track`: FFmpeg's resampler,
    channels averaged, timestamp gaps as zeros), with the file's own time origin (sample 0 = its first audio
    sample) and the whole decoded track valid. For inputs that are not audio-stage outputs (no sidecar); returns
    (samples, metadata with the sidecar's keys that apply). InputError naming the file when it holds no audio."""
    path = Path(path)
    check_file(path, "audio")
    stream = audio_stream(path)
    if stream is None:
        raise InputError(f"{path} has no audio stream; give a file with sound")
    sink = _MemoryWav(sample_rate)
    decoded = write_track(
        path,
        sink,
        stream_index=stream["stream_index"],
        reference=None,
        sample_rate=sample_rate,
        n_out=None,
        chunk_seconds=CHUNK_SECONDS,
    )
    if decoded is None or sink.frames == 0:
        raise InputError(f"{path}: its audio stream holds no decodable samples; check the file (ffprobe {path})")
    samples = sink.samples()
    meta = {
        "audio_source": str(path),
        "sample_rate": sample_rate,
        "num_samples": int(samples.size),
        "duration_seconds": samples.size / sample_rate,
        "time_origin": "first audio sample",
        "source_stream": stream,
        "sidecar": None,
        **decoded,
    }
    return samples, meta
