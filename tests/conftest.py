"""Shared fixtures: small media made with ffmpeg, paths of the repository and the shared data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
SHARED_DATA = REPO.parent / "shared" / "data"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def venv_env() -> dict[str, str]:
    """This environment with the interpreter's bin first, as `source .venv/bin/activate` does: rules (and Slurm
    jobs, which inherit it) call `emofusion` from PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=venv_env())


@pytest.fixture
def workdir(tmp_path):
    """A working directory holding the repository's config (the demo corpus is set by :func:`on_demo`)."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def on_demo(workdir: Path, *args: str) -> list[str]:
    """Snakemake arguments that run the repository's workflow in ``workdir`` (holding its config.yaml) on the demo
    corpus. --config goes last: it takes several values, so targets after it would be read as config entries."""
    return [*args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--config", f"corpus={{root: {DEMO}}}"]


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test with its stderr if it fails."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh installs it)")
    proc = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {proc.stderr}")


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """Factory: a small synthetic H.264 video with `frames` frames at `fps` (and a sine audio track)."""
    cache: dict[tuple, Path] = {}

    def make(frames: int = 12, fps: int = 30, size: str = "64x48", audio: bool = True) -> Path:
        key = (frames, fps, size, audio)
        if key not in cache:
            out = tmp_path_factory.mktemp("video") / f"v{frames}_{fps}.mp4"
            dur = frames / fps
            args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}:duration={dur}"]
            if audio:
                args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={dur}"]
            args += ["-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p"]
            args += ["-c:a", "aac", "-shortest"] if audio else []
            run_ffmpeg(*args, str(out))
            cache[key] = out
        return cache[key]

    return make
