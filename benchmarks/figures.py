"""The benchmarks' figures as JSON (``--json PATH``), so that ``benchmarks/affwild2.py`` can project them.

Every file holds ``{"benchmark": name, "machine": {...}, "figures": {...}}``: the figures as the benchmark
computed them and the machine they were measured on (device, GPU name, CPU count, torch version, commit, date,
command line), so a projection can cite each figure's source.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def machine(device: str) -> dict[str, Any]:
    import torch

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write_figures(path: str | os.PathLike, benchmark: str, figures: dict[str, Any], *, device: str) -> None:
    """Write ``figures`` of ``benchmark`` with the machine's description to ``path`` (atomically)."""
    from emofusion.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(
            json.dumps(
                {"benchmark": benchmark, "machine": machine(device), "figures": figures}, indent=2, default=float
            )
            + "\n"
        )
