"""The files ``emofusion predict`` writes per video, each atomically: ``<video>.<model>.csv`` (one row per frame),
``<video>.<model>.json`` (summary and provenance) and ``<video>.<model>.png`` (valence and arousal over time).
The model's name is in every name, so a second model's predictions of the same video sit beside the first's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.predict.bundle import Model, licences
from emofusion.predict.predictor import Prediction

COLUMNS = (
    "frame",
    "time_s",
    "valence",
    "arousal",
    "valence_smoothed",
    "arousal_smoothed",
    "has_face",
    "has_audio",
    "has_speech",
    "has_word",
)
DEFINITIONS = {
    "frame": "0-based index of the decoded video frame",
    "time_s": "the frame's presentation time in seconds from the first frame, as the decoder gives it (a variable "
    "frame rate video keeps its real times); audio and words are taken at this time",
    "valence, arousal": "the model's per-frame prediction in [-1, 1] (overlapping windows averaged), as evaluation "
    "writes to predictions.parquet",
    "valence_smoothed, arousal_smoothed": "centred moving average with the windows evaluation chose on the run's "
    "validation split (see smoothing)",
    "has_face": "the subject's face was detected and aligned at this frame (empty: the model reads no faces)",
    "has_audio": "decoded audio covers this frame, i.e. the audio input is valid there (a silent track counts; "
    "empty: the model reads no audio)",
    "has_speech": "silero VAD (the one Whisper's transcription uses) hears speech at this frame's time (empty: the "
    "model reads no audio)",
    "has_word": "Whisper put a word on this frame, i.e. the text input is valid there (empty: no text input)",
}


def stem(video: Path, side: str | None) -> str:
    return video.stem if side is None else f"{video.stem}_{side}"


def output_paths(out: Path, video: Path, side: str | None, name: str, *, overlay: bool = False) -> dict[str, Path]:
    """The files one video's prediction by the model ``name`` writes into ``out`` (the JSON last)."""
    base = f"{stem(video, side)}.{name}"
    paths = {"overlay": out / f"{base}.overlay.mp4"} if overlay else {}
    return {**paths, **{ext: out / f"{base}.{ext}" for ext in ("csv", "png", "json")}}


def frame_table(p: Prediction) -> pd.DataFrame:
    def flag(x):
        return pd.array(x, dtype="boolean") if x is not None else pd.array([pd.NA] * p.frames, dtype="boolean")

    return pd.DataFrame(
        {
            "frame": np.arange(p.frames, dtype=np.int64),
            "time_s": p.times,
            "valence": p.raw[:, 0],
            "arousal": p.raw[:, 1],
            "valence_smoothed": p.smoothed[:, 0],
            "arousal_smoothed": p.smoothed[:, 1],
            "has_face": flag(p.has_face),
            "has_audio": flag(p.has_audio),
            "has_speech": flag(p.has_speech),
            "has_word": flag(p.has_word),
        }
    )


def summary(p: Prediction, model: Model, *, side: str | None) -> dict[str, Any]:
    from emofusion.provenance import provenance

    r = model.recipe

    def stats(x: np.ndarray) -> dict[str, float]:
        return {"mean": float(np.mean(x)), "sd": float(np.std(x))}

    def fraction(x):
        return None if x is None else float(np.mean(x))

    return {
        "video": str(p.video),
        "video_sha256": p.sha256,
        "side": side or "largest face",
        "frames": p.frames,
        "fps": p.fps,
        "duration_s": p.frames / p.fps,
        "valence": {"raw": stats(p.raw[:, 0]), "smoothed": stats(p.smoothed[:, 0])},
        "arousal": {"raw": stats(p.raw[:, 1]), "smoothed": stats(p.smoothed[:, 1])},
        "fraction_with_face": fraction(p.has_face),
        "fraction_with_audio": fraction(p.has_audio),
        "fraction_with_speech": fraction(p.has_speech),
        "fraction_with_word": fraction(p.has_word),
        "warnings": p.warnings,
        "columns": DEFINITIONS,
        "model": {
            "source": model.source,
            "experiment": r["experiment"],
            "model": r["model"],
            "fold": r["fold"],
            "seed": r["seed"],
            "modalities": r["modalities"],
            "smoothing": r["smoothing"],
            "windowing": r["windowing"],
            "backbones": {
                m: {k: b[k] for k in ("name", "options", "weights_sha256", "weights_source", "licence")}
                for m, b in r["backbones"].items()
            },
            "stages": r["stages"],
            "licences": licences(r),
            "trained_with": r.get("versions", {}),
        },
        "cache": p.cache,
        "provenance": provenance(),
    }


def shaded(p: Prediction) -> list[tuple[np.ndarray, str, str]]:
    """The plot's shaded bands: (frames, colour, legend label); absent where the model does not read the input."""
    bands = []
    if p.has_face is not None:
        bands.append((~p.has_face, "0.6", "no face"))
    if p.has_audio is not None:
        bands.append((~p.has_audio, "tab:blue", "no audio"))
    if p.has_speech is not None:
        audio = p.has_audio if p.has_audio is not None else np.ones_like(p.has_speech)
        bands.append((audio & ~p.has_speech, "tab:cyan", "no speech"))
    return bands


def plot(p: Prediction, path: Path, *, title: str) -> None:
    """Valence and arousal (raw thin, smoothed thick) over time; frames without a face (grey), without audio
    (blue) or with audio but no speech (light blue) shaded behind them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emofusion.io import atomic_path

    t = p.times
    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    try:
        for ax, i, name in ((axes[0], 0, "valence"), (axes[1], 1, "arousal")):
            for missing, colour, label in shaded(p):
                if missing.any():
                    ax.fill_between(
                        t, -1, 1, where=missing, step="mid", color=colour, alpha=0.2, linewidth=0, label=label
                    )
            ax.plot(t, p.raw[:, i], color="tab:red", linewidth=0.7, alpha=0.6, label="raw")
            ax.plot(t, p.smoothed[:, i], color="tab:red", linewidth=1.8, label="smoothed")
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="k", linewidth=0.5)
            ax.set_ylabel(name)
        axes[0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[0].set_title(title, fontsize=9)
        axes[1].set_xlabel("time (s)")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)


def write_outputs(
    p: Prediction, model: Model, out: str | Path, *, side: str | None, name: str | None = None
) -> dict[str, Path]:
    """Write the CSV, JSON and PNG of one prediction into ``out`` (names with ``name``, default the model's);
    return their paths."""
    from emofusion.io import atomic_path, write_json

    paths = output_paths(Path(out), p.video, side, name or model.name)
    with atomic_path(paths["csv"]) as tmp:
        frame_table(p).to_csv(tmp, index=False, float_format="%.8g")
    plot(p, paths["png"], title=f"{p.video.name}: {model.name} ({model.source['kind']})")
    write_json(paths["json"], summary(p, model, side=side))  # last: its presence means the set is complete
    return paths
