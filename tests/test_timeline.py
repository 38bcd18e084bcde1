"""Known answers for the frame timeline: videos the tests make, each with a white frame (a flash) and a 1 kHz
beep (a tick) at the same moment, in constant and variable frame rate, with the audio stream starting late and
with a first frame at 10 s. Audio rows, the word lookup and predict's ``time_s`` must meet the flash's frame."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_ffmpeg
from emofusion.features import stage
from emofusion.features.timeline import frame_times, presentation_times

BEEP = 0.1  # seconds of 1 kHz tone starting at the flash


@dataclass(frozen=True)
class Case:
    suffix: str  # container
    segments: tuple[tuple[int, int], ...]  # (fps, frames) one after the other
    flash: int  # the white frame's index
    audio: str = "flac"
    audio_delay: float = 0.0  # the audio stream starts this much after the first frame
    start: float = 0.0  # the first frame's presentation time


CASES = {
    "cfr": Case(".mp4", ((25, 100),), 70, audio="aac"),
    "vfr-mkv": Case(".mkv", ((24, 48), (12, 24)), 60),
    "vfr-mp4": Case(".mp4", ((24, 48), (12, 24)), 60, audio="aac"),
    "cfr-audio-late": Case(".mkv", ((25, 100),), 70, audio_delay=0.5),
    "vfr-starts-at-10s": Case(".mkv", ((24, 48), (12, 24)), 60, start=10.0),
}


def flash_time(case: Case) -> float:
    t, first = 0.0, 0
    for fps, n in case.segments:
        if first <= case.flash < first + n:
            return t + (case.flash - first) / fps
        t, first = t + n / fps, first + n
    raise ValueError("the flash is past the last frame")


def make_flash_tick_video(path: Path, case: Case) -> Path:
    """Black 64x48 frames at the segments' rates (one setpts step per segment: a real variable frame rate), the
    flash frame white, a 0.1 s 1 kHz beep at its time on an otherwise silent track."""
    bounds, t, first = [], 0.0, 0
    for fps, n in case.segments:
        bounds.append((first, first + n, t, fps))
        t, first = t + n / fps, first + n
    duration, frames = t, first
    a, _, t0, fps = bounds[-1]
    expr = f"{t0}+(N-{a})/{fps}"
    for a, b, t0, fps in reversed(bounds[:-1]):
        expr = f"if(lt(N\\,{b})\\,{t0}+(N-{a})/{fps}\\,{expr})"
    beep = flash_time(case) - case.audio_delay  # on the audio stream's own clock
    args = ["-f", "lavfi", "-i", f"color=c=black:s=64x48:r=600:d={frames / 600}"]
    args += ["-itsoffset", str(case.audio_delay), "-f", "lavfi", "-i"]
    tone = f"0.5*sin(2*PI*1000*t)*between(t\\,{beep}\\,{beep + BEEP})"
    args += [f"aevalsrc={tone}:s=48000:d={duration - case.audio_delay}"]
    args += ["-vf", f"drawbox=c=white:t=fill:enable='eq(n\\,{case.flash})',setpts=round(({expr})/TB)"]
    args += ["-fps_mode:v", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", case.audio]
    if case.start:
        args += ["-output_ts_offset", str(case.start)]
    run_ffmpeg(*args, str(path))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("flash-tick")
    return {name: make_flash_tick_video(root / f"{name}{c.suffix}", c) for name, c in CASES.items()}


def ffprobe(path: Path, entries: str, stream: str) -> list[str]:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries", entries, "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip().rstrip(",") for line in out.splitlines() if line.strip()]


def decoded(path: Path) -> tuple[np.ndarray, int]:
    """The decoder's presentation times (s) of every frame and the index of the brightest (the flash)."""
    from torchcodec.decoders import VideoDecoder

    d = VideoDecoder(str(path), seek_mode="exact")
    batch = d.get_frames_in_range(0, d.metadata.num_frames)
    return batch.pts_seconds.numpy().astype(np.float64), int(batch.data.float().mean(dim=(1, 2, 3)).argmax())


def onset(rows: np.ndarray, valid: np.ndarray) -> int:
    """The first valid frame whose loudest feature rises a tenth of the way from silence to the beep's peak (a
    window of a second holds a 0.1 s beep only in part at first: half way would be frames later)."""
    level = np.where(valid, rows.max(axis=1), -np.inf)
    return int(np.argmax(level > level[valid].min() + 0.1 * (level.max() - level[valid].min())))


class WordIndex:
    """A text backbone stand-in: word k's row is [k + 1] (what embed_transcript uses of a backbone)."""

    name, width = "word-index", 1

    def embed_words(self, words):
        return np.arange(1, len(words) + 1, dtype=np.float32)[:, None]


def write_transcript(path: Path, words: list[tuple[str, float, float]]) -> Path:
    from emofusion.asr.transcript import COLUMNS, SCHEMA
    from emofusion.io import write_parquet

    rows = [
        {"kind": "word", "segment": 0, "text": w, "start": s, "end": e, "probability": 1.0}
        | {"avg_logprob": np.nan, "no_speech_prob": np.nan, "compression_ratio": np.nan}
        for w, s, e in words
    ]
    write_parquet(path, pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS), metadata={"schema": SCHEMA})
    return path


# ------------------------------------------------------------------------------------------- the videos


def test_the_videos_are_what_their_names_say(videos):
    """The variable rate videos really keep two frame steps; the others' layout (late audio, start at 10 s)."""
    for name, path in videos.items():
        case = CASES[name]
        pts = np.sort([float(x) for x in ffprobe(path, "packet=pts_time", "v:0")])
        steps = set(np.round(np.diff(pts), 2))
        assert steps == ({0.04} if len(case.segments) == 1 else {0.04, 0.08}), (name, steps)
        assert float(ffprobe(path, "stream=start_time", "v:0")[0]) == pytest.approx(case.start)
        assert float(ffprobe(path, "stream=start_time", "a:0")[0]) == pytest.approx(case.start + case.audio_delay)
        pts, flash = decoded(path)
        assert flash == case.flash and pts[flash] - pts[0] == pytest.approx(flash_time(case), abs=1e-3)


# --------------------------------------------------------------------------------------------- timeline


@pytest.mark.parametrize("name", list(CASES))
def test_frame_times_are_the_decoders_presentation_times(videos, name):
    from emofusion.video import timeline

    pts, _ = decoded(videos[name])
    times = frame_times(videos[name], fps=timeline(videos[name]).fps)
    np.testing.assert_allclose(times, pts - pts[0], rtol=0, atol=1e-9)


def test_a_constant_rate_is_exactly_the_grid_and_a_variable_one_keeps_its_times():
    grid = np.arange(300) / 29.97
    # a 1 ms time base (Matroska) rounds a constant 29.97 fps: still exactly the grid, bit for bit
    assert presentation_times(np.round(grid, 3) + 5.0, 29.97).tobytes() == grid.tobytes()
    # half a frame late from frame 100 on (a dropped-and-resumed capture): its own times
    vfr = np.where(np.arange(300) >= 100, grid + 0.5 / 29.97, grid)
    np.testing.assert_array_equal(presentation_times(vfr + 2.0, 29.97), (vfr + 2.0) - 2.0)
    assert presentation_times(np.zeros(0), 30.0).shape == (0,)


# ------------------------------------------------------------------------------------- audio and words


@pytest.mark.parametrize("name", list(CASES))
def test_the_tick_is_heard_at_the_flash(videos, name, tmp_path):
    """The audio store's rows (log-mel, 50 ms window ending at each frame) first hear the beep at the flash's
    frame or the next (the flash frame's own window ends as the beep starts); on a uniform timeline the variable
    rate videos heard it 4 frames early."""
    from emofusion.audio.stage import extract_audio
    from emofusion.features.backbones import build_backbone

    case = CASES[name]
    wav = tmp_path / "a.wav"
    meta = extract_audio(videos[name], wav)
    assert meta["offset_seconds"] == pytest.approx(case.audio_delay, abs=1e-3)
    backbone = build_backbone("audio", "logmel", {"window": 0.05, "stats": ["mean"]})
    rows, valid, _ = stage.embed_audio(backbone, wav)
    assert 0 <= onset(rows, valid) - case.flash <= 1
    # valid exactly where the audio stream has samples: from the frame at the delay on
    pts, _ = decoded(videos[name])
    np.testing.assert_array_equal(valid, pts - pts[0] >= case.audio_delay - 1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_a_word_at_the_tick_lands_on_the_flash(videos, name, tmp_path):
    from emofusion.audio.stage import extract_audio

    case = CASES[name]
    wav = tmp_path / "a.wav"
    extract_audio(videos[name], wav)
    t = flash_time(case)
    transcript = write_transcript(tmp_path / "t.parquet", [("tick", t, t + BEEP)])
    rows, valid, _ = stage.embed_transcript(WordIndex(), transcript, wav)
    pts, _ = decoded(videos[name])
    rel = pts - pts[0]
    np.testing.assert_array_equal(valid, (rel >= t - 1e-6) & (rel < t + BEEP - 1e-6))
    assert np.flatnonzero(valid)[0] == case.flash and (rows[valid] == 1).all()


def test_audio_rows_need_their_video(tmp_path, videos):
    """The frame times come from the video the sidecar names: gone, the job says so instead of guessing."""
    from emofusion.audio.stage import extract_audio
    from emofusion.errors import InputError
    from emofusion.features.backbones import build_backbone

    video = tmp_path / "moved.mkv"
    shutil.copy(videos["vfr-mkv"], video)
    extract_audio(video, tmp_path / "a.wav")
    video.unlink()
    with pytest.raises(InputError, match=r"a\.wav: its video .*moved\.mkv.* does not exist"):
        stage.embed_audio(build_backbone("audio", "logmel", {}), tmp_path / "a.wav")


@pytest.mark.slow  # face detection on every frame
def test_the_face_store_is_on_the_same_timeline(videos, tmp_path):
    """Faces, audio and words share one timeline: the face stage's recorded times are the ones audio and words
    are put on (up to float rounding of the same integer timestamps)."""
    from emofusion.faces.stage import extract_faces
    from emofusion.faces.store import read_faces
    from emofusion.video import timeline

    video = videos["vfr-starts-at-10s"]
    extract_faces(video, tmp_path / "f.h5", clip="c")
    stamps = read_faces(tmp_path / "f.h5", crops=False)["timestamps"]
    np.testing.assert_allclose(frame_times(video, fps=timeline(video).fps), stamps - stamps[0], rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------- predict


@pytest.mark.slow  # the whole predict path (audio, opensmile, the model)
@pytest.mark.parametrize("name", ["vfr-starts-at-10s", "cfr-audio-late"])
def test_predict_time_s_is_the_decoders_time_and_the_tick_is_at_the_flash(videos, name, tmp_path):
    from emofusion.features.store import FeatureStore
    from test_predict import _bundle, _predict

    video = videos[name]
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert _predict(str(video), "--model", str(_bundle(tmp_path / "b")), "--out", str(out), "--cache", str(cache)) == 0
    (csv,) = out.glob(f"{video.stem}.*.csv")  # <video>.<model>.csv
    table = pd.read_csv(csv)
    pts, _ = decoded(video)
    np.testing.assert_allclose(table["time_s"], pts - pts[0], rtol=1e-7, atol=1e-7)  # the CSV's %.8g
    # the audio rows predict computed: eGeMAPS loudness (the first descriptor's mean) rises at the flash
    summary = json.loads(csv.with_suffix(".json").read_text())
    (shard,) = Path(summary["cache"]["folder"]).glob("audio-*.h5")
    with FeatureStore(shard) as store:
        rows, valid = store.read("video")
    assert 0 <= onset(rows[:, :1], valid.astype(bool)) - CASES[name].flash <= 1
    np.testing.assert_array_equal(table["has_audio"].to_numpy(bool), valid.astype(bool))


# ---------------------------------------------------------------------------------------------- overlay


def overlay_of(video: Path, out: Path, *, faces: Path | None = None) -> Path:
    """The overlay of ``video`` for a prediction made by hand (valence and arousal 0), boxes from ``faces``."""
    from emofusion.predict.overlay import write_overlay
    from emofusion.predict.predictor import Prediction
    from emofusion.video import timeline

    tl = timeline(video)
    zeros = np.zeros((tl.frames, 2), np.float32)
    p = Prediction(
        video=video,
        clip="video",
        frames=tl.frames,
        fps=tl.fps,
        times=frame_times(video, fps=tl.fps),
        raw=zeros,
        smoothed=zeros,
        has_face=None,
        has_audio=None,
        has_speech=None,
        has_word=None,
        faces=faces,
        sha256="",
    )
    return write_overlay(p, out)


def beep_start(path: Path) -> float:
    """Seconds, on the file's own clock, of the first audio sample louder than a tenth of full scale."""
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            x = np.abs(frame.to_ndarray()).max(axis=0)
            loud = np.flatnonzero(x > 0.1)
            if len(loud):
                return float(frame.pts * frame.time_base) + loud[0] / frame.sample_rate
    raise AssertionError(f"{path}: no beep")


@pytest.mark.parametrize("name", ["vfr-mp4", "vfr-starts-at-10s"])
def test_the_overlay_keeps_every_frames_time_and_the_audio_in_sync(videos, name, tmp_path):
    """VFR in, VFR out: each frame at its source time, the flash where it was, the beep under it (the overlay
    wrote a constant rate before: picture and sound drifted apart by a second here)."""
    src = videos[name]
    out = overlay_of(src, tmp_path / "o.mp4")
    src_pts, flash = decoded(src)
    out_pts, out_flash = decoded(out)
    assert out_flash == flash == CASES[name].flash
    np.testing.assert_allclose(out_pts - out_pts[0], src_pts - src_pts[0], rtol=0, atol=1e-3)
    assert abs(beep_start(out) - out_pts[flash]) < 0.01  # the source's beep starts exactly at the flash
    assert abs(beep_start(out) - out_pts[flash]) == pytest.approx(abs(beep_start(src) - src_pts[flash]), abs=2e-3)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """A 320x64 video with a white square off its centre, and copies tagged with each display rotation (the
    square lies clear of the gauge, which the overlay draws in the lower left, in every orientation)."""
    root = tmp_path_factory.mktemp("rotated")
    raw = root / "raw.mp4"
    run_ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:s=320x64:r=25:d=0.4", "-f", "lavfi", "-i", "sine=frequency=440:d=0.4",
        "-vf", "drawbox=x=140:y=20:w=30:h=20:c=white:t=fill", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(raw),
    )  # fmt: skip
    out = {0: raw}
    for degrees in (90, 180, 270):
        out[degrees] = root / f"rot{degrees}.mp4"
        run_ffmpeg("-i", str(raw), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(out[degrees]))
    return out


def white_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 of the white pixels of a (3, H, W) frame."""
    ys, xs = np.nonzero(frame.mean(axis=0) > 200)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_a_rotated_video_gets_an_upright_overlay_with_the_box_on_the_face(rotated, degrees, tmp_path):
    """The face stage's boxes are in display coordinates (the decoder turns the frames upright): the overlay is
    drawn upright too, untagged, and the box (here around the white square) lands on it."""
    import h5py
    from torchcodec.decoders import VideoDecoder

    from emofusion.faces.store import create_store

    video = rotated[degrees]
    upright = VideoDecoder(str(video)).get_frame_at(0).data.numpy()  # (3, H, W) as displayed
    x1, y1, x2, y2 = white_box(upright)
    faces = tmp_path / "faces.h5"
    n = VideoDecoder(str(video)).metadata.num_frames
    with h5py.File(faces, "w") as f:  # a face store whose boxes and valid (what write_overlay reads) are set
        ds = create_store(f, n, 16, batch=n)
        ds["boxes"][:] = np.tile(np.float32([x1 - 4, y1 - 4, x2 + 5, y2 + 5]), (n, 1))
        ds["valid"][:] = np.ones(n, bool)
        f.attrs["schema_version"] = 1
    out = overlay_of(video, tmp_path / "o.mp4", faces=faces)
    d = VideoDecoder(str(out))
    assert d.metadata.rotation in (None, 0.0)
    frame = d.get_frame_at(0).data.numpy().astype(int)
    assert frame.shape == upright.shape
    assert (frame[:, y1 : y2 + 1, x1 : x2 + 1].mean(axis=0) > 200).all()  # the square where it is displayed
    assert white_box(frame[:, y1 - 8 : y2 + 9, x1 - 8 : x2 + 9]) == (8, 8, x2 - x1 + 8, y2 - y1 + 8)  # and only there
    r, g, b = frame[:, y1 - 4, (x1 + x2) // 2]  # the box's top edge, above the square's middle
    assert g > 150 and r < 100 and b < 100, (r, g, b)
