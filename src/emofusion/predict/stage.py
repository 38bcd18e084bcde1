"""What ``emofusion predict`` and ``emofusion export`` call: a trained model applied to videos of one's own.

:class:`~emofusion.predict.predictor.Predictor` runs one video through the stages' own functions with the settings
the model's stores were built with (:mod:`.bundle`), cached by content and settings (:mod:`.cache`);
:mod:`.outputs` writes the CSV, plot and JSON, :mod:`.overlay` the annotated video.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emofusion.errors import InputError
from emofusion.log import logger
from emofusion.predict.bundle import export_bundle as export_bundle  # re-exported for `emofusion export`
from emofusion.predict.bundle import load_model
from emofusion.predict.outputs import stem, write_outputs
from emofusion.predict.overlay import write_overlay
from emofusion.predict.predictor import Predictor


def predict_videos(
    videos: Sequence[str | Path],
    out: str | Path,
    *,
    run: str | Path | None = None,
    bundle: str | Path | None = None,
    cache: str | Path | None = None,
    side: str | None = None,
    device: str = "auto",
    threads: int = 0,
    overlay: bool = False,
) -> list[dict[str, Path]]:
    """Predict every video with the run (or bundle) into ``out``; per video the paths written (the JSON last, so
    a video whose JSON exists has a complete set). ``cache`` defaults to ``out/.cache``."""
    out = Path(out)
    names = [stem(Path(v), side) for v in videos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            f"two videos would write the same outputs {twice[0]}.*; predict them into separate --out folders"
        )
    model = load_model(run=run, bundle=bundle)
    predictor = Predictor(model, device=device, threads=threads, faces=overlay)
    cache = Path(cache) if cache else out / ".cache"
    written = []
    for video, name in zip(videos, names, strict=True):
        pred = predictor.predict(video, cache=cache, side=side)
        paths = {}
        if overlay:
            paths["overlay"] = write_overlay(pred, out / f"{name}.overlay.mp4")
        paths.update(write_outputs(pred, model, out, side=side))
        logger.info(
            "%s: %d frames -> %s (valence %.3f, arousal %.3f on average; stages reused: %s)",
            video,
            pred.frames,
            paths["csv"],
            float(pred.smoothed[:, 0].mean()),
            float(pred.smoothed[:, 1].mean()),
            ", ".join(pred.cache["reused"]) or "none",
        )
        written.append(paths)
    return written
