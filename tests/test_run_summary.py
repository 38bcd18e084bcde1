"""The end of a Snakemake run on the console (emofusion.runlog, called by the Snakefile's onsuccess / onerror): every
failed job in one line with its message and log, and the warnings this run's jobs logged, once each."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import REPO, demo_subset, snakemake
from emofusion.runlog import print_summary, summary

# The blocks of a Snakemake 9 log (.snakemake/log/*.snakemake.log) the summary reads, as Snakemake writes them.
SNAKEMAKE_LOG = """\
Building DAG of jobs...
Execute 4 jobs...
[Sun Dec  6 12:10:45 2026]
rule faces:
    input: aw/videos/a.mp4
    output: results/faces/a.h5
    log: logs/faces/a.log
    jobid: 3
    reason: Missing output files: results/faces/a.h5
    wildcards: clip=a
    resources: tmpdir=/tmp
[Sun Dec  6 12:10:45 2026]
rule faces:
    output: results/faces/b.h5
    log: logs/faces/b.log
    jobid: 4
    wildcards: clip=b
[Sun Dec  6 12:10:45 2026]
localrule train:
    output: results/fusion/ef/fold0/seed0/model.pt
    log: logs/train/ef/fold0/seed0.log
    jobid: 7
    wildcards: experiment=ef, fold=0, seed=0
[Sun Dec  6 12:10:45 2026]
rule audio:
    output: results/audio/c.wav
    log: logs/audio/c.log
    jobid: 5
    wildcards: video=c
RuleException:
CalledProcessError in file "workflow/rules/faces.smk", line 19:
Command 'set -euo pipefail;  emofusion faces ...' returned non-zero exit status 1.
[Sun Dec  6 12:10:53 2026]
Error in rule faces:
    message: None
    jobid: 3
    input: aw/videos/a.mp4
    output: results/faces/a.h5
    log: logs/faces/a.log (check log file(s) for error details)
    shell:
        emofusion faces --video aw/videos/a.mp4 --clip a --out results/faces/a.h5 > logs/faces/a.log 2>&1
        (command exited with non-zero exit code)
Logfile logs/faces/a.log:
================================================================================
[Sun Dec  6 12:10:54 2026]
Error in rule audio:
    jobid: 5
    output: results/audio/c.wav
    log: logs/audio/c.log (check log file(s) for error details)
Exiting because a job execution failed. Look above for error messages
"""

JOB_LOGS = {
    "logs/faces/a.log": (
        "2026-12-06 12:10:50,001 INFO emofusion: a: 48 frames\n"
        "2026-12-06 12:10:51,662 ERROR emofusion: video aw/videos/a.mp4 is truncated at frame 12 of 48; replace it\n"
    ),
    "logs/faces/b.log": (
        "2026-12-06 12:10:50,001 WARNING emofusion: b: no face in 30 of 48 frames\n"
        "2026-12-06 12:10:50,002 WARNING emofusion: torch: TF32 is off\n"
    ),
    "logs/train/ef/fold0/seed0.log": (
        "2026-12-06 12:10:50,001 WARNING emofusion: results/fusion/ef/fold0/seed0/resume.pt cannot be read; set "
        "aside as resume.pt.corrupt, training starts over\n"
        "2026-12-06 12:10:50,002 WARNING emofusion: torch: TF32 is off\n"
    ),
    "logs/audio/c.log": (
        "Traceback (most recent call last):\n"
        '  File "/x/audio.py", line 3, in <module>\n'
        "    decode()\n"
        "MemoryError: cannot allocate 2 GiB\n"
    ),
    "logs/faces/old.log": "2026-12-01 10:00:00,000 WARNING emofusion: from an earlier run, not this one\n",
}


def _project(root: Path) -> Path:
    for rel, text in JOB_LOGS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_failed_jobs_one_line_each_and_the_warnings_of_the_run_once(tmp_path):
    text = summary(SNAKEMAKE_LOG, _project(tmp_path))
    assert text.splitlines() == [
        "2 jobs failed:",
        "  faces (clip=a): video aw/videos/a.mp4 is truncated at frame 12 of 48; replace it [logs/faces/a.log]",
        "  audio (video=c): MemoryError: cannot allocate 2 GiB [logs/audio/c.log]",
        "3 warnings in the job logs of this run:",
        "  b: no face in 30 of 48 frames [logs/faces/b.log]",
        "  torch: TF32 is off [logs/faces/b.log]",
        "  results/fusion/ef/fold0/seed0/resume.pt cannot be read; set aside as resume.pt.corrupt, training starts "
        "over [logs/train/ef/fold0/seed0.log]",
    ]


def test_a_job_without_a_readable_log_and_a_quiet_run(tmp_path):
    assert summary(SNAKEMAKE_LOG, tmp_path).splitlines()[:3] == [
        "2 jobs failed:",
        f"  faces (clip=a): no log ({tmp_path / 'logs/faces/a.log'} cannot be read) [logs/faces/a.log]",
        f"  audio (video=c): no log ({tmp_path / 'logs/audio/c.log'} cannot be read) [logs/audio/c.log]",
    ]
    (tmp_path / "logs/faces").mkdir(parents=True)
    (tmp_path / "logs/faces/a.log").write_text("")
    assert "faces (clip=a): its log is empty (killed, or out of memory or time?)" in summary(SNAKEMAKE_LOG, tmp_path)
    assert summary("Building DAG of jobs...\nNothing to be done.\n", tmp_path) == ""


def test_print_summary_reads_the_log_files_snakemake_hands_over(tmp_path, monkeypatch):
    monkeypatch.chdir(_project(tmp_path))
    (tmp_path / "run.snakemake.log").write_text(SNAKEMAKE_LOG)
    out = io.StringIO()
    print_summary([str(tmp_path / "run.snakemake.log")], out=out)  # Snakemake 9 hands a list
    assert out.getvalue().startswith("2 jobs failed:\n  faces (clip=a): video aw/videos/a.mp4 is truncated")
    out = io.StringIO()
    print_summary([], out=out)
    print_summary([str(tmp_path / "gone.log")], out=out)
    assert out.getvalue() == ""


@pytest.mark.workflow
def test_a_failed_run_ends_with_its_failed_jobs_and_a_run_with_warnings_with_them(workdir):
    """A corpus with two bad videos: the manifest job fails (the console ends with it, in one line); with
    on_bad_video: skip it succeeds and its warnings reach the console."""
    from test_bad_input_workflow import corpus_with_bad_videos, official_split_only

    official_split_only(workdir)
    root = corpus_with_bad_videos(demo_subset(workdir / "aw2"))
    base = ["results/manifest.parquet", "--cores", "1", "--snakefile", str(REPO / "Snakefile")]
    proc = snakemake(*base, "--config", f"corpus={{root: {root}}}", cwd=workdir)
    assert proc.returncode != 0
    console = proc.stderr.splitlines()
    at = console.index("1 job failed:")
    line = console[at + 1]
    assert line.startswith("  manifest (results/manifest.parquet): 2 bad video(s) in the corpus;"), line
    assert "empty01.mp4: the file is empty" in line and line.endswith(" [logs/manifest/manifest.log]"), line

    proc = snakemake(*base, "--config", f"corpus={{root: {root}, on_bad_video: skip}}", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    console = proc.stderr.splitlines()
    at = console.index("2 warnings in the job logs of this run:")
    assert (
        console[at + 1].startswith("  corpus.on_bad_video is skip: leaving out ") and "empty01.mp4" in console[at + 1]
    )
    assert "notes01.mp4" in console[at + 2] and "1 job failed:" not in proc.stderr
