"""`emofusion status`: what under results/ is missing, incomplete, edited or no longer what the report describes,
each with the Snakemake command that repairs it (:mod:`emofusion.repair`).

Snakemake decides from file times, so some damage looks "up to date" to it: a file edited after its job wrote it
(newer than its inputs, so nothing to do) and a report whose runs were deleted or replaced afterwards. This module
looks at the files themselves: the outputs the config implies (manifest, labels, stores, every run's files, the
report), Snakemake's own record of when each job ended (.snakemake/metadata), and the run files and checksums the
report records in provenance.json. A Snakemake dry run adds what a plain `snakemake` would do anyway.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emofusion.layout import (
    FACE_STORE,
    LABELS,
    MANIFEST,
    MODALITIES,
    REPORT,
    REPORT_FILES,
    RUN_FILES,
    run_dir,
    store_path,
)
from emofusion.repair import SNAKEMAKE, UNLOCK, rerun

# A file whose time is later than the end of the job that wrote it by more than this was changed afterwards.
SLACK_SECONDS = 2.0
TARGET_RULES = ("all", "features", "fusion")  # rules that only name targets: no work of their own
FRAME = re.compile(r'^\s*File "[^"]*", line \d+')
# Snakemake refuses `--config corpus.root=x` itself (its --config keys are top-level names).
DOTTED_CONFIG_HINT = (
    "Snakemake's --config sets top-level keys only: set a nested one as --config 'corpus={root: VALUE}' (values "
    "inside {...} are read as text: numbers go in a file given with --configfile)"
)


@dataclass(frozen=True)
class Finding:
    """One problem: the file (or folder) concerned, what is wrong, and the command that repairs it."""

    path: str
    problem: str
    repair: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}\n    repair: {self.repair}"


def intermediate_files(cfg: dict[str, Any]) -> dict[str, str]:
    """The manifest, the labels and every feature store the config builds or an experiment reads, each with who
    needs it."""
    from emofusion.training.experiments import experiment_stores

    needed = {MANIFEST: "every stage", LABELS: "training and evaluation"}
    for m in MODALITIES:
        for name in cfg["features"][m]["stores"]:
            needed[str(store_path(m, name))] = f"features.{m}.stores"
    for name in sorted(cfg["fusion"].get("experiments", {})):
        for path in experiment_stores(cfg["fusion"], name).values():
            needed[path] = f"experiment {name}"  # the runs (and the report) over the configured list
    return needed


def run_dirs(cfg: dict[str, Any]) -> list[str]:
    from emofusion.training.experiments import grid

    return [str(run_dir(e, f, s)) for e, f, s in grid(cfg["fusion"])]


def job_end(root: Path, path: str) -> float | None:
    """When the Snakemake job that wrote ``path`` ended (its metadata record), or None without a record."""
    meta = root / ".snakemake" / "metadata"
    b64 = urlsafe_b64encode(path.encode()).decode()
    record = meta / b64  # names longer than the file system allows are split into folders; not ours
    try:
        return float(json.loads(record.read_text()).get("endtime") or 0) or None
    except (OSError, ValueError, AttributeError):
        return None


def edited_after_written(root: Path, path: str) -> Finding | None:
    """A Finding when ``path`` changed after the job that wrote it ended (edited in place, copied over)."""
    end = job_end(root, path)
    target = root / path
    if end is None or not target.is_file():
        return None
    late = target.stat().st_mtime - end
    if late <= SLACK_SECONDS:
        return None
    return Finding(
        path,
        f"changed {late:.0f} s after the Snakemake job that wrote it ended (edited in place?); "
        "Snakemake sees it as up to date, so it must be forced",
        rerun(path),
    )


def damage(path: Path, root: Path | None = None) -> str | None:
    """What the header check of a store finds wrong (the check the commands and the workflow's DAG run: the file
    opens and has its layout's attributes or footer), or None. The kind comes from where the file lies under
    ``root`` (the project: a project folder inside a folder named faces is no face store)."""
    from emofusion.errors import EmofusionError
    from emofusion.faces.store import check_face_store
    from emofusion.features.store import read_attrs
    from emofusion.labels import check_labels_store

    parts = path.relative_to(root).parts if root is not None else path.parts
    check: Callable[[Path], object]
    if path.suffix == ".parquet":
        check = _check_parquet
    elif "faces" in parts:
        check = check_face_store
    elif "features" in parts:
        check = read_attrs
    else:
        check = check_labels_store
    try:
        check(path)
    except (EmofusionError, OSError, ValueError, KeyError) as e:
        return str(e)
    return None


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    pq.read_schema(path)  # the footer: a truncated file has none


def face_stores(root: Path) -> list[str]:
    """results/faces/<clip>.h5 of every clip of the manifest (none when it cannot be read: reported on its own)."""
    import pandas as pd

    try:
        clips = pd.read_parquet(root / MANIFEST, columns=["clip"])["clip"]
    except Exception:  # a missing or damaged manifest is a finding of its own
        return []
    return [FACE_STORE.format(clip=c) for c in sorted(clips)]


def check_intermediates(root: Path, cfg: dict[str, Any]) -> list[Finding]:
    """The manifest, labels and stores: missing, damaged (header check) or edited; the face stores: damaged."""
    found = []
    for path, needed_by in intermediate_files(cfg).items():
        if not (root / path).is_file():
            found.append(Finding(path, f"missing ({needed_by} needs it)", rerun(path)))
        elif problem := damage(root / path, root):
            found.append(Finding(path, f"damaged: {problem}", rerun(path)))
        elif f := edited_after_written(root, path):
            found.append(f)
    for path in face_stores(root):
        if (root / path).is_file() and (problem := damage(root / path, root)):
            found.append(Finding(path, f"damaged: {problem}", rerun(path)))
    return found


def incomplete_outputs(root: Path) -> list[str]:
    """Existing files Snakemake marked incomplete (.snakemake/incomplete: their job never finished, e.g. it was
    killed). Snakemake refuses every run that meets one unless told --rerun-incomplete, --forcerun included."""
    base = root / ".snakemake" / "incomplete"
    found = []
    for dirpath, _, names in os.walk(base):
        for name in names:
            parts = Path(dirpath, name).relative_to(base).parts  # long names are split into @-prefixed folders
            try:
                path = urlsafe_b64decode("".join(p.removeprefix("@") for p in parts)).decode()
            except ValueError:
                continue  # Snakemake's own bookkeeping files
            if (root / path).exists():
                found.append(path)
    return sorted(found)


def check_snakemake_state(root: Path) -> list[Finding]:
    """What a killed Snakemake leaves: its lock on the folder, and outputs marked incomplete."""
    found = []
    locks = root / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        found.append(
            Finding(
                str(locks.relative_to(root)),
                "a Snakemake run holds this folder's lock, or one that was killed left it; when none runs here, "
                "unlock it (Snakemake refuses to run until then)",
                UNLOCK,
            )
        )
    for path in incomplete_outputs(root):
        found.append(
            Finding(
                path,
                "Snakemake marked it incomplete: the job that wrote it did not finish (killed?)",
                f"{SNAKEMAKE} --rerun-incomplete",
            )
        )
    return found


def check_runs(root: Path, cfg: dict[str, Any]) -> list[Finding]:
    found = []
    for run in run_dirs(cfg):
        folder = root / run
        if not folder.is_dir():
            found.append(Finding(run, "run folder missing", rerun(f"{run}/model.pt")))
            continue
        missing = [name for name in RUN_FILES if not (folder / name).is_file()]
        if missing:
            trained = not {"model.pt", "run.json", "log.jsonl"} & set(missing)
            note = " (resume.pt: the training was interrupted and resumes)" if (folder / "resume.pt").is_file() else ""
            # Only the evaluation's files gone: re-evaluate; else train again (and evaluate after it).
            repair = rerun(f"{run}/metrics.json") if trained else rerun(f"{run}/model.pt")
            found.append(Finding(run, f"incomplete run folder: no {', '.join(missing)}{note}", repair))
            continue
        for name in RUN_FILES:
            if f := edited_after_written(root, f"{run}/{name}"):
                found.append(f)
    return found


def check_report(root: Path, cfg: dict[str, Any]) -> list[Finding]:
    """The report against the runs it was built from (provenance.json) and the runs the config asks for."""
    from emofusion.provenance import file_sha256

    report = REPORT / "results.csv"
    redo = rerun(report)
    expected = run_dirs(cfg)
    if not expected:
        return []
    missing = [name for name in REPORT_FILES if not (root / REPORT / name).is_file()]
    if missing:
        return [Finding(str(REPORT), f"report incomplete: no {', '.join(missing)}", redo)]
    try:
        prov = json.loads((root / REPORT / "provenance.json").read_text())
    except (OSError, ValueError):
        return [Finding(str(REPORT / "provenance.json"), "not readable JSON", redo)]
    found = []
    listed = {}
    for entry in prov.get("runs", []):
        run = Path(entry["path"])
        rel = (
            str(run.relative_to(root.resolve()))
            if run.is_absolute() and run.is_relative_to(root.resolve())
            else str(run)
        )
        listed[rel] = entry
        files = entry.get("files")
        if files is None:  # a report written before it recorded its run files
            found.append(
                Finding(
                    rel,
                    "the report does not record which run files it was built from (made by an older emofusion)",
                    redo,
                )
            )
            continue
        gone = [name for name in files if not (root / rel / name).is_file()]
        changed = [name for name, sha in files.items() if name not in gone and file_sha256(root / rel / name) != sha]
        in_grid = rel in expected
        if gone:
            # only the evaluation's files gone: evaluate again (the report follows); else train again
            evaluation = set(gone) <= {"predictions.parquet", "metrics.json"}
            fix = (rerun(f"{rel}/metrics.json") if evaluation else rerun(f"{rel}/model.pt")) if in_grid else redo
            found.append(
                Finding(
                    rel,
                    f"the report describes this run but its {', '.join(gone)} "
                    f"{'is' if len(gone) == 1 else 'are'} gone"
                    + ("" if in_grid else " (and the config no longer asks for it)"),
                    fix,
                )
            )
        elif changed:
            found.append(
                Finding(
                    rel,
                    f"changed since the report was built ({', '.join(changed)}); the report describes the old files",
                    redo,
                )
            )
        elif not in_grid:
            found.append(Finding(rel, "the report describes this run, which the config no longer asks for", redo))
    for wanted in expected:
        if wanted not in listed and (root / wanted / "metrics.json").is_file():
            found.append(Finding(wanted, "evaluated, but the report does not include it", redo))
    for name in REPORT_FILES:
        if f := edited_after_written(root, str(REPORT / name)):
            found.append(Finding(f.path, f.problem, redo))  # one command remakes the whole report
    return found


def dry_run(root: Path, snakemake_args: list[str]) -> tuple[dict[str, int] | None, str]:
    """(rule -> job count a plain `snakemake` would run, or None when the dry run failed; its output)."""
    cmd = ["snakemake", "-n", "--quiet", "rules", "--cores", "1", *snakemake_args]
    try:
        proc = subprocess.run(
            cmd, cwd=root, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return None, out
    jobs = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs, out


def message_lines(output: str) -> list[str]:
    """The lines of a failed Snakemake run that say what is wrong: Python's stack frames (a frame line and the
    source lines under it), its Traceback header and blank lines left out, and a hint for a dotted --config key."""
    lines, in_frame = [], False
    for line in output.splitlines():
        if FRAME.match(line):
            in_frame = True
        elif in_frame and line.startswith("    "):
            continue  # the source line of a frame, and its ^^^ markers
        else:
            in_frame = False
            if line.strip() and not line.startswith("Traceback (most recent call last)"):
                lines.append(line)
    if any("Config entry must start with a valid identifier" in line for line in lines):
        lines.append(DOTTED_CONFIG_HINT)
    return lines


def status(cfg: dict[str, Any], root: str | Path = ".") -> list[Finding]:
    """Every Finding of the project in ``root`` for config ``cfg``, in pipeline order."""
    root = Path(root)
    state = check_snakemake_state(root)
    found = [*check_intermediates(root, cfg), *check_runs(root, cfg), *check_report(root, cfg)]
    if any(f.repair == f"{SNAKEMAKE} --rerun-incomplete" for f in state):
        # every repair must get past Snakemake's refusal of the incomplete files (it stops even a --forcerun)
        found = [
            Finding(f.path, f.problem, f.repair.replace(SNAKEMAKE, f"{SNAKEMAKE} --rerun-incomplete", 1)) for f in found
        ]
    return [*state, *found]


def describe(findings: list[Finding], jobs: dict[str, int] | None, dry_output: str | None) -> str:
    """The text `emofusion status` prints."""
    lines = []
    if findings:
        lines.append(f"{len(findings)} problem(s) under results/, each with the command that repairs it:")
        lines += [str(f) for f in findings]
    else:
        lines.append(
            "results/ holds every output the config asks for, none changed after it was written, and "
            "the report describes exactly the runs on disk."
        )
    if jobs is not None:
        planned = {r: n for r, n in jobs.items() if r not in TARGET_RULES}
        if planned:
            lines.append(
                f"The Snakemake dry run plans {sum(planned.values())} job(s) (`{SNAKEMAKE}` runs them): "
                + ", ".join(f"{r} {n}" for r, n in sorted(planned.items()))
            )
        else:
            lines.append("The Snakemake dry run plans nothing.")
    elif dry_output is not None:
        tail = "\n".join(message_lines(dry_output)[-5:])
        lines.append(f"The Snakemake dry run failed (its message follows); fix that first:\n{tail}")
    return "\n".join(lines)
