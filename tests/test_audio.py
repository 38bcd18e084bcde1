"""Audio stage: resampling, alignment to the frame timeline, missing and corrupt inputs, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_DATA
from conftest import run_ffmpeg as ffmpeg
from emofusion.audio.read import read_audio, read_audio_metadata, sidecar_path
from emofusion.audio.stage import extract_audio
from emofusion.cli import main
from emofusion.errors import ConfigError, InputError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program to make test media")

PYFEAT = TEST_DATA / "pyfeat_videos"


def mux_video(
    path: Path,
    *,
    seconds: float = 3.0,
    fps: int = 25,
    audio: str | None = None,
    video_offset: float = 0.0,
    audio_offset: float = 0.0,
    acodec: str = "aac",
) -> Path:
    """A small test-pattern video; ``audio`` is a lavfi audio source; offsets shift a stream's timestamps."""
    args = []
    if video_offset:
        args += ["-itsoffset", str(video_offset)]
    args += ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate={fps}:duration={seconds}"]
    if audio:
        if audio_offset:
            args += ["-itsoffset", str(audio_offset)]
        args += ["-f", "lavfi", "-i", audio, "-map", "0:v", "-map", "1:a", "-c:a", acodec]
    ffmpeg(*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def onset(x: np.ndarray, rate: int, level: float = 0.02) -> float:
    """Time of the first sample above ``level``."""
    idx = np.flatnonzero(np.abs(x) > level)
    assert idx.size, "no signal"
    return idx[0] / rate


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` (temporary ones included); [] when it was never created."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(("source_rate", "freq"), [(44100, 440.0), (48000, 3000.0), (22050, 1234.0)])
def test_resampling_keeps_a_sines_frequency_and_level(tmp_path, source_rate, freq):
    video = mux_video(
        tmp_path / "v.mp4", seconds=2.0, audio=f"sine=frequency={freq}:sample_rate={source_rate}:duration=2"
    )
    info = extract_audio(video, tmp_path / "out.wav", sample_rate=16000)
    x, rate, meta = read_audio(tmp_path / "out.wav")
    assert rate == 16000 and x.dtype == np.float32 and x.ndim == 1
    assert meta == info and info["source_stream"]["sample_rate"] == source_rate
    assert abs(peak_frequency(x[1600:-1600], rate) - freq) <= 1.0  # 1.7 s window: 0.6 Hz bins
    # lavfi's sine has amplitude 1/8; resampling must not change the level (-18 dBFS)
    assert np.abs(x[1600:-1600]).max() == pytest.approx(0.125, rel=0.05)


def test_other_sample_rate_and_stereo_is_averaged_not_summed(tmp_path):
    # Same tone on both channels: the mono mix must keep its level (FFmpeg's own downmix would add 3 dB).
    video = mux_video(
        tmp_path / "st.mkv",
        seconds=2.0,
        acodec="pcm_s16le",
        audio="sine=frequency=500:sample_rate=48000:duration=2,pan=stereo|c0=c0|c1=c0",
    )
    info = extract_audio(video, tmp_path / "out.wav", sample_rate=8000)
    x, rate, _ = read_audio(tmp_path / "out.wav")
    assert info["source_stream"]["channels"] == 2
    assert rate == 8000 and x.size == info["num_samples"] == round(info["video_duration_seconds"] * 8000)
    assert np.abs(x[800:-800]).max() == pytest.approx(0.125, rel=0.05)
    assert abs(peak_frequency(x[800:-800], rate) - 500) <= 1.0


def test_audio_starting_after_the_video_is_padded(tmp_path):
    # The audio stream starts 0.5 s after the first frame (mkv keeps the timestamps exactly as muxed).
    video = mux_video(
        tmp_path / "late.mkv",
        audio="sine=frequency=1000:sample_rate=44100:duration=2",
        audio_offset=0.5,
        acodec="pcm_s16le",
    )
    info = extract_audio(video, tmp_path / "late.wav")
    x, rate, _ = read_audio(tmp_path / "late.wav")
    assert info["offset_seconds"] == pytest.approx(0.5, abs=1e-3)
    assert info["offset_samples"] == 8000 and info["valid_start_sample"] == 8000
    assert info["valid_end_sample"] == pytest.approx(8000 + 2 * 16000, abs=2)
    assert x.size == info["num_samples"] == 3 * 16000  # the video's duration, whatever the audio's
    assert onset(x, rate) == pytest.approx(0.5, abs=2e-3)
    assert not np.any(x[:8000]) and not np.any(x[info["valid_end_sample"] :])


def test_audio_starting_before_the_video_is_trimmed(tmp_path):
    # Video starts at 0.4 s, audio at 0 with a tone from 0.6 s: on the frame timeline the tone starts at 0.2 s.
    video = mux_video(
        tmp_path / "early.mkv",
        video_offset=0.4,
        acodec="pcm_s16le",
        audio="sine=frequency=1000:sample_rate=44100:duration=4,adelay=600:all=1",
    )
    info = extract_audio(video, tmp_path / "early.wav")
    x, rate, _ = read_audio(tmp_path / "early.wav")
    assert info["video_start_seconds"] == pytest.approx(0.4, abs=1e-3)
    assert info["offset_seconds"] == pytest.approx(-0.4, abs=1e-3) and info["offset_samples"] == -6400
    assert info["valid_start_sample"] == 0 and info["valid_end_sample"] == x.size == 3 * 16000
    assert onset(x, rate) == pytest.approx(0.2, abs=2e-3)


def test_mp4_offset_with_aac_priming(tmp_path):
    # The usual real-world case: AAC in MP4 shifted with -itsoffset; the tone must land 0.5 s after frame 0.
    video = mux_video(tmp_path / "late.mp4", audio="sine=frequency=1000:sample_rate=44100:duration=2", audio_offset=0.5)
    info = extract_audio(video, tmp_path / "late.wav")
    x, rate, _ = read_audio(tmp_path / "late.wav")
    assert info["offset_seconds"] == pytest.approx(0.5, abs=0.03)  # stream start includes the encoder priming
    assert onset(x, rate) == pytest.approx(0.5, abs=3e-3)


def test_real_video_with_late_audio_stream(tmp_path):
    info = extract_audio(PYFEAT / "face_noface.mov", tmp_path / "f.wav")
    assert info["offset_seconds"] == pytest.approx(2.43, abs=0.01)
    assert info["valid_start_sample"] == info["offset_samples"] == round(info["offset_seconds"] * 16000)
    assert info["frames"] == 169 and info["has_audio"]


def test_write_blocks_do_not_change_the_samples(tmp_path):
    video = mux_video(tmp_path / "v.mp4", seconds=3.0, audio="sine=frequency=300:sample_rate=44100:duration=3")
    extract_audio(video, tmp_path / "whole.wav", chunk_seconds=60.0)
    extract_audio(video, tmp_path / "chunks.wav", chunk_seconds=0.37)
    a, _, _ = read_audio(tmp_path / "whole.wav", with_metadata=False)
    b, _, _ = read_audio(tmp_path / "chunks.wav", with_metadata=False)
    # one resampler runs over the whole contiguous stream: the block size only bounds memory
    np.testing.assert_array_equal(a, b)


def mux_jump(path: Path, pts: str, *, freq: float = 301.0, rate: int = 16000) -> Path:
    """8 s of video over a 6 s sine whose timestamps are rewritten by the asetpts expression ``pts``; 50-ms
    frames at 16 kHz so the jump falls on a frame boundary (Matroska keeps the timestamps as muxed, to 1 ms)."""
    frame = f":samples_per_frame={rate // 20}" if rate == 16000 else ""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=25:duration=8",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={freq}:sample_rate={rate}{frame}:duration=6,asetpts='{pts}'",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        str(path),
    )
    return path


def tone(t: np.ndarray, freq: float = 301.0) -> np.ndarray:
    return 0.125 * np.sin(2 * np.pi * freq * t)  # lavfi's sine: amplitude 1/8, phase 0 at its first sample


@pytest.mark.parametrize("chunk_seconds", [30.0, 0.5])
def test_gap_in_the_audio_timestamps_keeps_later_audio_at_its_time(tmp_path, chunk_seconds, caplog):
    # The stream's timestamps jump 1.5 s forward at 2.0 s: the tone's last 4 s belong at [3.5, 7.5) on the
    # frame timeline, silence before them. Decoding by time ranges either shifted them to [2.0, 6.0) or, with a
    # range inside the gap, stopped at 2.0 s.
    video = mux_jump(tmp_path / "gap.mkv", "PTS+gte(T,2)*1.5/TB")
    info = extract_audio(video, tmp_path / "gap.wav", chunk_seconds=chunk_seconds)
    x, rate, _ = read_audio(tmp_path / "gap.wav")
    t = np.arange(x.size) / rate
    assert x.size == info["num_samples"] == 8 * 16000
    assert info["gaps"] == 1 and info["gap_seconds"] == pytest.approx(1.5, abs=1e-3) and info["overlaps"] == 0
    assert info["valid_start_sample"] == 0 and info["valid_end_sample"] == 120000  # 7.5 s
    np.testing.assert_allclose(x[:32000], tone(t[:32000]), atol=3e-4)  # [0, 2.0): as decoded
    assert not np.any(x[32000:56000])  # [2.0, 3.5): the gap
    # [3.5, 7.5): sample for sample where the timestamps put it (301 Hz: a 1.5-s shift would flip the sign)
    np.testing.assert_allclose(x[56000:120000], tone(t[56000:120000] - 1.5), atol=3e-4)
    assert not np.any(x[120000:])
    assert "jump forward by 1.500 s at 3.500 s" in caplog.text


def test_gap_in_resampled_audio(tmp_path):
    # The reviewer's case: 44.1 kHz PCM in 1024-sample packets, resampled to 16 kHz across the gap.
    video = mux_jump(tmp_path / "gap.mkv", "PTS+gte(T,2)*1.5/TB", freq=300.0, rate=44100)
    info = extract_audio(video, tmp_path / "gap.wav")
    x, rate, _ = read_audio(tmp_path / "gap.wav")
    loud = np.flatnonzero(np.abs(x) > 0.02) / rate
    assert info["gaps"] == 1 and info["valid_end_sample"] == pytest.approx(120000, abs=20)
    assert loud[-1] == pytest.approx(7.5, abs=2e-3)
    # the packet holding 2.0 s runs to 2.02 s; the next one is 1.5 s later
    assert loud[loud < 3.0].max() == pytest.approx(2.02, abs=3e-3) and loud[loud > 2.1].min() == pytest.approx(
        3.52, abs=3e-3
    )
    assert abs(peak_frequency(x[60000:116000], rate) - 300) <= 1.0


def test_overlapping_audio_timestamps_drop_the_repeats(tmp_path, caplog):
    # Timestamps jump 0.5 s back at 2.0 s (FFmpeg's muxer holds the ten overlapping frames at 1.95 s): what is
    # already written stays, the frames that overlap it are dropped, the rest follows on at its timestamps.
    video = mux_jump(tmp_path / "ovl.mkv", "PTS-gte(T,2)*0.5/TB")
    info = extract_audio(video, tmp_path / "ovl.wav")
    x, rate, _ = read_audio(tmp_path / "ovl.wav")
    t = np.arange(x.size) / rate
    assert info["overlaps"] == 10 and info["overlap_seconds"] == pytest.approx(0.5, abs=1e-3)
    assert info["gaps"] == 0 and info["valid_end_sample"] == 88000  # 6 s of tone less 0.5 s dropped
    np.testing.assert_allclose(x[:32000], tone(t[:32000]), atol=3e-4)
    np.testing.assert_allclose(x[32000:88000], tone(t[32000:88000] + 0.5), atol=3e-4)
    assert not np.any(x[88000:])
    assert "jump back by 0.050 s at 1.950 s" in caplog.text and "10 overlaps (0.500 s dropped)" in caplog.text


def test_the_default_audio_stream_is_used(tmp_path):
    # Two audio tracks, the second marked default: FFmpeg (and a media player) would play the second.
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=400:sample_rate=16000:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=900:sample_rate=16000:duration=2",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-disposition:a:0",
        "0",
        "-disposition:a:1",
        "default",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        str(tmp_path / "two.mkv"),
    )
    info = extract_audio(tmp_path / "two.mkv", tmp_path / "two.wav")
    x, rate, _ = read_audio(tmp_path / "two.wav")
    assert info["source_stream"]["stream_index"] == 2
    assert abs(peak_frequency(x[1600:-1600], rate) - 900) <= 1.0


def test_separate_audio_file(tmp_path):
    video = mux_video(tmp_path / "v.mp4", seconds=2.0)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=700:sample_rate=16000:duration=1.5", str(tmp_path / "a.wav"))
    info = extract_audio(video, tmp_path / "out.wav", audio=tmp_path / "a.wav")
    assert info["audio_source"] == str(tmp_path / "a.wav") and info["offset_seconds"] == 0.0
    assert info["valid_end_sample"] == 24000 and info["num_samples"] == 32000


def test_no_audio_stream_is_an_error_naming_the_file(tmp_path):
    video = mux_video(tmp_path / "silent.mp4")
    out = tmp_path / "out" / "silent.wav"
    with pytest.raises(InputError, match=r"silent\.mp4 has no audio stream.*audio\.missing_audio"):
        extract_audio(video, out)
    assert leftovers(out.parent) == []


def test_no_audio_stream_with_silence_option(tmp_path):
    video = mux_video(tmp_path / "silent.mp4", seconds=2.0, fps=30)
    info = extract_audio(video, tmp_path / "silent.wav", missing_audio="silence")
    x, _, meta = read_audio(tmp_path / "silent.wav")
    assert meta["has_audio"] is False and meta["source_stream"] is None
    assert x.size == 32000 and not np.any(x)
    assert info["valid_start_sample"] == info["valid_end_sample"] == 0
    assert info["frames"] == 60 and info["fps"] == pytest.approx(30.0)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_corrupt_input_fails_cleanly(tmp_path, kind):
    good = mux_video(tmp_path / "good.mp4", audio="sine=frequency=440:sample_rate=44100:duration=3")
    bad = tmp_path / "bad.mp4"
    data = good.read_bytes()
    bad.write_bytes(
        {"garbage": np.random.default_rng(0).bytes(20000), "truncated": data[: len(data) // 2], "empty": b""}[kind]
    )
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match=r"bad\.mp4"):
        extract_audio(bad, out_dir / "bad.wav")
    assert leftovers(out_dir) == []


def test_corrupt_audio_stream_named(tmp_path):
    good = mux_video(tmp_path / "v.mp4", seconds=2.0)
    bad = tmp_path / "a.wav"
    bad.write_bytes(b"RIFF" + np.random.default_rng(1).bytes(4000))
    with pytest.raises(InputError, match=r"a\.wav"):
        extract_audio(good, tmp_path / "out" / "x.wav", audio=bad)
    assert leftovers(tmp_path / "out") == []


def test_bad_arguments(tmp_path):
    video = mux_video(tmp_path / "v.mp4", seconds=1.0)
    with pytest.raises(ConfigError, match="audio.missing_audio"):
        extract_audio(video, tmp_path / "x.wav", missing_audio="skip")
    with pytest.raises(InputError, match="does not exist"):
        extract_audio(tmp_path / "nope.mp4", tmp_path / "x.wav")
    with pytest.raises(InputError, match="metadata of"):
        read_audio_metadata(tmp_path / "nothing.wav")


def test_cli_writes_wav_and_sidecar_with_provenance(tmp_path, caplog):
    video = mux_video(tmp_path / "v.mp4", seconds=1.0, audio="sine=frequency=440:sample_rate=44100:duration=1")
    out = tmp_path / "results" / "audio" / "v.wav"
    cfg = json.dumps({"audio": {"sample_rate": 16000}})
    assert main(["audio", "--config-json", cfg, "--video", str(video), "--out", str(out)]) == 0
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["schema"] == "emofusion.audio/1" and meta["time_origin"] == "first video frame"
    assert meta["provenance"]["config"] == {"audio": {"sample_rate": 16000, "missing_audio": "error"}}
    assert "versions" in meta["provenance"] and meta["provenance"]["config_hash"]
    assert leftovers(out.parent) == ["v.json", "v.wav"]

    silent = mux_video(tmp_path / "silent.mp4", seconds=1.0)
    out2 = tmp_path / "results" / "audio" / "silent.wav"
    assert main(["audio", "--video", str(silent), "--out", str(out2)]) == 1
    assert "silent.mp4 has no audio stream" in caplog.text
    assert leftovers(out.parent) == ["v.json", "v.wav"]
    cfg = json.dumps({"audio": {"missing_audio": "silence"}})
    assert main(["audio", "--config-json", cfg, "--video", str(silent), "--out", str(out2)]) == 0
    assert read_audio_metadata(out2)["has_audio"] is False
