"""emofusion predict tells audio from speech: ``has_audio`` (decoded audio covers the frame, silence included) and
``has_speech`` (silero VAD hears a voice), a text model that hears no word warns, and one predict call loads
Whisper and each backbone once for all its videos."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_ffmpeg
from test_predict import SYNTHETIC, _bundle, _predict

LEAD = 1.5  # seconds of digital silence before the speech
SPEECH_SECONDS = 4.5


@pytest.fixture(scope="module")
def silent(tmp_path_factory) -> Path:
    """A video whose audio track is digital zeros (-91 dB after AAC): audio on every frame, no speech."""
    out = tmp_path_factory.mktemp("silent") / "silent.mp4"
    run_ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2"),
        *("-f", "lavfi", "-i", "anullsrc=channel_layout=mono:sample_rate=16000"),
        *("-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out)),
    )
    return out


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """espeak-ng speech muxed under a test video after LEAD s of digital silence."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs the espeak-ng program")
    d = tmp_path_factory.mktemp("spoken")
    subprocess.run(
        ["espeak-ng", "-s", "140", "-w", str(d / "tts.wav"), "the quick brown fox jumps over the lazy dog"],
        check=True,
    )
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=64x48:rate=25:duration={SPEECH_SECONDS}"),
        *("-i", str(d / "tts.wav")),
        *("-filter_complex", f"[1:a]adelay={int(LEAD * 1000)}:all=1,apad[a]", "-map", "0:v", "-map", "[a]"),
        *("-t", str(SPEECH_SECONDS), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "16000"),
        str(d / "spoken.mp4"),
    )
    return d / "spoken.mp4"


def _table(tmp_path: Path, video: Path, modalities=("audio",)) -> tuple[pd.DataFrame, dict]:
    out = tmp_path / "out"
    bundle = _bundle(tmp_path / "b", modalities=modalities)
    assert _predict(str(video), "--model", str(bundle), "--out", str(out), "--cache", str(tmp_path / "c")) == 0
    base = out / f"{video.stem}.{SYNTHETIC}"
    return pd.read_csv(f"{base}.csv"), json.loads(Path(f"{base}.json").read_text())


def test_a_digitally_silent_track_is_audio_without_speech(tmp_path, silent):
    table, summary = _table(tmp_path, silent)
    assert len(table) == 50
    assert table["has_audio"].all(), "the silent track decodes: the audio input is valid on every frame"
    assert not table["has_speech"].any(), "digital silence was reported as speech"
    assert summary["fraction_with_audio"] == 1.0 and summary["fraction_with_speech"] == 0.0
    assert summary["warnings"] == []  # audio is there; an audio-only model has nothing to warn about
    assert "VAD" in summary["columns"]["has_speech"]


def test_speech_is_found_where_it_is_spoken(tmp_path, spoken):
    table, summary = _table(tmp_path, spoken)
    assert table["has_audio"].all()
    t, speech = table["time_s"].to_numpy(), table["has_speech"].to_numpy(bool)
    # the VAD pads each region by 0.4 s (faster-whisper's speech_pad_ms, as Whisper decodes it)
    assert not speech[t < LEAD - 0.5].any(), "speech reported in the leading silence"
    # espeak's sentence lasts about 3 s from LEAD: its middle second is speech on every frame
    assert speech[(t >= LEAD + 0.5) & (t < LEAD + 1.5)].all()
    assert 0.3 < summary["fraction_with_speech"] < 1.0


@pytest.mark.slow  # real ASR (Whisper and its VAD)
def test_a_text_model_that_hears_no_word_warns(tmp_path, silent, caplog):
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        table, summary = _table(tmp_path, silent, modalities=("audio", "text"))
    assert table["has_audio"].all() and not table["has_word"].any()
    (warning,) = summary["warnings"]
    assert "no word" in warning and str(silent) in warning
    assert any(r.getMessage() == warning for r in caplog.records)


@pytest.mark.slow  # real ASR (Whisper) on two videos
def test_one_predict_call_loads_whisper_and_each_backbone_once(tmp_path, spoken, silent, monkeypatch):
    """Two videos in one call: one Whisper, one backbone per modality (Whisper used to be loaded per video)."""
    from emofusion.asr import engines
    from emofusion.features import backbones

    loads: list[str] = []
    build = backbones.build_backbone

    def counted_backbone(modality, *args, **kwargs):
        loads.append(modality)
        return build(modality, *args, **kwargs)

    monkeypatch.setattr(backbones, "build_backbone", counted_backbone)
    for name, cls in list(engines.ENGINES.items()):

        def counted_engine(*args, _cls=cls, _name=name, **kwargs):
            loads.append(f"asr {_name}")
            return _cls(*args, **kwargs)

        monkeypatch.setitem(engines.ENGINES, name, counted_engine)
    bundle = _bundle(tmp_path / "b", modalities=("audio", "text"))
    loads.clear()  # the bundle's recipe built each backbone once to describe it
    out = tmp_path / "out"
    assert (
        _predict(str(spoken), str(silent), "--model", str(bundle), "--out", str(out), "--cache", str(tmp_path / "c"))
        == 0
    )
    assert sorted(loads) == ["asr faster-whisper", "audio", "text"]
    # both videos were transcribed (the spoken one has words), by that one engine
    assert pd.read_csv(out / f"{spoken.stem}.{SYNTHETIC}.csv")["has_word"].any()
    assert np.isclose(json.loads((out / f"{silent.stem}.{SYNTHETIC}.json").read_text())["fraction_with_word"], 0.0)


def test_one_predict_call_loads_the_face_detector_once(tmp_path, make_video, monkeypatch):
    """Two videos in one call: one MTCNN, one backbone per modality (the detector used to be loaded per video)."""
    from emofusion.faces import stage as faces
    from emofusion.features import backbones

    loads: list[str] = []
    build, detector = backbones.build_backbone, faces.make_detector

    def counted_backbone(modality, *args, **kwargs):
        loads.append(modality)
        return build(modality, *args, **kwargs)

    def counted_detector(*args, **kwargs):
        loads.append("mtcnn")
        return detector(*args, **kwargs)

    monkeypatch.setattr(backbones, "build_backbone", counted_backbone)
    monkeypatch.setattr(faces, "make_detector", counted_detector)
    bundle = _bundle(tmp_path / "b", modalities=("visual", "audio"))
    loads.clear()  # the bundle's recipe built each backbone once to describe it
    videos = [str(make_video(frames=12)), str(make_video(frames=14))]
    assert (
        _predict(*videos, "--model", str(bundle), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c")) == 0
    )
    assert sorted(loads) == ["audio", "mtcnn", "visual"]


def test_the_audio_log_says_no_audio_instead_of_an_offset_of_none(tmp_path, make_video, caplog):
    from emofusion.audio.stage import extract_audio

    with caplog.at_level(logging.INFO, logger="emofusion"):
        extract_audio(
            make_video(frames=12, audio=False), tmp_path / "none.wav", sample_rate=16000, missing_audio="silence"
        )
        extract_audio(make_video(frames=12), tmp_path / "some.wav", sample_rate=16000, missing_audio="error")
    (none,) = [r.getMessage() for r in caplog.records if "none.wav: " in r.getMessage()]
    (some,) = [r.getMessage() for r in caplog.records if "some.wav: " in r.getMessage()]
    assert "no audio, valid samples [0, 0)" in none and "None" not in none
    assert "audio offset 0 s" in some


@pytest.mark.parametrize(
    ("audio", "speech", "shaded"),
    [(True, False, {"no speech"}), (False, False, {"no audio"}), (True, True, set())],
)
def test_the_plot_shades_no_audio_and_no_speech_apart(audio, speech, shaded):
    """The legend says what the frames lack: a silent track is "no speech", a video without sound "no audio"."""
    from emofusion.predict.outputs import shaded as bands
    from emofusion.predict.predictor import Prediction

    n = 10
    zeros = np.zeros((n, 2), np.float32)
    p = Prediction(
        video=Path("v.mp4"),
        clip="video",
        frames=n,
        fps=10.0,
        times=np.arange(n) / 10,
        raw=zeros,
        smoothed=zeros,
        has_face=None,
        has_audio=np.full(n, audio),
        has_speech=np.full(n, speech),
        has_word=None,
        faces=None,
        sha256="",
    )
    assert {label for missing, _, label in bands(p) if missing.any()} == shaded
