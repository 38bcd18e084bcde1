"""Shared fixtures: small media made with ffmpeg, paths of the repository and the shared data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
SHARED_DATA = REPO.parent / "shared" / "data"


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
