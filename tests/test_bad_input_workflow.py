"""Bad input at the edges of Snakemake: bad videos in the corpus (one message naming all, the last good manifest
kept, or left out with on_bad_video: skip) and the default profile that shows a failing job's log on the console."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import DEMO, REPO, demo_subset, planned_jobs, snakemake

ANN = Path("annotations") / "VA_Estimation_Challenge" / "Train_Set"


def official_split_only(workdir: Path) -> None:
    """folds.k: 0 in the test's config.yaml: two clips make one train/validation group, too few for folds."""
    config = workdir / "config.yaml"
    config.write_text(config.read_text().replace("folds:\n  k: 3\n", "folds:\n  k: 0\n", 1))


def corpus_with_bad_videos(root: Path) -> Path:
    """Two good demo clips plus two annotated bad videos: a zero-byte .mp4 and a text file renamed .mp4."""
    demo_subset(root)
    (root / "videos" / "batch1").mkdir(parents=True, exist_ok=True)
    (root / "videos" / "batch1" / "empty01.mp4").write_bytes(b"")
    (root / "videos" / "batch1" / "notes01.mp4").write_text("meeting notes, renamed by mistake\n")
    (root / ANN).mkdir(parents=True, exist_ok=True)
    for clip in ("empty01", "notes01"):
        shutil.copy(DEMO / ANN / "demo01-30-320x180.txt", root / ANN / f"{clip}.txt")
    return root


def on(workdir: Path, root: Path, *args: str, skip: bool = False) -> list[str]:
    corpus = f"corpus={{root: {root}{', on_bad_video: skip' if skip else ''}}}"
    return [*args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--config", corpus]


def test_skip_leaves_non_videos_out_of_the_dag(workdir):
    root = corpus_with_bad_videos(workdir / "aw2")
    proc = snakemake(*on(workdir, root, "-n", "--cores", "1", "--quiet", "rules", skip=True), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = planned_jobs(proc.stdout)
    assert jobs["faces"] == 2 and jobs["audio"] == 2, jobs


@pytest.mark.workflow
def test_bad_videos_one_message_on_the_console_and_the_manifest_kept(workdir):
    official_split_only(workdir)
    root = demo_subset(workdir / "aw2")
    target = "results/manifest.parquet"
    proc = snakemake(*on(workdir, root, target, "--cores", "1"), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    good = (workdir / target).read_bytes()

    corpus_with_bad_videos(root)
    # A plain run (no --workflow-profile): profiles/default shows the failing job's log, so the message is here.
    proc = snakemake(*on(workdir, root, target, "--cores", "1"), cwd=workdir)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "2 bad video(s)" in console, console
    assert "empty01.mp4: the file is empty" in console and "notes01.mp4: not a video container" in console
    assert (workdir / target).read_bytes() == good  # the last good manifest is put back

    proc = snakemake(*on(workdir, root, target, "--cores", "1", skip=True), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import pandas as pd

    from emofusion.io import read_parquet_metadata

    assert sorted(pd.read_parquet(workdir / target)["clip"]) == ["demo07-30-320x180", "demo09-30-320x180"]
    skipped = read_parquet_metadata(workdir / target)["skipped_videos"]
    assert sorted(Path(v).name for v in skipped) == ["empty01.mp4", "notes01.mp4"]
