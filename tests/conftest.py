"""Shared fixtures: small media made with ffmpeg, paths of the repository and of its real test media."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
TEST_DATA = REPO / "tests" / "data"  # real recordings, in the repository (tests/data/README.md: sources, licences)
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def venv_env() -> dict[str, str]:
    """This environment with the interpreter's bin first, as `source .venv/bin/activate` does: rules (and Slurm
    jobs, which inherit it) call `emofusion` from PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run Snakemake in ``cwd``: a test's own directory (:func:`workdir`, with :func:`on_demo`), never the
    checkout, whose results/, logs/ and .snakemake/ hold whatever the user's last run left there."""
    if Path(cwd).resolve() == REPO:
        raise ValueError("run Snakemake in the test's own directory (workdir + on_demo), not in the checkout")
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=venv_env())


def _outputs_of_the_checkout() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the checkout's results/ and logs/."""
    found = {}
    for top in ("results", "logs"):
        for path in (REPO / top).rglob("*"):
            if path.is_file():
                st = path.stat()
                found[str(path.relative_to(REPO))] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="session", autouse=True)
def checkout_outputs_untouched():
    """No test may change the checkout's results/ or logs/ (a user's demo run lives there): checked once at the
    end of the session."""
    before = _outputs_of_the_checkout()
    yield
    after = _outputs_of_the_checkout()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, (
        f"the tests changed {len(changed)} file(s) of the checkout's results/ or logs/, e.g. "
        f"{changed[:5]}: run the workflow in the test's own directory (workdir + on_demo); "
        "or was a snakemake running in the checkout at the same time?"
    )


@pytest.fixture
def workdir(tmp_path):
    """A working directory holding the repository's config (the demo corpus is set by :func:`on_demo`)."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the test machines' cores are shared), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def on_demo(workdir: Path, *args: str) -> list[str]:
    """Snakemake arguments that run the repository's workflow in ``workdir`` (holding its config.yaml) on the demo
    corpus. --config goes last: it takes several values, so targets after it would be read as config entries."""
    return [
        *args,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--config",
        f"corpus={{root: {DEMO}}}",
    ]


def load_script(name: str):
    """A script of scripts/ (not a package) as a module, e.g. load_script("compare_results")."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def planned_jobs(summary: str) -> dict[str, int]:
    """Rule -> job count from the table `snakemake -n --quiet rules` prints (its total line left out)."""
    counts = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test with its stderr if it fails."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/setup.sh installs it)")
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True, text=True
    )
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


def demo_subset(root: Path, clips: tuple[str, ...] = ("demo07-30-320x180", "demo09-30-320x180")) -> Path:
    """Some of the demo's clips as an Aff-Wild2 tree of links (default: the two with pre-aligned crops, which
    need no face detection and so run quickly on a CPU). Extend an existing tree by calling it again."""
    for clip in clips:
        for src in [
            *DEMO.glob(f"videos/*/{clip}.mp4"),
            *DEMO.glob(f"annotations/*/*/{clip}.txt"),
            *DEMO.glob(f"cropped_aligned/{clip}"),
        ]:
            dst = root / src.relative_to(DEMO)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
    return root


def run_status(workdir: Path, *snakemake_args: str) -> tuple[int, str]:
    """`emofusion status` in ``workdir`` as a user runs it, its dry run told where the Snakefile is (and any other
    Snakemake arguments); (exit code, stdout and stderr)."""
    proc = subprocess.run(
        ["emofusion", "status", "--", "--snakefile", str(REPO / "Snakefile"), *snakemake_args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=venv_env(),
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr
