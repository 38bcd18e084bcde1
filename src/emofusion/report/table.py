"""The results table: CCC per experiment, per fold and pooled, as mean ± sd over runs.

Per fold the spread is over that fold's seeds; "pooled" is the mean ± sd over all (fold, seed) runs of an
experiment, so it mixes the spread between folds (different validation clips) with the spread between seeds.
sd is the sample standard deviation (n - 1); a single run has no sd (NaN in the CSV, nothing in the Markdown).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emofusion.metrics import TARGETS
from emofusion.report.runs import VARIANTS, Run

SCORES = (*TARGETS, "mean")
POOLED = "pooled"
ID_COLUMNS = ["experiment", "model", "modalities", "stores", "fold", "runs", "seeds"]


def score_column(split: str, variant: str, target: str) -> str:
    return f"{split}_{variant}_{target}"


def results_table(runs: Sequence[Run], splits: Sequence[str]) -> pd.DataFrame:
    """One row per (experiment, fold) plus one ``pooled`` row per experiment, sorted by experiment then fold.

    Columns: ``ID_COLUMNS``, then ``<split>_<raw|smoothed>_<valence|arousal|mean>_<mean|sd>``.
    """
    rows = []
    for run in runs:
        row = {
            "experiment": run.experiment,
            "model": run.model,
            "modalities": "+".join(run.modalities),
            "stores": run.stores_label,
            "fold": run.fold,
            "seed": run.seed,
        }
        for split in splits:
            for variant in VARIANTS:
                for target in SCORES:
                    row[score_column(split, variant, target)] = run.score(split, variant, target)
        rows.append(row)
    per_run = pd.DataFrame(rows)
    scores = [c for c in per_run.columns if c not in ("experiment", "model", "modalities", "stores", "fold", "seed")]
    keys = ["experiment", "model", "modalities", "stores"]
    per_fold = _aggregate(per_run, [*keys, "fold"], scores)
    pooled = _aggregate(per_run, keys, scores).assign(fold=POOLED)
    table = pd.concat([per_fold.assign(fold=per_fold["fold"].astype(str)), pooled], ignore_index=True)
    # Folds in numeric order, pooled last, per experiment.
    order = table["fold"].map(lambda f: (1, 0) if f == POOLED else (0, int(f)))
    table = table.assign(_order=order).sort_values(["experiment", "_order"], kind="stable").drop(columns="_order")
    return table[ID_COLUMNS + [c for c in table.columns if c not in ID_COLUMNS]].reset_index(drop=True)


def _aggregate(per_run: pd.DataFrame, keys: list[str], scores: list[str]) -> pd.DataFrame:
    grouped = per_run.groupby(keys, sort=True)
    mean = grouped[scores].mean().add_suffix("_mean")
    sd = grouped[scores].std(ddof=1).add_suffix("_sd")  # NaN for a single run
    counts = grouped.agg(runs=("seed", "size"), seeds=("seed", lambda s: " ".join(map(str, sorted(set(s))))))
    out = pd.concat([counts, mean, sd], axis=1).reset_index()
    interleaved = [f"{c}_{stat}" for c in scores for stat in ("mean", "sd")]
    return out[[*keys, "runs", "seeds", *interleaved]]


def _cell(mean: float, sd: float, bold: bool) -> str:
    text = f"{mean:.3f}" if np.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"
    return f"**{text}**" if bold else text


def _markdown_table(table: pd.DataFrame, split: str, *, with_fold: bool) -> list[str]:
    header = ["experiment", "model", "inputs"] + (["fold"] if with_fold else []) + ["runs"]
    header += [f"{t}" for t in SCORES] + [f"{t} (smoothed)" for t in SCORES]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":--"] * (len(header) - 2 * len(SCORES)) + ["--:"] * (2 * len(SCORES))) + "|",
    ]
    # Bold the best value of each score column (among the rows of this table).
    best = {(v, t): table[score_column(split, v, t) + "_mean"].max() for v in VARIANTS for t in SCORES}
    for _, row in table.iterrows():
        cells = [row["experiment"], row["model"], row["stores"] or row["modalities"]]  # stores name the modalities
        cells += [str(row["fold"])] if with_fold else []
        cells += [str(row["runs"])]
        for variant in VARIANTS:
            for target in SCORES:
                col = score_column(split, variant, target)
                mean = row[col + "_mean"]
                cells.append(_cell(mean, row[col + "_sd"], len(table) > 1 and mean == best[(variant, target)]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_markdown(table: pd.DataFrame, splits: Sequence[str], *, smoothing: str) -> str:
    """The table as Markdown for a README: per split a pooled table (one row per experiment), then per fold.

    ``smoothing`` says how the smoothed scores were made (quoted in the caption).
    """
    pooled = table[table["fold"] == POOLED]
    folds = table[table["fold"] != POOLED]
    n_folds = folds["fold"].nunique()
    out = []
    for split in splits:
        out += [
            f"### {split.capitalize()} CCC",
            "",
            f"Lin's CCC (population moments) over all valid {split} frames of all clips pooled, for valence, "
            "arousal and their mean. Each cell is the mean ± sd (sample sd, n - 1) over runs; *runs* counts "
            f"them. The first table pools every (fold, seed) run of an experiment ({n_folds} fold(s)), so its "
            "sd mixes fold-to-fold and seed-to-seed spread; the second gives each fold's mean ± sd over "
            "seeds. Raw = predictions clipped to [-1, 1]; smoothed = " + smoothing + ". Best value per "
            "column in bold.",
            "",
        ]
        out += _markdown_table(pooled, split, with_fold=False)
        out += ["", f"Per fold ({split}):", ""]
        out += _markdown_table(folds, split, with_fold=True)
        out += [""]
    return "\n".join(out)
