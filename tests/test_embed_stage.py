"""The embedding stage: face crops, audio and transcripts to rows on the frame timeline, and the embed /
embed-merge commands that write them."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import torch

from emofusion.cli import main
from emofusion.errors import EmofusionError, InputError
from emofusion.features import stage
from emofusion.features.backbones import build_backbone
from emofusion.features.store import FeatureStore, read_attrs
from feature_inputs import face_store, random_crops

# ----------------------------------------------------------------------------------------------- visual stage


def test_visual_stage_embeds_only_valid_faces_in_bounded_batches(tmp_path):
    crops = random_crops(11)
    valid = np.array([1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1], bool)
    path = face_store(tmp_path / "c1.h5", crops, valid)
    backbone = build_backbone("visual", "_test_mean")
    feats, got_valid = stage.embed_faces(backbone, path, batch_size=3)
    expect = backbone.embed(torch.as_tensor(crops)).numpy()
    assert feats.shape == (11, 4) and feats.dtype == np.float32
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_allclose(feats[valid], expect[valid], rtol=1e-6)
    assert (feats[~valid] == 0).all()
    # The batch size changes nothing but memory.
    np.testing.assert_array_equal(stage.embed_faces(backbone, path, batch_size=64)[0], feats)


def test_window_backbone_sees_the_frames_ending_at_each_frame(tmp_path):
    n = 7
    crops = np.zeros((n, 8, 8, 3), np.uint8)
    crops[:, 0, 0, 0] = np.arange(n) + 10  # frame id in a pixel
    valid = np.ones(n, bool)
    valid[4] = False
    path = face_store(tmp_path / "c1.h5", crops, valid)
    feats, _ = stage.embed_faces(build_backbone("visual", "_test_window"), path, batch_size=2)
    ids = np.maximum(np.arange(n)[:, None] - np.array([2, 1, 0])[None], 0) + 10  # before frame 0: frame 0
    np.testing.assert_array_equal(feats[valid], ids[valid])
    assert (feats[4] == 0).all()


def test_a_face_store_without_faces_gives_invalid_rows_and_a_warning(tmp_path, caplog):
    path = face_store(tmp_path / "c1.h5", random_crops(5), np.zeros(5, bool))
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        feats, valid = stage.embed_faces(build_backbone("visual", "fer"), path, clip="c1")
    assert feats.shape == (5, 128) and not valid.any() and (feats == 0).all()
    assert "no valid face" in caplog.text and "c1" in caplog.text


def test_nan_from_a_backbone_fails_naming_clip_and_backbone_and_writes_nothing(tmp_path):
    path = face_store(tmp_path / "c1.h5", random_crops(4), np.ones(4, bool), clip="clipx")
    backbone = build_backbone("visual", "_test_nan")
    feats, valid = stage.embed_faces(backbone, path)
    out = tmp_path / "shard.h5"
    with pytest.raises(EmofusionError, match=r"_test_nan gave NaN or inf features for clip clipx"):
        stage.write_shard(out, [stage.ClipRows("clipx", feats, valid, 30.0)], backbone, {})
    assert not out.exists() and not list(tmp_path.glob(".shard*"))


def test_not_a_face_store_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        stage.embed_faces(build_backbone("visual", "_test_mean"), tmp_path / "none.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="is not a face store"):
        stage.embed_faces(build_backbone("visual", "_test_mean"), tmp_path / "bad.h5")


# ------------------------------------------------------------------------------------------ audio, text stage


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """The audio stage's output for a 1 s, 30 fps video with a 440 Hz tone over its whole length."""
    from conftest import run_ffmpeg
    from emofusion.audio.stage import extract_audio

    d = tmp_path_factory.mktemp("audio")
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=30:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000:duration=1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        str(d / "v.mkv"),
    )
    extract_audio(d / "v.mkv", d / "v.wav")
    return d / "v.wav"


@pytest.fixture(scope="module")
def burst_wav(tmp_path_factory):
    """The audio stage's output for a 1 s, 30 fps video whose audio stream starts 0.3 s after the first frame and
    lasts 0.5 s (decoded span 0.3-0.8 s), silent but for a 440 Hz burst at 0.65-0.75 s on the video's timeline."""
    from conftest import run_ffmpeg
    from emofusion.audio.stage import extract_audio

    d = tmp_path_factory.mktemp("burst")
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=30:duration=1",
        "-itsoffset",
        "0.3",
        "-f",
        "lavfi",
        "-i",
        r"aevalsrc=0.5*sin(2*PI*440*t)*between(t\,0.35\,0.45-1e-9):s=16000:d=0.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        str(d / "v.mkv"),
    )
    extract_audio(d / "v.mkv", d / "v.wav")
    return d / "v.wav"


def test_audio_stage_gives_one_row_per_frame_valid_inside_the_decoded_span(burst_wav):
    from emofusion.audio.read import read_audio

    samples, sr, meta = read_audio(burst_wav)
    fps = meta["fps"]
    assert (meta["frames"], fps, sr) == (30, 30.0, 16000)
    assert (meta["valid_start_sample"], meta["valid_end_sample"]) == (4800, 12800)  # 0.3 s late, 0.2 s early
    backbone = build_backbone("audio", "_test_energy")
    feats, valid, got_fps = stage.embed_audio(backbone, burst_wav)
    assert feats.shape == (30, 1) and got_fps == pytest.approx(fps)
    # a frame is valid when its time (its window's end) is inside the span: frames 9 (0.3 s) to 24 (0.8 s)
    np.testing.assert_array_equal(np.flatnonzero(~valid), [*range(0, 9), *range(25, 30)])
    # the burst's samples are [10400, 12000); the 0.2 s window ending at frame i holds samples
    # [16000 i/30 - 3200, 16000 i/30): frame 20 (10667) is the first to reach into it, frame 28 (14933) the last
    raw = backbone.embed(samples, sr, np.arange(30) / fps)[:, 0]
    np.testing.assert_array_equal(np.flatnonzero(raw > 0.05), np.arange(20, 29))
    # frames 25-28 heard the burst but end past the span: zeroed, the rest of the burst kept
    assert (feats[~valid] == 0).all()
    np.testing.assert_array_equal(feats[:, 0], np.where(valid, raw, 0))
    np.testing.assert_array_equal(np.flatnonzero(feats[:, 0] > 0.05), np.arange(20, 25))
    assert (feats[valid, 0][(feats[valid, 0] <= 0.05)] < 1e-3).all()  # silence elsewhere, not a smeared burst
    # frames 23 and 24 hold the whole 0.1 s burst in their 0.2 s window: RMS 0.5/sqrt(2) * sqrt(0.1/0.2);
    # 20-22 hold part of it
    np.testing.assert_allclose(feats[23:25, 0], 0.25, atol=0.005)
    assert (feats[20:23, 0] < 0.24).all()


def test_text_rows_follow_word_timing_and_a_transcript_past_the_audio_fails(tmp_path, wav):
    import pandas as pd

    from emofusion.asr.transcript import COLUMNS, SCHEMA
    from emofusion.io import write_parquet

    def transcript(words, name):
        rows = [
            {
                "kind": "word",
                "segment": 0,
                "text": w,
                "start": s,
                "end": e,
                "probability": 1.0,
                "avg_logprob": np.nan,
                "no_speech_prob": np.nan,
                "compression_ratio": np.nan,
            }
            for w, s, e in words
        ]
        path = tmp_path / name
        write_parquet(path, pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS), metadata={"schema": SCHEMA})
        return path

    t = transcript([(" hi", 0.10, 0.30), ("there", 0.50, 0.80)], "t.parquet")
    feats, valid, fps = stage.embed_transcript(build_backbone("text", "_test_wordlen"), t, wav)
    times = np.arange(len(valid)) / fps
    in_hi, in_there = (times >= 0.10) & (times < 0.30), (times >= 0.50) & (times < 0.80)
    np.testing.assert_array_equal(valid, in_hi | in_there)
    assert (feats[in_hi] == [2, 0]).all() and (feats[in_there] == [5, 1]).all() and (feats[~valid] == 0).all()
    late = transcript([("late", 0.5, 3.0)], "late.parquet")
    with pytest.raises(InputError, match="late.parquet: words run to 3.000 s but the audio lasts"):
        stage.embed_transcript(build_backbone("text", "_test_wordlen"), late, wav)
    empty = transcript([], "empty.parquet")
    feats, valid, _ = stage.embed_transcript(build_backbone("text", "_test_wordlen"), empty, wav)
    assert not valid.any() and feats.shape == (len(valid), 2)


def test_audio_shard_holds_every_clip_of_the_video(tmp_path, wav):
    out = tmp_path / "v.h5"
    assert (
        main(
            [
                "embed",
                "--modality",
                "audio",
                "--backbone",
                "_test_energy",
                "--audio",
                str(wav),
                "--clips",
                "v_left",
                "v_right",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    store = FeatureStore(out, modality="audio")
    assert store.clips == ["v_left", "v_right"]
    np.testing.assert_array_equal(store.read("v_left")[0], store.read("v_right")[0])


# --------------------------------------------------------------------------------------------------- commands


def test_embed_and_merge_commands_write_a_store_with_provenance(tmp_path, make_video):
    video = make_video(frames=12, fps=25, audio=False)
    crops = random_crops(12, seed=4)
    valid = np.ones(12, bool)
    valid[[0, 5]] = False
    shards = []
    for clip in ("c1", "c2"):
        faces = face_store(tmp_path / f"{clip}.h5", crops, valid, clip=clip, video=str(video))
        shards.append(tmp_path / "shards" / f"{clip}.h5")
        cfg = json.dumps({"features": {"device": "cpu", "batch_size": 5}})
        assert (
            main(
                [
                    "embed",
                    "--config-json",
                    cfg,
                    "--modality",
                    "visual",
                    "--backbone",
                    "_test_mean",
                    "--faces",
                    str(faces),
                    "--video",
                    str(video),
                    "--out",
                    str(shards[-1]),
                ]
            )
            == 0
        )
    attrs = read_attrs(shards[0])
    assert (attrs["modality"], attrs["backbone"], attrs["width"], attrs["weights_sha256"]) == (
        "visual",
        "_test_mean",
        4,
        "none",
    )
    prov = attrs["provenance"]
    assert prov["config"]["features"]["batch_size"] == 5 and "torch" in prov["versions"] and prov["config_hash"]
    out = tmp_path / "store.h5"
    assert (
        main(
            [
                "embed-merge",
                "--modality",
                "visual",
                "--backbone",
                "_test_mean",
                "--shards",
                *map(str, shards),
                "--clips",
                "c1",
                "c2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    store = FeatureStore(out, modality="visual", backbone="_test_mean", weights_sha256="none")
    feats, got = store.read("c2")
    np.testing.assert_array_equal(got, valid)
    expect = build_backbone("visual", "_test_mean").embed(torch.as_tensor(crops)).numpy()
    np.testing.assert_allclose(feats[valid], expect[valid], rtol=1e-6)
    with h5py.File(out) as f:
        assert f["c1"].attrs["fps"] == pytest.approx(25.0) and f["c1"].attrs["frames"] == 12
    # the face store's frames must match its video's
    short = face_store(tmp_path / "short.h5", crops[:10], valid[:10], clip="c3", video=str(video))
    assert (
        main(
            [
                "embed",
                "--modality",
                "visual",
                "--backbone",
                "_test_mean",
                "--faces",
                str(short),
                "--out",
                str(tmp_path / "x.h5"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "x.h5").exists()


def test_embed_command_names_the_missing_weights_key(tmp_path, caplog):
    faces = face_store(tmp_path / "c1.h5", random_crops(2), np.ones(2, bool))
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        rc = main(
            [
                "embed",
                "--modality",
                "visual",
                "--backbone",
                "hsemotion",
                "--faces",
                str(faces),
                "--out",
                str(tmp_path / "o.h5"),
            ]
        )
    assert rc == 1 and "features.visual.backbones.hsemotion.weights" in caplog.text
