"""The report's figures (matplotlib, Agg backend: no display needed; PNG files with fixed names)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emofusion.metrics import TARGETS
from emofusion.report.runs import Run

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    # No timestamp in the metadata, so the same data gives the same bytes.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    _pyplot().close(fig)


def choose_clips(predictions: pd.DataFrame, count: int) -> list[str]:
    """The ``count`` validation clips with the most labelled frames (ties by clip id): deterministic, and the
    clips with the most to look at."""
    val = predictions[predictions["split"] == "validation"]
    labelled = (val["valid_valence"] | val["valid_arousal"]).groupby(val["clip"]).sum()
    labelled = labelled[labelled > 0]
    order = sorted(labelled.items(), key=lambda kv: (-kv[1], kv[0]))
    return [clip for clip, _ in order[:count]]


def plot_predictions(run: Run, predictions: pd.DataFrame, clip: str, path: Path) -> None:
    """Predicted (raw and smoothed) vs true valence and arousal over the frames of one clip; gaps where the
    label is invalid."""
    plt = _pyplot()
    rows = predictions[predictions["clip"] == clip].sort_values("frame")
    per_clip = run.metrics.get("splits", {}).get("validation", {}).get("per_clip", {}).get(clip, {})
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, layout="constrained")
    frame = rows["frame"].to_numpy()
    for ax, target in zip(axes, TARGETS, strict=True):
        label = np.where(rows[f"valid_{target}"], rows[f"label_{target}"], np.nan)  # NaN breaks the line
        ax.plot(frame, label, color="black", lw=1.6, label="label")
        ax.plot(frame, rows[target], color="tab:blue", lw=0.8, alpha=0.55, label="prediction (raw)")
        ax.plot(frame, rows[f"{target}_smoothed"], color="tab:orange", lw=1.4, label="prediction (smoothed)")
        score = per_clip.get(target)
        ax.set_title(f"{target}" + (f" (clip CCC {score:.3f})" if score is not None else ""), loc="left")
        ax.set_ylabel(target)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small")  # never over the curves
    axes[-1].set_xlabel("frame")
    fig.suptitle(f"{clip}: {run.experiment} ({run.model}), fold {run.fold}, seed {run.seed}")
    _save(fig, path)


def plot_ccc_per_model(table: pd.DataFrame, runs: Sequence[Run], split: str, path: Path) -> None:
    """Pooled validation mean CCC per experiment (raw and smoothed): every run as a dot, mean ± sd as a bar."""
    plt = _pyplot()
    pooled = table[table["fold"] == "pooled"]
    order = pooled.sort_values([f"{split}_raw_mean_mean", "experiment"], ascending=[True, False])["experiment"]
    order = list(order)
    y = {name: i for i, name in enumerate(order)}
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(order)), layout="constrained")
    for variant, offset, color in (("raw", -0.12, "tab:blue"), ("smoothed", 0.12, "tab:orange")):
        col = f"{split}_{variant}_mean"
        per_run = [(y[r.experiment] + offset, r.score(split, variant, "mean")) for r in runs]
        ax.scatter([v for _, v in per_run], [p for p, _ in per_run], s=14, color=color, alpha=0.5, zorder=3)
        rows = pooled.set_index("experiment").loc[order]
        ax.errorbar(
            rows[f"{col}_mean"],
            np.arange(len(order)) + offset,
            xerr=rows[f"{col}_sd"].fillna(0.0),
            fmt="D",
            color=color,
            ms=6,
            capsize=3,
            label=f"{variant}: mean ± sd over runs",
            zorder=4,
        )
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(f"{split} CCC, mean of valence and arousal")
    ax.set_title(f"{split.capitalize()} CCC per experiment (dots: single (fold, seed) runs)")
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def plot_training_curves(runs: Sequence[Run], path: Path) -> None:
    """Training and validation loss and validation mean CCC per epoch: one colour per experiment, one line per
    (fold, seed) run."""
    plt = _pyplot()
    experiments = sorted({r.experiment for r in runs})
    colors = plt.get_cmap("tab10" if len(experiments) <= 10 else "tab20")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    panels = (
        ("train_loss", "training loss (1 - CCC, summed)"),
        ("val_loss", "validation loss"),
        ("val_ccc_mean", "validation CCC (mean of V and A)"),
    )
    for i, experiment in enumerate(experiments):
        color = colors(i % colors.N)
        for j, run in enumerate(r for r in runs if r.experiment == experiment):
            for ax, (key, _) in zip(axes, panels, strict=True):
                ax.plot(
                    run.log["epoch"], run.log[key], color=color, lw=1.0, alpha=0.8, label=experiment if j == 0 else None
                )
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss")
    axes[2].set_ylabel("CCC")
    axes[2].legend(loc="best", fontsize="small", title="experiment (a line per fold and seed)")
    _save(fig, path)
