"""What every output records: package versions, git revision, config hash and seed."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import emofusion
from emofusion.packages import installed_version

_PACKAGES = (
    "torch",
    "torchaudio",
    "torchcodec",
    "numpy",
    "h5py",
    "facenet-pytorch",
    "openai-whisper",
    "faster-whisper",
    "transformers",
    "snakemake",
)


def config_hash(config: Any) -> str:
    """A stable short hash of a JSON-serialisable config (sorted keys)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (weights can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.cache
def git_revision() -> str:
    """The checkout's commit (with ``-dirty`` when modified), or ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


@functools.cache
def versions() -> dict[str, str]:
    """Versions of Python, emofusion and the packages whose behaviour shapes the outputs."""
    out = {"python": platform.python_version(), "emofusion": emofusion.__version__}
    for name in _PACKAGES:
        version = installed_version(name)
        if version is not None:
            out[name] = version
    return out


def provenance(config: Any = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance record stored in every output (HDF5 attributes, Parquet metadata, checkpoints)."""
    rec: dict[str, Any] = {"versions": versions(), "git": git_revision()}
    if config is not None:
        rec["config"] = config
        rec["config_hash"] = config_hash(config)
    if seed is not None:
        rec["seed"] = seed
    rec.update(extra)
    return rec
