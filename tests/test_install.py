"""emofusion as an installed package, away from the checkout: the wheel carries the code and the data it reads at
run time (the config schema), and its `emofusion` command gives every subcommand's --help and extracts the faces
of a real video."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TEST_DATA, run_ffmpeg
from emofusion.cli import build_parser

pytestmark = pytest.mark.slow


def _builds_wheels_offline() -> bool:
    """Whether this interpreter's setuptools writes wheels itself (70.1 and later, or with the wheel package):
    then pip builds without an isolated environment, offline. Otherwise pip gets setuptools from the index for
    an isolated build, as scripts/setup.sh's editable install does."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of what the wheel is made of (a build in place would write build/
    and an egg-info into the checkout)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    isolation = ["--no-build-isolation"] if _builds_wheels_offline() else []
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("emofusion-*.whl")
    return wheel


def fresh_venv(tmp_path: Path) -> Path:
    """A new virtual environment that sees this environment's third-party packages (a .pth file naming its
    site-packages, whose own .pth files, the editable install's among them, are not run) but not the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    venv = fresh_venv(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    elsewhere = tmp_path / "elsewhere"  # not the checkout, and nothing of it on the path
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    code = (
        "import argparse, emofusion, emofusion.cli, emofusion.config; print(emofusion.__file__); "
        "print(emofusion.config.schema_path()); p = emofusion.cli.build_parser(); "
        "print(' '.join(next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices))"
    )
    proc = run(str(venv / "bin" / "python"), "-c", code)
    assert proc.returncode == 0, proc.stderr
    package, schema, names = proc.stdout.splitlines()
    assert Path(package).resolve().is_relative_to(venv.resolve()), package
    assert Path(schema).resolve().is_relative_to(venv.resolve()) and Path(schema).is_file(), schema
    here = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(names.split()) == sorted(here)  # every subcommand made it into the wheel

    emofusion = str(venv / "bin" / "emofusion")
    proc = run(emofusion, "--help")
    assert proc.returncode == 0 and "usage: emofusion" in proc.stdout, proc.stderr
    for name in names.split():
        proc = run(emofusion, name, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: emofusion {name} "), (name, proc.stderr)

    # a real face extraction: 12 frames of one man facing the camera
    video = tmp_path / "face.mp4"
    run_ffmpeg(
        "-i",
        str(TEST_DATA / "pyfeat_videos" / "single_face.mp4"),
        "-frames:v",
        "12",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        "-an",
        str(video),
    )
    out = elsewhere / "results" / "faces" / "face.h5"
    proc = run(
        emofusion,
        "faces",
        "--config-json",
        '{"faces": {"device": "cpu"}}',
        "--video",
        str(video),
        "--threads",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import h5py

    with h5py.File(out, "r") as f:
        assert f["crops"].shape == (12, 112, 112, 3)
        assert np.asarray(f["valid"]).sum() >= 10  # the man is found in (nearly) every frame
