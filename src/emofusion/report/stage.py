"""Report stage entry (what ``emofusion report`` calls): the results table, the figures and the ABAW submissions,
from evaluated fusion runs.

Outputs under ``out`` (each written atomically; the two folders as a whole):

- ``results.csv`` / ``results.md``: CCC per experiment, per fold and pooled, mean ± sd over runs (:mod:`.table`).
- ``plots/``: ``predictions_<clip>.png`` for ``report.plot_clips`` validation clips of the best experiment,
  ``ccc_per_model.png``, ``training_curves.png`` (:mod:`.plots`).
- ``submission/<experiment>.csv``: one ABAW submission per experiment, from its fold-0 run with the lowest seed
  (the official train/validation split; one model, not a seed ensemble, so it is the model the fold-0 row of
  the table describes), and ``submission/check.json``: the validator's verdict on each (:mod:`.submission`).
- ``provenance.json``: versions, git revision, report config hash, and each run's provenance and stores.

Nothing else is replaced: ``out`` may hold only these entries (an earlier report), ``plots/`` only the figures a
report draws, ``submission/`` only check.json and the files it lists; anything else (a user's
``plots/figure1.png``) stops the report before it reads a run (:func:`check_report_out`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from emofusion.errors import EmofusionError
from emofusion.io import atomic_path, check_replaceable, write_json
from emofusion.layout import REPORT_FILES, REPORT_FOLDERS
from emofusion.log import logger
from emofusion.provenance import file_sha256, provenance
from emofusion.report.plots import choose_clips, plot_ccc_per_model, plot_predictions, plot_training_curves
from emofusion.report.runs import Run, read_runs, run_file_checksums, target_columns
from emofusion.report.submission import build_submission, check_submission, read_sample, write_submission
from emofusion.report.table import POOLED, results_markdown, results_table

__all__ = [
    "best_experiment",
    "check_submission",
    "read_runs",
    "read_sample",
    "results_table",
    "submission_run",
    "write_report",
]


REPORT_ENTRIES = frozenset({*REPORT_FILES, *REPORT_FOLDERS})
_PLOT = re.compile(r"ccc_per_model\.png|training_curves\.png|predictions_.+\.png")


def _is_plot(name: str) -> bool:
    return _PLOT.fullmatch(name) is not None


def _submission_names(folder: Path) -> frozenset[str]:
    """What an earlier report wrote into ``submission/``: check.json and the files its verdicts name."""
    try:
        files = json.loads((folder / "check.json").read_text())["files"]
        return frozenset({"check.json", *(str(v["file"]) for v in files.values())})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def check_report_out(out: str | Path) -> None:
    """Refuse (InputError, before any run is read) an ``out`` whose entries a report would replace but that an
    earlier report did not write."""
    out = Path(out)
    check_replaceable(out, what="report", owned=REPORT_ENTRIES.__contains__)
    for name, owned in (("plots", _is_plot), ("submission", _submission_names(out / "submission").__contains__)):
        check_replaceable(out / name, what=f"report's {name} folder", owned=owned, label=str(out / name))


def best_experiment(table: pd.DataFrame, split: str) -> str:
    """The experiment with the highest pooled raw mean CCC on ``split`` (ties: the first name)."""
    pooled = table[table["fold"] == POOLED]
    ranked = pooled.sort_values([f"{split}_raw_mean_mean", "experiment"], ascending=[False, True])
    return str(ranked["experiment"].iloc[0])


def submission_run(runs: Sequence[Run], experiment: str) -> Run | None:
    """The run an experiment submits: fold 0 (the official split), lowest seed; None without a fold-0 run."""
    fold0 = [r for r in runs if r.experiment == experiment and r.fold == 0]
    return min(fold0, key=lambda r: r.seed) if fold0 else None


def _smoothing_text(runs: Sequence[Run]) -> str:
    windows: dict[str, set[int]] = {"valence": set(), "arousal": set()}
    chosen = set()
    for run in runs:
        smoothing = run.metrics.get("smoothing") or {}
        for target in windows:
            if isinstance(smoothing.get(target), int | float):
                windows[target].add(int(smoothing[target]))
        if smoothing.get("chosen_on"):
            chosen.add(str(smoothing["chosen_on"]))

    def span(values: set[int]) -> str:
        return "?" if not values else str(min(values)) if len(values) == 1 else f"{min(values)}-{max(values)}"

    text = (
        f"moving average of the clipped predictions (window {span(windows['valence'])} frames for valence, "
        f"{span(windows['arousal'])} for arousal"
    )
    return text + (f", chosen on {'; '.join(sorted(chosen))})" if chosen else ")")


def _write_plots(out: Path, runs: Sequence[Run], table: pd.DataFrame, split: str, plot_clips: int) -> list[str]:
    best = best_experiment(table, split)
    candidates = [r for r in runs if r.experiment == best]
    shown = submission_run(runs, best) or min(candidates, key=lambda r: (r.fold, r.seed))
    written = []
    with atomic_path(out / "plots", directory=True, owned=_is_plot, what="report's plots folder") as tmp:
        plot_ccc_per_model(table, runs, split, tmp / "ccc_per_model.png")
        plot_training_curves(runs, tmp / "training_curves.png")
        written += ["ccc_per_model.png", "training_curves.png"]
        if plot_clips > 0:
            predictions = shown.predictions()
            clips = choose_clips(predictions, plot_clips)
            if not clips:
                logger.warning("%s has no labelled validation frames: no prediction plots", shown.predictions_path)
            for clip in clips:
                plot_predictions(shown, predictions, clip, tmp / f"predictions_{clip}.png")
                written.append(f"predictions_{clip}.png")
            logger.info("prediction plots of %s (best %s CCC) from %s: %s", best, split, shown.path, ", ".join(clips))
    return written


def _write_submissions(
    out: Path, runs: Sequence[Run], manifest: pd.DataFrame, report_cfg: dict[str, Any], prov: dict[str, Any]
) -> dict[str, Any]:
    test = manifest[manifest["split"] == "test"]
    frames = {str(c): int(n) for c, n in zip(test["clip"], test["frames"], strict=True)}
    sample_path = report_cfg.get("sample_submission")
    sample = read_sample(sample_path) if sample_path else None
    if sample is not None:
        extra = sorted(set(frames) - set(sample["clip"]))
        if extra:
            logger.warning(
                "%d test clip(s) of the manifest are not in the sample submission and are left out: %s",
                len(extra),
                ", ".join(extra[:10]),
            )
    variant = report_cfg["submission_predictions"]
    check: dict[str, Any] = {
        "ok": True,
        "files": {},
        "skipped": {},
        "predictions": variant,
        "sample_submission": ({"path": str(sample_path), "sha256": file_sha256(sample_path)} if sample_path else None),
        "provenance": prov,
    }
    own = _submission_names(out / "submission").__contains__
    with atomic_path(out / "submission", directory=True, owned=own, what="report's submission folder") as tmp:
        if not frames:
            logger.warning("the manifest has no test clips (split == 'test'): no submission files")
        for experiment in sorted({r.experiment for r in runs}):
            if not frames:
                check["skipped"][experiment] = "the manifest has no test clips"
                continue
            run = submission_run(runs, experiment)
            if run is None:
                check["skipped"][experiment] = "no fold-0 run (submissions come from the official split)"
                logger.warning("experiment %s has no fold-0 run: no submission for it", experiment)
                continue
            predictions = run.predictions(["clip", "frame", *target_columns(variant)])
            rows = build_submission(
                predictions, frames, run=str(run.path), variant_columns=target_columns(variant), sample=sample
            )
            path = tmp / f"{experiment}.csv"
            write_submission(path, rows)
            verdict = check_submission(path, frames, sample=sample)
            verdict.update(file=f"{experiment}.csv", run=str(run.path), fold=run.fold, seed=run.seed)
            check["files"][experiment] = verdict
            check["ok"] &= verdict["ok"]
            logger.info(
                "submission %s: %d rows, %d clips, from %s: %s",
                path.name,
                verdict["rows"],
                verdict["clips"],
                run.path,
                "valid" if verdict["ok"] else "INVALID",
            )
        write_json(tmp / "check.json", check)
        if not check["ok"]:
            problems = [f"{name}: {e}" for name, v in check["files"].items() for e in v["errors"]]
            # Our own writer made an invalid file: a bug, never shipped half-right.
            raise EmofusionError("submission check failed:\n  " + "\n  ".join(problems))
    return check


def write_report(
    *,
    config: dict[str, Any],
    manifest: pd.DataFrame,
    manifest_path: str | Path,
    run_dirs: Sequence[str | Path],
    out: str | Path,
) -> dict[str, Any]:
    """Write every report output under ``out``; return a summary (table rows, plots, submission verdicts)."""
    out = Path(out)
    check_report_out(out)
    report_cfg = config["report"]
    runs = read_runs(list(run_dirs))
    splits = list(report_cfg["splits"])
    table = results_table(runs, splits)
    prov = provenance(
        config={"report": report_cfg, "fusion": config.get("fusion")},
        manifest={"path": str(manifest_path), "sha256": file_sha256(manifest_path)},
        runs=[
            {
                "path": str(r.path),
                "experiment": r.experiment,
                "fold": r.fold,
                "seed": r.seed,
                "provenance": r.metrics.get("provenance"),
                "stores": r.metrics.get("stores"),
                "files": run_file_checksums(r.path),
            }
            for r in runs
        ],
    )
    # Submissions first: a failing check then leaves no output at all.
    check = _write_submissions(out, runs, manifest, report_cfg, prov)
    plots = _write_plots(out, runs, table, splits[0], int(report_cfg["plot_clips"]))
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(
            results_markdown(table, splits, smoothing=_smoothing_text(runs))
            + f"\n_{len(runs)} runs; emofusion git {prov['git']}, report config {prov['config_hash']}._\n"
        )
    write_json(out / "provenance.json", prov)
    logger.info("report of %d runs (%d experiments) in %s", len(runs), table["experiment"].nunique(), out)
    return {"table": table, "plots": plots, "check": check}
