"""The Snakemake workflow: lint-clean, the default config plans, and (marked) a real run on the demo corpus."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, demo_subset, load_script, on_demo, planned_jobs, snakemake

# Every test plans or runs the workflow in its own directory: the checkout's results/ (a user's demo run) must
# neither change what a test sees nor be changed by it.


def test_lint_clean(workdir):
    proc = snakemake(*on_demo(workdir, "--lint"), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def demo_runs() -> int:
    """Runs of the repository's config: experiments x folds x seeds (the demo: ten experiments, fold 0)."""
    import yaml

    fusion = yaml.safe_load((REPO / "config.yaml").read_text())["fusion"]
    return len(fusion["experiments"]) * len(fusion["folds"]) * len(fusion["seeds"])


def test_dry_run_default_config(workdir):
    proc = snakemake(*on_demo(workdir, "-n", "--cores", "1", "--quiet", "rules"), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 12 clips of 11 videos, the three default stores, ten demo experiments (fold 0, each seed), one report
    runs = demo_runs()
    assert planned_jobs(proc.stdout) == {
        "manifest": 1,
        "labels": 1,
        "faces": 12,
        "audio": 11,
        "transcribe": 11,
        "embed_visual": 12,
        "embed_audio": 11,
        "embed_text": 11,
        "embed_merge": 3,
        "train": runs,
        "evaluate": runs,
        "report": 1,
        "all": 1,
    }


def test_unknown_config_key_stops_the_workflow(workdir):
    proc = snakemake(
        "-n",
        "--cores",
        "1",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--config",
        "bogus_section=1",
        cwd=workdir,
    )
    assert proc.returncode != 0
    assert "bogus_section" in proc.stdout + proc.stderr


def run_in(workdir: Path, *targets: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return snakemake(*on_demo(workdir, *targets, "--cores", "2"), cwd=workdir, timeout=timeout)


@pytest.mark.workflow
def test_manifest_and_labels_on_demo(workdir):
    import h5py
    import pandas as pd

    proc = run_in(workdir, "results/labels.h5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_parquet(workdir / "results/manifest.parquet")
    assert set(df["split"]) == {"train", "validation", "test"}
    with h5py.File(workdir / "results/labels.h5") as h5:
        assert sorted(h5) == sorted(df["clip"])
        for row in df.itertuples():
            assert h5[row.clip]["values"].shape == (row.frames, 2)
    # a second run has nothing to do: every stage is cached
    again = run_in(workdir, "results/labels.h5", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.workflow
def test_default_target_on_demo_and_reruns_only_what_changed(workdir):
    """`snakemake` on the demo corpus makes every stage's output for every clip/video, each face store on the
    frame timeline; then a changed section reruns only the rules that read it (costly stages stay cached)."""
    import h5py
    import pandas as pd

    proc = run_in(workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = pd.read_parquet(workdir / "results/manifest.parquet")
    for row in manifest.itertuples():
        with h5py.File(workdir / "results/faces" / f"{row.clip}.h5") as store:
            assert store["crops"].shape == (row.frames, 112, 112, 3)
            assert store["valid"].shape == (row.frames,) and store.attrs["frames"] == row.frames
            expected_source = "cropped_aligned" if isinstance(row.crops, str) and row.crops else "mtcnn"
            assert store.attrs["source"] == expected_source
    videos = {Path(v).stem for v in manifest["video"]}
    assert {p.stem for p in (workdir / "results/audio").glob("*.wav")} == videos
    assert {p.stem for p in (workdir / "results/transcripts").glob("*.parquet")} == videos
    # the demo's no-face clip (demo05) is all invalid; the two-person video's clips both have faces
    with h5py.File(workdir / "results/faces/demo05-30-320x180.h5") as store:
        assert not store["valid"][:].any()
    for side in ("left", "right"):
        with h5py.File(workdir / f"results/faces/demo06-30-640x180_{side}.h5") as store:
            assert store["valid"][:].mean() > 0.9

    original = (workdir / "config.yaml").read_text()

    def planned(section: str | None = None, **changes) -> set[str]:
        """Rules a dry run would run after changing keys of one config section (the file the run used)."""
        import yaml

        cfg = yaml.safe_load(original)
        if section:
            cfg[section] = {**cfg.get(section, {}), **changes}
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        dry = run_in(workdir, "-n", "--quiet", "rules")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        return set(planned_jobs(dry.stdout)) - {"all"}

    # a changed extraction section reruns its stage and what reads it downstream: the stores it feeds and every
    # fusion run (the manifest, faces and transcripts are their inputs), never the other extraction stages
    fusion = {"train", "evaluate", "report"}
    assert planned() == set()
    assert planned("folds", seed=1) == {"manifest", "labels"} | fusion
    assert planned("faces", fill_gaps=5) == {"faces", "embed_visual", "embed_merge"} | fusion
    assert planned("asr", beam_size=1) == {"transcribe", "embed_text", "embed_merge"} | fusion
    _check_fusion_stage(workdir, original, planned)


def _jobs(workdir: Path, *targets: str) -> dict[str, int]:
    """Rule -> number of jobs a dry run would run."""
    dry = run_in(workdir, *targets, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    return planned_jobs(dry.stdout)


def _check_fusion_stage(workdir: Path, original: str, planned) -> None:
    """After the default target: every run evaluated, the report and its checked submissions; one experiment's lr
    reruns that experiment's train/evaluate and the report only; `snakemake fusion` never schedules extraction."""
    import json

    import yaml

    cfg = yaml.safe_load(original)
    experiments = cfg["fusion"]["experiments"]
    for name in experiments:
        metrics = json.loads((workdir / f"results/fusion/{name}/fold0/seed0/metrics.json").read_text())
        assert set(metrics["splits"]) >= {"train", "validation"}, name
    report = workdir / "results/report"
    assert (report / "results.csv").is_file() and (report / "results.md").is_file()
    assert (report / "submission/check.json").is_file() and any((report / "plots").glob("*.png"))
    _check_table(report / "results.csv", experiments, cfg["fusion"]["seeds"])

    changed = {**experiments, "rjca": {**experiments["rjca"], "training": {"lr": 0.01}}}
    assert planned("fusion", experiments=changed) == {"train", "evaluate", "report"}
    seeds = len(cfg["fusion"]["seeds"])
    assert {k: v for k, v in _jobs(workdir).items() if k != "all"} == {"train": seeds, "evaluate": seeds, "report": 1}
    assert "results/fusion/rjca/fold0/seed0/model.pt" in run_in(workdir, "-n").stdout

    (workdir / "config.yaml").write_text(original)
    import shutil

    shutil.rmtree(workdir / "results/fusion")
    shutil.rmtree(workdir / "results/report")
    n = demo_runs()
    assert _jobs(workdir, "fusion") == {"train": n, "evaluate": n, "report": 1, "fusion": 1}


def _check_table(path: Path, experiments: dict, seeds: list[int]) -> None:
    """The demo table's structure and that every value is finite: its digits vary across processors (the
    recurrent models' CPU kernels), so they are not asserted."""
    import numpy as np
    import pandas as pd

    table = pd.read_csv(path)
    pooled = table[table["fold"] == "pooled"].set_index("experiment")
    assert sorted(pooled.index) == sorted(experiments)
    assert (pooled["runs"] == len(seeds)).all() and (pooled["seeds"].astype(str) == " ".join(map(str, seeds))).all()
    means = [c for c in table.columns if c.startswith("validation_") and c.endswith("_mean")]
    assert len(means) == 6 and np.isfinite(pooled[means].to_numpy()).all()
    if len(seeds) > 1:  # the spread over seeds
        sds = [c.removesuffix("_mean") + "_sd" for c in means]
        assert np.isfinite(pooled[sds].to_numpy()).all() and (pooled[sds].to_numpy() >= 0).all()


def test_a_local_asr_model_is_an_input_of_the_transcripts(workdir):
    """Replacing the weights at a local asr.model path must rerun the transcripts: the file is a rule input."""
    import yaml

    checkpoint = workdir / "my-whisper.pt"
    checkpoint.write_bytes(b"not read by a dry run")
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["asr"] = {**cfg["asr"], "engine": "openai-whisper", "model": str(checkpoint)}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = run_in(workdir, "results/transcripts/demo01-30-320x180.parquet", "-n")
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out
    job = out[out.index("rule transcribe:") :]
    assert str(checkpoint) in job.split("output:")[0], job
    assert "convert_whisper" not in out  # a checkpoint path needs no conversion


def test_dry_run_with_local_profile(workdir):
    """The local profile (its face-jobs-per-GPU resource included) plans the whole DAG."""
    proc = snakemake(
        *on_demo(
            workdir, "-n", "--quiet", "rules", "--workflow-profile", str(REPO / "workflow" / "profiles" / "local")
        ),
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert planned_jobs(proc.stdout)["faces"] == 12


def test_face_shards_plan_one_job_per_shard_with_the_profile_faces_settings(workdir):
    """clips_per_face_job=5 cuts the demo's 12 clips, sorted by id, into faces_shard0..2 (5, 5, 2 clips): one
    `emofusion faces` per shard with every clip's options, the threads and resources set for `faces` (runtime
    per clip times its clips; expressions as Snakemake evaluates them for its own rules), and the same outputs
    for the later rules."""

    def plan(*settings):
        args = on_demo(workdir, "-n", "--cores", "4", "--printshellcmds")
        args[-2:-2] = settings  # before --config
        proc = snakemake(*args, "clips_per_face_job=5", cwd=workdir)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        return out, {i: out[out.index(f"rule faces_shard{i}:") :].split("\n\n")[0] for i in (0, 1, 2)}

    out, shards = plan("--set-threads", "faces=max(1, 3)", "--set-resources", "faces:runtime=attempt*7", "faces:gpu=1")
    jobs = planned_jobs(out.split("Job stats:")[1].split("Reasons:")[0])
    assert {rule: n for rule, n in jobs.items() if rule.startswith("faces")} == {
        f"faces_shard{i}": 1 for i in (0, 1, 2)
    }
    assert jobs["embed_visual"] == 12 and "faces" not in jobs
    clips = ["demo06-30-640x180_left", "demo06-30-640x180_right", "demo07-30-320x180", "demo08-30-320x180"]
    clips.append("demo09-30-320x180")
    assert f"output: {', '.join(f'results/faces/{c}.h5' for c in clips)}" in shards[1], shards[1]
    assert "threads: 3" in shards[1] and "runtime=35" in shards[1] and "gpu=1" in shards[1], shards[1]
    assert "runtime=14" in shards[2]
    # one process for the shard; demo07 and demo09 ship pre-aligned crops, the others get an empty --crops
    command = next(line for line in out.splitlines() if "emofusion faces" in line and clips[0] in line)
    assert command.count("--video ") == command.count("--clip ") == command.count("--out ") == 5, command
    assert command.count("--crops ''") == 3 and "--threads 3" in command, command
    # a runtime only in default-resources is per clip too (a cluster profile's default would kill a long shard)
    _, shards = plan("--default-resources", "runtime=6")
    assert "runtime=30" in shards[0] and "runtime=12" in shards[2] and "threads: 2" in shards[0], shards


@pytest.mark.workflow
def test_a_face_shard_writes_the_stores_of_per_clip_jobs(tmp_path):
    """Three clips (one detected with MTCNN, two read from their pre-aligned crops) as one shard job and as three
    per-clip jobs: the same stores, provenance aside (it records the time)."""
    corpus = demo_subset(tmp_path / "corpus", ("demo02-30-320x180", "demo07-30-320x180", "demo09-30-320x180"))
    targets = [f"results/faces/{c}.h5" for c in ("demo02-30-320x180", "demo07-30-320x180", "demo09-30-320x180")]
    for n in (1, 3):
        wd = tmp_path / f"per{n}"
        wd.mkdir()
        (wd / "config.yaml").write_text((REPO / "config.yaml").read_text())
        config = ["--config", f"corpus={{root: {corpus}}}", f"clips_per_face_job={n}"]
        proc = snakemake(*targets, "--cores", "2", "--snakefile", str(REPO / "Snakefile"), *config, cwd=wd, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ("faces_shard0" in proc.stdout + proc.stderr) == (n == 3)
    assert load_script("compare_results").compare(tmp_path / "per1" / "results", tmp_path / "per3" / "results") == []
    assert len(list((tmp_path / "per3" / "results" / "faces").glob("*.h5"))) == 3


def test_embed_shards_plan_one_job_per_shard_with_the_profile_embed_settings(workdir):
    """clips_per_embed_job=5 cuts the demo's 12 clips (visual) and 11 videos (audio, text), sorted by id, into
    embed_<modality>_shard0..2 for each backbone: one `emofusion embed` per shard with every clip's or video's
    options, the threads and resources set for its per-clip rule (runtime per id times the shard's ids), and the
    same shard files for embed_merge."""
    args = on_demo(workdir, "-n", "--cores", "4", "--printshellcmds")
    args[-2:-2] = [
        "--set-threads",
        "embed_visual=3",
        "--set-resources",
        "embed_audio:runtime=attempt*7",
        "embed_text:gpu=1",
    ]
    proc = snakemake(*args, "clips_per_embed_job=5", cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = planned_jobs(out.split("Job stats:")[1].split("Reasons:")[0])
    for modality in ("visual", "audio", "text"):
        assert {r: n for r, n in jobs.items() if r.startswith(f"embed_{modality}")} == {
            f"embed_{modality}_shard{i}": 1 for i in (0, 1, 2)
        }
    assert jobs["embed_merge"] == 3 and jobs["faces"] == 12 and jobs["transcribe"] == 11
    shard = {
        r: out[out.index(f"rule {r}:") :].split("\n\n")[0]
        for r in ("embed_visual_shard1", "embed_audio_shard1", "embed_text_shard2")
    }
    clips = ["demo06-30-640x180_left", "demo06-30-640x180_right", "demo07-30-320x180", "demo08-30-320x180"]
    clips.append("demo09-30-320x180")
    visual = shard["embed_visual_shard1"]
    assert f"output: {', '.join(f'results/features/visual/fer/{c}.h5' for c in clips)}" in visual, visual
    assert "threads: 3" in visual and "runtime" not in visual and "mem_mb=3000" in visual, visual
    audio = shard["embed_audio_shard1"]
    videos = ["demo06-30-640x180", "demo07-30-320x180", "demo08-30-320x180", "demo09-30-320x180", "demo10-30-320x180"]
    assert f"output: {', '.join(f'results/features/audio/egemaps/{v}.h5' for v in videos)}" in audio, audio
    assert "runtime=35" in audio and "threads" not in audio.split("Shell command")[0].split("wildcards")[1], audio
    text = shard["embed_text_shard2"]
    assert "output: results/features/text/minilm/demo11-30-320x180.h5" in text and "gpu=1" in text, text
    # one process per shard: each clip's (video's) options as the per-clip rule gives them
    command = next(
        line for line in out.splitlines() if "emofusion embed " in line and "shard1.log" in line and "visual" in line
    )
    assert command.count("--faces ") == command.count("--video ") == command.count("--out ") == 5, command
    assert "--threads 3" in command and f"--out results/features/visual/fer/{clips[0]}.h5" in command, command
    command = next(line for line in out.splitlines() if "emofusion embed " in line and "egemaps/shard1.log" in line)
    assert command.count("--audio ") == command.count("--clips ") == command.count("--out ") == 5, command
    assert (
        "--clips demo06-30-640x180_left demo06-30-640x180_right "
        "--out results/features/audio/egemaps/demo06-30-640x180.h5" in command
    )
    command = next(line for line in out.splitlines() if "emofusion embed " in line and "minilm/shard0.log" in line)
    assert command.count("--transcript ") == command.count("--audio ") == command.count("--out ") == 5, command


@pytest.mark.workflow
def test_embed_shards_write_the_files_of_per_clip_jobs(tmp_path):
    """Two clips embedded with every modality's backbone by per-clip jobs, then (their inputs kept, the shards
    removed) by one shard job per modality: the same shard files and stores, and no upstream job reruns."""
    clips = ("demo07-30-320x180", "demo09-30-320x180")
    corpus = demo_subset(tmp_path / "corpus", clips)
    targets = [
        f"results/features/{m}/{b}/{c}.h5"
        for m, b in (("visual", "fer"), ("audio", "egemaps"), ("text", "minilm"))
        for c in clips
    ]
    targets += [
        "results/features/visual/fer.h5",
        "results/features/audio/egemaps.h5",
        "results/features/text/minilm.h5",
    ]
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    for n in (1, 2):
        config = ["--config", f"corpus={{root: {corpus}}}", f"clips_per_embed_job={n}"]
        proc = snakemake(
            *targets, "--cores", "2", "--snakefile", str(REPO / "Snakefile"), *config, cwd=tmp_path, timeout=600
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        jobs = planned_jobs(out.split("Job stats:")[1].split("\n\n")[0])
        if n == 1:
            (tmp_path / "results" / "features").rename(tmp_path / "per-clip")
        else:
            assert jobs == {
                "embed_visual_shard0": 1,
                "embed_audio_shard0": 1,
                "embed_text_shard0": 1,
                "embed_merge": 3,
            }, jobs
    assert load_script("compare_results").compare(tmp_path / "per-clip", tmp_path / "results" / "features") == []
    assert len(list((tmp_path / "results" / "features").rglob("*.h5"))) == 9


def test_audio_shards_plan_one_audio_and_one_transcribe_job_per_shard(workdir):
    """clips_per_audio_job=5 cuts the demo's 11 videos, sorted by id, into audio_shard0..2 and transcribe_shard0..2:
    one `emofusion audio` / `emofusion transcribe` per shard with every video's options, the profile's settings of
    the per-video rule (runtime per video times the shard's videos)."""
    args = on_demo(workdir, "-n", "--cores", "4", "--printshellcmds")
    args[-2:-2] = ["--set-threads", "transcribe=3", "--set-resources", "audio:runtime=attempt*7", "transcribe:gpu=1"]
    proc = snakemake(*args, "clips_per_audio_job=5", cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = planned_jobs(out.split("Job stats:")[1].split("Reasons:")[0])
    for rule in ("audio", "transcribe"):
        assert {r: n for r, n in jobs.items() if r.startswith(rule)} == {f"{rule}_shard{i}": 1 for i in (0, 1, 2)}
    assert jobs["embed_audio"] == jobs["embed_text"] == 11
    videos = ["demo06-30-640x180", "demo07-30-320x180", "demo08-30-320x180", "demo09-30-320x180", "demo10-30-320x180"]
    audio = out[out.index("rule audio_shard1:") :].split("\n\n")[0]
    wavs = ", ".join(f"results/audio/{v}.wav, results/audio/{v}.json" for v in videos)
    assert f"output: {wavs}" in audio and "runtime=35" in audio and "mem_mb=1000" in audio, audio
    transcribe = out[out.index("rule transcribe_shard1:") :].split("\n\n")[0]
    assert "threads: 3" in transcribe and "gpu=1" in transcribe and "runtime" not in transcribe, transcribe
    assert f"results/transcripts/{videos[0]}.parquet (update)" in transcribe, transcribe
    command = next(line for line in out.splitlines() if "emofusion audio " in line and "shard1.log" in line)
    assert command.count("--video ") == command.count("--audio ") == command.count("--out ") == 5, command
    command = next(line for line in out.splitlines() if "emofusion transcribe " in line and "shard1.log" in line)
    assert command.count("--audio ") == command.count("--out ") == 5 and "--threads 3" in command, command
    assert f"--audio results/audio/{videos[0]}.wav --out results/transcripts/{videos[0]}.parquet" in command


@pytest.mark.workflow
def test_audio_shards_write_the_files_of_per_video_jobs(tmp_path):
    """Two videos' audio and transcripts by per-video jobs, then (those removed) by one audio and one transcribe
    shard: the same WAVs, sidecars and transcripts (provenance aside)."""
    corpus = demo_subset(tmp_path / "corpus", ("demo01-30-320x180", "demo02-30-320x180"))
    targets = [f"results/transcripts/demo0{i}-30-320x180.parquet" for i in (1, 2)]
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    for n in (1, 2):
        config = ["--config", f"corpus={{root: {corpus}}}", f"clips_per_audio_job={n}"]
        proc = snakemake(
            *targets, "--cores", "2", "--snakefile", str(REPO / "Snakefile"), *config, cwd=tmp_path, timeout=600
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        jobs = planned_jobs(out.split("Job stats:")[1].split("\n\n")[0])
        assert jobs == ({"audio": 2, "transcribe": 2} if n == 1 else {"audio_shard0": 1, "transcribe_shard0": 1}), jobs
        if n == 1:
            (tmp_path / "results").rename(tmp_path / "per-video")
    log = (tmp_path / "logs" / "transcribe" / "shard0.log").read_text()
    assert log.count("loading faster-whisper model") == 1, log  # one model for the shard's two videos
    assert load_script("compare_results").compare(tmp_path / "per-video", tmp_path / "results") == []
    assert len(list((tmp_path / "results").rglob("*.*"))) == 6


def test_dry_run_predict_with_a_run_not_yet_trained_and_a_side(workdir):
    """`snakemake predict` with predict.model naming a run of this workflow that does not exist yet trains and
    evaluates it first (its files are the predict jobs' inputs), passes it with --run, and with predict.side the
    declared outputs carry the `_<side>` suffix and the `.<name>` `emofusion predict --name` gives its files."""
    videos = [str(REPO / f"resources/demo/videos/batch1/demo0{i}-30-320x180.mp4") for i in (1, 2)]
    predict = f"predict={{model: results/fusion/rjca/fold0/seed0, videos: [{', '.join(videos)}], side: left}}"
    args = on_demo(workdir, "-n", "--cores", "1", "predict")
    proc = snakemake(*args[:-1], f"{args[-1]}", predict, "--quiet", "rules", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = planned_jobs(proc.stdout)
    assert (jobs["train"], jobs["evaluate"], jobs["predict_video"]) == (1, 1, 2), jobs
    proc = snakemake(*args[:-1], f"{args[-1]}", predict, "--printshellcmds", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in (1, 2):
        assert f"results/predict/rjca-fold0-seed0/demo0{i}-30-320x180_left.rjca-fold0-seed0.csv" in proc.stdout
    assert "--run results/fusion/rjca/fold0/seed0" in proc.stdout and "--side left" in proc.stdout
    assert "--name rjca-fold0-seed0 --overwrite" in proc.stdout  # the model in the names, as the outputs declare
