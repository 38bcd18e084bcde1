"""Reading fusion run directories (``results/fusion/<experiment>/fold<k>/seed<s>/``) for the report.

A run directory holds ``run.json`` (what was trained), ``log.jsonl`` (one line per epoch), ``metrics.json`` and
``predictions.parquet`` (both from ``emofusion evaluate``). Everything is checked on reading, so a broken or
half-evaluated run is an error naming its file, not a hole in the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from emofusion.errors import InputError
from emofusion.layout import RUN_FILES
from emofusion.metrics import TARGETS
from emofusion.repair import reevaluate, retrain

LOG_KEYS = ("epoch", "train_loss", "val_loss", "val_ccc_valence", "val_ccc_arousal", "val_ccc_mean", "lr", "seconds")
PREDICTION_COLUMNS = (
    "clip",
    "split",
    "frame",
    "valence",
    "arousal",
    "valence_smoothed",
    "arousal_smoothed",
    "label_valence",
    "label_arousal",
    "valid_valence",
    "valid_arousal",
)
VARIANTS = ("raw", "smoothed")  # metrics.json's two scores per split


@dataclass(frozen=True)
class Run:
    """One trained and evaluated (experiment, fold, seed)."""

    path: Path
    experiment: str
    model: str
    fold: int
    seed: int
    modalities: tuple[str, ...]
    stores: dict[str, str]
    metrics: dict[str, Any] = field(repr=False)
    log: pd.DataFrame = field(repr=False)

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.parquet"

    @property
    def stores_label(self) -> str:
        """``visual=fer audio=egemaps``: the backbone of each store (its file name), in modality order."""
        return " ".join(f"{m}={Path(self.stores[m]).stem}" for m in self.modalities if m in self.stores)

    def score(self, split: str, variant: str, target: str) -> float:
        """A pooled CCC from metrics.json; a missing entry is an error naming the file."""
        try:
            return float(self.metrics["splits"][split][variant][target])
        except (KeyError, TypeError, ValueError):
            have = sorted(self.metrics.get("splits", {}))
            raise InputError(
                f"{self.path / 'metrics.json'} has no {split}/{variant}/{target} CCC (splits: "
                f"{', '.join(have) or 'none'}); evaluate it again (`{reevaluate(self.path)}`) or drop "
                f"{split!r} from report.splits"
            ) from None

    def predictions(self, columns: list[str] | None = None) -> pd.DataFrame:
        """predictions.parquet, checked for the contract's columns, sorted by (clip, frame)."""
        path = self.predictions_path
        df = pd.read_parquet(path, columns=columns)
        missing = [c for c in (columns or PREDICTION_COLUMNS) if c not in df.columns]
        if missing:
            raise InputError(
                f"{path} lacks column(s) {', '.join(missing)}; evaluate the run again (`{reevaluate(self.path)}`)"
            )
        return df.sort_values(["clip", "frame"], kind="stable").reset_index(drop=True)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path} does not exist; train and evaluate {path.parent} (`{retrain(path.parent)}`)")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e}); rerun the step that wrote it") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} must hold a JSON object")
    return obj


def read_log(path: Path) -> pd.DataFrame:
    """log.jsonl as a table with the contract's columns, sorted by epoch."""
    if not path.is_file():
        raise InputError(f"{path} does not exist; run `emofusion train` for {path.parent}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}, line {i}: not valid JSON ({e})") from None
        missing = [k for k in LOG_KEYS if k not in row]
        if missing:
            raise InputError(f"{path}, line {i}: missing {', '.join(missing)}")
        rows.append({k: row[k] for k in LOG_KEYS})
    if not rows:
        raise InputError(f"{path} has no epochs; the training run did not finish an epoch")
    return pd.DataFrame(rows).sort_values("epoch", kind="stable").reset_index(drop=True)


def read_run(path: str | Path) -> Run:
    """Read and check one run directory."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"run directory {path} does not exist; train and evaluate it first (`{retrain(path)}`)")
    info = _read_json(path / "run.json")
    metrics = _read_json(path / "metrics.json")
    for key in ("experiment", "model", "fold", "seed", "modalities", "stores"):
        if key not in info:
            raise InputError(f"{path / 'run.json'} lacks {key!r}; retrain the run with this version of emofusion")
    for key in ("experiment", "fold", "seed"):
        if key in metrics and metrics[key] != info[key]:
            raise InputError(
                f"{path}: metrics.json says {key}={metrics[key]!r} but run.json says {info[key]!r}; "
                f"evaluate it again (`{reevaluate(path)}`)"
            )
    if not isinstance(metrics.get("splits"), dict):
        raise InputError(f"{path / 'metrics.json'} has no 'splits'; evaluate it again (`{reevaluate(path)}`)")
    if not (path / "model.pt").is_file():  # a table row must describe a model that still exists
        raise InputError(
            f"{path / 'model.pt'} does not exist: the report would describe a run whose model is gone; train it "
            f"again (`{retrain(path)}`)"
        )
    if not (path / "predictions.parquet").is_file():
        raise InputError(f"{path / 'predictions.parquet'} does not exist; evaluate the run (`{reevaluate(path)}`)")
    return Run(
        path=path,
        experiment=str(info["experiment"]),
        model=str(info["model"]),
        fold=int(info["fold"]),
        seed=int(info["seed"]),
        modalities=tuple(info["modalities"]),
        stores=dict(info["stores"]),
        metrics=metrics,
        log=read_log(path / "log.jsonl"),
    )


def read_runs(paths: list[str | Path]) -> list[Run]:
    """Every run, sorted by (experiment, fold, seed); duplicates and inconsistent experiments are errors."""
    if not paths:
        raise InputError("no run directories given; pass --runs results/fusion/<experiment>/fold<k>/seed<s> ...")
    runs = sorted((read_run(p) for p in paths), key=lambda r: (r.experiment, r.fold, r.seed))
    seen: dict[tuple[str, int, int], Run] = {}
    first: dict[str, Run] = {}
    for run in runs:
        key = (run.experiment, run.fold, run.seed)
        if key in seen:
            raise InputError(
                f"{seen[key].path} and {run.path} are both experiment {run.experiment!r} fold "
                f"{run.fold} seed {run.seed}; pass each run once"
            )
        seen[key] = run
        ref = first.setdefault(run.experiment, run)
        if (run.model, run.modalities, run.stores_label) != (ref.model, ref.modalities, ref.stores_label):
            raise InputError(
                f"experiment {run.experiment!r} mixes runs of different models or inputs: {ref.path} "
                f"({ref.model}, {ref.stores_label}) and {run.path} ({run.model}, {run.stores_label}); "
                "retrain the stale runs (snakemake fusion)"
            )
    return runs


def target_columns(variant: str) -> list[str]:
    """Prediction columns of one variant: ``valence, arousal`` or ``valence_smoothed, arousal_smoothed``."""
    return [t if variant == "raw" else f"{t}_smoothed" for t in TARGETS]


def run_file_checksums(path: str | Path) -> dict[str, str]:
    """``{file name: sha256}`` of the run folder's files that exist (RUN_FILES): what a report was built from, so
    `emofusion status` can tell when a run it describes was deleted or changed afterwards."""
    from emofusion.provenance import file_sha256

    path = Path(path)
    return {name: file_sha256(path / name) for name in RUN_FILES if (path / name).is_file()}
