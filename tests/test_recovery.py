"""Recovery after a kill: `snakemake` and its face job killed with SIGKILL mid-write (a power cut), then the steps
docs/troubleshooting.md gives; one complete store, no temporary left, nothing else touched."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import SNAKEMAKE, on_demo, snakemake, venv_env

CLIP = "demo02-30-320x180"  # MTCNN on 271 frames: several seconds of writing to catch
TARGET = f"results/faces/{CLIP}.h5"


@pytest.mark.workflow
def test_kill_during_a_face_job_then_unlock_and_rerun(workdir):
    from emofusion.faces.store import read_faces

    faces = workdir / "results" / "faces"
    faces.mkdir(parents=True)
    keep = {"notes.txt": "mine", ".other.h5.tmp-abcd1234.h5": "another output's"}
    for name, text in keep.items():
        (faces / name).write_text(text)
    proc = subprocess.Popen(
        [SNAKEMAKE, *on_demo(workdir, TARGET, "--cores", "2")],
        cwd=workdir,
        env=venv_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(faces.glob(f".{CLIP}.h5.tmp-*")):
            assert proc.poll() is None, "snakemake ended before the face job started writing"
            assert time.monotonic() < deadline, "the face job never started writing"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job at once: nothing gets to clean up
        proc.wait(timeout=30)
    assert len(list(faces.glob(f".{CLIP}.h5.tmp-*"))) == 1 and not (workdir / TARGET).exists()

    locked = snakemake(*on_demo(workdir, TARGET, "--cores", "2"), cwd=workdir)
    assert locked.returncode != 0 and "Directory cannot be locked" in locked.stdout + locked.stderr
    # `emofusion status` names the lock and the command that lifts it; run as printed
    found = subprocess.run(
        ["emofusion", "status", "--no-dry-run"], cwd=workdir, capture_output=True, text=True, env=venv_env()
    )
    lines = found.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(".snakemake/locks: a Snakemake run holds"))
    command = lines[at + 1].split("repair: ", 1)[1]
    assert command == "snakemake --unlock", found.stdout
    unlock = snakemake(*on_demo(workdir, *command.split()[1:]), cwd=workdir)
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    assert (
        ".snakemake/locks"
        not in subprocess.run(
            ["emofusion", "status", "--no-dry-run"], cwd=workdir, capture_output=True, text=True, env=venv_env()
        ).stdout
    )
    rerun = snakemake(*on_demo(workdir, TARGET, "--cores", "2"), cwd=workdir, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    store = read_faces(workdir / TARGET, crops=False)
    assert store["attrs"]["frames"] == 271 and len(store["valid"]) == 271 and store["valid"].all()
    assert sorted(p.name for p in faces.iterdir()) == sorted([f"{CLIP}.h5", *keep])
    assert all((faces / name).read_text() == text for name, text in keep.items())
    assert "temporary of an earlier write" in (workdir / "logs" / "faces" / f"{CLIP}.log").read_text()
    again = snakemake(*on_demo(workdir, TARGET, "--cores", "2", "-n"), cwd=workdir)
    assert "Nothing to be done" in again.stdout + again.stderr  # the finished store is never redone
