"""The Slurm profile (workflow/profiles/slurm): lint and dry run with it, and (marked `slurm`) extraction on a real
single-node Slurm cluster that the test brings up (tests/slurm/start_slurm.sh) and always stops (stop_slurm.sh)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SNAKEMAKE, demo_subset, on_demo, snakemake, venv_env

SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "slurm" / "profile"  # the test cluster's partition etc., laid over SLURM_PROFILE
SCRIPTS = REPO / "tests" / "slurm"
SHARDS = {
    "faces": "faces_shard",
    "audio": "audio_shard",
    "transcribe": "transcribe_shard",  # rule -> group
    "embed_visual": "embed_visual_shard",
    "embed_audio": "embed_audio_shard",
    "embed_text": "embed_text_shard",
}
# Two clips with the corpus's pre-aligned crops (no detection: quick on a CPU) make one face shard; plus one video's
# audio, a CPU shard.
TARGETS = [
    "results/faces/demo09-30-320x180.h5",
    "results/faces/demo07-30-320x180.h5",
    "results/audio/demo09-30-320x180.wav",
]


def test_lint_accepts_slurm_profile(workdir):
    proc = snakemake(*on_demo(workdir, "--lint", "--workflow-profile", str(SLURM_PROFILE)), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_with_slurm_profile_plans_a_shard_per_group(workdir):
    """The real profile, placeholders and all, plans the extraction. Without group-components every clip would be
    a group job of its own; with it all of the demo's clips fit one shard per rule."""
    proc = snakemake(*on_demo(workdir, "features", "-n", "--workflow-profile", str(SLURM_PROFILE)), cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for rule, group in SHARDS.items():
        assert int(re.search(rf"^{rule}\s+(\d+)$", out, re.MULTILINE).group(1)) > 1, out
        assert out.count(f"Group job {group} ") == 1, out


@pytest.fixture(scope="module")
def slurm_cluster():
    """A single-node Slurm cluster on localhost; stopped, and its state dir removed, whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test starts munged, slurmctld and slurmd")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and there is no apt-get to install Debian's munge, slurmctld, slurmd")
    try:
        start = subprocess.run(["bash", str(SCRIPTS / "start_slurm.sh")], capture_output=True, text=True, timeout=300)
        assert start.returncode == 0, f"start_slurm.sh failed:\n{start.stdout}{start.stderr}"
        yield
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_slurm.sh"), "--purge"], capture_output=True, timeout=120)


def snakemake_within(limit: int, *args: str, cwd: Path) -> str:
    """Snakemake with ``args`` in ``cwd``, stopped after ``limit`` seconds by SIGINT (`timeout -s INT`: a hung run
    stops as on Ctrl-C, the plugin cancelling its jobs; SIGTERM could leave it hanging); its output, once it is
    known to have succeeded."""
    cmd = ["timeout", "-s", "INT", "-k", "30", str(limit), SNAKEMAKE, *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=limit + 60, env=venv_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def slurm_job(job_id: str) -> str:
    """`scontrol show job` of a job, finished ones included (slurmctld keeps them for MinJobAge=300 s)."""
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout


@pytest.mark.slurm
def test_extraction_runs_as_slurm_shard_jobs(slurm_cluster, workdir):
    out = snakemake_within(
        240,
        *on_demo(workdir, *TARGETS, "--profile", str(SLURM_PROFILE), "--workflow-profile", str(TEST_PROFILE)),
        cwd=workdir,
    )
    for target in TARGETS:
        assert (workdir / target).stat().st_size > 0, target

    # Slurm ran them: one job per shard (both face clips in one job), COMPLETED, each with its job log
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", out))
    shards = {Path(log).parent.name: job_id for job_id, log in submitted.items()}
    assert sorted(shards) == ["group_audio_shard_audio", "group_faces_shard_faces"], out
    for job_id, log in submitted.items():
        assert "JobState=COMPLETED" in slurm_job(job_id), slurm_job(job_id)
        assert Path(log).is_file(), log
    # the face shard asked Slurm for the GPU (the profile's gpu: 1 -> sbatch --gpus=1), the audio shard did not
    assert "gpu:1" in slurm_job(shards["group_faces_shard_faces"])
    assert "gpu" not in slurm_job(shards["group_audio_shard_audio"])


@pytest.mark.slurm
def test_a_face_shard_is_one_slurm_job_with_the_profile_faces_resources(slurm_cluster, workdir):
    """clips_per_face_job=2: both face clips in one rule job (one `emofusion faces` process), submitted as one
    Slurm job that takes the profile's `faces` resources: the GPU, and 2 x 15 min of runtime."""
    faces = [t for t in TARGETS if t.startswith("results/faces/")]
    corpus = demo_subset(workdir / "corpus")  # just these two clips: one shard
    args = on_demo(workdir, *faces, "--profile", str(SLURM_PROFILE), "--workflow-profile", str(TEST_PROFILE))
    args[-1] = f"corpus={{root: {corpus}}}"
    out = snakemake_within(240, *args, "clips_per_face_job=2", cwd=workdir)
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)
    assert [next(p for p in Path(log).parts if p.startswith("rule_")) for _, log in submitted] == [
        "rule_faces_shard0"
    ], out
    job = slurm_job(submitted[0][0])
    assert "JobState=COMPLETED" in job and "gpu:1" in job and "TimeLimit=00:30:00" in job, job
    log = (workdir / "logs/faces/shard0.log").read_text()
    for target in faces:
        assert (workdir / target).stat().st_size > 0, target
        assert Path(target).stem in log


@pytest.mark.slurm
def test_audio_and_transcription_shards_are_one_slurm_job_each_with_the_profile_resources(slurm_cluster, workdir):
    """clips_per_audio_job=2: both videos' audio in one `emofusion audio` process and both transcripts in one
    `emofusion transcribe` process (Whisper loaded once), each submitted as one Slurm job with its rule's profile
    resources scaled by its videos: audio 2 x 5 min and no GPU, transcribe 2 x 15 min and the GPU."""
    videos = ["demo07-30-320x180", "demo09-30-320x180"]
    targets = [f"results/{d}/{v}.{x}" for v in videos for d, x in (("audio", "wav"), ("transcripts", "parquet"))]
    corpus = demo_subset(workdir / "corpus")  # just these two videos: one shard per stage
    args = on_demo(workdir, *targets, "--profile", str(SLURM_PROFILE), "--workflow-profile", str(TEST_PROFILE))
    args[-1] = f"corpus={{root: {corpus}}}"
    out = snakemake_within(300, *args, "clips_per_audio_job=2", cwd=workdir)
    submitted = {
        next(p for p in Path(log).parts if p.startswith("rule_")): job_id
        for job_id, log in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)
    }
    assert sorted(submitted) == ["rule_audio_shard0", "rule_transcribe_shard0"], out
    audio, transcribe = slurm_job(submitted["rule_audio_shard0"]), slurm_job(submitted["rule_transcribe_shard0"])
    assert "JobState=COMPLETED" in audio and "TimeLimit=00:10:00" in audio and "gpu" not in audio, audio
    assert "JobState=COMPLETED" in transcribe and "TimeLimit=00:30:00" in transcribe and "gpu:1" in transcribe
    for target in targets:
        assert (workdir / target).stat().st_size > 0, target
    for stage in ("audio", "transcribe"):
        log = (workdir / f"logs/{stage}/shard0.log").read_text()
        assert all(v in log for v in videos), log


@pytest.mark.slurm
def test_a_fusion_training_runs_as_a_slurm_gpu_job(slurm_cluster, workdir):
    """One `train` job through the real profile: its own Slurm job (not a shard), asking for the GPU. The inputs are
    a small synthetic corpus written where the stages would have put theirs, and only `train` may run."""
    import yaml

    from fusion_corpus import make_corpus

    make_corpus(workdir / "results")  # manifest.parquet, labels.h5, features/<modality>/<backbone>.h5
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["fusion"]["experiments"] = {
        "tiny": {
            "model": "early_fusion",
            "stores": {"visual": "synthv", "audio": "syntha"},
            "training": {"window": 32, "steps": 8, "pool": 2, "epochs": 2},
        }
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/fusion/tiny/fold0/seed0/model.pt"
    out = snakemake_within(
        240,
        *on_demo(
            workdir,
            target,
            "--allowed-rules",
            "train",
            "--profile",
            str(SLURM_PROFILE),
            "--workflow-profile",
            str(TEST_PROFILE),
        ),
        cwd=workdir,
    )
    assert (workdir / target).stat().st_size > 0
    assert len((workdir / "results/fusion/tiny/fold0/seed0/log.jsonl").read_text().splitlines()) == 2
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)
    assert len(submitted) == 1, out
    job = slurm_job(submitted[0][0])
    assert "JobState=COMPLETED" in job and "gpu:1" in job, job


@pytest.mark.slurm
def test_embedding_runs_as_slurm_jobs_and_gives_the_store_of_a_local_run(slurm_cluster, tmp_path):
    """The visual store of a two-clip corpus through the cluster: a face shard, an embedding shard on the GPU and
    the merge, each a Slurm job; the store holds the same rows as a local run's."""
    from emofusion.features.store import IDENTITY_ATTRS, FeatureStore

    corpus = demo_subset(tmp_path / "corpus")
    target = "results/features/visual/fer.h5"
    runs = {}
    for where in ("slurm", "local"):
        wd = tmp_path / where
        wd.mkdir()
        shutil.copy(REPO / "config.yaml", wd / "config.yaml")
        how = (
            ["--profile", str(SLURM_PROFILE), "--workflow-profile", str(TEST_PROFILE)]
            if where == "slurm"
            else ["--cores", "2"]
        )
        runs[where] = snakemake_within(
            270,
            target,
            *how,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(wd),
            "--config",
            f"corpus={{root: {corpus}}}",
            cwd=wd,
        )
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", runs["slurm"]))
    # the plugin logs to slurm_logs/group_<group>_<rule>/... for a shard, slurm_logs/rule_<rule>/<wildcards>/...
    jobs = {
        next(p for p in Path(log).parts if p.startswith(("group_", "rule_"))): job_id
        for job_id, log in submitted.items()
    }
    assert sorted(jobs) == ["group_embed_visual_shard_embed_visual", "group_faces_shard_faces", "rule_embed_merge"], (
        runs["slurm"]
    )
    for job_id in submitted:
        assert "JobState=COMPLETED" in slurm_job(job_id), slurm_job(job_id)
    assert "gpu:1" in slurm_job(jobs["group_embed_visual_shard_embed_visual"])
    assert "gpu" not in slurm_job(jobs["rule_embed_merge"])

    cluster, local = (FeatureStore(tmp_path / w / target) for w in ("slurm", "local"))
    assert cluster.clips == local.clips == ["demo07-30-320x180", "demo09-30-320x180"]
    assert {k: cluster.attrs[k] for k in IDENTITY_ATTRS} == {k: local.attrs[k] for k in IDENTITY_ATTRS}
    for clip in cluster.clips:
        (fa, va), (fb, vb) = cluster.read(clip), local.read(clip)
        assert va.any() and np.array_equal(va, vb) and np.array_equal(fa, fb), clip
