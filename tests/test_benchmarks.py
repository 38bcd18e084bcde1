"""benchmarks/: real_va.py's label reading refuses bad folders and a smoke run on real speech gives the table; the
benchmarks' --json figures parse and affwild2.py projects them; faces.py runs without an ffmpeg binary; scale.py's
corpus is Aff-Wild2-shaped and its quick run plans and times every stage."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, TEST_DATA
from emofusion.errors import InputError

SPEECH = TEST_DATA / "speech_emotion_va"  # the first 12 recordings


@pytest.fixture(autouse=True)
def _torch_state():
    """main() sets torch's threads and deterministic mode for its process; give the test session its own back."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def load_real_va():
    spec = importlib.util.spec_from_file_location("real_va", REPO / "benchmarks" / "real_va.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labels_must_name_the_same_recordings(tmp_path):
    real_va = load_real_va()
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "arousal.csv").write_text("a.wav,0.5\n")
    with pytest.raises(InputError, match="valence.csv does not exist"):
        real_va.read_labels(tmp_path)
    (tmp_path / "valence.csv").write_text("b.wav,0.1\n")
    with pytest.raises(InputError, match="list different files"):
        real_va.read_labels(tmp_path)
    (tmp_path / "valence.csv").write_text("a.wav,0.1\n")
    files, y = real_va.read_labels(tmp_path)
    assert files == ["a.wav"] and y.tolist() == [[0.1, 0.5]]  # TARGETS order: valence, arousal


def test_neural_is_seeded_and_never_sees_held_out_labels():
    real_va = load_real_va()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 6)).astype(np.float32) for n in rng.integers(4, 10, size=10)]
    y = rng.uniform(-1, 1, size=(10, 2))
    folds = real_va.split(10, 2, 0)
    training = {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "batch_size": 4, "grad_clip": 1.0}

    def run(labels, seed=0):
        return real_va.neural(seqs, labels, folds, seed=seed, model_name="unimodal_audio", epochs=1, training=training)

    utt, frames = run(y)
    assert utt.shape == (10, 2) and [len(f) for f in frames] == [len(s) for s in seqs]
    np.testing.assert_allclose(utt, np.stack([f.mean(axis=0) for f in frames]))
    np.testing.assert_array_equal(run(y)[0], utt)  # seeded
    assert not np.array_equal(run(y, seed=1)[0], utt)
    held_out = folds[0][1]
    flipped = y.copy()
    flipped[held_out] *= -1  # the held-out fold's labels must not reach its own predictions
    np.testing.assert_array_equal(run(flipped)[0][held_out], utt[held_out])
    mean = real_va.mean_predictor(y, folds)
    np.testing.assert_allclose(mean[held_out], np.broadcast_to(y[folds[0][0]].mean(axis=0), (len(held_out), 2)))


@pytest.mark.slow
def test_smoke_run_on_real_speech(tmp_path):
    out = tmp_path / "real_va.json"
    result = load_real_va().main(
        ["--data", str(SPEECH), "--folds", "2", "--seeds", "1", "--epochs", "1", "--limit", "12", "--out", str(out)]
    )
    methods = result["methods"]
    assert len(methods) == 3 and result["config"]["recordings"] == 12
    for row in methods.values():
        for key in ("arousal", "valence", "frame_arousal", "frame_valence"):
            assert math.isfinite(row["mean"][key]) and -1.0 <= row["mean"][key] <= 1.0
    # eGeMAPS carries arousal: even 6 training recordings give the ridge a clearly positive out-of-fold CCC
    assert methods["ridge on pooled features"]["mean"]["arousal"] > 0.3
    written = json.loads(out.read_text())
    assert written["provenance"]["config_hash"] and written["methods"].keys() == methods.keys()


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_json_parses_and_projects_onto_affwild2(tmp_path):
    """benchmarks/train.py --json on a tiny corpus (device-resident and in-memory rows, bfloat16 beside float32),
    read back by benchmarks/affwild2.py into a projection row per measurement, each citing its file."""
    out = tmp_path / "train.json"
    rows = load_benchmark("train").main(
        [
            "--quick",
            "--models",
            "rjca",
            "--data",
            "device",
            "--amp",
            "bf16",
            "--batches",
            "1",
            "--frames",
            "3000",
            "--clips",
            "6",
            "--json",
            str(out),
        ]
    )
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "train" and doc["machine"]["device"] == "cpu" and doc["figures"]["frames"] > 0
    assert (
        [(r["data"], r["amp"]) for r in doc["figures"]["rows"]]
        == [("device", "fp32"), ("device", "bf16")]
        == [(r["data"], r["amp"]) for r in rows]
    )
    affwild2 = load_benchmark("affwild2")
    projected = affwild2.rows_for(affwild2.load([out])[0], gpus=4)
    assert len(projected) == 2 and all(r["source"].startswith("train.json (cpu") for r in projected)
    scale = affwild2.FRAMES / doc["figures"]["frames"]
    first = doc["figures"]["rows"][0]
    assert projected[0]["hours"] == pytest.approx(first["epoch_s"] * scale / 3600)
    assert projected[0]["hours_n"] == projected[0]["hours"]  # an epoch is not split across devices


@pytest.mark.slow
def test_train_benchmark_compile_rows(tmp_path):
    """--compile measures each row eager and through torch.compile (fusion.compile); the compiled row's warm-up
    holds the compilation, and the projection names it."""
    from emofusion.training.stage import compiler_for_torch_compile

    if compiler_for_torch_compile("cpu") is None:
        pytest.skip("no C++ compiler: torch.compile cannot build its kernels")
    out = tmp_path / "train.json"
    args = ["--quick", "--models", "rjca", "--data", "device", "--batches", "1", "--frames", "3000", "--clips", "6"]
    rows = load_benchmark("train").main([*args, "--compile", "--json", str(out)])
    assert [(r["data"], r["amp"], r["compile"]) for r in rows] == [("device", "fp32", False), ("device", "fp32", True)]
    assert rows[1]["warmup_s"] > rows[0]["warmup_s"] and all(r["epoch_s"] > 0 for r in rows)
    affwild2 = load_benchmark("affwild2")
    stages = [r["stage"] for r in affwild2.rows_for(affwild2.load([out])[0], gpus=1)]
    assert stages == ["train rjca per epoch (device, fp32)", "train rjca per epoch (device, fp32, compiled)"]


def test_affwild2_projects_every_stage_and_divides_sharded_ones(tmp_path, capsys):
    affwild2 = load_benchmark("affwild2")
    import figures  # benchmarks/ is on sys.path once a benchmark module is loaded

    figures.write_figures(
        tmp_path / "faces.json",
        "faces",
        {
            "end_to_end": [
                {"video": "a.mp4", "frames": 300, "seconds": 2.0},
                {"video": "b.mp4", "frames": 100, "seconds": 2.0},
            ],
            "shards": [{"clips": 6, "frames": 900, "per_clip_s": 70.0, "shard_s": 20.0, "startup_s": 10.0}],
            "settings": {"batch_size": 128},
            "skipped": [],
        },
        device="cpu",
    )
    figures.write_figures(
        tmp_path / "embed.json",
        "embed",
        {
            "embed": [
                {"backbone": "visual:fer", "amp": False, "fps": 1000.0, "forward_fps": 4000.0},
                {"backbone": "audio:egemaps", "amp": False, "fps": 2990.0},
            ],
            "read": {},
        },
        device="cpu",
    )
    figures.write_figures(
        tmp_path / "asr.json",
        "asr",
        {
            "audio": {"rtf": 100.0},
            "asr": [{"engine": "faster-whisper", "compute": "int8", "beam": 5, "rtf": 10.0}],
            "skipped": [],
        },
        device="cpu",
    )
    assert affwild2.main([str(tmp_path / n) for n in ("faces.json", "embed.json", "asr.json")] + ["--gpus", "10"]) == 0
    text = capsys.readouterr().out
    docs = affwild2.load([tmp_path / "faces.json", tmp_path / "embed.json", tmp_path / "asr.json"])
    rows = {r["stage"]: r for d in docs for r in affwild2.rows_for(d, gpus=10)}
    faces = rows["faces (one job, batch 128)"]
    assert faces["rate"] == pytest.approx(100.0) and faces["hours"] == pytest.approx(2.99e6 / 100 / 3600)
    assert faces["hours_n"] == pytest.approx(faces["hours"] / 10)
    # a job's start-up, once per clip (594 jobs) or once per shard of 32 (19 jobs)
    assert rows["faces start-up, 1 clip per job"]["hours"] == pytest.approx(594 * 10 / 3600)
    assert rows["faces start-up, 32 clips per job"]["hours_n"] == pytest.approx(19 * 10 / 3600 / 10)
    assert rows["embed visual:fer (fp32)"]["note"] == "forward alone 4000 frames/s"
    assert rows["ASR faster-whisper (int8, beam 5)"]["hours"] == pytest.approx(affwild2.AUDIO_HOURS / 10)
    assert "| faces (one job, batch 128) | 100.0 frames/s | 8.31 | 0.83 |" in text and "faces.json (cpu" in text
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="bad.json"):
        affwild2.load([tmp_path / "bad.json"])


def test_faces_benchmark_skips_only_the_looped_table_without_ffmpeg(monkeypatch, capsys):
    faces = load_benchmark("faces")
    monkeypatch.setattr(faces.shutil, "which", lambda name: None)
    args = SimpleNamespace(skipped=[], loop=2, loop_video=Path("none.mp4"))
    assert faces.table_length(args) == []
    assert "skipped: table 3: no ffmpeg binary" in capsys.readouterr().out
    assert args.skipped == [{"note": args.skipped[0]["note"], "failed": False}]  # a note, not a failure


@pytest.mark.slow
def test_faces_benchmark_measures_the_start_up_a_shard_saves(tmp_path):
    """Table 5 on a real video: as two per-clip processes and as one shard (the video twice); both write stores,
    and the per-clip run pays one more start-up (imports, model loading: seconds on any machine)."""
    faces = load_benchmark("faces")
    args = SimpleNamespace(
        skipped=[], batch_size=32, device="cpu", min_face_size=40, max_side=320, detect_every=1, threads=1
    )
    (row,) = faces.table_shards([TEST_DATA / "pyfeat_videos" / "single_face.mp4"], args)
    assert args.skipped == [] and row["clips"] == 2 and row["frames"] > 0
    assert row["per_clip_s"] > row["shard_s"] and row["startup_s"] > 0.5, row


@pytest.mark.slow
def test_faces_benchmark_runs_one_content_at_three_resolutions():
    """Table 6 on a real video: the 360p, 720p and 1080p copies each find the man in every frame at the same
    place (box centres within a few 360p pixels: the same face) and report their time against the 360p copy's."""
    faces = load_benchmark("faces")
    args = SimpleNamespace(
        skipped=[],
        batch_size=32,
        device="cpu",
        min_face_size=20,
        max_side=640,
        detect_every=1,
        threads=1,
        repeat=1,
        resolution_seconds=0.5,
        loop_video=TEST_DATA / "pyfeat_videos" / "single_face.mp4",
    )
    rows = faces.table_resolution(args)
    assert args.skipped == [] and [r["size"] for r in rows] == ["640x360", "1280x720", "1920x1080"]
    assert all(r["valid"] == r["frames"] > 0 and r["valid_differs"] == 0 for r in rows), rows
    assert rows[0]["ratio"] == 1.0 and all(r["box_centre_median_px"] < 3 for r in rows), rows
    assert rows[0]["cpu_ratio"] == 1.0 and all(r["cpu_seconds"] > 0 and r["crop_mean_abs_diff"] < 6 for r in rows)


def test_scale_corpus_is_aff_wild2_shaped_and_its_overhead_projects(tmp_path):
    """benchmarks/scale.py's corpus is what corpus.discover reads as Aff-Wild2 (the 356/76/162 split scaled, two-person
    videos as _left/_right clips of one video), and a stage's fixed cost projects onto 594 clips beside the compute
    hours affwild2.py gives for the same stage."""
    from emofusion.corpus import discover

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh installs it)")
    scale = load_benchmark("scale")
    import figures  # benchmarks/ is on sys.path once a benchmark module is loaded

    sizes = scale.build_corpus(tmp_path / "corpus", 48)
    corpus = {
        "format": "affwild2",
        "root": str(tmp_path / "corpus"),
        "test_list": str(tmp_path / "corpus" / "test_list.txt"),
        "use_cropped_aligned": False,
    }
    specs = discover(corpus)
    assert len(specs) == 48 and sizes == {"train": 29, "validation": 6, "test": 13, "videos": 47}
    assert {s: sum(c.split == s for c in specs) for s in scale.SPLITS} == {"train": 29, "validation": 6, "test": 13}
    pair = [c for c in specs if c.video_id == "clip0000"]
    assert [c.clip for c in pair] == ["clip0000_left", "clip0000_right"] and pair[0].audio == pair[1].audio
    assert scale.split_sizes(594) == scale.SPLITS

    figures.write_figures(
        tmp_path / "embed.json",
        "embed",
        {"embed": [{"backbone": "visual:fer", "amp": False, "fps": 1000.0}], "read": {}},
        device="cpu",
    )
    compute = scale.compute_hours([tmp_path / "embed.json"], gpus=4)
    assert list(compute) == ["embed_visual"]
    costs = dict.fromkeys(scale.STAGES, 2.0)
    jobs = {"embed_visual": 48, "faces": 48, "audio": 47}
    rows = {r["stage"]: r for r in scale.projection(jobs, costs, 48, compute, gpus=4, submit_s=1.0)}
    fer = rows["embed_visual"]
    assert fer["jobs"] == 594 and fer["fixed_h"] == pytest.approx(594 * 2.0 / 3600)
    assert fer["fixed_h_n"] == pytest.approx(594 * 3.0 / 3600 / 4)  # start-up and Slurm's second, on 4 devices
    hours = 2.99e6 / 1000 / 3600
    assert fer["compute_h"] == pytest.approx(hours) and fer["share"] == pytest.approx(0.33 / (0.33 + hours), rel=0.01)
    assert rows["audio"]["jobs"] == round(47 * 594 / 48) and rows["audio"]["share"] is None  # no compute figure


@pytest.mark.slow
def test_scale_quick_run_plans_and_times_every_stage(tmp_path):
    """`benchmarks/scale.py --quick`: 24 clips planned by a real dry run and `emofusion status`, each per-clip stage's
    command run once on a tiny clip, the figures written as JSON."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh installs it)")
    out = tmp_path / "scale.json"
    fig = load_benchmark("scale").main(["--quick", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "scale" and doc["figures"]["clips"] == 24
    jobs = fig["plan"]["jobs"]
    assert jobs["faces"] == jobs["embed_visual"] == 24 and jobs["audio"] == jobs["transcribe"] == 23
    assert fig["plan"]["dry_run_s"] > 0 and fig["plan"]["status_s"] > 0
    assert [r["stage"] for r in fig["projection"]] == list(load_benchmark("scale").STAGES)
    for stage in ("faces", "embed_visual", "embed_text"):
        assert fig["fixed_s"][stage] > fig["fixed_s"]["python"] and fig["imports"][stage]["torch_s"] > 0
    assert fig["imports"]["transcribe"]["torch_s"] == 0  # faster-whisper: no torch
