"""``<video>.overlay.mp4``: the original frames with the subject's face box and a valence/arousal gauge drawn,
the original audio packets copied unchanged. Frames come from the decoder the face stage used
(:class:`emofusion.video.VideoStream`), so a rotated phone video is drawn upright with the box (display
coordinates) on the face, and each frame keeps its presentation time (a variable frame rate stays variable, the
audio in sync). Streamed in small batches, audio packets muxed as the video reaches their time, so memory does not
grow with the video's length."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import InputError
from emofusion.predict.predictor import Prediction

GAUGE = 96  # side of the valence-arousal square on frames up to 480 px on their shorter side, pixels
GAUGE_SHARE = 0.2  # on larger frames: this share of the shorter side (216 px on 1080p), so it reads the same


def gauge_size(width: int, height: int) -> int:
    """Side of the gauge's square on a ``width`` x ``height`` frame: GAUGE, or a fifth of the shorter side on
    frames larger than 480 px there; never more than half the height (a very flat frame)."""
    return min(height // 2, max(GAUGE, round(GAUGE_SHARE * min(width, height))))


def _draw(image, box: np.ndarray | None, v: float, a: float, trace: np.ndarray) -> None:
    """Draw on a PIL image: the face box, and in the lower-left corner a valence (x) / arousal (y) square with
    the last second's path and the current point; margins, lines and text grow with the square."""
    from PIL import ImageDraw, ImageFont

    d = ImageDraw.Draw(image)
    s = gauge_size(image.width, image.height)
    k = max(1.0, s / GAUGE)  # 1 up to 480 px: the drawing small frames always had
    if box is not None and np.isfinite(box).all():
        d.rectangle([float(x) for x in box], outline=(0, 255, 0), width=round(2 * k))
    h = image.height
    x0, y0 = round(6 * k), h - s - round(18 * k)
    d.rectangle([x0, y0, x0 + s, y0 + s], fill=(0, 0, 0), outline=(255, 255, 255), width=round(k))
    cx, cy = x0 + s / 2, y0 + s / 2
    d.line([x0, cy, x0 + s, cy], fill=(110, 110, 110), width=round(k))
    d.line([cx, y0, cx, y0 + s], fill=(110, 110, 110), width=round(k))

    def at(val, aro):
        return cx + float(val) * s / 2, cy - float(aro) * s / 2

    if len(trace) > 1:
        d.line([at(*p) for p in trace], fill=(255, 160, 0), width=round(k))
    px, py = at(v, a)
    r = 3 * k
    d.ellipse([px - r, py - r, px + r, py + r], fill=(255, 40, 40))
    font = ImageFont.load_default(size=round(10 * k)) if k > 1 else None
    d.text((x0, y0 + s + round(3 * k)), f"V {v:+.2f}  A {a:+.2f}", fill=(255, 255, 255), font=font)


def _start(packet) -> int:
    """A packet's presentation time, or its decode time where the container gives none (some AVI streams)."""
    return packet.pts if packet.pts is not None else packet.dts


def write_overlay(p: Prediction, out: str | Path) -> Path:
    """Write the overlay video of a prediction atomically; returns its path."""
    import av
    from PIL import Image

    from emofusion.faces.store import FaceStore
    from emofusion.io import atomic_path
    from emofusion.video import VideoStream

    boxes = valid = None
    if p.faces is not None:
        with FaceStore(p.faces) as store:
            boxes, valid = store.read("boxes"), store.read("valid").astype(bool)
    values = p.smoothed
    span = max(1, round(p.fps))  # the trace: about the last second
    out = Path(out)
    frames = VideoStream(p.video, batch_size=16)  # upright frames with their times, as the face stage saw them
    try:
        inp = av.open(str(p.video))
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"video {p.video} cannot be opened for the overlay ({e})") from None
    with inp, atomic_path(out) as tmp:
        tb = inp.streams[frames.info.stream_index].time_base  # the source's clock: its times written back exactly
        ain = inp.streams.best("audio")
        packets = (q for q in inp.demux(ain) if q.dts is not None) if ain is not None else iter(())
        rate = Fraction(p.fps).limit_denominator(100000)
        with av.open(str(tmp), "w", format="mp4") as dst:
            vout = dst.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
            vout.width, vout.height = frames.info.width // 2 * 2, frames.info.height // 2 * 2
            vout.pix_fmt = "yuv420p"
            vout.codec_context.time_base = tb
            aout = dst.add_stream_from_template(ain) if ain is not None else None
            pending = next(packets, None)

            def audio_until(t: float | None) -> None:
                """Mux the source's audio packets that start by ``t`` seconds (all of them for None)."""
                nonlocal pending
                while pending is not None and (t is None or float(_start(pending) * pending.time_base) <= t):
                    pending.stream = aout
                    dst.mux(pending)
                    pending = next(packets, None)

            i, last = 0, None
            for batch in frames:
                data: Any = batch.frames  # (B, 3, H, W) uint8 tensor
                for j, t in enumerate(batch.timestamps):
                    audio_until(float(t))
                    k = min(i, p.frames - 1)
                    image = Image.fromarray(data[j].permute(1, 2, 0).numpy())
                    box = boxes[k] if boxes is not None and valid is not None and valid[k] else None
                    _draw(image, box, values[k, 0], values[k, 1], values[max(0, k - span) : k + 1])
                    new = av.VideoFrame.from_image(image.crop((0, 0, vout.width, vout.height)))
                    pts = round(float(t) / tb)
                    new.pts = last = pts if last is None else max(pts, last + 1)  # an encoder needs rising times
                    new.time_base = tb
                    for enc in vout.encode(new):
                        dst.mux(enc)
                    i += 1
            for enc in vout.encode():
                dst.mux(enc)
            audio_until(None)
    return out
