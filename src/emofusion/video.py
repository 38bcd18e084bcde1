"""Streamed video decoding: a video's frames in bounded batches, each frame with its presentation time.

The frame timeline of a clip is the one torchcodec's exact stream scan gives (the count `emofusion manifest`
records): frames in presentation order, ``pts`` in seconds from the decoder, so variable frame rate videos keep
their real frame times. :func:`probe` checks a file before any decoding (exists, not empty, has a decodable video
stream, not cut short) and raises :class:`~emofusion.errors.InputError` naming the file; :func:`iter_batches`
then decodes the stream once, ``batch_size`` frames at a time, so memory is bounded by the batch whatever the
video's length.
"""

from __future__ import annotations

import math
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emofusion.errors import InputError
from emofusion.log import logger

# Containers whose header holds the exact sample table, so fewer packets than announced means a cut-off file.
_SAMPLE_TABLE_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learned about a video without decoding it."""

    path: str
    frames: int  # frames on the decoder's timeline (packets FFmpeg does not discard)
    fps: float  # average rate over the stream (frames / duration); informative only, timestamps are exact
    width: int
    height: int
    codec: str
    stream_index: int
    timestamps: np.ndarray  # (frames,) float64 seconds, presentation order


@dataclass(frozen=True)
class FrameBatch:
    """Frames ``start .. start + len(frames) - 1`` of a video."""

    start: int
    frames: object  # torch.Tensor (B, 3, H, W) uint8, RGB
    timestamps: np.ndarray  # (B,) float64 seconds


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without torchcodec's source location and bug-report boilerplate."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^.*?\.cpp:\d+,\s*", "", msg).strip()


def check_video_file(path: Path) -> None:
    """InputError naming ``path`` when it is missing or empty: the one existence check of every probe below."""
    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"video {path} is empty (0 bytes); copy it again from the corpus")


def probe(path: str | Path) -> VideoInfo:
    """Check a video and list its frames' timestamps by demuxing its packets (no decoding).

    Reads the video stream FFmpeg picks (``av_find_best_stream``, as torchcodec's decoder and the manifest's frame
    count do), unless that is an attached picture (cover art): then the first real video stream.

    Raises InputError, naming the file, when it is missing, empty, not a media file, has no video stream, has a
    codec FFmpeg cannot decode, or holds fewer video packets than its sample table announces (a cut-off copy).
    """
    import av

    path = Path(path)
    check_video_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(
            f"video {path} cannot be opened: {_reason(e)}; it is truncated, corrupt or not a media "
            f"file (check it with `ffprobe {path}`)"
        ) from None
    with container:
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise InputError(f"{path} has no video stream ({kinds}); the face stage needs a video file")
        best = container.streams.best("video")
        stream = best if best in streams else streams[0]
        if stream.codec_context is None or not stream.codec_context.name:
            tag = stream.codec_tag if getattr(stream, "codec_tag", None) else "unknown"
            raise InputError(
                f"video {path}: unsupported video codec (tag {tag!r}); FFmpeg has no decoder for it. "
                f"Re-encode it, e.g. `ffmpeg -i {path} -c:v libx264 -c:a copy out.mp4`"
            )
        announced = int(stream.frames or 0)
        packets = 0
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:
                    continue  # the demuxer's flush packet
                packets += 1
                if packet.pts is not None and not packet.is_discard:
                    pts.append(packet.pts)
        except (av.FFmpegError, OSError) as e:
            raise InputError(
                f"video {path} cannot be read past packet {packets}: {_reason(e)}; the file is truncated or corrupt"
            ) from None
        if not pts:
            raise InputError(f"video {path} has no decodable video frames")
        tb = float(stream.time_base)
        timestamps = np.sort(np.asarray(pts, dtype=np.int64)) * tb
        duration = timestamps[-1] - timestamps[0]
        fps = (len(timestamps) - 1) / duration if duration > 0 else float(stream.average_rate or 0.0)
        fmt = container.format.name if container.format else ""
        # Matroska's DURATION tag is where the track ends on the file's clock (a stream that starts at 10 s and
        # holds 4 s is tagged 14 s), so the frames cover up to the last one's end, not just their span.
        covered = max(duration, timestamps[-1]) + (1 / fps if fps else 0)
        _check_complete(path, fmt, announced, packets, _tagged_duration(stream), covered)
        return VideoInfo(
            path=str(path),
            frames=len(timestamps),
            fps=float(fps),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            codec=stream.codec_context.name,
            stream_index=int(stream.index),
            timestamps=timestamps.astype(np.float64),
        )


def _tagged_duration(stream) -> float | None:
    """The stream's own duration from its DURATION tag (Matroska/WebM muxers write one per track), in seconds."""
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d*)?)", str(stream.metadata.get("DURATION", "")).strip())
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def _check_complete(path: Path, fmt: str, announced: int, packets: int, tagged: float | None, covered: float) -> None:
    """Raise InputError when the header promises more video than the file holds (a cut-off copy).

    mp4/mov sample tables are exact; AVI's frame count in the header can be one more than the packets of a complete
    file, so a few frames of slack; Matroska/WebM give the video track's duration in a tag. A container duration
    alone is not used: it covers the audio too, which may legitimately run longer than the video."""
    formats = fmt.split(",")
    short = None
    if any(f in formats for f in _SAMPLE_TABLE_FORMATS):
        if announced and packets < announced:
            short = f"its header announces {announced} video frames but the file holds only {packets}"
    elif announced:
        if packets < announced - max(2, math.ceil(0.02 * announced)):
            short = f"its header announces {announced} video frames but the file holds only {packets}"
    elif tagged is not None and covered < tagged - max(1.0, 0.05 * tagged):
        short = f"its video track is tagged {tagged:.2f} s long but the file holds only {covered:.2f} s of frames"
    if short:
        raise InputError(f"video {path} is truncated: {short}; copy it again from the corpus")


def open_decoder(path: str | Path, *, threads: int = 1, stream_index: int | None = None, device: str = "cpu"):
    """A torchcodec VideoDecoder (exact seek mode: a full scan gives the true frame count) of stream
    ``stream_index`` (default: FFmpeg's pick) decoding on ``device`` (``cuda``: NVDEC), errors named."""
    from torchcodec.decoders import VideoDecoder

    try:
        return VideoDecoder(
            str(path),
            seek_mode="exact",
            num_ffmpeg_threads=max(0, int(threads)),
            stream_index=stream_index,
            device=device,
        )
    except (RuntimeError, ValueError) as e:
        raise InputError(f"video {path} cannot be decoded: {_reason(e)}; check it with `ffprobe {path}`") from None


def open_gpu_decoder(path: Path, *, threads: int, stream_index: int):
    """A CUDA (NVDEC) decoder of ``path`` that has decoded its first frame, or None after ONE warning naming the
    video when that fails (no NVDEC, a torchcodec without CUDA, a codec or profile the GPU cannot decode): the
    caller then decodes on the CPU. The first frame is decoded here because NVDEC refuses a codec only then."""
    try:
        decoder = open_decoder(path, threads=threads, stream_index=stream_index, device="cuda")
        decoder.get_frame_at(0)
        return decoder
    except Exception as e:  # whatever the GPU decoder raises, the CPU decodes this video
        logger.warning("%s: cannot decode on the GPU (%s); decoding this video on the CPU", path, _reason(e))
        return None


@dataclass(frozen=True)
class VideoTimeline:
    """A video's frame timeline from the decoder's exact scan: first frame's time, duration, frames, mean rate."""

    start_seconds: float
    duration_seconds: float
    frames: int
    fps: float


def timeline(path: str | Path) -> VideoTimeline:
    """The frame timeline of ``path`` from torchcodec's exact scan (packets only, no pixels decoded): the frame
    count every stage shares. InputError naming the file when it is missing or empty, cannot be decoded or has no
    frames."""
    path = Path(path)
    check_video_file(path)
    meta = open_decoder(path).metadata
    frames = int(meta.num_frames or 0)
    fps = float(meta.average_fps or 0.0)
    if frames <= 0 or fps <= 0:
        raise InputError(f"video {path} has no decodable frames")
    start = float(meta.begin_stream_seconds or 0.0)
    end = meta.end_stream_seconds
    duration = float(end) - start if end is not None and float(end) > start else frames / fps
    return VideoTimeline(start_seconds=start, duration_seconds=duration, frames=frames, fps=fps)


def _as_decoded(path: str | Path, info: VideoInfo, decoder) -> VideoInfo:
    """``info`` with the frame size as decoded: torchcodec applies a rotation tag (phone videos), so the decoded
    width and height can be the header's swapped."""
    import dataclasses

    meta = decoder.metadata
    if meta.width and meta.height and (meta.width, meta.height) != (info.width, info.height):
        logger.info(
            "%s: frames decode as %dx%d (rotation %s), the header says %dx%d",
            path,
            meta.width,
            meta.height,
            getattr(meta, "rotation", None),
            info.width,
            info.height,
        )
        info = dataclasses.replace(info, width=int(meta.width), height=int(meta.height))
    return info


class VideoStream:
    """One pass over a video's frames in presentation order, ``batch_size`` frames at a time.

    ``frames`` is the decoder's exact frame count (the manifest's), known before decoding, so a store can be
    preallocated. Iterating yields :class:`FrameBatch` with ``frames`` a CPU uint8 tensor ``(B, 3, H, W)``. With
    ``prefetch`` the next batch is decoded in a background thread while the caller works on the current one (at
    most two batches in memory; useful when the model runs on a GPU). A decoding failure, or fewer frames than the
    scan announced, raises InputError naming the file and the frames.

    ``device="cuda"`` decodes on the GPU (NVDEC): the batches are CUDA tensors, so a detector on that GPU takes
    them without a copy through the host; where the GPU cannot decode this video, it is decoded on the CPU after
    one warning (:func:`open_gpu_decoder`). ``decode_device`` says which one decodes.
    """

    def __init__(
        self, path: str | Path, *, batch_size: int, threads: int = 1, prefetch: bool = False, device: str = "cpu"
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self.prefetch = prefetch
        info = probe(self.path)  # checks the file first, so a bad one gets the specific message
        decoder = None
        if str(device).startswith("cuda"):
            decoder = open_gpu_decoder(self.path, threads=threads, stream_index=info.stream_index)
        self.decode_device = "cuda" if decoder is not None else "cpu"
        self._decoder = decoder or open_decoder(self.path, threads=threads, stream_index=info.stream_index)
        self.info = _as_decoded(self.path, info, self._decoder)
        self.frames = int(self._decoder.metadata.num_frames or 0)
        if self.frames <= 0:
            raise InputError(f"video {self.path} has no decodable video frames")
        if self.frames != self.info.frames:
            logger.warning(
                "%s: the decoder counts %d frames, the demuxer %d; following the decoder",
                self.path,
                self.frames,
                self.info.frames,
            )

    @property
    def batches(self) -> int:
        return -(-self.frames // self.batch_size)

    def _decode(self, start: int) -> FrameBatch:
        stop = min(self.frames, start + self.batch_size)
        try:
            batch = self._decoder.get_frames_in_range(start, stop)
        except (RuntimeError, ValueError, IndexError) as e:
            raise InputError(
                f"video {self.path}: decoding failed at frames {start}..{stop - 1} of {self.frames} "
                f"({_reason(e)}); the file is truncated or corrupt"
            ) from None
        if batch.data.shape[0] != stop - start:
            raise InputError(
                f"video {self.path}: decoded {batch.data.shape[0]} frames for {start}..{stop - 1} of "
                f"{self.frames}; the file is truncated or corrupt"
            )
        return FrameBatch(start=start, frames=batch.data, timestamps=batch.pts_seconds.numpy().astype(np.float64))

    def __iter__(self) -> Iterator[FrameBatch]:
        starts = range(0, self.frames, self.batch_size)
        if self.prefetch:
            yield from _prefetched(self._decode, starts)
        else:
            for start in starts:
                yield self._decode(start)


def frame_timestamps(path: str | Path) -> tuple[np.ndarray, VideoInfo]:
    """Presentation times (seconds) of every frame of a video without decoding pixels: from the demuxed packets
    when their count matches the decoder's exact scan (the usual case), else from a decoding pass."""
    stream = VideoStream(path, batch_size=64)
    if stream.frames == stream.info.frames:
        return stream.info.timestamps, stream.info
    logger.info("%s: decoding to read the frame timestamps", path)  # VideoStream has warned about the counts
    return np.concatenate([b.timestamps for b in stream]), stream.info


def _prefetched(decode, starts) -> Iterator[FrameBatch]:
    """Run ``decode`` for each start one step ahead in a thread; re-raise its errors in the caller.

    At most two batches are alive: the one the caller holds and the one being decoded. The worker takes a slot
    before decoding and the caller hands it back when it asks for the next batch (it has let go of the previous
    one by then), so a bounded queue alone (which would allow a third, decoded while one waits in the queue) is not
    enough."""
    q: queue.Queue = queue.Queue()
    slots = threading.Semaphore(2)
    stop = threading.Event()

    def worker() -> None:
        try:
            for start in starts:
                slots.acquire()
                if stop.is_set():
                    return
                q.put(("ok", decode(start)))
            q.put(("end", None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(("error", e))

    thread = threading.Thread(target=worker, name="emofusion-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
            del item  # the caller asks for the next batch: this one is no longer ours to keep alive
            slots.release()
    finally:
        stop.set()
        slots.release()  # wake a worker waiting for a slot; it sees `stop` and returns
        thread.join()
