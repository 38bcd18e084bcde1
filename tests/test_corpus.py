"""Corpus readers, labels and folds on small corpora written by the tests, including malformed ones."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emofusion.config import load_config
from emofusion.corpus import assign_folds, build_manifest, discover, fold_split, probe_video, validate_clip_id
from emofusion.errors import ConfigError, InputError
from emofusion.labels import clip_labels, read_annotation

ANN = Path("annotations") / "VA_Estimation_Challenge"


def write_annotation(path: Path, rows: int, *, header: str = "valence,arousal", gap: slice | None = None) -> None:
    v = np.round(np.linspace(-0.9, 0.9, rows), 3)
    a = np.round(np.linspace(0.5, -0.5, rows), 3)
    lines = [header] + [f"{x},{y}" for x, y in zip(v, a, strict=True)]
    if gap is not None:
        for i in range(rows)[gap]:
            lines[i + 1] = "-5,-5"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def affwild(tmp_path, make_video):
    """A small Aff-Wild2-layout corpus: 4 videos (one two-person), train/validation/test."""
    root = tmp_path / "aw2"
    video = make_video(frames=12)
    for batch, name in [
        ("batch1", "vidA"),
        ("batch1", "vidB"),
        ("batch2", "vidC"),
        ("batch2", "vidD"),
        ("batch2", "vidE"),
    ]:
        (root / "videos" / batch).mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / "videos" / batch / f"{name}.mp4")
    write_annotation(root / ANN / "Train_Set" / "vidA.txt", 12, gap=slice(3, 5))
    write_annotation(root / ANN / "Train_Set" / "vidC_left.txt", 12)
    write_annotation(root / ANN / "Train_Set" / "vidC_right.txt", 12)
    write_annotation(root / ANN / "Train_Set" / "vidE.txt", 12)
    write_annotation(root / ANN / "Validation_Set" / "vidB.txt", 12)
    (root / "test_set.txt").write_text("vidD\n")
    (root / "cropped_aligned" / "vidA").mkdir(parents=True)
    return root


def corpus_cfg(root: Path, **extra) -> dict:
    return load_config(overrides={"corpus": {"root": str(root), "test_list": str(root / "test_set.txt"), **extra}})


def test_discover_affwild2(affwild):
    specs = discover(corpus_cfg(affwild)["corpus"])
    assert [s.clip for s in specs] == ["vidA", "vidB", "vidC_left", "vidC_right", "vidD", "vidE"]
    by = {s.clip: s for s in specs}
    assert by["vidC_left"].video == by["vidC_right"].video == str(affwild / "videos/batch2/vidC.mp4")
    assert by["vidC_left"].video_id == "vidC"
    assert by["vidB"].split == "validation" and by["vidD"].split == "test" and by["vidD"].annotation is None
    assert by["vidA"].crops == str(affwild / "cropped_aligned/vidA") and by["vidB"].crops is None
    assert discover(corpus_cfg(affwild, use_cropped_aligned=False)["corpus"])[0].crops is None


def test_build_manifest(affwild):
    df = build_manifest(corpus_cfg(affwild))
    assert list(df["clip"]) == sorted(df["clip"])
    assert (df["frames"] == 12).all() and np.allclose(df["fps"], 30.0)
    assert df.set_index("clip").loc["vidD", "fold"] == -1
    folds = df.set_index("clip")["fold"]
    assert folds["vidC_left"] == folds["vidC_right"]  # a two-person video stays in one group
    assert set(folds.drop("vidD")) <= {1, 2, 3}


def test_probe_counts_decoded_frames(make_video):
    frames, fps = probe_video(make_video(frames=17, fps=25))
    assert frames == 17 and fps == pytest.approx(25.0)


def test_folds_deterministic_and_grouped(affwild):
    specs = discover(corpus_cfg(affwild)["corpus"])
    a, b = assign_folds(specs, 2, seed=7), assign_folds(list(reversed(specs)), 2, seed=7)
    assert a == b  # order of the listing does not matter
    assert a["vidC_left"] == a["vidC_right"]
    assert sorted({a[c] for c in a if c != "vidD"}) == [1, 2]
    assert any(assign_folds(specs, 2, seed=s) != a for s in range(8))  # the seed matters
    assert set(assign_folds(specs, 0, seed=0).values()) <= {0, -1}
    with pytest.raises(ConfigError, match="folds.k"):
        assign_folds(specs, 10, seed=0)


def test_fold_split(affwild):
    df = build_manifest(corpus_cfg(affwild))
    assert (fold_split(df, 0) == df["split"]).all()
    s1 = fold_split(df, 1)
    assert set(s1[df["fold"] == 1]) == {"validation"}
    assert set(s1[(df["fold"] != 1) & (df["split"] != "test")]) == {"train"}
    assert set(s1[df["split"] == "test"]) == {"test"}


@pytest.mark.parametrize("clip", ["a/b", "..", "a..b", ".hidden", "-x", "a b", "", "é"])
def test_bad_clip_ids(clip):
    with pytest.raises(InputError, match="not allowed"):
        validate_clip_id(clip, source="src")


@pytest.mark.parametrize("clip", ["10-60-1280x720_right", "video59", "a.b_c-1"])
def test_good_clip_ids(clip):
    assert validate_clip_id(clip, source="src") == clip


def test_bad_clip_id_in_corpus_names_file(affwild):
    bad = affwild / ANN / "Train_Set" / "vid..A.txt"
    write_annotation(bad, 12)
    with pytest.raises(InputError, match=r"vid\.\.A\.txt.*not allowed"):
        discover(corpus_cfg(affwild)["corpus"])


def test_missing_video_names_annotation(affwild):
    write_annotation(affwild / ANN / "Train_Set" / "ghost.txt", 12)
    with pytest.raises(InputError, match=r"ghost\.txt: no video for clip 'ghost'"):
        discover(corpus_cfg(affwild)["corpus"])


def test_missing_root_names_key(tmp_path):
    with pytest.raises(ConfigError, match="corpus.root"):
        discover(load_config(overrides={"corpus": {"root": str(tmp_path / "nope")}})["corpus"])


def test_undecodable_video_named(affwild):
    video = affwild / "videos/batch1/vidA.mp4"
    video.write_bytes(video.read_bytes()[:64])  # an MP4 header, then nothing: only decoding finds it
    with pytest.raises(InputError, match=r"vidA\.mp4: .*cannot be decoded.*\(cut short: its '\w+' box runs to byte"):
        build_manifest(corpus_cfg(affwild))
    video.write_bytes(b"this is not a video")
    with pytest.raises(InputError, match=r"vidA\.mp4: not a video container"):
        build_manifest(corpus_cfg(affwild))
    video.write_bytes(b"")
    with pytest.raises(InputError, match=r"vidA\.mp4: the file is empty"):
        build_manifest(corpus_cfg(affwild))


# --- generic manifest ---------------------------------------------------------------------------------------


def test_manifest_csv(tmp_path, make_video):
    shutil.copy(make_video(frames=12), tmp_path / "one.mp4")
    write_annotation(tmp_path / "one.txt", 12)
    (tmp_path / "clips.csv").write_text(
        "clip,video,split,annotation,subject\nc1,one.mp4,train,one.txt,s1\nc2,one.mp4,Test,,\n"
    )
    cfg = load_config(
        overrides={"corpus": {"format": "manifest", "manifest": str(tmp_path / "clips.csv")}, "folds": {"k": 1}}
    )
    df = build_manifest(cfg).set_index("clip")
    assert df.loc["c1", "video"] == str(tmp_path / "one.mp4") and df.loc["c1", "subject"] == "s1"
    assert df.loc["c2", "split"] == "test" and pd.isna(df.loc["c2", "annotation"])
    assert df.loc["c1", "fold"] == 1 and df.loc["c2", "fold"] == -1
    # the same table as Parquet reads the same
    pd.read_csv(tmp_path / "clips.csv", dtype=str, keep_default_na=False).to_parquet(tmp_path / "clips.parquet")
    cfg["corpus"]["manifest"] = str(tmp_path / "clips.parquet")
    assert [s.clip for s in discover(cfg["corpus"])] == ["c1", "c2"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("clip,video\nc1,one.mp4\n", "missing column.*split"),
        ("clip,video,split\nc/1,one.mp4,train\n", r"row 2: clip id 'c/1' is not allowed"),
        ("clip,video,split\nc1,missing.mp4,train\n", r"row 2: video .*missing\.mp4 for clip 'c1' does not exist"),
        ("clip,video,split\nc1,one.mp4,dev\n", "split 'dev' must be one of"),
        ("clip,video,split\nc1,one.mp4,train\nc1,one.mp4,test\n", "listed twice"),
        ("clip,video,split,annotation\nc1,one.mp4,train,nope.txt\n", r"annotation .*nope\.txt .*does not exist"),
    ],
)
def test_manifest_errors(tmp_path, make_video, body, match):
    shutil.copy(make_video(frames=12), tmp_path / "one.mp4")
    (tmp_path / "clips.csv").write_text(body)
    with pytest.raises(InputError, match=match):
        discover({"format": "manifest", "manifest": str(tmp_path / "clips.csv"), "use_cropped_aligned": True})


def test_clips_of_one_video_must_share_its_audio(tmp_path, make_video):
    shutil.copy(make_video(frames=12), tmp_path / "one.mp4")
    shutil.copy(make_video(frames=12), tmp_path / "other.mp4")
    (tmp_path / "clips.csv").write_text(
        "clip,video,split,audio\none_left,one.mp4,train,\none_right,one.mp4,train,other.mp4\n"
    )
    with pytest.raises(
        InputError,
        match=r"'one_left' and 'one_right' share the video .*one\.mp4 but name different "
        r"audio",
    ):
        discover({"format": "manifest", "manifest": str(tmp_path / "clips.csv"), "use_cropped_aligned": True})


def test_manifest_key_missing():
    with pytest.raises(ConfigError, match="corpus.manifest"):
        discover(load_config(overrides={"corpus": {"format": "manifest"}})["corpus"])


# --- labels -------------------------------------------------------------------------------------------------


def test_read_annotation_and_gaps(tmp_path):
    write_annotation(tmp_path / "a.txt", 10, gap=slice(2, 4))
    lab = clip_labels(tmp_path / "a.txt", 10, max_mismatch=0)
    assert lab.values.shape == (10, 2) and lab.values.dtype == np.float32
    assert lab.valid[:, 0].tolist() == [True, True, False, False] + [True] * 6
    assert lab.values[0, 0] == pytest.approx(-0.9)


@pytest.mark.parametrize(("frames", "kept", "valid_tail"), [(8, 8, True), (13, 10, False)])
def test_reconcile_rule(tmp_path, frames, kept, valid_tail):
    write_annotation(tmp_path / "a.txt", 10)
    lab = clip_labels(tmp_path / "a.txt", frames, max_mismatch=3)
    assert len(lab.values) == frames and lab.rows_in_file == 10 and lab.reconciled == frames - 10
    assert lab.valid[:kept].all()
    assert lab.valid[kept:].all() == valid_tail or frames <= 10


def test_reconcile_limit(tmp_path):
    write_annotation(tmp_path / "a.txt", 10)
    with pytest.raises(InputError, match=r"a\.txt: 10 label rows for a video of 20 decoded frames"):
        clip_labels(tmp_path / "a.txt", 20, max_mismatch=3)


def test_a_video_shorter_than_its_labels_is_not_met_with_a_looser_limit(tmp_path):
    """More label rows than frames may be a cut copy of the video: the message says to replace it, and keeps
    raising the limit for whole videos only."""
    write_annotation(tmp_path / "a.txt", 245)
    with pytest.raises(InputError) as err:
        clip_labels(tmp_path / "a.txt", 104, max_mismatch=30)
    msg = str(err.value)
    assert "incomplete copy of the video" in msg and "copy it again" in msg
    assert "raise corpus.max_annotation_mismatch only for a whole video" in msg
    with pytest.raises(InputError) as err:
        clip_labels(tmp_path / "a.txt", 300, max_mismatch=30)  # a longer video: nothing about copies
    assert "incomplete copy" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("arousal,valence\n0.1,0.2\n", "expected the header 'valence,arousal'"),
        ("valence,arousal\n0.1,0.2\n0.3,abc\n", r"line 3 .*not two numbers"),
        ("valence,arousal\n0.1,0.2\n0.3\n", r"line 3 .*not two numbers"),
        ("valence,arousal\n0.1,2.5\n", "line 2 has a value outside"),
        ("valence,arousal\n", "no label rows"),
        ("", "expected the header"),
    ],
)
def test_bad_annotation_files(tmp_path, text, match):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(InputError, match=r"bad\.txt.*" + match if "bad" not in match else match):
        read_annotation(tmp_path / "bad.txt")


def test_bad_videos_named_in_one_message(affwild):
    """Every bad video is probed and named at once (not just the first), with what is wrong with each."""
    (affwild / "videos/batch1/vidA.mp4").write_bytes(b"")
    (affwild / "videos/batch1/vidB.mp4").write_text("this is a text file, renamed")
    with pytest.raises(InputError) as err:
        build_manifest(corpus_cfg(affwild))
    msg = str(err.value)
    assert "2 bad video(s)" in msg and "corpus.on_bad_video: skip" in msg
    assert re.search(r"vidA\.mp4: the file is empty", msg) and re.search(r"vidB\.mp4: not a video container", msg)


def test_bad_videos_skipped(affwild, tmp_path):
    (affwild / "videos/batch1/vidA.mp4").write_bytes(b"")
    (affwild / "videos/batch1/vidB.mp4").write_text("this is a text file, renamed")
    cfg = corpus_cfg(affwild, on_bad_video="skip")
    # The DAG's clip list already leaves out files that are no video container at all.
    assert [s.clip for s in discover(cfg["corpus"])] == ["vidC_left", "vidC_right", "vidD", "vidE"]
    cfg["folds"]["k"] = 2  # two train/validation videos are left
    df = build_manifest(cfg)
    assert list(df["clip"]) == ["vidC_left", "vidC_right", "vidD", "vidE"]
    assert sorted(Path(v).name for v in df.attrs["skipped_videos"]) == ["vidA.mp4", "vidB.mp4"]


def cut_copy(src: Path, dst: Path, keep: float = 0.4) -> Path:
    """``src`` remuxed with its index first (mp4 ``+faststart``; Matroska's header is first anyway), then cut off
    at ``keep`` of its media data: the header still announces every frame, the file holds fewer."""
    from conftest import run_ffmpeg

    whole = dst.with_name(f"whole-{dst.name}")
    run_ffmpeg("-i", str(src), "-c", "copy", *(["-movflags", "+faststart"] if dst.suffix == ".mp4" else []), str(whole))
    data = whole.read_bytes()
    start = data.index(b"mdat") + 4 if dst.suffix == ".mp4" else data.index(b"\x1f\x43\xb6\x75")  # mdat / Cluster
    dst.write_bytes(data[: start + int(keep * (len(data) - start))])
    whole.unlink()
    return dst


@pytest.fixture
def cut_corpus(affwild, make_video, tmp_path, request):
    """The corpus with vidB replaced by a cut copy of a 60-frame video (mp4 or mkv, the test's parameter)."""
    (affwild / "videos/batch1/vidB.mp4").unlink()
    cut = cut_copy(make_video(frames=60), affwild / "videos/batch1" / f"vidB{request.param}")
    return affwild, cut


@pytest.mark.parametrize(
    ("cut_corpus", "said"),
    [
        (".mp4", r"is truncated: its header announces 60 video frames but the file holds only \d+"),
        # no frame count in a Matroska header: its video track's duration tag
        (".mkv", r"is truncated: its video track is tagged 2\.\d+ s long but the file holds only 0\.\d+ s of frames"),
    ],
    indirect=["cut_corpus"],
)
def test_a_cut_video_is_named_in_the_one_bad_video_message(cut_corpus, said):
    """A copy that stopped early is a bad video with both counts, not a short one whose frames the manifest
    rewrites; no advice to loosen a limit."""
    root, cut = cut_corpus
    with pytest.raises(InputError) as err:
        build_manifest(corpus_cfg(root))
    msg = str(err.value)
    assert msg.startswith("1 bad video(s) in the corpus") and "corpus.on_bad_video: skip" in msg
    assert re.search(rf"{re.escape(str(cut))}: video .*{said}.*\(clip\(s\) vidB\)", msg), msg
    assert "max_annotation_mismatch" not in msg


@pytest.mark.parametrize("cut_corpus", [".mp4", ".mkv"], indirect=True)
def test_a_cut_video_is_left_out_with_skip(cut_corpus, caplog):
    """skip leaves it out of the DAG (its container's sizes run past the file's end: no decoding needed) and out
    of the manifest, which records it among the skipped videos."""
    root, cut = cut_corpus
    cfg = corpus_cfg(root, on_bad_video="skip")
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        assert "vidB" not in [s.clip for s in discover(cfg["corpus"])]
    assert re.search(
        rf"leaving out {re.escape(str(cut))} \(cut short: .* runs to byte \d+ but the file ends", caplog.text
    )
    cfg["folds"]["k"] = 2
    df = build_manifest(cfg)
    assert "vidB" not in set(df["clip"]) and list(df.attrs["skipped_videos"]) == [str(cut)]
    assert re.search(r"truncated|cut short", df.attrs["skipped_videos"][str(cut)])


def test_a_whole_video_is_not_cut_short(affwild, make_video, tmp_path):
    """The byte check passes complete files: moov first or last, Matroska, the demo's videos."""
    from conftest import DEMO, run_ffmpeg
    from emofusion.corpus import sniff_video

    video = make_video(frames=60)
    whole, whole_mkv = tmp_path / "whole.mp4", tmp_path / "whole.mkv"
    run_ffmpeg("-i", str(video), "-c", "copy", "-movflags", "+faststart", str(whole))
    run_ffmpeg("-i", str(video), "-c", "copy", str(whole_mkv))
    for path in [video, whole, whole_mkv, *sorted(DEMO.glob("videos/*/*.mp4"))]:
        assert sniff_video(path) is None, path


def test_manifest_command_records_skipped_and_unannotated(affwild, tmp_path):
    from emofusion.cli import main
    from emofusion.io import read_parquet_metadata

    (affwild / "videos/batch1/vidA.mp4").write_bytes(b"")
    shutil.copy(affwild / "videos/batch2/vidE.mp4", affwild / "videos/batch2/vidF.mp4")  # no annotation
    out = tmp_path / "manifest.parquet"
    overrides = {"corpus": {"root": str(affwild), "test_list": str(affwild / "test_set.txt"), "on_bad_video": "skip"}}
    assert main(["manifest", "--config-json", json.dumps(overrides), "--out", str(out)]) == 0
    meta = read_parquet_metadata(out)
    assert [Path(v).name for v in meta["skipped_videos"]] == ["vidA.mp4"]
    assert [Path(v).name for v in meta["unannotated_videos"]] == ["vidF.mp4"]
    # Default (error): the command fails and the previous manifest is left as it was.
    before = out.read_bytes()
    overrides["corpus"]["on_bad_video"] = "error"
    assert main(["manifest", "--config-json", json.dumps(overrides), "--out", str(out)]) == 1
    assert out.read_bytes() == before


def test_an_m4v_video_is_a_video_of_the_corpus_as_of_predict(affwild):
    """One list of video suffixes (emofusion.container.VIDEO_SUFFIXES) for the corpus and predict.videos: an .m4v (an
    MP4) in videos/ is listed, where it was once neither a clip nor an unannotated video, dropped without a word."""
    from emofusion.container import VIDEO_SUFFIXES
    from emofusion.corpus import unannotated_videos

    assert ".m4v" in VIDEO_SUFFIXES
    shutil.move(affwild / "videos/batch1/vidB.mp4", affwild / "videos/batch1/vidB.M4V")
    shutil.copy(affwild / "videos/batch2/vidE.mp4", affwild / "videos/batch2/vidF.m4v")  # no annotation
    corpus = corpus_cfg(affwild)["corpus"]
    by = {s.clip: s for s in discover(corpus)}
    assert by["vidB"].video == str(affwild / "videos/batch1/vidB.M4V") and by["vidB"].split == "validation"
    assert unannotated_videos(corpus) == [str(affwild / "videos/batch2/vidF.m4v")]
