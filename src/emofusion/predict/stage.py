"""What ``emofusion predict`` and ``emofusion export`` call: a trained model applied to videos of one's own.

:class:`~emofusion.predict.predictor.Predictor` runs one video through the stages' own functions with the settings
the model's stores were built with (:mod:`.bundle`), cached by content and settings (:mod:`.cache`);
:mod:`.outputs` writes the CSV, plot and JSON, :mod:`.overlay` the annotated video.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from emofusion.errors import InputError
from emofusion.log import logger
from emofusion.predict.bundle import export_bundle as export_bundle  # re-exported for `emofusion export`
from emofusion.predict.bundle import load_model
from emofusion.predict.outputs import output_paths, stem, write_outputs
from emofusion.predict.overlay import write_overlay
from emofusion.predict.predictor import Predictor

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_out(out: Path, paths: Sequence[Path], *, overwrite: bool) -> None:
    """Refuse, before any video is read, an --out that is a file or cannot be written, and any output file that
    exists (an earlier prediction, or a file of the user's) unless ``overwrite``; a folder is never replaced."""
    from emofusion.io import check_writable_folder

    check_writable_folder(out, "--out")  # tried by writing, as the command does first: permission bits say little
    for path in paths:
        if path.is_dir():
            raise InputError(
                f"{path} is a folder where predict writes a file; nothing was predicted: choose another --out"
            )
        if path.exists() and not overwrite:
            raise InputError(
                f"{path} already exists; nothing was predicted: pass --overwrite to replace it, or choose another --out"
            )


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
    name: str | None = None,
    overwrite: bool = False,
) -> list[dict[str, Path]]:
    """Predict every video with the run (or bundle) into ``out``; per video the paths written (the JSON last, so
    a video whose JSON exists has a complete set). Output names carry ``name`` (default: the model's
    experiment-fold-seed); an existing one is refused before anything is computed unless ``overwrite``.
    ``cache`` defaults to ``out/.cache``."""
    out = Path(out)
    stems = [stem(Path(v), side) for v in videos]
    twice = sorted({n for n in stems if stems.count(n) > 1})
    if twice:
        raise InputError(
            f"two videos would write the same outputs {twice[0]}.*; predict them into separate --out folders"
        )
    if name is not None and not NAME.fullmatch(name):
        raise InputError(f"--name {name!r}: use letters, digits, '_', '.' and '-' (starting with a letter or digit)")
    model = load_model(run=run, bundle=bundle)
    if name is None and not NAME.fullmatch(model.name):
        raise InputError(
            f"{model.source['path']}: its name {model.name!r} is not usable in a file name (letters, digits, "
            "'_', '.', '-'); pass --name"
        )
    name = name or model.name
    planned = [output_paths(out, Path(v), side, name, overlay=overlay) for v in videos]
    _check_out(out, [p for paths in planned for p in paths.values()], overwrite=overwrite)
    predictor = Predictor(model, device=device, threads=threads, faces=overlay)
    cache = Path(cache) if cache else out / ".cache"
    written = []
    for video, paths in zip(videos, planned, strict=True):
        pred = predictor.predict(video, cache=cache, side=side)
        if overlay:
            write_overlay(pred, paths["overlay"])
        write_outputs(pred, model, out, side=side, name=name)
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
