"""The repair commands emofusion prints: each one works as printed, from the project folder (where `snakemake` runs).

Snakemake decides what to run from file times, so two kinds of damage are invisible to a plain `snakemake`: a file
edited in place (newer than what it was made from, so "up to date") and a job whose outputs exist while an input it
was made from is gone. ``--forcerun FILE`` reruns the job that makes FILE whatever the times say, and then every job
after it that the default target needs; a missing file is simply asked for by name.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from emofusion.layout import is_run_dir, is_store

SNAKEMAKE = "snakemake --cores 2"
UNLOCK = "snakemake --unlock"  # after a killed run: its lock stays and every later run refuses to start


def workflow_path(path: str | os.PathLike) -> str:
    """``path`` as the workflow names it: relative to the working directory when it lies below it (Snakemake
    matches targets by their relative names), shell-quoted."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            pass
    return shlex.quote(str(p))


def rerun(path: str | os.PathLike) -> str:
    """The command that makes ``path`` again even if Snakemake thinks it is up to date, and what follows from it."""
    return f"{SNAKEMAKE} --forcerun {workflow_path(path)}"


def make(path: str | os.PathLike) -> str:
    """The command that makes a missing ``path`` (and what it needs)."""
    return f"{SNAKEMAKE} {workflow_path(path)}"


def is_workflow_run(run: str | os.PathLike) -> bool:
    """Whether ``run`` is a run folder of the workflow's layout (results/fusion/<experiment>/fold<k>/seed<s>), as
    given or resolved: Snakemake can make its files by name."""
    return is_run_dir(run)


def retrain(run: str | os.PathLike) -> str:
    """How to train run folder ``run`` again: a Snakemake command for a run of the workflow
    (results/fusion/<experiment>/fold<k>/seed<s>), else `emofusion train` with what the run needs."""
    run_path = Path(run)
    if is_workflow_run(run_path):
        return rerun(run_path / "model.pt")
    return (
        f"emofusion train --config CONFIG --experiment NAME --fold K --seed S --manifest MANIFEST "
        f"--labels LABELS --out {shlex.quote(str(run_path))} (the values this run was trained with)"
    )


def reevaluate(run: str | os.PathLike) -> str:
    """How to evaluate run folder ``run`` (again): a Snakemake command for a run of the workflow, else
    `emofusion evaluate` with what it needs."""
    run_path = Path(run)
    if is_workflow_run(run_path):
        return rerun(run_path / "metrics.json")
    return (
        f"emofusion evaluate --config CONFIG --run {shlex.quote(str(run_path))} --manifest MANIFEST --labels LABELS "
        "(the files this run was trained with)"
    )


def rebuild_store(path: str | os.PathLike) -> str:
    """How to rebuild a feature store or shard (an edited, stale or damaged one): a Snakemake command for a store of
    the workflow's layout, else the emofusion command that writes one (placeholders for what only the user knows)."""
    p = Path(path)
    if is_store(p):
        return rerun(path)
    return (
        f"emofusion embed --modality MODALITY --backbone NAME --out {shlex.quote(str(p))} (the inputs and options it "
        "was made with; or emofusion embed-merge for a merged store)"
    )


def require_run_folder(run: str | os.PathLike) -> None:
    """Refuse a folder that is not a run folder (no run.json or model.pt, not the workflow's layout), such as
    results/fusion itself: the advice for a missing run (train it into that folder) would be wrong there. InputError
    naming the run folders under it, when there are any."""
    from emofusion.errors import InputError

    path = Path(run)
    if (path / "run.json").is_file() or (path / "model.pt").is_file() or is_workflow_run(path):
        return
    below = sorted(str(p.parent) for p in path.glob("**/run.json"))[:3] if path.is_dir() else []
    where = f"e.g. {', '.join(below)}" if below else "results/fusion/<experiment>/fold<k>/seed<s> of the workflow"
    what = "is not a run folder (it has no run.json or model.pt)" if path.is_dir() else "does not exist"
    raise InputError(f"{path} {what}; pass a trained run folder, {where}")
