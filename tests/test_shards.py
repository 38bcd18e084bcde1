"""Shard jobs beyond faces: one process for several clips' (or videos') outputs, each the file a per-clip job
writes. The workflow side (planned jobs, a real shard run against per-clip jobs) is in tests/test_workflow.py."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest

from emofusion.cli import main
from feature_inputs import face_store, random_crops  # registers the _test_mean backbone

CFG = json.dumps({"features": {"device": "cpu", "batch_size": 5}})


def _arrays(path):
    """Every dataset and attribute of an HDF5 file (the provenance too: it records the inputs, not the time)."""
    out = {}
    with h5py.File(path) as f:
        out["/"] = {k: str(v) for k, v in f.attrs.items()}
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()] if isinstance(obj, h5py.Dataset) else dict(obj.attrs))
        )
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert str(a[k]) == str(b[k]), k


def test_embed_with_out_repeated_writes_each_shard_as_its_own_command_would(tmp_path, make_video):
    """`emofusion embed` with --faces/--video/--out once per clip (the workflow's embed shard job): one process,
    each clip's shard equal to the one a command for that clip alone writes, provenance inputs included."""
    video = make_video(frames=12, fps=25, audio=False)
    stores = {}
    for i, clip in enumerate(("c1", "c2", "c3")):
        valid = np.ones(12, bool)
        valid[i] = False
        stores[clip] = face_store(tmp_path / f"{clip}.h5", random_crops(12, seed=i), valid, clip=clip, video=str(video))
    head = ["embed", "--config-json", CFG, "--modality", "visual", "--backbone", "_test_mean"]
    shard = []
    for clip, faces in stores.items():
        assert (
            main([*head, "--faces", str(faces), "--video", str(video), "--out", str(tmp_path / f"alone-{clip}.h5")])
            == 0
        )
        shard += ["--faces", str(faces), "--video", str(video), "--out", str(tmp_path / f"shard-{clip}.h5")]
    assert main([*head, *shard]) == 0
    for clip in stores:
        _same(_arrays(tmp_path / f"alone-{clip}.h5"), _arrays(tmp_path / f"shard-{clip}.h5"))
        with h5py.File(tmp_path / f"shard-{clip}.h5") as f:
            assert list(f) == [clip]


def test_embed_refuses_an_option_given_a_different_number_of_times_than_out(tmp_path, caplog):
    """Two --out with one --faces: one line naming the option, before any backbone loads; nothing written."""
    faces = face_store(tmp_path / "c1.h5", random_crops(2), np.ones(2, bool))
    outs = ["--out", str(tmp_path / "a.h5"), "--out", str(tmp_path / "b.h5")]
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        rc = main(["embed", "--modality", "visual", "--backbone", "hsemotion", "--faces", str(faces), *outs])
    assert rc == 1 and "--faces given 1 times for 2 --out; give it once with each --out" in caplog.text
    assert "weights" not in caplog.text and not list(tmp_path.glob("[ab].h5"))


@pytest.mark.parametrize("key", ["clips_per_face_job", "clips_per_embed_job", "clips_per_audio_job"])
def test_shard_keys_default_to_auto_and_are_at_least_one(key):
    from emofusion.config import validate_config
    from emofusion.errors import ConfigError

    assert validate_config({})[key] == "auto" and validate_config({key: 32})[key] == 32
    with pytest.raises(ConfigError, match=rf"{key}: 0 is less than the minimum"):
        validate_config({key: 0})
    with pytest.raises(ConfigError, match=rf"{key}: 'some' does not match"):
        validate_config({key: "some"})


def test_auto_is_a_job_each_for_a_small_corpus_and_at_most_48_shards_for_a_large_one():
    from emofusion.config import AUTO_SHARDS, shard_size

    assert AUTO_SHARDS == 48 and [shard_size("auto", n) for n in (1, 12, 48, 49, 594, 10_000)] == [1, 1, 1, 2, 13, 209]
    assert shard_size(5, 594) == 5  # a number is the clips per job, whatever the corpus
    assert all(-(-n // shard_size("auto", n)) <= 48 for n in range(1, 3000))


@pytest.mark.workflow  # builds a 594-clip corpus and plans it
def test_an_aff_wild2_sized_corpus_plans_a_few_hundred_jobs_with_the_defaults(workdir):
    """Issue 23: with the documented defaults (auto) the 594 clips of an Aff-Wild2-shaped corpus plan a few
    hundred jobs, not 3,575: at most 48 per per-clip stage, every clip still in one job of each stage."""
    import importlib.util
    import re

    from conftest import REPO, snakemake

    spec = importlib.util.spec_from_file_location("scale", REPO / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    corpus = workdir / "aw"
    scale.build_corpus(corpus, 594)
    proc = snakemake(
        "-n", "--snakefile", str(REPO / "Snakefile"), "--config", f"corpus={{root: {corpus}}}", cwd=workdir
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout, re.MULTILINE)}
    total = jobs.pop("total")
    assert total <= 400, jobs
    for stage in ("faces", "audio", "transcribe", "embed_visual", "embed_audio", "embed_text"):
        shards = sum(n for rule, n in jobs.items() if rule.startswith(f"{stage}_shard"))
        assert 0 < shards <= 48 and stage not in jobs, (stage, jobs)


def test_audio_and_transcribe_refuse_an_option_given_a_different_number_of_times_than_out(workdir, caplog):
    """The shard forms of `emofusion audio` and `emofusion transcribe`: each --video / --audio goes with one --out;
    a miscount is one line naming the option and nothing is written."""
    outs = ["--out", str(workdir / "a.wav"), "--out", str(workdir / "b.wav")]
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        assert main(["audio", "--video", str(workdir / "v.mp4"), *outs]) == 1
        assert "--video given 1 times for 2 --out; give it once with each --out" in caplog.text
        caplog.clear()
        assert main(["transcribe", "--audio", str(workdir / "a.wav"), *outs]) == 1
        assert "--audio given 1 times for 2 --out; give it once with each --out" in caplog.text
    assert [p.name for p in workdir.iterdir()] == ["config.yaml"]  # the fixture's, and nothing written


def test_a_transcribe_shard_of_silent_videos_loads_no_model(workdir, make_video, monkeypatch):
    """`emofusion audio` then `emofusion transcribe`, each as one shard of two videos without audio
    (audio.missing_audio: silence): a WAV and sidecar per video, an empty transcript each, and no model loaded,
    as per-video commands would load none (the shard's model loads when a file with audio first needs it)."""
    import emofusion.asr.stage

    def no_model(*args, **kwargs):
        raise AssertionError("a shard of silent videos loaded the model")

    monkeypatch.setattr(emofusion.asr.stage, "load_engine", no_model)
    videos = [make_video(frames=n, fps=25, audio=False) for n in (10, 12)]
    wavs = [workdir / "audio" / f"v{i}.wav" for i in (0, 1)]
    cfg = json.dumps({"audio": {"missing_audio": "silence"}})
    args = [a for v, w in zip(videos, wavs, strict=True) for a in ("--video", str(v), "--out", str(w))]
    assert main(["audio", "--config-json", cfg, *args]) == 0
    assert [json.loads(w.with_suffix(".json").read_text())["has_audio"] for w in wavs] == [False, False]
    outs = [workdir / "transcripts" / f"v{i}.parquet" for i in (0, 1)]
    args = [a for w, o in zip(wavs, outs, strict=True) for a in ("--audio", str(w), "--out", str(o))]
    assert main(["transcribe", *args]) == 0
    import pandas as pd

    assert [len(pd.read_parquet(o)) for o in outs] == [0, 0]
